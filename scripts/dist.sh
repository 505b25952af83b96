#!/usr/bin/env bash
# Builds release tarballs: dist/out/outpost_<version>_linux_{amd64,arm64}.tar.gz + SHA256SUMS.
# Each holds: outpost (stripped, -trimpath), lib/libonnxruntime.so.1, models/, install.sh,
# outpost.service, outpost.env, LICENSE, THIRD_PARTY_NOTICES.md, README.md, ARCH.
# Usage: scripts/dist.sh VERSION LDFLAGS [ARCH...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$1 ldflags=$2
shift 2
arches=("${@:-amd64 arm64}")
read -r -a arches <<<"${arches[*]}"
ortdir=$root/.cache/onnxruntime/1.24.1
out=${DIST_OUT:-$root/dist/out}  # DIST_OUT: the rehearsal builds into a throwaway folder
mkdir -p "$out"
for arch in "${arches[@]}"; do
  name=outpost_${version}_linux_${arch}
  stage=$out/$name
  rm -rf "$stage" && mkdir -p "$stage/lib" "$stage/models"
  cc=gcc
  [ "$arch" = arm64 ] && cc=aarch64-linux-gnu-gcc
  echo "dist: building $name"
  (cd "$root" && CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc go build -trimpath \
    -ldflags "-s -w $ldflags" -o "$stage/outpost" ./cmd/outpost)
  cp "$ortdir/linux-$arch/libonnxruntime.so.1" "$stage/lib/"
  # Each model folder: its manifests, the files they name, advice and samples
  # (training scripts and evaluation sets stay in the repository).
  for m in "$root"/models/*/manifest*.json; do
    d=$(dirname "$m") mname=$(basename "$(dirname "$m")")
    mkdir -p "$stage/models/$mname"
    cp "$m" "$stage/models/$mname/"
    for key in file advice; do
      f=$(sed -n "s/.*\"$key\": *\"\([^\"]*\)\".*/\1/p" "$m")
      [ -n "$f" ] && cp "$d/$f" "$stage/models/$mname/"
    done
    [ -d "$d/samples" ] && cp -R "$d/samples" "$stage/models/$mname/"
    [ -f "$root/docs/models/$mname.md" ] && cp "$root/docs/models/$mname.md" "$stage/models/$mname/MODEL_CARD.md"
  done
  # The speech embedding keyword heads read (fetched by make deps; Apache-2.0).
  if [ -d "$root/models/speech-embedding" ]; then
    mkdir -p "$stage/models/speech-embedding"
    cp "$root"/models/speech-embedding/*.onnx "$stage/models/speech-embedding/"
  fi
  cp "$root/dist/install.sh" "$root/dist/outpost.service" "$root/dist/outpost-hub.service" "$root/dist/outpost.env" \
     "$root/dist/THIRD_PARTY_NOTICES.md" "$root/LICENSE" "$root/README.md" "$stage/"
  echo "$arch" > "$stage/ARCH"
  # Reproducible archive: fixed owner, order and mtime.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' \
      -C "$out" -czf "$out/$name.tar.gz" "$name"
  printf 'dist: %s  binary %s  tarball %s\n' "$name" \
    "$(du -h "$stage/outpost" | cut -f1)" "$(du -h "$out/$name.tar.gz" | cut -f1)"
done
(cd "$out" && sha256sum outpost_"${version}"_linux_*.tar.gz > SHA256SUMS && cat SHA256SUMS)

#!/usr/bin/env bash
# Installs the Debian packages one make target needs, when missing — and only
# those: `make demo` needs the build set, `make test` the test set.
# As root it runs apt-get; otherwise it prints the exact command to run as root.
# Usage: scripts/sysdeps.sh [build|demo-cli|test|cross|all]
#
# Each check names a file the package provides (not just a command), so a
# half-installed toolchain — gcc without libc6-dev — is caught here rather
# than as "stdlib.h: No such file or directory" deep inside cgo.
set -euo pipefail

# command-or-file → package
declare -A build_pkgs=(
  [gcc]=gcc                                      # cgo for onnxruntime_go
  [/usr/include/stdlib.h]=libc6-dev              # C headers (not pulled in without Recommends)
  [/usr/include/turbojpeg.h]=libturbojpeg0-dev   # JPEG decoding at 1/2–1/8 scale (bounded memory), linked statically
  [/etc/ssl/certs/ca-certificates.crt]=ca-certificates  # go mod download, npm over TLS
  [npm]=npm                                      # make deps fetches ONNX Runtime and Silero from npm
)
declare -A democli_pkgs=(
  [espeak-ng]=espeak-ng            # speaks the demo sentence
  [sox]=sox                        # pads and resamples it
)
declare -A test_pkgs=(
  [espeak-ng]=espeak-ng            # speech WAVs for the VAD tests
  [sox]=sox                        # audio conversion in demos and tests
  [git]=git                        # gofmt check lists tracked files; version stamp
  [/usr/sbin/mosquitto]=mosquitto  # real broker for the sync tests
  [mosquitto_pub]=mosquitto-clients
  [/usr/bin/chromium]=chromium     # kiosk page tests (headless, driven by chromedp)
  [/usr/share/fonts/truetype/abyssinica/AbyssinicaSIL-Regular.ttf]=fonts-sil-abyssinica  # Ge'ez script for Amharic
  [/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf]=fonts-noto-core
  [systemd-analyze]=systemd        # verifies dist/outpost.service
  [/usr/lib/postgresql/15/bin/initdb]=postgresql   # hub store tests start a throwaway cluster
  [runuser]=util-linux                             # ... as the postgres user
  [/usr/share/asterisk/sounds/es/vm-toreply.gsm]=asterisk-prompt-es-co      # real Spanish speech: keyword false alarms (held out)
  [/usr/share/asterisk/sounds/fr/vm-toreply.gsm]=asterisk-prompt-fr-armelle  # real French speech (held out)
  [soffice]=libreoffice-calc-nogui  # the hub's CSV export opened by a real spreadsheet (dates read as dates)
  [bwrap]=bubblewrap               # make rehearsal: the units' read-only system, state dirs and user
  # bring-your-own test: export a torchvision MobileNetV3 to ONNX (FP32 and INT8)
  [/usr/lib/python3/dist-packages/torch/__init__.py]=python3-torch
  [/usr/lib/python3/dist-packages/torchvision/__init__.py]=python3-torchvision
  [/usr/lib/python3/dist-packages/onnx/__init__.py]=python3-onnx
  [/usr/lib/python3/dist-packages/PIL/__init__.py]=python3-pil
)
declare -A cross_pkgs=(
  [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu         # make cross / dist: cgo for arm64
  [/usr/aarch64-linux-gnu/include/stdio.h]=libc6-dev-arm64-cross
  [/usr/aarch64-linux-gnu/lib/libstdc++.so.6]=libstdc++6-arm64-cross  # ONNX Runtime arm64 under qemu
  [qemu-aarch64-static]=qemu-user-static                # arm64 tests under qemu
)

want=()
check() { # assoc-array-name
  local -n pk=$1
  for cmd in "${!pk[@]}"; do
    case "$cmd" in
      /*) [ -e "$cmd" ] || want+=("${pk[$cmd]}") ;;
      *) command -v "$cmd" >/dev/null 2>&1 || want+=("${pk[$cmd]}") ;;
    esac
  done
}
case "${1:-test}" in
  build) check build_pkgs ;;
  demo-cli) check build_pkgs; check democli_pkgs ;;
  test) check build_pkgs; check test_pkgs; check cross_pkgs ;;
  cross) check build_pkgs; check cross_pkgs ;;
  all) check build_pkgs; check democli_pkgs; check test_pkgs; check cross_pkgs ;;
  *) echo "usage: $0 [build|demo-cli|test|cross|all]" >&2; exit 2 ;;
esac

# make deps downloads (never installs) libturbojpeg0-dev:arm64 for the
# arm64 cross build; apt needs the arm64 lists for that. No arm64 package
# gets installed: libc6:arm64 would break binaries run under qemu-user.
if [ "${1:-test}" != build ] && [ "${1:-test}" != demo-cli ] && [ "$(dpkg --print-architecture)" != arm64 ] &&
   ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "sysdeps: as root, run: dpkg --add-architecture arm64 && apt-get update" >&2
    exit 1
  fi
  echo "sysdeps: adding the arm64 package lists (for apt-get download of an arm64 static library; nothing arm64 is installed)"
  dpkg --add-architecture arm64
  apt-get update -q
fi
if [ ${#want[@]} -eq 0 ]; then
  echo "sysdeps ($1): all present"
  exit 0
fi
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
cmd="apt-get update && apt-get install -y --no-install-recommends ${want[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing Debian packages: ${want[*]}" >&2
  echo "sysdeps: as root (su -, or sudo where installed), run:" >&2
  echo "  $cmd" >&2
  exit 1
fi
echo "sysdeps (${1:-test}): installing ${#want[@]} packages: ${want[*]} (a first run takes a few minutes)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${want[@]}"

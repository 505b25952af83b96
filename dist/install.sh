#!/bin/sh
# Installs outpost from this unpacked tarball to standard paths:
#   /usr/local/bin/outpost                       the binary
#   /usr/local/lib/outpost/libonnxruntime.so.1   ONNX Runtime (found next to the binary; no LD_LIBRARY_PATH)
#   /usr/local/share/outpost/models/             bundled models
#   /etc/outpost/outpost.env                     settings as environment (kept if present)
#   /etc/outpost/outpost.json                    the JSON config (provision's output; kept if present)
#   /etc/systemd/system/outpost.service          the unit, with a system user 'outpost'
# Run as root: sudo ./install.sh   (PREFIX=/usr/local by default); sudo ./install.sh --hub adds the hub:
#   /etc/outpost/hub.env, /etc/outpost/registry.json, /etc/systemd/system/outpost-hub.service, user outpost-hub
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
# The JSON config the unit reads (OUTPOST_CONFIG): put what `outpost collect provision` printed here.
# Readable by the service user, not by others (it holds the broker password).
[ -f /etc/outpost/outpost.json ] || echo '{}' > /etc/outpost/outpost.json
chown root:outpost /etc/outpost/outpost.json
chmod 0640 /etc/outpost/outpost.json
# Spoken answers on the kiosk need espeak-ng (Debian/Raspberry Pi OS: apt install espeak-ng).
command -v espeak-ng >/dev/null 2>&1 || echo "install.sh: espeak-ng is not installed: the kiosk cannot speak answers (apt install espeak-ng)" >&2
if [ -d /etc/systemd/system ]; then
  sed "s|/usr/local/bin/outpost|$PREFIX/bin/outpost|" "$here/outpost.service" > /etc/systemd/system/outpost.service
  systemctl daemon-reload 2>/dev/null || true
fi

# The hub (sudo ./install.sh --hub): its own user, state directory, settings and unit.
if [ "${1:-}" = "--hub" ]; then
  id outpost-hub >/dev/null 2>&1 || useradd --system --home-dir /var/lib/outpost-hub --no-create-home --shell /usr/sbin/nologin outpost-hub
  [ -f /etc/outpost/hub.env ] || printf '%s\n' '# outpost hub settings (EnvironmentFile of outpost-hub.service)' \
    'OUTPOST_BROKER=tcp://127.0.0.1:1883' 'OUTPOST_MQTT_USERNAME=hub' '#OUTPOST_MQTT_PASSWORD=… (outpost collect provision --device hub)' \
    '#OUTPOST_HUB_TOKEN=… (the hub page sign-in; required off loopback)' '#OUTPOST_HUB_STORE=postgres://…' \
    "OUTPOST_HUB_ADVICE=$PREFIX/share/outpost/models/crop-disease/advice.json" > /etc/outpost/hub.env
  chmod 0600 /etc/outpost/hub.env
  [ -f /etc/outpost/registry.json ] || echo '{}' > /etc/outpost/registry.json
  if [ -d /etc/systemd/system ]; then
    sed "s|/usr/local/bin/outpost|$PREFIX/bin/outpost|" "$here/outpost-hub.service" > /etc/systemd/system/outpost-hub.service
    systemctl daemon-reload 2>/dev/null || true
  fi
  echo "hub installed. Provision its broker login (outpost collect provision --device hub --passwd-file /etc/mosquitto/passwd),"
  echo "put the password in /etc/outpost/hub.env, then: systemctl enable --now outpost-hub"
fi

"$PREFIX/bin/outpost" version
"$PREFIX/bin/outpost" models verify
echo
if "$PREFIX/bin/outpost" serve --help >/dev/null 2>&1; then
  echo "installed. Start the daemon: systemctl enable --now outpost"
else
  echo "installed. This build has no 'serve' daemon yet; use 'outpost infer' (see README)."
fi

#!/usr/bin/env bash
# Proves the README's first commands on a fresh Debian 12: builds a
# `debootstrap --variant=minbase` chroot, copies in only Go and a clone of
# this repository, then runs — as root inside it, exactly as the README
# writes them — the package install line, `make test` and `make demo`
# (the demo is stopped once its kiosk answers). Prints each step's time.
#
# Usage (root, on a Debian 12 host; takes 10–20 minutes, ~3 GB in $FRESH_DIR):
#   scripts/fresh-machine.sh            # or: make check-fresh
# Env: FRESH_DIR (default /var/tmp/outpost-fresh), KEEP=1 keeps the chroot.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FRESH_DIR:-/var/tmp/outpost-fresh}
ch=$dir/rootfs
port=${FRESH_PORT:-18080}

say() { printf '\nfresh: %s\n' "$*"; }
die() { printf 'fresh: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"
goroot=$(go env GOROOT) || die "go not found: this script copies the host's Go into the chroot"

declare -a timings=()
step() { # name cmd...
  local name=$1 t0=$SECONDS
  shift
  say "$name"
  "$@"
  timings+=("$(printf '%-44s %4d s' "$name" $((SECONDS - t0)))")
}

kill_chroot_procs() { # signal: every process whose root is the chroot
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ch" ] && kill -"$1" "${p#/proc/}" 2>/dev/null
  done
  return 0
}

cleanup() {
  kill_chroot_procs KILL
  for m in dev/shm dev/pts dev sys proc; do
    mountpoint -q "$ch/$m" 2>/dev/null && umount -l "$ch/$m"
  done
  [ -n "${demo_pid:-}" ] && kill "$demo_pid" 2>/dev/null
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'echo "fresh: failed at line $LINENO (exit $?)" >&2' ERR

# The mirror this host already uses (no host name is written down here).
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  grep -oE '^(URIs:|deb) +[^ ]+' | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*"

command -v debootstrap >/dev/null || step "host: apt-get install debootstrap" \
  bash -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap'

rm -rf "$dir" && mkdir -p "$dir"
step "debootstrap --variant=minbase bookworm" debootstrap --variant=minbase bookworm "$ch" "$mirror" >"$dir/debootstrap.log"

say "copying Go ($(go env GOVERSION)), resolv.conf, apt sources and a clone of this repository"
mkdir -p "$ch/usr/local"
cp -a "$goroot" "$ch/usr/local/go"
cp /etc/resolv.conf "$ch/etc/resolv.conf"
cp -a /etc/apt/sources.list* "$ch/etc/apt/" 2>/dev/null || true
# Site CAs only (a TLS-inspecting proxy's, as any machine on this network
# has): ca-certificates, installed by the README line, picks them up.
mkdir -p "$ch/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$ch/usr/local/share/ca-certificates/" 2>/dev/null || true
git clone -q --no-local "$root" "$ch/root/outpost"
for m in proc sys dev dev/pts dev/shm; do mkdir -p "$ch/$m"; done
mount -t proc proc "$ch/proc"
mount --rbind /sys "$ch/sys"
mount --bind /dev "$ch/dev"
mount --bind /dev/pts "$ch/dev/pts"
mount -t tmpfs tmpfs "$ch/dev/shm"

in_chroot() { # shell command, run as a fresh root login would
  chroot "$ch" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "$1"
}

# The README's "On a fresh Debian 12" line, verbatim.
readme_install=$(grep -m1 -E '^apt-get update && apt-get install' "$root/README.md") ||
  die "README.md has no 'apt-get update && apt-get install' line to run"
step "README: $readme_install" in_chroot "$readme_install"
say "README: make test (log: $dir/make-test.log)"
t0=$SECONDS
rc=0
in_chroot "cd /root/outpost && make test" >"$dir/make-test.log" 2>&1 || rc=$?
timings+=("$(printf '%-44s %4d s' "README: make test" $((SECONDS - t0)))")
grep -E '^(ok|FAIL|---|sysdeps|deps|test|fmt|vet)' "$dir/make-test.log" || true
[ "$rc" = 0 ] || { tail -40 "$dir/make-test.log"; die "make test failed in the chroot (exit $rc); KEEP=1 keeps $dir"; }

say "README: make demo (PORT=$port), stopped once the kiosk answers"
t0=$SECONDS
in_chroot "cd /root/outpost && exec make demo PORT=$port" >"$dir/make-demo.log" 2>&1 &
demo_pid=$!
ok=0
for _ in $(seq 1 900); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
     bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3; cat <&3" | grep -q '^ok'; then
    ok=1; break
  fi
  kill -0 "$demo_pid" 2>/dev/null || break
  sleep 1
done
timings+=("$(printf '%-44s %4d s' "README: make demo (until the kiosk answers)" $((SECONDS - t0)))")
kill_chroot_procs INT
wait "$demo_pid" 2>/dev/null || true
demo_pid=
[ "$ok" = 1 ] || { tail -20 "$dir/make-demo.log"; die "make demo did not answer on 127.0.0.1:$port"; }

say "all README commands passed on a fresh minbase chroot"
printf '  %s\n' "${timings[@]}"

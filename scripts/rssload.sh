#!/bin/bash
# Daemon memory under a fixed load, for comparing builds (issue 27: "12 MB
# above last round"). Starts BIN serve offline on PORT with MODELS, reads
# VmRSS idle, posts 300 sample photos, 60 WAVs and 3 12-megapixel photos
# two at a time, then prints VmRSS after and VmHWM.
#   scripts/rssload.sh bin/outpost models 18080         (KWS=kws-dscnn for the old keyword model)
set -euo pipefail
bin=$1 models=$2 port=$3
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
OUTPOST_ORT_LIB=$root/.cache/onnxruntime/1.24.1/linux-amd64/libonnxruntime.so.1 "$bin" serve --listen 127.0.0.1:"$port" --models-dir "$models" --data-dir "$data" >"$data/log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
idle=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
big=$data/big.jpg
convert -size 4000x3000 plasma:green-yellow -quality 90 "$big" 2>/dev/null || cp "$root/models/crop-disease/samples/rust.jpg" "$big"
for _ in $(seq 60); do for f in "$root"/models/crop-disease/samples/*.jpg; do echo "image/jpeg $f"; done; echo "audio/wav $root/models/kws/eval/000_en_yes.wav"; done >"$data/jobs"
for _ in 1 2 3; do echo "image/jpeg $big" >>"$data/jobs"; done
codes=$(KWS=${KWS:-kws} xargs -P2 -L1 sh -c 'case "$0" in image/jpeg) m=crop-disease;; *) m=$KWS;; esac; curl -s -o /dev/null -w "%{http_code}\n" -H "Content-Type: $0" --data-binary @"$1" http://127.0.0.1:'"$port"'/v1/models/$m/infer' <"$data/jobs" | sort | uniq -c | tr '\n' ' ')
rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status); hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
echo "$(basename "$bin"): answers [$codes] idle ${idle} kB, after load ${rss} kB, peak ${hwm} kB"
kill $pid; wait $pid 2>/dev/null || true

#!/usr/bin/env bash
# bench/smoke_test.sh EVDAL EVDAL_BENCH: evdal-bench against a real evdal on loopback, for
# 2 s in two wire formats: requests are made, none fails, and the last line is the JSON result.
set -euo pipefail
evdal=$1 bench=$2
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
printf '[server]\nlisten = 127.0.0.1:0\n[lookup nap]\nbackend = delay\ndelay_ms = 5\n' >"$dir/evdal.conf"
"$evdal" --config "$dir/evdal.conf" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q 'listening on' "$dir/log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/log")
for fmt in "" "--unframed --compact"; do
  out=$("$bench" --port "$port" -c 4 -d 2 -w 0.2 $fmt $(for _ in 1 2 3 4 5 6 7; do echo --call nap; done) | tail -1)
  echo "$out"
  echo "$out" | python3 -c '
import json, sys
line = sys.stdin.read()
assert line.startswith("RESULT "), line
r = json.loads(line[len("RESULT "):])
assert r["requests"] > 50 and r["errors"] == 0, r
assert 5 <= r["p50_ms"] < 100, r'
done
kill -TERM $pid; wait $pid

#!/usr/bin/env bash
# bench/smoke_test.sh EVDAL EVDAL_BENCH: evdal-bench against a real evdal on loopback, for
# 2 s in two wire formats, then for a request count (-n/--requests): requests are made, none
# fails, and the last line is the JSON result, its percentiles in order up to max.
set -euo pipefail
evdal=$1 bench=$2
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
printf '[server]\nlisten = 127.0.0.1:0\n[lookup nap]\nbackend = delay\ndelay_ms = 5\n' >"$dir/evdal.conf"
"$evdal" --config "$dir/evdal.conf" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q 'listening on' "$dir/log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/log")
# check WANT_REQUESTS: the RESULT line (the last one) is sane; WANT_REQUESTS > 0 asks for
# exactly that many requests (-n), 0 for "plenty" (a duration run).
check() {
  /usr/bin/python3 -c '
import json, sys
want = int(sys.argv[1])
line = sys.stdin.read()
assert line.startswith("RESULT "), line
r = json.loads(line[len("RESULT "):])
assert r["requests"] == want if want else r["requests"] > 50, r
assert r["errors"] == 0, r
assert 5 <= r["p50_ms"] < 100, r
q = [r[k] for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")]
assert q == sorted(q), ("percentiles out of order", r)' "$1"
}
for fmt in "" "--unframed --compact"; do
  out=$("$bench" --port "$port" -c 4 -d 2 -w 0.2 $fmt $(for _ in 1 2 3 4 5 6 7; do echo --call nap; done) | tail -1)
  echo "$out"
  echo "$out" | check 0
done
# A request count instead of a duration, in both spellings: exactly that many, then it stops.
for n in "-n 300" "--requests 301"; do
  out=$("$bench" --port "$port" -c 4 $n --call nap --call nap | tail -1)
  echo "$out"
  echo "$out" | check "${n#* }"
done
kill -TERM $pid; wait $pid

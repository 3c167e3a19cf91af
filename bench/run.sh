#!/usr/bin/env bash
# bench/run.sh [BUILD_DIR] [ROUNDS] [SECONDS]: the fan-out and SQLite benchmarks of
# docs/BENCHMARKS.md. Starts evdal on the sample config (loopback only), runs each scenario
# ROUNDS times (default 5) after a warm-up, and prints one markdown row per scenario: median
# and min-max of throughput and latency. Every command it runs is printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-5}
secs=${3:-5}
port=19190
[ -f deploy/sample.db ] || "$build/evdal-mkdb" deploy/sample.db >/dev/null

"$build/evdal" --config deploy/evdal.conf --listen 127.0.0.1:$port >/tmp/evdal-bench-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
sleep 0.5

naps() { for d in "$@"; do printf -- '--call nap:delay_ms=%s ' "$d"; done; }
page="--random 1:100000 $(for l in user account recent_orders unread_notifications permissions recommended_products; do printf -- '--call %s:user_id=@random ' $l; done) --call feature_flags"

median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f (%.1f-%.1f)", m, a[1], a[NR]}'; }

scenario() {  # scenario NAME ARGS...
  local name=$1; shift
  local rps=() p50=() p99=()
  echo "# $build/evdal-bench --port $port $* -d $secs --json" >&2
  "$build/evdal-bench" --port $port "$@" -d 1 -w 0 --json >/dev/null  # warm-up
  for _ in $(seq "$rounds"); do
    out=$("$build/evdal-bench" --port $port "$@" -d "$secs" -w 0.5 --json)
    rps+=("$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')")
    p50+=("$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["p50_ms"])')")
    p99+=("$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["p99_ms"])')")
  done
  printf '| %s | %s | %s | %s |\n' "$name" "$(printf '%s\n' "${rps[@]}" | median)" \
    "$(printf '%s\n' "${p50[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)"
}

echo "| scenario | req/s median (min-max) | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- |"
scenario "article: 7 naps of 20..140 ms, 1 connection" -c 1 $(naps 20 40 60 80 100 120 140)
scenario "ping, 64 connections" -c 64 --method ping
scenario "static7 (7 x delay_ms=0), 64 connections" -c 64 $(naps 0 0 0 0 0 0 0)
scenario "fanout10ms (7 x 10 ms), 1,000 connections" -c 1000 --threads 2 $(naps 10 10 10 10 10 10 10)
scenario "sqlite7 page, random users, 64 connections" -c 64 $page
bare=()
for _ in $(seq "$rounds"); do
  bare+=("$("$build/evdal-sqlite-bare" --config deploy/evdal.conf -d "$secs" | sed -n 's/.*"rps": \([0-9.]*\).*/\1/p')")
done
echo "# $build/evdal-sqlite-bare --config deploy/evdal.conf -d $secs (one thread per core)" >&2
printf '| bare SQLite C API, same 6 statements, random users, one thread per core | %s | | |\n' \
  "$(printf '%s\n' "${bare[@]}" | median)"

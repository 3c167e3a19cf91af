#!/bin/bash
# Issue 14's robustness check: run the whole suite (every label but `long`) N times in a row
# with a load generator beside it (evdal-bench, closed loop, against a second evdal serving the
# SQLite sample page), and stop at the first failure. Usage: tools/repeat_suite.sh BUILD [N [JOBS]]
# Prints one line per run; the load generator's own result goes to BUILD/repeat-load.json.
set -u
build=$(cd "${1:?usage: tools/repeat_suite.sh BUILD [N [JOBS]]}" && pwd)
runs=${2:-20}
jobs=${3:-2}
cd "$(dirname "$0")/.."
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The sample's config with its admin port off and its database path absolute.
sed -e 's|^admin_listen = .*|admin_listen = ""|' -e "s|^path = sample.db|path = $PWD/deploy/sample.db|" \
  deploy/evdal.conf >"$build/repeat-evdal.conf"
"$build/evdal" --config "$build/repeat-evdal.conf" --listen "127.0.0.1:$port" \
  >"$build/repeat-evdal.log" 2>&1 &
server=$!
load=   # set below; the trap may run before it is (set -u)
trap 'kill $load $server 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do   # start-up poll, bounded: 10 s
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
# A page of the sample (seven lookups, random users) from 8 connections, as long as the runs last.
"$build/evdal-bench" --port "$port" -c 8 -d 100000 -w 0 --json --random 1:100000 \
  --call user:user_id=@random --call account:user_id=@random \
  --call recent_orders:user_id=@random --call unread_notifications:user_id=@random \
  --call permissions:user_id=@random --call recommended_products:user_id=@random \
  --call feature_flags >"$build/repeat-load.json" 2>&1 &
load=$!
for i in $(seq "$runs"); do
  start=$(date +%s)
  if ctest --test-dir "$build" -j "$jobs" -LE long --output-on-failure >"$build/repeat-$i.log" 2>&1; then
    echo "run $i/$runs: passed in $(( $(date +%s) - start )) s, $(grep -o 'tests passed.*' "$build/repeat-$i.log" | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
  else
    echo "run $i/$runs: FAILED after $(( $(date +%s) - start )) s: $(grep -E 'Failed|\*\*\*' "$build/repeat-$i.log" | tr '\n' ' ')"
    exit 1
  fi
  kill -0 "$load" 2>/dev/null || { echo "the load generator stopped: $(cat "$build/repeat-load.json")"; exit 1; }
done

#!/usr/bin/env bash
# bench/sqlite_handoff_test.sh SQLITE_BARE CONFIG: evdal-sqlite-bare --handoff (issue 20's floor:
# the page's statements through evdal's loops and SQLite pool) does the same work as the bare
# mode: for a fixed number of pages per thread, each thread (loop) draws the same users, so both
# must read the same number of rows. A page the hand-off lost or ran twice changes the count.
set -euo pipefail
bare=$1 conf=$2
summary() { "$bare" --config "$conf" --threads 2 --pages 300 "$@" | head -1; }
a=$(summary)
b=$(summary --handoff --inflight 16)
c=$(summary --handoff --inflight 1 --workers 1)
echo "bare:    $a"; echo "handoff: $b"; echo "serial:  $c"
rows() { sed -E 's/.*: ([0-9]+) pages, ([0-9]+) rows$/\1 \2/' <<<"$1"; }
[[ $(rows "$a") =~ ^600\ [1-9][0-9]*$ ]] || { echo "bare did not run 600 pages with rows"; exit 1; }
[[ $(rows "$b") == "$(rows "$a")" ]] || { echo "the hand-off read other rows than bare"; exit 1; }
[[ $(rows "$c") == "$(rows "$a")" ]] || { echo "one page at a time read other rows"; exit 1; }
"$bare" --config "$conf" --threads 2 --pages 300 --handoff | grep -q '"label": "sqlite-handoff"'

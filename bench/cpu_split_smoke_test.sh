#!/usr/bin/env bash
# bench/cpu_split_smoke_test.sh BUILD_DIR CONFIG: bench/cpu_split.py end to end for a second of
# pings: one line with a positive CPU per fetch, the rate, no errors, and the IO loops' share.
# The sample config, without its fixed admin port (tests run in parallel) and with its database
# named by absolute path, since the copy lives elsewhere.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -E -e 's|^admin_listen = .*|admin_listen =|' \
  -e "s|^path = sample.db(.*)|path = $(cd "$(dirname "$2")" && pwd)/sample.db\1|" "$2" >"$tmp/evdal.conf"
grep -q "^path = /" "$tmp/evdal.conf"
out=$(/usr/bin/python3 "$(dirname "$0")/cpu_split.py" --build "$1" --config "$tmp/evdal.conf" --seconds 1 -- \
  -c 4 --threads 1 --method ping)
echo "$out"
grep -Eq '^ +[0-9]+\.[0-9] us/fetch +[1-9][0-9]* fetches/s +p99 +[0-9.]+ ms +errors 0 +\(.*evdal-io [0-9.]+' <<<"$out"

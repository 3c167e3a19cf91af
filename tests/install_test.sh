#!/usr/bin/env bash
# tests/install_test.sh BUILD_DIR: `cmake --install` lays out the binary, the IDL and the
# sample config under a fresh prefix, and the installed binary accepts the installed config.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/evdal share/evdal/evdal.thrift etc/evdal/evdal.conf; do
  [ -f "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
"$prefix/bin/evdal" --version | grep -q '^evdal '
"$prefix/bin/evdal" --config "$prefix/etc/evdal/evdal.conf" --check-config
echo "install layout OK under $prefix"

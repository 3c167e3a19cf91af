#!/usr/bin/env bash
# tests/install_test.sh BUILD_DIR: `cmake --install` lays out the binary, the IDL and the
# sample config under a fresh prefix, and the installed binary accepts the installed config.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/evdal bin/evdal-mkdb share/evdal/evdal.thrift share/evdal/schema.sql etc/evdal/evdal.conf; do
  [ -f "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
"$prefix/bin/evdal" --version | grep -q '^evdal '
# The installed config reads sample.db beside it: the installed evdal-mkdb makes it.
"$prefix/bin/evdal-mkdb" --users 1000 "$prefix/etc/evdal/sample.db" >/dev/null
"$prefix/bin/evdal" --config "$prefix/etc/evdal/evdal.conf" --check-config
echo "install layout OK under $prefix"

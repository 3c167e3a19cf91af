#!/usr/bin/env bash
# tools/dev.sh: the one entry point for a fresh Debian 12 machine.
#
#   tools/dev.sh deps    install the Debian packages evdal and its tests need (apt), and
#                        npm's thrift for the Node.js client test into build/node
#   tools/dev.sh build   deps + configure and build into build/
#   tools/dev.sh run     build + start the server on the bundled config (Ctrl-C stops it)
#   tools/dev.sh test    build + every test: the normal build, then the whole suite again
#                        under AddressSanitizer + UBSan (build-asan/), then a smoke run of
#                        each libFuzzer target (clang, build-fuzz/); valgrind runs in the
#                        normal build's suite. CI runs exactly this.
#
# Long fuzz, soak and benchmark runs carry the CTest label "long" and are skipped here:
# run them with `ctest --test-dir build -L long`.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev valgrind
  libglib2.0-dev libevent-dev libsqlite3-dev sqlite3
  libthrift-c-glib-dev thrift-compiler python3 python3-thrift libssl-dev openssl
  g++ libthrift-dev libboost-dev libsystemd-dev gnuplot-nox
  python3-prometheus-client python3-pil chromium systemd
  libpq-dev postgresql-15 redis-server libhiredis-dev libcurl4-openssl-dev libjson-glib-dev
  haproxy
  # The clients of docs/CLIENTS.md that tests/e2e/test_clients_doc.py runs: Go and Java
  # (Node.js's thrift comes from npm, see node_thrift)
  golang-go golang-thrift-dev libthrift-java libslf4j-java default-jdk-headless
)
# The npm package of the Node.js client, in the compiler's version (docs/CLIENTS.md).
NODE_THRIFT=thrift@0.17.0
JOBS=$(nproc 2>/dev/null || echo 2)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  # Node.js and npm may come from elsewhere (nodesource's nodejs bundles npm): only when
  # either is missing does apt get asked for Debian's.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(nodejs npm)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# npm's thrift into DIR/node (never globally): the build's e2e tests find it with NODE_PATH.
node_thrift() {  # node_thrift DIR
  [ -d "$1/node/node_modules/thrift" ] && return
  mkdir -p "$1/node"
  npm install --prefix "$1/node" --no-audit --no-fund --no-save "$NODE_THRIFT" >/dev/null
}

build_into() {  # build_into DIR [cmake args...]  (CC picks the compiler)
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CC:+-DCMAKE_C_COMPILER=$CC} "$@" >/dev/null
  node_thrift "$dir"
  cmake --build "$dir" -j "$JOBS"
}

run_tests() {  # run_tests DIR LABELS_TO_EXCLUDE
  ctest --test-dir "$1" --output-on-failure -j "$JOBS" -LE "$2"
}

case "${1:-}" in
  deps) deps; node_thrift build ;;
  build) deps; build_into build ;;
  run)
    deps; build_into build
    [ -f deploy/sample.db ] || build/evdal-mkdb deploy/sample.db
    exec build/evdal --config deploy/evdal.conf ;;
  test)
    deps
    build_into build
    run_tests build long
    echo "== the same suite under AddressSanitizer + UndefinedBehaviorSanitizer"
    build_into build-asan -DEVDAL_SANITIZE=ON
    run_tests build-asan "long|valgrind"
    echo "== fuzzing smoke runs (libFuzzer)"
    CC=clang build_into build-fuzz -DEVDAL_FUZZ=ON
    ctest --test-dir build-fuzz --output-on-failure -L fuzz ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac

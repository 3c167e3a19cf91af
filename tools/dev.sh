#!/usr/bin/env bash
# tools/dev.sh: the one entry point for a fresh Debian 12 machine.
#
#   tools/dev.sh deps    install the Debian packages evdal and its tests need (apt), and
#                        npm's thrift for the Node.js client test into build/node
#   tools/dev.sh build   deps + configure and build into build/
#   tools/dev.sh run     build + start the server on the bundled config (Ctrl-C stops it)
#   tools/dev.sh run-postgresql
#                        build + a throwaway PostgreSQL 15 in a temporary folder, loaded with
#                        the sample (evdal-mkdb --postgresql), and the server on
#                        deploy/evdal-postgresql.conf pointed at it (Ctrl-C stops both)
#   tools/dev.sh test    build + every test: the normal build, the suite again under ASan +
#                        UBSan (build-asan/), the unit and e2e tests under ThreadSanitizer
#                        (build-tsan/), then each libFuzzer target's smoke run (clang,
#                        build-fuzz/); valgrind runs in the normal build's suite. CI runs this.
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
  run-postgresql)
    deps; build_into build
    # pg_fixture.py starts PostgreSQL (as the postgres user when root), runs the command with
    # EVDAL_PG_DIR/EVDAL_PG_PORT/EVDAL_PG_CONNINFO set, and stops and removes it afterwards.
    exec /usr/bin/python3 tests/e2e/pg_fixture.py run -- bash -c '
      set -e
      build/evdal-mkdb --postgresql "$EVDAL_PG_CONNINFO"
      conf="$EVDAL_PG_DIR/evdal-postgresql.conf"
      sed "s|^conninfo = .*|conninfo = host=$EVDAL_PG_DIR port=$EVDAL_PG_PORT dbname=postgres user=evdal_ro|" \
        deploy/evdal-postgresql.conf > "$conf"
      echo "== PostgreSQL 15 in $EVDAL_PG_DIR (psql -h $EVDAL_PG_DIR -p $EVDAL_PG_PORT -U postgres)"
      build/evdal --config "$conf"' ;;
  test)
    deps
    build_into build
    run_tests build long
    echo "== the same suite under AddressSanitizer + UndefinedBehaviorSanitizer"
    build_into build-asan -DEVDAL_SANITIZE=ON
    run_tests build-asan "long|valgrind"
    echo "== the unit and e2e tests under ThreadSanitizer"
    build_into build-tsan -DEVDAL_TSAN=ON -DEVDAL_PEERS=OFF
    # Tests of tools, clients and packaging add no evdal threads to check: the other builds
    # run them.
    ctest --test-dir build-tsan --output-on-failure -j "$JOBS" -LE "long|valgrind" \
      -E '^(install|package|bench/.*|e2e/test_(page|traces_browser|clients_doc|peer_cpp|python_frontend|evdal_cli|mkdb|modules))$'
    echo "== fuzzing smoke runs (libFuzzer)"
    CC=clang build_into build-fuzz -DEVDAL_FUZZ=ON
    ctest --test-dir build-fuzz --output-on-failure -L fuzz ;;
  *)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac

#!/usr/bin/env bash
# tests/package_test.sh BUILD_DIR: the .deb that `cpack -G DEB` makes of the build (CPack, root
# CMakeLists.txt). Checks its files (prefix /usr, the config in /etc), that each library the
# binaries link is in Depends, the conffile, and the maintainer scripts' systemd calls (with
# and without a running systemd, against stub commands). Then dpkg unpacks it into a throwaway
# root (dpkg --root): only unpacked, never configured, so no script runs and nothing outside
# that root changes.
set -euo pipefail
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND"' ERR
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log"; fail "cpack -G DEB"; }
deb=$(ls "$tmp"/out/evdal_*.deb)
echo "made $(basename "$deb")"

# Files: everything under /usr, the config under /etc, nothing under /usr/local or /usr/etc.
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$tmp/files"
for f in /usr/bin/evdal /usr/bin/evdal-cli /usr/bin/evdal-mkdb /etc/evdal/evdal.conf \
         /usr/share/evdal/evdal.thrift /usr/share/evdal/schema.sql \
         /usr/lib/systemd/system/evdal.service /usr/lib/systemd/system/evdal.socket \
         /usr/lib/systemd/system/evdal-admin.socket /usr/share/doc/evdal/README.md \
         /usr/include/evdal/evd_backend.h; do
  grep -qx "$f" "$tmp/files" || fail "$f is not in the package"
done
grep -qE '^/usr/lib/(.+/)?pkgconfig/evdal\.pc$' "$tmp/files" || fail "evdal.pc is not in the package"
! grep -E '^/usr/local/|^/usr/etc/' "$tmp/files" || fail "files outside the /usr prefix layout"
mkdir "$tmp/x"
dpkg-deb -x "$deb" "$tmp/x"
grep -q '^ExecStart=/usr/bin/evdal --config \${CONFIGURATION_DIRECTORY}/evdal.conf$' \
  "$tmp/x/usr/lib/systemd/system/evdal.service" || fail "the unit does not run /usr/bin/evdal"
grep -q '^path = /var/lib/evdal/sample.db$' "$tmp/x/etc/evdal/evdal.conf" ||
  fail "the packaged config does not read /var/lib/evdal/sample.db"
"$tmp/x/usr/bin/evdal" --version | grep -q '^evdal '

# Depends: the package of every shared library the binaries need (found with dpkg -S).
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
ldconfig -p > "$tmp/ldcache"   # read from a file: awk's early exit would break a pipe (pipefail)
for bin in evdal evdal-cli evdal-mkdb; do
  for lib in $(readelf -d "$tmp/x/usr/bin/$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(awk -v l="$lib" '$1 == l && /x86-64|x86_64|AArch64|64bit/ {print $NF; exit}' "$tmp/ldcache")
    [ -n "$path" ] || path=$(awk -v l="$lib" '$1 == l {print $NF; exit}' "$tmp/ldcache")
    [ -n "$path" ] || fail "$bin needs $lib, which ldconfig does not know"
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null || dpkg -S "$path" 2>/dev/null) ||
      fail "no package owns $path ($lib)"
    pkg=${pkg%%:*}
    [[ ", $depends," == *", $pkg "* || ", $depends," == *", $pkg,"* ]] ||
      fail "$bin needs $lib from $pkg, which Depends lacks"
  done
done

# The config is a conffile: dpkg keeps an operator's changes over an upgrade.
mkdir "$tmp/ctl"
dpkg-deb -e "$deb" "$tmp/ctl"
[ "$(cat "$tmp/ctl/conffiles")" = /etc/evdal/evdal.conf ] || fail "conffiles: $(cat "$tmp/ctl/conffiles")"
for s in postinst prerm postrm; do
  [ -x "$tmp/ctl/$s" ] || fail "no executable $s"
  sh -n "$tmp/ctl/$s"
done

# The maintainer scripts, against stubs that only record their arguments. In a private mount
# namespace /run is an empty tmpfs (no running systemd), then one with /run/systemd/system
# (a running one); the real /run and systemd are never touched.
mkdir "$tmp/stubs"
for c in deb-systemd-helper deb-systemd-invoke systemctl; do
  printf '#!/bin/sh\necho "%s $*" >> "$STUB_LOG"\n[ "$1 $2" != "--quiet was-enabled" ] || exit 1\n' \
    "$c" > "$tmp/stubs/$c"
  chmod +x "$tmp/stubs/$c"
done
run_scripts() {  # $1: "running" or "not running"
  local mk=''
  [ "$1" = running ] && mk='mkdir -p /run/systemd/system &&'
  STUB_LOG=$tmp/log PATH=$tmp/stubs:$PATH unshare -m --propagation private sh -c "
    mount -t tmpfs tmpfs /run && $mk
    sh $tmp/ctl/postinst configure '' && echo -- >> \$STUB_LOG &&
    sh $tmp/ctl/postinst configure 0.0.9 && echo -- >> \$STUB_LOG &&
    sh $tmp/ctl/prerm remove && echo -- >> \$STUB_LOG &&
    sh $tmp/ctl/postrm remove && echo -- >> \$STUB_LOG &&
    sh $tmp/ctl/postrm purge"
}
if unshare -m --propagation private true 2>/dev/null; then
  : > "$tmp/log"
  run_scripts running
  expected='deb-systemd-helper unmask evdal.service
deb-systemd-helper --quiet was-enabled evdal.service
deb-systemd-helper update-state evdal.service
systemctl --system daemon-reload
deb-systemd-invoke start evdal.service
--
deb-systemd-helper unmask evdal.service
deb-systemd-helper --quiet was-enabled evdal.service
deb-systemd-helper update-state evdal.service
systemctl --system daemon-reload
deb-systemd-invoke restart evdal.service
--
deb-systemd-invoke stop evdal.socket evdal-admin.socket evdal.service
--
systemctl --system daemon-reload
deb-systemd-helper mask evdal.service
--
systemctl --system daemon-reload
deb-systemd-helper purge evdal.service
deb-systemd-helper unmask evdal.service'
  [ "$(cat "$tmp/log")" = "$expected" ] ||
    { echo "with systemd running, the scripts ran:"; cat "$tmp/log"; fail "maintainer scripts"; }
  : > "$tmp/log"
  run_scripts 'not running'
  ! grep -E '^(systemctl|deb-systemd-invoke) ' "$tmp/log" ||
    fail "without a running systemd the scripts still called systemctl/deb-systemd-invoke"
  grep -qx 'deb-systemd-helper update-state evdal.service' "$tmp/log" ||
    fail "without a running systemd the service's enablement was not recorded"
  echo "maintainer scripts OK (with and without a running systemd)"
else
  echo "no mount namespaces here (unshare -m needs root): maintainer scripts only syntax-checked"
fi

# dpkg itself unpacks it (into a throwaway root), the config staged as a conffile.
root=$tmp/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
if dpkg --root="$root" --unpack "$deb" >"$tmp/dpkg.log" 2>&1; then
  [ -x "$root/usr/bin/evdal" ] || fail "dpkg --unpack left no /usr/bin/evdal"
  [ -f "$root/etc/evdal/evdal.conf.dpkg-new" ] || fail "the config was not unpacked as a conffile"
  grep -qx /etc/evdal/evdal.conf "$root/var/lib/dpkg/info/evdal.conffiles" || fail "dpkg's conffiles"
  echo "dpkg --root unpacked it"
else
  cat "$tmp/dpkg.log"
  [ "$(id -u)" = 0 ] && fail "dpkg --root --unpack"
  echo "dpkg --unpack needs root here: skipped"
fi
echo "package OK"

#!/usr/bin/env bash
# tests/install_test.sh BUILD_DIR: `cmake --install` lays out the binaries, the IDL, the sample
# config and the systemd units under a fresh prefix; the installed binary accepts the installed
# config; the units pass `systemd-analyze verify` and score "OK" (<= 2.0) in
# `systemd-analyze security`. Then, with DESTDIR, the prefix /usr puts the config in /etc/evdal
# (where the unit's ConfigurationDirectory= is), and a second install keeps an edited config.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/evdal bin/evdal-mkdb bin/evdal-cli share/evdal/evdal.thrift share/evdal/schema.sql \
         share/evdal/evdal.conf etc/evdal/evdal.conf share/doc/evdal/README.md \
         lib/systemd/system/evdal.service lib/systemd/system/evdal.socket \
         lib/systemd/system/evdal-admin.socket include/evdal/evd_backend.h \
         include/evdal/evd_value.h; do
  [ -f "$prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
# The backend interface compiles on its own: every header it includes is installed beside it.
pcdir=$(dirname "$(find "$prefix" -path '*/pkgconfig/evdal.pc' | head -n 1)")
[ -f "$pcdir/evdal.pc" ] || { echo "missing after install: evdal.pc"; exit 1; }
echo '#include "evd_backend.h"' |
  cc -fsyntax-only -Werror -x c - $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags evdal) ||
  { echo "the installed evd_backend.h does not compile with pkg-config evdal's flags alone"; exit 1; }
"$prefix/bin/evdal" --version | grep -q '^evdal '

# The installed config reads the database from the unit's state directory.
grep -q '^path = /var/lib/evdal/sample.db$' "$prefix/etc/evdal/evdal.conf" ||
  { echo "installed config does not read /var/lib/evdal/sample.db"; exit 1; }
"$prefix/bin/evdal-mkdb" --users 1000 "$prefix/sample.db" >/dev/null
sed "s|^path = /var/lib/evdal/sample.db$|path = $prefix/sample.db|" "$prefix/etc/evdal/evdal.conf" \
  > "$prefix/check.conf"
"$prefix/bin/evdal" --config "$prefix/check.conf" --check-config

# The unit runs the installed binaries.
unit=$prefix/lib/systemd/system/evdal.service
grep -q "^ExecStart=$prefix/bin/evdal --config" "$unit" || { echo "ExecStart does not run $prefix/bin/evdal"; exit 1; }
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$unit" "$prefix/lib/systemd/system/evdal.socket" \
        "$prefix/lib/systemd/system/evdal-admin.socket" 2>&1) || { echo "$out"; exit 1; }
  # verify prints nothing for clean units (warnings included).
  [ -z "$out" ] || { echo "systemd-analyze verify is not clean:"; echo "$out"; exit 1; }
  score=$(systemd-analyze security --offline=yes "$unit" 2>&1 |
          sed -n 's/.*Overall exposure level for evdal.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || { echo "no exposure score"; systemd-analyze security --offline=yes "$unit"; exit 1; }
  awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' ||
    { echo "exposure $score is above 2.0"; exit 1; }
  echo "units verified; exposure $score"
else
  echo "systemd-analyze not installed: units not checked (tools/dev.sh deps installs it)"
  exit 1
fi

# The prefix /usr (a distribution's, and the .deb's): the config goes to /etc/evdal, which the
# unit reads, not /usr/etc/evdal. DESTDIR keeps it all inside a temp folder.
root=$prefix/destdir
DESTDIR=$root cmake --install "$build" --prefix /usr >/dev/null
for f in usr/bin/evdal usr/bin/evdal-cli etc/evdal/evdal.conf usr/share/evdal/evdal.conf \
         usr/lib/systemd/system/evdal.service; do
  [ -f "$root/$f" ] || { echo "missing after DESTDIR install with prefix /usr: /$f"; exit 1; }
done
[ ! -e "$root/usr/etc" ] || { echo "the prefix /usr installed a /usr/etc"; exit 1; }
grep -q '^path = /var/lib/evdal/sample.db$' "$root/etc/evdal/evdal.conf" ||
  { echo "/etc/evdal/evdal.conf is not the sample config"; exit 1; }
grep -q '^ExecStart=/usr/bin/evdal --config ${CONFIGURATION_DIRECTORY}/evdal.conf$' \
  "$root/usr/lib/systemd/system/evdal.service" || { echo "the unit does not run /usr/bin/evdal"; exit 1; }
# An operator's edits survive a reinstall; the new sample goes beside them.
echo '# edited by the operator' >> "$root/etc/evdal/evdal.conf"
DESTDIR=$root cmake --install "$build" --prefix /usr >/dev/null
tail -n 1 "$root/etc/evdal/evdal.conf" | grep -q '^# edited by the operator$' ||
  { echo "a reinstall replaced the edited /etc/evdal/evdal.conf"; exit 1; }
grep -q '^path = /var/lib/evdal/sample.db$' "$root/etc/evdal/evdal.conf.new" ||
  { echo "no evdal.conf.new beside the edited config"; exit 1; }
echo "install layout OK under $prefix, and with DESTDIR and the prefix /usr"

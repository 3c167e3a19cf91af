"""evdal's log (issue 7): the level set by [server] log_level, by --verbose (which wins) and by
a SIGHUP reload; and, under a journald (a fake one, in a private mount namespace), structured
entries in the journal's native protocol with REQUEST_ID, LOOKUP and PEER fields.

Levels used here, from the code: "listening on" is a notice (g_message, printed at start-up by
every server at the default level, info), the fault backend's "call cancelled" (a call that
timed out is cancelled) an info line, "connection accepted" and a failed call's
"LOOKUP (KIND): message" debug lines, and "reload refused" a warning."""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

LOOKUPS = h.NAP_LOOKUP + h.FAULT_LOOKUPS
ACCEPTED = 'connection accepted on loop'
CANCELLED = 'fault backend: call cancelled'


def conf(log_level, **server):
    return h.config(lookups=LOOKUPS, log_level=log_level, **server)


def time_out_one(server, rid):
    """A fetch whose one call never answers and times out at the 100 ms deadline: a debug
    line "[rid] stuck (EVDAL_ERROR_KIND_TIMEOUT): ..." """
    c, t = h.client(server)
    try:
        r = c.fetch(h.fetch_request({'s': ttypes.LookupCall(lookup='stuck')}, request_id=rid,
                                    deadline_ms=100))
        assert r.results['s'].error.kind == ttypes.ErrorKind.TIMEOUT, r
    finally:
        t.close()


def timed_out_re(rid):
    return r'\[%s\] stuck \(EVDAL_ERROR_KIND_TIMEOUT\)' % re.escape(rid)


def one_connection(server):
    c, t = h.client(server)
    try:
        assert c.ping() == 'pong'
    finally:
        t.close()


class QuietServer(h.Server):
    """A server whose log may not say "listening on" (log_level above notice): it listens on a
    unix socket in its temp folder, and start-up waits until that socket accepts."""

    def __init__(self, config_text, **kw):
        super().__init__(config_text, **kw)
        self.sock_path = os.path.join(self.tmpdir, 'evdal.sock')
        self.config_text = self.config_text.replace('@SOCK@', self.sock_path)

    def start(self):
        with open(self.config_path, 'w') as f:
            f.write(self.config_text)
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen([h.EVDAL_BIN, '--config', self.config_path] +
                                     self.extra_args, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, close_fds=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if os.path.exists(self.sock_path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.sock_path)
                    break
                except OSError:
                    pass
                finally:
                    s.close()
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise h.ServerError('evdal exited with %s:\n%s' % (self.returncode,
                                                                   self.log_tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise h.ServerError('evdal never accepted on %s:\n%s' % (self.sock_path,
                                                                         self.log_tail()))
            time.sleep(0.02)
        self.address = self.unix_path = self.sock_path
        return self


class LevelTest(unittest.TestCase):

    def stopped_log(self, server):
        """The whole log once the server has exited (every line written, none to come)."""
        self.assertEqual(server.stop(), 0, server.log_tail())
        return server.log_text()

    def test_info_shows_notices_but_not_debug(self):
        # The default level, and the control for the tests below.
        server = h.Server(conf('info', admin_listen='127.0.0.1:0'))
        with server:
            one_connection(server)
            time_out_one(server, 'lvl-info')
            self.assertTrue(server.wait_log(r'\[lvl-info\] ' + re.escape(CANCELLED), 5),
                            server.log_tail())
            text = self.stopped_log(server)
        self.assertIn('listening on', text)
        self.assertNotIn(ACCEPTED, text)
        self.assertNotRegex(text, timed_out_re('lvl-info'))

    def test_client_text_cannot_forge_log_lines(self):
        """A fetch whose critical call fails is logged at notice level with the client's
        request id and call key; their newlines started lines of the client's choosing (a
        forged CRITICAL after the real line). Control characters print as '?' now."""
        server = h.Server(conf('info'))
        with server:
            c, t = h.client(server)
            try:
                rid = 'rid-1\n(evdal:1): evdal-CRITICAL **: forged by the client'
                key = 'k\r\nevdal-WARNING **: forged too'
                with self.assertRaises(ttypes.LookupFailed):
                    c.fetch(h.fetch_request({key: ttypes.LookupCall(lookup='broken',
                                                                    critical=True)},
                                            request_id=rid))
            finally:
                t.close()
            self.assertTrue(server.wait_log(r'fetch failed: critical call', 5), server.log_tail())
            text = self.stopped_log(server)
        self.assertNotRegex(text, r'(?m)^\(evdal:1\)|^evdal-WARNING \*\* ?: forged', text)
        self.assertIn('[rid-1?(evdal:1): evdal-CRITICAL **: forged by the client]', text)
        self.assertIn('critical call k??evdal-WARNING **: forged too', text)

    def test_notice_hides_info_lines(self):
        server = h.Server(conf('notice'))
        with server:
            time_out_one(server, 'lvl-notice')
            # The timeout's lines come before its reply, and the log is whole once the server
            # has exited: nothing later can bring them.
            text = self.stopped_log(server)
        self.assertIn('listening on', text)
        self.assertNotIn(CANCELLED, text)
        self.assertNotIn('lvl-notice', text)

    def test_debug_in_the_file_shows_debug_lines(self):
        server = h.Server(conf('debug'))
        with server:
            one_connection(server)
            self.assertTrue(server.wait_log(re.escape(ACCEPTED), 5), server.log_tail())
            time_out_one(server, 'lvl-debug')
            self.assertTrue(server.wait_log(timed_out_re('lvl-debug'), 5), server.log_tail())

    def test_warning_hides_notices_and_keeps_warnings(self):
        server = QuietServer(conf('warning', listen='@SOCK@'))
        with server:
            one_connection(server)
            time_out_one(server, 'lvl-warning')
            # A reload of a broken file: a notice ("SIGHUP: reloading"), then warnings.
            with open(server.config_path, 'a') as f:
                f.write('\n[lookup nap]\nbackend = nosuchbackend\n')
            server.send_signal(signal.SIGHUP)
            self.assertTrue(server.wait_log(r'reload refused: the configuration in use is kept',
                                            10), server.log_tail())
            text = self.stopped_log(server)
        self.assertNotIn('listening on', text)
        self.assertNotIn('SIGHUP: reloading', text)
        self.assertNotIn(ACCEPTED, text)
        self.assertNotIn('lvl-warning', text)
        # Nothing but warnings (GLib prints them as "evdal-WARNING").
        for line in text.splitlines():
            if line.strip():
                self.assertRegex(line, r'WARNING|reload refused', text)

    def test_verbose_shows_debug_and_beats_the_file(self):
        server = h.Server(conf('warning'), extra_args=['--verbose'])
        with server:
            one_connection(server)
            self.assertTrue(server.wait_log(re.escape(ACCEPTED), 5), server.log_tail())
            time_out_one(server, 'lvl-verbose')
            # Debug lines about the request carry its id.
            self.assertTrue(server.wait_log(timed_out_re('lvl-verbose'), 5), server.log_tail())
            self.assertIn('listening on', server.log_text())

    def test_sighup_applies_a_new_log_level(self):
        server = h.Server(conf('info', admin_listen='127.0.0.1:0'))
        with server:
            one_connection(server)
            self.assertFalse(server.wait_log(re.escape(ACCEPTED), 0.3))

            def reload(level, then):
                n = len(re.findall(then, server.log_text()))
                with open(server.config_path, 'w') as f:
                    f.write(conf(level, admin_listen=server.admin_address)
                            .replace('127.0.0.1:0', server.address))
                server.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while len(re.findall(then, server.log_text())) <= n:
                    self.assertLess(time.monotonic(), deadline, server.log_tail())
                    time.sleep(0.02)

            # info -> debug: debug lines appear.
            reload('debug', r'reloaded ')
            one_connection(server)
            self.assertTrue(server.wait_log(re.escape(ACCEPTED), 5), server.log_tail())
            accepted = server.log_text().count(ACCEPTED)
            # debug -> warning: the reload's own "reloaded" notice is already held back.
            reload('warning', r'SIGHUP: reloading')
            # The reload is built on a thread of its own: wait until it is done (counted)
            # before the file changes again, or the thread may read the next version.
            done = 'evdal_config_reloads_total{result="done"}'
            deadline = time.monotonic() + 10
            while server.metric(done) != 2:
                self.assertLess(time.monotonic(), deadline, server.log_tail())
                time.sleep(0.02)
            # A broken file's reload is refused with warnings, after the one before is done.
            with open(server.config_path, 'a') as f:
                f.write('\n[lookup nap]\nbackend = nosuchbackend\n')
            server.send_signal(signal.SIGHUP)
            self.assertTrue(server.wait_log(r'reload refused: the configuration in use is kept',
                                            10), server.log_tail())
            one_connection(server)
            time_out_one(server, 'after-warning')
            # Its lines would have been written before its reply was sent (the loop logs the
            # timeout and the cancel, then answers): none came.
            text = server.log_text()
            self.assertEqual(text.count('reloaded '), 1, text)
            self.assertEqual(text.count(ACCEPTED), accepted, text)
            self.assertNotIn('after-warning', text)
            self.assertEqual(text.count('SIGHUP: reloading'), 2, text)  # not the third


# ---- journald ----

# Runs inside `unshare -m`: /run becomes an empty tmpfs (for this process and evdal only), a
# fake journald binds /run/systemd/journal/socket (datagrams, the native protocol) and
# /run/systemd/journal/stdout (the stream stderr is connected to, which is how GLib knows it
# runs under journald), and evdal runs with that stderr. Datagrams are appended to argv[1]
# (4-byte length, then the datagram); plain text on the stream goes to argv[2].
JOURNAL_HELPER = r'''
import os, select, signal, socket, struct, subprocess, sys
out_path, text_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', '/run'], check=True)
os.makedirs('/run/systemd/journal')
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind('/run/systemd/journal/socket')
st = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
st.bind('/run/systemd/journal/stdout')
st.listen(1)
cl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
cl.connect('/run/systemd/journal/stdout')
srv, _ = st.accept()
proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=cl.fileno())
cl.close()
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, lambda n, f: proc.send_signal(n))
with open(out_path, 'ab', buffering=0) as out, open(text_path, 'ab', buffering=0) as text:
    watch = [dg, srv]
    while True:
        r, _, _ = select.select(watch, [], [], 0.05)
        if dg in r:
            data = dg.recv(1 << 20)
            out.write(struct.pack('<I', len(data)) + data)
        if srv in r:
            data = srv.recv(65536)
            if data:
                text.write(data)
            else:
                watch.remove(srv)   # evdal's stderr closed
        if proc.poll() is not None and dg not in r:
            break
sys.exit(proc.returncode)
'''


def parse_entry(data):
    """One native-protocol datagram: KEY=VALUE lines, or KEY, newline, a 64-bit little-endian
    length, VALUE and a newline for values that hold newlines."""
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b'\n', i)
        line = data[i:nl]
        if b'=' in line:
            k, v = line.split(b'=', 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack('<Q', data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode('utf-8', 'replace')
    return fields


def can_unshare_mounts():
    if os.geteuid() != 0 or not shutil.which('unshare'):
        return False
    r = subprocess.run(['unshare', '-m', '--propagation', 'private', 'sh', '-c',
                        'mount -t tmpfs tmpfs /run'], capture_output=True)
    return r.returncode == 0


@unittest.skipUnless(can_unshare_mounts(), 'a fake journald needs a private mount namespace '
                     '(root and unshare -m); without one /run/systemd/journal is the real one')
class JournaldTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='evdal-journal-')
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.entries_path = os.path.join(self.tmp, 'entries')
        self.text_path = os.path.join(self.tmp, 'stderr-text')
        open(self.entries_path, 'wb').close()
        open(self.text_path, 'wb').close()

    def entries(self):
        with open(self.entries_path, 'rb') as f:
            data = f.read()
        out = []
        i = 0
        while i + 4 <= len(data):
            (n,) = struct.unpack('<I', data[i:i + 4])
            if i + 4 + n > len(data):
                break
            out.append(parse_entry(data[i + 4:i + 4 + n]))
            i += 4 + n
        return out

    def wait_entry(self, pattern, timeout=10):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.entries():
                m = rx.search(e.get('MESSAGE', ''))
                if m:
                    return e, m
            time.sleep(0.02)
        raise AssertionError('no journal entry matching %r; got %r' % (pattern, self.entries()))

    def test_journal_entries_carry_request_lookup_and_peer(self):
        config = os.path.join(self.tmp, 'evdal.conf')
        with open(config, 'w') as f:
            f.write(conf('info'))
        proc = subprocess.Popen(['unshare', '-m', '--propagation', 'private', sys.executable,
                                 '-c', JOURNAL_HELPER, self.entries_path, self.text_path,
                                 h.EVDAL_BIN, '--config', config, '--verbose'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            e, m = self.wait_entry(r'listening on (\S+)')
            self.assertEqual(e['PRIORITY'], '5')      # a notice
            self.assertEqual(e['GLIB_DOMAIN'], 'evdal')
            host, port, _ = h.parse_address(m.group(1))

            sock = TSocket.TSocket(host, port)
            t = TTransport.TFramedTransport(sock)
            c = h.DataAccess.Client(TBinaryProtocol.TBinaryProtocol(t))
            t.open()
            try:
                local = '%s:%d' % sock.handle.getsockname()[:2]
                with self.assertRaises(ttypes.LookupFailed):
                    c.fetch(h.fetch_request({'b': ttypes.LookupCall(lookup='broken',
                                                                    critical=True)},
                                            request_id='journal-rid-1'))
            finally:
                t.close()
            # The notice about the failed fetch: its request, lookup and peer as fields.
            e, _ = self.wait_entry(r'fetch failed: critical call b')
            self.assertEqual(e['REQUEST_ID'], 'journal-rid-1')
            self.assertEqual(e['LOOKUP'], 'broken')
            self.assertEqual(e['PEER'], local)
            self.assertEqual(e['PRIORITY'], '5')
            # The debug line (--verbose) about the failed call: request and lookup.
            e, _ = self.wait_entry(r'broken \(EVDAL_ERROR_KIND_BACKEND\)')
            self.assertEqual(e['REQUEST_ID'], 'journal-rid-1')
            self.assertEqual(e['LOOKUP'], 'broken')
            self.assertEqual(e['PRIORITY'], '7')
            self.assertNotIn('PEER', e)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                rc = 'killed'
        self.assertEqual(rc, 0, proc.stderr.read().decode('utf-8', 'replace'))
        proc.stderr.close()
        # Everything went to the journal as entries: no readable lines on the stream.
        with open(self.text_path, 'rb') as f:
            self.assertEqual(f.read(), b'')
        self.wait_entry(r'^shut down cleanly$', timeout=1)


if __name__ == '__main__':
    unittest.main()

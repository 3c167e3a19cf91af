"""Shared helpers of evdal's end-to-end tests.

The tests start the real evdal binary (EVDAL_BIN) on an ephemeral port and talk to it with the
Python stubs generated from idl/evdal.thrift (EVDAL_GEN_PY), or with hand-made bytes for the
hostile cases. Only the standard library and python3-thrift are used.

Environment (set by CTest, see tests/CMakeLists.txt):
  EVDAL_BIN         the server binary
  EVDAL_GEN_PY      the folder holding the generated package `evdal`
  EVDAL_SOURCE_DIR  the repository root
"""
import logging
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.protocol import TBinaryProtocol, TCompactProtocol, TMultiplexedProtocol
from thrift.transport import TSocket, TTransport


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError('%s is not set: run the e2e tests through CTest, or set EVDAL_BIN, '
                           'EVDAL_GEN_PY and EVDAL_SOURCE_DIR by hand' % name)
    return value


EVDAL_BIN = _env('EVDAL_BIN')
EVDAL_GEN_PY = _env('EVDAL_GEN_PY')
EVDAL_SOURCE_DIR = os.environ.get('EVDAL_SOURCE_DIR') or os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..'))

if EVDAL_GEN_PY not in sys.path:
    sys.path.insert(0, EVDAL_GEN_PY)

from evdal import DataAccess, ttypes  # noqa: E402  (generated at build time)

SERVICE_NAME = 'DataAccess'

# TSocket logs every refused connect; the tests that expect refusals say so themselves.
logging.getLogger('thrift.transport.TSocket').setLevel(logging.CRITICAL)
LISTEN_RE = re.compile(r'listening on (\S+)')
ADMIN_RE = re.compile(r'admin on http://(\S+?)/')

# Every server a test stops must have stayed under this peak RSS (VmHWM, read just before the
# stop): memory bounded under every case, hostile or not. The server itself needs about 10 MiB;
# the bound is generous so that only a leak or an unbounded buffer trips it. A test with its own
# bound passes Server(max_rss_mib=...); None turns the check off.
MAX_RSS_MIB = 128
# ASan keeps freed memory in quarantine and shadows the rest: peak RSS means little there.
SANITIZED = os.environ.get('EVDAL_SANITIZE') == '1'

# The one factor by which every wall-clock bound of the e2e tests is multiplied (an upper bound
# on how long something may take, never how long a test waits for a state: that is polled, see
# wait_until). The sanitizers slow the server several times; EVDAL_TIME_SCALE sets the factor
# (a slow CI machine).
TIME_SCALE = float(os.environ.get('EVDAL_TIME_SCALE') or (4.0 if SANITIZED else 1.0))


def scaled(seconds):
    """A wall-clock bound of `seconds` on an unloaded machine, scaled by TIME_SCALE."""
    return seconds * TIME_SCALE


def sockets_to(pid, port):
    """Established TCP sockets of process `pid` to 127.0.0.1:port."""
    inodes = set()
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    n = 0
    for table in ('/proc/%d/net/tcp' % pid, '/proc/%d/net/tcp6' % pid):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                remote_port = int(cols[2].split(':')[1], 16)
                if remote_port == port and cols[3] == '01' and cols[9] in inodes:
                    n += 1
    return n


def wait_until(predicate, timeout=10.0, what=None):
    """Polls `predicate` until it returns something true, which is returned; fails the test
    (AssertionError naming `what`) when scaled(timeout) passes first. For states of a server:
    a gauge, a counter, a log line; never a fixed sleep that hopes the state came."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('%.1f s passed waiting for %s' % (
                scaled(timeout), what or getattr(predicate, '__name__', 'a condition')))
        time.sleep(0.01)

# The [server] keys most tests start from (every value the contract's sample would accept).
SERVER_DEFAULTS = {
    'listen': '127.0.0.1:0',
    'io_threads': 2,
    'workers': 4,
    'deadline_ms': 5000,
    'shutdown_timeout_ms': 5000,
    # Shedding by loop lag (Overloaded when a request waited 500 ms to be read) is the right
    # answer of a server on a machine this busy, and the wrong one for a test of anything else:
    # the tests of shedding set it themselves (test_limits, test_page, ...).
    'max_queue_ms': 0,
}

NAP_LOOKUP = """\
[lookup nap]
backend = delay
delay_ms = 100
description = Sleeps, then answers
"""

# The fault backend's three plain behaviours: every call fails, never completes, or answers
# with the request context it was handed.
FAULT_LOOKUPS = """
[lookup broken]
backend = fault
mode = fail

[lookup stuck]
backend = fault
mode = hang

[lookup ctx]
backend = fault
mode = context
"""


def config(extra='', lookups=NAP_LOOKUP, **server):
    """A configuration: [server] with SERVER_DEFAULTS updated by `server` (a value of None drops
    the key), then `lookups`, then `extra`. '@TMPDIR@' stands for the server's temp folder."""
    keys = dict(SERVER_DEFAULTS)
    keys.update(server)
    lines = ['[server]'] + ['%s = %s' % (k, v) for k, v in keys.items() if v is not None]
    return '\n'.join(lines) + '\n\n' + lookups + ('\n' + extra if extra else '')


def sample_db(prefix='evdal-db-'):
    """The sample database: deploy/sample.db (CTest's sample_db fixture builds it), or else one
    built with evdal-mkdb into a temp folder removed with the module, so that a test that
    needs it also runs alone. Skips the module when neither is possible."""
    path = os.path.join(EVDAL_SOURCE_DIR, 'deploy', 'sample.db')
    if os.path.exists(path):
        return path
    mkdb = os.path.join(os.path.dirname(EVDAL_BIN), 'evdal-mkdb')
    if not os.access(mkdb, os.X_OK):
        raise unittest.SkipTest('no deploy/sample.db and no evdal-mkdb beside EVDAL_BIN')
    tmp = tempfile.mkdtemp(prefix=prefix)
    unittest.addModuleCleanup(shutil.rmtree, tmp, True)
    path = os.path.join(tmp, 'sample.db')
    subprocess.run([mkdb, path], check=True, timeout=600, stdout=subprocess.DEVNULL)
    return path


def parse_address(addr):
    """'127.0.0.1:PORT' / '[::1]:PORT' / 'unix:/path' -> (host, port, unix_path)."""
    addr = addr.rstrip('.,;')
    if addr.startswith('unix:'):
        return None, None, addr[len('unix:'):]
    if addr.startswith('/'):
        return None, None, addr
    m = re.match(r'^\[([^\]]+)\]:(\d+)$', addr)
    if m:
        return m.group(1), int(m.group(2)), None
    m = re.match(r'^([^:]+):(\d+)$', addr)
    if m:
        return m.group(1), int(m.group(2)), None
    raise ValueError('cannot parse listening address %r' % addr)


class ServerError(AssertionError):
    pass


class Server:
    """Runs evdal with a given configuration for the length of a `with` block.

    The configuration is written to a fresh temp folder ('@TMPDIR@' in it is replaced by that
    folder's path), the server's stdout and stderr go to a log file there, and start-up waits
    for the "listening on ADDR" line. On leaving the block the server gets SIGTERM (if it still
    runs) and must exit 0, and its peak RSS read just before any stop() must be under
    max_rss_mib (MAX_RSS_MIB unless given; not checked under a wrapper such as valgrind, nor
    under ASan); otherwise the test fails with the tail of the log.
    """

    def __init__(self, config_text, extra_args=(), env=None, wrapper=None, start_timeout=None,
                 stop_timeout=None, max_rss_mib=MAX_RSS_MIB):
        self.tmpdir = tempfile.mkdtemp(prefix='evdal-e2e-')
        self.config_path = os.path.join(self.tmpdir, 'evdal.conf')
        self.log_path = os.path.join(self.tmpdir, 'evdal.log')
        self.config_text = config_text.replace('@TMPDIR@', self.tmpdir)
        self.extra_args = [a.replace('@TMPDIR@', self.tmpdir) for a in extra_args]
        self.env = env
        self.wrapper = list(wrapper or [])
        self.start_timeout = start_timeout or (120.0 if self.wrapper else 20.0)
        self.stop_timeout = stop_timeout or (120.0 if self.wrapper else 15.0)
        self.proc = None
        self.returncode = None
        self.max_rss_mib = max_rss_mib
        self.peak_rss_at_stop = None  # MiB, read by stop() before it signals
        self.address = self.host = self.port = self.unix_path = None
        self.admin_address = None
        self._log = None

    # -- life cycle --

    def start(self):
        with open(self.config_path, 'w') as f:
            f.write(self.config_text)
        argv = self.wrapper + [EVDAL_BIN, '--config', self.config_path] + self.extra_args
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        # The build's epoll_ctl checker (tests/unit/stale_epoll.h): not under a wrapper
        # (valgrind), which must see evdal's own calls.
        preload = os.environ.get('EVDAL_STALE_EPOLL_PRELOAD')
        if preload and not self.wrapper:
            env['LD_PRELOAD'] = ' '.join(p for p in (env.get('LD_PRELOAD'), preload) if p)
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=env, close_fds=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            m = LISTEN_RE.search(self.log_text())
            if m:
                self.address = m.group(1).rstrip('.,;')
                self.host, self.port, self.unix_path = parse_address(self.address)
                m = ADMIN_RE.search(self.log_text())
                self.admin_address = m.group(1) if m else None
                if preload and not self.wrapper:   # the check is on, not silently absent
                    with open('/proc/%d/maps' % self.proc.pid) as f:
                        assert os.path.basename(preload) in f.read(), 'not preloaded: ' + preload
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise ServerError('evdal exited with %s before listening:\n%s'
                                  % (self.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError('evdal did not print "listening on" within %.0f s:\n%s'
                                  % (self.start_timeout, self.log_tail()))
            time.sleep(0.02)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self._cleanup()
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.returncode is None and self.proc is not None:
                rc = self.stop(self.stop_timeout)
            else:
                rc = self.returncode
            if exc_type is None and rc != 0:
                raise ServerError('evdal exited with %r (expected 0); log:\n%s'
                                  % (rc, self.log_report()))
            if exc_type is None:
                self.check_peak_rss()
                self.check_no_stale_epoll()
            if exc_type is not None:
                sys.stderr.write('\n--- evdal log tail (%s) ---\n%s\n' % (self.log_path,
                                                                          self.log_tail()))
        finally:
            self._cleanup()
        return False

    def check_no_stale_epoll(self):
        """Fails when evdal called epoll_ctl on a closed descriptor: a loop still watched a
        socket a library had closed, and another loop may have been given its number."""
        lines = [l for l in self.log_text().splitlines() if l.startswith('evdal-stale-epoll:')]
        if lines:
            raise ServerError('evdal called epoll_ctl on a closed descriptor (%d times): %s; '
                              'log:\n%s' % (len(lines), lines[0], self.log_report()))

    def _cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        if os.environ.get('EVDAL_E2E_KEEP'):
            sys.stderr.write('kept %s\n' % self.tmpdir)
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout):
        """Waits for the exit; returns the exit code or None on timeout."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=15.0, signum=signal.SIGTERM):
        """Sends `signum`, waits up to `timeout` s; returns the exit code (None: had to kill).
        Reads the peak RSS first, which leaving the `with` block then checks."""
        if self.proc.poll() is None:
            self._record_peak_rss()
            self.proc.send_signal(signum)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            self.returncode = 'killed: no exit within %.0f s of signal %d' % (timeout, signum)
            return None
        return rc

    def peak_rss_mib(self):
        """The server's peak resident memory so far (VmHWM), in MiB."""
        with open('/proc/%d/status' % self.proc.pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
        raise AssertionError('no VmHWM for %d' % self.proc.pid)

    def _record_peak_rss(self):
        try:
            self.peak_rss_at_stop = self.peak_rss_mib()
        except (OSError, AssertionError, ValueError):  # exited meanwhile: nothing to read
            pass

    def check_peak_rss(self):
        """Fails when the peak RSS read at the last stop() is over max_rss_mib."""
        if (self.max_rss_mib is None or self.wrapper or SANITIZED or
                self.peak_rss_at_stop is None):
            return
        if self.peak_rss_at_stop > self.max_rss_mib:
            raise ServerError('evdal peak RSS (VmHWM) %.1f MiB, over the bound of %s MiB; log '
                              'tail:\n%s' % (self.peak_rss_at_stop, self.max_rss_mib,
                                             self.log_tail()))

    def admin_get(self, path, headers=None, method='GET', timeout=10.0):
        """An HTTP request to the admin endpoint: (status, headers dict, body str)."""
        import http.client
        host, port, _ = parse_address(self.admin_address)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode('utf-8')
        finally:
            conn.close()

    def metric(self, name):
        """One sample of the admin endpoint's /metrics, as a float (None: absent). `name` is
        the sample's name with its labels as /metrics writes them, if any:
        'evdal_loop_lag_seconds{loop="1"}'. The config needs admin_listen."""
        if self.admin_address is None:
            raise AssertionError('metric(%r): this server has no admin_listen' % name)
        status, _, body = self.admin_get('/metrics')
        if status != 200:
            raise AssertionError('/metrics answered %d: %s' % (status, body))
        m = re.search(r'^%s (\S+)$' % re.escape(name), body, re.M)
        return float(m.group(1)) if m else None

    def wait_metric(self, name, test, timeout=10.0):
        """Polls the sample `name` (see metric) until test(value) holds, or a number `test`
        equals it; returns the value. Fails the test after scaled(timeout)."""
        check = test if callable(test) else (lambda v: v == test)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            value = self.metric(name)
            if value is not None and check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError('%.1f s passed waiting for %s; it is %s' % (
                    scaled(timeout), name, value))
            time.sleep(0.01)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    # -- log --

    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def log_tail(self, lines=60):
        return '\n'.join(self.log_text().splitlines()[-lines:])

    def log_report(self, lines=60, most=600):
        """What a failing server's log says: before its tail, the first sanitizer report in
        full (a TSan report runs past any tail, and its first stack, cut off, is the one that
        names the racing access). The CI keeps only this text."""
        text = self.log_text().splitlines()
        first = next((i for i, l in enumerate(text)
                      if (l.startswith(('WARNING: ThreadSanitizer', '==')) and 'Sanitizer' in l)
                      or 'runtime error:' in l), len(text))
        cut = max(len(text) - lines, 0)
        if first >= cut:
            return '\n'.join(text[cut:])
        end = min(first + most, cut)
        skipped = ['... (%d lines) ...' % (cut - end)] if end < cut else []
        return '\n'.join(text[first:end] + skipped + text[cut:])

    def wait_log(self, pattern, timeout=3.0):
        """Waits until the log matches `pattern` (a regex); returns the match or None."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            m = rx.search(self.log_text())
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.02)

    # -- sockets --

    def raw_socket(self, timeout=5.0):
        if self.unix_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unix_path)
        else:
            fam = socket.AF_INET6 if ':' in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((self.host, self.port))
        return s


# ---- Clients made of the generated stubs. ----

def client(server, framed=True, protocol='binary', multiplexed=False, timeout=10.0):
    """An opened DataAccess.Client on `server` and its transport (close it when done)."""
    if server.unix_path:
        sock = TSocket.TSocket(unix_socket=server.unix_path)
    else:
        sock = TSocket.TSocket(server.host, server.port)
    sock.setTimeout(int(timeout * 1000))
    trans = TTransport.TFramedTransport(sock) if framed else TTransport.TBufferedTransport(sock)
    if protocol == 'binary':
        proto = TBinaryProtocol.TBinaryProtocol(trans)
    elif protocol == 'compact':
        proto = TCompactProtocol.TCompactProtocol(trans)
    else:
        raise ValueError(protocol)
    if multiplexed:
        proto = TMultiplexedProtocol.TMultiplexedProtocol(proto, SERVICE_NAME)
    trans.open()
    return DataAccess.Client(proto), trans


class _CountingSocket(TSocket.TSocket):
    """A TSocket that counts the bytes read since the last reset: a reply that has not begun
    can be resent safely."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bytes_read = 0

    def read(self, sz):
        data = super().read(sz)
        self.bytes_read += len(data)
        return data


class ResendingClient:
    """The client behaviour that makes rolling restarts lossless (docs/SCALING.md, "Clients"):
    reconnect on a clean close, and resend a fetch whose connection closed before any byte of
    its reply arrived (fetch is a read: resending is safe). A reply that had begun and broke
    off is an error for the caller. `resends` counts the fetches sent again."""

    def __init__(self, host, port, timeout=10.0, attempts=5):
        self.host, self.port, self.timeout, self.attempts = host, port, timeout, attempts
        self.resends = 0
        self._sock = self._trans = self._client = None

    def _connect(self):
        self._sock = _CountingSocket(self.host, self.port)
        self._sock.setTimeout(int(self.timeout * 1000))
        self._trans = TTransport.TFramedTransport(self._sock)
        self._client = DataAccess.Client(TBinaryProtocol.TBinaryProtocol(self._trans))
        self._trans.open()

    def close(self):
        if self._trans is not None:
            self._trans.close()
        self._sock = self._trans = self._client = None

    def fetch(self, request):
        for attempt in range(self.attempts):
            try:
                if self._client is None:
                    self._connect()
                self._sock.bytes_read = 0
                return self._client.fetch(request)
            except (TTransport.TTransportException, OSError):
                began = self._sock is not None and self._sock.bytes_read > 0
                self.close()
                if began or attempt + 1 == self.attempts:
                    raise
                self.resends += 1
        raise AssertionError('unreachable')


def free_port():
    """A loopback TCP port that was free a moment ago, for programs that cannot bind port 0
    and report it (HAProxy), or for a second evdal that must bind the same port."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def nap_call(delay_ms=None, lookup='nap'):
    params = None if delay_ms is None else {'delay_ms': ttypes.Value(int_value=delay_ms)}
    return ttypes.LookupCall(lookup=lookup, params=params)


def fetch_request(calls, request_id=None, **ctx):
    context = None
    if request_id is not None or ctx:
        context = ttypes.RequestContext(request_id=request_id, **ctx)
    return ttypes.FetchRequest(context=context, calls=calls)


def slept_ms(result):
    """The slept_ms of a successful nap LookupResult; fails loudly on anything else."""
    if result.error is not None:
        raise AssertionError('lookup failed: %r' % (result.error,))
    t = result.table
    if t is None or t.columns != ['slept_ms'] or len(t.rows) != 1 or len(t.rows[0]) != 1:
        raise AssertionError('unexpected nap table: %r' % (t,))
    return t.rows[0][0].int_value


# ---- Hand-made messages. ----

def make_protocol(buf, protocol='binary'):
    if protocol == 'binary':
        return TBinaryProtocol.TBinaryProtocol(buf)
    if protocol == 'compact':
        return TCompactProtocol.TCompactProtocol(buf)
    raise ValueError(protocol)


def encode_message(name, seqid, args=None, mtype=TMessageType.CALL, protocol='binary',
                   write_args=None):
    """One message: header, then `args` (a generated *_args struct) or write_args(proto)."""
    buf = TTransport.TMemoryBuffer()
    p = make_protocol(buf, protocol)
    p.writeMessageBegin(name, mtype, seqid)
    if write_args is not None:
        write_args(p)
    elif args is not None:
        args.write(p)
    else:
        p.writeStructBegin('args')
        p.writeFieldStop()
        p.writeStructEnd()
    p.writeMessageEnd()
    return buf.getvalue()


def wrong_field_type_fetch(seqid):
    """A framed fetch whose field 1 (a FetchRequest struct) is sent as an i32."""
    def write_args(p):
        p.writeStructBegin('fetch_args')
        p.writeFieldBegin('request', TType.I32, 1)
        p.writeI32(12345)
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
    return frame(encode_message('fetch', seqid, write_args=write_args))


def frame(payload):
    return struct.pack('!i', len(payload)) + payload


def call_bytes(name, seqid, args=None, mtype=TMessageType.CALL, protocol='binary', framed=True):
    msg = encode_message(name, seqid, args, mtype, protocol)
    return frame(msg) if framed else msg


def ping_bytes(seqid, **kw):
    return call_bytes('ping', seqid, DataAccess.ping_args(), **kw)


def fetch_bytes(seqid, request, **kw):
    return call_bytes('fetch', seqid, DataAccess.fetch_args(request=request), **kw)


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


def one_shot_server(test, serve):
    """A fake peer for clients under test: a socket listening on a free loopback port whose
    first connection goes to serve(conn) on a thread of its own, then is closed. The test
    joins the thread and closes the socket when it ends. Returns the port."""
    lsock = socket.socket()
    lsock.bind(('127.0.0.1', 0))
    lsock.listen(1)
    test.addCleanup(lsock.close)

    def run():
        conn, _ = lsock.accept()
        with conn:
            serve(conn)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    test.addCleanup(th.join, 5)
    return lsock.getsockname()[1]


def recv_exact(sock, n, timeout):
    deadline = time.monotonic() + timeout
    chunks = []
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout('timed out after %d of %d bytes' % (got, n))
        sock.settimeout(left)
        try:
            data = sock.recv(n - got)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(str(e))
        if not data:
            raise Closed('EOF after %d of %d bytes' % (got, n))
        chunks.append(data)
        got += len(data)
    return b''.join(chunks)


def read_frame(sock, timeout=5.0):
    (n,) = struct.unpack('!i', recv_exact(sock, 4, timeout))
    if n < 0 or n > 64 << 20:
        raise AssertionError('server sent a frame length of %d' % n)
    return recv_exact(sock, n, timeout)


class Reply:
    def __init__(self, name, mtype, seqid, result=None, exc=None):
        self.name, self.mtype, self.seqid, self.result, self.exc = name, mtype, seqid, result, exc

    def __repr__(self):
        return 'Reply(name=%r, type=%r, seqid=%r, result=%r, exc=%r)' % (
            self.name, self.mtype, self.seqid, self.result, self.exc)


def parse_reply(payload, protocol='binary', method=None):
    """Decodes one reply message. An EXCEPTION carries a TApplicationException in .exc; a REPLY
    carries the method's generated *_result in .result (method defaults to the name in the
    reply, stripped of a "Service:" prefix)."""
    buf = TTransport.TMemoryBuffer(payload)
    p = make_protocol(buf, protocol)
    name, mtype, seqid = p.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        x = TApplicationException()
        x.read(p)
        p.readMessageEnd()
        return Reply(name, mtype, seqid, exc=x)
    m = method or name.split(':')[-1]
    result = getattr(DataAccess, m + '_result')()
    result.read(p)
    p.readMessageEnd()
    return Reply(name, mtype, seqid, result=result)


def read_reply(sock, timeout=5.0, protocol='binary', method=None):
    return parse_reply(read_frame(sock, timeout), protocol, method)


def wait_closed(sock, timeout=5.0, after_reply=None):
    """Reads until the server closes the connection. Returns (closed, replies): replies are the
    framed messages read before the close (parsed if possible, else raw bytes). With
    after_reply, gives up waiting for a close that many seconds after a first whole reply."""
    deadline = time.monotonic() + timeout
    replies = []
    buf = b''
    while time.monotonic() < deadline:
        if replies and after_reply is not None:
            deadline = min(deadline, time.monotonic() + after_reply)
            after_reply = None
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return True, replies
        if not data:
            return True, replies
        buf += data
        while len(buf) >= 4:
            (n,) = struct.unpack('!i', buf[:4])
            if n < 0 or len(buf) < 4 + n:
                break
            try:
                replies.append(parse_reply(buf[4:4 + n]))
            except Exception:
                replies.append(buf[4:4 + n])
            buf = buf[4 + n:]
    return False, replies


def send_all(sock, data):
    try:
        sock.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False


# ---- Misc. ----

def raise_nofile(want=None):
    """Raises RLIMIT_NOFILE's soft limit to the hard limit (to `want` when the hard limit is
    unlimited); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = max(soft, want or 65536)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(('::1', 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def cli_env():
    """The environment evdal-cli runs in: under ASan, c_glib's finalizers leak a little at exit
    (tests/lsan.supp says which); the full stack lets the suppressions match."""
    e = dict(os.environ)
    e['ASAN_OPTIONS'] = ':'.join(filter(None, [e.get('ASAN_OPTIONS'), 'fast_unwind_on_malloc=0']))
    e['LSAN_OPTIONS'] = ':'.join(filter(None, [
        e.get('LSAN_OPTIONS'), 'print_suppressions=0',
        'suppressions=' + os.path.join(EVDAL_SOURCE_DIR, 'tests', 'lsan.supp')]))
    return e


def run_evdal(args, timeout=20.0, env=None, cwd=None):
    """Runs the binary to completion; returns CompletedProcess (text stdout/stderr)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([EVDAL_BIN] + list(args), stdin=subprocess.DEVNULL, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=e)


class EvdalTestCase(unittest.TestCase):
    maxDiff = None

    def assertPong(self, c):
        self.assertEqual(c.ping(), 'pong')

    def assertNapFetch(self, c, delays, request_id=None):
        calls = {'k%d' % i: nap_call(d) for i, d in enumerate(delays)}
        resp = c.fetch(fetch_request(calls, request_id=request_id))
        self.assertEqual(sorted(resp.results), sorted(calls))
        for i, d in enumerate(delays):
            self.assertEqual(slept_ms(resp.results['k%d' % i]), d, 'call k%d' % i)
        return resp

"""Redis lookups (issue 16): evdal's own pipelined connections to a real redis-server, which
this module starts on a unix socket in a temporary folder (--port 0). Every reply shape,
injection through params, refused commands, DEBUG SLEEP, BUSY and LOADING retried, a server
killed and restarted under load, AUTH. Exits 77 (skipped) when redis-server is not installed."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

REDIS = shutil.which('redis-server')
if REDIS is None:
    print('redis-server not found: skipped', file=sys.stderr)
    sys.exit(77)

EK = ttypes.ErrorKind
V = ttypes.Value


def resp(*args):
    out = [b'*%d\r\n' % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b'$%d\r\n%s\r\n' % (len(a), a))
    return b''.join(out)


def read_reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b'+', b'-'):
        return rest.decode() if kind == b'+' else RuntimeError(rest.decode())
    if kind == b':':
        return int(rest)
    if kind == b'$':
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b'*':
        return [read_reply(f) for _ in range(int(rest))]
    raise AssertionError('bad reply %r' % line)


class Redis:
    """A redis-server on a unix socket in its own temp folder."""

    def __init__(self, password=None):
        self.dir = tempfile.mkdtemp(prefix='evdal-redis-')
        self.sock = os.path.join(self.dir, 'redis.sock')
        self.password = password
        self.tcp_port = 0
        self.proc = None

    def start(self):
        argv = [REDIS, '--port', str(self.tcp_port), '--bind', '127.0.0.1', '--unixsocket', self.sock, '--unixsocketperm', '700',
                '--save', '', '--appendonly', 'no', '--dir', self.dir,
                '--enable-debug-command', 'local', '--daemonize', 'no',
                '--logfile', os.path.join(self.dir, 'redis.log')]
        if self.password:
            argv += ['--requirepass', self.password]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.cmd('PING') == 'PONG':
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError('redis-server did not start')
            time.sleep(0.02)

    def cmd(self, *args, wait=True):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        try:
            s.connect(self.sock)
            if self.password:
                s.sendall(resp('AUTH', self.password))
            s.sendall(resp(*args))
            if not wait:
                s.shutdown(socket.SHUT_WR)
                return None
            f = s.makefile('rb')
            if self.password:
                read_reply(f)
            return read_reply(f)
        finally:
            s.close()

    def wait_asleep(self, timeout=20):
        """Until the server's main thread sleeps in DEBUG SLEEP (its system call is a
        nanosleep), rather than for a fixed time."""
        sleeps = {35, 230} if os.uname().machine == 'x86_64' else {101, 115}
        deadline = time.monotonic() + timeout
        while True:
            with open('/proc/%d/syscall' % self.proc.pid) as f:
                first = f.read().split()[0]   # "running" while on a CPU
            if first.isdigit() and int(first) in sleeps:
                return
            if time.monotonic() > deadline:
                raise AssertionError('redis-server never went to sleep')
            time.sleep(0.001)

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, True)


def redis_config(sock, extra='', connections=2, **server):
    server.setdefault('admin_listen', '127.0.0.1:0')
    return h.config(lookups="""
[database cache]
backend = redis
address = %s
connections = %d

[lookup get]
database = cache
command = GET {k}
description = One string

[lookup get_slow_ok]
database = cache
command = GET {k}
timeout_ms = 10000
""" % (sock, connections) + extra, **server)


SHAPES = """
[lookup mget]
database = cache
command = MGET {a} {b} missing
[lookup hget]
database = cache
command = HGET user:{id} name
[lookup session]
database = cache
command = HGETALL session:{session_id}
[lookup hmget]
database = cache
command = HMGET user:{id} name nothing age
[lookup hkeys]
database = cache
command = HKEYS user:{id}
[lookup members]
database = cache
command = SMEMBERS tags
[lookup is_member]
database = cache
command = SISMEMBER tags {tag}
[lookup top]
database = cache
command = ZREVRANGE scores 0 {n} WITHSCORES
[lookup ranked]
database = cache
command = ZRANGE scores 0 -1
[lookup by_score]
database = cache
command = ZRANGEBYSCORE scores {min} +inf WITHSCORES
[lookup list]
database = cache
command = LRANGE list 0 -1
[lookup exists]
database = cache
command = EXISTS {a} {b}
[lookup ttl]
database = cache
command = TTL {k}
[lookup type]
database = cache
command = TYPE {k}
[lookup wrong_type]
database = cache
command = HGETALL {k}
[lookup short_list]
database = cache
command = LRANGE list 0 -1
max_rows = 2
"""


def table(result):
    if result.error is not None:
        raise AssertionError('lookup failed: %r' % (result.error,))
    return result.table


def cells(result):
    """Rows as plain Python values."""
    out = []
    for row in table(result).rows:
        r = []
        for v in row:
            for field in ('null_value', 'int_value', 'real_value', 'text_value', 'blob_value'):
                x = getattr(v, field)
                if x is not None:
                    r.append(None if field == 'null_value' else x)
                    break
            else:
                raise AssertionError('empty value %r' % (v,))
        out.append(r)
    return out


def call(lookup, timeout_ms=None, **params):
    p = {}
    for k, v in params.items():
        if isinstance(v, bool) or v is None:
            p[k] = V(null_value=True)
        elif isinstance(v, int):
            p[k] = V(int_value=v)
        elif isinstance(v, float):
            p[k] = V(real_value=v)
        elif isinstance(v, bytes):
            p[k] = V(blob_value=v)
        else:
            p[k] = V(text_value=v)
    return ttypes.LookupCall(lookup=lookup, params=p, timeout_ms=timeout_ms)


def labelled(server, name, **labels):
    _, _, body = server.admin_get('/metrics')
    want = ','.join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.splitlines():
        m = re.match(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), line)
        if m and ','.join(sorted(m.group(1).split(','))) == want:
            return float(m.group(2))
    return None


class RedisTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.cmd('FLUSHALL')

    def fetch(self, server, calls, **ctx):
        c, t = h.client(server)
        try:
            return c.fetch(h.fetch_request(calls, **ctx)).results
        finally:
            t.close()

    def test_reply_shapes(self):
        r = self.redis
        r.cmd('SET', 's:1', 'hello')
        r.cmd('SET', 's:blob', b'\xff\x00\xfe')
        r.cmd('SET', 's:nul', b'a\x00b')
        r.cmd('HSET', 'user:7', 'name', 'Ada', 'age', '36')
        r.cmd('HSET', 'session:abc', 'user_id', '7', 'cart', '3')
        r.cmd('SADD', 'tags', 'x', 'y')
        r.cmd('ZADD', 'scores', '1.5', 'a', '10', 'b', '-inf', 'c')
        r.cmd('RPUSH', 'list', 'one', 'two', 'two')
        r.cmd('SET', 'ttl', 'x', 'EX', '1000')
        with h.Server(redis_config(r.sock, SHAPES)) as s:
            res = self.fetch(s, {
                'str': call('get', k='s:1'), 'nil': call('get', k='nope'),
                'blob': call('get', k='s:blob'), 'nul': call('get', k='s:nul'),
                'mget': call('mget', a='s:1', b='nope'), 'hget': call('hget', id=7),
                'session': call('session', session_id='abc'),
                'no_session': call('session', session_id='gone'),
                'hmget': call('hmget', id=7), 'hkeys': call('hkeys', id=7),
                'members': call('members'), 'is_member': call('is_member', tag='y'),
                'top': call('top', n=1), 'ranked': call('ranked'),
                'by_score': call('by_score', min=1.5), 'list': call('list'),
                'exists': call('exists', a='s:1', b='nope'), 'ttl': call('ttl', k='ttl'),
                'type': call('type', k='tags'), 'wrong': call('wrong_type', k='s:1'),
                'short': call('short_list'),
            })
        self.assertEqual(table(res['str']).columns, ['value'])
        self.assertEqual(cells(res['str']), [['hello']])
        self.assertEqual(table(res['nil']).columns, ['value'])
        self.assertEqual(cells(res['nil']), [])
        self.assertEqual(cells(res['blob']), [[b'\xff\x00\xfe']])
        self.assertEqual(cells(res['nul']), [['a\x00b']])
        self.assertEqual(cells(res['mget']), [['hello'], [None], [None]])
        self.assertEqual(cells(res['hget']), [['Ada']])
        self.assertEqual(table(res['session']).columns, ['field', 'value'])
        self.assertEqual(sorted(cells(res['session'])), [['cart', '3'], ['user_id', '7']])
        self.assertEqual(table(res['no_session']).columns, ['field', 'value'])
        self.assertEqual(cells(res['no_session']), [])
        self.assertEqual(cells(res['hmget']), [['Ada'], [None], ['36']])
        self.assertEqual(sorted(cells(res['hkeys'])), [['age'], ['name']])
        self.assertEqual(sorted(cells(res['members'])), [['x'], ['y']])
        self.assertEqual(cells(res['is_member']), [[1]])
        self.assertEqual(table(res['top']).columns, ['member', 'score'])
        self.assertEqual(cells(res['top']), [['b', 10.0], ['a', 1.5]])
        self.assertEqual(cells(res['ranked']), [['c'], ['a'], ['b']])
        self.assertEqual(cells(res['by_score']), [['a', 1.5], ['b', 10.0]])
        self.assertEqual(cells(res['list']), [['one'], ['two'], ['two']])
        self.assertEqual(cells(res['exists']), [[1]])
        self.assertTrue(900 < cells(res['ttl'])[0][0] <= 1000)
        self.assertEqual(cells(res['type']), [['set']])
        self.assertEqual(res['wrong'].error.kind, EK.BACKEND)
        self.assertTrue(res['wrong'].error.message.startswith('WRONGTYPE'),
                        res['wrong'].error.message)
        self.assertEqual(res['short'].error.kind, EK.BACKEND)
        self.assertEqual(res['short'].error.message, 'more than max_rows (2) rows')

    def test_params_are_one_argument(self):
        r = self.redis
        evil = ['a b c', 'x\r\nSET pwned 1\r\n', '*3\r\n$3\r\nSET\r\n$5\r\npwned\r\n$1\r\n1\r\n',
                'k" "pwned', '{k}', '']
        for i, e in enumerate(evil):
            r.cmd('SET', e, 'v%d' % i)
        r.cmd('SET', 'n:42', 'int')
        r.cmd('SET', 'n:0.1', 'real')
        r.cmd('SET', 'n:-1e+300', 'big')
        r.cmd('SET', b'n:\x00\xff', 'blob')
        keys_before = r.cmd('DBSIZE')
        with h.Server(redis_config(r.sock, """
[lookup n]
database = cache
command = GET n:{x}
[lookup two]
database = cache
command = MGET {k} {k}
""")) as s:
            calls = {'e%d' % i: call('get', k=e) for i, e in enumerate(evil)}
            calls.update({'e%d_twice' % i: call('two', k=e) for i, e in enumerate(evil)})
            calls.update({'int': call('n', x=42), 'real': call('n', x=0.1),
                          'big': call('n', x=-1e300), 'blob': call('n', x=b'\x00\xff'),
                          'null': call('n', x=None)})
            res = self.fetch(s, calls)
        for i, e in enumerate(evil):
            self.assertEqual(cells(res['e%d' % i]), [['v%d' % i]], repr(e))
            self.assertEqual(cells(res['e%d_twice' % i]), [['v%d' % i]] * 2, repr(e))
        self.assertEqual(cells(res['int']), [['int']])
        self.assertEqual(cells(res['real']), [['real']])
        self.assertEqual(cells(res['big']), [['big']])
        self.assertEqual(cells(res['blob']), [['blob']])
        self.assertEqual(res['null'].error.kind, EK.BAD_PARAMS)
        self.assertIsNone(r.cmd('GET', 'pwned'))
        self.assertEqual(r.cmd('DBSIZE'), keys_before)

    def check_config(self, text, files=None):
        d = tempfile.mkdtemp(prefix='evdal-redis-conf-')
        try:
            path = os.path.join(d, 'evdal.conf')
            with open(path, 'w') as f:
                f.write(text)
            for name, content in (files or {}).items():
                with open(os.path.join(d, name), 'w') as f:
                    f.write(content)
            return h.run_evdal(['--config', path, '--check-config'])
        finally:
            shutil.rmtree(d, True)

    def test_refused_and_checked_at_start_up(self):
        bad = redis_config('/nonexistent/redis.sock', """
[lookup writer]
database = cache
command = SET k {v}
[lookup eval]
database = cache
command = eval "redis.call('del', KEYS[1])" 1 {k}
[lookup braces]
database = cache
command = GET {k
""")
        p = self.check_config(bad)
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stderr, r'evdal\.conf:\d+: \[lookup writer\] command: lookup writer: '
                                   r'command SET is not an allowed read-only command')
        self.assertRegex(p.stderr, r'\[lookup eval\] command: lookup eval: command EVAL is not')
        self.assertRegex(p.stderr, r'\[lookup braces\] command: lookup braces: ')
        # and the server itself refuses to start
        with self.assertRaises(h.ServerError):
            with h.Server(bad):
                pass
        # --check-config does not connect: no server behind this address is fine
        p = self.check_config(redis_config('/nonexistent/redis.sock'))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.check_config(redis_config('cache.invalid:6379')).returncode, 0)
        p = self.check_config(redis_config('no-port'))
        self.assertRegex(p.stderr, r'\[database cache\] address: "no-port" is neither')
        p = self.check_config(redis_config('/x.sock', """
[database other]
backend = redis
address = /y.sock
password = hunter2
"""))
        self.assertRegex(p.stderr, r'\[database other\] password: a password is never written')
        p = self.check_config(redis_config('/x.sock').replace(
            'connections = 2', 'connections = 2\npassword_file = missing.pass'))
        self.assertRegex(p.stderr, r'\[database cache\] password_file: .*missing\.pass')

    def test_debug_sleep(self):
        """The server sleeps 2 s: calls with a short deadline answer TIMEOUT at their deadline;
        the calls sent behind them on the same connection get their own replies after it."""
        r = self.redis
        for i in range(20):
            r.cmd('SET', 'k%d' % i, 'v%d' % i)
        with h.Server(redis_config(r.sock, connections=1, io_threads=1)) as s:
            self.assertEqual(cells(self.fetch(s, {'a': call('get', k='k0')})['a']), [['v0']])
            r.cmd('DEBUG', 'SLEEP', '2', wait=False)
            r.wait_asleep()
            results = {}

            def one(i, timeout_ms):
                t0 = time.monotonic()
                res = self.fetch(s, {'x': call('get', timeout_ms=timeout_ms, k='k%d' % i)})
                results[i] = (res['x'], time.monotonic() - t0)

            threads = [threading.Thread(target=one, args=(i, 300 if i % 2 else 15000))
                       for i in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        for i in range(20):
            res, took = results[i]
            if i % 2:
                self.assertEqual(res.error.kind, EK.TIMEOUT, res)
                self.assertLess(took, 1.5)   # at the deadline, not when the server woke
            else:
                self.assertEqual(cells(res), [['v%d' % i]])

    def test_busy_is_retried_until_the_script_is_killed(self):
        """Redis busy running a script answers BUSY: a lookup with retries retries it (within
        its deadline) and succeeds once the script is killed."""
        r = self.redis
        r.cmd('SET', 'k', 'v')
        r.cmd('CONFIG', 'SET', 'busy-reply-threshold', '20')
        extra = ('\n[lookup get_retried]\ndatabase = cache\ncommand = GET {k}\nretries = 10\n'
                 'timeout_ms = %d\n' % int(15000 * h.TIME_SCALE))
        with h.Server(redis_config(r.sock, extra)) as s:
            self.assertEqual(cells(self.fetch(s, {'a': call('get_retried', k='k')})['a']),
                             [['v']])
            r.cmd('EVAL', 'while true do end', '0', wait=False)
            deadline = time.monotonic() + h.scaled(10)
            while not str(r.cmd('PING')).startswith('BUSY'):
                self.assertLess(time.monotonic(), deadline, 'the script never made Redis busy')
                time.sleep(0.01)
            out = {}
            t = threading.Thread(target=lambda: out.update(
                self.fetch(s, {'x': call('get_retried', k='k')}, trace=True)))
            t.start()
            try:
                s.wait_metric('evdal_lookup_retries_total{lookup="get_retried"}',
                              lambda v: v >= 1)
            finally:
                self.assertEqual(r.cmd('SCRIPT', 'KILL'), 'OK')
                t.join(30)
        self.assertEqual(cells(out['x']), [['v']])
        self.assertRegex(out['x'].span.marks[0], r'^retried:\d+$')

    def test_loading_is_retried_until_the_dataset_is_loaded(self):
        """Redis loading its dataset answers LOADING: a lookup with retries retries it (within
        its deadline) and answers rows once the load ends; the same lookup without retries
        answers BACKEND with Redis's LOADING message. The load is DEBUG RELOAD (save, then load
        the RDB in the running server, which answers other clients meanwhile) slowed by
        key-load-delay, on a Redis of its own: evdal's connection stays up throughout (no
        reconnect and its backoff to wait for), which the losses counter checks. At most 10
        retries back off at least 0.94 s in all (25 ms doubling to 250 ms, jittered down to
        half), so the calls go out when 60% is loaded: about 0.4 s of LOADING is left."""
        r = Redis().start()
        self.addCleanup(r.close)
        r.cmd('SET', 'k', 'v')
        r.cmd('SET', 'k2', 'v2')
        # 100 uncompressed 1 kB values loaded 10 ms apart, events processed every 1 kB (each
        # key): about 1 s of LOADING, a few sleeps long, so a busy machine stretches it little.
        r.cmd('DEBUG', 'POPULATE', '100', 'key', '1024')
        r.cmd('CONFIG', 'SET', 'rdbcompression', 'no')
        r.cmd('CONFIG', 'SET', 'key-load-delay', '10000')
        r.cmd('CONFIG', 'SET', 'loading-process-events-interval-bytes', '1024')
        extra = ('\n[lookup get_retried]\ndatabase = cache\ncommand = GET {k}\nretries = 10\n'
                 'timeout_ms = %d\n' % int(15000 * h.TIME_SCALE))
        with h.Server(redis_config(r.sock, extra, connections=1, io_threads=1)) as s:
            self.wait_connections(s, 1)
            res = self.fetch(s, {'a': call('get', k='k'), 'b': call('get_retried', k='k2')})
            self.assertEqual(cells(res['a']), [['v']])
            self.assertEqual(cells(res['b']), [['v2']])
            reload = {}
            t = threading.Thread(target=lambda: reload.update(ok=r.cmd('DEBUG', 'RELOAD')))
            t.start()
            try:
                deadline = time.monotonic() + h.scaled(10)
                while True:
                    info = r.cmd('INFO', 'persistence').decode()
                    perc = re.search(r'^loading_loaded_perc:([\d.]+)', info, re.M)
                    if 'loading:1' in info and perc and float(perc.group(1)) >= 60:
                        break
                    self.assertTrue(t.is_alive(), 'the reload ended before 60% was seen')
                    self.assertLess(time.monotonic(), deadline, 'Redis never got to 60%')
                    time.sleep(0.005)
                # Both at once: the plain call answers LOADING at once, the other retries.
                out = self.fetch(s, {'plain': call('get', k='k'),
                                     'x': call('get_retried', k='k2')}, trace=True)
            finally:
                t.join(h.scaled(30))
            self.assertEqual(reload.get('ok'), 'OK', reload)
            self.assertIsNotNone(out['plain'].error, out['plain'])
            self.assertEqual(out['plain'].error.kind, EK.BACKEND, out['plain'].error)
            self.assertTrue(out['plain'].error.message.startswith(
                'LOADING Redis is loading the dataset in memory'), out['plain'].error.message)
            self.assertEqual(cells(out['x']), [['v2']])
            marks = out['x'].span.marks or []
            self.assertEqual(len(marks), 1, marks)
            m = re.match(r'^retried:(\d+)$', marks[0])
            self.assertIsNotNone(m, marks)
            retried = int(m.group(1))
            self.assertGreaterEqual(retried, 1)
            self.assertEqual(s.metric('evdal_lookup_retries_total{lookup="get_retried"}'),
                             retried)
            self.assertEqual(labelled(s, 'evdal_redis_connection_losses_total',
                                      database='cache'), 0)

    def test_killed_and_restarted_under_load(self):
        r = self.redis
        r.cmd('SET', 'a', 'A')
        stop = threading.Event()
        log = []

        with h.Server(redis_config(r.sock, io_threads=2, connections=2)) as s:
            self.wait_connections(s, 4)
            self.assertIn('database cache: 4/4 connections up\n', s.admin_get('/health')[2])

            def load():
                c, t = h.client(s)
                try:
                    while not stop.is_set():
                        t0 = time.monotonic()
                        res = c.fetch(h.fetch_request({'x': call('get', timeout_ms=500, k='a')}))
                        log.append((t0, time.monotonic() - t0, res.results['x']))
                finally:
                    t.close()

            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            self.wait_for(lambda: sum(1 for e in log if e[2].error is None) > 50)
            killed_at = time.monotonic()
            r.kill()
            self.wait_for(lambda: sum(1 for e in log if e[0] > killed_at + 0.1) > 50)
            # /health says so (and stays 200: one backend down is not the instance down).
            self.wait_for(lambda: 'database cache: 0/4 connections up (unavailable)\n'
                          in s.admin_get('/health')[2])
            self.assertEqual(s.admin_get('/health')[0], 200)
            restart_at = time.monotonic()
            r.start()
            r.cmd('SET', 'a', 'A2')
            self.wait_connections(s, 4)   # every connection made again (backoff <= 2 s)
            all_up = time.monotonic()
            self.wait_for(lambda: sum(1 for e in log if e[0] > all_up) > 50)
            stop.set()
            for t in threads:
                t.join(30)
            self.assertGreater(labelled(s, 'evdal_redis_connection_losses_total',
                                        database='cache'), 3)
        down = [e for e in log if killed_at + 0.05 < e[0] < restart_at]
        self.assertGreater(len(down), 50)
        for t0, took, res in down:
            self.assertIsNotNone(res.error, res)
            self.assertEqual(res.error.kind, EK.BACKEND, res.error)
            self.assertRegex(res.error.message, r'^database cache (unavailable|: connection)')
            self.assertLess(took, 0.5 + 0.5)   # within the call's deadline, with a margin
        after = [e for e in log if e[0] > all_up]
        self.assertGreater(len(after), 50)
        for t0, took, res in after:
            self.assertEqual(cells(res), [['A2']])

    def wait_for(self, cond, timeout=20):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError('condition not met within %s s' % timeout)
            time.sleep(0.01)

    def wait_connections(self, s, n):
        self.wait_for(lambda: labelled(s, 'evdal_redis_connections', database='cache') == n)

    def test_metrics_span_and_lookups(self):
        r = self.redis
        r.cmd('SET', 'a', 'A')
        with h.Server(redis_config(r.sock)) as s:
            res = self.fetch(s, {'a': call('get', k='a'), 'b': call('get', k='nope')},
                             request_id='r1', trace=True)
            self.assertEqual(res['a'].span.backend, 'redis:cache')
            c, t = h.client(s)
            try:
                info = {l.name: l for l in c.lookups()}
            finally:
                t.close()
            self.assertEqual(info['get'].backend, 'redis:cache')
            self.assertEqual(info['get'].params, ['k'])
            self.assertEqual(labelled(s, 'evdal_redis_calls_total', database='cache',
                                      outcome='ok'), 2)
            self.assertEqual(labelled(s, 'evdal_redis_call_duration_seconds_count',
                                      database='cache'), 2)
            self.assertEqual(labelled(s, 'evdal_redis_in_flight', database='cache'), 0)

    def test_reload_replaces_the_connections(self):
        """SIGHUP with a changed command: calls use the new one, and the old generation's
        connections are closed on their loops (Redis' own client count shows it)."""
        r = self.redis
        r.cmd('SET', 'a', 'A')
        r.cmd('HSET', 'h', 'a', 'HA')

        def clients():   # evdal's connections, without the one asking
            info = r.cmd('INFO', 'clients').decode()
            return int(re.search(r'connected_clients:(\d+)', info).group(1)) - 1

        with h.Server(redis_config(r.sock, io_threads=2, connections=2)) as s:
            self.wait_for(lambda: clients() == 4)
            self.assertEqual(cells(self.fetch(s, {'x': call('get', k='a')})['x']), [['A']])
            with open(s.config_path, 'w') as f:
                f.write(redis_config(r.sock, io_threads=2, connections=3).replace(
                    'command = GET {k}\ndescription', 'command = HGET h {k}\ndescription'))
            s.send_signal(signal.SIGHUP)
            self.assertTrue(s.wait_log(r'reloaded', timeout=10), s.log_tail())
            self.wait_for(lambda: cells(self.fetch(s, {'x': call('get', k='a')})['x']) == [['HA']])
            self.wait_for(lambda: clients() == 6)   # 2 loops x 3; the old 4 closed
            self.wait_connections(s, 6)

    def test_reply_over_max_reply_bytes(self):
        """A value far over the database's max_reply_bytes fails its call with BACKEND as soon
        as its bytes pass the bound (evdal's peak memory does not take the 32 MiB), other
        databases' calls of the same fetch are served, and the connection comes back; without
        the key, [server] max_reply_bytes bounds the reply."""
        r = self.redis
        self.assertEqual(r.cmd('SETRANGE', 'huge', str((32 << 20) - 1), 'x'), 32 << 20)
        r.cmd('SET', 'a', 'A')
        small = """
[database small]
backend = redis
address = %s
connections = 1
max_reply_bytes = 4096

[lookup get_small]
database = small
command = GET {k}
""" % r.sock
        with h.Server(redis_config(r.sock, small, max_reply_bytes=100000)) as s:
            self.assertEqual(cells(self.fetch(s, {'a': call('get_small', k='a')})['a']), [['A']])
            peak = s.peak_rss_mib()
            res = self.fetch(s, {'huge': call('get_small', k='huge'), 'other': call('get', k='a')})
            self.assertEqual(res['huge'].error.kind, EK.BACKEND, res['huge'])
            self.assertEqual(res['huge'].error.message, 'database small: a reply of more than '
                             '4096 bytes is over max_reply_bytes')
            self.assertEqual(cells(res['other']), [['A']])
            res = self.fetch(s, {'huge': call('get', k='huge')})
            self.assertEqual(res['huge'].error.message, 'database cache: a reply of more than '
                             '100000 bytes is over max_reply_bytes')
            self.wait_for(lambda: self.fetch(s, {'a': call('get_small', k='a')})['a'].error
                          is None)
            # the huge call, and any refused while its connection was made again
            self.assertGreaterEqual(labelled(s, 'evdal_redis_calls_total', database='small',
                                             outcome='backend'), 1)
            self.assertGreaterEqual(labelled(s, 'evdal_redis_connection_losses_total',
                                             database='small'), 1)
            # Without the bound, the reader's copy and the reply object took 64 MiB.
            self.assertLess(s.peak_rss_mib() - peak, 16 if h.SANITIZED else 8)

    def test_list_over_max_rows_is_not_held(self):
        """A list of a million elements (7 MB on the wire, under max_reply_bytes) read by a
        lookup with max_rows = 1000 fails with "more than max_rows" without evdal building
        its million reply objects (about 80 MB, and as many rows, before): peak memory grows
        by under 16 MiB, and the connection goes on."""
        r = self.redis
        r.cmd('EVAL', "local t = {} for i = 1, 5000 do t[i] = 'x' end "
              "for j = 1, 200 do redis.call('RPUSH', KEYS[1], unpack(t)) end", '1', 'big')
        self.assertEqual(r.cmd('LLEN', 'big'), 1000000)
        r.cmd('SET', 'a', 'A')
        extra = """
[lookup all]
database = cache
command = LRANGE {k} 0 -1
"""
        with h.Server(redis_config(r.sock, extra, connections=1)) as s:
            self.assertEqual(cells(self.fetch(s, {'a': call('get', k='a')})['a']), [['A']])
            peak = s.peak_rss_mib()
            for _ in range(3):
                res = self.fetch(s, {'big': call('all', k='big'), 'a': call('get', k='a')})
                self.assertEqual(res['big'].error.kind, EK.BACKEND, res['big'])
                self.assertEqual(res['big'].error.message, 'more than max_rows (1000) rows')
                self.assertEqual(cells(res['a']), [['A']])
            # Before: 235 MiB. Under ASan, about 50: the reader's buffer as it grows and is cut
            # back, freed memory waiting in the quarantine.
            self.assertLess(s.peak_rss_mib() - peak, 120 if h.SANITIZED else 16)
            self.assertEqual(labelled(s, 'evdal_redis_connection_losses_total',
                                      database='cache'), 0)

    def test_tcp_numeric_and_by_name(self):
        """host:port over TCP, numeric and a name resolved without blocking (evdns, which
        reads /etc/hosts for localhost)."""
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()   # redis-server binds it next: an ephemeral port, not a fixed one
        r = Redis()
        r.tcp_port = port
        r.start()
        try:
            r.cmd('SET', 'a', 'over tcp')
            for address in ('127.0.0.1:%d' % port, 'localhost:%d' % port):
                with h.Server(redis_config(address)) as s:
                    self.wait_connections(s, 4)
                    self.assertEqual(cells(self.fetch(s, {'a': call('get', k='a')})['a']),
                                     [['over tcp']], address)
        finally:
            r.close()

    def test_name_whose_first_address_is_refused(self):
        """A name whose first address refuses (127.0.0.2, loopback where nothing listens) and
        whose second is Redis's: every address is tried in turn, as hiredis's own connect does
        (libevent's connect_hostname tried the first only, and never connected). A name whose
        every address refuses fails calls with each address and why. The name's addresses come
        from a hosts file (EVDAL_HOSTS_FILE, evd_dns's test hook)."""
        port = h.free_port()   # redis-server binds it next
        r = Redis(password='pw')  # AUTH waits in the output until a socket is connected
        r.tcp_port = port
        r.start()
        try:
            r.cmd('SET', 'a', 'second address')
            env = {'EVDAL_HOSTS_FILE': os.path.join(r.dir, 'hosts')}
            with open(env['EVDAL_HOSTS_FILE'], 'w') as f:
                f.write('127.0.0.2 evd-dead-first evd-all-dead\n127.0.0.1 evd-dead-first\n'
                        '127.0.0.3 evd-all-dead\n')
            s = h.Server(redis_config('evd-dead-first:%d' % port, connections=1, io_threads=1)
                         .replace('connections = 1', 'connections = 1\npassword_file = redis.pass'),
                         env=env)
            with open(os.path.join(s.tmpdir, 'redis.pass'), 'w') as f:
                f.write('pw\n')
            with s:
                self.wait_connections(s, 1)
                self.assertEqual(cells(self.fetch(s, {'a': call('get', k='a')})['a']),
                                 [['second address']])
                self.assertEqual(labelled(s, 'evdal_redis_connection_losses_total',
                                          database='cache'), 0)
            with h.Server(redis_config('evd-all-dead:%d' % port, connections=1, io_threads=1),
                          env=env) as s:
                want = ('cannot connect to evd-all-dead:%d: 127.0.0.2:%d refused, '
                        '127.0.0.3:%d refused' % (port, port, port))
                self.wait_for(lambda: want in (self.fetch(s, {'a': call('get', k='a')})['a']
                                               .error.message or ''))
        finally:
            r.close()

    def test_auth_from_password_file(self):
        r = Redis(password='pa ss\\word').start()
        try:
            r.cmd('SET', 'a', 'secret A')
            text = redis_config(r.sock).replace(
                'connections = 2', 'connections = 2\npassword_file = redis.pass')
            good = h.Server(text)
            with open(os.path.join(good.tmpdir, 'redis.pass'), 'w') as f:
                f.write('pa ss\\word\n')
            with good as s:
                self.assertEqual(cells(self.fetch(s, {'a': call('get', k='a')})['a']),
                                 [['secret A']])
            bad = h.Server(text)
            with open(os.path.join(bad.tmpdir, 'redis.pass'), 'w') as f:
                f.write('wrong\n')
            with bad as s:
                res = self.fetch(s, {'a': call('get', k='a')})['a']
                self.assertEqual(res.error.kind, EK.BACKEND)
                self.assertIn('AUTH: WRONGPASS', res.error.message)
        finally:
            r.close()


if __name__ == '__main__':
    unittest.main()

"""PostgreSQL lookups against a real PostgreSQL 15 started for this module (pg_fixture.py):
the seven-lookup page gives the same rows from SQLite and from PostgreSQL (the same generator,
evdal-mkdb, and the same SQL), every type of the README's table comes back as it says,
injection stays text, writing lookups (and a conninfo naming an undefined service) are refused
at start-up and writing CTEs fail at run time, and faults (PostgreSQL down at start, restarted under load, stopped with SIGSTOP, its
sessions terminated) each cost calls at most their deadline and are followed by a good page,
and a connection lost mid-query is retried by a lookup with `retries` while an SQL error is not.

Exits 77 (skipped) when PostgreSQL 15 is not installed."""
import configparser
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import evdal_harness as h
import pg_fixture
from evdal_harness import ttypes

if not pg_fixture.available():
    print('test_postgresql: PostgreSQL 15 is not installed (tools/dev.sh deps)', file=sys.stderr)
    sys.exit(pg_fixture.SKIP)

CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal.conf')
MKDB = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-mkdb')
PAGE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
        'recommended_products']
# Sample size: the page comparison walks N_PAGES random users of these.
N_USERS = 3000
N_PAGES = 1000

PG = None
TMP = None
DB = None


def setUpModule():
    global PG, TMP, DB
    TMP = tempfile.mkdtemp(prefix='evdal-pgtest-')
    PG = pg_fixture.PgServer().start()
    unittest.addModuleCleanup(PG.close)
    DB = os.path.join(TMP, 'sample.db')
    subprocess.run([MKDB, '--users', str(N_USERS), '--postgresql', PG.conninfo, DB], check=True,
                   timeout=600, stdout=subprocess.DEVNULL)


def tearDownModule():
    import shutil
    shutil.rmtree(TMP, ignore_errors=True)


def page_sql():
    cp = configparser.ConfigParser(inline_comment_prefixes=('#',), interpolation=None)
    cp.read(CONF)
    return {name: cp['lookup ' + name]['sql'] for name in PAGE}


def ro_conninfo():
    return 'host=%s port=%d dbname=postgres user=evdal_ro' % (PG.dir, PG.port)


def pg_config(conninfo=None, extra='', timeout_ms=1000, connections=2, app=None, **server):
    """The page twice: `lite_NAME` from the SQLite file, `NAME` from PostgreSQL. `app`: the
    sessions' application_name, so that a test counts its own server's sessions only."""
    sql = page_sql()
    conninfo = (conninfo or ro_conninfo()) + (' application_name=%s' % app if app else '')
    parts = ['[database lite]\npath = %s\nworkers = 2\n' % DB,
             '[database pg]\nbackend = postgresql\nconninfo = %s\nconnections = %d\n'
             'statement_timeout_ms = 5000\n' % (conninfo, connections)]
    for name in PAGE:
        parts.append('[lookup lite_%s]\ndatabase = lite\nsql = %s\n' % (name, sql[name]))
        parts.append('[lookup %s]\ndatabase = pg\nsql = %s\ntimeout_ms = %d\nmax_rows = 100\n'
                     % (name, sql[name], timeout_ms))
    parts.append(h.NAP_LOOKUP)
    server.setdefault('io_threads', 2)
    server.setdefault('admin_listen', '127.0.0.1:0')
    return h.config('\n'.join(parts) + '\n' + extra, lookups='', **server)


def value(v):
    for field in ('int_value', 'real_value', 'text_value', 'blob_value'):
        if getattr(v, field) is not None:
            return getattr(v, field)
    assert v.null_value is not None, v
    return None


def page_request(uid, prefixes=('',), deadline_ms=None):
    params = {'user_id': ttypes.Value(int_value=uid)}
    calls = {p + n: ttypes.LookupCall(lookup=p + n, params=params) for n in PAGE for p in prefixes}
    ctx = {'deadline_ms': deadline_ms} if deadline_ms else {}
    return h.fetch_request(calls, **ctx)


def table(result):
    return result.table.columns, [[value(v) for v in row] for row in result.table.rows]


class PgTestCase(h.EvdalTestCase):
    def metric(self, server, name, **labels):
        _, _, body = server.admin_get('/metrics')
        lab = ','.join('%s="%s"' % kv for kv in labels.items())
        m = re.search(r'^%s\{%s\} (\S+)$' % (re.escape(name), re.escape(lab)), body, re.M)
        return float(m.group(1)) if m else None

    def wait_up(self, server, n, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric(server, 'evdal_postgresql_connections', database='pg', state='up') == n:
                return
            time.sleep(0.05)
        self.fail('connections not up: ' + server.admin_get('/metrics')[2][-3000:])

    def good_page(self, server, uid=7, timeout=10.0):
        """Waits (polling) until a whole page comes from PostgreSQL; returns how long."""
        t0 = time.monotonic()
        c, t = h.client(server)
        try:
            while True:
                r = c.fetch(page_request(uid))
                errors = {k: v.error for k, v in r.results.items() if v.error}
                if not errors:
                    return time.monotonic() - t0
                if time.monotonic() - t0 > timeout:
                    self.fail('no good page within %.0f s: %s' % (timeout, errors))
                time.sleep(0.02)
        finally:
            t.close()


class PageTest(PgTestCase):
    """The same rows from SQLite and PostgreSQL."""

    def test_same_rows_as_sqlite(self):
        # Budgets far above a page's time even on a loaded machine: rows are the point here
        # (deadlines have tests of their own below).
        budget = int(10000 * h.TIME_SCALE)
        with h.Server(pg_config(timeout_ms=budget, deadline_ms=2 * budget)) as s:
            self.wait_up(s, 4)
            c, t = h.client(s)
            self.addCleanup(t.close)
            rng = random.Random(15)
            for i in range(N_PAGES):
                uid = rng.randint(1, N_USERS + 10)   # a few users that do not exist
                r = c.fetch(page_request(uid, prefixes=('', 'lite_'), deadline_ms=2 * budget))
                for name in PAGE:
                    pg, lite = r.results[name], r.results['lite_' + name]
                    self.assertIsNone(pg.error, (name, uid))
                    self.assertIsNone(lite.error, (name, uid))
                    self.assertEqual(table(pg), table(lite), (name, uid))
            # Spans name the database.
            r = c.fetch(h.fetch_request({'u': ttypes.LookupCall(
                lookup='user', params={'user_id': ttypes.Value(int_value=1)})}, trace=True))
            self.assertEqual(r.results['u'].span.backend, 'postgresql:pg')
            infos = {i.name: i for i in c.lookups()}
            self.assertEqual(infos['recent_orders'].params, ['user_id'])
            # The sample's role may read and nothing else.
            with self.assertRaises(subprocess.CalledProcessError):
                PG.psql('DELETE FROM orders WHERE id = 1', user='evdal_ro')


TYPES_SQL = ("SELECT :i::int8 AS i, :i2::int2 AS i2, :r::float8 AS r, :t::text AS t, "
             ":b::bytea AS b, :n::numeric AS n, :d::date AS d, :z::int4 AS z, "
             "1::int2 AS s2, 2::int4 AS s4, 3::oid AS o, 1.5::float4 AS f4, true AS yes, "
             "false AS no, 12345678901234567890.5::numeric AS big, "
             "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, "
             "'{\"k\": [1, null]}'::jsonb AS j, '2024-02-29 13:14:15.25'::timestamp AS ts, "
             "'2024-02-29 13:14:15+02'::timestamptz AS tz, '1 day 02:03:04'::interval AS iv, "
             "ARRAY[1, 2] AS arr, 'x'::varchar(4) AS vc, NULL::text AS nul")


class TypesTest(PgTestCase):
    @classmethod
    def setUpClass(cls):
        PG.psql("DROP TABLE IF EXISTS notes; CREATE TABLE notes (id int8 PRIMARY KEY, body text);"
                "INSERT INTO notes VALUES (1, 'keep'); GRANT SELECT ON notes TO evdal_ro;")
        extra = ('[lookup types]\ndatabase = pg\nsql = %s\n\n'
                 '[lookup note]\ndatabase = pg\nsql = SELECT id, body FROM notes WHERE body = :body\n\n'
                 '[lookup sneaky]\ndatabase = pg\nsql = WITH d AS (DELETE FROM notes WHERE id = :id '
                 'RETURNING id) SELECT id FROM d\n' % TYPES_SQL)
        cls.server = h.Server(pg_config(conninfo=PG.conninfo, extra=extra))
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def call(self, lookup, **params):
        c, t = h.client(self.server)
        try:
            r = c.fetch(h.fetch_request({'x': ttypes.LookupCall(lookup=lookup, params=params)}))
            return r.results['x']
        finally:
            t.close()

    def test_every_type_round_trips(self):
        V = ttypes.Value
        res = self.call('types', i=V(int_value=-9223372036854775808), i2=V(int_value=-32768),
                        r=V(real_value=0.1), t=V(text_value='Zoë 🙂 \'"\\'),
                        b=V(blob_value=b'\x00\xff\x10'), n=V(text_value='3.14159265358979323846'),
                        d=V(text_value='2024-02-29'), z=V(null_value=True))
        self.assertIsNone(res.error, res.error)
        cols, rows = table(res)
        got = dict(zip(cols, rows[0]))
        self.assertEqual(got, {
            'i': -9223372036854775808, 'i2': -32768, 'r': 0.1, 't': 'Zoë 🙂 \'"\\',
            'b': b'\x00\xff\x10', 'n': '3.14159265358979323846', 'd': '2024-02-29', 'z': None,
            's2': 1, 's4': 2, 'o': 3, 'f4': 1.5, 'yes': 1, 'no': 0,
            'big': '12345678901234567890.5', 'u': 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            'j': '{"k": [1, null]}', 'ts': '2024-02-29 13:14:15.25',
            'tz': '2024-02-29 11:14:15+00', 'iv': '1 day 02:03:04', 'arr': '{1,2}', 'vc': 'x',
            'nul': None})
        # Out of range for int2, and text that is no integer: BACKEND naming the param.
        res = self.call('types', i=V(int_value=1), i2=V(int_value=40000), r=V(real_value=0.0),
                        t=V(text_value=''), b=V(blob_value=b''), n=V(text_value='1'),
                        d=V(text_value='2024-01-01'), z=V(null_value=True))
        self.assertEqual(res.error.kind, ttypes.ErrorKind.BACKEND)
        self.assertIn('param :i2:', res.error.message)
        res = self.call('types', i=V(text_value='abc'), i2=V(int_value=1), r=V(real_value=0.0),
                        t=V(text_value=''), b=V(blob_value=b''), n=V(text_value='1'),
                        d=V(text_value='2024-01-01'), z=V(null_value=True))
        self.assertEqual(res.error.kind, ttypes.ErrorKind.BACKEND)
        self.assertIn('param :i:', res.error.message)
        self.assertIn('invalid input syntax for type bigint', res.error.message)

    def test_injection_is_inert(self):
        for attempt in ["x' OR '1'='1", "'; DELETE FROM notes; --", "keep' --",
                        "$$; DROP TABLE notes; $$", "\\'; SELECT 1; --"]:
            res = self.call('note', body=ttypes.Value(text_value=attempt))
            self.assertIsNone(res.error, attempt)
            self.assertEqual(res.table.rows, [], attempt)
        self.assertEqual(PG.psql('SELECT count(*) FROM notes'), '1')
        res = self.call('note', body=ttypes.Value(text_value='keep'))
        self.assertEqual(len(res.table.rows), 1)

    def test_writing_cte_fails_and_writes_nothing(self):
        # Connected as the superuser here: the read-only session default is what stops it.
        res = self.call('sneaky', id=ttypes.Value(int_value=1))
        self.assertEqual(res.error.kind, ttypes.ErrorKind.BACKEND)
        self.assertIn('read-only transaction', res.error.message)
        self.assertEqual(PG.psql('SELECT count(*) FROM notes WHERE id = 1'), '1')


class StartupTest(PgTestCase):
    def config_with(self, sql, name='bad'):
        return pg_config(extra='[lookup %s]\ndatabase = pg\nsql = %s\n' % (name, sql))

    def refused(self, sql, expect):
        text = self.config_with(sql)
        with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as f:
            f.write(text.replace('listen = 127.0.0.1:0', 'listen = 127.0.0.1:0'))
        self.addCleanup(os.unlink, f.name)
        for args in (['--check-config', '-c', f.name], ['-c', f.name]):
            r = h.run_evdal(args, timeout=30)
            self.assertNotEqual(r.returncode, 0, (args, r.stdout, r.stderr))
            self.assertRegex(r.stderr + r.stdout, r'\[lookup bad\] sql: lookup bad: .*' + expect)

    def test_writing_lookup_refused_at_start(self):
        self.refused('DELETE FROM orders WHERE id = :id', 'no columns')
        self.refused('INSERT INTO orders (id) VALUES (:id)', 'no columns')

    def test_bad_sql_and_untypable_param_refused(self):
        self.refused('SELECT nope FROM orders', 'column "nope" does not exist')
        self.refused('SELECT :x IS NULL AS v', r'parameter \$1')
        self.refused('SELECT 1 AS a; SELECT 2 AS b', 'multiple commands')

    def test_undefined_service_refused(self):
        # evdal reads where to connect as libpq would, service file included (a host named
        # there is resolved by evdal, never by libpq on a loop): a service that is not defined
        # is a config error at start-up, not a database that is down at every attempt.
        with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as svc:
            svc.write('[evd_other]\nhost=localhost\n')
        self.addCleanup(os.unlink, svc.name)
        with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as f:
            f.write(pg_config(conninfo='service=evd_nope dbname=postgres user=evdal_ro'))
        self.addCleanup(os.unlink, f.name)
        for args in (['--check-config', '-c', f.name], ['-c', f.name]):
            r = h.run_evdal(args, timeout=30, env={'PGSERVICEFILE': svc.name})
            self.assertNotEqual(r.returncode, 0, (args, r.stdout, r.stderr))
            self.assertRegex(r.stderr, r':\d+: \[database pg\] conninfo: definition of service '
                             r'"evd_nope" not found')


PEER_BIN = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-peer-cpp')


@unittest.skipUnless(os.access(PEER_BIN, os.X_OK), 'evdal-peer-cpp not built')
class PeerTest(PgTestCase):
    """The C++ peer of the pg7 benchmark (blocking libpq) answers the page as evdal does, so
    that the benchmark compares the same work."""

    requires_peer = True   # left out of a build without the peer (run_e2e.py)

    def test_peer_answers_the_page_like_evdal(self):
        from test_peer_cpp import PeerServer
        # Rows are the point here: budgets far above a page's time on a loaded machine.
        budget = int(10000 * h.TIME_SCALE)
        text = pg_config(timeout_ms=budget, deadline_ms=2 * budget)
        with PeerServer(text) as peer, h.Server(text) as ev:
            self.wait_up(ev, 4)
            cp, tp = h.client(peer)
            ce, te = h.client(ev)
            self.addCleanup(tp.close)
            self.addCleanup(te.close)
            rng = random.Random(7)
            for _ in range(100):
                uid = rng.randint(1, N_USERS)
                rp = cp.fetch(page_request(uid, deadline_ms=2 * budget))
                re_ = ce.fetch(page_request(uid, deadline_ms=2 * budget))
                for name in PAGE:
                    self.assertIsNone(rp.results[name].error, (name, uid))
                    self.assertIsNone(re_.results[name].error, (name, uid))
                    self.assertEqual(table(rp.results[name]), table(re_.results[name]),
                                     (name, uid))
            infos = {i.name: i for i in cp.lookups()}
            self.assertEqual(infos['user'].backend, 'postgresql:pg')


class FaultTest(PgTestCase):
    """Each fault is followed by a successful page."""

    def test_down_at_start(self):
        PG.stop()
        try:
            with h.Server(pg_config()) as s:
                c, t = h.client(s)
                self.addCleanup(t.close)
                # Until the first attempt has failed calls may wait; after, they fail at once.
                deadline = time.monotonic() + 10
                while True:
                    t0 = time.monotonic()
                    r = c.fetch(page_request(1, prefixes=('', 'lite_'), deadline_ms=5000))
                    took = time.monotonic() - t0
                    err = r.results['user'].error
                    if err and 'unavailable' in err.message or time.monotonic() > deadline:
                        break
                self.assertEqual(err.kind, ttypes.ErrorKind.BACKEND)
                self.assertRegex(err.message, r'^database pg unavailable: .+')
                self.assertLess(took, 1.0)                 # at once, not after 5 s
                self.assertIsNone(r.results['lite_user'].error)   # others serve
                self.assertGreater(self.metric(s, 'evdal_postgresql_connections',
                                               database='pg', state='broken')
                                   + self.metric(s, 'evdal_postgresql_connections',
                                                 database='pg', state='connecting'), 0)
                status, _, body = s.admin_get('/health')
                self.assertEqual(status, 200)
                self.assertIn('database pg: 0/4 connections up (unavailable)', body)
                PG.pg_ctl('start')
                took = self.good_page(s)
                self.assertLess(took, 3.0 + 2.0)   # backoff at most 2 s, and a busy machine
                self.wait_up(s, 4)
                self.assertIn('database pg: 4/4 connections up\n', s.admin_get('/health')[2])
                # The log says it once per loop's pool and change, not once per attempt.
                log = s.log_text()
                self.assertRegex(log, r'database pg unavailable: .+; reconnecting')
                self.assertTrue(s.wait_log(r'database pg: connected', timeout=5), s.log_tail())
                self.assertLessEqual(len(re.findall(r'unavailable: .*; reconnecting', log)), 2)
        finally:
            if not PG.pids():
                PG.pg_ctl('start')

    def test_restart_under_load(self):
        h.raise_nofile(1024)
        deadline_ms = 1500
        with h.Server(pg_config(timeout_ms=deadline_ms, connections=4,
                                deadline_ms=deadline_ms)) as s:
            self.wait_up(s, 8)
            stop = threading.Event()
            lock = threading.Lock()
            stats = {'ok': 0, 'backend': 0, 'timeout': 0, 'late': 0, 'other': []}

            def load(seed):
                rng = random.Random(seed)
                try:
                    c, t = h.client(s, timeout=30)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        stats['other'].append(repr(e))
                    return
                try:
                    while not stop.is_set():
                        t0 = time.monotonic()
                        r = c.fetch(page_request(rng.randint(1, N_USERS)))
                        took = time.monotonic() - t0
                        with lock:
                            if took > deadline_ms / 1000 + 1.0:
                                stats['late'] += 1
                            for res in r.results.values():
                                if res.error is None:
                                    stats['ok'] += 1
                                elif res.error.kind == ttypes.ErrorKind.BACKEND:
                                    stats['backend'] += 1
                                elif res.error.kind == ttypes.ErrorKind.TIMEOUT:
                                    stats['timeout'] += 1
                                else:
                                    stats['other'].append(res.error.message)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        stats['other'].append(repr(e))
                finally:
                    t.close()

            threads = [threading.Thread(target=load, args=(i,)) for i in range(64)]
            for th in threads:
                th.start()
            time.sleep(1.0)
            PG.restart('fast')                     # returns once PostgreSQL accepts again
            back = self.good_page(s)
            time.sleep(0.5)
            stop.set()
            for th in threads:
                th.join(60)
            print('\nrestart under load: %d calls ok, %d BACKEND, %d TIMEOUT, %d late; a good '
                  'page %.2f s after PostgreSQL accepted again' % (
                      stats['ok'], stats['backend'], stats['timeout'], stats['late'], back),
                  file=sys.stderr)
            self.assertEqual(stats['other'], [])
            self.assertEqual(stats['late'], 0, stats)
            self.assertGreater(stats['ok'], 0, stats)
            self.assertGreater(stats['backend'], 0, stats)   # the restart was seen
            self.assertLess(back, 3.0 + 1.0, stats)          # within 3 s of accepting (+ margin)
            self.good_page(s)

    def test_sigstop(self):
        with h.Server(pg_config(timeout_ms=300, connections=2, app='evd_sigstop')) as s:
            self.wait_up(s, 4)
            total = 4    # 2 per loop, 2 loops
            c, t = h.client(s)
            self.addCleanup(t.close)
            try:
                PG.suspend()
                t_end = time.monotonic() + 3.0
                kinds = set()
                while time.monotonic() < t_end:
                    t0 = time.monotonic()
                    r = c.fetch(page_request(5, deadline_ms=300))
                    self.assertLess(time.monotonic() - t0, 0.3 + 1.0)
                    kinds |= {v.error.kind for v in r.results.values() if v.error}
                    self.assertNotIn(None, [v.error for v in r.results.values()])
                    body = s.admin_get('/metrics')[2]      # one scrape, one snapshot
                    n = sum(float(x) for x in re.findall(
                        r'^evdal_postgresql_connections\{database="pg",state="\w+"\} (\S+)$',
                        body, re.M))
                    self.assertEqual(n, total)               # the pool never grows
            finally:
                PG.resume()
            self.assertIn(ttypes.ErrorKind.TIMEOUT, kinds)
            back = self.good_page(s)
            print('\nSIGSTOP 3 s: errors %s, a good page %.2f s after SIGCONT' % (
                sorted(ttypes.ErrorKind._VALUES_TO_NAMES[k] for k in kinds), back),
                file=sys.stderr)
            # Sessions on the server settle at the pool's size.
            deadline = time.monotonic() + 10
            while PG.sessions('evd_sigstop') > total and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertLessEqual(PG.sessions('evd_sigstop'), total)

    def test_reload_replaces_the_pools(self):
        with h.Server(pg_config(connections=3, app='evd_reload')) as s:
            self.wait_up(s, 6)
            with open(s.config_path, 'w') as f:
                f.write(pg_config(connections=1, app='evd_reload'))
            s.send_signal(signal.SIGHUP)
            self.assertTrue(s.wait_log(r'reloaded', timeout=10), s.log_tail())
            self.wait_up(s, 2)
            # The old generation's connections close once its last request is done.
            deadline = time.monotonic() + 10
            while PG.sessions('evd_reload') > 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(PG.sessions('evd_reload'), 2)
            self.good_page(s)

    def test_terminate_backend(self):
        with h.Server(pg_config(app='evd_terminate')) as s:
            self.wait_up(s, 4)
            self.good_page(s)
            killed = PG.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name = 'evd_terminate'")
            self.assertEqual(killed, '4')
            self.good_page(s)
            self.wait_up(s, 4)
            self.assertGreaterEqual(self.metric(s, 'evdal_postgresql_reconnects_total',
                                                database='pg'), 4)


class RetryTest(PgTestCase):
    """Issue 17: a connection lost before its query was answered is a retryable failure (a
    lookup with `retries` sends the call again); an SQL error is not."""

    EXTRA = ('[lookup sleepy]\ndatabase = pg\nsql = SELECT 1 AS one FROM pg_sleep(:s::float8)\n'
             'retries = 1\ncoalesce = false\ntimeout_ms = 20000\n\n'
             '[lookup divide]\ndatabase = pg\nsql = SELECT 1 / :z::int4 AS q\nretries = 1\n'
             'coalesce = false\n')

    def test_lost_connection_is_retried_sql_error_is_not(self):
        with h.Server(pg_config(extra=self.EXTRA, app='evd_retry', io_threads=1)) as s:
            self.wait_up(s, 2)
            c, t = h.client(s, timeout=30)
            self.addCleanup(t.close)
            got = {}

            def sleepy():
                # Long enough that the poll below finds it running on a busy machine.
                call = ttypes.LookupCall(lookup='sleepy',
                                         params={'s': ttypes.Value(real_value=3.0)})
                got['r'] = c.fetch(h.fetch_request({'x': call}, deadline_ms=20000, trace=True))

            th = threading.Thread(target=sleepy)
            th.start()
            # Its session is killed while the query runs on the server.
            h.wait_until(lambda: PG.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                "application_name = 'evd_retry' AND state = 'active' AND query LIKE '%pg_sleep%'")
                == '1', timeout=10, what='the query running, then terminated')
            th.join(30)
            res = got['r'].results['x']
            self.assertIsNone(res.error, res.error)
            self.assertEqual(table(res), (['one'], [[1]]))
            self.assertIn('retried:1', res.span.marks or [])
            self.assertEqual(self.metric(s, 'evdal_lookup_retries_total', lookup='sleepy'), 1)
            self.assertGreaterEqual(self.metric(s, 'evdal_postgresql_failures_total',
                                                database='pg'), 1)
            # An SQL error is final.
            call = ttypes.LookupCall(lookup='divide', params={'z': ttypes.Value(int_value=0)})
            res = c.fetch(h.fetch_request({'x': call}, trace=True)).results['x']
            self.assertEqual(res.error.kind, ttypes.ErrorKind.BACKEND)
            self.assertIn('division by zero', res.error.message)
            self.assertFalse(res.span.marks)
            self.assertEqual(self.metric(s, 'evdal_lookup_retries_total', lookup='divide'), 0)


class TraceContextTest(PgTestCase):
    """Issue 18, context out: while a sampled call's statement runs, pg_stat_activity shows
    its trace context as a sqlcommenter comment (traceparent with evdal's span for that call,
    and the caller's tracestate, percent-encoded); an unsampled call's shows the plain
    prepared statement. The rows are the same either way."""

    SQL = ('SELECT u.id, u.name FROM users u, (SELECT pg_sleep(:secs)) s '
           'WHERE u.id = :user_id')
    PREPARED = ('SELECT u.id, u.name FROM users u, (SELECT pg_sleep($1)) s '
                'WHERE u.id = $2')
    TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
    # a tracestate value may hold '*', '/' and quotes: they must not end the comment
    TRACESTATE = "rojo=00f067aa0ba902b7,congo=t*/'61"

    def running_query(self, srv, traceparent, app):
        """Fetches a lookup that sleeps, and returns the text pg_stat_activity shows for it
        while it runs (polled, with a deadline) and the fetch's result."""
        # PostgreSQL sleeps, not evdal: no TIME_SCALE (the fetch's 5 s budget bounds it)
        secs = 2.5
        out = {}

        def fetch():
            c, t = h.client(srv)
            try:
                out['r'] = c.fetch(h.fetch_request(
                    {'s': ttypes.LookupCall(lookup='slow_user', params={
                        'user_id': ttypes.Value(int_value=7),
                        'secs': ttypes.Value(real_value=secs)})},
                    request_id='req-pg-trace', traceparent=traceparent,
                    tracestate=self.TRACESTATE))
            finally:
                t.close()

        th = threading.Thread(target=fetch)
        th.start()
        seen = ''
        deadline = time.monotonic() + secs
        while not seen and time.monotonic() < deadline and th.is_alive():
            seen = PG.psql("SELECT query FROM pg_stat_activity WHERE application_name = '%s' "
                           "AND state = 'active'" % app)
        th.join(30)
        self.assertIsNone(out['r'].results['s'].error, out['r'].results['s'])
        self.assertTrue(seen, 'the statement was never seen running')
        return seen, table(out['r'].results['s'])

    def test_pg_stat_activity_shows_a_sampled_calls_context(self):
        import urllib.parse
        import test_tracing  # its fake OTLP collector
        col = test_tracing.Collector()
        self.addCleanup(col.close)
        extra = ('[tracing]\notlp_endpoint = %s\nsample_ratio = 1\nservice_name = evdal-test\n'
                 'batch_max_age_ms = 50\n\n[lookup slow_user]\ndatabase = pg\nsql = %s\n'
                 'timeout_ms = 30000\n' % (col.url, self.SQL))
        with h.Server(pg_config(extra=extra, app='evd_trace')) as s:
            self.wait_up(s, 4)
            # Unsampled (-00, though sample_ratio = 1: the parent decides): the prepared
            # statement, nothing added.
            plain, rows_plain = self.running_query(
                s, '00-%s-00f067aa0ba902b7-00' % self.TRACE_ID, 'evd_trace')
            self.assertEqual(plain, self.PREPARED)
            # Sampled: the same SQL with the context after it.
            commented, rows_sampled = self.running_query(
                s, '00-%s-00f067aa0ba902b7-01' % self.TRACE_ID, 'evd_trace')
            spans = [sp for sp in col.wait_spans(2) if sp['name'] == 'lookup slow_user']
            self.assertEqual(len(spans), 1, spans)
            span_id = spans[0]['spanId']
            sql, sep, comment = commented.partition('\n')
            self.assertEqual(sql, self.PREPARED)
            m = re.fullmatch(r"/\*traceparent='([^']*)',tracestate='([^']*)'\*/", comment)
            self.assertIsNotNone(m, commented)
            self.assertEqual(m.group(1), '00-%s-%s-01' % (self.TRACE_ID, span_id))
            self.assertEqual(urllib.parse.unquote(m.group(2)), self.TRACESTATE)
            self.assertEqual(commented.count('*/'), 1)
            self.assertEqual(rows_sampled, rows_plain)
            self.assertEqual(rows_plain[1], [[7, rows_plain[1][0][1]]])


if __name__ == '__main__':
    unittest.main()

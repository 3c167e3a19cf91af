"""SQLite lookups (issue 4): config-defined SQL on a worker pool of read-only connections.
Each test builds the small database it needs with Python's sqlite3 module."""
import os
import sqlite3
import tempfile
import threading
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

EK = ttypes.ErrorKind
V = ttypes.Value

BIG = bytes(range(256)) * 4096  # 1 MiB


def make_db(path, wal=True):
    db = sqlite3.connect(path)
    if wal:
        db.execute('PRAGMA journal_mode=WAL')
    db.executescript("""
        CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n);
        CREATE TABLE seq (x INTEGER);
    """)
    db.executemany('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)', [
        (1, 42, 2.5, 'plain', b'\x00\x01\xff', None),
        (2, -9223372036854775808, -0.0, 'Zoë José Łukasz 渡辺 🙂', b'', None),
        (3, None, None, '', BIG, None),
    ])
    db.executemany('INSERT INTO seq VALUES (?)', [(x,) for x in range(10)])
    db.commit()
    db.close()


LOOKUPS = h.NAP_LOOKUP + """
[database main]
path = {db}
workers = {workers}
busy_timeout_ms = {busy}

[lookup row]
database = main
sql = SELECT i, r, s, b, n FROM t WHERE id = :id
description = One row of t

[lookup by_text]
database = main
sql = SELECT id FROM t WHERE s = :s

[lookup echo]
database = main
sql = SELECT :v AS v, typeof(:v) AS type

[lookup seq]
database = main
sql = SELECT x FROM seq WHERE x >= :from ORDER BY x
max_rows = 5

[lookup forever]
database = main
sql = WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c
timeout_ms = 200

[lookup sleepy]
database = main
sql = WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT count(*) AS n FROM c

[lookup endless]
database = main
sql = WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c

[lookup query_only]
database = main
sql = SELECT query_only FROM pragma_query_only
"""


class SqliteTest(h.EvdalTestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix='evdal-sqlite-')
        self.addCleanup(self.dir.cleanup)
        self.db = os.path.join(self.dir.name, 'test.db')

    def server(self, workers=2, busy=1000, wal=True, extra='', **server_keys):
        make_db(self.db, wal=wal)
        return h.Server(h.config(lookups=LOOKUPS.format(db=self.db, workers=workers, busy=busy),
                                 extra=extra, **server_keys))

    def fetch(self, srv, calls, **ctx):
        c, t = h.client(srv)
        self.addCleanup(t.close)
        return c.fetch(h.fetch_request(calls, **ctx))

    def one(self, srv, lookup, timeout_ms=None, **params):
        r = self.fetch(srv, {'k': ttypes.LookupCall(lookup=lookup, params=params or None,
                                                    timeout_ms=timeout_ms)})
        return r.results['k']

    def timed(self, srv, lookup, timeout_ms=None, **params):
        """One call: (its result, the ms it took)."""
        t0 = time.monotonic()
        r = self.one(srv, lookup, timeout_ms=timeout_ms, **params)
        return r, (time.monotonic() - t0) * 1000

    def test_values_round_trip(self):
        with self.server() as srv:
            r = self.one(srv, 'row', id=V(int_value=1))
            self.assertEqual(r.table.columns, ['i', 'r', 's', 'b', 'n'])
            (i, rr, s, b, n), = r.table.rows
            self.assertEqual((i.int_value, rr.real_value, s.text_value, b.blob_value),
                             (42, 2.5, 'plain', b'\x00\x01\xff'))
            self.assertTrue(n.null_value)
            for v in (i, rr, s, b, n):  # exactly one field of each Value
                self.assertEqual(sum(x is not None for x in (v.null_value, v.int_value,
                                     v.real_value, v.text_value, v.blob_value)), 1, v)
            (i, rr, s, b, n), = self.one(srv, 'row', id=V(int_value=2)).table.rows
            self.assertEqual(i.int_value, -9223372036854775808)
            self.assertEqual(s.text_value, 'Zoë José Łukasz 渡辺 🙂')
            self.assertEqual(b.blob_value, b'')
            (i, rr, s, b, n), = self.one(srv, 'row', id=V(int_value=3)).table.rows
            self.assertTrue(i.null_value and rr.null_value)
            self.assertEqual(s.text_value, '')
            self.assertEqual(b.blob_value, BIG)

    def test_params_bind_with_their_type(self):
        with self.server() as srv:
            cases = [(V(int_value=7), 'integer', 'int_value', 7),
                     (V(real_value=1.25), 'real', 'real_value', 1.25),
                     (V(text_value='héllo'), 'text', 'text_value', 'héllo'),
                     (V(blob_value=b'\x00bin'), 'blob', 'blob_value', b'\x00bin'),
                     (V(null_value=True), 'null', 'null_value', True)]
            for value, sqltype, field, expect in cases:
                (v, t), = self.one(srv, 'echo', v=value).table.rows
                self.assertEqual(t.text_value, sqltype)
                self.assertEqual(getattr(v, field), expect)

    def test_params_are_data_never_sql(self):
        """Client values are bound, never spliced: SQL in a param is just text."""
        attacks = ["plain' OR '1'='1", "1; DROP TABLE t; --", "x'); DELETE FROM t; --",
                   "' UNION SELECT i, r, s, b, n FROM t --"]
        with self.server() as srv:
            for attack in attacks:
                (v, t), = self.one(srv, 'echo', v=V(text_value=attack)).table.rows
                self.assertEqual((v.text_value, t.text_value), (attack, 'text'))
                self.assertEqual(self.one(srv, 'by_text', s=V(text_value=attack)).table.rows, [])
            self.assertEqual(len(self.one(srv, 'by_text', s=V(text_value='plain')).table.rows), 1)
        db = sqlite3.connect(self.db)
        self.assertEqual(db.execute('SELECT count(*) FROM t').fetchone()[0], 3)
        db.close()

    def test_zero_rows_max_rows_and_params(self):
        with self.server() as srv:
            self.assertEqual(self.one(srv, 'row', id=V(int_value=99)).table.rows, [])
            self.assertEqual(len(self.one(srv, 'seq', **{'from': V(int_value=5)}).table.rows), 5)
            r = self.one(srv, 'seq', **{'from': V(int_value=0)})
            self.assertEqual(r.error.kind, EK.BACKEND)
            self.assertIn('max_rows (5)', r.error.message)
            r = self.one(srv, 'row')
            self.assertEqual(r.error.kind, EK.BAD_PARAMS)
            self.assertIn('id', r.error.message)
            r = self.one(srv, 'row', id=V(int_value=1), other=V(int_value=2))
            self.assertEqual(r.error.kind, EK.BAD_PARAMS)
            self.assertIn('other', r.error.message)
            infos = {l.name: l for l in h.client(srv)[0].lookups()}
            self.assertEqual(infos['row'].params, ['id'])
            self.assertEqual(infos['row'].backend, 'sqlite:main')
            self.assertEqual(infos['row'].description, 'One row of t')
            self.assertEqual(infos['echo'].params, ['v'])

    def test_runaway_query_is_interrupted_and_the_worker_freed(self):
        with self.server(workers=1) as srv:
            t0 = time.monotonic()
            r = self.one(srv, 'forever')
            ms = (time.monotonic() - t0) * 1000
            self.assertEqual(r.error.kind, EK.TIMEOUT, r)
            self.assertLess(ms, h.scaled(600))
            # The only worker serves the next call at once.
            t0 = time.monotonic()
            self.assertEqual(self.one(srv, 'row', id=V(int_value=1)).table.rows[0][0].int_value, 42)
            self.assertLess((time.monotonic() - t0) * 1000, h.scaled(200))

    def test_the_loop_never_waits_for_sqlite(self):
        with self.server(workers=1, admin_listen='127.0.0.1:0') as srv:
            c, t = h.client(srv, timeout=60)
            self.addCleanup(t.close)
            # (1.5 s of CPU: a deadline and a client timeout that a loaded machine's SQLite
            # cannot reach; its answer is checked last.)
            c.send_fetch(h.fetch_request({'k': ttypes.LookupCall(
                lookup='sleepy', params={'n': V(int_value=3000000)})}, deadline_ms=60000))
            # SQLite has it (a lookup behind evd_xreq counts as two calls: >= 1).
            srv.wait_metric('evdal_backend_calls_outstanding', lambda v: v >= 1)
            other, t2 = h.client(srv)
            self.addCleanup(t2.close)
            t0 = time.monotonic()
            self.assertPong(other)
            r = other.fetch(h.fetch_request({'n': h.nap_call(10)}))
            self.assertEqual(h.slept_ms(r.results['n']), 10)
            self.assertLess((time.monotonic() - t0) * 1000, h.scaled(150),
                            'ping and nap waited for SQLite')
            self.assertEqual(c.recv_fetch().results['k'].table.rows[0][0].int_value, 3000000)

    def test_stored_text_that_is_not_utf8_is_an_error(self):
        with self.server() as srv:
            db = sqlite3.connect(self.db)
            db.execute("INSERT INTO t (id, s) VALUES (9, CAST(x'41ff42' AS TEXT))")
            db.commit()
            db.close()
            r = self.one(srv, 'row', id=V(int_value=9))
            self.assertEqual(r.error.kind, EK.BACKEND, r)
            self.assertIn('UTF-8', r.error.message)
            self.assertIn('column s', r.error.message)

    def test_stored_text_with_nul_round_trips(self):
        """U+0000 is valid UTF-8: text holding it comes back whole, not as an error."""
        with self.server() as srv:
            db = sqlite3.connect(self.db)
            db.execute("INSERT INTO t (id, s) VALUES (9, CAST(x'610062' AS TEXT))")
            db.execute("INSERT INTO t (id, s) VALUES (10, CAST(x'00c3a900' AS TEXT))")
            db.execute("INSERT INTO t (id, s) VALUES (11, CAST(x'4100ff' AS TEXT))")
            db.execute("INSERT INTO t (id, s) VALUES (12, CAST(x'41c300' AS TEXT))")
            db.commit()
            db.close()
            r = self.one(srv, 'row', id=V(int_value=9))
            self.assertIsNone(r.error, r)
            self.assertEqual(r.table.rows[0][2].text_value, 'a\x00b')
            self.assertEqual(self.one(srv, 'row', id=V(int_value=10)).table.rows[0][2].text_value,
                             '\x00é\x00')
            # Invalid bytes after a NUL, and a character cut by one, are still refused.
            for bad in (11, 12):
                r = self.one(srv, 'row', id=V(int_value=bad))
                self.assertEqual(r.error.kind, EK.BACKEND, (bad, r))
                self.assertIn('UTF-8', r.error.message)

    def test_invalid_utf8_param(self):
        with self.server() as srv:
            sock = srv.raw_socket()
            call = ttypes.LookupCall(lookup='echo', params={'v': V(text_value='x')})
            msg = h.fetch_bytes(1, h.fetch_request({'k': call}))
            msg = msg.replace(b'\x00\x00\x00\x01x', b'\x00\x00\x00\x01\xff')  # string 'x' -> 0xff
            h.send_all(sock, msg)
            r = h.read_reply(sock).result.success.results['k']
            self.assertEqual(r.error.kind, EK.BAD_PARAMS)
            self.assertIn('UTF-8', r.error.message)
            sock.close()

    def test_writes_from_another_process_are_visible(self):
        with self.server() as srv:
            self.assertEqual(self.one(srv, 'row', id=V(int_value=4)).table.rows, [])
            db = sqlite3.connect(self.db)
            db.execute("INSERT INTO t (id, i, s) VALUES (4, 44, 'new')")
            db.commit()
            db.close()
            self.assertEqual(self.one(srv, 'row', id=V(int_value=4)).table.rows[0][0].int_value, 44)

    def test_busy_database_is_retried_up_to_busy_timeout(self):
        """A writer holding the lock (rollback-journal mode) is waited for up to busy_timeout_ms."""
        for busy, expect_ok in ((2000, True), (50, False)):
            with self.server(wal=False, busy=busy) as srv:
                db = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
                db.execute('BEGIN EXCLUSIVE')
                commit = threading.Timer(0.4, lambda: (db.execute('COMMIT')))
                commit.start()
                t0 = time.monotonic()
                r = self.one(srv, 'row', id=V(int_value=1))
                ms = (time.monotonic() - t0) * 1000
                commit.join()
                db.close()
                if expect_ok:
                    self.assertIsNone(r.error, r)
                    self.assertGreaterEqual(ms, 300)
                else:
                    self.assertEqual(r.error.kind, EK.BACKEND, r)
                    self.assertIn('locked', r.error.message)
            os.unlink(self.db)


    def test_a_call_waiting_for_a_lock_frees_its_worker_when_it_times_out(self):
        """A statement waiting for a writer's lock gives its worker back when its call times
        out, not after busy_timeout_ms: the only worker then answers a statement that needs
        no lock while the writer still holds it."""
        with self.server(workers=1, busy=5000, wal=False) as srv:
            db = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
            self.addCleanup(db.close)
            db.execute('BEGIN EXCLUSIVE')
            try:
                r, ms = self.timed(srv, 'row', timeout_ms=100, id=V(int_value=1))
                self.assertEqual(r.error.kind, EK.TIMEOUT, r)
                self.assertLess(ms, h.scaled(1000))
                # echo reads no table, so it takes no lock: it waits only for the worker,
                # which SQLite's own busy_timeout kept for the whole 5 s.
                r, ms = self.timed(srv, 'echo', timeout_ms=3000, v=V(int_value=5))
                self.assertIsNone(r.error, r)
                self.assertEqual(r.table.rows[0][0].int_value, 5)
                self.assertLess(ms, 1500)
            finally:
                db.execute('ROLLBACK')
            r, ms = self.timed(srv, 'row', timeout_ms=3000, id=V(int_value=1))
            self.assertIsNone(r.error, r)
            self.assertEqual(r.table.rows[0][0].int_value, 42)
            self.assertLess(ms, h.scaled(1500))

    def test_a_cancelled_statement_frees_its_worker(self):
        """A critical call that fails cancels a running statement (not its 30 s budget): the
        only worker is free again at once."""
        with self.server(workers=1, extra=h.FAULT_LOOKUPS, deadline_ms=60000) as srv:
            c, t = h.client(srv)
            self.addCleanup(t.close)
            calls = {'must': ttypes.LookupCall(lookup='stuck', timeout_ms=300, critical=True),
                     'q': ttypes.LookupCall(lookup='endless', timeout_ms=30000)}
            t0 = time.monotonic()
            with self.assertRaises(ttypes.LookupFailed) as cm:
                c.fetch(h.fetch_request(calls))
            self.assertEqual(cm.exception.call, 'must')
            self.assertEqual(cm.exception.error.kind, EK.TIMEOUT)
            self.assertLess((time.monotonic() - t0) * 1000, h.scaled(2000))
            r, ms = self.timed(srv, 'row', timeout_ms=5000, id=V(int_value=1))
            self.assertIsNone(r.error, r)  # a worker kept by the statement: TIMEOUT
            self.assertEqual(r.table.rows[0][0].int_value, 42)
            self.assertLess(ms, h.scaled(2000))

    def test_connections_are_read_only(self):
        with self.server() as srv:
            # (tests/unit/test_sqlite_pool.c checks every connection of a pool.)
            (v,), = self.one(srv, 'query_only').table.rows
            self.assertEqual(v.int_value, 1)


class SqliteStartupTest(h.EvdalTestCase):
    """Bad SQL or a bad database stops start-up, naming what is wrong."""

    def check(self, db_path, sql, *expected):
        cfg = h.config(lookups="""
[database main]
path = %s

[lookup bad]
database = main
sql = %s
""" % (db_path, sql))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'evdal.conf')
            with open(path, 'w') as f:
                f.write(cfg)
            r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        for e in expected:
            self.assertIn(e, r.stderr)

    def test_bad_sql_writes_missing_and_corrupt(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, 'good.db')
            make_db(good)
            self.check(good, 'SELEC 1', 'lookup bad', 'syntax error', '[lookup bad] sql')
            self.check(good, 'DELETE FROM t', 'lookup bad', 'writes')
            self.check(good, 'SELECT 1; SELECT 2', 'one statement')
            self.check(good, 'SELECT * FROM nope WHERE x = :x', 'no such table: nope')
            missing = os.path.join(d, 'missing.db')
            self.check(missing, 'SELECT 1', missing, '[database main] path')
            corrupt = os.path.join(d, 'corrupt.db')
            with open(corrupt, 'wb') as f:
                f.write(os.urandom(8192))
            self.check(corrupt, 'SELECT 1', corrupt, 'not a database')


if __name__ == '__main__':
    unittest.main()

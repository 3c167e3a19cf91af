"""Hardening (issue 6): what the server survives with its other clients served: a second
SIGTERM, a database deleted or replaced under it, every SQLite worker busy, a burst of
connections far beyond max_connections, and calls with bad params (logged with the peer and
the reason, rate-limited)."""
import os
import re
import shutil
import signal
import socket
import sqlite3
import tempfile
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

V = ttypes.Value
EVD_LOG_LIMIT_BURST = 10  # core/evd_log.h: lines per second per loop and purpose
EK = ttypes.ErrorKind

DB_LOOKUPS = h.NAP_LOOKUP + """
[database main]
path = {db}
workers = {workers}

[lookup row]
database = main
sql = SELECT v FROM t WHERE id = :id

[lookup slow]
database = main
sql = WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT count(*) FROM c
"""


def make_db(path, value):
    db = sqlite3.connect(path)
    db.execute('PRAGMA journal_mode=WAL')
    db.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)')
    db.execute('INSERT INTO t VALUES (1, ?)', (value,))
    db.commit()
    db.close()


class ResilienceTest(h.EvdalTestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix='evdal-res-')
        self.addCleanup(self.dir.cleanup)
        self.db = os.path.join(self.dir.name, 'data.db')

    def row(self, c):
        r = c.fetch(h.fetch_request({'k': ttypes.LookupCall(lookup='row', params={'id': V(int_value=1)})}))
        return r.results['k']

    def test_second_sigterm_exits_at_once(self):
        srv = h.Server(h.config(shutdown_timeout_ms=20000, admin_listen='127.0.0.1:0'))
        srv.start()
        try:
            c, t = h.client(srv)
            c.send_fetch(h.fetch_request({'n': h.nap_call(5000)}))
            srv.wait_metric('evdal_inflight_requests', 1)
            srv.send_signal(signal.SIGTERM)
            self.assertTrue(srv.wait_log(r'shutdown: listener closed'), srv.log_tail())
            self.assertTrue(srv.alive(), 'the first SIGTERM must wait for the request in flight')
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            code = srv.wait(h.scaled(5))
            self.assertLess(time.monotonic() - t0, h.scaled(2))
            self.assertIsNotNone(code)
            self.assertIn('second', srv.log_text())
            t.close()
        finally:
            srv._cleanup()

    def test_database_deleted_or_replaced_while_serving(self):
        make_db(self.db, 'first')
        with h.Server(h.config(lookups=DB_LOOKUPS.format(db=self.db, workers=2))) as srv:
            c, t = h.client(srv)
            self.addCleanup(t.close)
            self.assertEqual(self.row(c).table.rows[0][0].text_value, 'first')
            # Deleted: open connections keep the file they have (POSIX); nothing crashes.
            for suffix in ('', '-wal', '-shm'):
                if os.path.exists(self.db + suffix):
                    os.unlink(self.db + suffix)
            r = self.row(c)
            self.assertTrue(r.table is not None or r.error.kind == EK.BACKEND, r)
            # Replaced by another file: answers come from one file or the other, or an error.
            make_db(self.db + '.new', 'second')
            os.rename(self.db + '.new', self.db)
            for _ in range(20):
                r = self.row(c)
                self.assertTrue(r.table is not None or r.error.kind == EK.BACKEND, r)
                if r.table is not None:
                    self.assertIn(r.table.rows[0][0].text_value, ('first', 'second'))
            self.assertPong(c)
            self.assertEqual(h.slept_ms(c.fetch(h.fetch_request({'n': h.nap_call(1)})).results['n']), 1)

    def test_all_workers_busy_calls_queue_then_time_out(self):
        make_db(self.db, 'v')
        with h.Server(h.config(lookups=DB_LOOKUPS.format(db=self.db, workers=1),
                               admin_listen='127.0.0.1:0')) as srv:
            busy, t1 = h.client(srv)
            self.addCleanup(t1.close)
            # The only worker runs a long statement (interrupted at its 3 s deadline: long
            # enough that the poll below surely sees it).
            busy.send_fetch(h.fetch_request({'s': ttypes.LookupCall(
                lookup='slow', params={'n': V(int_value=10 ** 12)}, timeout_ms=3000)}))
            # Submitted to the pool first: the call below queues behind it (one worker, FIFO).
            srv.wait_metric('evdal_backend_calls_outstanding', lambda v: v >= 1)
            c, t2 = h.client(srv)
            self.addCleanup(t2.close)
            t0 = time.monotonic()
            r = c.fetch(h.fetch_request({'k': ttypes.LookupCall(
                lookup='row', params={'id': V(int_value=1)}, timeout_ms=200),
                'n': h.nap_call(5)}))
            ms = (time.monotonic() - t0) * 1000
            self.assertEqual(r.results['k'].error.kind, EK.TIMEOUT, r)   # queued, then out of time
            self.assertEqual(h.slept_ms(r.results['n']), 5)              # the other call returns
            self.assertLess(ms, h.scaled(600))
            self.assertEqual(busy.recv_fetch().results['s'].error.kind, EK.TIMEOUT)
            # The worker is free again: the next call is served.
            self.assertEqual(self.row(c).table.rows[0][0].text_value, 'v')

    def test_burst_of_connections_beyond_max_connections(self):
        h.raise_nofile(12000)
        with h.Server(h.config(max_connections=100, io_threads=2,
                               admin_listen='127.0.0.1:0')) as srv:
            good, t = h.client(srv)
            self.addCleanup(t.close)
            socks = []
            try:
                for _ in range(5000):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.connect_ex((srv.host, srv.port))
                    socks.append(s)
                self.assertPong(good)
                # A flood of refusals went by (the bound below is about them)...
                srv.wait_metric('evdal_connections_refused_total', lambda v: v >= 1000)
                self.assertTrue(srv.wait_log(r'refused: max_connections \(100\)'))
                # The refusals are logged, but rate-limited: a flood is not a flood of lines.
                refusals = srv.log_text().count('refused: max_connections')
                self.assertLess(refusals, 200, refusals)
            finally:
                for s in socks:
                    s.close()
            srv.wait_metric('evdal_connections', 1)  # every close handled: the good one is left
            self.assertNapFetch(good, [5, 10])
            fresh, t2 = h.client(srv)
            self.addCleanup(t2.close)
            self.assertNapFetch(fresh, [5, 10])

    def test_bad_params_are_logged_with_peer_and_reason_rate_limited(self):
        """A Value union with two fields set and invalid UTF-8 in a text param: each call gets
        BAD_PARAMS, and the server logs a warning naming the client's address, the request, the
        call and the reason; a flood of them is rate-limited. A good fetch is served after."""
        with h.Server(h.config(io_threads=1)) as srv:
            sock = srv.raw_socket()
            peer = '127.0.0.1:%d' % sock.getsockname()[1]
            two = ttypes.LookupCall(lookup='nap', params={'delay_ms': V(int_value=1, text_value='1')})
            utf = ttypes.LookupCall(lookup='nap', params={'delay_ms': V(text_value='x')})
            msg = h.fetch_bytes(1, h.fetch_request({'two': two, 'utf': utf, 'ok': h.nap_call(1)},
                                                   request_id='bad-1'))
            self.assertEqual(msg.count(b'\x00\x00\x00\x01x'), 1)
            h.send_all(sock, msg.replace(b'\x00\x00\x00\x01x', b'\x00\x00\x00\x01\xff'))
            r = h.read_reply(sock).result.success.results
            self.assertEqual(r['two'].error.kind, EK.BAD_PARAMS, r)
            self.assertEqual(r['utf'].error.kind, EK.BAD_PARAMS, r)
            self.assertIn('UTF-8', r['utf'].error.message)
            self.assertEqual(h.slept_ms(r['ok']), 1)
            p = re.escape(peer)
            self.assertTrue(srv.wait_log(p + r': \[bad-1\] call two refused: '
                                             r'param delay_ms'), srv.log_tail())
            self.assertTrue(srv.wait_log(p + r': \[bad-1\] call utf refused: '
                                             r'param delay_ms: text is not valid UTF-8'),
                            srv.log_tail())
            # A flood: 200 bad calls in well under a second give about a burst of lines.
            flood = h.fetch_bytes(2, h.fetch_request({'two': two}, request_id='flood'))
            h.send_all(sock, flood * 200)
            for _ in range(200):
                self.assertEqual(h.read_reply(sock).result.success.results['two'].error.kind,
                                 EK.BAD_PARAMS)
            logged = srv.log_text().count('[flood] call two refused')
            self.assertGreater(logged, 0)
            self.assertLessEqual(logged, 3 * EVD_LOG_LIMIT_BURST, logged)
            sock.close()
            good, t = h.client(srv)
            self.addCleanup(t.close)
            self.assertNapFetch(good, [5, 10])


if __name__ == '__main__':
    unittest.main()

"""PostgreSQL lookups under valgrind: connecting, a page, typed params and their errors,
sampled calls (sent unprepared with their trace context), a call that times out (its connection drains), sessions killed by the server (reconnects), a reload
(new pools, the old ones closed on their loops) and shutdown, without memory errors or
definite leaks. Exits 77 (skipped) when PostgreSQL 15 is not installed."""
import re
import shutil
import signal
import sys
import time
import unittest

import evdal_harness as h
import pg_fixture
from evdal_harness import ttypes

if not pg_fixture.available():
    print('test_valgrind_postgresql: PostgreSQL 15 is not installed', file=sys.stderr)
    sys.exit(pg_fixture.SKIP)

VALGRIND = shutil.which('valgrind')


def lookups(conninfo, connections):
    return """
[database pg]
backend = postgresql
conninfo = %s
connections = %d

[lookup item]
database = pg
sql = SELECT id, name, price, data FROM items WHERE id = :id

[lookup slow]
database = pg
sql = SELECT pg_sleep(:s::float8)::text AS slept
timeout_ms = 100
""" % (conninfo, connections)


@unittest.skipUnless(VALGRIND, 'valgrind is not installed')
class ValgrindPostgresqlTest(h.EvdalTestCase):
    def test_postgresql_under_valgrind(self):
        V = ttypes.Value
        with pg_fixture.PgServer() as pg:
            pg.psql("CREATE TABLE items (id int8 PRIMARY KEY, name text, price float8, data bytea);"
                    "INSERT INTO items VALUES (1, 'one', 1.5, '\\x00ff'), (2, NULL, NULL, NULL);")
            # Under valgrind on a busy machine a loop pass can take longer than max_queue_ms:
            # this test is about memory, not load shedding.
            text = h.config(lookups=lookups(pg.conninfo, 2), io_threads=2, deadline_ms=20000,
                            shutdown_timeout_ms=20000, max_queue_ms=0)
            w = [VALGRIND, '--leak-check=full', '--errors-for-leak-kinds=definite',
                 '--error-exitcode=99', '--track-fds=no', '--num-callers=30']
            server = h.Server(text, wrapper=w, start_timeout=120, stop_timeout=120,
                              env={'G_SLICE': 'always-malloc', 'G_DEBUG': 'gc-friendly'})
            with server:
                c, t = h.client(server, timeout=60)
                try:
                    def item(v, **ctx):
                        r = c.fetch(h.fetch_request({'i': ttypes.LookupCall(
                            lookup='item', params={'id': v})}, **ctx))
                        return r.results['i']

                    deadline = time.monotonic() + 60
                    while item(V(int_value=1)).error and time.monotonic() < deadline:
                        time.sleep(0.2)
                    res = item(V(int_value=1))
                    self.assertIsNone(res.error, res.error)
                    self.assertEqual(len(res.table.rows), 1)
                    self.assertEqual(len(item(V(int_value=2)).table.rows), 1)
                    self.assertIn('param :id:', item(V(text_value='abc')).error.message)
                    # sampled calls: unprepared, with the trace context in a comment
                    sampled = {'traceparent': '00-%s-%s-01' % ('4b' * 16, '0f' * 8),
                               'tracestate': 'k=*/v'}
                    res = item(V(int_value=1), **sampled)
                    self.assertIsNone(res.error, res.error)
                    self.assertEqual(len(res.table.rows), 1)
                    self.assertIn('param :id:', item(V(text_value='abc'), **sampled).error.message)
                    r = c.fetch(h.fetch_request({'s': ttypes.LookupCall(
                        lookup='slow', params={'s': V(real_value=0.5)}, timeout_ms=2000)},
                        **sampled))
                    self.assertEqual(r.results['s'].error.kind, ttypes.ErrorKind.TIMEOUT)
                    r = c.fetch(h.fetch_request({'s': ttypes.LookupCall(
                        lookup='slow', params={'s': V(real_value=0.5)}, timeout_ms=2000)}))
                    self.assertEqual(r.results['s'].error.kind, ttypes.ErrorKind.TIMEOUT)
                    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'evdal'")
                    deadline = time.monotonic() + 60
                    while item(V(int_value=1)).error and time.monotonic() < deadline:
                        time.sleep(0.2)
                    self.assertIsNone(item(V(int_value=1)).error)
                    with open(server.config_path, 'w') as f:
                        f.write(h.config(lookups=lookups(pg.conninfo, 1), io_threads=2,
                                         deadline_ms=20000, shutdown_timeout_ms=20000,
                                         max_queue_ms=0))
                    server.send_signal(signal.SIGHUP)
                    self.assertTrue(server.wait_log(r'reloaded', timeout=60), server.log_tail())
                    deadline = time.monotonic() + 60
                    while item(V(int_value=1)).error and time.monotonic() < deadline:
                        time.sleep(0.2)
                    self.assertIsNone(item(V(int_value=1)).error)
                    rc = server.stop(120)
                finally:
                    t.close()
                log = server.log_text()
                summary = '\n'.join([l for l in log.splitlines() if l.startswith('==')][-150:])
                self.assertNotEqual(rc, 99, 'valgrind reported errors:\n' + summary)
                self.assertEqual(rc, 0, summary)
                self.assertTrue(re.search(r'definitely lost: 0 bytes', log) or
                                'All heap blocks were freed' in log, summary)
                self.assertRegex(log, r'ERROR SUMMARY: 0 errors')


if __name__ == '__main__':
    unittest.main()

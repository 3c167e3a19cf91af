"""The admin endpoint (issue 7, and the shared secret of issue 6): /health, /metrics in the
Prometheus text format (checked with Debian's python3-prometheus-client parser, against traffic
this test sends and counts itself), /lookups, /traces.json, the secret, and bad admin config."""
import json
import os
import signal
import sqlite3
import tempfile
import threading
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

import evdal_harness as h
from evdal_harness import ttypes

EK = ttypes.ErrorKind

LOOKUPS = h.NAP_LOOKUP + """
[lookup broken]
backend = fault
mode = fail

[lookup person]
database = db
sql = SELECT id, name FROM people WHERE id = :id
max_concurrent = 8

[database db]
path = @TMPDIR@/people.db
workers = 2
"""


def make_db(path):
    db = sqlite3.connect(path)
    db.execute('CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)')
    db.executemany('INSERT INTO people VALUES (?, ?)', [(i, 'person %d' % i) for i in range(1, 51)])
    db.commit()
    db.close()


def metrics(server, **headers):
    status, hdrs, body = server.admin_get('/metrics', headers=headers)
    if status != 200:
        raise AssertionError('/metrics answered %d: %s' % (status, body))
    if not hdrs.get('Content-Type', '').startswith('text/plain; version=0.0.4'):
        raise AssertionError('content type %r' % hdrs.get('Content-Type'))
    families = {f.name: f for f in text_string_to_metric_families(body)}
    samples = {}
    for f in families.values():
        for s in f.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


class AdminServer(h.Server):
    """A server whose temp folder holds the test database."""

    def start(self):
        make_db(os.path.join(self.tmpdir, 'people.db'))
        return super().start()


def admin_config(**server):
    server.setdefault('admin_listen', '127.0.0.1:0')
    return h.config(lookups=LOOKUPS, **server)


class AdminTest(unittest.TestCase):

    def test_metrics_count_what_was_sent(self):
        with AdminServer(admin_config()) as server:
            self.assertIsNotNone(server.admin_address, server.log_tail())
            c, t = h.client(server)
            try:
                for _ in range(3):
                    self.assertEqual(c.ping(), 'pong')
                c.lookups()
                ok = 0
                for i in range(1, 6):
                    r = c.fetch(h.fetch_request({'n': h.nap_call(5),
                                                 'p': ttypes.LookupCall(lookup='person', params={
                                                     'id': ttypes.Value(int_value=i)}),
                                                 'b': ttypes.LookupCall(lookup='broken'),
                                                 'x': ttypes.LookupCall(lookup='missing')}))
                    self.assertEqual(r.results['p'].table.rows[0][1].text_value, 'person %d' % i)
                    ok += 1
                with self.assertRaises(ttypes.InvalidRequest):
                    c.fetch(h.fetch_request({}))
                with self.assertRaises(ttypes.LookupFailed):
                    c.fetch(h.fetch_request({'b': ttypes.LookupCall(lookup='broken',
                                                                    critical=True)}))
                r = c.fetch(h.fetch_request({'slow': h.nap_call(2000)}, deadline_ms=50))
                self.assertEqual(r.results['slow'].error.kind, EK.TIMEOUT)
                ok += 1
            finally:
                t.close()
            # An unknown method: a TApplicationException, counted under method="other".
            sock = h.socket.create_connection((server.host, server.port), timeout=5)
            try:
                h.send_all(sock, h.call_bytes('frobnicate', 1))
                h.read_frame(sock)
            finally:
                sock.close()

            families, s = metrics(server)
            req = 'evdal_requests_total'
            self.assertEqual(value(s, req, method='ping', outcome='ok'), 3)
            self.assertEqual(value(s, req, method='lookups', outcome='ok'), 1)
            self.assertEqual(value(s, req, method='fetch', outcome='ok'), ok)
            self.assertEqual(value(s, req, method='fetch', outcome='invalid'), 1)
            self.assertEqual(value(s, req, method='fetch', outcome='failed'), 1)
            self.assertEqual(value(s, req, method='other', outcome='app_error'), 1)
            self.assertEqual(families['evdal_requests'].type, 'counter')

            calls = 'evdal_lookup_calls_total'
            self.assertEqual(value(s, calls, lookup='person', outcome='ok'), 5)
            self.assertEqual(value(s, calls, lookup='nap', outcome='ok'), 5)
            self.assertEqual(value(s, calls, lookup='nap', outcome='timeout'), 1)
            self.assertEqual(value(s, calls, lookup='broken', outcome='backend'), 6)
            errors = 'evdal_call_errors_total'
            self.assertEqual(value(s, errors, kind='unknown_lookup'), 5)
            self.assertEqual(value(s, errors, kind='backend'), 6)
            self.assertEqual(value(s, errors, kind='timeout'), 1)

            # Histograms: cumulative buckets, +Inf equal to the count, sum plausible.
            fetch = families['evdal_fetch_duration_seconds']
            self.assertEqual(fetch.type, 'histogram')
            buckets = [(float(x.labels['le']), x.value) for x in fetch.samples
                       if x.name.endswith('_bucket')]
            self.assertEqual([b for b, _ in buckets], sorted(b for b, _ in buckets))
            self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
            count = value(s, 'evdal_fetch_duration_seconds_count')
            self.assertEqual(buckets[-1][1], count)
            self.assertEqual(count, ok + 1)  # the failed fetch too; invalid ones are not timed
            naps = value(s, 'evdal_lookup_duration_seconds_sum', lookup='nap')
            self.assertGreater(naps, 0.025 + 0.04)  # five 5 ms naps and one cut at 50 ms
            self.assertLess(naps, 2.0)

            self.assertEqual(value(s, 'evdal_sqlite_workers', database='db'), 2)
            self.assertEqual(value(s, 'evdal_sqlite_statements_total', database='db'), 5)
            self.assertEqual(value(s, 'evdal_lookup_queue_depth', lookup='person'), 0)
            self.assertEqual(value(s, 'evdal_inflight_requests'), 0)
            self.assertEqual(value(s, 'evdal_io_loops'), 2)
            for loop in ('1', '2'):
                self.assertIsNotNone(value(s, 'evdal_loop_lag_seconds', loop=loop))
            self.assertEqual(value(s, 'evdal_lookups'), 3)

    def test_gauges_follow_live_state(self):
        with AdminServer(admin_config()) as server:
            held = [h.client(server) for _ in range(3)]
            try:
                _, s = metrics(server)
                self.assertEqual(value(s, 'evdal_connections'), 3)
                # A fetch in flight is counted while it runs.
                c, _ = held[0]
                th = threading.Thread(target=c.fetch,
                                      args=(h.fetch_request({'n': h.nap_call(800)}),))
                th.start()
                deadline = time.monotonic() + 5
                # The two gauges are read one after the other from the admin thread
                # while the IO loop admits the fetch and then starts its call, so a
                # scrape may fall between the two; wait until one shows both.
                while True:
                    _, s = metrics(server)
                    live = (value(s, 'evdal_inflight_requests'),
                            value(s, 'evdal_backend_calls_outstanding'))
                    if live == (1, 1):
                        break
                    self.assertLessEqual(max(live), 1)
                    self.assertLess(time.monotonic(), deadline, 'in-flight fetch never counted')
                    time.sleep(0.02)
                th.join()
            finally:
                for _, t in held:
                    t.close()
            deadline = time.monotonic() + 5
            while value(metrics(server)[1], 'evdal_connections') != 0:
                self.assertLess(time.monotonic(), deadline, 'closed connections still counted')
                time.sleep(0.02)

    def test_health_lookups_and_traces(self):
        with AdminServer(admin_config()) as server:
            status, hdrs, body = server.admin_get('/health')
            self.assertEqual((status, body), (200, 'ready\n'))
            status, hdrs, body = server.admin_get('/lookups')
            self.assertEqual(status, 200)
            self.assertEqual(hdrs['Content-Type'], 'application/json')
            lookups = {x['name']: x for x in json.loads(body)}
            self.assertEqual(set(lookups), {'nap', 'broken', 'person'})
            self.assertEqual(lookups['person']['backend'], 'sqlite:db')
            self.assertEqual(lookups['person']['params'], ['id'])

            c, t = h.client(server)
            try:
                c.fetch(h.fetch_request({'quiet': h.nap_call(1)}))  # not traced
                c.fetch(h.fetch_request({'a': h.nap_call(30), 'b': h.nap_call(90),
                                         'x': ttypes.LookupCall(lookup='broken')},
                                        request_id='traced-1', trace=True, principal='alice'))
            finally:
                t.close()
            status, _, body = server.admin_get('/traces.json')
            self.assertEqual(status, 200)
            traces = json.loads(body)
            self.assertEqual(traces['traced_total'], 1)
            self.assertEqual([x['request_id'] for x in traces['recent']], ['traced-1'])
            tr = traces['slowest'][0]
            self.assertEqual(tr['principal'], 'alice')
            self.assertEqual(tr['outcome'], 'ok')
            spans = {x['key']: x for x in tr['spans']}
            self.assertEqual(set(spans), {'a', 'b', 'x'})
            for key, ms in (('a', 30), ('b', 90)):
                took = (spans[key]['end_us'] - spans[key]['start_us']) / 1000
                self.assertGreaterEqual(took, ms * 0.95)
                self.assertLess(took, ms + h.scaled(60))
                self.assertEqual(spans[key]['backend'], 'delay:nap')
            self.assertEqual(spans['x']['error_kind'], EK.BACKEND)
            self.assertGreaterEqual(tr['duration_us'], spans['b']['end_us'])

            status, hdrs, body = server.admin_get('/traces')
            self.assertEqual(status, 200)
            self.assertTrue(hdrs['Content-Type'].startswith('text/html'))
            self.assertIn('data-request-id="traced-1"', body)
            self.assertEqual(server.admin_get('/nothing-here')[0], 404)
            # evhttp refuses methods outside GET/HEAD with 501 Not Implemented.
            self.assertEqual(server.admin_get('/metrics', method='POST')[0], 501)

    def test_health_says_draining_during_shutdown(self):
        with AdminServer(admin_config(shutdown_timeout_ms=5000)) as server:
            c, t = h.client(server)
            th = threading.Thread(target=lambda: c.fetch(h.fetch_request({'n': h.nap_call(1500)})))
            th.start()
            server.wait_metric('evdal_inflight_requests', 1)  # in flight when the signal comes
            server.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 3
            while True:
                status, _, body = server.admin_get('/health')
                if status == 503:
                    break
                self.assertLess(time.monotonic(), deadline, 'health never said draining')
                time.sleep(0.05)
            self.assertEqual(body, 'draining\n')
            th.join()
            t.close()
            self.assertEqual(server.wait(10), 0)


SLOW_LOOKUPS = h.NAP_LOOKUP + """
[lookup endless]
database = slow
sql = WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c
max_concurrent = 16
# Identical calls must each load a worker here, not share one execution.
coalesce = false

[database slow]
path = @TMPDIR@/people.db
workers = 2
"""


def wait_metrics(server, check, timeout=10.0, what='metrics'):
    """Scrapes until check(samples) is true; returns those samples."""
    deadline = time.monotonic() + timeout
    while True:
        _, s = metrics(server)
        if check(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError('%s never seen; last scrape: %r' % (
                what, {k: v for k, v in s.items() if 'sqlite' in k[0] or 'connections' in k[0]}))
        time.sleep(0.02)


class WorkerMetricsTest(unittest.TestCase):
    """The values of the SQLite pool's gauges and counters, and of the connection counters,
    against load this test makes: statements that never end by themselves (each stopped at
    its call's timeout) on a database of two workers."""

    def test_sqlite_workers_busy_queue_and_busy_seconds(self):
        calls, timeout_ms = 5, 2500
        with AdminServer(h.config(lookups=SLOW_LOOKUPS, admin_listen='127.0.0.1:0',
                                  workers=8)) as server:
            _, s = metrics(server)
            db = {'database': 'slow'}
            self.assertEqual(value(s, 'evdal_sqlite_workers', **db), 2)
            self.assertEqual(value(s, 'evdal_sqlite_workers_busy', **db), 0)
            self.assertEqual(value(s, 'evdal_sqlite_queue_depth', **db), 0)
            self.assertEqual(value(s, 'evdal_sqlite_busy_seconds_total', **db), 0)
            results = []

            def one():
                c, t = h.client(server)
                try:
                    r = c.fetch(h.fetch_request({'e': ttypes.LookupCall(
                        lookup='endless', timeout_ms=timeout_ms)}))
                    results.append(r.results['e'].error.kind)
                finally:
                    t.close()
            threads = [threading.Thread(target=one) for _ in range(calls)]
            t0 = time.monotonic()
            for th in threads:
                th.start()
            # Both workers run a statement; the other three wait for one.
            s = wait_metrics(server, lambda s: (
                value(s, 'evdal_sqlite_workers_busy', **db),
                value(s, 'evdal_sqlite_queue_depth', **db)) == (2, calls - 2),
                what='2 busy workers and %d queued statements' % (calls - 2))
            self.assertLess(time.monotonic() - t0, timeout_ms / 1000 * 0.9,
                            'the load was seen too late to mean anything')
            mid = value(s, 'evdal_sqlite_busy_seconds_total', **db)
            for th in threads:
                th.join(30)
            self.assertEqual(results, [EK.TIMEOUT] * calls)
            # Idle again; the busy time is that of the two statements that ran (each until its
            # call's timeout stopped it), the queued ones timed out without a worker.
            s = wait_metrics(server, lambda s: (
                value(s, 'evdal_sqlite_workers_busy', **db),
                value(s, 'evdal_sqlite_queue_depth', **db)) == (0, 0), what='idle workers')
            busy = value(s, 'evdal_sqlite_busy_seconds_total', **db)
            self.assertGreater(busy, mid)
            self.assertGreater(busy, 2 * timeout_ms / 1000 * 0.8)
            self.assertLess(busy, calls * timeout_ms / 1000 + h.scaled(5))
            # A counter: it only goes up.
            _, s = metrics(server)
            self.assertEqual(value(s, 'evdal_sqlite_busy_seconds_total', **db), busy)

    def test_connections_accepted_and_refused(self):
        with AdminServer(admin_config(max_connections=3)) as server:
            _, s = metrics(server)
            self.assertEqual(value(s, 'evdal_connections_accepted_total'), 0)
            self.assertEqual(value(s, 'evdal_connections_refused_total'), 0)
            held = [h.client(server) for _ in range(3)]
            try:
                for c, _ in held:
                    self.assertEqual(c.ping(), 'pong')
                # Two more: over max_connections, closed at once.
                for _ in range(2):
                    sock = server.raw_socket()
                    try:
                        h.send_all(sock, h.ping_bytes(1))
                        closed, replies = h.wait_closed(sock, timeout=5)
                        self.assertTrue(closed)
                        self.assertEqual(replies, [])
                    finally:
                        sock.close()
                s = wait_metrics(server, lambda s: value(
                    s, 'evdal_connections_refused_total') == 2, what='2 refused connections')
                self.assertEqual(value(s, 'evdal_connections_accepted_total'), 3)
                self.assertEqual(value(s, 'evdal_connections'), 3)
            finally:
                for _, t in held:
                    t.close()
            wait_metrics(server, lambda s: value(s, 'evdal_connections') == 0,
                         what='no open connection')
            # A place is free again: accepted, not refused.
            c, t = h.client(server)
            try:
                self.assertEqual(c.ping(), 'pong')
            finally:
                t.close()
            _, s = metrics(server)
            self.assertEqual(value(s, 'evdal_connections_accepted_total'), 4)
            self.assertEqual(value(s, 'evdal_connections_refused_total'), 2)


class SecretTest(unittest.TestCase):

    def test_secret_guards_everything_but_health(self):
        secret = 's3cret-' + 'x' * 20
        server = AdminServer(admin_config(admin_secret_file='@TMPDIR@/admin.secret'))
        with open(os.path.join(server.tmpdir, 'admin.secret'), 'w') as f:
            f.write(secret + '\n')
        with server:
            self.assertIn('secret required', server.log_text())
            self.assertEqual(server.admin_get('/health')[0], 200)
            for path in ('/metrics', '/lookups', '/traces', '/traces.json'):
                status, hdrs, _ = server.admin_get(path)
                self.assertEqual(status, 401, path)
                self.assertIn('Bearer', hdrs.get('WWW-Authenticate', ''))
                self.assertEqual(server.admin_get(path, headers={
                    'Authorization': 'Bearer ' + secret[:-1] + 'y'})[0], 401)
                self.assertEqual(server.admin_get(path, headers={
                    'Authorization': 'Bearer ' + secret + 'z'})[0], 401)
                self.assertEqual(server.admin_get(path, headers={
                    'Authorization': 'Bearer ' + secret})[0], 200, path)
            _, s = metrics(server, Authorization='Bearer ' + secret)
            self.assertIsNotNone(value(s, 'evdal_io_loops'))

    def test_bad_secret_file_stops_startup(self):
        tmp = tempfile.mkdtemp(prefix='evdal-secret-')
        try:
            short = os.path.join(tmp, 'short')
            with open(short, 'w') as f:
                f.write('tooshort\n')
            for path, why in ((os.path.join(tmp, 'absent'), 'No such file'),
                              (short, 'at least 16 characters')):
                conf = os.path.join(tmp, 'evdal.conf')
                with open(conf, 'w') as f:
                    f.write(h.config(admin_listen='127.0.0.1:0', admin_secret_file=path))
                r = h.run_evdal(['--config', conf, '--check-config'])
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertRegex(r.stderr, r'evdal\.conf:\d+: \[server\] admin_secret_file: ')
                self.assertIn(why, r.stderr)
        finally:
            h.shutil.rmtree(tmp)

    def test_admin_port_in_use_stops_startup(self):
        busy = h.socket.socket()
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        try:
            port = busy.getsockname()[1]
            server = h.Server(h.config(admin_listen='127.0.0.1:%d' % port))
            with self.assertRaises(h.ServerError) as e:
                with server:
                    pass
            self.assertIn('cannot listen on 127.0.0.1:%d' % port, str(e.exception))
        finally:
            busy.close()


if __name__ == '__main__':
    unittest.main()

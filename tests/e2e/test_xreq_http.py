"""Across requests (issue 17) against a real HTTP service that counts its requests
(tests/e2e/http_upstream.py, with a /flaky path added here): 200 clients fetching the same
user at once make one upstream request; 503 is retried and 404 is not; an upstream failing
opens the breaker, fetches then fail fast and the upstream sees at most the probes, and
service returns when it recovers. (The tail experiment runs against the delay backend in
test_xreq.HedgeTest: against Python's http.server on a loaded machine the upstream's own
latency spread hides the gain.)"""
import re
import threading
import time
import unittest
from urllib.parse import urlsplit

import evdal_harness as h
from evdal_harness import ttypes
import http_upstream
from http_upstream import UpstreamServer

EK = ttypes.ErrorKind
V = ttypes.Value


class FlakyHandler(http_upstream.Handler):
    """/flaky answers 500 while the server's `down` is set, else 200."""

    def _route(self):
        url = urlsplit(self.path)
        if url.path == '/flaky':
            if self.server.down:
                self._json({'error': 'down'}, status=500)
            else:
                self._json({'ok': True})
        else:
            super()._route()


LOOKUPS = """
[upstream svc]
backend = http
base_url = {base}
connections = 8

[upstream flaky_svc]
backend = http
base_url = {base}
connections = 4
breaker = on
breaker_min_calls = 6
breaker_open_ms = 2000
breaker_probes = 2

[lookup user]
upstream = svc
get = /slow?ms=1000&user={{user_id}}

[lookup unavailable]
upstream = svc
get = /status/503
retries = 2

[lookup not_found]
upstream = svc
get = /status/404
retries = 2

[lookup flaky]
upstream = flaky_svc
get = /flaky
"""


def labelled(server, name, **labels):
    status, _, body = server.admin_get('/metrics')
    assert status == 200
    want = ','.join('%s="%s"' % kv for kv in sorted(labels.items()))
    for m in re.finditer(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), body, re.M):
        if ','.join(sorted(m.group(1).split(','))) == want:
            return float(m.group(2))
    return None


class XreqHttpTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = UpstreamServer()
        cls.up.RequestHandlerClass = FlakyHandler
        cls.up.down = False
        cls.up.start()
        cls.server = h.Server(h.config(lookups=LOOKUPS.format(base='http://127.0.0.1:%d'
                                                              % cls.up.port),
                                       admin_listen='127.0.0.1:0', max_connections=1000,
                                       max_queue_ms=0))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)
        cls.up.stop()

    def requests(self, pattern):
        with self.up.lock:
            return sum(1 for path, _ in self.up.requests if re.search(pattern, path))

    def fetch(self, calls, **ctx):
        c, t = h.client(self.server)
        try:
            return c.fetch(h.fetch_request(calls, **ctx))
        finally:
            t.close()

    def test_200_clients_one_upstream_request(self):
        clients = [h.client(self.server) for _ in range(200)]
        barrier = threading.Barrier(len(clients))
        results, errors = [], []

        def one(c):
            try:
                barrier.wait(30)
                r = c.fetch(h.fetch_request({'u': ttypes.LookupCall(
                    lookup='user', params={'user_id': V(int_value=42)})}, trace=True))
                results.append(r.results['u'])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=one, args=(c,)) for c, _ in clients]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            for _, t in clients:
                t.close()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 200)
        self.assertTrue(all(r.error is None for r in results), results[:3])
        self.assertEqual(self.requests(r'user=42'), 1)
        self.assertEqual(sum(1 for r in results if r.span.marks == ['coalesced']), 199)

    def test_503_is_retried_404_is_not(self):
        r = self.fetch({'x': ttypes.LookupCall(lookup='unavailable')}, trace=True).results['x']
        self.assertEqual(r.error.kind, EK.BACKEND)
        self.assertIn('HTTP 503', r.error.message)
        self.assertEqual(r.span.marks, ['retried:2'])
        self.assertEqual(self.requests(r'^/status/503'), 3)
        r = self.fetch({'x': ttypes.LookupCall(lookup='not_found')}, trace=True).results['x']
        self.assertIn('HTTP 404', r.error.message)
        self.assertFalse(r.span.marks)
        self.assertEqual(self.requests(r'^/status/404'), 1)

    def test_breaker_against_a_failing_upstream(self):
        call = {'f': ttypes.LookupCall(lookup='flaky')}
        self.up.down = True
        try:
            for _ in range(6):
                self.assertIn('HTTP 500', self.fetch(call).results['f'].error.message)
            self.assertIsNotNone(self.server.wait_log(r'breaker flaky_svc: closed -> open'))
            before = self.requests(r'^/flaky')
            t0 = time.monotonic()
            for _ in range(30):
                r = self.fetch(call).results['f']
                self.assertIn(r.error.message, ('circuit open for flaky_svc',
                                                'upstream flaky_svc: GET /flaky answered '
                                                'HTTP 500'))
            self.assertLess(time.monotonic() - t0, 10)
            # Fast failures: the upstream saw at most the probes of one half-open spell.
            self.assertLessEqual(self.requests(r'^/flaky') - before, 2)
            self.assertRegex(self.server.admin_get('/health')[2],
                             r'breaker flaky_svc (open|half_open)\n')
        finally:
            self.up.down = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.fetch(call).results['f'].error is None:
                break
            time.sleep(0.05)
        self.assertIsNone(self.fetch(call).results['f'].error)
        self.assertIsNotNone(self.server.wait_log(r'breaker flaky_svc: half_open -> closed'))
        self.assertEqual(self.server.admin_get('/health')[2], 'ready\n')


if __name__ == '__main__':
    unittest.main()

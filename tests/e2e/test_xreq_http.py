"""Across requests (issue 17) against a real HTTP service that counts its requests
(tests/e2e/http_upstream.py, with a /flaky path added here): 200 clients fetching the same
user at once make one upstream request; 503 is retried and 404 is not; an upstream failing
opens the breaker, fetches then fail fast and the upstream sees at most the probes, and
service returns when it recovers. (The tail experiment runs against the delay backend in
test_xreq.HedgeTest: against Python's http.server on a loaded machine the upstream's own
latency spread hides the gain.)"""
import email.utils
import re
import socket
import threading
import time
import unittest
from urllib.parse import parse_qs, urlsplit

import evdal_harness as h
from evdal_harness import ttypes
import http_upstream
from http_upstream import UpstreamServer

EK = ttypes.ErrorKind
V = ttypes.Value


class FlakyHandler(http_upstream.Handler):
    """/flaky answers 500 while the server's `down` is set, else 200.
    /once?key=K&status=S fails the first request of each K (S: an HTTP status, or `drop` to
    close the connection without answering), then answers 200 (with `close=1`, on a
    connection closed after it).
    /limited?key=K&after=A answers the first request of each K 429 with `Retry-After: A`
    (`A` = `dateN` sends the HTTP date N seconds from now, `none` no header), then 200.
    The arrival times of each key's requests are kept in `server.times`."""

    def _route(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        key = q.get('key', [''])[0]
        if url.path in ('/once', '/limited'):
            with self.server.lock:
                self.server.times.setdefault(url.path + key, []).append(time.monotonic())
                first = len(self.server.times[url.path + key]) == 1
        if url.path == '/flaky':
            if self.server.down:
                self._json({'error': 'down'}, status=500)
            else:
                self._json({'ok': True})
        elif url.path == '/once' and first:
            status = q['status'][0]
            if status == 'drop':
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            else:
                self._json({'error': 'once'}, status=int(status))
        elif url.path == '/once' and q.get('close'):
            # Every connection of this path answers once: none is reused, so libcurl never
            # sends a request again by itself (see the kept-alive test).
            self.close_connection = True
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header('Connection', 'close')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif url.path == '/limited' and first:
            after = q['after'][0]
            if after.startswith('date'):
                after = email.utils.formatdate(time.time() + int(after[4:]), usegmt=True)
            self.send_response(429)
            if after != 'none':
                self.send_header('Retry-After', after)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', '2')
            self.end_headers()
            self.wfile.write(b'{}')
        elif url.path in ('/once', '/limited'):
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

[upstream one]
backend = http
base_url = {base}
connections = 1

[upstream nowhere]
backend = http
base_url = http://127.0.0.1:{closed_port}

[lookup once]
upstream = closing
get = /once?key={{key}}&status={{status}}&close=1
retries = 1

[upstream closing]
backend = http
base_url = {base}

[lookup once_kept_alive]
upstream = one
get = /once?key={{key}}&status=drop

[lookup warm_one]
upstream = one
get = /items?n=1

[lookup limited]
upstream = svc
get = /limited?key={{key}}&after={{after}}
retries = 1
timeout_ms = {limited_ms}

[lookup refused]
upstream = nowhere
get = /items?n=1
retries = 1
"""

# The deadline of lookup `limited`: room for a Retry-After of 2 s, not for one of 30 s.
LIMITED_MS = 5000


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
        cls.up.times = {}
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        closed_port = probe.getsockname()[1]
        probe.close()   # nothing listens there: connections are refused
        lookups = LOOKUPS.format(base='http://127.0.0.1:%d' % cls.up.port,
                                 closed_port=closed_port,
                                 limited_ms=int(LIMITED_MS * h.TIME_SCALE))
        cls.server = h.Server(h.config(lookups=lookups,
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

    def call(self, lookup, **params):
        """One traced call of `lookup` with text params: (result, seconds it took)."""
        t0 = time.monotonic()
        r = self.fetch({'x': ttypes.LookupCall(
            lookup=lookup, params={k: V(text_value=v) for k, v in params.items()})},
            trace=True).results['x']
        return r, time.monotonic() - t0

    def times(self, path, key):
        with self.up.lock:
            return list(self.up.times.get(path + key, []))

    def retries_metric(self, lookup):
        return labelled(self.server, 'evdal_lookup_retries_total', lookup=lookup)

    def test_retryable_statuses_and_connections(self):
        # 502, 504 and a connection closed without an answer are retried (and the retry
        # succeeds); the upstream sees each key twice. (Every connection of lookup `once`
        # is new, so the lost one is not one that libcurl sends again by itself.)
        for status in ('502', '504', 'drop'):
            r, _ = self.call('once', key='k' + status, status=status)
            self.assertIsNone(r.error, status)
            self.assertEqual(r.span.marks, ['retried:1'], status)
            self.assertEqual(len(self.times('/once', 'k' + status)), 2, status)
        # A 4xx is final.
        r, _ = self.call('once', key='k400', status='400')
        self.assertIn('HTTP 400', r.error.message)
        self.assertFalse(r.span.marks)
        self.assertEqual(len(self.times('/once', 'k400')), 1)
        # A refused connection is retried, and fails again.
        r, _ = self.call('refused')
        self.assertEqual(r.error.kind, EK.BACKEND)
        self.assertEqual(r.span.marks, ['retried:1'])

    def test_429_retry_after_seconds_is_waited_for(self):
        before = self.retries_metric('limited')
        r, _ = self.call('limited', key='s', after='1')
        self.assertIsNone(r.error)
        self.assertEqual(r.span.marks, ['retried:1'])
        first, second = self.times('/limited', 's')
        # max(backoff, Retry-After): the backoff is at most 250 ms, the upstream said 1 s.
        self.assertGreaterEqual(second - first, 1.0)
        self.assertEqual(self.retries_metric('limited'), before + 1)

    def test_429_retry_after_date_is_waited_for(self):
        r, _ = self.call('limited', key='d', after='date2')
        self.assertIsNone(r.error)
        self.assertEqual(r.span.marks, ['retried:1'])
        first, second = self.times('/limited', 'd')
        # A date has a resolution of one second: 2 s from now is at least 1 s from now.
        self.assertGreaterEqual(second - first, 1.0)

    def test_429_retry_after_past_the_deadline_is_not_retried(self):
        for key, after in (('late', '30'), ('late_date', 'date30'), ('no_header', 'none')):
            r, took = self.call('limited', key=key, after=after)
            self.assertIn('HTTP 429', r.error.message, key)
            self.assertFalse(r.span.marks, key)
            self.assertEqual(len(self.times('/limited', key)), 1, key)
            # Answered at once, not after waiting for the deadline.
            self.assertLess(took, LIMITED_MS * h.TIME_SCALE / 1000.0 / 2, key)

    def test_curl_resend_on_a_dead_kept_alive_connection_is_no_retry(self):
        # Upstream `one` has one connection: warm it, then the upstream drops the next request
        # sent on it unanswered. libcurl sends it again by itself on a new connection, which
        # the upstream answers: the fetch succeeds with no retry counted or marked (the
        # lookup has retries = 0 and would fail on a failure).
        # One client connection, so both fetches run on the same IO loop, whose HTTP client
        # keeps the warm connection.
        c, t = h.client(self.server)
        try:
            self.assertIsNone(c.fetch(h.fetch_request(
                {'x': ttypes.LookupCall(lookup='warm_one')})).results['x'].error)
            connections = self.up.stats()[0]
            r = c.fetch(h.fetch_request({'x': ttypes.LookupCall(
                lookup='once_kept_alive', params={'key': V(text_value='ka')})},
                trace=True)).results['x']
        finally:
            t.close()
        self.assertIsNone(r.error, r.error and r.error.message)
        self.assertFalse(r.span.marks)
        self.assertEqual(len(self.times('/once', 'ka')), 2)
        self.assertEqual(self.up.stats()[0], connections + 1)
        self.assertEqual(self.retries_metric('once_kept_alive'), 0)

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

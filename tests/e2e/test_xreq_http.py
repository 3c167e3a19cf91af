"""Across requests (issue 17) against a real HTTP service that counts its requests
(tests/e2e/http_upstream.py, with /flaky, /once and /limited paths added here): 200 clients
fetching the same user at once make one upstream request; 502, 503, 504, a lost or refused
connection and a 429 whose Retry-After falls within the deadline are retried (after the
Retry-After), a 4xx or a 429 past the deadline is not, and libcurl's own re-send on a dead
kept-alive connection is no retry; an upstream failing opens the breaker, fetches then fail
fast and the upstream sees at most the probes, and service returns when it recovers. The
tail experiment (HedgeHttpTest) runs against tests/e2e/http_tail_upstream.py."""
import email.utils
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request
from urllib.parse import parse_qs, urlsplit

import evdal_harness as h
from evdal_harness import ttypes
import http_tail_upstream
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

    def test_429_retry_after_far_future_date_is_not_retried(self):
        # The year 300000 is past the deadline like any other late date. In microseconds it
        # would not fit a 64-bit integer: wrapped, it came out negative, a 429 that said "come
        # back in 298,000 years" was retried at once and the fetch succeeded.
        far = 'Sat, 01 Jan 300000 00:00:00 GMT'
        r, _ = self.call('limited', key='far_date', after=far)
        self.assertIsNotNone(r.error, 'the 429 was retried')
        self.assertIn('HTTP 429', r.error.message)
        self.assertFalse(r.span.marks)
        self.assertEqual(len(self.times('/limited', 'far_date')), 1)

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


class TailUpstream:
    """tests/e2e/http_tail_upstream.py in a process of its own: every 50th request of each
    path answers after 200 ms, the others at once."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), 'http_tail_upstream.py'),
             '--tail-every', '50', '--tail-ms', '200'], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r'listening on (\S+)', line)
        if m is None:
            self.proc.kill()
            raise AssertionError('the tail upstream did not start: %r' % line)
        self.base = 'http://' + m.group(1)
        return self

    def stats(self):
        """{path: [requests, slow ones]}, as the upstream counted them."""
        with urllib.request.urlopen(self.base + '/stats', timeout=10) as r:
            return json.loads(r.read())

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(10)


def hedged_p99_bound(tail_ms, plain_p99_ms):
    """The hedged p99 a quiet round must reach: a fifth of the tail (issue 17's 5x) in the
    normal build. Under ASan or TSan evdal's own latency is several times longer, and so is
    the p95 a hedge waits for; the mechanism is checked there (every fetch answered, none past
    its deadline, under 10% extra requests, a p99 clearly below the plain one), the 5x in the
    normal build."""
    return plain_p99_ms * 0.8 if h.SANITIZED else tail_ms / 5


class HedgeHttpTest(h.EvdalTestCase):
    """Against a real HTTP upstream that counts its requests, 2% of them answering in 200 ms:
    `hedge = p95` cuts the p99 of fetches at least 5x for under 10% extra upstream requests,
    and no fetch outlives its deadline.

    Sound on a busy two-core machine because: both settings run at the same time, side by
    side (one evdal-bench each, open loop at a rate far below what the machine can do), so
    whatever else the machine does weighs on both alike; the load comes from C (evdal-bench),
    not from Python threads whose GIL turns would add their own tail; the upstream is one
    asyncio thread in a process of its own (http_tail_upstream.py says why not the threaded
    http_upstream.py); and its slow tail is decided per request, so a hedge is slow only as
    often as any request is. Each run has RATE * SECONDS fetches: the p99 is the 1% slowest,
    of which the plain run's are all in the 2% tail.

    The 5x is measured against the tail itself (200 ms), not against the plain run's p99,
    which the machine's other work can only make longer: a hedged p99 of 40 ms or less is
    the claim. A third lookup without tail or hedging (`control`) runs beside them: its p99
    is what the machine alone does to a fetch. A round whose control p99 is over a tenth of
    the tail cannot show the claim (a hedge waits for the p95 and then takes a fast fetch's
    time: two spans of that noise), and is measured again, for up to BUDGET_S seconds, at
    least MIN_ROUNDS times (each after a warm-up of its own, which must be as quiet: the p95
    a hedge waits for covers it). The first round quiet enough
    decides, and must show all of the claim: no error, no fetch past its deadline, the p99 and the extra requests;
    if no round was quiet enough, the test is skipped, saying so: it has not proven anything
    on that machine."""

    RATE, SECONDS, CONNECTIONS, DEADLINE_MS, TAIL_MS = 250, 8, 64, 1000, 200
    MIN_ROUNDS, BUDGET_S = 3, 200
    # Each round first runs this long unmeasured, at the same rate: the p95 that hedging waits
    # for is that of the last 10 s, and must be the round's own, not the previous round's
    # (after a round the machine made slow, a stale p95 of 300 ms hedged nothing).
    WARMUP_S = 10

    def bench(self, server, lookup, seconds, out, warmup=0):
        argv = [os.path.join(os.environ['EVDAL_BUILD_DIR'], 'evdal-bench'), '--port',
                str(server.port), '-c', str(self.CONNECTIONS), '--rate', str(self.RATE),
                '-d', str(seconds), '-w', str(warmup), '--json', '--call', lookup,
                '--deadline-ms', str(self.DEADLINE_MS)]
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=warmup + seconds + 60)
        if r.returncode != 0:
            raise AssertionError('evdal-bench failed: %s' % r.stderr)
        out[lookup] = json.loads(r.stdout)

    def side_by_side(self, server, seconds):
        out = {}
        threads = [threading.Thread(target=self.bench, args=(server, lookup, seconds, out))
                   for lookup in ('plain', 'hedged', 'control')]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(set(out), {'plain', 'hedged', 'control'})
        return out

    def calls(self, server, lookup):
        """Executions of the lookup by outcome, as evdal counted them."""
        status, _, body = server.admin_get('/metrics')
        self.assertEqual(status, 200)
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^evdal_lookup_calls_total\{lookup="%s",outcome="(\w+)"\} (\S+)$' % lookup,
            body, re.M)}

    def one_round(self, server, up):
        """Both settings side by side, and the control: (whether the round was quiet enough
        to measure, whether it shows the claim, what it measured). A warm-up of all three
        runs first, unmeasured; then the measured run, whose percentiles are the bench's and
        whose fetches, errors and upstream requests are what evdal and the upstream counted
        between the two (an error of the warm-up, where the machine may have stalled a fetch
        for a second, is reported but is not the round's)."""
        warm = {'up': up.stats(), 'plain': self.calls(server, 'plain'),
                'hedged': self.calls(server, 'hedged')}
        warm_out = self.side_by_side(server, self.WARMUP_S)
        before = {'up': up.stats(), 'plain': self.calls(server, 'plain'),
                  'hedged': self.calls(server, 'hedged')}
        warm_errors = {k: sum(v for o, v in before[k].items() if o != 'ok')
                       - sum(v for o, v in warm[k].items() if o != 'ok')
                       for k in ('plain', 'hedged')}
        out = self.side_by_side(server, self.SECONDS)
        after = {'up': up.stats(), 'plain': self.calls(server, 'plain'),
                 'hedged': self.calls(server, 'hedged')}
        m = {}
        for lookup in ('plain', 'hedged'):
            counted = {k: after[lookup][k] - before[lookup].get(k, 0) for k in after[lookup]}
            m[lookup] = {
                'fetches': counted.pop('ok', 0), 'errors': sum(counted.values()),
                'by_outcome': {k: int(v) for k, v in counted.items() if v},
                'requests': after['up']['/' + lookup][0]
                - before['up'].get('/' + lookup, [0, 0])[0],
                'slow': after['up']['/' + lookup][1] - before['up'].get('/' + lookup, [0, 0])[1],
                'p50': out[lookup]['p50_ms'], 'p99': out[lookup]['p99_ms'],
                'max': out[lookup]['max_ms']}
        # The hedges of the measured run wait for the p95 of the last 10 s, the warm-up's
        # included: a stall there (a busy machine) raises it, and the hedges go out that late
        # however quiet the measured run. The round is quiet only when the machine was over
        # the whole window (seen once: control p99 5.3 ms, hedged p99 131.6 ms).
        quiet = max(out['control']['p99_ms'], warm_out['control']['p99_ms']) <= self.TAIL_MS / 10
        msg = 'control p50 %.1f ms, p99 %.1f ms (warm-up p99 %.1f ms); ' % (
            out['control']['p50_ms'], out['control']['p99_ms'],
            warm_out['control']['p99_ms']) + '; '.join(
                '%s: %d fetches, errors %s, %d upstream requests (%d slow), p50 %.1f ms, p99 '
                '%.1f ms, max %.1f ms' % (k, v['fetches'], v['by_outcome'] or 0, v['requests'],
                                         v['slow'], v['p50'], v['p99'], v['max'])
                for k, v in m.items()) + '; warm-up errors %s' % warm_errors
        # Without hedging no fetch went to the upstream twice (one that timed out waiting for
        # a connection never went), and the tail is there.
        self.assertLessEqual(m['plain']['requests'], m['plain']['fetches'] + m['plain']['errors'],
                             msg)
        self.assertGreater(m['plain']['p99'], self.TAIL_MS, msg)
        # The claim: every fetch answered, none past its deadline (as the client saw it), and
        # the hedged p99 at most a fifth of the tail for under 10% extra upstream requests.
        shown = all(v['errors'] == 0 and v['max'] < self.DEADLINE_MS + 100
                    and v['fetches'] > self.RATE * self.SECONDS * 0.5
                    for v in m.values())
        shown = shown and m['plain']['requests'] == m['plain']['fetches']
        shown = shown and (m['hedged']['p99'] <= hedged_p99_bound(self.TAIL_MS, m['plain']['p99'])
                           and m['hedged']['requests'] < m['hedged']['fetches'] * 1.10)
        return quiet, shown, msg

    def test_connections_gauge_counts_what_is_open_after_cancelled_hedges(self):
        """A hedge that loses is cancelled mid-request, and curl 7.88 sometimes closes such a
        connection without its close callback (storage/evd_http.c, EvdHttpSocket). Before,
        evdal_http_connections missed every such close and drifted up (here: 3 against 2
        really open after 60 hedges won; 20 against 14 after the p95 test below). Once the load
        stops, the gauge must equal the connections evdal really has open to the upstream."""
        with TailUpstream() as up, h.Server(h.config(
                lookups=http_tail_upstream.LOOKUPS.format(base=up.base), admin_listen='127.0.0.1:0',
                max_queue_ms=0, max_connections=1000)) as server:
            deadline = time.monotonic() + h.scaled(90)
            while (labelled(server, 'evdal_lookup_hedges_won_total', lookup='hedged') or 0) < 60:
                self.assertLess(time.monotonic(), deadline, 'no hedge won (and cancelled its '
                                'loser) in time')
                self.bench(server, 'hedged', 2, {})
            port = int(up.base.rsplit(':', 1)[1])

            def both():
                gauge = sum(labelled(server, 'evdal_http_connections', upstream=u) or 0
                            for u in ('tail_plain', 'tail_hedged', 'tail_control'))
                return gauge, h.sockets_to(server.pid, port)
            # A hedge's loser may still be closing: poll until the two agree, report both.
            deadline = time.monotonic() + h.scaled(20)
            gauge, really = both()
            while gauge != really and time.monotonic() < deadline:
                time.sleep(0.05)
                gauge, really = both()
            self.assertEqual(gauge, really, 'evdal_http_connections says %d, evdal has %d '
                             'open to the upstream' % (gauge, really))
            self.assertGreater(really, 0)

    def test_p95_hedging_cuts_the_p99_of_fetches_5x(self):
        with TailUpstream() as up, h.Server(h.config(
                lookups=http_tail_upstream.LOOKUPS.format(base=up.base), admin_listen='127.0.0.1:0',
                max_queue_ms=0, max_connections=1000)) as server:
            # Hedging starts once the p95 has 100 attempts and has been computed (each
            # second): load until a hedge went out.
            deadline = time.monotonic() + h.scaled(60)
            while not labelled(server, 'evdal_lookup_hedges_sent_total', lookup='hedged'):
                self.assertLess(time.monotonic(), deadline, 'no hedge was ever sent')
                self.bench(server, 'hedged', 1, {})
            # The first round quiet enough to measure decides: it must show all of the claim.
            seen, until = [], time.monotonic() + self.BUDGET_S
            while True:
                quiet, shown, msg = self.one_round(server, up)
                seen.append(msg)
                print(msg, file=sys.stderr)
                if quiet:
                    self.assertTrue(shown, 'a round quiet enough to measure did not show the '
                                    'claim (a hedged p99 of at most %.0f ms for under 10%% '
                                    'extra requests): %s' % (hedged_p99_bound(
                                        self.TAIL_MS, self.TAIL_MS), msg))
                    break
                if len(seen) >= self.MIN_ROUNDS and time.monotonic() > until:
                    self.skipTest('the machine was never quiet enough to measure a tail of '
                                  '%d ms (the control p99 over %d ms in every round): %s' % (
                                      self.TAIL_MS, self.TAIL_MS / 10, ' | '.join(seen)))
            self.assertGreater(labelled(server, 'evdal_lookup_hedges_won_total',
                                        lookup='hedged'), 0)


if __name__ == '__main__':
    unittest.main()

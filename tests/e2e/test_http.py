"""HTTP/JSON lookups (issue 16): [upstream NAME] backend = http and lookups with a get =
template, against a real HTTP service in the test (tests/e2e/http_upstream.py: Python's
threaded http.server, keep-alive, optionally TLS with a certificate the test makes).

What is checked: JSON to rows through a rows path; params percent-encoded so that they stay in
their path segment or query value; the request context as headers that nothing a client sends
can split; every failure (status, not JSON, absent path, 10 MB bodies with and without a
length, a dropped connection, a refused one, a slow answer) as a typed error within the call's
deadline; keep-alive reuse shown by the service's connection count; TLS verified against a
CA file; cancel; the metrics; --check-config without connecting.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from urllib.parse import parse_qsl, unquote, unquote_to_bytes, urlsplit

import evdal_harness as h
from evdal_harness import ttypes
from http_upstream import UpstreamServer

EK = ttypes.ErrorKind
V = ttypes.Value

LOOKUPS = """
[upstream svc]
backend = http
base_url = {base}
connections = {connections}
max_response_bytes = 1048576
{upstream_extra}

[lookup items]
upstream = svc
get = /items?n={{n}}
rows = data.items
timeout_ms = {timeout}

[lookup echo]
upstream = svc
get = /echo/{{a}}/x?q={{b}}&n={{n}}
rows =
timeout_ms = {timeout}

[lookup ctx]
upstream = svc
get = /echo/ctx
timeout_ms = {timeout}

[lookup get]
upstream = svc
get = /{{what}}?n={{n}}
timeout_ms = {timeout}

[lookup status]
upstream = svc
get = /status/{{code}}
timeout_ms = {timeout}

[lookup missing_path]
upstream = svc
get = /items?n=1
rows = data.nothing

[lookup slow]
upstream = svc
get = /slow?ms={{ms}}
timeout_ms = {slow_timeout}

[lookup slow_long]
upstream = svc
get = /slow?ms={{ms}}
timeout_ms = 10000
""" + h.NAP_LOOKUP


def evdal_config(base, connections=2, upstream_extra='', slow_timeout=300, timeout=10000,
                 **server):
    """`timeout`: the timeout_ms of every lookup but slow (`slow_timeout`) and slow_long; long
    enough for a busy machine, since what these lookups answer does not depend on time. No
    max_queue_ms: on a machine busy enough to hold a loop half a second, a fetch answered
    Overloaded would fail a test that is not about load."""
    server.setdefault('max_queue_ms', 0)
    return h.config(lookups=LOOKUPS.format(base=base, connections=connections,
                                           upstream_extra=upstream_extra,
                                           slow_timeout=slow_timeout, timeout=timeout),
                    admin_listen='127.0.0.1:0', **server)


def call(lookup, **params):
    def value(v):
        if v is None:
            return V(null_value=True)
        if isinstance(v, int):
            return V(int_value=v)
        if isinstance(v, float):
            return V(real_value=v)
        if isinstance(v, bytes):
            return V(blob_value=v)
        return V(text_value=v)
    return ttypes.LookupCall(lookup=lookup, params={k: value(v) for k, v in params.items()})


def cell(v):
    for f in ('int_value', 'real_value', 'text_value', 'blob_value'):
        if getattr(v, f) is not None:
            return getattr(v, f)
    return None


def rows(result):
    if result.error is not None:
        raise AssertionError('lookup failed: %r' % (result.error,))
    return result.table.columns, [[cell(v) for v in r] for r in result.table.rows]


def labelled_metric(server, name, **labels):
    """The sample of `name` with exactly these labels, as a float (None: absent)."""
    status, _, body = server.admin_get('/metrics')
    want = ','.join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.splitlines():
        m = re.match(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), line)
        if m and ','.join(sorted(m.group(1).split(','))) == want:
            return float(m.group(2))
    return None


def wait_metric(server, name, want, timeout=10.0, **labels):
    deadline = time.monotonic() + timeout
    while True:
        got = labelled_metric(server, name, **labels)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def closed_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HttpLookups(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = UpstreamServer().start()
        cls.srv = h.Server(evdal_config('http://127.0.0.1:%d' % cls.up.port)).start()
        cls.c, cls.t = h.client(cls.srv)

    @classmethod
    def tearDownClass(cls):
        cls.t.close()
        cls.srv.stop()
        cls.srv.check_peak_rss()
        cls.up.stop()

    def fetch(self, calls, **ctx):
        return self.c.fetch(h.fetch_request(calls, **ctx)).results

    def test_rows_from_json_through_the_rows_path(self):
        r = self.fetch({'a': call('items', n=3)})['a']
        cols, data = rows(r)
        self.assertEqual(cols, ['id', 'name', 'price', 'tags', 'on_sale'])
        self.assertEqual(data, [[0, 'item 0', 0.0, '["t"]', 1],
                                [1, 'item 1', 1.5, '["t"]', 0],
                                [2, 'item 2', 3.0, '["t"]', 1]])
        # 1.5 is a real, 0 an int: JSON's own distinction
        self.assertIsNotNone(r.table.rows[1][2].real_value)
        self.assertIsNotNone(r.table.rows[1][0].int_value)
        cols, data = rows(self.fetch({'a': call('items', n=0)})['a'])
        self.assertEqual(data, [])

    def test_long_body_mapped_on_a_worker(self):
        # ~400 KB: past the inline limit (8 KiB), mapped off the loop; pings are answered
        # meanwhile.
        import threading
        c2, t2 = h.client(self.srv)
        box = {}
        th = threading.Thread(target=lambda: box.update(r=self.c.fetch(
            h.fetch_request({'a': call('items', n=6000)})).results['a']))
        th.start()
        try:
            while th.is_alive():
                self.assertEqual(c2.ping(), 'pong')
        finally:
            th.join()
            t2.close()
        cols, data = rows(box['r'])
        self.assertEqual(len(data), 6000)
        self.assertEqual(data[5999], [5999, 'item 5999', 8998.5, '["t"]', 0])

    def test_params_stay_inside_their_segment_and_value(self):
        cases = [
            ('a/b?c=d&e f', 'x&q=1#frag', 7),
            ('..', '..', -9223372036854775808),
            ('Zoë 渡辺 🙂', '%2F%00', 0),
            ('', 'tab\there\r\nX-Evil: 1', 1),
        ]
        for a, b, n in cases:
            with self.subTest(a=a, b=b):
                r = self.fetch({'e': call('echo', a=a, b=b, n=n)})['e']
                cols, data = rows(r)
                raw = dict(zip(cols, data[0]))['path']
                url = urlsplit(raw)
                segs = url.path.split('/')
                # /echo/<a>/x: exactly four segments whatever a holds
                self.assertEqual(len(segs), 4, raw)
                self.assertEqual(segs[:2], ['', 'echo'])
                self.assertEqual(segs[3], 'x')
                self.assertEqual(unquote(segs[2]), a)
                q = parse_qsl(url.query, keep_blank_values=True)
                self.assertEqual(q, [('q', b), ('n', str(n))], raw)
                self.assertNotIn(' ', raw)
                self.assertNotIn('#', raw)

    def test_param_text_of_each_type(self):
        for value, text in [(0.1, '0.1'), (1e300, '1e+300'), (-2.5, '-2.5'), (3.0, '3'),
                            (42, '42'), (b'\x00\xff/', '\x00\udcff/'), ('text', 'text')]:
            with self.subTest(value=value):
                cols, data = rows(self.fetch({'e': call('echo', a='p', b=value, n=1)})['e'])
                raw = dict(zip(cols, data[0]))['path']
                got = dict(parse_qsl(urlsplit(raw).query, errors='surrogateescape'))['q']
                self.assertEqual(got, text, raw)

    def test_null_param_is_bad_params(self):
        r = self.fetch({'e': call('echo', a=None, b='x', n=1)})['e']
        self.assertEqual(r.error.kind, EK.BAD_PARAMS)
        self.assertIn('null', r.error.message)

    def test_context_headers_cannot_be_split(self):
        attrs = {'tenant': 'acme', 'evil\r\nX-Injected': 'v\r\nX-Injected: 2',
                 'locale': 'fr_FR', 'naïve': 'ça va %41'}
        rid = 'req-1\r\nX-Injected: 3'
        principal = 'Zoë\nX-Injected: 4'
        r = self.fetch({'c': call('ctx')}, request_id=rid, principal=principal,
                       attributes=attrs)['c']
        cols, data = rows(r)
        headers = __import__('json').loads(dict(zip(cols, data[0]))['headers'])
        names = [k.lower() for k, _ in headers]
        self.assertNotIn('x-injected', names)
        self.assertEqual(sorted(names), sorted(['host', 'user-agent', 'accept', 'x-request-id',
                                                'x-principal', 'x-attributes', 'traceparent']))
        got = {k.lower(): v for k, v in headers}
        for v in got.values():
            self.assertTrue(all(0x20 < ord(ch) < 0x7f for ch in v), v)
        self.assertEqual(unquote(got['x-request-id']), rid)
        self.assertEqual(unquote(got['x-principal']), principal)
        self.assertEqual(dict(parse_qsl(got['x-attributes'])), attrs)
        # a trace of its own (test_tracing has the trace context in and out)
        self.assertRegex(got['traceparent'], r'^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$')

    def test_trace_context_goes_upstream(self):
        trace, span = '4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7'
        r = self.fetch({'c': call('ctx')}, traceparent='00-%s-%s-01' % (trace, span),
                       tracestate='vendor=abc,other=1')['c']
        cols, data = rows(r)
        got = {k.lower(): v for k, v in
               __import__('json').loads(dict(zip(cols, data[0]))['headers'])}
        m = re.match(r'^00-([0-9a-f]{32})-([0-9a-f]{16})-01$', got['traceparent'])
        self.assertIsNotNone(m, got['traceparent'])
        self.assertEqual(m.group(1), trace)        # the caller's trace
        self.assertNotEqual(m.group(2), span)      # under the call's own span
        self.assertEqual(got['tracestate'], 'vendor=abc,other=1')
        # a tracestate that breaks the W3C rules (a CR LF in it) is not sent at all
        r = self.fetch({'c': call('ctx')}, traceparent='00-%s-%s-01' % (trace, span),
                       tracestate='vendor=abc\r\nX-Injected: 1')['c']
        cols, data = rows(r)
        names = [k.lower() for k, _ in
                 __import__('json').loads(dict(zip(cols, data[0]))['headers'])]
        self.assertNotIn('x-injected', names)
        self.assertNotIn('tracestate', names)

    def test_plain_context_passes_as_is(self):
        r = self.fetch({'c': call('ctx')}, request_id='abc-123', principal='alice')['c']
        cols, data = rows(r)
        got = {k.lower(): v for k, v in
               __import__('json').loads(dict(zip(cols, data[0]))['headers'])}
        self.assertEqual(got['x-request-id'], 'abc-123')
        self.assertEqual(got['x-principal'], 'alice')
        self.assertNotIn('x-attributes', got)

    def test_failures_are_typed_errors_naming_the_cause(self):
        res = self.fetch({
            's500': ttypes.LookupCall(lookup='status', params={'code': V(int_value=500)}),
            's404': ttypes.LookupCall(lookup='status', params={'code': V(int_value=404)}),
            'invalid': call('get', what='invalid', n=0),
            'path': call('missing_path'),
            'big': call('get', what='big', n=10 * 1024 * 1024),
            'big_chunked': call('get', what='chunked', n=10 * 1024 * 1024),
            'drop': call('get', what='drop', n=0),
            'ok': call('items', n=1),
            'chunked_ok': call('get', what='chunked', n=1000),
        })
        expect = {
            's500': 'answered HTTP 500',
            's404': 'answered HTTP 404',
            'invalid': 'not JSON',
            'path': 'rows path "data.nothing": no "data.nothing"',
            'big': 'max_response_bytes',
            'big_chunked': 'max_response_bytes',
            'drop': 'upstream svc: GET /{what}?n={n}:',
        }
        for key, text in expect.items():
            with self.subTest(key=key):
                e = res[key].error
                self.assertIsNotNone(e, key)
                self.assertEqual(e.kind, EK.BACKEND, e)
                self.assertIn(text, e.message)
        self.assertEqual(rows(res['ok'])[1], [[0, 'item 0', 0.0, '["t"]', 1]])
        self.assertEqual(rows(res['chunked_ok']), (['value'], [['x' * 998]]))
        # no param value appears in a message: the template does
        self.assertNotIn('10485760', res['big'].error.message)

    def test_slow_answer_times_out_within_the_deadline(self):
        t0 = time.monotonic()
        res = self.fetch({'slow': call('slow', ms=20000), 'ok': call('items', n=1)})
        took = time.monotonic() - t0
        self.assertEqual(res['slow'].error.kind, EK.TIMEOUT)
        self.assertEqual(len(rows(res['ok'])[1]), 1)
        # timeout_ms = 300; the service would take 20 s (the bound is wide for busy machines)
        self.assertLess(took, 10)
        self.assertEqual(wait_metric(self.srv, 'evdal_http_requests_in_flight', 0,
                                     upstream='svc'), 0)

    def test_critical_failure_cancels_the_request(self):
        broken = ttypes.LookupCall(lookup='status', params={'code': V(int_value=503)},
                                   critical=True)
        t0 = time.monotonic()
        with self.assertRaises(ttypes.LookupFailed):
            self.c.fetch(h.fetch_request({'slow': call('slow_long', ms=20000),
                                          'broken': broken}))
        self.assertLess(time.monotonic() - t0, 10)   # not the 20 s of the slow answer
        self.assertEqual(wait_metric(self.srv, 'evdal_http_requests_in_flight', 0,
                                     upstream='svc'), 0)
        self.assertGreaterEqual(labelled_metric(self.srv, 'evdal_http_errors_total',
                                                upstream='svc', kind='cancelled'), 1)

    def test_metrics_per_upstream(self):
        self.fetch({'s': ttypes.LookupCall(lookup='status', params={'code': V(int_value=502)})})
        _, _, body = self.srv.admin_get('/metrics')
        for family in ('evdal_http_connections', 'evdal_http_connects_total',
                       'evdal_http_requests_total', 'evdal_http_requests_in_flight',
                       'evdal_http_errors_total', 'evdal_http_request_seconds'):
            self.assertIn('# TYPE %s ' % family, body)
        self.assertGreaterEqual(labelled_metric(self.srv, 'evdal_http_errors_total',
                                                upstream='svc', kind='status'), 1)
        self.assertGreaterEqual(labelled_metric(self.srv, 'evdal_http_request_seconds_count',
                                                upstream='svc'), 1)
        self.assertGreaterEqual(labelled_metric(self.srv, 'evdal_http_connections',
                                                upstream='svc'), 1)

    def test_span_names_the_upstream(self):
        r = self.fetch({'a': call('items', n=1)}, trace=True)['a']
        self.assertEqual(r.span.backend, 'http:svc')


class KeepAlive(h.EvdalTestCase):
    def test_sequential_fetches_reuse_one_connection(self):
        with UpstreamServer() as up, \
                h.Server(evdal_config('http://127.0.0.1:%d' % up.port, connections=4,
                                      io_threads=1)) as srv:
            c, t = h.client(srv)
            try:
                for i in range(50):
                    r = c.fetch(h.fetch_request({'a': call('items', n=i % 3)})).results['a']
                    self.assertIsNone(r.error)
            finally:
                t.close()
            conns, reqs = up.stats()
            self.assertEqual(reqs, 50)
            self.assertEqual(conns, 1)
            self.assertEqual(labelled_metric(srv, 'evdal_http_connects_total', upstream='svc'), 1)

    def test_parallel_calls_capped_by_connections(self):
        with UpstreamServer() as up, \
                h.Server(evdal_config('http://127.0.0.1:%d' % up.port, connections=3,
                                      io_threads=1, slow_timeout=5000)) as srv:
            c, t = h.client(srv)
            try:
                calls = {'s%d' % i: call('slow', ms=100 + i) for i in range(12)}
                res = c.fetch(h.fetch_request(calls)).results
                for k in calls:
                    self.assertIsNone(res[k].error, k)
            finally:
                t.close()
            conns, reqs = up.stats()
            self.assertEqual(reqs, 12)
            self.assertLessEqual(conns, 3)
            self.assertLessEqual(up.max_open, 3)


class Failures(h.EvdalTestCase):
    def test_refused_connection_is_backend(self):
        with h.Server(evdal_config('http://127.0.0.1:%d' % closed_port())) as srv:
            c, t = h.client(srv)
            try:
                r = c.fetch(h.fetch_request({'a': call('items', n=1)})).results['a']
            finally:
                t.close()
            self.assertEqual(r.error.kind, EK.BACKEND)
            self.assertIn('upstream svc', r.error.message)
            self.assertEqual(labelled_metric(srv, 'evdal_http_errors_total', upstream='svc',
                                             kind='connect'), 1)

    def test_host_name_resolved_off_the_loop(self):
        # "localhost" goes through libcurl's threaded resolver (AsynchDNS), not the loop.
        with UpstreamServer() as up, \
                h.Server(evdal_config('http://localhost:%d' % up.port)) as srv:
            c, t = h.client(srv)
            try:
                for n in (1, 2):
                    r = c.fetch(h.fetch_request({'a': call('items', n=n)})).results['a']
                    self.assertEqual(len(rows(r)[1]), n)
            finally:
                t.close()

    def test_proxy_environment_is_ignored(self):
        dead = 'http://127.0.0.1:%d' % closed_port()
        env = {k: dead for k in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'all_proxy',
                                 'ALL_PROXY')}
        with UpstreamServer() as up, \
                h.Server(evdal_config('http://127.0.0.1:%d' % up.port), env=env) as srv:
            c, t = h.client(srv)
            try:
                r = c.fetch(h.fetch_request({'a': call('items', n=2)})).results['a']
            finally:
                t.close()
            self.assertEqual(len(rows(r)[1]), 2)
            self.assertEqual(up.stats(), (1, 1))

    def test_check_config_does_not_connect(self):
        tmp = tempfile.mkdtemp(prefix='evdal-http-')
        self.addCleanup(shutil.rmtree, tmp, True)
        ok = os.path.join(tmp, 'ok.conf')
        with open(ok, 'w') as f:
            # nothing listens there: --check-config must still say OK
            f.write(evdal_config('http://127.0.0.1:%d' % closed_port()))
        p = h.run_evdal(['--check-config', '--config', ok])
        self.assertEqual(p.returncode, 0, p.stderr)
        bad = os.path.join(tmp, 'bad.conf')
        with open(bad, 'w') as f:
            f.write(h.config(lookups="""
[upstream u]
base_url = gopher://127.0.0.1:70
[upstream v]
base_url = http://127.0.0.1:1
ca_file = missing.pem
[lookup a]
upstream = v
get = /x/{id}/ y
[lookup b]
upstream = v
get = /x/{id
[lookup c]
upstream = nowhere
get = /x
"""))
        p = h.run_evdal(['--check-config', '--config', bad])
        self.assertNotEqual(p.returncode, 0)
        for pattern in (r'bad\.conf:\d+: \[upstream u\] base_url: .*expected http:// or https://',
                        r'bad\.conf:\d+: \[upstream v\] ca_file: .*missing\.pem: no such file',
                        r'bad\.conf:\d+: \[lookup a\] get: .*not URL text',
                        r'bad\.conf:\d+: \[lookup b\] get: .*expected \{name\}',
                        r'bad\.conf:\d+: \[lookup c\] upstream: no \[upstream nowhere\]'):
            self.assertRegex(p.stderr, pattern)


class Reload(h.EvdalTestCase):
    def test_reload_moves_calls_to_the_new_upstream_and_closes_the_old_connections(self):
        with UpstreamServer() as a, UpstreamServer() as b, \
                h.Server(evdal_config('http://127.0.0.1:%d' % a.port, io_threads=2)) as srv:
            c, t = h.client(srv)
            try:
                r = c.fetch(h.fetch_request({'a': call('items', n=1)})).results['a']
                self.assertIsNone(r.error)
                self.assertEqual(a.stats(), (1, 1))
                with open(srv.config_path, 'w') as f:
                    f.write(evdal_config('http://127.0.0.1:%d' % b.port, io_threads=2))
                srv.send_signal(signal.SIGHUP)
                self.assertTrue(srv.wait_log(r'reloaded', timeout=5), srv.log_tail())
                r = c.fetch(h.fetch_request({'a': call('items', n=2)})).results['a']
                self.assertEqual(len(rows(r)[1]), 2)
                self.assertEqual(b.stats(), (1, 1))
                self.assertEqual(a.stats(), (1, 1))
                # The old generation's clients are freed on their loops: A's connection closes.
                deadline = time.monotonic() + 10
                while a.connections_open and time.monotonic() < deadline:
                    time.sleep(0.02)
                self.assertEqual(a.connections_open, 0)
                self.assertEqual(b.connections_open, 1)
            finally:
                t.close()


class Tracing(h.EvdalTestCase):
    def test_call_span_is_a_client_span_with_the_upstream_and_status(self):
        """With [tracing] on, the call's exported span names the upstream's address and the
        HTTP status, and the traceparent the service received names that span as parent."""
        from test_tracing import Collector, SAMPLED, TRACE_ID, attrs, check_span_mapping
        col = Collector()
        self.addCleanup(col.close)
        tracing = ('[tracing]\notlp_endpoint = %s\nsample_ratio = 0\n'
                   'service_name = evdal-test\nbatch_max_age_ms = 50\n' % col.url)
        with UpstreamServer() as up, \
                h.Server(evdal_config('http://127.0.0.1:%d' % up.port) + tracing) as srv:
            c, t = h.client(srv)
            try:
                res = c.fetch(h.fetch_request({'c': call('ctx'),
                                               's': call('status', code=503)},
                                              traceparent=SAMPLED)).results
            finally:
                t.close()
            spans = col.wait_spans(3)
        self.assertEqual(len(spans), 3, spans)
        for sp in spans:
            check_span_mapping(self, sp)
            self.assertEqual(sp['traceId'], TRACE_ID)
        by_name = {sp['name']: sp for sp in spans}
        ctx, status = by_name['lookup ctx'], by_name['lookup status']
        self.assertEqual(ctx['kind'], 3)   # SPAN_KIND_CLIENT
        self.assertEqual(attrs(ctx)['server.address'], '127.0.0.1')
        self.assertEqual(attrs(ctx)['http.response.status_code'], 200)
        self.assertEqual(attrs(status)['http.response.status_code'], 503)
        cols, data = rows(res['c'])
        got = {k.lower(): v for k, v in
               __import__('json').loads(dict(zip(cols, data[0]))['headers'])}
        self.assertEqual(got['traceparent'], '00-%s-%s-01' % (TRACE_ID, ctx['spanId']))


def make_cert(folder):
    """A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl CLI."""
    if shutil.which('openssl') is None:
        raise unittest.SkipTest('no openssl CLI')
    cert, key = os.path.join(folder, 'cert.pem'), os.path.join(folder, 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                    '-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1'],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Tls(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='evdal-http-tls-')
        cls.cert, cls.key = make_cert(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def test_https_verified_with_ca_file(self):
        with UpstreamServer(tls=(self.cert, self.key)) as up:
            cfg = evdal_config('https://127.0.0.1:%d' % up.port,
                               upstream_extra='ca_file = %s' % self.cert)
            with h.Server(cfg) as srv:
                c, t = h.client(srv)
                try:
                    for _ in range(3):
                        r = c.fetch(h.fetch_request({'a': call('items', n=2)})).results['a']
                        self.assertEqual(len(rows(r)[1]), 2)
                finally:
                    t.close()
            self.assertEqual(up.stats(), (1, 3))   # kept alive over TLS too

    def test_https_unknown_ca_is_refused(self):
        with UpstreamServer(tls=(self.cert, self.key)) as up:
            with h.Server(evdal_config('https://127.0.0.1:%d' % up.port)) as srv:
                c, t = h.client(srv)
                try:
                    r = c.fetch(h.fetch_request({'a': call('items', n=2)})).results['a']
                finally:
                    t.close()
                self.assertEqual(r.error.kind, EK.BACKEND)
                self.assertRegex(r.error.message, r'(?i)certificate|SSL')
                self.assertEqual(labelled_metric(srv, 'evdal_http_errors_total',
                                                 upstream='svc', kind='connect'), 1)
            self.assertEqual(len(up.requests), 0)

    def test_https_unknown_ca_is_not_retried(self):
        # A certificate that does not verify fails every attempt the same way: it is no lost
        # or refused connection, so `retries` does not apply (it made three handshakes).
        with UpstreamServer(tls=(self.cert, self.key)) as up:
            lookups = RETRIED_LOOKUP.format(base='https://127.0.0.1:%d' % up.port)
            with h.Server(h.config(lookups=lookups, admin_listen='127.0.0.1:0',
                                   max_queue_ms=0)) as srv:
                c, t = h.client(srv)
                try:
                    r = c.fetch(h.fetch_request({'a': call('retried')}, trace=True)).results['a']
                finally:
                    t.close()
                self.assertEqual(r.error.kind, EK.BACKEND)
                self.assertRegex(r.error.message, r'(?i)certificate|SSL')
                self.assertFalse(r.span.marks)
                self.assertEqual(labelled_metric(srv, 'evdal_http_errors_total',
                                                 upstream='svc', kind='connect'), 1)
            self.assertEqual(up.stats(), (1, 0))   # one handshake, no request


RETRIED_LOOKUP = """
[upstream svc]
backend = http
base_url = {base}

[lookup retried]
upstream = svc
get = /items?n=1
retries = 2
timeout_ms = 10000
"""


def free_port():
    return closed_port()


class Http2(h.EvdalTestCase):
    """HTTP/2 when offered: haproxy terminates TLS with ALPN h2 in front of the test service,
    and tells the service which HTTP version the client spoke."""

    @classmethod
    def setUpClass(cls):
        cls.haproxy = shutil.which('haproxy') or '/usr/sbin/haproxy'
        if not os.access(cls.haproxy, os.X_OK):
            raise unittest.SkipTest('no haproxy')
        cls.tmp = tempfile.mkdtemp(prefix='evdal-http2-')
        cls.cert, cls.key = make_cert(cls.tmp)
        cls.pem = os.path.join(cls.tmp, 'haproxy.pem')
        with open(cls.pem, 'w') as out:
            for part in (cls.cert, cls.key):
                with open(part) as f:
                    out.write(f.read())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def start_haproxy(self, backend_port):
        port = free_port()
        cfg = os.path.join(self.tmp, 'haproxy.cfg')
        with open(cfg, 'w') as f:
            f.write("""
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:%d ssl crt %s alpn h2,http/1.1
    http-request set-header X-Front-Http %%[fc_http_major]
    default_backend back
backend back
    server up 127.0.0.1:%d
""" % (port, self.pem, backend_port))
        p = subprocess.Popen([self.haproxy, '-db', '-f', cfg], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        self.addCleanup(p.wait, 10)
        self.addCleanup(p.terminate)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return port
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError('haproxy did not start: %s' % p.stderr.read())
                time.sleep(0.05)

    def test_h2_multiplexes_calls_on_one_connection(self):
        with UpstreamServer() as up:
            port = self.start_haproxy(up.port)
            cfg = evdal_config('https://127.0.0.1:%d' % port, connections=1, io_threads=1,
                               slow_timeout=10000,
                               upstream_extra='ca_file = %s' % self.cert)
            with h.Server(cfg) as srv:
                c, t = h.client(srv)
                try:
                    r = c.fetch(h.fetch_request({'c': call('ctx')})).results['c']
                    cols, data = rows(r)
                    headers = {k.lower(): v for k, v in
                               __import__('json').loads(dict(zip(cols, data[0]))['headers'])}
                    self.assertEqual(headers['x-front-http'], '2')
                    # Eight calls of 400 ms on one connection: multiplexed, they overlap at
                    # the service; over HTTP/1.1 one connection carries one at a time.
                    calls = {'s%d' % i: call('slow', ms=400 + i) for i in range(8)}
                    res = c.fetch(h.fetch_request(calls)).results
                finally:
                    t.close()
                for k in calls:
                    self.assertIsNone(res[k].error, k)
                self.assertEqual(labelled_metric(srv, 'evdal_http_connects_total',
                                                 upstream='svc'), 1)
            self.assertGreaterEqual(up.max_open, 2)


class PeerSameAsEvdal(h.EvdalTestCase):
    """The benchmark's C++ peer (bench/peers/cpp-nonblocking/peer_http.cpp) answers HTTP lookups
    as evdal does: the same requests reach the service, the same tables and errors come back."""

    requires_peer = True   # left out of a build without the peer (run_e2e.py)

    def test_peer_answers_as_evdal(self):
        import test_peer_cpp as peer
        if not os.access(peer.PEER_BIN, os.X_OK):
            raise unittest.SkipTest('evdal-peer-cpp not built')
        with UpstreamServer() as up:
            text = evdal_config('http://127.0.0.1:%d' % up.port).replace(
                'admin_listen = 127.0.0.1:0', 'admin_listen =')
            with h.Server(text) as ev, peer.PeerServer(text) as pe:
                calls = {
                    'items': call('items', n=4),
                    'none': call('items', n=0),
                    'status': call('status', code=500),
                    'invalid': call('get', what='invalid', n=0),
                    'path': call('missing_path'),
                    'big': call('get', what='big', n=2 * 1024 * 1024),
                    'null': call('echo', a=None, b='x', n=1),
                }
                out = {}
                for name, srv in (('evdal', ev), ('peer', pe)):
                    c, t = h.client(srv)
                    try:
                        res = c.fetch(h.fetch_request(calls)).results
                        echo = c.fetch(h.fetch_request(
                            {'e': call('echo', a='a/b ?', b='x&y=1', n=0.1)})).results['e']
                    finally:
                        t.close()
                    out[name] = {k: (r.error.kind, r.error.message) if r.error else
                                 (r.table.columns, r.table.rows) for k, r in res.items()}
                    cols, data = rows(echo)
                    out[name]['echo_path'] = dict(zip(cols, data[0]))['path']
                self.assertEqual(out['peer'], out['evdal'])

if __name__ == '__main__':
    unittest.main()

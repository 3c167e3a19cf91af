"""Distributed tracing (issue 18): W3C trace context in, spans exported as OTLP/HTTP JSON.

A fake collector (http.server on an ephemeral port, in this process) records every POST and
checks the protobuf JSON mapping of each span; the tests then check the trace and parent ids,
names, kinds and attributes against what the client sent. The collector can also answer 500,
503 (once), or take 5 s per POST, and the endpoint can point at a closed port.
"""
import http.server
import json
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes
from http_upstream import UpstreamServer

TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
PARENT_ID = '00f067aa0ba902b7'
SAMPLED = '00-%s-%s-01' % (TRACE_ID, PARENT_ID)
UNSAMPLED = '00-%s-%s-00' % (TRACE_ID, PARENT_ID)
HEX32 = re.compile(r'^[0-9a-f]{32}$')
HEX16 = re.compile(r'^[0-9a-f]{16}$')

LOOKUPS = h.NAP_LOOKUP + """
[lookup flags]
backend = static
columns = flag, enabled
row.1 = a, 1
row.2 = b, 0

[lookup ctx]
backend = fault
mode = context

[lookup broken]
backend = fault
mode = fail

[database main]
path = {db}
workers = 2

[lookup user]
database = main
sql = SELECT id, name FROM u WHERE id = :id
"""


def check_span_mapping(test, span):
    """The protobuf JSON mapping of one opentelemetry.proto.trace.v1.Span."""
    test.assertRegex(span['traceId'], HEX32)
    test.assertRegex(span['spanId'], HEX16)
    if 'parentSpanId' in span:
        test.assertRegex(span['parentSpanId'], HEX16)
    test.assertIsInstance(span['kind'], int)
    for k in ('startTimeUnixNano', 'endTimeUnixNano'):
        test.assertIsInstance(span[k], str)
        test.assertRegex(span[k], r'^\d{19}$')
    test.assertLessEqual(int(span['startTimeUnixNano']), int(span['endTimeUnixNano']))
    # within a minute of now: real time, in nanoseconds
    test.assertLess(abs(int(span['startTimeUnixNano']) / 1e9 - time.time()), 60)
    for a in span['attributes']:
        (vtype, value), = a['value'].items()
        test.assertIn(vtype, ('stringValue', 'intValue'))
        if vtype == 'intValue':
            test.assertIsInstance(value, str)
            int(value)
    test.assertIsInstance(span['status'], dict)


def attrs(span):
    out = {}
    for a in span['attributes']:
        (vtype, value), = a['value'].items()
        out[a['key']] = int(value) if vtype == 'intValue' else value
    return out


class Collector:
    """An OTLP/HTTP JSON receiver: records the parsed bodies; `mode` decides the answer."""

    def __init__(self, mode='ok'):
        self.mode = mode
        self.bodies = []
        self.posts = 0
        self.lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                with collector.lock:
                    collector.posts += 1
                    n = collector.posts
                    mode = collector.mode
                if mode == 'slow':
                    time.sleep(5)
                if mode == 'ok' or (mode == '503-once' and n % 2 == 0):
                    assert self.path == '/v1/traces', self.path
                    assert self.headers['Content-Type'] == 'application/json'
                    with collector.lock:
                        collector.bodies.append(json.loads(body))
                    status = 200
                else:
                    status = {'500': 500, '503-once': 503, 'slow': 200}[mode]
                payload = b'{}'
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # evdal gave up on a slow answer and closed
                    pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = 'http://127.0.0.1:%d/v1/traces' % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def spans(self):
        """Every span received, each with the resource's attributes checked."""
        out = []
        with self.lock:
            bodies = list(self.bodies)
        for b in bodies:
            for rs in b['resourceSpans']:
                res = {a['key']: a['value'] for a in rs['resource']['attributes']}
                assert res['service.name'] == {'stringValue': 'evdal-test'}, res
                for ss in rs['scopeSpans']:
                    assert ss['scope']['name'] == 'evdal'
                    out.extend(ss['spans'])
        return out

    def wait_spans(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.spans()
            if len(s) >= n:
                return s
            time.sleep(0.02)
        return self.spans()


def refusing_url(test):
    """A URL whose port refuses connections: bound but not listening, and held for the test,
    so no server started meanwhile can take the port."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    test.addCleanup(s.close)
    return 'http://127.0.0.1:%d/v1/traces' % s.getsockname()[1]


class TracingTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix='evdal-tracing-')
        cls.db = os.path.join(cls.dir.name, 'u.db')
        db = sqlite3.connect(cls.db)
        db.execute('CREATE TABLE u (id INTEGER PRIMARY KEY, name TEXT)')
        db.executemany('INSERT INTO u VALUES (?, ?)', [(i, 'user%d' % i) for i in range(1, 50)])
        db.commit()
        db.close()

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def server(self, endpoint, ratio=1.0, extra_tracing='', server_keys=None, age_ms=50, **kw):
        tracing = ('[tracing]\notlp_endpoint = %s\nsample_ratio = %s\nservice_name = evdal-test\n'
                   'batch_max_age_ms = %d\n%s' % (endpoint, ratio, age_ms, extra_tracing))
        cfg = h.config(extra=tracing, lookups=LOOKUPS.format(db=self.db), admin_listen='127.0.0.1:0',
                       **(server_keys or {}))
        return h.Server(cfg, **kw)

    def fetch(self, srv, calls, **ctx):
        c, t = h.client(srv)
        try:
            return c.fetch(h.fetch_request(calls, **ctx))
        finally:
            t.close()

    def page(self):
        return {
            'u': ttypes.LookupCall(lookup='user', params={'id': ttypes.Value(int_value=7)}),
            'f': ttypes.LookupCall(lookup='flags'),
            'n': h.nap_call(10),
            'x': ttypes.LookupCall(lookup='broken'),
        }

    def check_fetch_spans(self, spans, request_id, parent_id=TRACE_ID and PARENT_ID,
                          tracestate=None):
        for s in spans:
            check_span_mapping(self, s)
        server = [s for s in spans if s['name'] == 'DataAccess/fetch']
        self.assertEqual(len(server), 1, spans)
        server = server[0]
        self.assertEqual(server['kind'], 2)  # SERVER
        self.assertEqual(server['traceId'], TRACE_ID)
        self.assertEqual(server.get('parentSpanId'), parent_id)
        if tracestate is None:
            self.assertNotIn('traceState', server)
        else:
            self.assertEqual(server['traceState'], tracestate)
        a = attrs(server)
        self.assertEqual(a['rpc.system'], 'apache_thrift')
        self.assertEqual(a['rpc.service'], 'DataAccess')
        self.assertEqual(a['rpc.method'], 'fetch')
        self.assertEqual(a['evdal.request_id'], request_id)
        self.assertEqual(a['evdal.principal'], 'alice')
        self.assertEqual(a['evdal.outcome'], 'ok')
        children = {s['name']: s for s in spans if s is not server}
        self.assertEqual(set(children), {'lookup user', 'lookup flags', 'lookup nap',
                                         'lookup broken'})
        for s in children.values():
            self.assertEqual(s['traceId'], TRACE_ID)
            self.assertEqual(s['parentSpanId'], server['spanId'])
            self.assertGreaterEqual(int(s['startTimeUnixNano']), int(server['startTimeUnixNano']))
            self.assertLessEqual(int(s['endTimeUnixNano']), int(server['endTimeUnixNano']))
        self.assertEqual(len({s['spanId'] for s in spans}), len(spans))
        user = children['lookup user']
        self.assertEqual(user['kind'], 3)  # CLIENT
        self.assertEqual(attrs(user), {'evdal.lookup': 'user', 'evdal.backend': 'sqlite:main',
                                       'db.system': 'sqlite', 'db.namespace': 'main',
                                       'evdal.rows': 1})
        self.assertEqual(user['status'], {})
        self.assertEqual(children['lookup flags']['kind'], 1)  # INTERNAL
        self.assertEqual(attrs(children['lookup flags'])['evdal.rows'], 2)
        self.assertEqual(children['lookup nap']['kind'], 1)
        broken = children['lookup broken']
        self.assertEqual(attrs(broken)['evdal.error_kind'], 'BACKEND')
        self.assertNotIn('evdal.rows', attrs(broken))
        self.assertEqual(broken['status']['code'], 2)  # ERROR
        self.assertTrue(broken['status']['message'])

    def test_spans_join_the_trace_sent_as_fields(self):
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=0) as srv:
            r = self.fetch(srv, self.page(), request_id='req-fields', principal='alice',
                           traceparent=SAMPLED, tracestate='rojo=00f067aa0ba902b7,congo=t61')
            self.assertIsNone(r.results['u'].error)
            spans = col.wait_spans(5)
            self.assertEqual(len(spans), 5, spans)
            self.check_fetch_spans(spans, 'req-fields',
                                   tracestate='rojo=00f067aa0ba902b7,congo=t61')
            srv.wait_metric('evdal_tracing_spans_exported_total', 5)  # counted when the POST's answer is read
            self.assertEqual(srv.metric('evdal_tracing_spans_dropped_total'), 0)

    def test_spans_join_the_trace_sent_as_attributes(self):
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=0) as srv:
            self.fetch(srv, self.page(), request_id='req-attrs', principal='alice',
                       attributes={'traceparent': SAMPLED, 'tracestate': 'k=v', 'tenant': 't1'})
            self.check_fetch_spans(col.wait_spans(5), 'req-attrs', tracestate='k=v')

    def test_fields_win_over_attributes(self):
        col = Collector()
        self.addCleanup(col.close)
        other = '00-%s-%s-01' % ('1' * 32, '2' * 16)
        with self.server(col.url, ratio=0) as srv:
            self.fetch(srv, self.page(), request_id='req-both', principal='alice',
                       traceparent=SAMPLED, attributes={'traceparent': other})
            self.check_fetch_spans(col.wait_spans(5), 'req-both')

    def test_context_out_has_the_call_span_as_parent_and_no_trace_attributes(self):
        """What an upstream of a call gets (the fault backend shows it): the call's own span as
        parent, the incoming tracestate, and the attributes without traceparent/tracestate."""
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=0) as srv:
            r = self.fetch(srv, {'c': ttypes.LookupCall(lookup='ctx')}, request_id='req-out',
                           principal='alice', attributes={'traceparent': SAMPLED,
                                                          'tracestate': 'k=v', 'tenant': 't1'})
            t = r.results['c'].table
            row = dict(zip(t.columns, [v.text_value for v in t.rows[0]]))
            self.assertEqual(row['attributes'], 'tenant=t1;')
            self.assertEqual(row['tracestate'], 'k=v')
            spans = col.wait_spans(2)
            call = [s for s in spans if s['name'] == 'lookup ctx'][0]
            self.assertEqual(row['traceparent'], '00-%s-%s-01' % (TRACE_ID, call['spanId']))

    def test_thrift_upstream_joins_the_trace_under_the_call_span(self):
        """evdal calling evdal: the remote's SERVER span is a child of the local call's CLIENT
        span, one trace from the client to the remote's lookup, for each of a sampled fetch's
        two calls to the upstream (which, unsampled, would share one remote fetch, and so
        one parent)."""
        col = Collector()
        self.addCleanup(col.close)
        tracing = ('[tracing]\notlp_endpoint = %s\nsample_ratio = 0\nservice_name = evdal-test\n'
                   'batch_max_age_ms = 50\n' % col.url)
        remote = h.config(lookups='[lookup ctx]\nbackend = fault\nmode = context\n',
                          extra=tracing)
        with h.Server(remote) as r:
            local = h.config(lookups="""[upstream regional]
backend = thrift
address = %s

[lookup r_ctx]
upstream = regional
remote_lookup = ctx

[lookup r_ctx2]
upstream = regional
remote_lookup = ctx
""" % r.address, extra=tracing)
            with h.Server(local) as l:
                res = self.fetch(l, {'c': ttypes.LookupCall(lookup='r_ctx'),
                                     'd': ttypes.LookupCall(lookup='r_ctx2')},
                                 request_id='req-up', traceparent=SAMPLED, tracestate='k=v')
                for key in ('c', 'd'):
                    self.assertIsNone(res.results[key].error, res.results[key])
                spans = col.wait_spans(7)
        self.assertEqual(len(spans), 7, spans)
        for s in spans:
            check_span_mapping(self, s)
            self.assertEqual(s['traceId'], TRACE_ID)
        roots = [s for s in spans if s['name'] == 'DataAccess/fetch']
        local_root = [s for s in roots if s.get('parentSpanId') == PARENT_ID][0]
        for key, name in (('c', 'lookup r_ctx'), ('d', 'lookup r_ctx2')):
            call = [s for s in spans if s['name'] == name][0]
            remote_root = [s for s in roots if s.get('parentSpanId') == call['spanId']]
            self.assertEqual(len(remote_root), 1, (name, spans))
            remote_root = remote_root[0]
            remote_call = [s for s in spans if s['name'] == 'lookup ctx'
                           and s['parentSpanId'] == remote_root['spanId']]
            self.assertEqual(len(remote_call), 1, (name, spans))
            remote_call = remote_call[0]
            self.assertEqual(call['parentSpanId'], local_root['spanId'])
            self.assertEqual(call['kind'], 3)  # CLIENT
            self.assertEqual(attrs(call)['server.address'], '127.0.0.1')
            self.assertEqual(remote_root['traceState'], 'k=v')
            # the remote's lookup saw the same context an HTTP upstream would get
            t = res.results[key].table
            tp = t.rows[0][t.columns.index('traceparent')].text_value
            self.assertEqual(tp, '00-%s-%s-01' % (TRACE_ID, remote_call['spanId']))

    def test_http_upstream_gets_the_call_span_as_parent(self):
        """The HTTP upstream sees traceparent with the call's exported span as parent and the
        caller's tracestate; the call's span names the host and the HTTP status; the
        traceparent/tracestate attributes are not forwarded as ordinary attributes."""
        col = Collector()
        self.addCleanup(col.close)
        with UpstreamServer() as up:
            lookups = """[upstream svc]
backend = http
base_url = http://127.0.0.1:%d

[lookup hctx]
upstream = svc
get = /echo/ctx

[lookup hstatus]
upstream = svc
get = /status/{code}
""" % up.port
            tracing = ('[tracing]\notlp_endpoint = %s\nsample_ratio = 0\n'
                       'service_name = evdal-test\nbatch_max_age_ms = 50\n' % col.url)
            with h.Server(h.config(lookups=lookups, extra=tracing)) as srv:
                res = self.fetch(srv, {
                    'c': ttypes.LookupCall(lookup='hctx'),
                    's': ttypes.LookupCall(lookup='hstatus',
                                           params={'code': ttypes.Value(int_value=503)}),
                }, request_id='req-http', attributes={'traceparent': SAMPLED,
                                                      'tracestate': 'k=v', 'tenant': 't1'})
                self.assertIsNone(res.results['c'].error, res.results['c'])
                self.assertIsNotNone(res.results['s'].error)
                spans = col.wait_spans(3)
            with up.lock:
                seen = [dict((k.lower(), v) for k, v in hs) for p, hs in up.requests
                        if p == '/echo/ctx']
        self.assertEqual(len(spans), 3, spans)
        call = [s for s in spans if s['name'] == 'lookup hctx'][0]
        status = [s for s in spans if s['name'] == 'lookup hstatus'][0]
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]['traceparent'], '00-%s-%s-01' % (TRACE_ID, call['spanId']))
        self.assertEqual(seen[0]['tracestate'], 'k=v')
        self.assertEqual(seen[0]['x-attributes'], 'tenant=t1')
        self.assertEqual(call['kind'], 3)  # CLIENT
        self.assertEqual(attrs(call)['server.address'], '127.0.0.1')
        self.assertEqual(attrs(call)['http.response.status_code'], 200)
        self.assertEqual(status['status']['code'], 2)
        self.assertEqual(attrs(status)['http.response.status_code'], 503)
        self.assertEqual(attrs(status)['evdal.error_kind'], 'BACKEND')

    @unittest.skipIf(shutil.which('redis-server') is None, 'no redis-server')
    def test_redis_call_is_a_client_span_of_db_system_redis(self):
        import test_redis  # its Redis: a redis-server on a unix socket in a temp folder
        col = Collector()
        self.addCleanup(col.close)
        redis = test_redis.Redis().start()
        self.addCleanup(redis.close)
        redis.cmd('SET', 'k', 'v')
        tracing = ('[tracing]\notlp_endpoint = %s\nsample_ratio = 0\nservice_name = evdal-test\n'
                   'batch_max_age_ms = 50\n' % col.url)
        with h.Server(test_redis.redis_config(redis.sock, extra=tracing)) as srv:
            res = self.fetch(srv, {'g': ttypes.LookupCall(
                lookup='get', params={'k': ttypes.Value(text_value='k')})},
                request_id='req-redis', traceparent=SAMPLED)
            self.assertIsNone(res.results['g'].error, res.results['g'])
            spans = col.wait_spans(2)
        self.assertEqual(len(spans), 2, spans)
        call = [s for s in spans if s['name'] == 'lookup get'][0]
        self.assertEqual(call['kind'], 3)  # CLIENT
        self.assertEqual(attrs(call), {'evdal.lookup': 'get', 'evdal.backend': 'redis:cache',
                                       'db.system': 'redis', 'db.namespace': 'cache',
                                       'server.address': redis.sock, 'evdal.rows': 1})

    def test_unsampled_parent_exports_nothing_but_travels_downstream(self):
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=1) as srv:
            r = self.fetch(srv, {'c': ttypes.LookupCall(lookup='ctx'), 'n': h.nap_call(1)},
                           request_id='req-unsampled', traceparent=UNSAMPLED)
            t = r.results['c'].table
            tp = t.rows[0][t.columns.index('traceparent')].text_value
            self.assertRegex(tp, r'^00-%s-[0-9a-f]{16}-00$' % TRACE_ID)
            # then a sampled fetch: once its spans are in, the unsampled ones would be too
            self.fetch(srv, {'n': h.nap_call(1)}, request_id='req-after', traceparent=SAMPLED)
            spans = col.wait_spans(2)
            self.assertEqual({attrs(s).get('evdal.request_id') for s in spans} - {None},
                             {'req-after'})
            self.assertEqual(len(spans), 2)

    def test_sample_ratio_0_exports_nothing_and_1_everything(self):
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=0) as srv:
            for i in range(20):
                self.fetch(srv, {'n': h.nap_call(1)}, request_id='r0-%d' % i)
            self.fetch(srv, {'n': h.nap_call(1)}, request_id='marker', traceparent=SAMPLED)
            spans = col.wait_spans(2)
            self.assertEqual(len(spans), 2)
            self.assertEqual(attrs(spans[0])['evdal.request_id'], 'marker')
        col2 = Collector()
        self.addCleanup(col2.close)
        with self.server(col2.url, ratio=1) as srv:
            for i in range(20):
                self.fetch(srv, {'n': h.nap_call(1)}, request_id='r1-%d' % i)
            spans = col2.wait_spans(40)
            self.assertEqual(len(spans), 40)
            roots = [s for s in spans if s['name'] == 'DataAccess/fetch']
            self.assertEqual(len(roots), 20)
            for s in roots:
                self.assertNotIn('parentSpanId', s)  # a trace of its own
            self.assertEqual(len({s['traceId'] for s in roots}), 20)

    def test_invalid_context_is_ignored_counted_and_logged(self):
        col = Collector()
        self.addCleanup(col.close)
        bad = [
            ('ff-%s-%s-01' % (TRACE_ID, PARENT_ID), None),
            ('00-%s-%s-01' % ('0' * 32, PARENT_ID), None),
            ('00-%s-%s-01' % (TRACE_ID.upper(), PARENT_ID), None),
            ('00-%s-%s-01' % (TRACE_ID, PARENT_ID[:-1]), None),
            (SAMPLED, 'Bad Key=1'),
        ]
        with self.server(col.url, ratio=0) as srv:
            for i, (tp, ts) in enumerate(bad):
                r = self.fetch(srv, {'n': h.nap_call(1)}, request_id='bad-%d' % i,
                               traceparent=tp, tracestate=ts)
                self.assertIsNone(r.results['n'].error)  # never an error
            self.assertEqual(srv.metric('evdal_tracing_invalid_context_total'), len(bad))
            self.assertTrue(srv.wait_log(r'invalid trace context ignored'))
            # the invalid traceparents started traces of their own, unsampled at ratio 0; the
            # last one (valid traceparent, bad tracestate) joined the caller's, without state
            spans = col.wait_spans(2)
            self.assertEqual(len(spans), 2)
            root = [s for s in spans if s['name'] == 'DataAccess/fetch'][0]
            self.assertEqual(root['traceId'], TRACE_ID)
            self.assertNotIn('traceState', root)

    def test_shutdown_flushes_queued_spans(self):
        """Spans still queued at SIGTERM (batches would leave only after a minute here) are
        posted before evdal exits, within export_timeout_ms."""
        col = Collector()
        self.addCleanup(col.close)
        srv = self.server(col.url, ratio=1, age_ms=60000,
                          extra_tracing='batch_max_spans = 10000\nexport_timeout_ms = 5000\n')
        with srv:
            for i in range(5):
                self.fetch(srv, {'n': h.nap_call(1)}, request_id='flush-%d' % i)
            self.assertEqual(srv.metric('evdal_tracing_queued_spans'), 10)
            self.assertEqual(col.spans(), [])
            t0 = time.monotonic()
            srv.stop()
            self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(len(col.spans()), 10)

    def test_retries_once_on_503(self):
        col = Collector('503-once')
        self.addCleanup(col.close)
        with self.server(col.url, ratio=1) as srv:
            self.fetch(srv, {'n': h.nap_call(1)}, request_id='retry')
            self.assertEqual(len(col.wait_spans(2)), 2)
            self.assertEqual(col.posts, 2)
            self.assertEqual(srv.metric('evdal_tracing_spans_dropped_total'), 0)

    def test_reload_checks_tracing_and_says_it_needs_a_restart(self):
        import signal
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=0) as srv:
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reloaded .*: ', timeout=10), srv.log_tail())
            self.assertNotIn('[tracing] changed', srv.log_text())
            with open(srv.config_path) as f:
                text = f.read()
            with open(srv.config_path, 'w') as f:
                f.write(text.replace('sample_ratio = 0', 'sample_ratio = 0.5'))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'\[tracing\] changed; it takes effect at the next '
                                         r'restart', timeout=10), srv.log_tail())
            with open(srv.config_path, 'w') as f:
                f.write(text.replace('[tracing]', '[tracing]\nsample_rate = 1'))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reload refused: .*\[tracing\] sample_rate: unknown key',
                                         timeout=10), srv.log_tail())

    def test_traces_page_shows_the_trace_id(self):
        col = Collector()
        self.addCleanup(col.close)
        with self.server(col.url, ratio=0) as srv:
            self.fetch(srv, {'n': h.nap_call(1)}, request_id='shown', trace=True,
                       traceparent=SAMPLED)
            _, _, body = srv.admin_get('/traces.json')
            traces = json.loads(body)['recent']
            self.assertEqual(traces[0]['trace_id'], TRACE_ID)
            _, _, html = srv.admin_get('/traces')
            self.assertIn(TRACE_ID, html)


class CollectorTroubleTest(TracingTest):
    """A collector that is down, slow or failing costs the fetches nothing they can see."""

    # How much slower than with tracing off one fetch may be: the noise of a shared 2-core
    # machine. A loop that waited for the exporter would show the export timeout (3 s here),
    # the slow collector's 5 s, or, for the whole run, one of those per batch of 16 spans.
    LATENCY_SLACK_S = 1.0
    N = 300
    QUEUE = 64

    setUpClass = TracingTest.setUpClass
    tearDownClass = TracingTest.tearDownClass

    def run_fetches(self, srv):
        c, t = h.client(srv)
        try:
            worst = 0.0
            start = time.monotonic()
            for i in range(self.N):
                t0 = time.monotonic()
                c.fetch(h.fetch_request(self.page(), request_id='t%d' % i, principal='alice'))
                worst = max(worst, time.monotonic() - t0)
            return time.monotonic() - start, worst
        finally:
            t.close()

    # Shedding on loop lag is off: a scheduler stall of this busy machine must not turn a fetch
    # into Overloaded; a loop that waited for the exporter would still show in the latencies.
    SERVER_KEYS = {'max_queue_ms': 0}

    def baseline(self):
        cfg = h.config(lookups=LOOKUPS.format(db=self.db), admin_listen='127.0.0.1:0',
                       **self.SERVER_KEYS)
        with h.Server(cfg) as srv:
            return self.run_fetches(srv)

    def check_trouble(self, endpoint, log_pattern=None):
        base_total, base_worst = self.baseline()
        extra = 'queue_max_spans = %d\nbatch_max_spans = 16\nexport_timeout_ms = 3000\n' % self.QUEUE
        with self.server(endpoint, ratio=1, extra_tracing=extra, server_keys=self.SERVER_KEYS,
                         max_rss_mib=64) as srv:
            total, worst = self.run_fetches(srv)
            dropped = srv.metric('evdal_tracing_spans_dropped_total')
            queued = srv.metric('evdal_tracing_queued_spans')
            # 5 spans per fetch, 300 fetches: far more than the queue holds
            self.assertGreater(dropped, self.N * 5 / 2)
            self.assertLessEqual(queued, self.QUEUE)
            self.assertEqual(srv.metric('evdal_tracing_spans_exported_total'), 0)
            if log_pattern is not None:
                self.assertTrue(srv.wait_log(log_pattern, timeout=10), srv.log_tail())
                # rate-limited (one per 10 s), however many batches failed
                failures = srv.metric('evdal_tracing_export_failures_total')
                self.assertGreater(failures, 3)
                self.assertLessEqual(len(re.findall(log_pattern, srv.log_text())), 2)
        self.assertLess(worst, base_worst + self.LATENCY_SLACK_S,
                        'slowest fetch %.3f s with the collector in trouble, %.3f s without'
                        % (worst, base_worst))
        self.assertLess(total, base_total * 2 + 2 * self.LATENCY_SLACK_S,
                        '%d fetches took %.2f s with the collector in trouble, %.2f s without'
                        % (self.N, total, base_total))

    def test_collector_down(self):
        self.check_trouble(refusing_url(self), r'tracing: export to \S+ failed')

    def test_collector_answers_500(self):
        col = Collector('500')
        self.addCleanup(col.close)
        self.check_trouble(col.url, r'answered HTTP 500')
        self.assertGreater(col.posts, 0)

    def test_collector_slow(self):
        col = Collector('slow')
        self.addCleanup(col.close)
        self.check_trouble(col.url)


# The page tests are not run twice.
for _name in [n for n in dir(TracingTest) if n.startswith('test_')]:
    setattr(CollectorTroubleTest, _name, None)


if __name__ == '__main__':
    unittest.main()

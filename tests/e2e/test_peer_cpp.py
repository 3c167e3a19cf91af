"""evdal-peer-cpp, the C++ TNonblockingServer peer of the benchmarks (bench/peers/cpp-nonblocking/).

A benchmark compares like with like only if the peer does the same work and answers the same
way. Both servers run here on the same configuration (deploy/evdal.conf plus a few lookups of
this test) and the same sample database, and the peer is checked for ping and lookups(), a
fan-out that really runs in parallel, the SQLite page table for table against evdal, timeouts,
unknown lookups and the other per-call errors (kind and message as evdal's), critical calls,
invalid requests, the bulkhead, and a clean exit on SIGTERM.
"""
import os
import re
import subprocess
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

EK = ttypes.ErrorKind
PEER_BIN = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-peer-cpp')
CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal.conf')
PAGE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
        'recommended_products']

EXTRA_LOOKUPS = """
[lookup flags]
backend = static
columns = flag, enabled, ratio
row.1 = checkout, 1, 0.5
row.2 = "dark, mode", 0, null

[lookup short]
backend = delay
delay_ms = 300
timeout_ms = 50
description = Always too slow for its own budget

[lookup single]
backend = delay
delay_ms = 150
max_concurrent = 1
max_queue = 0
"""

DB = None


def setUpModule():
    """The sample database (evdal_harness.sample_db)."""
    global DB
    if not os.access(PEER_BIN, os.X_OK):
        raise unittest.SkipTest('%s not built (configure with -DEVDAL_PEERS=ON)' % PEER_BIN)
    DB = h.sample_db('evdal-peer-db-')


def config_text():
    """deploy/evdal.conf on an ephemeral port and on DB, with this test's lookups added."""
    with open(CONF, encoding='utf-8') as f:
        text = f.read()
    text = text.replace('listen = 127.0.0.1:9090', 'listen = 127.0.0.1:0')
    text = text.replace('path = sample.db', 'path = ' + DB)
    # No admin endpoint (its default): the fixed port could be taken.
    text = re.sub(r'^admin_listen\s*=.*$', '', text, flags=re.M)
    return text + EXTRA_LOOKUPS


class PeerServer(h.Server):
    """h.Server running evdal-peer-cpp instead of evdal: same config file, log, start-up wait
    for "listening on ADDR", and the same check that SIGTERM makes it exit 0."""

    def start(self):
        with open(self.config_path, 'w') as f:
            f.write(self.config_text)
        argv = [PEER_BIN, '--config', self.config_path, '--listen', '127.0.0.1:0']
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(argv + self.extra_args, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, close_fds=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            m = h.LISTEN_RE.search(self.log_text())
            if m:
                self.address = m.group(1)
                self.host, self.port, self.unix_path = h.parse_address(self.address)
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise h.ServerError('evdal-peer-cpp exited with %s before listening:\n%s'
                                    % (self.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise h.ServerError('evdal-peer-cpp did not print "listening on":\n%s'
                                    % self.log_tail())
            time.sleep(0.02)


def call(lookup, critical=None, timeout_ms=None, **params):
    p = {k: v if isinstance(v, ttypes.Value) else
         ttypes.Value(int_value=v) if isinstance(v, int) else ttypes.Value(text_value=v)
         for k, v in params.items()}
    return ttypes.LookupCall(lookup=lookup, params=p or None, critical=critical,
                             timeout_ms=timeout_ms)


def outcome(result):
    """What must be equal between the two servers: the table, or the error's kind and text."""
    if result.error is not None:
        return ('error', result.error.kind, result.error.message)
    return ('table', result.table.columns, result.table.rows)


class PeerTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        text = config_text()
        cls.peer = PeerServer(text)
        cls.peer.__enter__()
        cls.addClassCleanup(cls.peer.__exit__, None, None, None)
        cls.evdal = h.Server(text)
        cls.evdal.__enter__()
        cls.addClassCleanup(cls.evdal.__exit__, None, None, None)

    def client(self, server=None):
        c, t = h.client(server or self.peer)
        self.addCleanup(t.close)
        return c

    def both(self, request):
        """The same fetch on the peer and on evdal: (peer's response, evdal's response)."""
        return self.client().fetch(request), self.client(self.evdal).fetch(request)

    def timed_fetch(self, calls, **ctx):
        c = self.client()
        t0 = time.monotonic()
        r = c.fetch(h.fetch_request(calls, **ctx))
        return r, (time.monotonic() - t0) * 1000

    def test_ping_and_lookups_as_evdal(self):
        c = self.client()
        self.assertPong(c)
        infos = {i.name: i for i in c.lookups()}
        for name in PAGE + ['nap', 'feature_flags', 'flags', 'short', 'single']:
            self.assertIn(name, infos)
        self.assertEqual(infos['nap'].backend, 'delay:nap')
        self.assertEqual(infos['nap'].params, ['delay_ms'])
        self.assertEqual(infos['user'].backend, 'sqlite:main')
        self.assertEqual(infos['user'].params, ['user_id'])
        self.assertEqual(infos['short'].timeout_ms, 50)
        self.assertEqual(sorted(c.lookups(), key=lambda i: i.name),
                         sorted(self.client(self.evdal).lookups(), key=lambda i: i.name))

    def test_fanout_runs_in_parallel(self):
        # Seven distinct executions (evdal and the peer run identical calls once: a different
        # timeout_ms, under the request's deadline of 1 s, keeps them apart), each sleeping
        # 100 ms: about 100 ms in all, not 700.
        calls = {'k%d' % i: call('nap', delay_ms=100, timeout_ms=900 + i) for i in range(7)}
        r, ms = self.timed_fetch(calls, trace=True)
        self.assertEqual({k: h.slept_ms(v) for k, v in r.results.items()},
                         {k: 100 for k in calls})
        self.assertGreaterEqual(ms, 95)
        # One after another they take 700 ms or more whatever the load, so any time under that
        # shows they overlapped (a wall-clock bound nearer 100 ms failed at load 25: 490 ms);
        # the spans below show it too.
        self.assertLess(ms, 700, 'the calls ran one after another')
        spans = [v.span for v in r.results.values()]
        self.assertEqual({s.backend for s in spans}, {'delay:nap'})
        self.assertLess(max(s.start_us for s in spans), min(s.end_us for s in spans))
        # Identical calls: one execution, one result per key.
        r, ms = self.timed_fetch({'k%d' % i: call('nap', delay_ms=100) for i in range(7)})
        self.assertEqual(sorted(h.slept_ms(v) for v in r.results.values()), [100] * 7)
        self.assertLess(ms, 700, 'identical calls ran one after another')

    def test_page_same_as_evdal(self):
        for uid in (1, 2, 777, 54321, 99999, 10 ** 9):
            calls = {name: call(name, user_id=uid) for name in PAGE}
            calls['feature_flags'] = call('feature_flags')
            peer, evdal = self.both(h.fetch_request(calls))
            self.assertEqual(set(peer.results), set(calls))
            for key in calls:
                self.assertIsNone(peer.results[key].error, (uid, key, peer.results[key].error))
                self.assertEqual(outcome(peer.results[key]), outcome(evdal.results[key]),
                                 (uid, key))
            if uid == 1:
                self.assertEqual(len(peer.results['user'].table.rows), 1)
                self.assertGreater(len(peer.results['recent_orders'].table.rows), 0)
        self.assertEqual(peer.results['user'].table.rows, [])  # no such user: empty, no error

    def test_static_table(self):
        r, _ = self.timed_fetch({'f': call('flags')})
        t = r.results['f'].table
        self.assertEqual(t.columns, ['flag', 'enabled', 'ratio'])
        self.assertEqual(t.rows, [
            [ttypes.Value(text_value='checkout'), ttypes.Value(int_value=1),
             ttypes.Value(real_value=0.5)],
            [ttypes.Value(text_value='dark, mode'), ttypes.Value(int_value=0),
             ttypes.Value(null_value=True)]])

    def test_timeouts(self):
        r, ms = self.timed_fetch({'slow': call('nap', delay_ms=500, timeout_ms=100),
                                  'fast': call('nap', delay_ms=10)})
        self.assertEqual(r.results['slow'].error,
                         ttypes.LookupError(EK.TIMEOUT, 'lookup nap timed out after 100 ms'))
        self.assertIsNone(r.results['slow'].table)
        self.assertEqual(h.slept_ms(r.results['fast']), 10)
        self.assertGreaterEqual(ms, 95)
        self.assertLess(ms, h.scaled(400), 'the answer waited for the slow call')
        # The lookup's own timeout_ms, and the request's deadline.
        r, ms = self.timed_fetch({'s': call('short')})
        self.assertEqual(r.results['s'].error.kind, EK.TIMEOUT)
        self.assertLess(ms, h.scaled(250))
        r, ms = self.timed_fetch({'n': call('nap', delay_ms=400, timeout_ms=1000)},
                                 deadline_ms=150)
        self.assertEqual(r.results['n'].error,
                         ttypes.LookupError(EK.TIMEOUT, 'lookup nap timed out after 150 ms'))
        self.assertLess(ms, h.scaled(350))

    def test_unknown_lookup_and_bad_calls_as_evdal(self):
        calls = {'unknown': call('nope'),
                 'extra_param': call('nap', colour='red'),
                 'wrong_type': call('nap', delay_ms='soon'),
                 'missing': call('user'),
                 'two_fields': call('nap', delay_ms=ttypes.Value(int_value=1, text_value='1')),
                 'bad_timeout': call('nap', timeout_ms=0),
                 'out_of_range': call('nap', delay_ms=-5),
                 'fine': call('nap', delay_ms=1)}
        peer, evdal = self.both(h.fetch_request(calls))
        self.assertEqual(set(peer.results), set(calls))
        self.assertEqual(peer.results['unknown'].error,
                         ttypes.LookupError(EK.UNKNOWN_LOOKUP, 'no lookup named "nope"'))
        self.assertIsNone(peer.results['unknown'].table)
        for key in calls:
            self.assertEqual(outcome(peer.results[key]), outcome(evdal.results[key]), key)

    def test_critical_calls(self):
        c = self.client()
        with self.assertRaises(ttypes.LookupFailed) as cm:
            c.fetch(h.fetch_request({'k': call('missing', critical=True), 'n': call('nap')}))
        self.assertEqual((cm.exception.call, cm.exception.error.kind), ('k', EK.UNKNOWN_LOOKUP))
        # A critical call timing out fails the fetch at once: the long nap is not waited for.
        t0 = time.monotonic()
        with self.assertRaises(ttypes.LookupFailed) as cm:
            c.fetch(h.fetch_request({'must': call('nap', delay_ms=500, timeout_ms=50,
                                                  critical=True),
                                     'long': call('nap', delay_ms=1000)}))
        self.assertLess((time.monotonic() - t0) * 1000, h.scaled(400))
        self.assertEqual(cm.exception.call, 'must')
        self.assertEqual(cm.exception.error,
                         ttypes.LookupError(EK.TIMEOUT, 'lookup nap timed out after 50 ms'))
        self.assertPong(c)

    def test_invalid_requests_as_evdal(self):
        for request in (ttypes.FetchRequest(calls={}),
                        h.fetch_request({'k': call('nap')}, deadline_ms=0),
                        ttypes.FetchRequest(calls={'k%d' % i: call('nap') for i in range(65)})):
            messages = []
            for server in (self.peer, self.evdal):
                with self.assertRaises(ttypes.InvalidRequest) as cm:
                    self.client(server).fetch(request)
                messages.append(cm.exception.message)
            self.assertEqual(messages[0], messages[1])

    def test_request_ids_and_server_time(self):
        r1, ms = self.timed_fetch({'a': call('nap', delay_ms=50)})
        r2, _ = self.timed_fetch({'a': call('nap', delay_ms=1)})
        self.assertTrue(r1.request_id and r2.request_id)
        self.assertNotEqual(r1.request_id, r2.request_id)
        self.assertGreaterEqual(r1.server_us, 50000)
        self.assertLessEqual(r1.server_us, ms * 1000 + 1000)
        self.assertIsNone(r1.results['a'].span)
        r3, _ = self.timed_fetch({'a': call('nap', delay_ms=1)}, request_id='mine')
        self.assertEqual(r3.request_id, 'mine')

    def test_bulkhead_as_evdal(self):
        # `single` runs one call at a time and queues none: of two different calls, one is
        # OVERLOADED (two identical calls run once, and both succeed).
        for server in (self.peer, self.evdal):
            r = self.client(server).fetch(h.fetch_request(
                {'a': call('single', delay_ms=20), 'b': call('single', delay_ms=21)}))
            kinds = sorted(x.error.kind if x.error else 0 for x in r.results.values())
            self.assertEqual(kinds, [0, EK.OVERLOADED], server)
            r = self.client(server).fetch(h.fetch_request(
                {'a': call('single', delay_ms=20), 'b': call('single', delay_ms=20)}))
            # The first fetch's place must be free once it is answered: no race with release.
            self.assertEqual([x.error for x in r.results.values()], [None, None], server)
            self.assertEqual([h.slept_ms(x) for x in r.results.values()], [20, 20])


if __name__ == '__main__':
    unittest.main()

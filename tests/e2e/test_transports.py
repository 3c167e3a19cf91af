"""Every transport and protocol the contract promises, on one port: the three methods behave the
same whichever a client speaks. Also IPv6 and unix-socket listening."""
import os
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

SECOND_LOOKUP = """
[lookup quick]
backend = delay
delay_ms = 5   # an inline comment after a value
description = Naps briefly
"""

VARIANTS = [
    # (label, framed, protocol, multiplexed)
    ('framed binary', True, 'binary', False),
    ('framed compact', True, 'compact', False),
    ('unframed binary', False, 'binary', False),
    ('unframed compact', False, 'compact', False),
    ('framed binary multiplexed', True, 'binary', True),
    ('unframed compact multiplexed', False, 'compact', True),
]


class TransportsTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config(lookups=h.NAP_LOOKUP + SECOND_LOOKUP))
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def connect(self, framed, protocol, multiplexed):
        c, t = h.client(self.server, framed=framed, protocol=protocol, multiplexed=multiplexed)
        self.addCleanup(t.close)
        return c

    def check_all_methods(self, c):
        self.check_ping(c)
        self.check_lookups(c)
        self.check_parallel_fetch(c)
        self.check_unknown_lookup(c)
        self.check_request_id(c)
        self.check_empty_calls(c)
        # The connection is still usable after a declared exception.
        self.check_ping(c)

    def check_ping(self, c):
        self.assertEqual(c.ping(), 'pong')

    def check_lookups(self, c):
        infos = c.lookups()
        by_name = {i.name: i for i in infos}
        self.assertEqual(sorted(by_name), ['nap', 'quick'], infos)
        self.assertEqual(len(infos), 2, infos)
        nap = by_name['nap']
        self.assertEqual(nap.backend, 'delay:nap')
        self.assertEqual(list(nap.params), ['delay_ms'])
        self.assertEqual(nap.description, 'Sleeps, then answers')
        self.assertIsInstance(nap.timeout_ms, int)
        self.assertGreaterEqual(nap.timeout_ms, 0)
        quick = by_name['quick']
        self.assertEqual(quick.backend, 'delay:quick')
        self.assertEqual(quick.description, 'Naps briefly')

    def check_parallel_fetch(self, c):
        delays = [20, 40, 60, 80, 100, 120, 140]
        calls = {'call%d' % d: h.nap_call(d) for d in delays}
        t0 = time.monotonic()
        resp = c.fetch(h.fetch_request(calls))
        elapsed = (time.monotonic() - t0) * 1000
        self.assertEqual(sorted(resp.results), sorted(calls))
        for d in delays:
            self.assertEqual(h.slept_ms(resp.results['call%d' % d]), d)
        # Run at once: the longest nap, not the sum (560 ms) of them.
        self.assertGreaterEqual(elapsed, 140, 'a 140 ms nap answered after %.0f ms' % elapsed)
        self.assertLess(elapsed, 400, 'seven naps of 20..140 ms took %.0f ms' % elapsed)
        self.assertGreater(resp.server_us, 0)
        self.assertTrue(resp.request_id)
        # The configured default applies when the call has no delay_ms.
        resp = c.fetch(h.fetch_request({'d': h.nap_call(None, lookup='quick')}))
        self.assertEqual(h.slept_ms(resp.results['d']), 5)

    def check_unknown_lookup(self, c):
        resp = c.fetch(h.fetch_request({'bad': h.nap_call(10, lookup='no_such_lookup'),
                                        'good': h.nap_call(10)}))
        self.assertEqual(sorted(resp.results), ['bad', 'good'])
        bad = resp.results['bad']
        self.assertIsNotNone(bad.error, bad)
        self.assertEqual(bad.error.kind, ttypes.ErrorKind.UNKNOWN_LOOKUP)
        self.assertIsNone(bad.table)
        self.assertEqual(h.slept_ms(resp.results['good']), 10)

    def check_request_id(self, c):
        resp = c.fetch(h.fetch_request({'a': h.nap_call(1)}, request_id='req-e2e-42'))
        self.assertEqual(resp.request_id, 'req-e2e-42')
        resp = c.fetch(h.fetch_request({'a': h.nap_call(1)}))
        self.assertIsInstance(resp.request_id, str)
        self.assertNotEqual(resp.request_id, '')
        # A context without request_id also gets a generated one.
        resp = c.fetch(h.fetch_request({'a': h.nap_call(1)}, principal='tester'))
        self.assertNotEqual(resp.request_id or '', '')

    def check_empty_calls(self, c):
        with self.assertRaises(ttypes.InvalidRequest) as cm:
            c.fetch(h.fetch_request({}))
        self.assertTrue(cm.exception.message)


def _make_variant_test(framed, protocol, multiplexed):
    def test(self):
        self.check_all_methods(self.connect(framed, protocol, multiplexed))
    return test


for _label, _framed, _protocol, _mux in VARIANTS:
    setattr(TransportsTest, 'test_' + _label.replace(' ', '_'),
            _make_variant_test(_framed, _protocol, _mux))


class AllVariantsAtOnceTest(h.EvdalTestCase):
    def test_variants_interleaved_on_one_port(self):
        """Connections of every kind, open together, answered each in its own format."""
        with h.Server(h.config()) as server:
            clients = []
            for _label, framed, protocol, mux in VARIANTS:
                c, t = h.client(server, framed=framed, protocol=protocol, multiplexed=mux)
                self.addCleanup(t.close)
                clients.append(c)
            for c in clients:
                c.send_fetch(h.fetch_request({'x': h.nap_call(50)}))
            for c in clients:
                self.assertEqual(h.slept_ms(c.recv_fetch().results['x']), 50)
                self.assertEqual(c.ping(), 'pong')


class IoThreadsTest(h.EvdalTestCase):
    def test_zero_means_one_loop_per_core(self):
        """io_threads = 0: one IO loop per core this process may run on (GLib counts the CPUs
        of the affinity mask, as os.sched_getaffinity does; os.cpu_count() counts them all)."""
        cores = len(os.sched_getaffinity(0))
        with h.Server(h.config(io_threads=0, admin_listen='127.0.0.1:0')) as server:
            self.assertIsNotNone(server.admin_address, server.log_tail())
            self.assertEqual(server.metric('evdal_io_loops'), cores)
            self.assertIn('(%d IO loop%s' % (cores, '' if cores == 1 else 's'),
                          server.log_text())
            # Connections land on every loop in turn; each serves.
            clients = []
            for _ in range(cores + 1):
                c, t = h.client(server)
                self.addCleanup(t.close)
                clients.append(c)
            for c in clients:
                self.assertNapFetch(c, [10])
        with h.Server(h.config(io_threads=3, admin_listen='127.0.0.1:0')) as server:
            self.assertEqual(server.metric('evdal_io_loops'), 3)


class ListenTest(h.EvdalTestCase):
    def test_ipv6_loopback(self):
        if not h.have_ipv6_loopback():
            self.skipTest('no IPv6 loopback on this machine')
        with h.Server(h.config(listen='[::1]:0')) as server:
            self.assertEqual(server.host, '::1', server.address)
            self.assertGreater(server.port, 0)
            for framed, protocol in ((True, 'binary'), (False, 'compact')):
                c, t = h.client(server, framed=framed, protocol=protocol)
                try:
                    self.assertEqual(c.ping(), 'pong')
                    self.assertNapFetch(c, [10, 20])
                finally:
                    t.close()

    def test_unix_socket(self):
        with h.Server(h.config(listen='@TMPDIR@/evdal.sock')) as server:
            path = os.path.join(server.tmpdir, 'evdal.sock')
            self.assertEqual(server.unix_path, path, server.address)
            for framed, protocol in ((True, 'binary'), (False, 'compact')):
                c, t = h.client(server, framed=framed, protocol=protocol)
                try:
                    self.assertEqual(c.ping(), 'pong')
                    self.assertNapFetch(c, [10, 20])
                finally:
                    t.close()

    def test_port_zero_gives_a_real_port(self):
        with h.Server(h.config()) as server:
            self.assertEqual(server.host, '127.0.0.1')
            self.assertNotEqual(server.port, 0)


if __name__ == '__main__':
    unittest.main()

"""The server under valgrind: a tour of its paths (every method, parallel and pipelined calls, a
client leaving mid-call, hostile bytes, shutdown) without memory errors or definite leaks."""
import os
import random
import re
import shutil
import unittest

from thrift.Thrift import TMessageType

import evdal_harness as h

VALGRIND = shutil.which('valgrind')


@unittest.skipUnless(VALGRIND, 'valgrind is not installed')
class ValgrindTest(h.EvdalTestCase):
    def wrapper(self):
        w = [VALGRIND, '--leak-check=full', '--errors-for-leak-kinds=definite',
             '--error-exitcode=99', '--track-fds=no', '--num-callers=30']
        supp = os.path.join(h.EVDAL_SOURCE_DIR, 'tests', 'valgrind.supp')
        if os.path.exists(supp):
            w.append('--suppressions=' + supp)
        return w

    def test_tour_under_valgrind(self):
        # No shedding (max_queue_ms = 0): under valgrind on a busy machine a loop's lag passes
        # the default 500 ms, and this tour is about memory, not admission.
        text = h.config(io_threads=2, deadline_ms=20000, shutdown_timeout_ms=20000,
                        max_queue_ms=0, admin_listen='127.0.0.1:0')
        server = h.Server(text, wrapper=self.wrapper(), start_timeout=120, stop_timeout=120,
                          env={'G_SLICE': 'always-malloc', 'G_DEBUG': 'gc-friendly'})
        with server:
            c, t = h.client(server, timeout=30)
            c2, t2 = h.client(server, framed=False, protocol='compact', multiplexed=True,
                              timeout=30)
            try:
                self.assertEqual(c.ping(), 'pong')
                self.assertEqual([i.name for i in c.lookups()], ['nap'])
                self.assertNapFetch(c, [20, 40, 60, 80, 100, 120, 140], request_id='vg')
                resp = c.fetch(h.fetch_request({'x': h.nap_call(5, lookup='missing'),
                                                'y': h.nap_call(5)}))
                self.assertIsNotNone(resp.results['x'].error)
                with self.assertRaises(h.ttypes.InvalidRequest):
                    c.fetch(h.fetch_request({}))
                self.assertEqual(c2.ping(), 'pong')
                self.assertNapFetch(c2, [10, 30])

                # Pipelined batch, including a oneway call and an unknown method.
                s = server.raw_socket(timeout=30)
                try:
                    s.sendall(h.fetch_bytes(1, h.fetch_request({'n': h.nap_call(100)})) +
                              h.ping_bytes(2, mtype=TMessageType.ONEWAY) +
                              h.call_bytes('nosuch', 3, h.DataAccess.ping_args()) +
                              h.ping_bytes(4))
                    replies = [h.read_reply(s, timeout=30) for _ in range(3)]
                    self.assertEqual([r.seqid for r in replies], [1, 3, 4], replies)
                    self.assertEqual(replies[1].mtype, TMessageType.EXCEPTION)
                finally:
                    s.close()

                # A client that leaves with a fetch in flight.
                c3, t3 = h.client(server, timeout=30)
                c3.send_fetch(h.fetch_request({'n': h.nap_call(300), 'm': h.nap_call(50)}))
                t3.close()
                # A client that leaves after a partial frame.
                s = server.raw_socket(timeout=30)
                s.sendall(h.fetch_bytes(9, h.fetch_request({'n': h.nap_call(1)}))[:20])
                s.close()
                # Hostile bytes.
                s = server.raw_socket(timeout=30)
                try:
                    h.send_all(s, random.Random(99).randbytes(4096))
                    closed, _ = h.wait_closed(s, 30)
                    self.assertTrue(closed)
                finally:
                    s.close()
                # An undecodable message (truncated arguments).
                s = server.raw_socket(timeout=30)
                try:
                    whole = h.encode_message('fetch', 5, h.DataAccess.fetch_args(
                        request=h.fetch_request({'n': h.nap_call(1)})))
                    s.sendall(h.frame(whole[:-6]))
                    closed, replies = h.wait_closed(s, 5)
                    self.assertTrue(closed or replies)
                finally:
                    s.close()
                # The abandoned naps finished (valgrind runs everything slowly).
                server.wait_metric('evdal_backend_calls_outstanding', 0, timeout=60)
                self.assertEqual(c.ping(), 'pong')
                # A fetch still in flight at SIGTERM.
                c.send_fetch(h.fetch_request({'n': h.nap_call(3000)}))
                server.wait_metric('evdal_inflight_requests', 1, timeout=60)
                rc = server.stop(120)
                self.assertEqual(h.slept_ms(c.recv_fetch().results['n']), 3000)
            finally:
                t.close()
                t2.close()
            log = server.log_text()
            self.assertNotEqual(rc, 99, 'valgrind reported errors:\n' + self.valgrind_summary(log))
            self.assertEqual(rc, 0, self.valgrind_summary(log))
            for bad in ('Invalid read', 'Invalid write', 'Invalid free',
                        'uninitialised value', 'Mismatched free'):
                self.assertNotIn(bad, log, self.valgrind_summary(log))
            self.assertTrue(re.search(r'definitely lost: 0 bytes', log) or
                            'All heap blocks were freed' in log, self.valgrind_summary(log))
            self.assertRegex(log, r'ERROR SUMMARY: 0 errors')

    @staticmethod
    def valgrind_summary(log):
        lines = [l for l in log.splitlines() if l.startswith('==')]
        return '\n'.join(lines[-150:])


if __name__ == '__main__':
    unittest.main()

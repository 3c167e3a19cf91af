"""Graceful shutdown: SIGTERM and SIGINT stop accepting, let in-flight requests finish, exit 0."""
import signal
import time
import unittest

from thrift.Thrift import TMessageType

import evdal_harness as h


class ShutdownTest(h.EvdalTestCase):
    def connect_fails(self, server, timeout=2.0):
        """True when a new client cannot get a ping answered."""
        try:
            c, t = h.client(server, timeout=timeout)
        except Exception:  # noqa: BLE001 - refused: what we want
            return True, 'connect refused'
        try:
            pong = c.ping()
            return False, 'a new connection was accepted and answered %r' % pong
        except Exception as e:  # noqa: BLE001
            return True, 'accepted but not served: %r' % e
        finally:
            t.close()

    def test_sigterm_lets_inflight_fetch_finish(self):
        with h.Server(h.config(shutdown_timeout_ms=5000)) as server:
            busy, busy_t = h.client(server)
            idle, idle_t = h.client(server)
            try:
                self.assertEqual(idle.ping(), 'pong')
                busy.send_fetch(h.fetch_request({'n': h.nap_call(500)}, request_id='inflight'))
                time.sleep(0.15)  # the server has read it
                t_sig = time.monotonic()
                server.send_signal(signal.SIGTERM)
                time.sleep(0.2)
                failed, how = self.connect_fails(server)
                self.assertTrue(failed, 'after SIGTERM: ' + how)
                resp = busy.recv_fetch()
                t_reply = time.monotonic()
                self.assertEqual(resp.request_id, 'inflight')
                self.assertEqual(h.slept_ms(resp.results['n']), 500)
                # The nap was not cut short: it ended ~350 ms after the signal.
                self.assertGreater(t_reply - t_sig, 0.25)
                # Connections left open (one idle all along, one just served) do not hold the
                # server: it exits soon after the last reply.
                rc = server.wait(4.0)
                self.assertIsNotNone(rc, 'still running %.1f s after its last in-flight reply\n%s'
                                     % (time.monotonic() - t_reply, server.log_tail()))
                self.assertEqual(rc, 0, server.log_tail())
            finally:
                busy_t.close()
                idle_t.close()

    def test_sigterm_lets_pipelined_requests_finish(self):
        with h.Server(h.config(shutdown_timeout_ms=5000)) as server:
            s = server.raw_socket()
            try:
                s.sendall(h.fetch_bytes(1, h.fetch_request({'n': h.nap_call(300)})) +
                          h.ping_bytes(2) +
                          h.fetch_bytes(3, h.fetch_request({'n': h.nap_call(100)})))
                time.sleep(0.1)
                server.send_signal(signal.SIGTERM)
                replies = [h.read_reply(s, timeout=5) for _ in range(3)]
                self.assertEqual([r.seqid for r in replies], [1, 2, 3], replies)
                self.assertTrue(all(r.mtype == TMessageType.REPLY for r in replies), replies)
                self.assertEqual(h.slept_ms(replies[0].result.success.results['n']), 300)
                self.assertEqual(replies[1].result.success, 'pong')
                self.assertEqual(h.slept_ms(replies[2].result.success.results['n']), 100)
                rc = server.wait(4.0)
                self.assertEqual(rc, 0, server.log_tail())
            finally:
                s.close()

    def test_sigint_exits_zero(self):
        with h.Server(h.config()) as server:
            c, t = h.client(server)
            try:
                self.assertEqual(c.ping(), 'pong')
                self.assertNapFetch(c, [10])
            finally:
                t.close()
            t0 = time.monotonic()
            rc = server.stop(5.0, signal.SIGINT)
            self.assertEqual(rc, 0, server.log_tail())
            self.assertLess(time.monotonic() - t0, 3.0)

    def test_sigterm_idle_server_exits_at_once(self):
        with h.Server(h.config()) as server:
            c, t = h.client(server)
            try:
                self.assertEqual(c.ping(), 'pong')
                t0 = time.monotonic()
                rc = server.stop(5.0)
                elapsed = time.monotonic() - t0
            finally:
                t.close()
            self.assertEqual(rc, 0, server.log_tail())
            self.assertLess(elapsed, 2.0, 'an idle server took %.1f s to exit' % elapsed)

    def test_shutdown_timeout_bounds_the_wait(self):
        """A request that outlasts shutdown_timeout_ms does not keep the server up."""
        text = h.config(shutdown_timeout_ms=500, deadline_ms=20000)
        with h.Server(text) as server:
            c, t = h.client(server, timeout=10)
            try:
                c.send_fetch(h.fetch_request({'n': h.nap_call(8000)}))
                time.sleep(0.15)
                t0 = time.monotonic()
                server.send_signal(signal.SIGTERM)
                rc = server.wait(5.0)
                elapsed = time.monotonic() - t0
                self.assertIsNotNone(rc, 'still running 5 s after SIGTERM with '
                                     'shutdown_timeout_ms = 500\n' + server.log_tail())
                self.assertEqual(rc, 0, server.log_tail())
                self.assertLess(elapsed, 3.0)
            finally:
                t.close()


if __name__ == '__main__':
    unittest.main()

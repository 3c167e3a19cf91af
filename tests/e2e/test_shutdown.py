"""Graceful shutdown: SIGTERM and SIGINT stop accepting, let in-flight requests finish, exit 0."""
import signal
import socket
import threading
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

    def wait_shutting_down(self, server):
        """SIGTERM was handled: the listener is closed (logged once it is)."""
        self.assertTrue(server.wait_log(r'shutdown: listener closed'), server.log_tail())

    def test_sigterm_lets_inflight_fetch_finish(self):
        with h.Server(h.config(shutdown_timeout_ms=5000, admin_listen='127.0.0.1:0')) as server:
            busy, busy_t = h.client(server)
            idle, idle_t = h.client(server)
            try:
                self.assertEqual(idle.ping(), 'pong')
                busy.send_fetch(h.fetch_request({'n': h.nap_call(2000)}, request_id='inflight'))
                server.wait_metric('evdal_inflight_requests', 1)  # the server has read it
                t_sig = time.monotonic()
                server.send_signal(signal.SIGTERM)
                self.wait_shutting_down(server)
                failed, how = self.connect_fails(server)
                self.assertTrue(failed, 'after SIGTERM: ' + how)
                resp = busy.recv_fetch()
                t_reply = time.monotonic()
                self.assertEqual(resp.request_id, 'inflight')
                self.assertEqual(h.slept_ms(resp.results['n']), 2000)
                # The nap was not cut short: it ended well after the signal.
                self.assertGreater(t_reply - t_sig, 0.25)
                # Connections left open (one idle all along, one just served) do not hold the
                # server: it exits soon after the last reply.
                rc = server.wait(h.scaled(4.0))
                self.assertIsNotNone(rc, 'still running %.1f s after its last in-flight reply\n%s'
                                     % (time.monotonic() - t_reply, server.log_tail()))
                self.assertEqual(rc, 0, server.log_tail())
            finally:
                busy_t.close()
                idle_t.close()

    def test_drain_ms_keeps_serving_while_health_says_draining(self):
        """drain_ms: from SIGTERM, /health is 503 "draining" at once, yet new connections are
        still accepted and served (a load balancer has not noticed yet); after drain_ms the
        listener closes and the server exits 0."""
        drain_ms = 1500
        with h.Server(h.config(drain_ms=drain_ms, admin_listen='127.0.0.1:0',
                               shutdown_timeout_ms=3000)) as server:
            status, _, body = server.admin_get('/health')
            self.assertEqual((status, body.strip()), (200, 'ready'))
            t_sig = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait_log('health says draining, still serving for %d ms' % drain_ms)
            status, _, body = server.admin_get('/health')
            self.assertEqual((status, body.strip()), (503, 'draining'))
            c, t = h.client(server)   # connected after the signal: served all the same
            try:
                self.assertNapFetch(c, [20])
            finally:
                t.close()
            self.assertLess(time.monotonic() - t_sig, drain_ms / 1000,
                            'the checks above must run inside drain_ms to prove anything')
            server.wait_log('listener closed', timeout=drain_ms / 1000 + 5)
            failed, how = self.connect_fails(server)
            self.assertTrue(failed, 'after drain_ms: ' + how)
            self.assertEqual(server.wait(5.0), 0, server.log_tail())

    def test_sigterm_lets_pipelined_requests_finish(self):
        with h.Server(h.config(shutdown_timeout_ms=5000, admin_listen='127.0.0.1:0')) as server:
            s = server.raw_socket()
            try:
                # Naps long enough that the poll below surely sees both in flight.
                s.sendall(h.fetch_bytes(1, h.fetch_request({'n': h.nap_call(2000)})) +
                          h.ping_bytes(2) +
                          h.fetch_bytes(3, h.fetch_request({'n': h.nap_call(1000)})))
                server.wait_metric('evdal_inflight_requests', 2)  # both fetches read
                server.send_signal(signal.SIGTERM)
                replies = [h.read_reply(s, timeout=5) for _ in range(3)]
                self.assertEqual([r.seqid for r in replies], [1, 2, 3], replies)
                self.assertTrue(all(r.mtype == TMessageType.REPLY for r in replies), replies)
                self.assertEqual(h.slept_ms(replies[0].result.success.results['n']), 2000)
                self.assertEqual(replies[1].result.success, 'pong')
                self.assertEqual(h.slept_ms(replies[2].result.success.results['n']), 1000)
                rc = server.wait(h.scaled(4.0))
                self.assertEqual(rc, 0, server.log_tail())
            finally:
                s.close()

    def test_sigterm_answers_pipelined_requests_held_back_by_max_pipeline(self):
        """Four fetches pipelined with max_pipeline = 2: two run, two wait in evdal's input
        when SIGTERM comes. All four were sent before the signal and all four are answered,
        in order, then the connection closes. The drain answered one more request only, so
        the fourth got no reply."""
        with h.Server(h.config(max_pipeline=2, shutdown_timeout_ms=5000,
                               admin_listen='127.0.0.1:0')) as server:
            s = server.raw_socket()
            try:
                s.sendall(b''.join(h.fetch_bytes(i, h.fetch_request({'n': h.nap_call(300)}))
                                   for i in range(1, 5)))
                server.wait_metric('evdal_inflight_requests', 2)
                server.send_signal(signal.SIGTERM)
                closed, replies = h.wait_closed(s, timeout=h.scaled(5))
                self.assertTrue(closed)
                self.assertEqual([r.seqid for r in replies], [1, 2, 3, 4])
                self.assertTrue(all(r.mtype == TMessageType.REPLY for r in replies), replies)
                self.assertEqual(server.wait(h.scaled(4.0)), 0, server.log_tail())
            finally:
                s.close()

    def test_sigterm_under_load_answers_every_request_read(self):
        """Eight closed-loop clients keep fetches going; SIGTERM arrives. What a client can see
        of each request, and what the drain (evd_conn_drain_one) promises:
        - a request sent before the signal has been read, or sits in the server's socket
          buffer when the drain reaches its connection: it must get its reply;
        - a request sent after the signal may find its connection already closed by the drain
          (the server stops reading a connection once it has answered it): EOF or a reset
          before any byte of a reply, never half a reply; when the socket already shows that
          EOF, the client does not send at all;
        - new connections are refused; the server exits 0 well within shutdown_timeout_ms,
          without the grace period having to close anything, and with no fetch cancelled for
          want of its client (--verbose logs "client went away" for each)."""
        timeout_ms = 3000
        with h.Server(h.config(shutdown_timeout_ms=timeout_ms, io_threads=2),
                      extra_args=['--verbose']) as server:
            stop = threading.Event()
            lock = threading.Lock()
            log = []  # (client, seq, t_sent, t_done, outcome, detail)

            def record(*row):
                with lock:
                    log.append(row)

            def exchange(s, seq, rid):
                """Sends one fetch; returns (t_sent, outcome, detail), or None when the
                connection was closed before anything was sent."""
                s.setblocking(False)
                try:  # EOF already there: closed by the drain, nothing to send
                    if s.recv(1, socket.MSG_PEEK) == b'':
                        return None
                except BlockingIOError:
                    pass
                except OSError:
                    return None
                s.settimeout(5)
                msg = h.fetch_bytes(seq, h.fetch_request({'n': h.nap_call(20)}, request_id=rid))
                if not h.send_all(s, msg):
                    return None
                t_sent = time.monotonic()
                s.settimeout(5)
                try:
                    first = s.recv(1)
                except (ConnectionResetError, BrokenPipeError) as e:
                    return t_sent, 'eof', repr(e)
                except OSError as e:
                    return t_sent, 'bad', 'no reply within 5 s: %r' % e
                if not first:
                    return t_sent, 'eof', 'EOF'
                try:
                    rest = h.recv_exact(s, 3, 5)
                    (n,) = h.struct.unpack('!i', first + rest)
                    r = h.parse_reply(h.recv_exact(s, n, 5))
                except Exception as e:  # noqa: BLE001 - half a reply, or garbage
                    return t_sent, 'bad', 'half a reply: %r' % e
                ok = (r.seqid == seq and r.result is not None and r.result.success is not None
                      and r.result.success.request_id == rid
                      and h.slept_ms(r.result.success.results['n']) == 20)
                return t_sent, 'reply' if ok else 'bad', repr(r)

            def run(ci):
                seq = 0
                while not stop.is_set():
                    try:
                        s = server.raw_socket(timeout=5)
                    except OSError as e:
                        record(ci, None, None, time.monotonic(), 'refused', repr(e))
                        return
                    try:
                        while not stop.is_set():
                            seq += 1
                            got = exchange(s, seq, 'c%d-%d' % (ci, seq))
                            if got is None:
                                break
                            record(ci, seq, got[0], time.monotonic(), got[1], got[2])
                            if got[1] != 'reply':
                                break
                    finally:
                        s.close()

            threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            try:
                def replies():  # every client under way: the signal comes amid the load
                    with lock:
                        served = [row[0] for row in log if row[4] == 'reply']
                        return len(set(served)) == 8 and len(served) >= 80
                h.wait_until(replies, what='80 replies, to each of the 8 clients')
                t_sig = time.monotonic()
                server.send_signal(signal.SIGTERM)
                self.wait_shutting_down(server)
                failed, how = self.connect_fails(server)
                self.assertTrue(failed, 'after SIGTERM: ' + how)
                rc = server.wait(timeout_ms / 1000 + h.scaled(2))
                elapsed = time.monotonic() - t_sig

                def all_refused():  # each client's next connect finds nobody, and it stops
                    with lock:
                        return len([r for r in log if r[4] == 'refused']) == 8
                if rc is not None:
                    h.wait_until(all_refused, what='every client refused')
            finally:
                stop.set()
                for t in threads:
                    t.join(15)
            self.assertIsNotNone(rc, 'still running %.1f s after SIGTERM\n%s'
                                 % (timeout_ms / 1000 + 2, server.log_tail()))
            self.assertEqual(rc, 0, server.log_tail())
            self.assertLess(elapsed, timeout_ms / 1000 + h.scaled(1))
            self.assertEqual([r for r in log if r[4] == 'bad'], [],
                             'half or wrong replies, or none within 5 s')
            self.assertEqual([r for r in log if r[4] == 'eof' and r[2] < t_sig], [],
                             'requests sent before SIGTERM got no reply')
            replies = [r for r in log if r[4] == 'reply']
            self.assertGreater(len([r for r in replies if r[2] < t_sig]), 50,
                               'too little load to mean anything: %r' % log[:10])
            # The fetches in flight when the signal came were waited for, and answered.
            self.assertGreaterEqual(len([r for r in replies if r[2] < t_sig < r[3]]), 4, log[-20:])
            # Every client ended refused: no connection was accepted and then left hanging.
            self.assertEqual(len([r for r in log if r[4] == 'refused']), 8)
            text = server.log_text()
            self.assertNotIn('grace period is over', text)
            self.assertNotIn('client went away', text)
            self.assertIn('shut down cleanly', text)

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
            self.assertLess(time.monotonic() - t0, h.scaled(3.0))

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
            self.assertLess(elapsed, h.scaled(2.0), 'an idle server took %.1f s to exit' % elapsed)

    def test_shutdown_timeout_bounds_the_wait(self):
        """A request that outlasts shutdown_timeout_ms does not keep the server up."""
        text = h.config(shutdown_timeout_ms=500, deadline_ms=20000, admin_listen='127.0.0.1:0')
        with h.Server(text) as server:
            c, t = h.client(server, timeout=10)
            try:
                c.send_fetch(h.fetch_request({'n': h.nap_call(8000)}))
                server.wait_metric('evdal_inflight_requests', 1)
                t0 = time.monotonic()
                server.send_signal(signal.SIGTERM)
                rc = server.wait(h.scaled(5.0))
                elapsed = time.monotonic() - t0
                self.assertIsNotNone(rc, 'still running 5 s after SIGTERM with '
                                     'shutdown_timeout_ms = 500\n' + server.log_tail())
                self.assertEqual(rc, 0, server.log_tail())
                self.assertLess(elapsed, h.scaled(3.0))
            finally:
                t.close()


if __name__ == '__main__':
    unittest.main()

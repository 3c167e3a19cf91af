"""The limits of [server] that protect a server from its clients: max_connections,
idle_timeout_ms, read_timeout_ms, and back-pressure on a client that does not read its
replies (max_pipeline, max_output_bytes). Each holds while a good client keeps being served."""
import os
import socket
import threading
import time
import unittest

import evdal_harness as h


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS for %d' % pid)


class LimitsTest(h.EvdalTestCase):
    def good_client(self, srv):
        c, t = h.client(srv)
        self.addCleanup(t.close)
        self.assertPong(c)
        return c

    def test_max_connections(self):
        with h.Server(h.config(max_connections=5, io_threads=1,
                               admin_listen='127.0.0.1:0')) as srv:
            good = self.good_client(srv)            # 1
            held = [srv.raw_socket() for _ in range(4)]  # 2..5
            for s in held:
                h.send_all(s, h.ping_bytes(1))
                self.assertEqual(h.read_reply(s).result.success, 'pong')
            extra = srv.raw_socket()                 # 6: over the limit
            closed, _ = h.wait_closed(extra, timeout=3)
            self.assertTrue(closed, 'the connection beyond max_connections stayed open')
            self.assertTrue(srv.wait_log(r'refused: max_connections \(5\)'))
            self.assertPong(good)
            srv.wait_metric('evdal_connections', 5)
            held[0].close()
            srv.wait_metric('evdal_connections', 4)  # its close reached the server's loop
            again = srv.raw_socket()
            h.send_all(again, h.ping_bytes(2))
            self.assertEqual(h.read_reply(again).result.success, 'pong')
            for s in held[1:] + [extra, again]:
                s.close()

    def test_idle_timeout_spares_busy_connections(self):
        with h.Server(h.config(idle_timeout_ms=300)) as srv:
            idle = srv.raw_socket()
            h.send_all(idle, h.ping_bytes(1))
            self.assertEqual(h.read_reply(idle).result.success, 'pong')
            busy, t = h.client(srv)
            self.addCleanup(t.close)
            t0 = time.monotonic()
            # A fetch that outlasts the idle timeout keeps its connection.
            r = busy.fetch(h.fetch_request({'n': h.nap_call(700)}))
            self.assertEqual(h.slept_ms(r.results['n']), 700)
            closed, _ = h.wait_closed(idle, timeout=0.1)
            self.assertTrue(closed, 'an idle connection outlived idle_timeout_ms')
            self.assertGreaterEqual(time.monotonic() - t0, 0.3)
            self.assertPong(busy)

    def test_read_timeout_closes_half_sent_requests(self):
        with h.Server(h.config(read_timeout_ms=300)) as srv:
            good = self.good_client(srv)
            slow = srv.raw_socket()
            msg = h.ping_bytes(1)
            h.send_all(slow, msg[:7])  # a frame header and a bit, then nothing
            t0 = time.monotonic()
            self.assertPong(good)       # nobody waits for the slow one
            closed, _ = h.wait_closed(slow, timeout=3)
            self.assertTrue(closed)
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
            self.assertTrue(srv.wait_log(r'127\.0\.0\.1:\d+: read timeout'))
            self.assertNapFetch(good, [5, 10])

    def test_read_timeout_spares_a_client_that_streams_requests(self):
        """Pings pipelined for four read timeouts, one and a half requests per write: each
        read completes the request begun by the one before and begins the next, so no request
        stays incomplete for long. The read timeout was counted from the first incomplete
        request the connection ever had (a request completed since did not restart it), and
        closed this busy connection after read_timeout_ms."""
        read_timeout = h.scaled(0.5)
        with h.Server(h.config(read_timeout_ms=int(read_timeout * 1000))) as srv:
            s = srv.raw_socket()
            half = len(h.ping_bytes(1)) // 2
            n = 1
            rest = h.ping_bytes(1)[:half]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4 * read_timeout:
                # The end of request n and the start of n + 1: every read ends mid-request.
                piece = h.ping_bytes(n)[half:] + h.ping_bytes(n + 1)[:half]
                self.assertTrue(h.send_all(s, rest), 'closed after %d requests' % n)
                rest = piece
                n += 1
                time.sleep(0.02)
            self.assertTrue(h.send_all(s, rest + h.ping_bytes(n)[half:]))
            replies = [h.read_reply(s) for _ in range(n)]
            self.assertEqual([r.seqid for r in replies], list(range(1, n + 1)))
            self.assertNotIn('read timeout', srv.log_text())
            s.close()

    def test_client_that_does_not_read_is_not_read(self):
        """Thousands of pipelined requests, no replies read: the server stops reading that
        client once its unsent replies pass the watermark, so its memory stays bounded; when the
        client reads again, every reply arrives, in order."""
        with h.Server(h.config(max_output_bytes=65536, max_pipeline=64, io_threads=1)) as srv:
            good = self.good_client(srv)
            # Small kernel buffers, so that what piles up is the server's, not the kernel's.
            greedy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            greedy.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            greedy.connect((srv.host, srv.port))
            greedy.setblocking(False)
            before = rss_kib(srv.pid)
            batch = b''.join(h.ping_bytes(i) for i in range(1000))
            sent = 0
            stalled_at = None
            deadline = time.monotonic() + 20
            total = 60 * len(batch)  # 60,000 requests, about 1.3 MB of them
            while sent < total and time.monotonic() < deadline:
                try:
                    sent += greedy.send(batch[sent % len(batch):])
                except BlockingIOError:
                    if stalled_at is None:
                        stalled_at = sent
                    if time.monotonic() > deadline - 15:
                        break
                    time.sleep(0.01)
            self.assertIsNotNone(stalled_at, 'the server kept reading a client that reads nothing')
            self.assertLess(stalled_at, total)
            grown = rss_kib(srv.pid) - before
            if os.environ.get('EVDAL_SANITIZE') != '1':  # ASan's quarantine keeps freed memory
                self.assertLess(grown, 32 * 1024, 'server grew by %d KiB' % grown)
            self.assertNapFetch(good, [5, 10])  # the loop serves others meanwhile
            # Now read: every complete request sent gets its reply, in order.
            complete = sent // len(h.ping_bytes(0))
            greedy.setblocking(True)
            for i in range(complete):
                r = h.read_reply(greedy, timeout=10)
                self.assertEqual((r.seqid, r.result.success), (i % 1000, 'pong'))
            greedy.close()
            self.assertNapFetch(good, [5, 10])

    def test_client_that_never_reads_is_closed_after_write_timeout(self):
        with h.Server(h.config(max_output_bytes=65536, write_timeout_ms=500, io_threads=1)) as srv:
            good = self.good_client(srv)
            greedy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            greedy.connect((srv.host, srv.port))
            greedy.settimeout(0.2)
            batch = b''.join(h.ping_bytes(i) for i in range(1000))
            # Until the server closes it: it first answers pings until its kernel's send
            # buffer and max_output_bytes are full, which takes a loaded machine a while (a
            # deadline for a state, not a bound under test: the log line says why it closed).
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < h.scaled(60) and not closed:
                try:
                    greedy.send(batch)
                except socket.timeout:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
            self.assertTrue(closed, 'a client that never reads stayed connected')
            self.assertTrue(srv.wait_log(r'127\.0\.0\.1:\d+: write timeout'))
            self.assertNapFetch(good, [5, 10])

    def test_max_inflight_refuses_a_kept_alive_connection_at_once(self):
        """Admission is per request, not per connection: a connection already served once is
        refused like a new one when max_inflight is reached, at once, and kept: served again
        once there is room. (A server that sheds only at accept time lets old connections
        drown it.)"""
        with h.Server(h.config(max_inflight=2, io_threads=1,
                               admin_listen='127.0.0.1:0')) as srv:
            old, t = h.client(srv)
            self.addCleanup(t.close)
            self.assertNapFetch(old, [1])       # served: from now on a kept-alive connection
            busy = []
            for _ in range(2):                  # then others fill max_inflight
                c, tc = h.client(srv)
                self.addCleanup(tc.close)
                # Long enough that the poll below surely sees both in flight.
                c.send_fetch(h.fetch_request({'n': h.nap_call(2000)}))
                busy.append(c)
            srv.wait_metric('evdal_inflight_requests', 2)  # both are read and in flight
            t0 = time.monotonic()
            with self.assertRaises(h.ttypes.Overloaded) as cm:
                old.fetch(h.fetch_request({'n': h.nap_call(1)}))
            elapsed = time.monotonic() - t0
            self.assertLess(elapsed, h.scaled(0.3),
                            'Overloaded took %.0f ms, not at once' % (elapsed * 1000))
            self.assertGreater(cm.exception.retry_after_ms, 0)
            self.assertIn('max_inflight', cm.exception.message)
            for c in busy:
                self.assertEqual(h.slept_ms(c.recv_fetch().results['n']), 2000)
            self.assertNapFetch(old, [5, 10])    # the same connection, admitted again

    def test_stalled_loop_is_logged_and_its_backlog_refused(self):
        # The stall is long enough that b, sent once the stall is seen (lag past 0.2 s), is
        # surely sent before it ends, however busy the machine.
        hog = h.NAP_LOOKUP + '\n[lookup hog]\nbackend = fault\nmode = stall\ndelay_ms = 1000\n'
        lag = 'evdal_loop_lag_seconds{loop="1"}'
        with h.Server(h.config(lookups=hog, io_threads=1, stall_warn_ms=100,
                               max_queue_ms=150, admin_listen='127.0.0.1:0')) as srv:
            a, ta = h.client(srv)
            self.addCleanup(ta.close)
            b, tb = h.client(srv)
            self.addCleanup(tb.close)
            a.send_fetch(h.fetch_request({'h': h.ttypes.LookupCall(lookup='hog')}))
            # The loop is blocked inside the hog's start() (nothing else can hold it), longer
            # than max_queue_ms already: b's fetch is read after the stall, and refused.
            srv.wait_metric(lag, lambda v: v > 0.2)
            t0 = time.monotonic()
            with self.assertRaises(h.ttypes.Overloaded) as cm:
                b.fetch(h.fetch_request({'n': h.nap_call(1)}))
            self.assertIn('max_queue_ms', cm.exception.message)
            self.assertGreater(cm.exception.retry_after_ms, 0)
            self.assertLess(time.monotonic() - t0, h.scaled(1.2))
            self.assertEqual(a.recv_fetch().results['h'].table.rows[0][0].text_value, 'stalled')
            self.assertTrue(srv.wait_log(r'loop 1 stalled for \d{4,} ms reading requests from '
                                         r'127\.0\.0\.1:\d+'))
            srv.wait_metric(lag, lambda v: v < 0.15)  # caught up: served again
            self.assertEqual(h.slept_ms(b.fetch(h.fetch_request({'n': h.nap_call(1)})).results['n']), 1)

    def test_one_pipelining_client_does_not_starve_the_others_on_its_loop(self):
        # One loop; client A sends 400 fetches at once, each blocking the loop for 3 ms (the
        # fault backend's stall mode), and reads its replies on a thread. A connection gets
        # EVD_CONN_READ_BUDGET (16) requests read per turn, then waits for the loop's next
        # poll, so B's pings wait for a few turns of A (tens of ms), not for A's whole read
        # (about 150 requests in a 4 KiB read: 450 ms) nor for all of A's 1.2 s.
        stall = '[lookup stall]\nbackend = fault\nmode = stall\ndelay_ms = 3\n'
        n = 400
        with h.Server(h.config(stall, io_threads=1, max_queue_ms=0, stall_warn_ms=0,
                               max_pipeline=1000)) as srv:
            a = srv.raw_socket(timeout=30)
            b = srv.raw_socket()
            h.send_all(b, h.ping_bytes(1, protocol='compact'))
            h.read_reply(b, protocol='compact')
            req = h.fetch_request({'s': h.nap_call(lookup='stall')})
            batch = b''.join(h.fetch_bytes(i, req, protocol='compact') for i in range(n))
            got = []

            a_done = []

            def read_a():
                for _ in range(n):
                    got.append(h.read_reply(a, timeout=30, protocol='compact', method='fetch'))
                a_done.append(time.monotonic())

            reader = threading.Thread(target=read_a)
            reader.start()
            a_start = time.monotonic()
            h.send_all(a, batch)
            waits = []
            for _ in range(5):
                t0 = time.monotonic()
                h.send_all(b, h.ping_bytes(2, protocol='compact'))
                self.assertEqual(h.read_reply(b, protocol='compact').result.success, 'pong')
                waits.append(time.monotonic() - t0)
            backlog_left = reader.is_alive()  # so B was measured behind A's backlog
            reader.join(60)
            self.assertEqual(len(got), n)
            self.assertTrue(all(r.result.success is not None for r in got))
            # Starved, B would wait for A's whole read (a third of A's time) or all of it. A
            # busy machine stretches both: the bound is the larger of 0.2 s and a fifth of the
            # time A's backlog took.
            a_took = a_done[0] - a_start
            self.assertLess(max(waits), max(h.scaled(0.2), a_took / 5),
                            'B waited %s ms behind A (whose backlog took %.0f ms)' %
                            ([round(w * 1000) for w in waits], a_took * 1000))
            self.assertTrue(backlog_left, 'A was done before B finished: nothing was measured')
            a.close()
            b.close()


if __name__ == '__main__':
    unittest.main()

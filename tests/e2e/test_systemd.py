"""evdal under systemd, without a running systemd (issue 7): the sd_notify protocol (READY,
STATUS, RELOADING, STOPPING, WATCHDOG) read from a NOTIFY_SOCKET the test listens on, the
watchdog going quiet while an IO loop is wedged, socket activation by systemd-socket-activate,
and a restart under socket activation that refuses no connection attempt."""
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import evdal_harness as h

SOCKET_ACTIVATE = shutil.which('systemd-socket-activate')

STALL = h.NAP_LOOKUP + """
[lookup wedge]
backend = fault
mode = stall
delay_ms = 1500
"""


class Notifications:
    """A NOTIFY_SOCKET: collects (time, message) datagrams on a thread."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='evdal-notify-')
        self.path = os.path.join(self.dir, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            with self.lock:
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self):
        with self.lock:
            return [(t, line) for t, m in self.messages for line in m.split('\n')]

    def wait_for(self, line, after=0.0, timeout=5.0):
        deadline = time.monotonic() + h.scaled(timeout)
        while time.monotonic() < deadline:
            for t, l in self.lines():
                if t >= after and l == line:
                    return t
            time.sleep(0.01)
        raise AssertionError('no %r within %.1f s; got %r' % (line, timeout, self.lines()))

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class NotifyTest(unittest.TestCase):

    def setUp(self):
        self.notify = Notifications()
        self.addCleanup(self.notify.close)

    def test_ready_reloading_stopping_and_watchdog(self):
        # A period long enough that a busy machine's scheduling delays (a few hundred ms on
        # the shared 2-core box) do not look like missed pings; the check is the same.
        env = {'NOTIFY_SOCKET': self.notify.path, 'WATCHDOG_USEC': '1000000'}
        server = h.Server(h.config(), env=env)
        with server:
            ready = self.notify.wait_for('READY=1')
            statuses = [l for _, l in self.notify.lines() if l.startswith('STATUS=')]
            self.assertIn('STATUS=Serving on %s' % server.address, statuses)
            # Pinged twice per period while the loops run: never a whole period without.
            def pings_since_ready():
                return [t for t, l in self.notify.lines() if l == 'WATCHDOG=1' and t > ready]
            pings = h.wait_until(lambda: len(pings_since_ready()) >= 4 and pings_since_ready(),
                                 what='4 watchdog pings')
            self.assertLess(max(b - a for a, b in zip(pings, pings[1:])), 1.0)

            sent = time.monotonic()
            server.send_signal(signal.SIGHUP)
            reloading = self.notify.wait_for('RELOADING=1', after=sent)
            self.notify.wait_for('READY=1', after=reloading)
            c, t = h.client(server)
            self.assertEqual(c.ping(), 'pong')
            t.close()
            sent = time.monotonic()
            server.send_signal(signal.SIGTERM)
            self.notify.wait_for('STOPPING=1', after=sent)
            self.assertEqual(server.wait(10), 0)

    def test_reload_that_ends_during_shutdown(self):
        """SIGHUP (twice) while a writer locks an SQLite file, then SIGTERM while the reload
        still waits for the lock and a fetch is in flight: the reload ends after the listener
        closed. It said READY=1 after STOPPING=1 and read the address of the closed listener
        (a NULL pointer: the server died of SIGSEGV), and the second SIGHUP started another
        reload during the shutdown. Now: no READY after STOPPING, no reload after SIGTERM,
        exit 0 once the fetch is answered."""
        with tempfile.TemporaryDirectory(prefix='evdal-reload-stop-') as tmp:
            db = os.path.join(tmp, 'lock.db')
            con = sqlite3.connect(db)
            con.execute('CREATE TABLE t (x)')
            con.commit()
            con.close()
            lookups = h.NAP_LOOKUP + """
[database locked]
path = %s
workers = 1
busy_timeout_ms = 3000

[lookup one]
database = locked
sql = SELECT 1 AS one
""" % db
            env = {'NOTIFY_SOCKET': self.notify.path}
            conf = h.config(lookups=lookups, admin_listen='127.0.0.1:0', drain_ms=0,
                            deadline_ms=20000, shutdown_timeout_ms=30000)
            with h.Server(conf, env=env) as server:
                self.notify.wait_for('READY=1')
                busy, t = h.client(server)
                self.addCleanup(t.close)
                busy.send_fetch(h.fetch_request({'n': h.nap_call(6000)}))
                server.wait_metric('evdal_inflight_requests', 1)  # keeps the shutdown going
                writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
                try:
                    writer.execute('BEGIN EXCLUSIVE')
                    server.send_signal(signal.SIGHUP)
                    self.assertTrue(server.wait_log(r'SIGHUP: reloading', 5.0))
                    server.send_signal(signal.SIGHUP)
                    self.assertTrue(server.wait_log(r'reloading again after it', 5.0))
                    sent = time.monotonic()
                    server.send_signal(signal.SIGTERM)
                    stopping = self.notify.wait_for('STOPPING=1', after=sent)
                    self.assertTrue(server.wait_log(r'shutdown: listener closed', 5.0))
                    # The reload thread gives up on the lock after busy_timeout_ms.
                    self.assertTrue(server.wait_log(r'the configuration in use is kept', 10.0),
                                    server.log_tail())
                finally:
                    writer.execute('ROLLBACK')
                    writer.close()
                self.assertEqual(h.slept_ms(busy.recv_fetch().results['n']), 6000)
                rc = server.wait(h.scaled(10))
                self.assertEqual(rc, 0, server.log_tail())
                self.assertEqual([l for tm, l in self.notify.lines()
                                  if tm > stopping and l == 'READY=1'], [])
                self.assertEqual(server.log_text().count('SIGHUP: reloading '), 1,
                                 server.log_tail())

    def test_watchdog_goes_quiet_while_a_loop_is_wedged(self):
        env = {'NOTIFY_SOCKET': self.notify.path, 'WATCHDOG_USEC': '300000'}
        conf = h.config(lookups=STALL, io_threads=1, stall_warn_ms=0, max_queue_ms=0)
        with h.Server(conf, env=env) as server:
            ready = self.notify.wait_for('READY=1')
            self.notify.wait_for('WATCHDOG=1', after=ready)  # pinging before the wedge
            c, t = h.client(server)
            try:
                start = time.monotonic()
                c.fetch(h.fetch_request({'w': h.ttypes.LookupCall(lookup='wedge')}))
                end = time.monotonic()
            finally:
                t.close()
            self.assertGreaterEqual(end - start, 1.4)
            self.notify.wait_for('WATCHDOG=1', after=end)  # pings resume
            pings = [tm for tm, l in self.notify.lines() if l == 'WATCHDOG=1']
            during = [tm for tm in pings if start + 0.3 < tm < end - 0.05]
            self.assertEqual(during, [], 'the watchdog was pinged while the loop was stuck')
            self.assertTrue(any(tm > end for tm in pings), 'pings did not resume')
            self.assertIn('not pinging the systemd watchdog', server.log_text())


@unittest.skipUnless(SOCKET_ACTIVATE, 'systemd-socket-activate is not installed')
class SocketActivationTest(unittest.TestCase):

    def test_serves_the_sockets_it_is_given(self):
        port, admin = free_port(), free_port()
        wrapper = [SOCKET_ACTIVATE, '-l', '127.0.0.1:%d' % port, '-l', '127.0.0.1:%d' % admin,
                   '--fdname=thrift:admin']
        # listen= names a port nobody may use: the passed sockets must win.
        conf = h.config(listen='127.0.0.1:1', admin_listen='')
        # systemd-socket-activate starts evdal on the first connection; that connection's
        # request, sent before evdal ran, must be answered.
        first = {}

        def trigger():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    sock = socket.create_connection(('127.0.0.1', port), timeout=10)
                    break
                except OSError:
                    time.sleep(0.05)
            h.send_all(sock, h.ping_bytes(7))
            first['reply'] = h.read_reply(sock, timeout=15, method='ping')
            sock.close()
        th = threading.Thread(target=trigger)
        th.start()
        with h.Server(conf, wrapper=wrapper, start_timeout=20) as server:
            th.join(20)
            self.assertEqual(first['reply'].result.success, 'pong', first)
            self.assertEqual(server.port, port)
            self.assertIn('serving the socket systemd passed', server.log_text())
            self.assertEqual(server.admin_address, '127.0.0.1:%d' % admin)
            c, t = h.client(server)
            self.assertEqual(c.ping(), 'pong')
            t.close()
            self.assertEqual(server.admin_get('/health')[:1], (200,))


class RestartTest(unittest.TestCase):
    """The test plays systemd: it owns the listening socket, hands it to one evdal after
    another (LISTEN_FDS), and a client connects anew for every ping throughout."""

    def start(self, listener, conf_path, log):
        env = dict(os.environ, LISTEN_FDS='1', LISTEN_FDNAMES='thrift')
        # LISTEN_PID must be the server's own pid: the shell learns it, then becomes evdal.
        argv = ['/bin/sh', '-c', 'LISTEN_PID=$$ exec "$0" "$@"', h.EVDAL_BIN,
                '--config', conf_path]

        def to_fd3():
            os.dup2(listener.fileno(), 3)
            os.set_inheritable(3, True)
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                preexec_fn=to_fd3, close_fds=False)

    def test_restart_refuses_no_connection(self):
        tmp = tempfile.mkdtemp(prefix='evdal-restart-')
        self.addCleanup(shutil.rmtree, tmp, True)
        conf_path = os.path.join(tmp, 'evdal.conf')
        with open(conf_path, 'w') as f:
            f.write(h.config(shutdown_timeout_ms=3000))
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        log = open(os.path.join(tmp, 'evdal.log'), 'wb')
        self.addCleanup(log.close)

        results = {'ok': 0, 'failed': []}
        stop = threading.Event()

        def client_loop():
            while not stop.is_set():
                try:
                    c, t = h.client(type('S', (), {'unix_path': None, 'host': '127.0.0.1',
                                                   'port': port})(), timeout=10)
                    try:
                        if c.ping() == 'pong':
                            results['ok'] += 1
                    finally:
                        t.close()
                except Exception as e:  # every failure is a lost connection attempt
                    results['failed'].append(repr(e))

        def served(more):  # the clients got `more` pongs from now on
            base = results['ok']
            h.wait_until(lambda: results['ok'] >= base + more, what='%d more pongs' % more)

        first = self.start(listener, conf_path, log)
        workers = [threading.Thread(target=client_loop) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            for _ in range(3):  # three restarts, each like systemctl restart
                served(20)
                first.send_signal(signal.SIGTERM)
                self.assertEqual(first.wait(10), 0)
                gap_ok = results['ok']
                time.sleep(0.2)  # nobody accepts now: connections wait in the backlog
                first = self.start(listener, conf_path, log)
            served(20)
        finally:
            stop.set()
            for w in workers:
                w.join(30)
            first.send_signal(signal.SIGTERM)
            first.wait(10)
            listener.close()
        self.assertEqual(results['failed'], [])
        self.assertGreater(results['ok'], gap_ok)
        self.assertGreater(results['ok'], 100)


if __name__ == '__main__':
    unittest.main()

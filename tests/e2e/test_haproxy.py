"""Three evdal instances behind HAProxy (deploy/haproxy/haproxy.cfg, as shipped), 32 clients
fetching continuously with the client behaviour of docs/SCALING.md (reconnect on a clean close,
resend a fetch whose connection closed before any byte of its reply):

- each instance in turn replaced by a new one bound to the same addresses (reuse_port), the
  old one SIGTERMed: zero failed fetches, every old one exits 0;
- one instance SIGKILLed: only fetches in flight on it are disturbed (resent), and once HAProxy's
  checks have marked it down, no fetch even needs a resend.
"""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from evdal_harness import (EVDAL_SOURCE_DIR, SANITIZED, ResendingClient, Server, ServerError,
                           config, fetch_request, free_port, nap_call, slept_ms, ttypes)

HAPROXY = shutil.which('haproxy') or '/usr/sbin/haproxy'
HAPROXY_CFG = os.path.join(EVDAL_SOURCE_DIR, 'deploy', 'haproxy', 'haproxy.cfg')
CLIENTS = 32
CHECK_INTER_MS = 200
# drain_ms > inter x (fall + 1), the rule haproxy.cfg states (fall is 2 there).
DRAIN_MS = CHECK_INTER_MS * 3 + 400
SLOW = 3 if SANITIZED else 1

LOOKUPS = """\
[lookup nap]
backend = delay
delay_ms = 5

[lookup flags]
backend = static
columns = flag, enabled
row.1 = new_checkout, 1
"""


def instance_config(port, admin_port):
    return config(lookups=LOOKUPS, listen='127.0.0.1:%d' % port,
                  admin_listen='127.0.0.1:%d' % admin_port, reuse_port='true',
                  drain_ms=DRAIN_MS, shutdown_timeout_ms=5000)


class Load:
    """CLIENTS threads fetching through the proxy until stopped; counts what happened."""

    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.resends = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self):
        c = ResendingClient('127.0.0.1', self.port, timeout=10.0 * SLOW)
        req = fetch_request({'nap': nap_call(5), 'flags': ttypes.LookupCall(lookup='flags')})
        while not self.stopping.is_set():
            before = c.resends
            try:
                resp = c.fetch(req)
                assert slept_ms(resp.results['nap']) == 5, resp
                assert resp.results['flags'].table.rows == [[ttypes.Value(text_value='new_checkout'),
                                                             ttypes.Value(int_value=1)]], resp
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001  (any failure is what the test counts)
                with self.lock:
                    self.failures.append(repr(e))
            with self.lock:
                self.resends += c.resends - before
        c.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def counts(self):
        with self.lock:
            return self.ok, len(self.failures), self.resends

    def wait_progress(self, n, timeout=20.0):
        """Waits for n more successful fetches than now."""
        start = self.counts()[0]
        deadline = time.monotonic() + timeout * SLOW
        while self.counts()[0] < start + n:
            if time.monotonic() > deadline:
                raise AssertionError('no progress through the proxy: %r' % (self.counts(),))
            time.sleep(0.01)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)


class HAProxyTest(unittest.TestCase):
    def setUp(self):
        if not os.access(HAPROXY, os.X_OK):
            self.skipTest('haproxy is not installed (tools/dev.sh deps installs it)')
        self.addrs = [(free_port(), free_port()) for _ in range(3)]
        self.servers = [Server(instance_config(*a)).start() for a in self.addrs]
        self.front = free_port()
        env = dict(os.environ, EVDAL_FRONT='127.0.0.1:%d' % self.front,
                   EVDAL_CHECK_INTER='%dms' % CHECK_INTER_MS)
        for i, (port, admin) in enumerate(self.addrs, 1):
            env['EVDAL%d' % i] = '127.0.0.1:%d' % port
            env['EVDAL%d_ADMIN_PORT' % i] = str(admin)
        self.proxy_log = open(os.path.join(self.servers[0].tmpdir, 'haproxy.log'), 'w+')
        self.proxy = subprocess.Popen([HAPROXY, '-db', '-f', HAPROXY_CFG], env=env,
                                      stdin=subprocess.DEVNULL, stdout=self.proxy_log,
                                      stderr=subprocess.STDOUT)
        self.addCleanup(self._stop_all)
        self.load = None
        self._wait_listening()

    def _wait_listening(self):
        deadline = time.monotonic() + 10 * SLOW
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.front), timeout=1).close()
                return
            except OSError:
                if self.proxy.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError('HAProxy is not listening:\n' + self.proxy_text())
                time.sleep(0.02)

    def _stop_all(self):
        if self.load is not None:
            self.load.stop()
        self.proxy.terminate()
        try:
            self.proxy.wait(10)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
        self.proxy_log.close()
        for s in self.servers:
            if s.returncode is None:
                s.stop()
            s._cleanup()

    def proxy_text(self):
        self.proxy_log.flush()
        self.proxy_log.seek(0)
        return self.proxy_log.read()

    def wait_proxy_log(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout * SLOW
        while needle not in self.proxy_text():
            if time.monotonic() > deadline:
                raise AssertionError('HAProxy never logged %r:\n%s' % (needle, self.proxy_text()))
            time.sleep(0.02)

    def start_load(self):
        self.load = Load(self.front).start()
        self.load.wait_progress(CLIENTS * 5)
        return self.load

    def test_rolling_replacement_loses_no_fetch(self):
        load = self.start_load()
        for i, (port, admin) in enumerate(self.addrs):
            old = self.servers[i]
            new = Server(instance_config(port, admin)).start()  # binds beside the old one
            self.servers.append(new)
            old.send_signal(signal.SIGTERM)
            old.wait_log('health says draining, still serving for %d ms' % DRAIN_MS)
            rc = old.wait(DRAIN_MS / 1000 + 10 * SLOW)
            self.assertEqual(rc, 0, old.log_tail())
            old.returncode = rc
            self.assertIn('listener closed', old.log_text())
            load.wait_progress(CLIENTS * 5)
        load.stop()
        ok, failed, resends = load.counts()
        self.assertEqual(load.failures, [], 'fetches failed during the rolling restart')
        self.assertGreater(ok, CLIENTS * 20)
        # Every replacement drained kept-alive connections: clients had to reconnect.
        print('rolling restart: %d fetches, %d resent, 0 failed' % (ok, resends))

    def test_killed_instance_costs_only_its_fetches_in_flight(self):
        load = self.start_load()
        victim = self.servers[0]
        victim.kill()
        victim.returncode = -9
        # HAProxy's checks mark it down within inter x fall (plus a check's timeout).
        self.wait_proxy_log('evdal/evdal1 is DOWN', timeout=5.0)
        load.wait_progress(CLIENTS * 5)
        ok1, failed1, resends1 = load.counts()
        # At most one fetch per client was in flight on the killed instance.
        self.assertLessEqual(failed1 + resends1, CLIENTS, load.failures[:3])
        load.wait_progress(CLIENTS * 10)
        ok2, failed2, resends2 = load.counts()
        self.assertEqual((failed2, resends2), (failed1, resends1),
                         'fetches were disturbed after HAProxy marked the instance down')
        load.stop()


if __name__ == '__main__':
    unittest.main()

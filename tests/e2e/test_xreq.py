"""Across requests (issue 17): coalescing, the result cache, hedged calls, retries within a
budget and circuit breakers, against the real server with the delay and fault backends (the
HTTP backend's own tests against a counting HTTP server come with it)."""
import os
import re
import threading
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

EK = ttypes.ErrorKind

LOOKUPS = """
[lookup user]
backend = fault
mode = ok
delay_ms = 1000
coalesce = true
required_param = user_id

[lookup hang]
backend = fault
mode = hang
coalesce = true

[lookup cached]
backend = fault
mode = ok
delay_ms = 1
required_param = user_id
cache_ttl_ms = 60000

[lookup flaky]
backend = fault
mode = ok
delay_ms = 1
fail_first = 2
retryable = true
retries = 3

[lookup final]
backend = fault
mode = ok
delay_ms = 1
fail_first = 1
retries = 3

[lookup down]
backend = fault
mode = ok
delay_ms = 1
fail_while_exists = @TMPDIR@/down
breaker = on
breaker_min_calls = 6
breaker_failure_ratio = 0.5
breaker_open_ms = 300
breaker_probes = 2
"""


def labelled(server, name, **labels):
    """One labelled sample of /metrics as a float (None: absent)."""
    status, _, body = server.admin_get('/metrics')
    if status != 200:
        raise AssertionError('/metrics answered %d' % status)
    want = ','.join('%s="%s"' % kv for kv in sorted(labels.items()))
    for m in re.finditer(r'^%s\{([^}]*)\} (\S+)$' % re.escape(name), body, re.M):
        got = ','.join(sorted(m.group(1).split(',')))
        if got == want:
            return float(m.group(2))
    return None


def user_call(lookup, user_id):
    return ttypes.LookupCall(lookup=lookup, params={'user_id': ttypes.Value(int_value=user_id)})


def call_number(result):
    """The `call` column of a fault ok answer: which backend execution answered."""
    if result.error is not None:
        raise AssertionError('lookup failed: %r' % (result.error,))
    assert result.table.columns == ['answer', 'call'], result.table
    return result.table.rows[0][1].int_value


class XreqTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config(lookups=LOOKUPS, admin_listen='127.0.0.1:0',
                                       io_threads=2, max_connections=1000))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)

    def fetch(self, calls, **ctx):
        c, t = h.client(self.server)
        try:
            return c.fetch(h.fetch_request(calls, **ctx))
        finally:
            t.close()

    def test_coalescing_200_clients_one_backend_call(self):
        """200 clients on their own connections (spread over both loops) fetch the same user
        at once: one backend execution answers them all."""
        before = labelled(self.server, 'evdal_lookup_backend_calls_total', lookup='user') or 0
        clients = [h.client(self.server) for _ in range(200)]
        barrier = threading.Barrier(len(clients))
        answers, errors = [None] * len(clients), []

        def one(i):
            c, _ = clients[i]
            try:
                barrier.wait(30)
                resp = c.fetch(h.fetch_request({'u': user_call('user', 7)}, trace=True))
                answers[i] = resp.results['u']
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            for _, t in clients:
                t.close()
        self.assertEqual(errors, [])
        self.assertEqual({call_number(a) for a in answers}, {call_number(answers[0])})
        after = labelled(self.server, 'evdal_lookup_backend_calls_total', lookup='user')
        self.assertEqual(after - before, 1)
        marked = [a for a in answers if a.span.marks and 'coalesced' in a.span.marks]
        self.assertEqual(len(marked), 199)
        self.assertGreaterEqual(labelled(self.server, 'evdal_lookup_coalesced_total',
                                         lookup='user'), 199)

    def test_callers_leave_one_by_one(self):
        """Each caller keeps its own deadline; the shared call is cancelled when the last
        one leaves, not before."""
        log_before = self.server.log_text().count('fault backend: call cancelled')
        results = {}

        def one(name, deadline_ms):
            t0 = time.monotonic()
            resp = self.fetch({'h': ttypes.LookupCall(lookup='hang')}, deadline_ms=deadline_ms,
                              request_id=name)
            results[name] = (resp.results['h'], time.monotonic() - t0)
        threads = [threading.Thread(target=one, args=('leave-%d' % d, d))
                   for d in (300, 600, 900)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(10)
        for name, deadline in (('leave-300', 0.3), ('leave-600', 0.6), ('leave-900', 0.9)):
            result, took = results[name]
            self.assertEqual(result.error.kind, EK.TIMEOUT, name)
            self.assertLess(took, deadline + 0.5, name)  # never past its own deadline (+slack)
            self.assertGreater(took, deadline - 0.05, name)
        # One backend call, cancelled once, with the first caller's request id.
        m = self.server.wait_log(r'\[leave-300\] fault backend: call cancelled', timeout=5)
        self.assertIsNotNone(m, 'the shared call was not cancelled')
        self.assertEqual(self.server.log_text().count('fault backend: call cancelled') -
                         log_before, 1)

    def test_cache_hit_marked(self):
        first = self.fetch({'c': user_call('cached', 1)}, trace=True).results['c']
        second = self.fetch({'c': user_call('cached', 1)}, trace=True).results['c']
        other = self.fetch({'c': user_call('cached', 2)}, trace=True).results['c']
        self.assertEqual(call_number(second), call_number(first))
        self.assertNotEqual(call_number(other), call_number(first))
        self.assertEqual(second.span.marks, ['cache_hit'])
        self.assertFalse(first.span.marks)
        self.assertGreaterEqual(labelled(self.server, 'evdal_lookup_cache_hits_total',
                                         lookup='cached'), 1)
        self.assertGreater(labelled(self.server, 'evdal_lookup_cache_bytes', lookup='cached'), 0)

    def test_retryable_failures_are_retried(self):
        r = self.fetch({'f': ttypes.LookupCall(lookup='flaky')}, trace=True).results['f']
        self.assertEqual(call_number(r), 3)
        self.assertEqual(r.span.marks, ['retried:2'])
        self.assertEqual(labelled(self.server, 'evdal_lookup_retries_total', lookup='flaky'), 2)

    def test_final_failures_are_not_retried(self):
        r = self.fetch({'f': ttypes.LookupCall(lookup='final')}, trace=True).results['f']
        self.assertEqual(r.error.kind, EK.BACKEND)
        self.assertFalse(r.span.marks)
        self.assertEqual(labelled(self.server, 'evdal_lookup_retries_total', lookup='final'), 0)

    def test_breaker_opens_probes_and_closes(self):
        down = os.path.join(self.server.tmpdir, 'down')
        call = {'d': ttypes.LookupCall(lookup='down')}
        open(down, 'w').close()
        try:
            for _ in range(6):
                r = self.fetch(call).results['d']
                self.assertEqual(r.error.kind, EK.BACKEND)
                self.assertIn('injected failure', r.error.message)
            self.assertIsNotNone(self.server.wait_log(r'breaker down: closed -> open'))
            t0 = time.monotonic()
            r = self.fetch(call, trace=True).results['d']
            self.assertEqual(r.error.message, 'circuit open for down')
            self.assertEqual(r.span.marks, ['breaker_open'])
            self.assertLess(time.monotonic() - t0, 1.0)
            status, _, body = self.server.admin_get('/health')
            self.assertEqual(status, 200)
            self.assertIn('breaker down open', body)
            self.assertEqual(labelled(self.server, 'evdal_breaker_state', breaker='down'), 1)
            # Still failing when the probes go: open again.
            self.assertIsNotNone(self.wait_fetch(call, lambda r: 'injected' in
                                                 (r.error.message if r.error else '')))
            self.assertIsNotNone(self.server.wait_log(r'breaker down: half_open -> open'))
        finally:
            os.unlink(down)
        # Recovered: the probes succeed, and it closes.
        ok = self.wait_fetch(call, lambda r: r.error is None, timeout=10)
        self.assertIsNotNone(ok)
        self.fetch(call)
        self.assertIsNotNone(self.server.wait_log(r'breaker down: half_open -> closed'))
        status, _, body = self.server.admin_get('/health')
        self.assertEqual((status, body), (200, 'ready\n'))
        self.assertEqual(labelled(self.server, 'evdal_breaker_state', breaker='down'), 0)
        self.assertGreaterEqual(labelled(self.server, 'evdal_breaker_transitions_total',
                                         breaker='down', to='closed'), 1)

    def wait_fetch(self, calls, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.fetch(calls).results[next(iter(calls))]
            if pred(r):
                return r
            time.sleep(0.02)
        return None


if __name__ == '__main__':
    unittest.main()

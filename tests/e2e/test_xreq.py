"""Across requests (issue 17): coalescing, the result cache, hedged calls, retries within a
budget and circuit breakers, against the real server with the delay and fault backends (the
HTTP backend's own tests against a counting HTTP server come with it)."""
import json
import os
import re
import signal
import sqlite3
import subprocess
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

[lookup cached_pp]
backend = fault
mode = ok
delay_ms = 1
cache_ttl_ms = 60000
per_principal = true

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

[lookup always_retry]
backend = fault
mode = fail
retryable = true
retries = 10

[lookup down]
backend = fault
mode = ok
delay_ms = 1
fail_while_exists = @TMPDIR@/down
breaker = on
breaker_min_calls = 6
breaker_failure_ratio = 0.5
breaker_open_ms = 2000
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
        # max_queue_ms = 0: a busy machine must not make the loops shed what these tests send.
        cls.server = h.Server(h.config(lookups=LOOKUPS, admin_listen='127.0.0.1:0',
                                       io_threads=2, max_connections=1000, max_queue_ms=0))
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
        # The three callers must all have joined before the first one's deadline: on a machine
        # so busy that they did not (the coalesced counter tells), the round proves nothing and
        # runs again, with the deadlines spread wider.
        for attempt, step in enumerate((300, 600, 1200)):
            deadlines = (step, 2 * step, 3 * step)
            if self.leave_one_by_one(attempt, deadlines):
                return
        self.fail('the three callers never joined one shared call before the first left')

    def leave_one_by_one(self, attempt, deadlines):
        log_before = self.server.log_text().count('fault backend: call cancelled')
        joined_before = labelled(self.server, 'evdal_lookup_coalesced_total', lookup='hang')
        results = {}
        names = ['leave%d-%d' % (attempt, d) for d in deadlines]

        def one(name, deadline_ms):
            t0 = time.monotonic()
            resp = self.fetch({'h': ttypes.LookupCall(lookup='hang')}, deadline_ms=deadline_ms,
                              request_id=name, trace=True)
            results[name] = (resp.results['h'], time.monotonic() - t0)
        calls_before = labelled(self.server, 'evdal_lookup_backend_calls_total', lookup='hang')
        threads = [threading.Thread(target=one, args=(n, d)) for n, d in zip(names, deadlines)]
        # The first caller's call goes out first (it carries that caller's request id), then
        # the other two join it.
        threads[0].start()
        h.wait_until(lambda: labelled(self.server, 'evdal_lookup_backend_calls_total',
                                      lookup='hang') > calls_before, timeout=10,
                     what='the first caller\'s backend call')
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(30)
        for name, deadline in zip(names, deadlines):
            result, took = results[name]
            self.assertEqual(result.error.kind, EK.TIMEOUT, name)
            self.assertGreater(took, deadline / 1000 - 0.05, name)
        # One backend call, cancelled once, with the first caller's request id.
        m = self.server.wait_log(r'\[%s\] fault backend: call cancelled' % names[0], timeout=5)
        cancelled = self.server.log_text().count('fault backend: call cancelled') - log_before
        joined = labelled(self.server, 'evdal_lookup_coalesced_total', lookup='hang') - \
            joined_before
        if joined < 2:
            return False    # a caller came after the first had left: not this test's case
        for name, deadline in zip(names, deadlines):
            # Never answered past its own deadline: the call's span is the server's own clock
            # from the call's start to its answer (the client's wall clock also holds its
            # threads' scheduling on a busy machine, which is not the server's doing).
            span = results[name][0].span
            self.assertIsNotNone(span, name)
            self.assertLess((span.end_us - span.start_us) / 1e6,
                            deadline / 1000 + 0.1 * h.TIME_SCALE, name)
        self.assertIsNotNone(m, 'the shared call was not cancelled')
        self.assertEqual(cancelled, 1)
        return True

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

    def test_per_principal_keys_by_principal(self):
        def call(principal):
            return call_number(self.fetch({'c': ttypes.LookupCall(lookup='cached_pp')},
                                          principal=principal).results['c'])
        alice, bob = call('alice'), call('bob')
        self.assertNotEqual(alice, bob)
        self.assertEqual(call('alice'), alice)
        self.assertEqual(call('bob'), bob)

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
            # A critical call meeting the open breaker still fails the fetch.
            c, t = h.client(self.server)
            try:
                with self.assertRaises(ttypes.LookupFailed) as cm:
                    c.fetch(h.fetch_request({'d': ttypes.LookupCall(lookup='down',
                                                                    critical=True)}))
            finally:
                t.close()
            self.assertEqual(cm.exception.error.message, 'circuit open for down')
            # While it is open the backend sees nothing but the probes (2) once it half-opens.
            sent = labelled(self.server, 'evdal_lookup_backend_calls_total', lookup='down')
            for _ in range(20):
                self.fetch(call)
            self.assertLessEqual(labelled(self.server, 'evdal_lookup_backend_calls_total',
                                          lookup='down') - sent, 2)
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

    def test_retries_never_pass_the_deadline(self):
        """A backend that always fails retryably, ten retries allowed: the backoff (25, 50,
        100 ms...) stops when the next one would not fit, and the fetch answers in time."""
        t0 = time.monotonic()
        r = self.fetch({'a': ttypes.LookupCall(lookup='always_retry')}, deadline_ms=150,
                       trace=True).results['a']
        took = time.monotonic() - t0
        self.assertEqual(r.error.kind, EK.BACKEND)
        self.assertLess(took, 0.15 + 0.5)
        n = int(r.span.marks[0].split(':')[1])
        self.assertTrue(1 <= n <= 3, r.span.marks)

    def test_cli_and_traces_show_marks(self):
        cli = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-cli')
        argv = [cli, '--host', self.server.host, '--port', str(self.server.port), '--ascii',
                'fetch', '--trace', '--request-id', 'marks-1', '--call', 'c=cached:user_id=99']
        env = h.cli_env()
        subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True, env=env)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True, env=env)
        self.assertRegex(p.stdout, r'(?m)^c .*fault:c.* \[cache_hit\]$')
        p = subprocess.run(argv + ['--json'], capture_output=True, text=True, timeout=30,
                           check=True, env=env)
        self.assertEqual(json.loads(p.stdout)['results']['c']['span']['marks'], ['cache_hit'])
        status, _, body = self.server.admin_get('/traces.json')
        self.assertEqual(status, 200)
        spans = [s for t in json.loads(body)['recent'] if t['request_id'] == 'marks-1'
                 for s in t['spans']]
        self.assertIn(['cache_hit'], [s['marks'] for s in spans])
        self.assertIn([], [s['marks'] for s in spans])
        status, _, body = self.server.admin_get('/traces')
        self.assertIn('[cache_hit]', body)

    def wait_fetch(self, calls, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.fetch(calls).results[next(iter(calls))]
            if pred(r):
                return r
            time.sleep(0.02)
        return None


TAIL_LOOKUPS = """
[lookup plain]
backend = delay
delay_ms = 2
tail_every = 50
tail_ms = 200

[lookup hedged]
backend = delay
delay_ms = 2
tail_every = 50
tail_ms = 200
hedge = p95

[lookup control]
backend = delay
delay_ms = 2
"""


class HedgeTest(h.EvdalTestCase):
    """A backend with a 2% tail of 200 ms (every 50th call): hedging at its p95 cuts the p99
    of fetches at least 5x for under 10% extra backend calls, and no fetch outlives its
    deadline."""

    THREADS, PER_THREAD, DEADLINE_MS = 4, 300, 1000

    def run_load(self, server, lookup):
        latencies, errors = [], []

        def one():
            c, t = h.client(server)
            try:
                for _ in range(self.PER_THREAD):
                    t0 = time.monotonic()
                    r = c.fetch(h.fetch_request({'x': ttypes.LookupCall(lookup=lookup)},
                                                deadline_ms=self.DEADLINE_MS)).results['x']
                    latencies.append(time.monotonic() - t0)
                    if r.error is not None:
                        errors.append(r.error)
            finally:
                t.close()
        threads = [threading.Thread(target=one) for _ in range(self.THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        self.assertEqual(errors, [])
        latencies.sort()
        return latencies

    TAIL_MS, BUDGET_S, MIN_ROUNDS = 200, 120, 2

    def test_p95_hedging_cuts_the_tail(self):
        """Rounds of control, plain, then hedged. The 5x is measured against the tail itself
        (a hedged p99 of at most 40 ms), and only in a round quiet enough to show it: on a
        machine busy with other work, scheduling delays add tens of ms to fast fetches (a
        `control` lookup of the same 2 ms calls, without tail or hedge, measures that); a
        hedge waits for the p95 and then takes a fast fetch's time, two spans of that noise.
        The first round whose control p99 is at most a tenth of the tail decides. Every round
        must hold the extra calls and the deadlines. No quiet round within the budget: skipped,
        saying so (e2e/test_xreq_http makes the same claim against a real HTTP upstream)."""
        with h.Server(h.config(lookups=TAIL_LOOKUPS, admin_listen='127.0.0.1:0',
                               max_queue_ms=0)) as server:
            # The p95 needs 100 attempts (and a pass of its once-a-second recomputation)
            # before hedging starts: load until a hedge went out.
            deadline = time.monotonic() + h.scaled(60)
            while not labelled(server, 'evdal_lookup_hedges_sent_total', lookup='hedged'):
                self.assertLess(time.monotonic(), deadline, 'no hedge was ever sent')
                self.run_load(server, 'hedged')
            seen, until = [], time.monotonic() + self.BUDGET_S
            p99 = lambda xs: xs[int(len(xs) * 0.99) - 1]  # noqa: E731
            while True:
                control = self.run_load(server, 'control')
                before = labelled(server, 'evdal_lookup_backend_calls_total', lookup='hedged')
                plain = self.run_load(server, 'plain')
                hedged = self.run_load(server, 'hedged')
                calls = labelled(server, 'evdal_lookup_backend_calls_total',
                                 lookup='hedged') - before
                fetches = self.THREADS * self.PER_THREAD
                msg = 'p99 control %.1f ms, plain %.1f ms, hedged %.1f ms; %d calls for %d ' \
                      'fetches' % (p99(control) * 1000, p99(plain) * 1000, p99(hedged) * 1000,
                                   calls, fetches)
                seen.append(msg)
                self.assertGreater(p99(plain), 0.15, msg)  # the tail is there
                self.assertLess(calls, fetches * 1.10, msg)
                for xs in (plain, hedged):
                    self.assertLess(xs[-1], self.DEADLINE_MS / 1000 + 0.5, msg)
                if p99(control) * 1000 <= self.TAIL_MS / 10:
                    # Under ASan or TSan evdal's own latency moves the p95 a hedge waits
                    # for: there the hedged p99 must be clearly below the plain one, the 5x
                    # is the normal build's (as in test_xreq_http.hedged_p99_bound).
                    bound = p99(plain) * 800 if h.SANITIZED else self.TAIL_MS / 5
                    self.assertLessEqual(p99(hedged) * 1000, bound,
                                         'a quiet round did not show the claim: ' + msg)
                    break
                if len(seen) >= self.MIN_ROUNDS and time.monotonic() > until:
                    self.skipTest('never quiet enough to measure a %d ms tail: %s' % (
                        self.TAIL_MS, '; '.join(seen)))
            self.assertGreater(labelled(server, 'evdal_lookup_hedges_won_total',
                                        lookup='hedged'), 0)


class OutstandingTest(h.EvdalTestCase):
    """evdal_backend_calls_outstanding counts each lookup call once: three coalesced calls
    sharing one attempt are three, not four (the attempt is no call of its own)."""

    def test_coalesced_calls_count_once(self):
        with h.Server(h.config(lookups=LOOKUPS, admin_listen='127.0.0.1:0',
                               max_queue_ms=0)) as srv:
            clients = [h.client(srv) for _ in range(3)]
            try:
                for c, _ in clients:
                    c.send_fetch(h.fetch_request({'u': user_call('user', 99)}))
                # `user` answers after 1 s: all three are in flight, on one attempt.
                srv.wait_metric('evdal_lookup_coalesced_total{lookup="user"}', 2)
                self.assertEqual(srv.wait_metric('evdal_backend_calls_outstanding',
                                                 lambda v: v >= 3), 3)
                for c, _ in clients:
                    self.assertIsNone(c.recv_fetch().results['u'].error)
                srv.wait_metric('evdal_backend_calls_outstanding', 0)
            finally:
                for _, t in clients:
                    t.close()


RELOAD_LOOKUPS = """
[database db]
path = @TMPDIR@/reload.db

[lookup kept]
database = db
sql = SELECT name FROM t WHERE id = :id
cache_ttl_ms = 600000

[lookup changed]
database = db
sql = %s
cache_ttl_ms = 600000
"""


class ReloadKeepsUnchangedCachesTest(h.EvdalTestCase):
    """SIGHUP that changes a lookup drops its cached entries; a lookup whose definition (its
    keys and its database's) did not change keeps them."""

    def test_sighup_drops_only_the_changed_lookups_cache(self):
        before = RELOAD_LOOKUPS % 'SELECT name FROM t WHERE id = :id'
        after = RELOAD_LOOKUPS % "SELECT name || ' (new)' AS name FROM t WHERE id = :id"
        srv = h.Server(h.config(lookups=before, admin_listen='127.0.0.1:0'))
        db = sqlite3.connect(os.path.join(srv.tmpdir, 'reload.db'))
        self.addCleanup(db.close)
        db.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)')
        db.execute("INSERT INTO t VALUES (1, 'one')")
        db.commit()
        with srv:
            c, t = h.client(srv)
            self.addCleanup(t.close)

            def both():
                r = c.fetch(h.fetch_request({
                    k: ttypes.LookupCall(lookup=k, params={'id': ttypes.Value(int_value=1)})
                    for k in ('kept', 'changed')}, trace=True)).results
                return {k: (r[k].table.rows[0][0].text_value, r[k].span.marks or [])
                        for k in r}

            self.assertEqual(both(), {'kept': ('one', []), 'changed': ('one', [])})
            self.assertEqual(both(), {'kept': ('one', ['cache_hit']),
                                      'changed': ('one', ['cache_hit'])})
            # The table changes under both: only a lookup that reads it again can tell.
            db.execute("UPDATE t SET name = 'uno' WHERE id = 1")
            db.commit()
            with open(srv.config_path, 'w') as f:
                f.write(h.config(lookups=after.replace('@TMPDIR@', srv.tmpdir),
                                 admin_listen='127.0.0.1:0'))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reloaded', timeout=10), srv.log_tail())
            got = both()
            # Unchanged: still its cached row. Changed: a miss, and the new SQL's rows.
            self.assertEqual(got['kept'], ('one', ['cache_hit']))
            self.assertEqual(got['changed'], ('uno (new)', []))
            self.assertEqual(both()['changed'], ('uno (new)', ['cache_hit']))


class CacheBudgetReloadTest(h.EvdalTestCase):
    """[server] cache_max_bytes across reloads: the process's budget of all caches, and the
    bound of each lookup without a cache_max_bytes of its own."""

    LOOKUPS = RELOAD_LOOKUPS % 'SELECT name FROM t WHERE id = :id'

    def start(self, names, **server):
        """A server whose lookup `kept` reads table t (id -> names[id - 1]); returns it and a
        function that fetches `kept` for an id and gives the span's marks."""
        srv = h.Server(h.config(lookups=self.LOOKUPS, admin_listen='127.0.0.1:0', **server))
        db = sqlite3.connect(os.path.join(srv.tmpdir, 'reload.db'))
        self.addCleanup(db.close)
        db.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)')
        db.executemany('INSERT INTO t VALUES (?, ?)', enumerate(names, 1))
        db.commit()
        self.enterContext(srv)  # as `with srv:`, so its exit status is checked too
        c, t = h.client(srv)
        self.addCleanup(t.close)

        def marks(user):
            r = c.fetch(h.fetch_request({'k': ttypes.LookupCall(
                lookup='kept', params={'id': ttypes.Value(int_value=user)})},
                trace=True)).results['k']
            self.assertIsNone(r.error)
            return r.span.marks or []
        return srv, marks

    def reload(self, srv, extra='', **server):
        with open(srv.config_path, 'w') as f:
            f.write(h.config(lookups=self.LOOKUPS.replace('@TMPDIR@', srv.tmpdir) + extra,
                             admin_listen='127.0.0.1:0', **server))
        srv.send_signal(signal.SIGHUP)

    def test_refused_reload_keeps_the_cache_budget(self):
        """A reload that is refused keeps the configuration in use, the process's cache budget
        included: building the refused generation used to set the budget to its value, here
        0, and nothing was cached any more."""
        srv, marks = self.start(['one', 'two'])
        self.assertEqual(marks(1), [])
        self.assertEqual(marks(1), ['cache_hit'])
        # A file that cannot be used (an unknown backend), whose [server] says no cache.
        self.reload(srv, '\n[lookup bad]\nbackend = no_such_kind\n', cache_max_bytes=0)
        self.assertTrue(srv.wait_log(r'reload refused: the configuration in use is kept',
                                     timeout=10), srv.log_tail())
        self.assertEqual(marks(1), ['cache_hit'])
        # A new entry is still kept under the budget in use.
        self.assertEqual(marks(2), [])
        self.assertEqual(marks(2), ['cache_hit'])

    def test_reload_raises_the_bound_of_a_kept_cache(self):
        """A reload that raises [server] cache_max_bytes raises the bound of a lookup that takes
        it as its default, though the lookup's own keys did not change (its cache is kept):
        the kept cache used to keep the bound it was made with, so a table larger than the old
        value was never cached again until a restart."""
        srv, marks = self.start(['one', 'x' * 1000], cache_max_bytes=400)
        self.assertEqual(marks(1), [])
        self.assertEqual(marks(1), ['cache_hit'])
        # 1000 bytes of text: over the bound of 400.
        self.assertEqual(marks(2), [])
        self.assertEqual(marks(2), [])
        self.reload(srv, cache_max_bytes=1 << 20)
        self.assertTrue(srv.wait_log(r'reloaded', timeout=10), srv.log_tail())
        self.assertEqual(marks(2), [])
        self.assertEqual(marks(2), ['cache_hit'])


COUNT_LOOKUPS = """
[database db]
path = @TMPDIR@/count.db

[lookup count]
database = db
timeout_ms = 3600000
sql = WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT count(*) AS n FROM c
"""

# Rows the statement counts: a second or more of SQLite's time on any machine, far more than
# the first caller's deadline below.
COUNT_ROWS = 10000000


class SharedCallDeadlineTest(h.EvdalTestCase):
    """A caller who joins a shared SQLite call with a later deadline than the first caller's is
    answered within its own (README: each caller keeps its own deadline). SQLite cuts a
    statement at its call's deadline, which the shared statement took from the first caller
    when it started: the second caller used to get the first one's TIMEOUT at the first one's
    deadline."""

    def test_joiner_keeps_its_later_deadline(self):
        srv = h.Server(h.config(lookups=COUNT_LOOKUPS, admin_listen='127.0.0.1:0',
                                max_queue_ms=0))
        sqlite3.connect(os.path.join(srv.tmpdir, 'count.db')).close()
        with srv:
            # The second caller must join before the first one's deadline: on a machine so busy
            # that it did not (the coalesced counter tells), the round proves nothing and runs
            # again with the first deadline wider.
            for first_ms in (200, 400, 800):
                if self.joiner_round(srv, first_ms):
                    return
        self.fail('the second caller never joined the first one\'s call before it left')

    def joiner_round(self, srv, first_ms):
        call = {'c': ttypes.LookupCall(lookup='count',
                                       params={'n': ttypes.Value(int_value=COUNT_ROWS)})}
        later_ms = int(h.scaled(300) * 1000)
        joined_before = labelled(srv, 'evdal_lookup_coalesced_total', lookup='count') or 0
        calls_before = labelled(srv, 'evdal_lookup_backend_calls_total', lookup='count') or 0
        first = {}

        def fetch(deadline_ms):
            c, t = h.client(srv, timeout=h.scaled(300))
            try:
                return c.fetch(h.fetch_request(call, deadline_ms=deadline_ms))
            finally:
                t.close()

        thread = threading.Thread(target=lambda: first.update(r=fetch(first_ms)))
        thread.start()
        h.wait_until(lambda: (labelled(srv, 'evdal_lookup_backend_calls_total', lookup='count')
                              or 0) > calls_before, timeout=10, what='the first caller\'s call')
        second = fetch(later_ms).results['c']
        thread.join(h.scaled(300))
        self.assertEqual(first['r'].results['c'].error.kind, EK.TIMEOUT)
        if labelled(srv, 'evdal_lookup_coalesced_total', lookup='count') - joined_before < 1:
            return False
        self.assertIsNone(second.error)
        self.assertEqual(second.table.rows[0][0].int_value, COUNT_ROWS)
        # The statement that ran out of the first caller's time, and the one for the second.
        self.assertEqual(labelled(srv, 'evdal_lookup_backend_calls_total', lookup='count') -
                         calls_before, 2)
        return True


if __name__ == '__main__':
    unittest.main()

"""The fan-out engine's contract with frontends (issue 3): one result per call, typed errors,
deadlines, critical calls, tracing, request ids, admission, bulkheads and deduplication, all
through the generated Python client against the real server."""
import collections
import os
import re
import shutil
import tempfile
import threading
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes

EK = ttypes.ErrorKind

LOOKUPS = h.NAP_LOOKUP + """
[lookup flags]
backend = static
columns = flag, enabled
row.1 = checkout, 1
row.2 = "dark, mode", 0

""" + h.FAULT_LOOKUPS + """
[lookup needs_user]
backend = fault
mode = context
required_param = user_id

[lookup short]
backend = delay
delay_ms = 300
timeout_ms = 50

[lookup stuck_short]
backend = fault
mode = hang
timeout_ms = 100

[lookup double]
backend = fault
mode = double
delay_ms = 5

[lookup late]
backend = fault
mode = late
delay_ms = 300

[lookup threaded]
backend = fault
mode = thread
delay_ms = 20

[lookup narrow]
backend = delay
delay_ms = 200
max_concurrent = 2
max_queue = 1

[lookup single]
backend = delay
delay_ms = 150
max_concurrent = 1
max_queue = 0

[lookup pair]
backend = fault
mode = thread
delay_ms = 20
required_param = user_id
max_concurrent = 1
max_queue = 0
"""


def call(lookup, critical=None, timeout_ms=None, **params):
    p = {}
    for k, v in params.items():
        p[k] = v if isinstance(v, ttypes.Value) else (
            ttypes.Value(int_value=v) if isinstance(v, int) else ttypes.Value(text_value=v))
    return ttypes.LookupCall(lookup=lookup, params=p or None, critical=critical,
                             timeout_ms=timeout_ms)


class FanoutTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config(lookups=LOOKUPS, deadline_ms=2000, max_calls=8,
                                       admin_listen='127.0.0.1:0'))
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def client(self):
        c, t = h.client(self.server)
        self.addCleanup(t.close)
        return c

    def fetch(self, calls, **ctx):
        c = self.client()
        t0 = time.monotonic()
        r = c.fetch(h.fetch_request(calls, **ctx))
        return r, (time.monotonic() - t0) * 1000

    def assertError(self, result, kind, *words):
        self.assertIsNone(result.table, result)
        self.assertIsNotNone(result.error, result)
        self.assertEqual(result.error.kind, kind, result.error)
        for w in words:
            self.assertIn(w, result.error.message)

    # ---- results ----

    def test_one_result_per_call_table_xor_error(self):
        calls = {'a': call('nap', delay_ms=5), 'b': call('flags'), 'c': call('nope'),
                 'd': call('broken'), 'e': call('nap', delay_ms='x')}
        r, _ = self.fetch(calls)
        self.assertEqual(set(r.results), set(calls))
        for key, res in r.results.items():
            self.assertTrue((res.table is None) != (res.error is None), (key, res))
        self.assertEqual(r.results['b'].table.columns, ['flag', 'enabled'])
        self.assertEqual([[v.text_value or v.int_value for v in row] for row in r.results['b'].table.rows],
                         [['checkout', 1], ['dark, mode', 0]])
        self.assertError(r.results['c'], EK.UNKNOWN_LOOKUP, 'nope')
        self.assertError(r.results['d'], EK.BACKEND, 'injected failure')

    def test_bad_params_name_the_param(self):
        r, _ = self.fetch({
            'unknown': call('nap', colour='red'),
            'wrong_type': call('nap', delay_ms='soon'),
            'missing': call('needs_user'),
            'two_fields': call('nap', delay_ms=ttypes.Value(int_value=1, text_value='1')),
            'fine': call('needs_user', user_id=7),
        })
        self.assertError(r.results['unknown'], EK.BAD_PARAMS, 'colour', 'delay_ms')
        self.assertError(r.results['wrong_type'], EK.BAD_PARAMS, 'delay_ms', 'int', 'text')
        self.assertError(r.results['missing'], EK.BAD_PARAMS, 'user_id', 'required')
        self.assertError(r.results['two_fields'], EK.BAD_PARAMS, 'delay_ms')
        self.assertIsNone(r.results['fine'].error)

    # ---- deadlines ----

    def test_call_timeout_answers_at_the_deadline_and_cancels(self):
        r, ms = self.fetch({'slow': call('stuck', timeout_ms=100), 'fast': call('nap', delay_ms=10)},
                           request_id='deadline-call')
        self.assertError(r.results['slow'], EK.TIMEOUT, 'stuck')
        self.assertEqual(h.slept_ms(r.results['fast']), 10)
        self.assertGreaterEqual(ms, 95)
        self.assertLess(ms, h.scaled(600), 'the reply waited for the stuck call')
        self.assertTrue(self.server.wait_log(r'\[deadline-call\] fault backend: call cancelled',
                                             timeout=3), 'the stuck call was not cancelled')

    def test_staggered_deadlines_in_one_fetch(self):
        """Each call times out at its own deadline, whatever order the calls come in: the
        fetch's one timer moves earlier for a later call with a shorter budget ('a' after
        'b'), and is set again for the next deadline after each one passes."""
        r, ms = self.fetch({'b': call('stuck', timeout_ms=600), 'a': call('stuck', timeout_ms=100),
                            'c': call('nap', delay_ms=350)}, trace=True)
        self.assertError(r.results['a'], EK.TIMEOUT, 'after 100 ms')
        self.assertError(r.results['b'], EK.TIMEOUT, 'after 600 ms')
        self.assertEqual(h.slept_ms(r.results['c']), 350)
        ends = {k: r.results[k].span.end_us / 1000 for k in 'abc'}
        self.assertTrue(100 <= ends['a'], ends)
        self.assertTrue(ends['a'] < ends['c'] < ends['b'], ends)
        self.assertTrue(600 <= ends['b'] < 600 + h.scaled(1000), ends)
        self.assertLess(ms, h.scaled(1900),
                        'b waited for the request deadline (2 s), not its own 600 ms')

    def test_lookup_timeout(self):
        r, ms = self.fetch({'s': call('short')})
        self.assertError(r.results['s'], EK.TIMEOUT)
        self.assertLess(ms, h.scaled(250))

    def test_request_deadline_and_server_default(self):
        r, ms = self.fetch({'s': call('stuck'), 'n': call('nap', delay_ms=400)}, deadline_ms=150)
        self.assertError(r.results['s'], EK.TIMEOUT)
        self.assertError(r.results['n'], EK.TIMEOUT)
        self.assertLess(ms, h.scaled(500))
        r, ms = self.fetch({'s': call('stuck')})  # [server] deadline_ms = 2000
        self.assertError(r.results['s'], EK.TIMEOUT)
        self.assertGreaterEqual(ms, 1900)
        self.assertLess(ms, h.scaled(3000))

    def test_call_timeout_cannot_extend_the_lookups(self):
        """A call's timeout_ms larger than its lookup's does not lengthen it: the smaller wins."""
        r, ms = self.fetch({'s': call('stuck_short', timeout_ms=1000)})
        self.assertError(r.results['s'], EK.TIMEOUT, 'after 100 ms')
        self.assertLess(ms, h.scaled(700),
                        'the call waited for its own timeout_ms, not the lookup\'s')

    def test_smallest_budget_wins(self):
        r, ms = self.fetch({'n': call('nap', delay_ms=500, timeout_ms=1000)}, deadline_ms=120)
        self.assertError(r.results['n'], EK.TIMEOUT)
        self.assertLess(ms, h.scaled(450))

    # ---- critical ----

    def test_critical_failure_raises_and_cancels_the_rest(self):
        c = self.client()
        t0 = time.monotonic()
        with self.assertRaises(ttypes.LookupFailed) as cm:
            c.fetch(h.fetch_request({'must': call('broken', critical=True),
                                     'other': call('stuck')}))
        self.assertLess((time.monotonic() - t0) * 1000, h.scaled(500))
        self.assertEqual(cm.exception.call, 'must')
        self.assertEqual(cm.exception.error.kind, EK.BACKEND)
        # `broken` fails inside start(): a call planned after it may end before it started,
        # with no cancel to make. One that fails later finds the other call running, and
        # the backend's cancel must stop it.
        t0 = time.monotonic()
        with self.assertRaises(ttypes.LookupFailed) as cm:
            c.fetch(h.fetch_request({'must': call('short', critical=True),
                                     'other': call('stuck')}, request_id='crit-1'))
        self.assertLess((time.monotonic() - t0) * 1000, h.scaled(500))
        self.assertEqual((cm.exception.call, cm.exception.error.kind), ('must', EK.TIMEOUT))
        self.assertTrue(self.server.wait_log(r'\[crit-1\] fault backend: call cancelled',
                                             timeout=3), 'the other call was not cancelled')
        # A non-critical failure does not.
        r, _ = self.fetch({'may': call('broken'), 'ok': call('nap', delay_ms=1)})
        self.assertError(r.results['may'], EK.BACKEND)

    def test_critical_failure_names_the_critical_call(self):
        """Identical calls share one run; when it fails, LookupFailed names the call that was
        critical, whichever of them comes first (the server orders calls by key)."""
        c = self.client()
        for critical in ('a', 'b'):
            calls = {k: call('broken', critical=k == critical or None) for k in ('a', 'b')}
            with self.assertRaises(ttypes.LookupFailed) as cm:
                c.fetch(h.fetch_request(calls))
            self.assertEqual(cm.exception.call, critical)
            self.assertEqual(cm.exception.error.kind, EK.BACKEND)

    def test_critical_timeout_and_unknown(self):
        c = self.client()
        with self.assertRaises(ttypes.LookupFailed) as cm:
            c.fetch(h.fetch_request({'k': call('stuck', critical=True, timeout_ms=50)}))
        self.assertEqual(cm.exception.error.kind, EK.TIMEOUT)
        with self.assertRaises(ttypes.LookupFailed) as cm:
            c.fetch(h.fetch_request({'k': call('missing', critical=True), 'n': call('nap')}))
        self.assertEqual((cm.exception.call, cm.exception.error.kind), ('k', EK.UNKNOWN_LOOKUP))

    # ---- duplicate calls ----
    # `single` and `pair` admit one call at a time and queue none: two calls that ran
    # separately make one of them OVERLOADED, two that ran once share the result.

    def assertRuns(self, calls, runs):
        r, _ = self.fetch(calls, trace=True)
        overloaded = sorted(k for k, x in r.results.items()
                            if x.error is not None and x.error.kind == EK.OVERLOADED)
        self.assertEqual(len(overloaded), runs - 1, r.results)
        ok = [x for k, x in r.results.items() if k not in overloaded]
        for x in ok:
            self.assertIsNone(x.error, x)
        self.assertEqual(len({(x.span.start_us, x.span.end_us) for x in ok}), 1, ok)
        return r

    def test_duplicates_with_params_in_another_order_run_once(self):
        r = self.assertRuns({'a': call('pair', user_id=7, delay_ms=20),
                             'b': call('pair', delay_ms=20, user_id=7)}, runs=1)
        self.assertEqual(r.results['a'].table.rows[0][0].text_value, 'from a thread')

    def test_duplicates_compare_every_param(self):
        # One param in three differs, first or last: a run of its own.
        self.assertRuns({'a': call('pair', user_id=7, delay_ms=20),
                         'b': call('pair', user_id=8, delay_ms=20)}, runs=2)
        self.assertRuns({'a': call('pair', user_id=7, delay_ms=20),
                         'b': call('pair', delay_ms=21, user_id=7)}, runs=2)
        # Three identical calls among them, in any param order, are still one run.
        self.assertRuns({'a': call('pair', user_id=7, delay_ms=20),
                         'b': call('pair', delay_ms=20, user_id=7),
                         'c': call('pair', user_id=7, delay_ms=20, timeout_ms=None)}, runs=1)

    def test_duplicates_with_another_timeout_run_twice(self):
        """The time budget is part of what makes calls identical: sharing one run would let
        one call's timeout decide the other's result (see LookupCall in the IDL)."""
        self.assertRuns({'a': call('single', delay_ms=20, timeout_ms=1000),
                         'b': call('single', delay_ms=20, timeout_ms=900)}, runs=2)
        self.assertRuns({'a': call('single', delay_ms=20, timeout_ms=1000),
                         'b': call('single', delay_ms=20, timeout_ms=1000)}, runs=1)
        # No timeout_ms and one equal to the request's deadline give the same budget.
        self.assertRuns({'a': call('single', delay_ms=20),
                         'b': call('single', delay_ms=20, timeout_ms=2000)}, runs=1)

    # ---- invalid requests ----

    def test_invalid_requests(self):
        c = self.client()
        with self.assertRaises(ttypes.InvalidRequest) as cm:
            c.fetch(ttypes.FetchRequest(calls={}))
        self.assertIn('no calls', cm.exception.message)
        with self.assertRaises(ttypes.InvalidRequest) as cm:
            c.fetch(ttypes.FetchRequest(calls={'k%d' % i: call('nap') for i in range(9)}))
        self.assertIn('max_calls', cm.exception.message)
        self.assertIn('9', cm.exception.message)
        with self.assertRaises(ttypes.InvalidRequest) as cm:
            c.fetch(h.fetch_request({'k': call('nap')}, deadline_ms=0))
        self.assertIn('deadline_ms', cm.exception.message)
        self.assertPong(c)

    # ---- context, tracing, ids ----

    def test_context_reaches_the_backend(self):
        r, _ = self.fetch({'c': call('ctx')}, request_id='ctx-1', principal='alice',
                          trace=True, deadline_ms=900, attributes={'locale': 'fr', 'tenant': 't1'})
        row = r.results['c'].table.rows[0]
        self.assertEqual(row[0].text_value, 'ctx-1')
        self.assertEqual(row[1].text_value, 'alice')
        self.assertEqual(row[2].int_value, 1)
        self.assertTrue(0 < row[3].int_value <= 900, row[3])
        self.assertEqual(row[4].text_value, 'locale=fr;tenant=t1;')
        r, _ = self.fetch({'c': call('ctx')})
        self.assertIsNotNone(r.results['c'].table.rows[0][1].null_value)

    def test_trace_spans(self):
        r, _ = self.fetch({'a': call('nap', delay_ms=30), 'b': call('nap', delay_ms=60),
                           'x': call('nope')}, trace=True)
        for key in ('a', 'b'):
            s = r.results[key].span
            self.assertIsNotNone(s)
            self.assertLessEqual(0, s.start_us)
            self.assertLessEqual(s.start_us, s.end_us)
            self.assertEqual(s.backend, 'delay:nap')
        self.assertGreaterEqual(r.results['b'].span.end_us - r.results['b'].span.start_us, 60000)
        self.assertLessEqual(r.results['b'].span.end_us, r.server_us)
        self.assertIsNotNone(r.results['x'].span)
        r, _ = self.fetch({'a': call('nap', delay_ms=1)})
        self.assertIsNone(r.results['a'].span)

    def test_request_ids_and_server_time(self):
        r1, ms = self.fetch({'a': call('nap', delay_ms=50)})
        r2, _ = self.fetch({'a': call('nap', delay_ms=1)})
        self.assertTrue(r1.request_id and r2.request_id)
        self.assertNotEqual(r1.request_id, r2.request_id)
        self.assertGreaterEqual(r1.server_us, 50000)
        self.assertLessEqual(r1.server_us, ms * 1000 + 1000)
        r3, _ = self.fetch({'a': call('nap', delay_ms=1)}, request_id='mine')
        self.assertEqual(r3.request_id, 'mine')

    # ---- misbehaving backends ----

    def test_misbehaving_backends_are_contained(self):
        r, ms = self.fetch({'d': call('double'), 'l': call('late', timeout_ms=50),
                            't': call('threaded'), 'n': call('nap', delay_ms=5)})
        self.assertEqual(r.results['d'].table.rows[0][0].text_value, 'first')
        self.assertError(r.results['l'], EK.TIMEOUT)
        self.assertEqual(r.results['t'].table.rows[0][0].text_value, 'from a thread')
        self.assertLess(ms, h.scaled(250))
        # The late answer arrives after its request ended (the backend ignores the cancel):
        # the call is outstanding until then, and its answer is dropped. Then the server
        # still serves.
        self.server.wait_metric('evdal_backend_calls_outstanding', 0)
        self.assertPong(self.client())


class AdmissionTest(h.EvdalTestCase):
    """max_inflight, bulkheads and deduplication, each on a server of its own."""

    def test_max_inflight_answers_overloaded_at_once(self):
        with h.Server(h.config(lookups=LOOKUPS, max_inflight=2,
                               admin_listen='127.0.0.1:0')) as srv:
            busy = []
            for i in range(2):
                c, t = h.client(srv)
                self.addCleanup(t.close)
                # Long enough that the poll below surely sees both in flight.
                c.send_fetch(h.fetch_request({'n': call('nap', delay_ms=2000)}))
                busy.append(c)
            srv.wait_metric('evdal_inflight_requests', 2)
            c, t = h.client(srv)
            self.addCleanup(t.close)
            t0 = time.monotonic()
            with self.assertRaises(ttypes.Overloaded) as cm:
                c.fetch(h.fetch_request({'s': call('stuck')}, request_id='refused'))
            self.assertLess((time.monotonic() - t0) * 1000, h.scaled(100))
            self.assertGreater(cm.exception.retry_after_ms, 0)
            self.assertIn('max_inflight', cm.exception.message)
            for b in busy:
                self.assertEqual(h.slept_ms(b.recv_fetch().results['n']), 2000)
            # The refused fetch started nothing: no lookup of it was ever cancelled.
            self.assertNotIn('[refused]', srv.log_text())
            # Admission frees up again.
            self.assertEqual(h.slept_ms(c.fetch(h.fetch_request({'n': call('nap', delay_ms=1)}))
                                        .results['n']), 1)

    def _concurrent(self, srv, n, make_calls):
        results, errors = [None] * n, []

        def run(i):
            try:
                c, t = h.client(srv)
                try:
                    results[i] = c.fetch(h.fetch_request(make_calls(i)))
                finally:
                    t.close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        self.assertEqual(errors, [])
        return results

    @staticmethod
    def _outcomes(responses):
        return dict(collections.Counter(
            'ok' if r.results['k'].error is None
            else ttypes.ErrorKind._VALUES_TO_NAMES[r.results['k'].error.kind]
            for r in responses))

    def test_bulkhead_bounds_calls_across_requests(self):
        with h.Server(h.config(lookups=LOOKUPS)) as srv:
            t0 = time.monotonic()
            rs = self._concurrent(srv, 4, lambda i: {'k': call('narrow')})
            ms = (time.monotonic() - t0) * 1000
            # Two run, one waits its turn and runs next, one finds the queue full.
            self.assertEqual(self._outcomes(rs), {'ok': 3, 'OVERLOADED': 1}, rs)
            self.assertGreaterEqual(ms, 390, 'the queued call cannot have run alongside')
            # A queued call whose deadline passes while waiting gets TIMEOUT.
            rs = self._concurrent(srv, 3, lambda i: {'k': call('narrow', timeout_ms=300)})
            self.assertEqual(self._outcomes(rs), {'ok': 2, 'TIMEOUT': 1}, rs)
            self.assertPong(h.client(srv)[0])

    def test_duplicate_calls_run_once(self):
        with h.Server(h.config(lookups=LOOKUPS)) as srv:
            c, t = h.client(srv)
            self.addCleanup(t.close)
            # `single` admits one call at a time and queues none: two calls that ran
            # separately would make one of them OVERLOADED.
            r = c.fetch(h.fetch_request({'a': call('single', delay_ms=20),
                                         'b': call('single', delay_ms=20)}, trace=True))
            self.assertEqual(h.slept_ms(r.results['a']), 20)
            self.assertEqual(h.slept_ms(r.results['b']), 20)
            self.assertEqual(r.results['a'].span, r.results['b'].span)
            r = c.fetch(h.fetch_request({'a': call('single', delay_ms=20),
                                         'b': call('single', delay_ms=21)}))
            errors = [x.error.kind for x in r.results.values() if x.error is not None]
            self.assertEqual(errors, [EK.OVERLOADED])

    def test_shutdown_waits_for_worker_threads(self):
        """A backend finishing on a thread of its own posts back to its loop: shutdown must
        wait for it, whether its client is still there or already gone."""
        srv = h.Server(h.config(lookups=LOOKUPS, admin_listen='127.0.0.1:0'))
        with srv:
            # Long enough that the poll below surely sees both in flight.
            gone, t1 = h.client(srv)
            t_gone = time.monotonic()
            gone.send_fetch(h.fetch_request({'t': call('threaded', delay_ms=2000)}))
            waiting, t2 = h.client(srv)
            self.addCleanup(t2.close)
            waiting.send_fetch(h.fetch_request({'t': call('threaded', delay_ms=1500)}))
            srv.wait_metric('evdal_inflight_requests', 2)
            t1.close()
            srv.wait_metric('evdal_connections', 1)  # the close reached the server
            self.assertEqual(srv.stop(timeout=10), 0)
            self.assertGreaterEqual(time.monotonic() - t_gone, 2.0,
                                    'exited before the worker of the closed client finished')
            self.assertEqual(waiting.recv_fetch().results['t'].table.rows[0][0].text_value,
                             'from a thread')


class BackendConfigTest(h.EvdalTestCase):
    """Bad delay and static sections stop start-up, naming the file, the line and the key."""

    # (name, lookup section, line of the fault counting from the section's header, key,
    #  words of the message). Each runs as the only lookup of a file: [server] takes lines 1-2.
    CASES = [
        ('no_columns', '[lookup flags]\nbackend = static\nrow.1 = a, 1\n', 0, 'columns',
         ['required']),
        ('short_row', '[lookup flags]\nbackend = static\ncolumns = flag, on\nrow.1 = a, 1\n'
         'row.2 = b\n', 4, 'row.2', ['1 values for 2 columns']),
        ('long_row', '[lookup flags]\nbackend = static\ncolumns = flag, on\n'
         'row.1 = a, 1, x\n', 3, 'row.1', ['3 values for 2 columns']),
        ('open_quote', '[lookup flags]\nbackend = static\ncolumns = flag, on\n'
         'row.1 = "a, 1\n', 3, 'row.1', ['unterminated quote']),
        ('after_quote', '[lookup flags]\nbackend = static\ncolumns = flag, on\n'
         'row.1 = "a" b, 1\n', 3, 'row.1', ['text after a closing quote']),
        ('open_quote_columns', '[lookup flags]\nbackend = static\ncolumns = "flag, on\n', 2,
         'columns', ['unterminated quote']),
        ('delay_too_long', '[lookup nap]\nbackend = delay\ndelay_ms = 3600001\n', 2,
         'delay_ms', ['3600001', 'out of range']),
        ('delay_negative', '[lookup nap]\nbackend = delay\ndelay_ms = -5\n', 2, 'delay_ms',
         ['-5', 'out of range']),
        ('delay_not_int', '[lookup nap]\nbackend = delay\ndelay_ms = 1.5\n', 2, 'delay_ms',
         ['not an integer']),
    ]

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='evdal-e2e-cfg-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)

    def write(self, name, section):
        path = os.path.join(self.tmpdir, name + '.conf')
        with open(path, 'w') as f:
            f.write('[server]\nlisten = 127.0.0.1:0\n' + section)
        return path

    def assertNamesTheFault(self, r, path, section, line, key, words):
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 1, out)
        self.assertNotIn('listening on', out)
        group = section.split('\n', 1)[0].strip('[]')
        rx = re.compile(r'^%s:%d: \[%s\] %s: (.*)$' % (re.escape(path), 3 + line,
                                                       re.escape(group), re.escape(key)), re.M)
        m = rx.search(r.stderr)
        self.assertIsNotNone(m, 'expected %s in:\n%s' % (rx.pattern, r.stderr))
        for w in words:
            self.assertIn(w, m.group(1))
        # The fault is the only problem reported (no unread row keys blamed besides it).
        problems = [l for l in r.stderr.splitlines() if l.startswith(path + ':')]
        self.assertEqual(len(problems), 1, r.stderr)

    def test_check_config_names_file_line_and_key(self):
        for name, section, line, key, words in self.CASES:
            with self.subTest(name):
                path = self.write(name, section)
                r = h.run_evdal(['--config', path, '--check-config'])
                self.assertNamesTheFault(r, path, section, line, key, words)

    def test_start_fails_the_same_way(self):
        for name, section, line, key, words in (self.CASES[1], self.CASES[-2]):
            with self.subTest(name):
                path = self.write(name, section)
                r = h.run_evdal(['--config', path])
                self.assertNamesTheFault(r, path, section, line, key, words)

    def test_good_sections_pass(self):
        path = self.write('good', LOOKUPS)
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == '__main__':
    unittest.main()

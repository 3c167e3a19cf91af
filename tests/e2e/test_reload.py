"""SIGHUP reloads the lookups without dropping a connection or failing a request in flight,
and refuses a bad configuration, keeping the one in use (issue 6)."""
import signal
import unittest

import evdal_harness as h
from evdal_harness import ttypes

BEFORE = h.NAP_LOOKUP + """
[lookup flags]
backend = static
columns = flag
row.1 = old
"""

AFTER = """
[lookup nap]
backend = delay
delay_ms = 7
description = Now short

[lookup nap2]
backend = delay
delay_ms = 3
"""

BROKEN = AFTER + """
[lookup broken]
backend = nosuch
delay_ms = soon
"""

# A valid lookup beside BROKEN's problems: built with the rest, then refused with it.
PHANTOM = BROKEN.replace('[lookup nap2]', '[lookup phantom]')


class ReloadTest(h.EvdalTestCase):
    def reload(self, srv, text, marker):
        with open(srv.config_path, 'w') as f:
            f.write(h.config(lookups=text))
        srv.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(marker, timeout=5), srv.log_tail())

    def test_reload_adds_changes_removes_and_refuses_bad_configs(self):
        with h.Server(h.config(lookups=BEFORE, admin_listen='127.0.0.1:0')) as srv:
            c, t = h.client(srv)
            self.addCleanup(t.close)
            busy, t2 = h.client(srv)
            self.addCleanup(t2.close)
            busy.send_fetch(h.fetch_request({'n': h.nap_call(2000)}))
            srv.wait_metric('evdal_inflight_requests', 1)  # in flight before the reload

            self.reload(srv, AFTER, r'reloaded .*3? ?lookups?.*added: nap2; removed: flags')
            # The request in flight finishes on the lookups it started with.
            self.assertEqual(h.slept_ms(busy.recv_fetch().results['n']), 2000)
            # The same connections see the new lookups.
            names = {l.name: l for l in c.lookups()}
            self.assertEqual(set(names), {'nap', 'nap2'})
            self.assertEqual(names['nap'].description, 'Now short')
            r = c.fetch(h.fetch_request({'a': ttypes.LookupCall(lookup='nap'),
                                         'b': ttypes.LookupCall(lookup='nap2'),
                                         'c': ttypes.LookupCall(lookup='flags')}))
            self.assertEqual(h.slept_ms(r.results['a']), 7)
            self.assertEqual(h.slept_ms(r.results['b']), 3)
            self.assertEqual(r.results['c'].error.kind, ttypes.ErrorKind.UNKNOWN_LOOKUP)
            self.assertEqual(h.slept_ms(busy.fetch(h.fetch_request({'n': h.nap_call(1)}))
                                        .results['n']), 1)

            # A bad file is refused, each problem logged with its line, the old lookups kept.
            self.reload(srv, BROKEN, r'the configuration in use is kept')
            log = srv.log_text()
            self.assertRegex(log, r'reload refused: .*evdal\.conf:\d+: \[lookup broken\] backend: '
                                  r'unknown backend "nosuch"')
            self.assertRegex(log, r'reload refused: .*evdal\.conf:\d+: \[lookup broken\] delay_ms')
            self.assertEqual({l.name for l in c.lookups()}, {'nap', 'nap2'})
            self.assertPong(busy)

    def test_refused_reload_adds_no_lookup_to_metrics(self):
        """A reload is built (its lookups opened) before it is refused or applied. Its
        lookups' series were registered with /metrics then, for good, so a refused file's
        lookups, which never served, were listed as if they had; now they are registered when
        the reload is applied."""
        with h.Server(h.config(lookups=BEFORE, admin_listen='127.0.0.1:0')) as srv:
            self.reload(srv, PHANTOM, r'the configuration in use is kept')
            status, _, body = srv.admin_get('/metrics')
            self.assertEqual(status, 200)
            self.assertIn('evdal_lookup_calls_total{lookup="flags"', body)
            self.assertEqual([l for l in body.splitlines() if 'phantom' in l], [])
            self.reload(srv, AFTER.replace('[lookup nap2]', '[lookup phantom]'),
                        r'reloaded .*added: phantom')
            self.assertIsNotNone(srv.metric('evdal_lookup_calls_total{lookup="phantom",'
                                            'outcome="ok"}'))


if __name__ == '__main__':
    unittest.main()

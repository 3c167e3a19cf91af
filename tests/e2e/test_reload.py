"""SIGHUP reloads the lookups without dropping a connection or failing a request in flight,
and refuses a bad configuration, keeping the one in use (issue 6)."""
import os
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

    def test_unreadable_file_is_a_refused_reload(self):
        """A SIGHUP while the file is gone (a deploy that replaces it): refused and logged,
        but evdal_config_reloads_total{result="refused"} did not count it (only a file that
        parsed was counted), so an alert on refused reloads missed it."""
        refused = 'evdal_config_reloads_total{result="refused"}'
        with h.Server(h.config(lookups=BEFORE, admin_listen='127.0.0.1:0')) as srv:
            self.assertEqual(srv.metric(refused), 0)
            os.rename(srv.config_path, srv.config_path + '.away')
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reload refused: .*evdal\.conf', 5), srv.log_tail())
            srv.wait_metric(refused, 1)
            os.rename(srv.config_path + '.away', srv.config_path)
            self.reload(srv, AFTER, r'reloaded .*evdal\.conf')
            srv.wait_metric('evdal_config_reloads_total{result="done"}', 1)
            self.assertEqual(srv.metric(refused), 1)

    def test_start_only_server_keys_are_said_to_need_a_restart(self):
        """drain_ms, reuse_port and stall_warn_ms are read once, at start (the SIGTERM
        handler, the listener, the loops' watch), but a reload that changed them said nothing,
        as if applied. Each now gets the restart warning; deadline_ms, which applies at once,
        does not."""
        restart = 'take effect at the next restart'
        with h.Server(h.config(lookups=BEFORE)) as srv:
            n = 0
            for key, value in (('deadline_ms', 4000), ('drain_ms', 2000),
                               ('reuse_port', 'true'), ('stall_warn_ms', 50)):
                with open(srv.config_path, 'w') as f:
                    f.write(h.config(lookups=BEFORE, **{key: value}))
                srv.send_signal(signal.SIGHUP)
                n += 1
                h.wait_until(lambda: srv.log_text().count('reloaded ') == n,
                             what='reload %d (%s)' % (n, key))
                if key == 'deadline_ms':
                    self.assertNotIn(restart, srv.log_text())
                else:
                    self.assertEqual(srv.log_text().count(restart), n - 1,
                                     '%s: %s' % (key, srv.log_tail()))
                with open(srv.config_path, 'w') as f:  # back, for the next key alone
                    f.write(h.config(lookups=BEFORE))


if __name__ == '__main__':
    unittest.main()

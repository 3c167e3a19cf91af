"""The Thrift upstream backend under valgrind across a reload: SIGHUP makes a new generation,
the old one's per-loop connections are closed on their own loops, later, after the upstream's
config that they belong to has gone; valgrind sees every read of freed memory that ASan would,
in the normal build."""
import os
import re
import shutil
import signal
import unittest

import evdal_harness as h
from evdal_harness import ttypes
import test_thrift_upstream as tu

VALGRIND = shutil.which('valgrind')


@unittest.skipUnless(VALGRIND, 'valgrind is not installed')
class ThriftUpstreamValgrindTest(h.EvdalTestCase):
    def test_reload_closes_the_old_connections_cleanly(self):
        db = h.sample_db()
        wrapper = [VALGRIND, '--error-exitcode=99', '--track-fds=no', '--num-callers=30']
        supp = os.path.join(h.EVDAL_SOURCE_DIR, 'tests', 'valgrind.supp')
        if os.path.exists(supp):
            wrapper.append('--suppressions=' + supp)
        with h.Server(h.config(lookups=tu.REMOTE_LOOKUPS % db)) as r:
            slow = dict(deadline_ms=20000, shutdown_timeout_ms=20000)
            before = tu.local_config(r.address, connections=2, **slow)
            after = tu.local_config(r.address, connections=1, **slow)
            l = h.Server(before, wrapper=wrapper, start_timeout=120, stop_timeout=120,
                         env={'G_SLICE': 'always-malloc', 'G_DEBUG': 'gc-friendly'})
            with l:
                c, t = h.client(l, timeout=30)
                try:
                    tu.wait_ok(self, c, 'r_flags', timeout=60)
                    # 2 loops x 2 connections, then 2 x 1 once the old generation is gone.
                    h.wait_until(lambda: h.sockets_to(l.pid, r.port) == 4, timeout=60)
                    with open(l.config_path, 'w') as f:
                        f.write(after)
                    l.send_signal(signal.SIGHUP)
                    self.assertTrue(l.wait_log(r'reloaded', timeout=60), l.log_tail())
                    resp = c.fetch(h.fetch_request({'f': tu.call('r_flags')}))
                    self.assertIsNone(resp.results['f'].error)
                    h.wait_until(lambda: h.sockets_to(l.pid, r.port) == 2, timeout=60)
                    resp = c.fetch(h.fetch_request({'f': tu.call('r_flags')}))
                    self.assertIsNone(resp.results['f'].error)
                finally:
                    t.close()
                rc = l.stop(120)
                log = l.log_text()
                summary = '\n'.join([x for x in log.splitlines() if x.startswith('==')][-80:])
                for bad in ('Invalid read', 'Invalid write', 'Invalid free'):
                    self.assertNotIn(bad, log, summary)
                self.assertEqual(rc, 0, summary)
                self.assertRegex(log, r'ERROR SUMMARY: 0 errors')


if __name__ == '__main__':
    unittest.main()

"""HTTP lookups under valgrind (issue 16): answers, every failure kind, a timeout, a cancel, a
reload that frees a generation's per-loop clients, and shutdown with kept-alive connections,
without memory errors or definite leaks."""
import os
import shutil
import signal
import unittest

import evdal_harness as h
from evdal_harness import ttypes
from http_upstream import UpstreamServer
from test_http import EK, V, call, evdal_config, rows

VALGRIND = shutil.which('valgrind')


@unittest.skipUnless(VALGRIND, 'valgrind is not installed')
class HttpUnderValgrind(h.EvdalTestCase):
    def test_http_paths_under_valgrind(self):
        wrapper = [VALGRIND, '--leak-check=full', '--errors-for-leak-kinds=definite',
                   '--error-exitcode=99', '--track-fds=no', '--num-callers=30']
        supp = os.path.join(h.EVDAL_SOURCE_DIR, 'tests', 'valgrind.supp')
        if os.path.exists(supp):
            wrapper.append('--suppressions=' + supp)
        with UpstreamServer() as up:
            # No shedding (max_queue_ms = 0): under valgrind on a busy machine a loop's lag
            # passes the default 500 ms, and this run is about memory, not admission.
            text = evdal_config('http://127.0.0.1:%d' % up.port, slow_timeout=1500,
                                timeout=25000, deadline_ms=30000, shutdown_timeout_ms=20000,
                                max_queue_ms=0)
            server = h.Server(text, wrapper=wrapper, start_timeout=120, stop_timeout=120,
                              env={'G_SLICE': 'always-malloc', 'G_DEBUG': 'gc-friendly'})
            with server:
                c, t = h.client(server, timeout=60)
                try:
                    res = c.fetch(h.fetch_request({
                        'items': call('items', n=3),
                        'long': call('items', n=500),   # past the inline limit: a worker
                        'status': call('status', code=500),
                        'invalid': call('get', what='invalid', n=0),
                        'path': call('missing_path'),
                        'big': call('get', what='chunked', n=3 * 1024 * 1024),
                        'drop': call('get', what='drop', n=0),
                        'slow': call('slow', ms=5000),
                        'null': call('echo', a=None, b='x', n=1),
                        'ctx': call('ctx'),
                    }, request_id='vg\r\n', principal='Zoë', attributes={'k': 'v\n'})).results
                    self.assertEqual(len(rows(res['items'])[1]), 3)
                    self.assertEqual(len(rows(res['long'])[1]), 500)
                    self.assertEqual(res['slow'].error.kind, EK.TIMEOUT)
                    for k in ('status', 'invalid', 'path', 'big', 'drop'):
                        self.assertEqual(res[k].error.kind, EK.BACKEND, k)
                    # a critical failure cancels a request in flight
                    with self.assertRaises(ttypes.LookupFailed):
                        c.fetch(h.fetch_request({
                            'slow': call('slow_long', ms=5000),
                            'broken': ttypes.LookupCall(lookup='status', critical=True,
                                                        params={'code': V(int_value=503)})}))
                    # a reload: the old generation's clients are freed on their loops
                    server.send_signal(signal.SIGHUP)
                    self.assertTrue(server.wait_log(r'reloaded', timeout=60), server.log_tail())
                    self.assertEqual(len(rows(c.fetch(h.fetch_request(
                        {'a': call('items', n=1)})).results['a'])[1]), 1)
                finally:
                    t.close()
            self.assertEqual(server.returncode, 0, server.log_tail())


if __name__ == '__main__':
    unittest.main()

"""The whole mixed page of deploy/evdal-mixed.conf (issue 16): five SQLite lookups, the
recommendations from an HTTP service (tests/e2e/http_upstream.py on the sample database), the
session and the feature flags from a real redis-server, in one fetch. Then one backend down at
a time (the HTTP service, then Redis): every other result is what it was, the missing one a
typed error, and the page answers within its lookups' budgets. Exits 77 (skipped) without
redis-server (test_redis's Redis)."""
import os
import re
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes
from http_upstream import UpstreamServer, sqlite_recommender
from test_redis import Redis, cells

EK = ttypes.ErrorKind
CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal-mixed.conf')
SQLITE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions']
SESSION = [['cart_items', '3'], ['locale', 'en-GB'], ['user_id', '42']]
FLAGS = [['dark_mode', '0'], ['new_checkout', '1'], ['recommendations_v2', '1']]
RECS_SQL = ('SELECT p.id, p.name, p.price_cents FROM products p WHERE p.category = '
            '(SELECT favorite_category FROM users WHERE id = ?) ORDER BY p.popularity DESC '
            'LIMIT 5')


def mixed_config(db, sock, recs_port):
    with open(CONF) as f:
        text = f.read()
    for key, value in (('listen', '127.0.0.1:0'), ('admin_listen', '127.0.0.1:0'),
                       ('io_threads', '2'), ('path', db), ('address', sock),
                       ('base_url', 'http://127.0.0.1:%d' % recs_port)):
        text, n = re.subn(r'^%s = \S+' % key, '%s = %s' % (key, value), text, count=1,
                          flags=re.M)
        assert n == 1, key
    # The SQLite lookups get room on a busy machine; Redis (20 ms) and HTTP (80 ms) keep theirs.
    return re.sub(r'(?m)^timeout_ms = (200|300)$', 'timeout_ms = 5000', text)


class MixedPageTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = h.sample_db()
        cls.redis = Redis().start()
        cls.redis.cmd('HSET', 'feature_flags', 'new_checkout', '1', 'dark_mode', '0',
                      'recommendations_v2', '1')
        cls.redis.cmd('HSET', 'session:s42', 'user_id', '42', 'cart_items', '3',
                      'locale', 'en-GB')

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def page(self, server):
        uid = {'user_id': ttypes.Value(int_value=42)}
        calls = {name: ttypes.LookupCall(lookup=name, params=uid)
                 for name in SQLITE + ['recommended_products']}
        calls['feature_flags'] = ttypes.LookupCall(lookup='feature_flags')
        calls['session'] = ttypes.LookupCall(
            lookup='session', params={'session_id': ttypes.Value(text_value='s42')})
        c, t = h.client(server)
        try:
            t0 = time.monotonic()
            results = c.fetch(h.fetch_request(calls)).results
            return results, time.monotonic() - t0
        finally:
            t.close()

    def test_one_fetch_over_sqlite_redis_and_http_with_one_down_at_a_time(self):
        import sqlite3
        db = sqlite3.connect('file:%s?mode=ro' % self.db, uri=True)
        self.addCleanup(db.close)
        recs = [list(r) for r in db.execute(RECS_SQL, (42,))]
        up = UpstreamServer(recommend=sqlite_recommender(self.db)).start()
        try:
            with h.Server(mixed_config(self.db, self.redis.sock, up.port)) as s:
                # Every loop's Redis connections up first: a loop still connecting would fail.
                deadline = time.monotonic() + 20
                while s.metric('evdal_redis_connections{database="cache"}') != 2 * 2:
                    self.assertLess(time.monotonic(), deadline, s.log_tail())
                    time.sleep(0.05)
                all_up, _ = self.page(s)
                for name in SQLITE:
                    self.assertIsNone(all_up[name].error, name)
                self.assertEqual([[c.text_value if c.int_value is None else c.int_value
                                   for c in row]
                                  for row in all_up['recommended_products'].table.rows], recs)
                self.assertEqual(sorted(cells(all_up['session'])), SESSION)
                self.assertEqual(sorted(cells(all_up['feature_flags'])), FLAGS)

                up.stop()   # the HTTP service goes away
                up = None
                no_http, took = self.page(s)
                self.assertEqual(no_http['recommended_products'].error.kind, EK.BACKEND)
                self.assertIn('upstream recs', no_http['recommended_products'].error.message)
                for name in SQLITE + ['session', 'feature_flags']:
                    self.assertEqual(no_http[name], all_up[name], name)
                self.assertLess(took, 10)   # no wait on what is missing (wide: busy machines)

                self.redis.kill()   # then Redis too
                no_redis, took = self.page(s)
                for name in ('session', 'feature_flags'):
                    self.assertEqual(no_redis[name].error.kind, EK.BACKEND, no_redis[name])
                for name in SQLITE:
                    self.assertEqual(no_redis[name], all_up[name], name)
                self.assertEqual(no_redis['recommended_products'].error.kind, EK.BACKEND)
                self.assertLess(took, 10)
        finally:
            if up is not None:
                up.stop()
            if self.redis.proc is None:
                self.redis.start()


if __name__ == '__main__':
    unittest.main()

"""The mixed page of deploy/evdal-mixed.conf, its Redis part (issue 16): the session and the
feature flags come from a real redis-server, the rest of the page from the sample SQLite
database. With Redis down or asleep, every other result is still right and the Redis ones are
typed errors within their deadline. (The HTTP part of the file is tested by test_mixed_http, the
whole page by test_mixed_page; HTTP and PostgreSQL are cut out here so that this test needs
neither a recommendations service nor PostgreSQL.) Exits 77 (skipped)
without redis-server."""
import os
import re
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes
from test_redis import Redis, call, cells

EK = ttypes.ErrorKind
CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal-mixed.conf')
SQLITE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions']
SESSION = [['cart_items', '3'], ['locale', 'en-GB'], ['user_id', '42']]
FLAGS = [['dark_mode', '0'], ['new_checkout', '1'], ['recommendations_v2', '1']]


def mixed_config(db, sock):
    with open(CONF) as f:
        text = f.read()
    text = re.sub(r'# ---- HTTP/JSON .*?# ---- end of HTTP/JSON ----\n', '', text, flags=re.S)
    # Without PostgreSQL here (e2e/test_mixed_page has it), the orders come from SQLite.
    text = re.sub(r'\[database orders\].*?\n\n', '', text, flags=re.S)
    text = text.replace('database = orders', 'database = main')
    for key, value in (('listen', '127.0.0.1:0'), ('admin_listen', '127.0.0.1:0'),
                       ('io_threads', '2'), ('path', db), ('address', sock)):
        text, n = re.subn(r'^%s = \S+' % key, '%s = %s' % (key, value), text, count=1,
                          flags=re.M)
        assert n == 1, key
    return text


class MixedRedisTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = h.sample_db()
        cls.redis = Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def seed(self):
        self.redis.cmd('HSET', 'feature_flags', 'new_checkout', '1', 'dark_mode', '0',
                       'recommendations_v2', '1')
        self.redis.cmd('HSET', 'session:s42', 'user_id', '42', 'cart_items', '3',
                       'locale', 'en-GB')

    def page(self, server):
        calls = {name: call(name, user_id=42) for name in SQLITE}
        calls['feature_flags'] = call('feature_flags')
        calls['session'] = call('session', session_id='s42')
        c, t = h.client(server)
        try:
            t0 = time.monotonic()
            results = c.fetch(h.fetch_request(calls)).results
            return results, time.monotonic() - t0
        finally:
            t.close()

    def test_page_with_redis_up_down_and_slow(self):
        self.seed()
        with h.Server(mixed_config(self.db, self.redis.sock)) as s:
            up, _ = self.page(s)
            for name in SQLITE:
                self.assertIsNone(up[name].error, name)
            self.assertTrue(cells(up['user']))
            self.assertEqual(sorted(cells(up['session'])), SESSION)
            self.assertEqual(sorted(cells(up['feature_flags'])), FLAGS)

            self.redis.kill()
            down, took = self.page(s)
            for name in SQLITE:
                self.assertEqual(down[name], up[name], name)
            for name in ('session', 'feature_flags'):
                self.assertEqual(down[name].error.kind, EK.BACKEND, down[name])
                self.assertIn('database cache', down[name].error.message)
            self.assertLess(took, 1.0)   # the page's deadline, with a margin

            self.redis.start()
            self.seed()
            # Every connection of both IO loops back up (the backoff is at most 2 s): a page
            # served on a loop still waiting for its reconnect would fail, not time out.
            deadline = time.monotonic() + 20
            while s.metric('evdal_redis_connections{database="cache"}') != 2 * 2:
                self.assertLess(time.monotonic(), deadline, s.log_tail())
                time.sleep(0.05)
            self.assertEqual(sorted(cells(self.page(s)[0]['session'])), SESSION)
            self.redis.cmd('DEBUG', 'SLEEP', '2', wait=False)
            self.redis.wait_asleep()
            slow, took = self.page(s)
            for name in SQLITE:
                self.assertEqual(slow[name], up[name], name)
            for name in ('session', 'feature_flags'):
                self.assertEqual(slow[name].error.kind, EK.TIMEOUT, slow[name])
            self.assertLess(took, 1.5)   # 20 ms lookups, not the 2 s sleep

            back = None
            deadline = time.monotonic() + 20
            while back is None or back['session'].error is not None:
                self.assertLess(time.monotonic(), deadline)
                back, _ = self.page(s)
            self.assertEqual(sorted(cells(back['session'])), SESSION)
            self.assertEqual(sorted(cells(back['feature_flags'])), FLAGS)


if __name__ == '__main__':
    unittest.main()

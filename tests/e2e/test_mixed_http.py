"""The mixed page of deploy/evdal-mixed.conf (issue 16), HTTP part: the page with
recommended_products from the sample recommendations service (tests/e2e/http_upstream.py
--db), the others from SQLite. (The Redis and PostgreSQL parts of the file are cut out here,
so that this test needs neither server: test_mixed_redis tests Redis, test_mixed_page the
whole page.) The HTTP answers must equal what the SQLite lookup of deploy/evdal.conf answers;
then with the service down, slow, or failing, every other result of the page is still right,
the HTTP one a typed error, and the page answers within its lookup's deadline, not the
service's."""
import os
import re
import sqlite3
import time
import unittest

import evdal_harness as h
from evdal_harness import ttypes
from http_upstream import UpstreamServer, sqlite_recommender

CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal-mixed.conf')
DB = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'sample.db')
PAGE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
        'recommended_products']
EK = ttypes.ErrorKind
RECS_SQL = ('SELECT p.id, p.name, p.price_cents FROM products p WHERE p.category = '
            '(SELECT favorite_category FROM users WHERE id = ?) ORDER BY p.popularity DESC '
            'LIMIT 5')


def cell(v):
    for f in ('int_value', 'real_value', 'text_value', 'blob_value'):
        if getattr(v, f) is not None:
            return getattr(v, f)
    return None


def table(result):
    if result.error is not None:
        raise AssertionError('lookup failed: %r' % (result.error,))
    return [[cell(v) for v in row] for row in result.table.rows]


def page_request(user_id):
    uid = {'user_id': ttypes.Value(int_value=user_id)}
    return h.fetch_request({name: ttypes.LookupCall(lookup=name, params=uid) for name in PAGE})


STATIC_FLAGS = """[lookup feature_flags]
backend = static
columns = flag, enabled
row.1 = new_checkout, 1
row.2 = dark_mode, 0
row.3 = recommendations_v2, 1
"""


def mixed_config(port, recs_timeout_ms):
    with open(CONF) as f:
        text = f.read()
    # Without PostgreSQL here (e2e/test_mixed_page has it), the orders come from SQLite.
    text = re.sub(r'\[database orders\].*?\n\n', '', text, flags=re.S)
    text = text.replace('database = orders', 'database = main')
    text = re.sub(r'# ---- Redis .*?# ---- end of Redis ----\n', '', text, flags=re.S)
    text = text.replace('listen = 127.0.0.1:9090', 'listen = 127.0.0.1:0')
    text = text.replace('path = sample.db', 'path = ' + DB)
    text = text.replace('admin_listen = 127.0.0.1:9091', 'admin_listen = 127.0.0.1:0')
    text = text.replace('base_url = http://127.0.0.1:8081', 'base_url = http://127.0.0.1:%d' % port)
    text = re.sub(r'(?m)^max_queue_ms = \d+', 'max_queue_ms = 0', text)
    # Without Redis here (e2e/test_mixed_redis has it), the flags are a table in the config.
    text = re.sub(r'# ---- Redis .*?# ---- end of Redis ----\n', STATIC_FLAGS, text, flags=re.S)
    # The SQLite lookups get room on a busy CI machine (and the fetch's deadline with them: at
    # 1 s it would cut their 5 s); recommended_products keeps the bound the test measures.
    text = re.sub(r'(?m)^timeout_ms = (200|300)$', 'timeout_ms = 5000', text)
    text = re.sub(r'(?m)^deadline_ms = \d+', 'deadline_ms = 10000', text)
    text = re.sub(r'(?m)^timeout_ms = 80$', 'timeout_ms = %d' % recs_timeout_ms, text)
    return text


@unittest.skipUnless(os.path.exists(DB), 'deploy/sample.db not built (tools/dev.sh builds it)')
class MixedPage(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = sqlite3.connect('file:%s?mode=ro' % DB, uri=True)
        cls.addClassCleanup(cls.db.close)
        cls.n_users = cls.db.execute('SELECT count(*) FROM users').fetchone()[0]

    def sqlite_rows(self, name, user_id):
        sql = {
            'user': 'SELECT id, name, email, country, created_at FROM users WHERE id = ?',
            'permissions': 'SELECT DISTINCT p.name FROM user_roles ur JOIN role_permissions rp '
                           'ON rp.role_id = ur.role_id JOIN permissions p ON p.id = '
                           'rp.permission_id WHERE ur.user_id = ? ORDER BY p.name',
        }.get(name)
        return None if sql is None else [list(r) for r in self.db.execute(sql, (user_id,))]

    def check_rest_of_page(self, results, user_id):
        """Every lookup but recommended_products answered, and right where checked here."""
        for name in PAGE:
            if name != 'recommended_products':
                self.assertIsNone(results[name].error, name)
        for name in ('user', 'permissions'):
            self.assertEqual(table(results[name]), self.sqlite_rows(name, user_id), name)

    def test_page_merges_sqlite_static_and_http(self):
        with UpstreamServer(recommend=sqlite_recommender(DB)) as up, \
                h.Server(mixed_config(up.port, 2000)) as srv:
            c, t = h.client(srv)
            try:
                for user_id in (1, 2, 77, self.n_users // 2, self.n_users):
                    res = c.fetch(page_request(user_id)).results
                    self.check_rest_of_page(res, user_id)
                    recs = res['recommended_products']
                    self.assertEqual(recs.table.columns, ['id', 'name', 'price_cents'])
                    self.assertEqual(table(recs), [list(r) for r in
                                                   self.db.execute(RECS_SQL, (user_id,))])
                    self.assertEqual(len(table(recs)), 5)
            finally:
                t.close()
            self.assertEqual(up.stats(), (1, 5))   # one kept-alive connection for five pages

    def test_service_down_fails_only_its_lookup(self):
        up = UpstreamServer(recommend=sqlite_recommender(DB))
        port = up.port
        up.server_close()   # nothing listens there now
        with h.Server(mixed_config(port, 2000)) as srv:
            c, t = h.client(srv)
            try:
                t0 = time.monotonic()
                res = c.fetch(page_request(5)).results
                took = time.monotonic() - t0
            finally:
                t.close()
        self.check_rest_of_page(res, 5)
        e = res['recommended_products'].error
        self.assertEqual(e.kind, EK.BACKEND)
        self.assertIn('upstream recs', e.message)
        self.assertLess(took, 10)   # no wait on the missing service (wide: busy machines)

    def test_slow_service_times_out_within_the_lookups_deadline(self):
        def slow(user_id, limit):
            time.sleep(20)
            return []
        with UpstreamServer(recommend=slow) as up, h.Server(mixed_config(up.port, 250)) as srv:
            c, t = h.client(srv)
            try:
                t0 = time.monotonic()
                res = c.fetch(page_request(9)).results
                took = time.monotonic() - t0
            finally:
                t.close()
        self.check_rest_of_page(res, 9)
        self.assertEqual(res['recommended_products'].error.kind, EK.TIMEOUT)
        self.assertGreaterEqual(took, 0.2)
        self.assertLess(took, 10)     # the 250 ms budget, not the service's 20 s

    def test_failing_service_is_a_backend_error(self):
        with UpstreamServer(recommend=None) as up, h.Server(mixed_config(up.port, 2000)) as srv:
            c, t = h.client(srv)
            try:
                res = c.fetch(page_request(3)).results
            finally:
                t.close()
        self.check_rest_of_page(res, 3)
        e = res['recommended_products'].error
        self.assertEqual(e.kind, EK.BACKEND)
        self.assertIn('HTTP 503', e.message)


if __name__ == '__main__':
    unittest.main()

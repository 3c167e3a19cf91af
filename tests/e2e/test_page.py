"""The embedded default: the seven-lookup page of deploy/evdal.conf on the sample web-shop
database. Every table evdal returns is compared with the same SQL run directly through
Python's sqlite3, for one user and for 200 clients fetching pages concurrently."""
import configparser
import os
import random
import resource
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import unittest

import evdal_harness as h
from evdal_harness import ttypes

CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal.conf')
DB = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'sample.db')
MKDB = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-mkdb')
PAGE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
        'recommended_products', 'feature_flags']


def count_rows(path, table):
    db = sqlite3.connect('file:%s?mode=ro' % path, uri=True)
    try:
        return db.execute('SELECT count(*) FROM %s' % table).fetchone()[0]
    finally:
        db.close()


def read_conf():
    cp = configparser.ConfigParser(inline_comment_prefixes=('#',), interpolation=None)
    cp.read(CONF)
    return cp


def python_value(v):
    for field in ('int_value', 'real_value', 'text_value', 'blob_value'):
        if getattr(v, field) is not None:
            return getattr(v, field)
    assert v.null_value is not None, v
    return None


def page_request(user_id, **ctx):
    uid = {'user_id': ttypes.Value(int_value=user_id)}
    calls = {name: ttypes.LookupCall(lookup=name, params=None if name == 'feature_flags' else uid)
             for name in PAGE}
    return h.fetch_request(calls, **ctx)


@unittest.skipUnless(os.path.exists(DB), 'deploy/sample.db not built (tools/dev.sh builds it)')
class PageTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cp = read_conf()
        cls.sql = {name: cp['lookup ' + name]['sql'] for name in PAGE if name != 'feature_flags'}
        with open(CONF) as f:
            text = f.read()
        text = text.replace('listen = 127.0.0.1:9090', 'listen = 127.0.0.1:0')
        text = text.replace('path = sample.db', 'path = ' + DB)
        text = text.replace('admin_listen = 127.0.0.1:9091', 'admin_listen =')
        # This test checks page content under concurrency, not latency: 200 threads of Python
        # on a 2-core CI machine under ASan must not turn into timeouts or load shedding.
        text = re.sub(r'(?m)^timeout_ms = \d+', 'timeout_ms = 10000', text)
        text = re.sub(r'(?m)^deadline_ms = \d+', 'deadline_ms = 20000', text)
        text = re.sub(r'(?m)^max_queue_ms = \d+', 'max_queue_ms = 0', text)
        cls.server = h.Server(text)
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)
        cls.db = sqlite3.connect('file:%s?mode=ro' % DB, uri=True, check_same_thread=False)
        cls.addClassCleanup(cls.db.close)
        cls.n_users = cls.db.execute('SELECT count(*) FROM users').fetchone()[0]
        cls.lock = threading.Lock()

    def expected(self, name, user_id):
        with self.lock:
            cur = self.db.execute(self.sql[name], {'user_id': user_id})
            return [d[0] for d in cur.description], [list(r) for r in cur.fetchall()]

    def check_page(self, response, user_id):
        self.assertEqual(set(response.results), set(PAGE))
        for name in PAGE:
            res = response.results[name]
            self.assertIsNone(res.error, (name, user_id, res.error))
            if name == 'feature_flags':
                self.assertEqual(res.table.columns, ['flag', 'enabled'])
                continue
            cols, rows = self.expected(name, user_id)
            self.assertEqual(res.table.columns, cols, name)
            self.assertEqual([[python_value(v) for v in row] for row in res.table.rows], rows,
                             (name, user_id))

    def test_one_page(self):
        c, t = h.client(self.server)
        self.addCleanup(t.close)
        r = c.fetch(page_request(1, trace=True))
        self.check_page(r, 1)
        self.assertEqual(len(r.results['user'].table.rows), 1)
        self.assertGreater(len(r.results['recent_orders'].table.rows), 0)
        self.assertTrue(all(x.span.backend.startswith('sqlite:main') for n, x in r.results.items()
                            if n != 'feature_flags'))
        infos = {i.name: i for i in c.lookups()}
        self.assertEqual(infos['recent_orders'].params, ['user_id'])
        # A user that does not exist: empty tables, not errors.
        r = c.fetch(page_request(self.n_users + 1000))
        self.assertEqual(r.results['user'].table.rows, [])

    def test_sample_database_is_full_size(self):
        """The issue's sample: 100,000 users and about a million orders."""
        self.assertEqual(self.n_users, 100000)
        self.assertEqual(count_rows(DB, 'users'), 100000)
        orders = count_rows(DB, 'orders')
        self.assertGreaterEqual(orders, 900000)
        self.assertLessEqual(orders, 1100000)

    def test_200_clients_fetch_pages_concurrently(self):
        h.raise_nofile(1024)
        errors, pages = [], [0]
        rng = random.Random(4)
        users = [[rng.randint(1, self.n_users) for _ in range(5)] for _ in range(200)]

        def run(ids):
            try:
                c, t = h.client(self.server, timeout=30)
                try:
                    for uid in ids:
                        self.check_page(c.fetch(page_request(uid)), uid)
                        with self.lock:
                            pages[0] += 1
                finally:
                    t.close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=run, args=(ids,)) for ids in users]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        self.assertEqual(errors[:3], [])
        self.assertEqual(pages[0], 1000)


@unittest.skipUnless(os.access(MKDB, os.X_OK), 'no evdal-mkdb beside EVDAL_BIN')
class SampleGenerationTest(unittest.TestCase):
    def test_full_size_database_is_made_in_under_30_seconds(self):
        """evdal-mkdb with its defaults, timed: the issue asks for under 30 s (about 2.5 s on
        the 2-core development VM). Its CPU time is what is timed (it runs on one thread): on a
        machine shared with other builds the wall clock says more about them."""
        tmp = tempfile.mkdtemp(prefix='evdal-mkdb-')
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, 'sample.db')
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([MKDB, path], check=True, timeout=300, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.assertLess(cpu, h.scaled(30))
        self.assertEqual(count_rows(path, 'users'), 100000)
        orders = count_rows(path, 'orders')
        self.assertGreaterEqual(orders, 900000)
        self.assertLessEqual(orders, 1100000)


if __name__ == '__main__':
    unittest.main()

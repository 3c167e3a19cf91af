"""The whole mixed page of deploy/evdal-mixed.conf (issue 16) in one fetch: four SQLite
lookups, the recent orders from a real PostgreSQL 15 (tests/e2e/pg_fixture.py, loaded by
evdal-mkdb --postgresql with the same sample as the SQLite file), the recommendations from an
HTTP service (tests/e2e/http_upstream.py), the session and the feature flags from a real
redis-server, and a static table. Every result is compared with the same lookup answered
directly (sqlite3, psql, redis, the HTTP service, the config's rows). Then each backend goes
down in turn, and comes back: PostgreSQL stopped, then SIGSTOPped; Redis killed; the HTTP
service stopped; the SQLite file locked by a writer. Each time every other result is exactly
what it was answered directly, the failed lookups a typed error (BACKEND for what is gone or
refuses, TIMEOUT for what hangs), and the fetch ends within its deadline. Exits 77 (skipped)
without redis-server or PostgreSQL 15."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import evdal_harness as h
import pg_fixture
from evdal_harness import ttypes
from http_upstream import UpstreamServer, sqlite_recommender
from test_redis import Redis, cells, table   # exits 77 without redis-server

if not pg_fixture.available():
    print('test_mixed_page: PostgreSQL 15 is not installed (tools/dev.sh deps)', file=sys.stderr)
    sys.exit(77)

EK = ttypes.ErrorKind
CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal-mixed.conf')
MKDB = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-mkdb')
N_USERS = 1000
SQLITE = ['user', 'account', 'unread_notifications', 'permissions']
POSTGRESQL = ['recent_orders']
REDIS = ['session', 'feature_flags']
HTTP = ['recommended_products']
STATIC = ['currencies']
PAGE = SQLITE + POSTGRESQL + REDIS + HTTP + STATIC
IO_THREADS = 2
# The fetch's deadline, and the lookups' own budgets where a fault waits for them (a hung
# server): wide enough for a busy shared machine, scaled for the sanitizers.
DEADLINE_MS = int(h.scaled(5000))
PG_TIMEOUT_MS = int(h.scaled(2000))
REDIS_TIMEOUT_MS = int(h.scaled(1000))
HTTP_TIMEOUT_MS = int(h.scaled(2000))
# What a fetch may take beyond its deadline: the client's round trip and the reply's encoding.
SLACK_S = h.scaled(0.5)


def lookup_keys(text):
    """{lookup name: {key: value}} of a config's [lookup ...] sections."""
    out = {}
    for m in re.finditer(r'(?ms)^\[lookup (\w+)\]\n(.*?)(?=^\[|\Z)', text):
        out[m.group(1)] = dict(re.findall(r'(?m)^(\w[\w.]*) = (.*?)(?:\s{2,}#.*)?$', m.group(2)))
    return out


def mixed_config(text, db, pg_conninfo, redis_sock, recs_port):
    """deploy/evdal-mixed.conf on ephemeral ports and this test's servers."""
    for key, value in (('listen', '127.0.0.1:0'), ('admin_listen', '127.0.0.1:0'),
                       ('io_threads', str(IO_THREADS)), ('deadline_ms', str(DEADLINE_MS)),
                       ('path', db), ('conninfo', pg_conninfo), ('address', redis_sock),
                       ('base_url', 'http://127.0.0.1:%d' % recs_port)):
        text, n = re.subn(r'(?m)^%s = .*$' % key, '%s = %s' % (key, value), text, count=1)
        assert n == 1, key
    # Each lookup's own budget: the SQLite ones get the fetch's (a busy machine), the others
    # one that a hung server of theirs runs into.
    budgets = dict({name: 5000 for name in SQLITE}, recent_orders=PG_TIMEOUT_MS,
                   session=REDIS_TIMEOUT_MS, feature_flags=REDIS_TIMEOUT_MS,
                   recommended_products=HTTP_TIMEOUT_MS)
    for name, ms in budgets.items():
        text, n = re.subn(r'(?ms)(^\[lookup %s\]\n.*?^timeout_ms = )\d+' % name,
                          r'\g<1>%d' % ms, text, count=1)
        assert n == 1, name
    return text


def values(result):
    """A successful LookupResult as (columns, rows of plain Python values)."""
    return list(table(result).columns), cells(result)


class MixedPageTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='evdal-mixed-')
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.pg = pg_fixture.PgServer().start()
        cls.addClassCleanup(cls.pg.close)
        # The same sample in both: SQLite for four lookups, PostgreSQL for the orders.
        cls.db = os.path.join(cls.tmp, 'sample.db')
        subprocess.run([MKDB, '--users', str(N_USERS), '--postgresql', cls.pg.conninfo, cls.db],
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
        # A rollback journal, so that a writer's lock keeps readers out (the fault below).
        with sqlite3.connect(cls.db, isolation_level=None) as db:
            db.execute('PRAGMA journal_mode=DELETE')
        db.close()
        # The recommendations service reads its own copy: the lock is on evdal's file only.
        cls.recs_db = os.path.join(cls.tmp, 'recs.db')
        shutil.copyfile(cls.db, cls.recs_db)
        cls.redis = Redis().start()
        cls.addClassCleanup(cls.redis.close)
        with open(CONF) as f:
            cls.conf = f.read()
        cls.lookups = lookup_keys(cls.conf)

    def seed_redis(self):
        self.redis.cmd('HSET', 'feature_flags', 'new_checkout', '1', 'dark_mode', '0',
                       'recommendations_v2', '1')
        self.redis.cmd('HSET', 'session:s42', 'user_id', '42', 'cart_items', '3',
                       'locale', 'en-GB')

    # ---- The same lookups answered directly.
    def direct(self, uid, recs_port):
        want = {}
        db = sqlite3.connect('file:%s?mode=ro' % self.db, uri=True)
        try:
            for name in SQLITE:
                cur = db.execute(self.lookups[name]['sql'], {'user_id': uid})
                want[name] = ([d[0] for d in cur.description], [list(r) for r in cur])
        finally:
            db.close()
        for name in POSTGRESQL:
            sql = self.lookups[name]['sql'].replace(':user_id', str(uid))
            columns = re.match(r'SELECT (.*?) FROM', sql).group(1)
            rows = json.loads(self.pg.psql("SELECT coalesce(json_agg(json_build_array(%s)), "
                                           "'[]') FROM (%s) q" % (columns, sql)))
            want[name] = (columns.split(', '), rows)
        for name, key in (('session', 'session:s42'), ('feature_flags', 'feature_flags')):
            flat = [x.decode() for x in self.redis.cmd('HGETALL', key)]
            want[name] = (['field', 'value'], [list(p) for p in zip(flat[::2], flat[1::2])])
        get = self.lookups['recommended_products']['get'].replace('{user_id}', str(uid))
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (recs_port, get),
                                    timeout=20) as r:
            body = json.loads(r.read(), object_pairs_hook=lambda kv: kv)
        items = dict(dict(body)['data'])['items']
        want['recommended_products'] = ([k for k, _ in items[0]],
                                        [[v for _, v in item] for item in items])
        static = self.lookups['currencies']
        want['currencies'] = (static['columns'].split(', '), [
            [int(x) if x.isdigit() else x for x in static['row.%d' % i].split(', ')]
            for i in range(1, 5)])
        for name in PAGE:
            self.assertTrue(want[name][1], '%s: no rows for user %d, a weak test' % (name, uid))
        return want

    # ---- The page through evdal.
    def page(self, server, uid):
        calls = {name: ttypes.LookupCall(lookup=name, params={
            'user_id': ttypes.Value(int_value=uid)}) for name in SQLITE + POSTGRESQL + HTTP}
        calls['feature_flags'] = ttypes.LookupCall(lookup='feature_flags')
        calls['currencies'] = ttypes.LookupCall(lookup='currencies')
        calls['session'] = ttypes.LookupCall(
            lookup='session', params={'session_id': ttypes.Value(text_value='s42')})
        c, t = h.client(server, timeout=h.scaled(30))
        try:
            t0 = time.monotonic()
            results = c.fetch(h.fetch_request(calls)).results
            took = time.monotonic() - t0
        finally:
            t.close()
        # Every fetch, whatever is down, ends within its deadline.
        self.assertLess(took, DEADLINE_MS / 1000 + SLACK_S, 'the page took %.3f s' % took)
        return results, took

    def check_page(self, server, uid, want, down=(), kind=None, says=None):
        """One fetch of the page: the lookups in `down` fail with `kind` (their message
        holding `says`), every other one equals what was answered directly."""
        results, took = self.page(server, uid)
        self.assertEqual(sorted(results), sorted(PAGE))
        for name in PAGE:
            r = results[name]
            if name in down:
                self.assertIsNotNone(r.error, name)
                self.assertEqual(r.error.kind, kind, (name, r.error))
                self.assertIn(says, r.error.message, name)
            else:
                self.assertEqual(values(r), want[name], name)
        return took

    def wait_metric(self, server, name, value):
        h.wait_until(lambda: server.metric(name) == value, timeout=30,
                     what='%s == %s (%s)' % (name, value, server.log_tail(10)))

    def wait_all_connected(self, server):
        """Every loop's PostgreSQL and Redis connections up: a loop still reconnecting would
        fail its calls at once (as it should), which is not what the next check is about."""
        self.wait_metric(server, 'evdal_postgresql_connections{database="orders",state="up"}',
                         2 * IO_THREADS)
        self.wait_metric(server, 'evdal_redis_connections{database="cache"}', 2 * IO_THREADS)

    def test_page_over_five_kinds_of_backend_with_each_down_in_turn(self):
        # A user with orders, unread notifications and a favourite category.
        uid = int(self.pg.psql('SELECT o.user_id FROM orders o JOIN notifications n ON '
                               'n.user_id = o.user_id AND n.read = 0 GROUP BY o.user_id '
                               'ORDER BY count(DISTINCT o.id) DESC, o.user_id LIMIT 1'))
        self.seed_redis()
        up = UpstreamServer(recommend=sqlite_recommender(self.recs_db)).start()
        recs_port = up.port
        ro = self.pg.conninfo.replace('user=postgres', 'user=evdal_ro')
        try:
            want = self.direct(uid, recs_port)
            config = mixed_config(self.conf, self.db, ro, self.redis.sock, recs_port)
            with h.Server(config) as s:
                self.wait_all_connected(s)
                self.check_page(s, uid, want)

                # PostgreSQL stopped: its connections are lost, the orders fail at once.
                self.pg.stop()
                self.check_page(s, uid, want, POSTGRESQL, EK.BACKEND, 'database orders')
                self.pg.pg_ctl('start')
                self.wait_all_connected(s)
                self.check_page(s, uid, want)

                # PostgreSQL hung (SIGSTOP): the orders time out at their own budget.
                self.pg.suspend()
                try:
                    took = self.check_page(s, uid, want, POSTGRESQL, EK.TIMEOUT, 'timed out')
                    self.assertGreaterEqual(took, PG_TIMEOUT_MS / 1000 * 0.9)
                finally:
                    self.pg.resume()
                self.wait_all_connected(s)
                h.wait_until(lambda: self.page(s, uid)[0]['recent_orders'].error is None,
                             timeout=30, what='the orders back after SIGCONT')
                self.check_page(s, uid, want)

                # Redis killed: the session and the flags fail at once.
                self.redis.kill()
                self.check_page(s, uid, want, REDIS, EK.BACKEND, 'database cache')
                self.redis.start()
                self.seed_redis()
                self.wait_all_connected(s)
                self.check_page(s, uid, want)

                # The HTTP service stopped: the recommendations fail at once.
                up.stop()
                self.check_page(s, uid, want, HTTP, EK.BACKEND, 'upstream recs')
                up = UpstreamServer(recommend=sqlite_recommender(self.recs_db),
                                    port=recs_port).start()
                self.check_page(s, uid, want)

                # The SQLite file locked by a writer past busy_timeout_ms (1 s).
                writer = sqlite3.connect(self.db, isolation_level=None)
                try:
                    writer.execute('BEGIN EXCLUSIVE')
                    self.check_page(s, uid, want, SQLITE, EK.BACKEND, 'locked')
                finally:
                    writer.execute('ROLLBACK')
                    writer.close()
                self.check_page(s, uid, want)
        finally:
            up.stop()


if __name__ == '__main__':
    unittest.main()

"""examples/python-frontend: the WSGI page of the seven lookups, requested over HTTP.

The real evdal runs the sample config (deploy/evdal.conf) on the sample database; the example
app runs as a subprocess on an ephemeral loopback port, and urllib requests its pages. What a
page shows is checked against the database itself, with the config's own SQL run through
Python's sqlite3 (nothing about the data is hard-coded). Then: a user that does not exist
(404), failing lookups (the rest of the page still renders), a failing critical lookup (503),
user data that needs escaping, and evdal not running at all (503)."""
import collections
import configparser
import datetime
import html
import html.parser
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

import evdal_harness as h

APP = os.path.join(h.EVDAL_SOURCE_DIR, 'examples', 'python-frontend', 'app.py')
CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal.conf')
SCHEMA = os.path.join(h.EVDAL_SOURCE_DIR, 'tools', 'mkdb', 'schema.sql')
SQL_LOOKUPS = ('user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
               'recommended_products')
SERVING_RE = re.compile(r'serving on http://([^/\s]+)/')
DB = None


def setUpModule():
    """The sample database (evdal_harness.sample_db)."""
    global DB
    DB = h.sample_db('evdal-frontend-db-')


def conf_text():
    with open(CONF, encoding='utf-8') as f:
        return f.read()


def conf_sql():
    cp = configparser.ConfigParser(inline_comment_prefixes=('#',), interpolation=None)
    cp.read(CONF)
    return {name: cp['lookup ' + name]['sql'] for name in SQL_LOOKUPS}, cp


def server_config(db, replace=None, admin=False):
    """deploy/evdal.conf on an ephemeral port and on `db`; `replace` maps a lookup name to the
    body that replaces its [lookup NAME] group (up to its first blank line). The admin HTTP
    port is an ephemeral one with `admin`, else there is none."""
    text = conf_text()
    for pattern, line in ((r'^listen\s*=.*$', 'listen = 127.0.0.1:0'),
                          (r'^path\s*=\s*sample\.db\b.*$', 'path = ' + db),
                          (r'^admin_listen\s*=.*\n',
                           'admin_listen = 127.0.0.1:0\n' if admin else '')):
        text, n = re.subn(pattern, lambda m: line, text, flags=re.M)
        assert n == 1, '%s: %d lines match %r' % (CONF, n, pattern)
    for name, body in (replace or {}).items():
        group = re.compile(r'^\[lookup %s\]\n(?:[^\[\n][^\n]*\n)*' % re.escape(name), re.M)
        text, n = group.subn(lambda m: '[lookup %s]\n%s\n' % (name, body.strip()), text)
        assert n == 1, 'no [lookup %s] group in %s' % (name, CONF)
    return text


class App:
    """examples/python-frontend/app.py as a subprocess on an ephemeral loopback port."""

    def __init__(self, evdal_port, evdal_host='127.0.0.1', gen_py=True, **env):
        self.env = dict(os.environ, EVDAL_HOST=evdal_host, EVDAL_PORT=str(evdal_port))
        if gen_py:
            self.env['EVDAL_GEN_PY'] = h.EVDAL_GEN_PY
        else:
            self.env.pop('EVDAL_GEN_PY', None)   # the app generates its stubs itself
        self.env.update({k: str(v) for k, v in env.items()})
        self.tmpdir = tempfile.mkdtemp(prefix='evdal-frontend-')
        self.log_path = os.path.join(self.tmpdir, 'app.log')
        self.proc = None
        self.base = None

    def log_text(self):
        with open(self.log_path, encoding='utf-8', errors='replace') as f:
            return f.read()

    def __enter__(self):
        log = open(self.log_path, 'wb')
        try:
            self.proc = subprocess.Popen([sys.executable, APP, '--host', '127.0.0.1',
                                          '--port', '0'], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=self.env, close_fds=True)
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while True:
            m = SERVING_RE.search(self.log_text())
            if m:
                self.base = 'http://' + m.group(1)
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise AssertionError('the app did not start:\n' + self.log_text())
            time.sleep(0.02)

    def __exit__(self, exc_type, exc, tb):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if exc_type is not None:
            sys.stderr.write('\n--- app log ---\n%s\n' % self.log_text())
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return False

    def get(self, path, headers=None):
        """(status, headers, text) of GET path; HTTP errors are answers too."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with opener.open(req, timeout=20) as r:
                return r.status, r.headers, r.read().decode('utf-8')
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.headers, e.read().decode('utf-8')


class Page(html.parser.HTMLParser):
    """What a page shows: the text of every element with an id (sections among them), the
    text of every data-field element, the data-* values inside each section in document
    order, and each section's notice (error kind, text)."""

    VOID = {'meta', 'br', 'hr', 'img', 'input', 'link'}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.by_id = collections.defaultdict(str)
        self.fields = collections.defaultdict(str)
        self.data = collections.defaultdict(list)   # (section, attribute) -> values
        self.notices = {}                           # section -> (kind, text)
        self.body_class = None
        self._stack = []   # (tag, id, field, notice_section)
        self._section = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'body':
            self.body_class = a.get('class', '')
        if tag == 'section' and a.get('id'):
            self._section = a['id']
        for k, v in attrs:
            if k.startswith('data-') and k not in ('data-field', 'data-error-kind'):
                self.data[(self._section, k[5:])].append(v)
        notice = None
        if 'notice' in (a.get('class') or '').split():
            notice = self._section
            self.notices[notice] = (a.get('data-error-kind'), '')
        if tag not in self.VOID:
            self._stack.append((tag, a.get('id'), a.get('data-field'), notice))

    def handle_endtag(self, tag):
        while self._stack:
            t, ident, _, _ = self._stack.pop()
            if t == 'section' and ident == self._section:
                self._section = None
            if t == tag:
                break

    def handle_data(self, data):
        for _, ident, field, notice in self._stack:
            if ident:
                self.by_id[ident] += data
            if field:
                self.fields[field] += data
            if notice:
                kind, text = self.notices[notice]
                self.notices[notice] = (kind, text + data)


def day(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime('%Y-%m-%d')


class FrontendTestCase(h.EvdalTestCase):
    @classmethod
    def start_server(cls, db, replace=None, extra_args=(), admin=False):
        server = h.Server(server_config(db, replace, admin), extra_args=extra_args)
        server.__enter__()
        cls.addClassCleanup(server.__exit__, None, None, None)
        return server

    @classmethod
    def start_app(cls, server, **kw):
        app = App(server.port, server.host, **kw)
        app.__enter__()
        cls.addClassCleanup(app.__exit__, None, None, None)
        return app

    @classmethod
    def open_db(cls, path):
        cls.sql, cls.cp = conf_sql()
        cls.db = sqlite3.connect('file:%s?mode=ro' % path, uri=True)
        cls.addClassCleanup(cls.db.close)

    def query(self, name, user_id):
        cur = self.db.execute(self.sql[name], {'user_id': user_id})
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def get_page(self, app, user_id, **headers):
        code, hdrs, text = app.get('/user/%d' % user_id, headers)
        self.assertEqual(code, 200, text)
        self.assertEqual(hdrs.get_content_type(), 'text/html')
        self.assertEqual(hdrs.get_content_charset(), 'utf-8')
        return hdrs, text, Page(text)

    def busy_user(self):
        """A user with orders, unread notifications and an avatar."""
        return self.db.execute(
            'SELECT u.id FROM users u JOIN accounts a ON a.user_id = u.id '
            'WHERE a.avatar IS NOT NULL '
            'AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id) '
            'AND EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = u.id AND n.read = 0) '
            'LIMIT 1').fetchone()[0]

    def section_ids(self, page, section, attr):
        return page.data[(section, attr)]

    # What each section must show, from the database.

    def check_profile(self, page, user_id):
        (u,) = self.query('user', user_id)
        self.assertEqual(page.fields['name'], u['name'])
        self.assertEqual(page.fields['email'], u['email'])
        self.assertEqual(page.fields['country'], u['country'])
        self.assertIn(day(u['created_at']), page.by_id['user'])

    def check_account(self, page, user_id):
        accounts = self.query('account', user_id)
        if not accounts:
            self.assertIn('No account', page.by_id['account'])
            return
        (a,) = accounts
        self.assertEqual(page.fields['plan'], a['plan'])
        self.assertEqual(page.fields['status'], a['status'])
        self.assertEqual(page.fields['balance'], '%s %.2f' % (a['currency'],
                                                              a['balance_cents'] / 100))
        self.assertEqual(page.fields['referral_code'], a['referral_code'] or 'none')
        self.assertEqual(page.fields['avatar'], 'none' if a['avatar'] is None
                         else '%d-byte image' % len(a['avatar']))

    def check_orders(self, page, user_id):
        orders = self.query('recent_orders', user_id)
        self.assertEqual(self.section_ids(page, 'recent_orders', 'order-id'),
                         [str(o['id']) for o in orders])
        text = page.by_id['recent_orders']
        for o in orders:
            self.assertIn('%.2f' % (o['total_cents'] / 100), text)
            self.assertIn(o['status'], text)
            self.assertIn(day(o['created_at']), text)
        if not orders:
            self.assertIn('No orders', text)

    def check_notifications(self, page, user_id):
        notes = self.query('unread_notifications', user_id)
        self.assertEqual(self.section_ids(page, 'unread_notifications', 'notification-id'),
                         [str(n['id']) for n in notes])
        for n in notes:
            self.assertIn(n['body'], page.by_id['unread_notifications'])

    def check_permissions(self, page, user_id):
        self.assertEqual(self.section_ids(page, 'permissions', 'permission'),
                         [p['name'] for p in self.query('permissions', user_id)])

    def check_products(self, page, user_id):
        products = self.query('recommended_products', user_id)
        self.assertEqual(self.section_ids(page, 'recommended_products', 'product-id'),
                         [str(p['id']) for p in products])
        for p in products:
            self.assertIn(p['name'], page.by_id['recommended_products'])

    def check_flags(self, page):
        flags = self.cp['lookup feature_flags']
        expected = [flags[k].split(',')[0].strip() for k in flags if k.startswith('row.')]
        self.assertEqual(self.section_ids(page, 'feature_flags', 'flag'), expected)


class PageTest(FrontendTestCase):
    """The sample config on the sample database, every lookup working."""

    @classmethod
    def setUpClass(cls):
        cls.open_db(DB)
        cls.server = cls.start_server(DB, admin=True)
        cls.app = cls.start_app(cls.server)

    def requests_total(self):
        """evdal_requests_total from the server's /metrics: {(method, outcome): count}."""
        from prometheus_client.parser import text_string_to_metric_families
        status, _, body = self.server.admin_get('/metrics')
        self.assertEqual(status, 200, body)
        out = collections.Counter()
        for family in text_string_to_metric_families(body):
            for x in family.samples:
                if x.name == 'evdal_requests_total':
                    out[(x.labels['method'], x.labels['outcome'])] += int(x.value)
        return out

    def test_one_page_is_one_fetch(self):
        """Each page is one evdal call: one fetch (ok), and no other method (ping, lookups)."""
        self.assertIsNotNone(self.server.admin_address, self.server.log_tail())
        for user_id in (1, self.busy_user()):
            with self.subTest(user_id=user_id):
                before = self.requests_total()
                _, _, page = self.get_page(self.app, user_id)
                self.assertEqual(page.notices, {})
                after = self.requests_total()
                self.assertEqual(after - before, collections.Counter({('fetch', 'ok'): 1}),
                                 (before, after))

    def users(self):
        """Users whose pages cover the cases: orders, unread notifications and an avatar; a
        null referral code; no orders at all; and a few at random."""
        one = lambda sql, *args: self.db.execute(sql, args).fetchone()[0]  # noqa: E731
        no_ref = one('SELECT user_id FROM accounts WHERE referral_code IS NULL LIMIT 1')
        no_orders = one('SELECT id FROM users u WHERE NOT EXISTS '
                        '(SELECT 1 FROM orders o WHERE o.user_id = u.id) LIMIT 1')
        rng = random.Random(11)
        top = one('SELECT max(id) FROM users')
        some = [one('SELECT id FROM users WHERE id >= ? ORDER BY id LIMIT 1',
                    rng.randint(1, top)) for _ in range(3)]
        return [self.busy_user(), no_ref, no_orders] + some

    def test_pages_show_what_the_database_holds(self):
        for user_id in self.users():
            with self.subTest(user_id=user_id):
                _, text, page = self.get_page(self.app, user_id)
                self.assertEqual(page.notices, {}, 'no lookup may fail here')
                self.check_profile(page, user_id)
                self.check_account(page, user_id)
                self.check_orders(page, user_id)
                self.check_notifications(page, user_id)
                self.check_permissions(page, user_id)
                self.check_products(page, user_id)
                self.check_flags(page)
                self.assertIn('7 lookups in one evdal fetch', text)

    def test_unknown_user_is_404(self):
        missing = self.db.execute('SELECT max(id) FROM users').fetchone()[0] + 1000
        code, _, text = self.app.get('/user/%d' % missing)
        self.assertEqual(code, 404)
        self.assertIn('No such user', text)
        for path in ('/user/abc', '/user/', '/nowhere', '/user/99999999999999999999999'):
            self.assertEqual(self.app.get(path)[0], 404, path)

    def test_request_id_goes_through_evdal(self):
        rid = 'frontend-test-' + uuid.uuid4().hex[:12]
        hdrs, _, page = self.get_page(self.app, 1, **{'X-Request-Id': rid})
        self.assertEqual(hdrs['X-Request-Id'], rid)
        self.assertEqual(page.by_id['request-id'], rid)   # the id FetchResponse echoed
        # Without one (or with one that is not sane), the app makes one up.
        for headers in ({}, {'X-Request-Id': 'bad id <script>'}):
            hdrs, _, page = self.get_page(self.app, 1, **headers)
            self.assertRegex(hdrs['X-Request-Id'], r'^[0-9a-f]{32}$')
            self.assertEqual(page.by_id['request-id'], hdrs['X-Request-Id'])

    def test_trace_shows_each_lookup(self):
        _, text, _ = self.get_page(self.app, 1)
        self.assertNotRegex(text, r'recent_orders [0-9.]+ ms')
        code, _, text = self.app.get('/user/1?trace=1')
        self.assertEqual(code, 200)
        for name in SQL_LOOKUPS + ('feature_flags',):
            self.assertRegex(text, r'%s [0-9.]+ ms' % name)

    def test_healthz_and_index(self):
        code, _, text = self.app.get('/healthz')
        self.assertEqual((code, text), (200, 'ok\n'))
        code, _, text = self.app.get('/')
        self.assertEqual(code, 200)
        self.assertIn('/user/1', text)
        # The index's form (GET /user/?id=N) is redirected to the user's page.
        code, _, text = self.app.get('/user/?id=1')
        self.assertEqual(code, 200)
        self.check_profile(Page(text), 1)


class FailingLookupsTest(FrontendTestCase):
    """Two non-critical lookups fail (one with a backend error, one that never answers); the
    page still renders, with a notice in each of their sections."""

    DEADLINE_MS = 700   # the app's EVDAL_DEADLINE_MS: it must reach evdal

    @classmethod
    def setUpClass(cls):
        cls.open_db(DB)
        cls.server = cls.start_server(DB, replace={
            'recommended_products': 'backend = fault\nmode = fail\nrequired_param = user_id',
            'unread_notifications': 'backend = fault\nmode = hang\nrequired_param = user_id',
        })
        cls.app = cls.start_app(cls.server, EVDAL_DEADLINE_MS=cls.DEADLINE_MS)

    def test_rest_of_page_renders(self):
        user_id = self.busy_user()
        rid = 'frontend-fail-' + uuid.uuid4().hex[:12]
        t0 = time.monotonic()
        _, _, page = self.get_page(self.app, user_id, **{'X-Request-Id': rid})
        elapsed = time.monotonic() - t0
        self.assertEqual(set(page.notices), {'recommended_products', 'unread_notifications'})
        kind, text = page.notices['recommended_products']
        self.assertEqual(kind, 'BACKEND')
        self.assertIn('injected failure', text)
        kind, text = page.notices['unread_notifications']
        self.assertEqual(kind, 'TIMEOUT')
        # The hanging lookup has no timeout_ms of its own: the request's deadline, which the
        # app sent in its RequestContext, is what stopped it.
        self.assertIn('timed out after %d ms' % self.DEADLINE_MS, text)
        self.assertGreaterEqual(elapsed, self.DEADLINE_MS / 1000 * 0.9)
        # The rest is all there.
        self.check_profile(page, user_id)
        self.check_account(page, user_id)
        self.check_orders(page, user_id)
        self.check_permissions(page, user_id)
        self.check_flags(page)
        self.assertEqual(self.section_ids(page, 'recommended_products', 'product-id'), [])
        # The request id reached the lookups themselves: the fault backend logs it on cancel.
        self.assertTrue(self.server.wait_log(r'\[%s\].*fault backend: call cancelled'
                                             % re.escape(rid)), self.server.log_tail())

    def test_critical_user_lookup_failing_is_503(self):
        server = h.Server(server_config(DB, {'user': 'backend = fault\nmode = fail\n'
                                                     'required_param = user_id'}))
        with server, App(server.port, server.host) as app:
            rid = 'frontend-critical-' + uuid.uuid4().hex[:12]
            code, hdrs, text = app.get('/user/1', {'X-Request-Id': rid})
            self.assertEqual(code, 503, text)
            self.assertEqual(hdrs['X-Request-Id'], rid)
            self.assertIn('temporarily unavailable', text)
            self.assertIn('BACKEND', text)
            self.assertTrue(server.wait_log(r'\[%s\].*fetch failed: critical call user'
                                            % re.escape(rid)), server.log_tail())


class EscapingTest(FrontendTestCase):
    """Data that is HTML is shown as text, and empty sections say so."""

    NAME = '<script>alert("x")</script> O\'Brien & Söhne'
    NOTE = '<img src=x onerror=alert(1)> & more'
    PRODUCT = '"Quoted" <b>bold</b>'

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='evdal-frontend-esc-')
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        path = os.path.join(cls.tmp, 'shop.db')
        db = sqlite3.connect(path)
        with open(SCHEMA, encoding='utf-8') as f:
            db.executescript(f.read())
        db.execute('INSERT INTO users VALUES (1, ?, ?, ?, ?, 1700000000)',
                   (cls.NAME, 'a&b<c>@example.com', '<NL>', 'cat<1>'))
        db.execute('INSERT INTO users VALUES (2, ?, ?, ?, ?, 1700000000)',
                   ('Nobody', 'nobody@example.com', 'FR', 'none'))
        db.execute("INSERT INTO accounts VALUES (1, '<pro>', 1234, 'EUR', 'active', NULL, "
                   "'<ref>')")
        db.execute("INSERT INTO orders VALUES (7, 1, 1700000100, 999, '<shipped>', NULL)")
        db.execute('INSERT INTO notifications VALUES (9, 1, 1700000200, ?, ?, 0)',
                   ('<kind>', cls.NOTE))
        db.execute('INSERT INTO products VALUES (5, ?, ?, 100, 1)', (cls.PRODUCT, 'cat<1>'))
        db.execute("INSERT INTO roles VALUES (1, 'r')")
        db.execute("INSERT INTO permissions VALUES (1, '<admin>')")
        db.execute('INSERT INTO role_permissions VALUES (1, 1)')
        db.execute('INSERT INTO user_roles VALUES (1, 1)')
        db.commit()
        db.close()
        cls.open_db(path)
        cls.server = cls.start_server(path)
        cls.app = cls.start_app(cls.server)

    def test_html_in_data_is_escaped(self):
        _, text, page = self.get_page(self.app, 1)
        for raw in ('<script>', '<img', '<b>bold', '<admin>', '<pro>', '<ref>', '<shipped>'):
            self.assertNotIn(raw, text)
        self.assertIn(html.escape(self.NAME), text)
        self.assertEqual(page.notices, {})
        self.check_profile(page, 1)
        self.check_account(page, 1)
        self.check_orders(page, 1)
        self.check_notifications(page, 1)
        self.check_permissions(page, 1)
        self.check_products(page, 1)

    def test_user_with_nothing_yet(self):
        _, _, page = self.get_page(self.app, 2)
        self.assertEqual(page.notices, {})
        self.check_profile(page, 2)
        self.assertIn('No account', page.by_id['account'])
        self.assertIn('No orders', page.by_id['recent_orders'])
        self.assertIn('all caught up', page.by_id['unread_notifications'])
        self.assertIn('No permissions', page.by_id['permissions'])
        self.assertIn('Nothing to recommend', page.by_id['recommended_products'])


class EvdalDownTest(unittest.TestCase):
    """Nothing listens where the app expects evdal: 503 pages, quickly. This app also has no
    EVDAL_GEN_PY, so it generates its stubs itself with `thrift --gen py`."""

    def test_503_when_evdal_is_not_running(self):
        # A bound socket that does not listen: connecting to its port is refused, and no other
        # process can take the port while the test runs.
        hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(hold.close)
        hold.bind(('127.0.0.1', 0))
        with App(hold.getsockname()[1], gen_py=False) as app:
            for _ in range(2):
                t0 = time.monotonic()
                code, hdrs, text = app.get('/user/1', {'X-Request-Id': 'down-1'})
                self.assertEqual(code, 503, text)
                self.assertLess(time.monotonic() - t0, h.scaled(5))
                self.assertEqual(hdrs['X-Request-Id'], 'down-1')
                self.assertIn('unreachable', text)
                self.assertEqual(hdrs['Retry-After'], '1')
            code, _, text = app.get('/healthz')
            self.assertEqual(code, 503)
            self.assertIn('evdal unreachable', text)


if __name__ == '__main__':
    unittest.main()

#!/usr/bin/python3
"""A small web frontend of evdal: the signed-in user's page, fetched with one evdal call.

GET /user/<id> makes one DataAccess.fetch with the seven lookups of deploy/evdal.conf (user,
account, recent_orders, unread_notifications, permissions, recommended_products,
feature_flags), which evdal runs at once, and renders them as one HTML page:

  200  the page; a lookup that failed shows a small notice in its own section, the rest renders
  404  no such user (the `user` lookup answered no row)
  503  evdal is unreachable, overloaded, or the critical `user` lookup failed
  500  evdal refused the request itself (InvalidRequest, or a lookup name/param mismatch)

GET /healthz pings evdal (200 "ok", or 503). GET / is a short index page.

Only the standard library (wsgiref) and Debian's python3-thrift are used. Configuration is
read from the environment at import time:

  EVDAL_HOST, EVDAL_PORT      where evdal listens (127.0.0.1, 9090)
  EVDAL_GEN_PY                folder holding the generated package `evdal`; when it is not set
                              (or holds no package), `thrift --gen py` generates the stubs from
                              EVDAL_IDL (default: ../../idl/evdal.thrift) into a temp folder
  EVDAL_DEADLINE_MS           the fetch's time budget, sent as RequestContext.deadline_ms (500)
  EVDAL_CONNECT_TIMEOUT_MS    TCP connect timeout (250)

Run it as a script (a threaded wsgiref server) or hand `application` to any WSGI server:

  python3 app.py [--host 127.0.0.1] [--port 8000]     (--port 0: any free port)
"""
import argparse
import atexit
import datetime
import html
import logging
import math
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from thrift.Thrift import TApplicationException
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

HERE = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger('python-frontend')
# TSocket logs every refused connect at ERROR; this app reports them as 503 pages itself.
logging.getLogger('thrift.transport.TSocket').setLevel(logging.CRITICAL)


# ---- Configuration and stubs. ----

def _env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value else default


EVDAL_HOST = os.environ.get('EVDAL_HOST') or '127.0.0.1'
EVDAL_PORT = _env_int('EVDAL_PORT', 9090)
DEADLINE_MS = _env_int('EVDAL_DEADLINE_MS', 500)
CONNECT_TIMEOUT_MS = _env_int('EVDAL_CONNECT_TIMEOUT_MS', 250)
# evdal answers by the deadline (late lookups get TIMEOUT); the margin covers the network and
# a busy server. Past it, the socket gives up and the page is a 503, never a hang.
READ_TIMEOUT_MS = DEADLINE_MS + 1000
IDL = os.environ.get('EVDAL_IDL') or os.path.join(HERE, '..', '..', 'idl', 'evdal.thrift')


def _stubs_folder():
    """The folder holding the generated `evdal` package: EVDAL_GEN_PY, or a temp folder that
    `thrift --gen py` fills from the IDL (removed when the process exits)."""
    folder = os.environ.get('EVDAL_GEN_PY')
    if folder and os.path.isfile(os.path.join(folder, 'evdal', 'DataAccess.py')):
        return folder
    if folder:
        log.warning('EVDAL_GEN_PY=%s holds no evdal package; generating the stubs', folder)
    thrift = shutil.which('thrift')
    if thrift is None:
        raise SystemExit('no generated stubs: set EVDAL_GEN_PY to a folder made by '
                         '"thrift --gen py -out FOLDER idl/evdal.thrift", or install the '
                         'thrift compiler (Debian: thrift-compiler)')
    out = tempfile.mkdtemp(prefix='evdal-gen-py-')
    atexit.register(shutil.rmtree, out, True)
    subprocess.run([thrift, '--gen', 'py', '-out', out, IDL], check=True)
    return out


sys.path.insert(0, _stubs_folder())
from evdal import DataAccess  # noqa: E402  (generated)
from evdal.ttypes import (  # noqa: E402
    ErrorKind, FetchRequest, InvalidRequest, LookupCall, LookupFailed, Overloaded,
    RequestContext, Value)


# ---- Talking to evdal. ----

class _CountingSocket(TSocket.TSocket):
    """Counts the bytes read, so that a reply that never began can be told from one cut off."""

    bytes_read = 0

    def read(self, sz):
        data = super().read(sz)
        self.bytes_read += len(data)
        return data


class Evdal:
    """One connection to evdal (framed transport, binary protocol), for one request.

    Thrift clients are not thread-safe; this app opens one per request, which on loopback
    costs a fraction of a millisecond. A server with long-lived threads may keep one per
    thread instead (and must drop it after any transport error: a reply may still be due)."""

    def __init__(self):
        self.socket = _CountingSocket(EVDAL_HOST, EVDAL_PORT)
        self.transport = TTransport.TFramedTransport(self.socket)
        self.client = DataAccess.Client(TBinaryProtocol.TBinaryProtocol(self.transport))

    def __enter__(self):
        self.socket.setTimeout(CONNECT_TIMEOUT_MS)  # applies to connect()...
        self.transport.open()
        self.socket.setTimeout(READ_TIMEOUT_MS)     # ...then to every read and write
        return self.client

    def __exit__(self, *exc):
        self.transport.close()
        return False


def fetch(request, attempts=3):
    """client.fetch on a fresh connection, resent when the connection failed or closed before
    any byte of the reply came back: what keeps a page alive while evdal instances restart
    behind a balancer (docs/SCALING.md, "Clients"). fetch only reads, so resending is safe; a
    reply that began and broke off is not resent (the caller sees the error)."""
    for attempt in range(attempts):
        conn = Evdal()
        try:
            with conn as client:
                return client.fetch(request)
        except (TTransport.TTransportException, OSError):
            if conn.socket.bytes_read > 0 or attempt + 1 == attempts:
                raise
            log.info('evdal connection closed before the reply began; resending the fetch')


PAGE_CALLS = ('user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
              'recommended_products', 'feature_flags')


def page_request(user_id, request_id, trace=False):
    """One FetchRequest for the whole page. The keys are ours; here they are the lookup names."""
    uid = {'user_id': Value(int_value=user_id)}
    calls = {name: LookupCall(lookup=name, params=None if name == 'feature_flags' else uid)
             for name in PAGE_CALLS}
    calls['user'].critical = True   # no profile, no page: evdal fails the fetch at once
    context = RequestContext(request_id=request_id, principal='user:%d' % user_id,
                             deadline_ms=DEADLINE_MS, trace=trace)
    return FetchRequest(context=context, calls=calls)


def python_value(v):
    """A Value union as a Python value (None for SQL NULL)."""
    for field in ('int_value', 'real_value', 'text_value', 'blob_value'):
        value = getattr(v, field)
        if value is not None:
            return value
    return None


def rows(result):
    """A successful LookupResult's rows as dicts keyed by column name."""
    t = result.table
    return [dict(zip(t.columns, (python_value(v) for v in row))) for row in t.rows]


# ---- HTML. ----

ERROR_TEXT = {
    ErrorKind.TIMEOUT: 'took too long',
    ErrorKind.OVERLOADED: 'is busy right now',
    ErrorKind.BACKEND: 'is unavailable right now',
    ErrorKind.CANCELLED: 'was cancelled',
    ErrorKind.UNKNOWN_LOOKUP: 'is not configured on the server',
    ErrorKind.BAD_PARAMS: 'was called with the wrong parameters',
}

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
body.dark{background:#171a21;color:#e4e7ee}
header{padding:1rem 2rem;background:#24324a;color:#fff}
header h1{margin:0;font-size:1.4rem}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1rem;padding:1rem 2rem;align-items:start;grid-auto-flow:dense}
section{background:#fff;border-radius:8px;padding:.8rem 1rem;box-shadow:0 1px 2px #0002;overflow-x:auto}
@media(min-width:1000px){#recent_orders{grid-column:span 2}}
body.dark section{background:#222733}
section h2{font-size:1.05rem;margin:.2rem 0 .6rem}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #8882;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}
.notice{background:#fff4d6;border:1px solid #e7c75f;color:#5a4500;padding:.4rem .6rem;border-radius:6px}
.notice small{display:block;color:#7a6520}
.empty{color:#777}
.on{color:#16803c}.off{color:#a33}
footer{padding:0 2rem 2rem;color:#777;font-size:.85rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dt{font-weight:600}dd{margin:0}
"""


def esc(value):
    return html.escape('' if value is None else str(value), quote=True)


def when(epoch, fmt='%Y-%m-%d %H:%M UTC'):
    if epoch is None:
        return ''
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(fmt)


def money(cents, currency=''):
    if cents is None:
        return ''
    return ('%s %.2f' % (currency, cents / 100)).strip()


def document(title, body, body_class=''):
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<title>%s</title><style>%s</style></head>\n<body%s>\n%s\n</body></html>\n'
            % (esc(title), STYLE, ' class="%s"' % body_class if body_class else '', body))


def section(key, title, result, render):
    """A page section: render(result) when the call succeeded, else a notice."""
    if result is None or result.error is not None:
        if result is None:
            kind, message = None, 'no result'
        else:
            kind, message = result.error.kind, result.error.message
        inner = ('<p class="notice" data-error-kind="%s">%s %s.<small>%s</small></p>'
                 % (esc(ErrorKind._VALUES_TO_NAMES.get(kind, kind)), esc(title),
                    esc(ERROR_TEXT.get(kind, 'could not be loaded')), esc(message)))
    else:
        inner = render(rows(result))
    return '<section id="%s"><h2>%s</h2>\n%s\n</section>' % (esc(key), esc(title), inner)


def table(headers, body_rows, numeric=()):
    head = ''.join('<th%s>%s</th>' % (' class="num"' if i in numeric else '', esc(h))
                   for i, h in enumerate(headers))
    return '<table><thead><tr>%s</tr></thead><tbody>\n%s\n</tbody></table>' % (
        head, '\n'.join(body_rows))


def render_account(rs):
    if not rs:
        return '<p class="empty">No account yet.</p>'
    a = rs[0]
    avatar = a['avatar']
    items = [('Plan', a['plan']), ('Balance', money(a['balance_cents'], a['currency'])),
             ('Status', a['status']),
             ('Avatar', '%d-byte image' % len(avatar) if avatar is not None else 'none'),
             ('Referral code', a['referral_code'] or 'none')]
    return '<dl>%s</dl>' % ''.join('<dt>%s</dt><dd data-field="%s">%s</dd>'
                                   % (esc(k), esc(k.lower().replace(' ', '_')), esc(v))
                                   for k, v in items)


def render_orders(rs):
    if not rs:
        return '<p class="empty">No orders yet.</p>'
    body = []
    for o in rs:
        discount = '%.0f%%' % (o['discount'] * 100) if o['discount'] is not None else ''
        body.append('<tr data-order-id="%s"><td>#%s</td><td title="%s">%s</td><td class="num">%s</td>'
                    '<td>%s</td><td class="num">%s</td></tr>'
                    % (esc(o['id']), esc(o['id']), esc(when(o['created_at'])),
                       esc(when(o['created_at'], '%Y-%m-%d')),
                       esc(money(o['total_cents'])), esc(o['status']), esc(discount)))
    return table(['Order', 'Date', 'Total', 'Status', 'Discount'], body, numeric=(2, 4))


def render_notifications(rs):
    if not rs:
        return '<p class="empty">You are all caught up.</p>'
    return '<ul>\n%s\n</ul>' % '\n'.join(
        '<li data-notification-id="%s"><strong>%s</strong> %s <small>%s</small></li>'
        % (esc(n['id']), esc(n['kind']), esc(n['body']), esc(when(n['created_at'])))
        for n in rs)


def render_permissions(rs):
    if not rs:
        return '<p class="empty">No permissions.</p>'
    return '<ul>%s</ul>' % ''.join('<li data-permission="%s">%s</li>' % (esc(p['name']),
                                                                        esc(p['name']))
                                   for p in rs)


def render_products(rs):
    if not rs:
        return '<p class="empty">Nothing to recommend yet.</p>'
    return table(['Product', 'Price'], [
        '<tr data-product-id="%s"><td>%s</td><td class="num">%s</td></tr>'
        % (esc(p['id']), esc(p['name']), esc(money(p['price_cents']))) for p in rs], numeric=(1,))


def render_flags(rs):
    if not rs:
        return '<p class="empty">No feature flags.</p>'
    return '<ul>%s</ul>' % ''.join(
        '<li data-flag="%s">%s: <span class="%s">%s</span></li>'
        % (esc(f['flag']), esc(f['flag']), 'on' if f['enabled'] else 'off',
           'on' if f['enabled'] else 'off') for f in rs)


def flag_on(result, name):
    if result is None or result.error is not None:
        return False
    return any(r.get('flag') == name and r.get('enabled') for r in rows(result))


def render_page(user, response):
    res = response.results
    profile = ('<p data-field="email">%s</p><p>Country: <span data-field="country">%s</span>'
               ' &middot; member since %s</p>'
               % (esc(user['email']), esc(user['country']), esc(when(user['created_at']))))
    sections = [
        '<section id="user"><h2>Profile</h2>\n%s\n</section>' % profile,
        section('account', 'Account', res.get('account'), render_account),
        section('recent_orders', 'Recent orders', res.get('recent_orders'), render_orders),
        section('unread_notifications', 'Unread notifications',
                res.get('unread_notifications'), render_notifications),
        section('permissions', 'Permissions', res.get('permissions'), render_permissions),
        section('recommended_products', 'Recommended for you', res.get('recommended_products'),
                render_products),
        section('feature_flags', 'Feature flags', res.get('feature_flags'), render_flags),
    ]
    spans = ''
    if any(r.span is not None for r in res.values()):
        spans = ' &middot; ' + ', '.join(
            '%s %.1f ms' % (esc(k), (r.span.end_us - r.span.start_us) / 1000)
            for k, r in sorted(res.items()) if r.span is not None)
    body = ('<header><h1 data-field="name">%s</h1></header>\n<main>\n%s\n</main>\n'
            '<footer>%d lookups in one evdal fetch, %.1f ms on the server%s &middot; '
            'request id <code id="request-id">%s</code></footer>'
            % (esc(user['name']), '\n'.join(sections), len(res), response.server_us / 1000,
               spans, esc(response.request_id)))
    return document('%s · evdal example' % user['name'], body,
                    'dark' if flag_on(res.get('feature_flags'), 'dark_mode') else '')


def error_page(title, detail, request_id):
    body = ('<header><h1>%s</h1></header><main><section><p>%s</p></section></main>'
            '<footer>request id <code id="request-id">%s</code></footer>'
            % (esc(title), esc(detail), esc(request_id)))
    return document(title, body)


# ---- WSGI. ----

STATUS = {200: '200 OK', 303: '303 See Other', 404: '404 Not Found', 405: '405 Method Not Allowed',
          500: '500 Internal Server Error', 502: '502 Bad Gateway',
          503: '503 Service Unavailable'}
USER_PATH = re.compile(r'^/user/([0-9]{1,18})/?$')
REQUEST_ID = re.compile(r'^[A-Za-z0-9._:@/+=-]{1,128}$')


def request_id_of(environ):
    """The caller's X-Request-Id when it is sane, else a new one."""
    rid = environ.get('HTTP_X_REQUEST_ID', '').strip()
    return rid if REQUEST_ID.match(rid) else uuid.uuid4().hex


def respond(start_response, code, body, request_id, content_type='text/html; charset=utf-8',
            extra=()):
    data = body.encode('utf-8')
    headers = [('Content-Type', content_type), ('Content-Length', str(len(data))),
               ('X-Request-Id', request_id), ('Cache-Control', 'no-store')] + list(extra)
    start_response(STATUS[code], headers)
    return [data]


def user_page(user_id, request_id, trace):
    """(status, html, extra headers) of /user/<id>."""
    try:
        response = fetch(page_request(user_id, request_id, trace))
    except LookupFailed as e:
        # The critical call failed: evdal cancelled the others and answered at once.
        log.warning('[%s] user %d: critical call %s failed: %s', request_id, user_id, e.call,
                    e.error.message)
        code = 500 if e.error.kind in (ErrorKind.UNKNOWN_LOOKUP, ErrorKind.BAD_PARAMS) else 503
        return code, error_page('This page is temporarily unavailable',
                                'The profile could not be loaded (%s). Please try again.'
                                % ErrorKind._VALUES_TO_NAMES.get(e.error.kind, e.error.kind),
                                request_id), ()
    except Overloaded as e:
        seconds = max(1, math.ceil(e.retry_after_ms / 1000))
        return 503, error_page('Busy', 'The site is busy; please retry in a moment.',
                               request_id), [('Retry-After', str(seconds))]
    except InvalidRequest as e:
        log.error('[%s] evdal refused the request: %s', request_id, e.message)
        return 500, error_page('Internal error', 'The request could not be made.',
                               request_id), ()
    except TApplicationException as e:
        log.error('[%s] evdal answered with an exception: %s', request_id, e)
        return 502, error_page('Bad gateway', 'The data service answered with an error.',
                               request_id), ()
    except (TTransport.TTransportException, OSError) as e:
        log.error('[%s] evdal at %s:%d unreachable: %s', request_id, EVDAL_HOST, EVDAL_PORT, e)
        return 503, error_page('Service unavailable',
                               'The data service is unreachable; please try again shortly.',
                               request_id), [('Retry-After', '1')]
    users = rows(response.results['user'])
    if not users:
        return 404, error_page('No such user', 'There is no user %d.' % user_id,
                               response.request_id), ()
    return 200, render_page(users[0], response), ()


def healthz(request_id):
    try:
        with Evdal() as client:
            pong = client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means "not healthy"
        return 503, 'evdal unreachable: %s\n' % e
    return (200, 'ok\n') if pong == 'pong' else (503, 'evdal answered %r\n' % pong)


INDEX = """<header><h1>evdal example frontend</h1></header><main><section>
<p>Each user page is one evdal <code>fetch</code> of seven lookups run at once.</p>
<form action="/user/">
<label>User id <input name="id" value="1" size="8"></label> <button>Show</button></form>
<p>Try <a href="/user/1">/user/1</a>, <a href="/user/42?trace=1">/user/42?trace=1</a>
(with lookup timings), or <a href="/healthz">/healthz</a>.</p></section></main>"""


def application(environ, start_response):
    body = route(environ, start_response)
    return [] if environ.get('REQUEST_METHOD') == 'HEAD' else body


def route(environ, start_response):
    request_id = request_id_of(environ)
    path = environ.get('PATH_INFO') or '/'
    method = environ.get('REQUEST_METHOD', 'GET')
    if method not in ('GET', 'HEAD'):
        return respond(start_response, 405, error_page('Method not allowed', method, request_id),
                       request_id, extra=[('Allow', 'GET, HEAD')])
    if path == '/healthz':
        code, text = healthz(request_id)
        return respond(start_response, code, text, request_id, 'text/plain; charset=utf-8')
    if path == '/':
        return respond(start_response, 200, document('evdal example frontend', INDEX),
                       request_id)
    query = urllib.parse.parse_qs(environ.get('QUERY_STRING') or '')
    if path == '/user/' and re.fullmatch(r'[0-9]{1,18}', (query.get('id') or [''])[0]):
        # The index page's form, which works without JavaScript.
        return respond(start_response, 303, '', request_id, 'text/plain; charset=utf-8',
                       extra=[('Location', '/user/' + query['id'][0])])
    m = USER_PATH.match(path)
    if m is None:
        return respond(start_response, 404, error_page('Not found', path, request_id),
                       request_id)
    trace = query.get('trace') == ['1']
    t0 = time.monotonic()
    code, page, extra = user_page(int(m.group(1)), request_id, trace)
    log.info('[%s] %s -> %d in %.1f ms', request_id, path, code, (time.monotonic() - t0) * 1000)
    # The request id evdal echoed is the one sent, so the header matches the page's footer.
    return respond(start_response, code, page, request_id, extra=extra)


# ---- Running it. ----

class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug('%s %s', self.address_string(), format % args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--host', default='127.0.0.1', help='address to serve on (127.0.0.1)')
    parser.add_argument('--port', type=int, default=8000, help='port (8000; 0 = any free one)')
    parser.add_argument('--verbose', action='store_true', help='log every HTTP request')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(message)s')
    family = socket.AF_INET6 if ':' in args.host else socket.AF_INET
    server_class = type('Server', (ThreadingWSGIServer,), {'address_family': family})
    httpd = make_server(args.host, args.port, application, server_class=server_class,
                        handler_class=QuietHandler)
    host = '[%s]' % args.host if family == socket.AF_INET6 else args.host
    print('serving on http://%s:%d/ (evdal at %s:%d)' % (host, httpd.server_port, EVDAL_HOST,
                                                         EVDAL_PORT), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == '__main__':
    main()

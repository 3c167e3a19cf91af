"""An HTTP/JSON service for the http backend's tests (tests/e2e/test_http.py) and benchmark.

Python's threaded http.server with HTTP/1.1 keep-alive, on an ephemeral port, optionally
TLS. It counts the connections it accepted (keep-alive reuse shows as fewer connections than
requests) and the requests open at once, and keeps every request's raw path and headers for
the tests to look at. Paths:

  /items?n=N            {"data": {"items": [{"id": i, "name": "item i", "price": i * 1.5,
                        "tags": ["t"], "on_sale": i % 2 == 0}, ...], "total": N}}
  /echo/...             {"path": the raw request path, "headers": [[name, value], ...]}
  /slow?ms=N            sleeps N ms, then {"slow": true}
  /drop                 closes the connection without answering
  /big?bytes=N          a JSON string of N bytes (Content-Length)
  /chunked?bytes=N      the same, chunked (no Content-Length)
  /invalid              a 200 answer that is not JSON
  /status/CODE          answers CODE with {"error": "..."}
  /users/ID/recommendations?limit=N   the sample service (deploy/evdal-mixed.conf): the
                        sample database's recommendations, as its SQLite lookup answers them

Run alone (the sample service, the benchmark): python3 http_upstream.py [--db sample.db]
[--port P] [--tls CERT KEY]; prints "listening on 127.0.0.1:PORT".
"""
import json
import os
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'   # keep-alive

    def log_message(self, fmt, *args):  # quiet
        pass

    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _raw(self, body, status=200, chunked=False):
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        if chunked:
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            step = 65536
            for i in range(0, len(body), step):
                piece = body[i:i + step]
                self.wfile.write(b'%x\r\n%s\r\n' % (len(piece), piece))
            self.wfile.write(b'0\r\n\r\n')
        else:
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        with srv.lock:
            srv.requests.append((self.path, list(self.headers.items())))
            srv.open_now += 1
            srv.max_open = max(srv.max_open, srv.open_now)
        try:
            self._route()
        finally:
            with srv.lock:
                srv.open_now -= 1

    def _route(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        try:
            n = int(float(q.get('n', q.get('bytes', q.get('ms', ['0'])))[0] or 0))
        except ValueError:
            n = 0
        path = url.path
        if path == '/items':
            items = [{'id': i, 'name': 'item %d' % i, 'price': i * 1.5, 'tags': ['t'],
                      'on_sale': i % 2 == 0} for i in range(n)]
            self._json({'data': {'items': items, 'total': n}})
        elif path.startswith('/echo'):
            self._json({'path': self.path, 'headers': [[k, v] for k, v in self.headers.items()]})
        elif path == '/slow':
            time.sleep(n / 1000.0)
            self._json({'slow': True})
        elif path == '/drop':
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path in ('/big', '/chunked'):
            body = b'"' + b'x' * max(n - 2, 0) + b'"'
            self._raw(body, chunked=(path == '/chunked'))
        elif path == '/invalid':
            self._raw(b'<html>not json</html>')
        elif path.startswith('/status/'):
            code = int(path.rsplit('/', 1)[1])
            self._json({'error': 'status %d on purpose' % code}, status=code)
        elif path.startswith('/users/') and path.endswith('/recommendations'):
            self._recommendations(path.split('/')[2], int(q.get('limit', ['5'])[0]))
        else:
            self._json({'error': 'no such path'}, status=404)

    def _recommendations(self, user, limit):
        rec = self.server.recommend
        if rec is None:
            self._json({'error': 'no sample database'}, status=503)
            return
        try:
            items = rec(int(user), limit)
        except ValueError:
            self._json({'error': 'user id must be an integer'}, status=400)
            return
        self._json({'user_id': int(user), 'data': {'items': items}})


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls=None, recommend=None, port=0):
        super().__init__(('127.0.0.1', port), Handler)
        self.lock = threading.Lock()
        self.connections = 0      # accepted
        self.connections_open = 0  # accepted and not closed yet
        self.requests = []        # (raw path, [(header, value)])
        self.open_now = 0
        self.max_open = 0
        self.recommend = recommend
        if tls is not None:
            cert, key = tls
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.socket = ctx.wrap_socket(self.socket, server_side=True,
                                          do_handshake_on_connect=False)
        self.port = self.server_address[1]
        self.thread = None

    def process_request(self, request, client_address):
        with self.lock:
            self.connections += 1
            self.connections_open += 1
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                self.shutdown_request(request)
                return
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.lock:
            self.connections_open -= 1
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client that gave up (a timeout, a cancel) leaves a broken pipe: expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)

    def start(self):
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()

    def stats(self):
        with self.lock:
            return self.connections, len(self.requests)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def sqlite_recommender(db_path):
    """The sample database's five popular products in a user's favourite category, as the
    SQLite lookup recommended_products answers them (deploy/evdal.conf)."""
    import sqlite3
    local = threading.local()

    def recommend(user_id, limit):
        if not hasattr(local, 'db'):
            local.db = sqlite3.connect('file:%s?mode=ro' % db_path, uri=True)
        rows = local.db.execute(
            'SELECT p.id, p.name, p.price_cents FROM products p WHERE p.category = '
            '(SELECT favorite_category FROM users WHERE id = ?) '
            'ORDER BY p.popularity DESC LIMIT ?', (user_id, limit)).fetchall()
        return [{'id': r[0], 'name': r[1], 'price_cents': r[2]} for r in rows]
    return recommend


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--db', help='the sample database, for /users/ID/recommendations')
    ap.add_argument('--tls', nargs=2, metavar=('CERT', 'KEY'))
    ap.add_argument('--port', type=int, default=0)
    args = ap.parse_args(argv)
    srv = UpstreamServer(tls=args.tls, port=args.port,
                         recommend=sqlite_recommender(args.db) if args.db else None)
    print('listening on 127.0.0.1:%d' % srv.port, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

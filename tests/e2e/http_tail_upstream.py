"""An HTTP/JSON upstream with a slow tail, for the hedging experiment of issue 17
(tests/e2e/test_xreq_http.py HedgeHttpTest, bench/xreq_tail.py --http).

Every request to a path answers {"ok": true} at once, except every `--tail-every`th request
to that path (counted per path), which answers after `--tail-ms`: exactly 2% of the requests
of each path are slow with the defaults (50, 200 ms). The tail is a property of the request,
decided when it arrives, as it is of a real server (a pause, a cold cache): a hedge is a new
request, slow only if it is itself one of the every 50th, so the experiment measures what
hedging can do and not an artefact of the server.

Why not http_upstream.py: Python's ThreadingHTTPServer runs a thread per connection, and
threads take turns on the GIL (sys.getswitchinterval(), 5 ms): under load a fast answer
waits behind the other threads, and on a busy two-core machine that spread alone reached the
p99 that hedging should cut to. This server is one thread and one asyncio loop: a fast answer
is written in the callback that read its request, and a slow one from a timer.

  GET /stats         {"PATH": [requests, slow ones], ...} (not counted itself)
  GET /anything      counted; slow on every tail_every-th request of its path
  GET /fast...       counted, never slow: what the machine alone does to latency

Runs as its own process (its own GIL): python3 http_tail_upstream.py [--tail-every N]
[--tail-ms MS] prints "listening on 127.0.0.1:PORT" and serves until killed.
"""
import argparse
import asyncio
import json
import sys

# What the experiment compares: the same path without hedging and with `hedge = p95`, each on
# an upstream section of its own (their connections and retry budgets apart); `{base}` is
# this server's http://127.0.0.1:PORT.
LOOKUPS = """
[upstream tail_plain]
backend = http
base_url = {base}
connections = 32

[upstream tail_hedged]
backend = http
base_url = {base}
connections = 32

# Coalescing off: every fetch is its own upstream request, as with distinct params.
[lookup plain]
upstream = tail_plain
get = /plain
coalesce = false

[lookup hedged]
upstream = tail_hedged
get = /hedged
coalesce = false
hedge = p95

# The control: no tail, no hedging. Its percentiles are the machine's own noise.
[upstream tail_control]
backend = http
base_url = {base}
connections = 32

[lookup control]
upstream = tail_control
get = /fast
coalesce = false
"""

RESPONSE = (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
            b'Content-Length: %d\r\n\r\n%s')
OK = RESPONSE % (12, b'{"ok": true}')


class Upstream:
    def __init__(self, tail_every, tail_ms):
        self.tail_every = tail_every
        self.tail_s = tail_ms / 1000.0
        self.counts = {}    # path -> [requests, slow]

    def answer(self, path):
        """The response to a request of `path`, and how long to wait before it."""
        if path == '/stats':
            body = json.dumps(self.counts).encode()
            return RESPONSE % (len(body), body), 0.0
        c = self.counts.setdefault(path, [0, 0])
        c[0] += 1
        if c[0] % self.tail_every == 0 and not path.startswith('/fast'):
            c[1] += 1
            return OK, self.tail_s
        return OK, 0.0

    async def serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b'\r\n\r\n')
                target = head.split(b' ', 2)[1].decode('latin-1')
                response, delay = self.answer(target.split('?', 1)[0])
                if delay > 0:
                    # HTTP/1.1 without pipelining has one request per connection at a time:
                    # waiting here holds no other request.
                    await asyncio.sleep(delay)
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tail-every', type=int, default=50)
    ap.add_argument('--tail-ms', type=float, default=200)
    ap.add_argument('--port', type=int, default=0)
    a = ap.parse_args(argv)
    up = Upstream(a.tail_every, a.tail_ms)
    server = await asyncio.start_server(up.serve, '127.0.0.1', a.port, backlog=1024)
    print('listening on 127.0.0.1:%d' % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == '__main__':
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass

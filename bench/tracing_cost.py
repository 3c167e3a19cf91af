#!/usr/bin/python3
"""What tracing costs evdal: CPU per fetch of sqlite7 with tracing off, at sample_ratio 0.01
and with every fetch sampled, exporting to a local collector that accepts and discards.

    /usr/bin/python3 bench/tracing_cost.py [--build build] [--rounds 5] [--seconds 4]
                                           [--connections 16]

Each round runs evdal-bench's sqlite7 page (bench/harness.py's, random users) against a fresh
evdal in each mode, in turn (A B C A B C ...), and reads the server's own CPU time (utime +
stime of /proc/PID/stat) before and after: CPU per fetch is that difference over the fetches
answered. The collector is an http.server in this process answering 200 to every POST
(its CPU is not evdal's). Prints one line per run and the medians, and the ratio to "off".
"""
import argparse
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (bench/harness.py: the sample config and the page)

MODES = [('off', None), ('ratio 0.01', 0.01), ('every fetch', 1.0)]


class Discard(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    posts = 0
    spans = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        Discard.posts += 1
        Discard.spans += body.count(b'"spanId"')
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()


def cpu_s(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def config(base, ratio, endpoint):
    with open(base) as f:
        text = f.read()
    if '[tracing]' not in text:
        text += '\n[tracing]\n'
    keys = ('sample_ratio = %s\n' % ratio) if ratio is not None else ''
    if ratio is not None:
        keys += 'otlp_endpoint = %s\n' % endpoint
    text = '\n'.join(l for l in text.split('\n')  # the sample's own values give way
                     if not l.startswith(('sample_ratio', 'otlp_endpoint')))
    text = text.replace('[tracing]\n', '[tracing]\n' + keys, 1)
    path = base + ('.%s' % ratio)
    with open(path, 'w') as f:
        f.write(text)
    return path


def run(build, conf, seconds, conns, rate):
    port = harness.free_port()
    srv = subprocess.Popen([os.path.join(build, 'evdal'), '--config', conf, '--listen',
                            '127.0.0.1:%d' % port], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or srv.poll() is not None:
                    sys.exit('evdal did not start with %s' % conf)
                time.sleep(0.05)
        argv = [os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', str(conns),
                '--threads', '1', '-d', str(seconds), '-w', '0', '--json'] + harness.page_args()
        if rate > 0:
            argv += ['--rate', str(rate)]
        before = cpu_s(srv.pid)
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        after = cpu_s(srv.pid)
        r = json.loads(out.strip().splitlines()[-1])
        return (after - before) / max(r['requests'], 1) * 1e6, r['rps'], r['errors']
    finally:
        srv.terminate()
        srv.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--seconds', type=float, default=4)
    ap.add_argument('--connections', type=int, default=16)
    ap.add_argument('--rate', type=int, default=1500,
                    help='fetches/s offered (open loop; 0: as fast as it goes). A fixed rate '
                    'keeps the work per loop pass alike in every mode: a saturated server '
                    'batches more per pass, and its CPU per fetch drops with the load')
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Discard)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    endpoint = 'http://127.0.0.1:%d/v1/traces' % httpd.server_address[1]
    base = harness.prepare_config(os.path.join(harness.ROOT, 'deploy', 'evdal.conf'), build)
    confs = {name: config(base, ratio, endpoint) for name, ratio in MODES}
    results = {name: [] for name, _ in MODES}
    for rnd in range(args.rounds):
        for name, _ in MODES:
            us, rps, errors = run(build, confs[name], args.seconds, args.connections,
                                  args.rate)
            results[name].append(us)
            print('round %d %-12s %7.1f us CPU/fetch  %8.0f fetches/s  errors %d'
                  % (rnd + 1, name, us, rps, errors), flush=True)
    off = statistics.median(results['off'])
    print('\nmedians of %d rounds (%d connections, %s, %g s each):'
          % (args.rounds, args.connections,
             '%d fetches/s offered' % args.rate if args.rate else 'closed loop', args.seconds))
    for name, _ in MODES:
        m = statistics.median(results[name])
        print('  %-12s %7.1f us CPU/fetch  %+5.1f%% vs off  (min %.1f, max %.1f)'
              % (name, m, (m / off - 1) * 100, min(results[name]), max(results[name])))
    print('collector: %d POSTs, %d spans' % (Discard.posts, Discard.spans))


if __name__ == '__main__':
    main()

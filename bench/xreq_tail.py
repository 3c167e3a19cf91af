#!/usr/bin/env python3
"""The tail experiment of issue 17: a lookup whose backend answers in 2 ms but takes 200 ms on
every 50th call (the delay backend's tail_every/tail_ms), fetched without hedging and with
`hedge = p95`; latency percentiles of fetches, and the backend calls each setting cost.
Writes docs/bench/hedge_tail.png (gnuplot) and prints a Markdown table.

With --http the backend is a real HTTP upstream (tests/e2e/http_tail_upstream.py: answers at
once, but in 200 ms on every 50th request of each path, and counts its requests), and the two
settings run side by side, open loop at --rate fetches/s each (as the e2e test
test_xreq_http.HedgeHttpTest does), so that the machine's other work weighs on both alike;
the extra requests are then the upstream's own count. Writes docs/bench/hedge_tail_http.png.

  bench/xreq_tail.py [--build build] [--seconds 5] [--connections 8]
  bench/xreq_tail.py --http [--seconds 8] [--rate 250]"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CONFIG = """[server]
listen = 127.0.0.1:%(port)d
admin_listen = 127.0.0.1:%(admin)d
io_threads = 1
max_queue_ms = 0

[lookup plain]
backend = delay
delay_ms = 2
tail_every = 50
tail_ms = 200

[lookup hedged]
backend = delay
delay_ms = 2
tail_every = 50
tail_ms = 200
hedge = p95
"""


HTTP_SERVER = """[server]
listen = 127.0.0.1:%(port)d
admin_listen = 127.0.0.1:%(admin)d
max_queue_ms = 0
"""

UPSTREAM = os.path.join(harness.ROOT, 'tests', 'e2e', 'http_tail_upstream.py')
sys.path.insert(0, os.path.dirname(UPSTREAM))
import http_tail_upstream  # noqa: E402


def upstream_stats(base):
    return json.loads(urllib.request.urlopen(base + '/stats').read())


def bench_rate(build, port, lookup, seconds, rate, out):
    r = subprocess.run([os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', '64',
                        '--rate', str(rate), '-d', str(seconds), '-w', '0', '--json',
                        '--deadline-ms', '1000', '--call', lookup],
                       check=True, capture_output=True, text=True)
    out[lookup] = json.loads(r.stdout)


def run_http(a):
    """Both settings side by side against the real HTTP upstream: {lookup: (res, extra)}."""
    import threading
    up = subprocess.Popen([sys.executable, UPSTREAM], stdout=subprocess.PIPE, text=True)
    base = 'http://' + up.stdout.readline().split()[-1]
    port, admin = harness.free_port(), harness.free_port()
    tmp = tempfile.mkdtemp(prefix='evdal-tail-')
    conf = os.path.join(tmp, 'evdal.conf')
    with open(conf, 'w') as f:
        f.write(HTTP_SERVER % {'port': port, 'admin': admin} +
                http_tail_upstream.LOOKUPS.format(base=base))
    proc = subprocess.Popen([os.path.join(a.build, 'evdal'), '--config', conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        while not hedges_sent(admin, 'hedged'):  # 100 attempts, then a p95
            bench_rate(a.build, port, 'hedged', 1, a.rate, {})
        before = upstream_stats(base)
        out = {}
        threads = [threading.Thread(target=bench_rate, args=(a.build, port, lookup, a.seconds,
                                                             a.rate, out))
                   for lookup in ('plain', 'hedged')]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = upstream_stats(base)
    finally:
        proc.terminate()
        proc.wait(10)
        up.kill()
        up.wait(10)
    rows = {}
    for lookup in ('plain', 'hedged'):
        requests = after['/' + lookup][0] - before.get('/' + lookup, [0, 0])[0]
        rows[lookup] = (out[lookup], requests / out[lookup]['requests'] - 1)
    return rows


def hedges_sent(admin, lookup):
    body = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % admin).read().decode()
    m = re.search(r'^evdal_lookup_hedges_sent_total\{lookup="%s"\} (\S+)$' % lookup, body, re.M)
    return float(m.group(1)) if m else 0.0


def backend_calls(admin, lookup):
    body = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % admin).read().decode()
    m = re.search(r'^evdal_lookup_backend_calls_total\{lookup="%s"\} (\S+)$' % lookup, body, re.M)
    return float(m.group(1)) if m else 0.0


def bench(build, port, lookup, seconds, conns):
    r = subprocess.run([os.path.join(build, 'evdal-bench'), '--port', str(port), '-c',
                        str(conns), '-d', str(seconds), '-w', '0', '--json',
                        '--call', lookup], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--seconds', type=float, default=5)
    ap.add_argument('--connections', type=int, default=8)
    ap.add_argument('--png', default=None)
    ap.add_argument('--http', action='store_true',
                    help='against a real HTTP upstream, both settings side by side')
    ap.add_argument('--rate', type=int, default=250, help='--http: fetches/s of each setting')
    a = ap.parse_args()
    a.png = a.png or os.path.join(harness.ROOT, 'docs', 'bench', 'hedge_tail_http.png'
                                  if a.http else 'hedge_tail.png')
    if a.http:
        report(a, run_http(a), 'real HTTP upstream, %d fetches/s each, side by side' % a.rate)
        return
    port, admin = harness.free_port(), harness.free_port()
    tmp = tempfile.mkdtemp(prefix='evdal-tail-')
    conf = os.path.join(tmp, 'evdal.conf')
    with open(conf, 'w') as f:
        f.write(CONFIG % {'port': port, 'admin': admin})
    proc = subprocess.Popen([os.path.join(a.build, 'evdal'), '--config', conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = {}
    try:
        time.sleep(1.0)
        bench(a.build, port, 'hedged', 2, a.connections)  # 100 attempts, then a p95
        time.sleep(1.1)
        for lookup in ('plain', 'hedged'):
            before = backend_calls(admin, 'hedged')
            res = bench(a.build, port, lookup, a.seconds, a.connections)
            extra = None
            if lookup == 'hedged':
                calls = backend_calls(admin, 'hedged') - before
                fetches = res['rps'] * res['seconds'] if 'seconds' in res else None
                extra = calls / fetches - 1 if fetches else None
            rows[lookup] = (res, extra)
    finally:
        proc.terminate()
        proc.wait(10)
    report(a, rows, '%d connections' % a.connections)


def report(a, rows, what):
    """The Markdown table and the plot of {lookup: (bench result, extra calls or None)}."""
    keys = [('p50_ms', 'p50'), ('p90_ms', 'p90'), ('p99_ms', 'p99'), ('p999_ms', 'p99.9'),
            ('max_ms', 'max')]
    print('| setting | fetches/s | ' + ' | '.join(k[1] for k in keys) + ' | extra backend calls |')
    print('| --- | ---: | ' + ' | '.join('---:' for _ in keys) + ' | ---: |')
    for lookup, (res, extra) in rows.items():
        print('| %s | %.0f | %s | %s |' % (
            'hedge = p95' if lookup == 'hedged' else 'no hedging', res['rps'],
            ' | '.join('%.1f ms' % res[k] for k, _ in keys),
            '%.1f%%' % (extra * 100) if extra is not None else '-'))
    data = os.path.join(tempfile.mkdtemp(prefix='evdal-tail-'), 'tail.dat')
    with open(data, 'w') as f:
        for i, (k, label) in enumerate(keys):
            f.write('%d "%s" %g %g\n' % (i, label, rows['plain'][0][k], rows['hedged'][0][k]))
    script = ('set terminal pngcairo size 800,480 font "sans,11"\nset output "%s"\n'
              'set logscale y\nset grid\nset ylabel "fetch latency (ms)"\n'
              'set title "2%% of backend calls take 200 ms; %s"\n'
              'plot "%s" using 1:3:xtic(2) with linespoints lw 2 title "no hedging", '
              '"%s" using 1:4 with linespoints lw 2 title "hedge = p95"\n'
              % (a.png, what, data, data))
    p = subprocess.run(['gnuplot'], input=script, text=True, capture_output=True)
    if p.returncode != 0:
        sys.exit('gnuplot failed: %s' % p.stderr)
    print('\nplot: %s' % os.path.relpath(a.png, harness.ROOT))


if __name__ == '__main__':
    main()

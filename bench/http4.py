#!/usr/bin/python3
"""http4: four HTTP/JSON lookups per fetch to a local keep-alive server, evdal against the C++
peer (issue 16's benchmark).

    /usr/bin/python3 bench/http4.py [--build build] [--rounds 3] [--seconds 5] [-c 64]

The upstream is haproxy (one thread) answering every GET from memory with a 265-byte JSON
document of five items (`http-request return ... file`), keep-alive: it is the cheapest HTTP
server at hand, so the figures are the clients' cost. evdal drives libcurl's multi interface on
its IO loops (storage/evd_http.c); the peer (bench/peers/cpp-nonblocking) makes the same calls
with blocking libcurl on its lookup threads, one kept-alive connection per thread. Both read the
same config: four lookups h1..h4 (distinct, so that none is merged), each
`get = /rN/{user_id}` with `rows = data.items`, called with a random user id.

For each server, after a warm-up run, A B A B ... rounds of `evdal-bench -c C`; for each run it
reads the CPU time (user + system, /proc/PID/stat) that the server, haproxy and the load
generator spent, and prints fetches/s, latency and CPU per fetch for every process (medians
over the rounds, min-max in brackets), as markdown.
"""
import argparse
import json
import re
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf('SC_CLK_TCK')
BODY = ('{"user_id":1,"data":{"items":[{"id":101,"name":"Kettle","price_cents":2599},'
        '{"id":102,"name":"Toaster","price_cents":3499},{"id":103,"name":"Blender",'
        '"price_cents":5999},{"id":104,"name":"Mixer","price_cents":8999},'
        '{"id":105,"name":"Grinder","price_cents":1999}]}}')
CALLS = [a for n in range(1, 5) for a in ('--call', 'h%d:user_id=@random' % n)]


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit('%s did not start' % what)
            time.sleep(0.05)


def cpu_seconds(pid):
    """User + system CPU time of a process and its threads so far."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def config(listen, admin, upstream_port, connections, io_threads):
    lookups = ''.join("""
[lookup h%d]
upstream = up
get = /r%d/{user_id}
rows = data.items
timeout_ms = 1000
""" % (n, n) for n in range(1, 5))
    return """[server]
listen = %s
admin_listen = %s
io_threads = %d
deadline_ms = 2000
max_queue_ms = 0
log_level = warning

[upstream up]
base_url = http://127.0.0.1:%d
connections = %d
%s""" % (listen, admin, io_threads, upstream_port, connections, lookups)


def run_bench(build, port, conns, seconds, pids, rate=0):
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    argv = [os.path.join(build, 'evdal-bench'), '-p', str(port), '-c', str(conns), '-d',
            str(seconds), '-w', '1', '--random', '1:100000', '--json'] + CALLS
    if rate:
        argv += ['--rate', str(rate)]   # open loop: the same offered load for both servers
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    p.stdout.close()
    _, _, usage = os.wait4(p.pid, 0)   # the load generator's own CPU time
    p.returncode = 0
    r = json.loads(out.strip().splitlines()[-1])
    after = {k: cpu_seconds(p) for k, p in pids.items()}
    r['cpu'] = {k: after[k] - before[k] for k in pids}
    r['cpu']['bench'] = usage.ru_utime + usage.ru_stime
    return r


class Peer:
    def __init__(self, name, argv, port):
        self.name, self.argv, self.port = name, argv, port
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, self.name)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(20)


def median_range(xs, fmt='%.0f'):
    return (fmt + ' (' + fmt + '-' + fmt + ')') % (statistics.median(xs), min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=int, default=5)
    ap.add_argument('-c', '--connections', type=int, default=64)
    ap.add_argument('--evdal-connections', type=int, default=8, help='[upstream] connections')
    ap.add_argument('--io-threads', type=int, default=2)
    ap.add_argument('--peer-args', default='--io-threads 2 --workers 64 --lookup-threads 256')
    ap.add_argument('--rate', type=int, default=0,
                    help='offer this many fetches/s (open loop) instead of a closed loop')
    ap.add_argument('--callgrind', type=int, default=0, metavar='N',
                    help='instead: evdal alone under callgrind, instructions per fetch over N '
                         'fetches (steady whatever the load)')
    args = ap.parse_args()
    haproxy = shutil.which('haproxy') or '/usr/sbin/haproxy'
    tmp = tempfile.mkdtemp(prefix='evdal-http4-')
    try:
        body = os.path.join(tmp, 'body.json')
        with open(body, 'w') as f:
            f.write(BODY)
        up_port = free_port()
        with open(os.path.join(tmp, 'haproxy.cfg'), 'w') as f:
            f.write("""global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
frontend f
    bind 127.0.0.1:%d
    http-request return status 200 content-type application/json file %s
""" % (up_port, body))
        hap = subprocess.Popen([haproxy, '-db', '-f', os.path.join(tmp, 'haproxy.cfg')],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(up_port, hap, 'haproxy')
        ev_port, peer_port = free_port(), free_port()
        conf = os.path.join(tmp, 'http4.conf')
        with open(conf, 'w') as f:
            f.write(config('127.0.0.1:%d' % ev_port, '127.0.0.1:%d' % free_port(), up_port,
                           args.evdal_connections, args.io_threads))
        if args.callgrind:
            run_callgrind(args, conf, ev_port, tmp)
            hap.terminate()
            hap.wait(10)
            return
        servers = [
            Peer('evdal', [os.path.join(args.build, 'evdal'), '--config', conf], ev_port),
            Peer('peer', [os.path.join(args.build, 'evdal-peer-cpp'), '--config', conf,
                          '--listen', '127.0.0.1:%d' % peer_port] + args.peer_args.split(),
                 peer_port),
        ]
        results = {s.name: [] for s in servers}
        bare = []
        for rnd in range(args.rounds + 1):
            for s in servers:
                with s:
                    r = run_bench(args.build, s.port, args.connections,
                                  1 if rnd == 0 else args.seconds,
                                  {'server': s.proc.pid, 'haproxy': hap.pid}, args.rate)
                if rnd > 0:
                    results[s.name].append(r)
                    print('round %d %s: %.0f fetches/s, p99 %.1f ms' %
                          (rnd, s.name, r['rps'], r['p99_ms']), file=sys.stderr)
            if rnd > 0:
                bare.append(run_bare(args, up_port, hap.pid))
        hap.terminate()
        hap.wait(10)
    finally:
        shutil.rmtree(tmp, True)
    report(args, results)
    report_bare(args, results, bare)


def run_callgrind(args, conf, port, tmp):
    """evdal under `valgrind --tool=callgrind --instr-atstart=no`, 16 connections: N/4 fetches
    uninstrumented, then exactly N counted; prints instructions per fetch and the share of each
    library (as bench/callgrind_page.py does for the SQLite page). Budgets are a minute: evdal
    runs ~50x slower under valgrind, and a timed-out call would be cheaper work."""
    with open(conf) as f:
        text = f.read().replace('timeout_ms = 1000', 'timeout_ms = 60000')
    with open(conf, 'w') as f:
        f.write(text.replace('deadline_ms = 2000', 'deadline_ms = 60000'))
    out = os.path.join(tmp, 'callgrind.out.http4')
    p = subprocess.Popen(['valgrind', '--tool=callgrind', '--instr-atstart=no',
                          '--callgrind-out-file=' + out, os.path.join(args.build, 'evdal'),
                          '--config', conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def fetches(n):
        subprocess.run([os.path.join(args.build, 'evdal-bench'), '-p', str(port), '-c', '16',
                        '-n', str(n), '-w', '0', '--random', '1:100000', '--deadline-ms',
                        '60000', '--json'] + CALLS, check=True, stdout=subprocess.DEVNULL)
    try:
        wait_port(port, p, 'evdal under valgrind', timeout=300)
        fetches(max(args.callgrind // 4, 100))
        subprocess.run(['callgrind_control', '-i', 'on', str(p.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        fetches(args.callgrind)
        subprocess.run(['callgrind_control', '-i', 'off', str(p.pid)], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        p.terminate()
        p.wait(600)
    ann = subprocess.run(['callgrind_annotate', '--threshold=100', out], stdout=subprocess.PIPE,
                         text=True).stdout
    total, by_obj = 0, {}
    for line in ann.splitlines():
        m = re.match(r'\s*([\d,]+) .*\[(.*)\]$', line)
        if m and 'PROGRAM TOTALS' not in line:
            by_obj[os.path.basename(m.group(2))] = by_obj.get(os.path.basename(m.group(2)), 0) \
                + int(m.group(1).replace(',', ''))
        elif 'PROGRAM TOTALS' in line:
            total = int(line.split()[0].replace(',', ''))
    print('evdal http4: %d fetches, %.0f instructions per fetch' % (args.callgrind,
                                                                   total / args.callgrind))
    for obj, ir in sorted(by_obj.items(), key=lambda kv: -kv[1])[:8]:
        print('  %-28s %5.1f%%  %8.0f per fetch' % (obj, 100.0 * ir / total, ir / args.callgrind))


def run_bare(args, up_port, hap_pid):
    """evdal-http-bare (bench/evd_http_bare.c): the same GETs through libcurl's multi interface
    and json-glib alone, as many connections as evdal's loops hold (issue 20's yardstick)."""
    h0 = cpu_seconds(hap_pid)
    out = subprocess.run([os.path.join(args.build, 'evdal-http-bare'), '--base-url',
                          'http://127.0.0.1:%d' % up_port, '--threads', str(args.io_threads),
                          '--connections', str(args.evdal_connections), '--duration',
                          str(args.seconds)], check=True, stdout=subprocess.PIPE, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r['haproxy_cpu_s'] = cpu_seconds(hap_pid) - h0
    print('bare: %.0f requests/s, %.1f us CPU per request' % (r['rps'], r['cpu_us_per_request']),
          file=sys.stderr)
    return r


def report_bare(args, results, bare):
    ev = statistics.median(r['cpu']['server'] * 1e6 / (r['requests'] * (args.seconds + 1) /
                                                      args.seconds) / 4 for r in results['evdal'])
    b = [r['cpu_us_per_request'] for r in bare]
    print('\n| client of the HTTP upstream | HTTP requests/s | its CPU us per HTTP request |')
    print('|---|---|---|')
    print('| evdal (per lookup: CPU per fetch / 4) | %s | %.1f |' % (
        median_range([r['rps'] * 4 for r in results['evdal']]), ev))
    print('| evdal-http-bare (libcurl multi + json-glib, %d threads x %d connections) | %s | %s |'
          % (args.io_threads, args.evdal_connections, median_range([r['rps'] for r in bare]),
             median_range(b, '%.1f')))
    print('\nevdal CPU per HTTP lookup / bare CPU per request: %.2fx (issue 20 goal: at most 1.5x)'
          % (ev / statistics.median(b)))


def report(args, results):
    print('| server | fetches/s | HTTP requests/s | p50 ms | p99 ms | CPU us/fetch: server | '
          'haproxy | evdal-bench | all | server cores busy | fetches per server CPU-second |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for name, runs in results.items():
        rps = [r['rps'] for r in runs]
        # CPU per fetch: the run's CPU over its fetches (the warm-up second's fetches
        # included in CPU but not in `requests`, so scale requests by (seconds + 1) / seconds).
        scale = (args.seconds + 1) / args.seconds

        def per_fetch(key):
            return [r['cpu'][key] * 1e6 / (r['requests'] * scale) for r in runs]
        srv, hap, gen = per_fetch('server'), per_fetch('haproxy'), per_fetch('bench')
        print('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            name, median_range(rps), median_range([x * 4 for x in rps]),
            median_range([r['p50_ms'] for r in runs], '%.1f'),
            median_range([r['p99_ms'] for r in runs], '%.1f'),
            median_range(srv), median_range(hap), median_range(gen),
            median_range([a + b + c for a, b, c in zip(srv, hap, gen)]),
            median_range([r['cpu']['server'] / (args.seconds + 1) for r in runs], '%.2f'),
            median_range([1e6 / x for x in srv])))
    ev, pe = statistics.median(r['rps'] for r in results['evdal']), \
        statistics.median(r['rps'] for r in results['peer'])
    ec = statistics.median(r['cpu']['server'] / r['requests'] for r in results['evdal'])
    pc = statistics.median(r['cpu']['server'] / r['requests'] for r in results['peer'])
    print('\nevdal/peer fetches/s: %.2fx (goal: 2x); peer/evdal server CPU per fetch: %.2fx'
          % (ev / pe, pc / ec))


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Coalescing on and off, back to back, counted per kind of thread: for N sqlite7 pages at C
connections, each IO loop's and SQLite worker's voluntary context switches (it slept),
involuntary ones (it was preempted) and CPU time (utime + stime), per page, from
/proc/PID/task; with the joins per page (evdal_lookup_coalesced_total). Counts move less with
the machine's load than fetches/s do.

  bench/xreq_threads.py [--build build] [-n 20000] [-c 64] [--rounds 3] [--io-threads 0]

The page and users (1..1000) are bench/xreq_bench.py's; the server is the sample config as
bench/harness.py prepares it, with its admin port on, for /metrics."""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import xreq_bench  # noqa: E402


def threads(pid):
    """Per thread: its name without the number, voluntary and involuntary switches, CPU us."""
    out = {}
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/comm' % (pid, tid)) as f:
                name = re.sub(r'\d+$', '', f.read().strip())
            with open('/proc/%d/task/%s/status' % (pid, tid)) as f:
                status = f.read()
            with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
                stat = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        vol = int(re.search(r'\nvoluntary_ctxt_switches:\s+(\d+)', status).group(1))
        invol = int(re.search(r'nonvoluntary_ctxt_switches:\s+(\d+)', status).group(1))
        cpu = (int(stat[11]) + int(stat[12])) * 1e6 / os.sysconf('SC_CLK_TCK')
        out[tid] = (name, vol, invol, cpu)
    return out


def joins(admin_port):
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % admin_port) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('evdal_lookup_coalesced_total{'))


def run(a, keys):
    conf = xreq_bench.lookup_keys(harness.prepare_config(
        os.path.join(harness.ROOT, 'deploy', 'evdal.conf'), a.build), keys)
    port, admin = harness.free_port(), harness.free_port()
    with open(conf) as f:
        text = f.read()
    text = text.replace('listen = 127.0.0.1:9090', 'listen = 127.0.0.1:%d' % port)
    text = text.replace('admin_listen =\n', 'admin_listen = 127.0.0.1:%d\n' % admin)
    text = re.sub(r'(?m)^io_threads = \d+', 'io_threads = %d' % a.io_threads, text)
    with open(conf, 'w') as f:
        f.write(text)
    p = subprocess.Popen([os.path.join(a.build, 'evdal'), '--config', conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        page = ['--random', xreq_bench.USERS] + \
            [x for lk in harness.PAGE for x in ('--call', '%s:user_id=@random' % lk)] + \
            ['--call', 'feature_flags']
        # evdal-bench needs a connection per thread
        bench = [os.path.join(a.build, 'evdal-bench'), '--port', str(port), '-c',
                 str(a.connections), '--threads', '2' if a.connections > 1 else '1',
                 '-w', '0', '--json']
        subprocess.run(bench + ['-n', str(max(a.requests // 4, 100))] + page, check=True,
                       capture_output=True)  # warm-up
        t0, j0 = threads(p.pid), joins(admin)
        r = subprocess.run(bench + ['-n', str(a.requests)] + page, check=True,
                           capture_output=True, text=True)
        t1, j1 = threads(p.pid), joins(admin)
    finally:
        p.terminate()
        p.wait(10)
    kinds = collections.defaultdict(lambda: [0, 0, 0.0, 0])
    for tid, (name, vol, invol, cpu) in t1.items():
        if tid in t0:
            k = kinds[name]
            k[0] += vol - t0[tid][1]
            k[1] += invol - t0[tid][2]
            k[2] += cpu - t0[tid][3]
            k[3] += 1
    return json.loads(r.stdout), kinds, (j1 - j0) / a.requests


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('-n', '--requests', type=int, default=20000)
    ap.add_argument('-c', '--connections', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--io-threads', type=int, default=0,
                    help='[server] io_threads (0: one per core)')
    a = ap.parse_args()
    n = a.requests
    for _ in range(a.rounds):
        for name, keys in (('coalescing', ''), ('coalesce = false', 'coalesce = false\n')):
            res, kinds, j = run(a, keys)
            print('%-16s %6.0f fetches/s p50 %s ms, joins %.2f a page' % (name, res['rps'],
                                                                        res.get('p50_ms'), j))
            for kind in ('evdal-io', 'evdal-sqlite'):
                vol, invol, cpu, count = kinds[kind]
                print('  %-13s x%d: slept %.2f, preempted %.2f, CPU %.1f us a page'
                      % (kind, count, vol / n, invol / n, cpu / n))
            sys.stdout.flush()


if __name__ == '__main__':
    main()

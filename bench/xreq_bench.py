#!/usr/bin/env python3
"""The cache-hit path (issue 17): sqlite7 with every lookup cached, against sqlite7 uncached
(coalescing on, the default for SQL, and off) and against static7 (the floor: seven delay_ms=0
naps), in fetches/s and server CPU per fetch (utime + stime of the evdal process over the
measured run, from /proc). Rounds alternate between the settings; medians are printed.

  bench/xreq_bench.py [--build build] [--rounds 3] [--seconds 3]

The cached setting gives each of the six SQLite lookups cache_ttl_ms = 600000 and draws users
from 1..1000 (every page of the run is then a hit after the warm-up); the uncached ones draw
from the same 1..1000, so the SQL is as hot in SQLite's page cache. Everything else is the
sample config (deploy/evdal.conf) as bench/harness.py prepares it."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

USERS = '1:1000'


def lookup_keys(conf, keys):
    """The config with `keys` added to every [lookup ...] of the sample's page."""
    out = []
    with open(conf) as f:
        section = None
        for line in f:
            if line.startswith('['):
                if section in harness.PAGE and keys:
                    out.append(keys)
                section = line.strip()[len('[lookup '):-1] if line.startswith('[lookup ') else None
            out.append(line)
        if section in harness.PAGE and keys:
            out.append(keys)
    with open(conf, 'w') as f:
        f.write(''.join(out))
    return conf


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def run(build, conf, args, seconds, warmup):
    port = harness.free_port()
    with open(conf) as f:
        text = f.read().replace('listen = 127.0.0.1:9090', 'listen = 127.0.0.1:%d' % port)
    with open(conf, 'w') as f:
        f.write(text)
    proc = subprocess.Popen([os.path.join(build, 'evdal'), '--config', conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        # Warm-up run (fills the caches), not measured.
        subprocess.run([os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', '64',
                        '--threads', '2', '-d', str(warmup), '-w', '0', '--json'] + args,
                       check=True, capture_output=True, text=True)
        before = cpu_seconds(proc.pid)
        r = subprocess.run([os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', '64',
                            '--threads', '2', '-d', str(seconds), '-w', '0', '--json'] + args,
                           check=True, capture_output=True, text=True)
        cpu = cpu_seconds(proc.pid) - before
        res = json.loads(r.stdout)
        return res['rps'], cpu / max(res['rps'] * seconds, 1) * 1e6, res
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=float, default=3)
    ap.add_argument('--warmup', type=float, default=1.5)
    ap.add_argument('--only', action='append', help='settings whose name contains this')
    a = ap.parse_args()
    page = ['--random', USERS] + [x for lk in harness.PAGE
                                  for x in ('--call', '%s:user_id=@random' % lk)] \
        + ['--call', 'feature_flags']
    settings = [
        ('sqlite7 cached', 'cache_ttl_ms = 600000\n', page),
        ('sqlite7 coalesced (default)', '', page),
        ('sqlite7 plain (coalesce = false)', 'coalesce = false\n', page),
        ('static7', '', harness.naps(0, 0, 0, 0, 0, 0, 0)),
    ]
    if a.only:
        settings = [st for st in settings if any(o in st[0] for o in a.only)]
    results = {name: [] for name, _, _ in settings}
    for _ in range(a.rounds):
        for name, keys, args in settings:
            conf = lookup_keys(harness.prepare_config(os.path.join(harness.ROOT, 'deploy',
                                                                   'evdal.conf'), a.build),
                               keys)
            rps, cpu_us, res = run(a.build, conf, args, a.seconds, a.warmup)
            results[name].append((rps, cpu_us, res.get('p99_ms')))
            print('%-34s %9.0f fetches/s (%9.0f ok)  %6.1f us CPU/fetch  p99 %s ms' % (name, rps, res.get('ok_rps', 0), cpu_us, res.get('p99_ms')), flush=True)
    print('\nmedians of %d rounds of %.0f s, 64 connections, evdal-bench with 2 threads:'
          % (a.rounds, a.seconds))
    print('| setting | fetches/s | server CPU per fetch |')
    print('| --- | ---: | ---: |')
    for name, _, _ in settings:
        rps = statistics.median(r[0] for r in results[name])
        cpu = statistics.median(r[1] for r in results[name])
        print('| %s | %.0f | %.1f us |' % (name, rps, cpu))


if __name__ == '__main__':
    main()

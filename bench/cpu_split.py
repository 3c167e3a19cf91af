#!/usr/bin/python3
"""evdal's CPU per fetch, by thread group, for any evdal-bench load (issue 20).

    bench/cpu_split.py [--build DIR] --config FILE [--seconds S] [--rounds N] -- BENCH_ARGS...

Each round starts a fresh evdal on a free loopback port with the config (the harness's, from
`bench/harness.py`'s command list, has the nap1..nap7 delay lookups), warms it up for a
second with the same load, then reads utime + stime of every thread from /proc/PID/task
around `evdal-bench -d S BENCH_ARGS` and divides by the fetches answered. Thread groups are
the thread names without their number (evdal-io, evdal-sqlite, ...). Ticks are 10 ms, so run
long enough (the default 3 s at a few thousand fetches/s is plenty) to make them count.

Example (fanout10ms against static7 at the same rate, docs/BENCHMARKS.md):
    bench/cpu_split.py --config CONF -- -c 100 --threads 2 -R 9500 --call nap1:delay_ms=0 ...
"""
import argparse
import collections
import json
import os
import re
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def threads_cpu(pid):
    """{thread group: clock ticks of user + system} of every thread of pid."""
    out = collections.Counter()
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
                st = f.read()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        name = re.sub(r'[0-9]+$', '', st[st.index('(') + 1:st.rindex(')')])
        fields = st[st.rindex(')') + 2:].split()
        out[name] += int(fields[11]) + int(fields[12])
    return out


def one_round(args, bench_args):
    port = free_port()
    evdal = subprocess.Popen([os.path.join(args.build, 'evdal'), '--config', args.config,
                              '--listen', '127.0.0.1:%d' % port], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or evdal.poll() is not None:
                    sys.exit('evdal did not start')
                time.sleep(0.05)
        bench = [os.path.join(args.build, 'evdal-bench'), '--port', str(port), '--json']
        subprocess.run(bench + bench_args + ['-d', '1', '-w', '0'], capture_output=True,
                       check=True)
        before = threads_cpu(evdal.pid)
        r = subprocess.run(bench + bench_args + ['-d', str(args.seconds), '-w', '0'],
                           capture_output=True, text=True, check=True)
        after = threads_cpu(evdal.pid)
    finally:
        evdal.terminate()
        evdal.wait(30)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    fetches = max(result['rps'] * args.seconds, 1)
    per_tick = 1e6 / os.sysconf('SC_CLK_TCK') / fetches
    groups = {g: (after[g] - before.get(g, 0)) * per_tick for g in after}
    return result, groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--config', required=True)
    ap.add_argument('--seconds', type=float, default=3)
    ap.add_argument('--rounds', type=int, default=1)
    args, rest = ap.parse_known_args()
    bench_args = rest[1:] if rest[:1] == ['--'] else rest
    for _ in range(args.rounds):
        result, groups = one_round(args, bench_args)
        shown = ', '.join('%s %.1f' % (g, us) for g, us in sorted(groups.items()) if us > 0)
        print('%8.1f us/fetch  %9.0f fetches/s  p99 %6.1f ms  errors %d  (%s)' % (
            sum(groups.values()), result['rps'], result.get('p99_ms', 0),
            result.get('errors', 0), shown or 'no thread counted a tick'))


if __name__ == '__main__':
    main()

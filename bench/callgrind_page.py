#!/usr/bin/python3
"""Instructions per request, counted by callgrind: evdal serving a fixed number of fetches
(sqlite7 pages, static7 or fanout10ms fetches) from evdal-bench, and evdal-sqlite-bare running
the same statements. On a machine shared by other busy processes, wall-clock figures drift by
tens of percent between runs; instruction counts do not (within a percent or so: row counts
vary with the random users, and how many requests a loop pass or a worker wake-up batches
depends on the scheduling, which valgrind serialises).

  bench/callgrind_page.py [--build build] [--scenario sqlite7|static7|fanout10ms] [-n 2000]
                          [-c 16] [--out DIR] [--bare] [--lookup-keys "coalesce = false"]
                          [--per-thread]

evdal runs the sample config (as bench/harness.py prepares it) under
`valgrind --tool=callgrind --instr-atstart=no`; warm-up fetches run uninstrumented, then
`callgrind_control -i on`, exactly N fetches, `callgrind_control -i off`, and evdal stops: the
profile holds the N fetches only (all of evdal's threads: loops and SQLite workers). The
lookups' and the fetch's budgets are raised to a minute, since evdal runs ~50x slower under
valgrind and a timed-out call would be cheaper work. With --bare, evdal-sqlite-bare runs one
thread for N pages and for 10 pages, and the difference is divided by N - 10 (start-up out).
Prints instructions per request and leaves callgrind.out.* in --out for callgrind_annotate.
With --per-thread, callgrind keeps a profile per thread, and the instructions are also given
per kind of thread: the IO loops (a serial stage, one thread per core) and the SQLite workers.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith('totals:'):
                return int(line.split()[1])
    raise RuntimeError('no totals in ' + path)


# The sample config of this tree, or --config: an older build (a before/after comparison) refuses
# the keys added since, so it runs with the sample config of its own tree.
SAMPLE_CONFIG = os.path.join(harness.ROOT, 'deploy', 'evdal.conf')


def relaxed_config(build, workers=None, lookup_keys=None):
    conf = harness.prepare_config(SAMPLE_CONFIG, build)
    if lookup_keys:
        import xreq_bench
        xreq_bench.lookup_keys(conf, lookup_keys.replace('\\n', '\n') + '\n')
    with open(conf) as f:
        text = f.read()
    if workers:
        text = re.sub(r'(?m)^workers = \d+', 'workers = %d' % workers, text)
    text = re.sub(r'(?m)^timeout_ms = \d+', 'timeout_ms = 60000', text)
    text = re.sub(r'(?m)^deadline_ms = \d+', 'deadline_ms = 60000', text)
    text = re.sub(r'(?m)^max_queue_ms = \d+', 'max_queue_ms = 0', text)
    text = re.sub(r'(?m)^stall_warn_ms = \d+', 'stall_warn_ms = 0', text)
    with open(conf, 'w') as f:
        f.write(text)
    return conf


def bench(build, port, conns, n, args):
    argv = [os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', str(conns),
            '-n', str(n), '-w', '0', '--deadline-ms', '60000', '--json'] + args
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def thread_kind(path):
    """What one thread's profile ran: the functions named in it tell (the thread's own entry
    function is not, since the profile starts mid-run)."""
    with open(path) as f:
        text = f.read()
    if 'sqlite3_step' in text:
        return 'SQLite workers'
    if 'evd_conn_process_input' in text:
        return 'IO loops'
    return 'other threads'


def print_per_thread(out, requests):
    kinds = {}
    for name in sorted(os.listdir(os.path.dirname(out))):
        path = os.path.join(os.path.dirname(out), name)
        if name.startswith(os.path.basename(out) + '-'):
            kind = thread_kind(path)
            kinds[kind] = kinds.get(kind, 0) + total_ir(path)
    for kind, ir in sorted(kinds.items()):
        print('  %-16s %10.0f per fetch' % (kind, ir / requests))
    return sum(kinds.values())


def run_evdal(a, out_dir):
    conf = relaxed_config(a.build, a.workers, a.lookup_keys)
    port = harness.free_port()
    out = os.path.join(out_dir, 'callgrind.out.evdal-%s' % a.scenario)
    args = {'sqlite7': harness.page_args(), 'static7': harness.naps(*[0] * 7),
            'fanout10ms': harness.naps(*[10] * 7)}[a.scenario]
    log = open(os.path.join(out_dir, 'evdal.log'), 'w')
    p = subprocess.Popen(['valgrind', '--tool=callgrind', '--instr-atstart=no',
                          '--callgrind-out-file=' + out]
                         + (['--separate-threads=yes'] if a.per_thread else []) +
                         [os.path.join(a.build, 'evdal'), '--config', conf,
                          '--listen', '127.0.0.1:%d' % port], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                harness.socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError('evdal did not start, see %s' % log.name)
                time.sleep(0.5)
        bench(a.build, port, a.connections, max(a.requests // 4, 100), args)  # warm-up
        subprocess.run(['callgrind_control', '-i', 'on', str(p.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        bench(a.build, port, a.connections, a.requests, args)
        subprocess.run(['callgrind_control', '-i', 'off', str(p.pid)], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=600)
    if a.per_thread:
        print('evdal %s: %d fetches, by thread:' % (a.scenario, a.requests))
        ir = print_per_thread(out, a.requests)
    else:
        ir = total_ir(out)
    print('evdal %s: %d fetches, %d instructions, %.0f per fetch  (%s)'
          % (a.scenario, a.requests, ir, ir / a.requests, out))


SYSCALLS = ['futex', 'epoll_wait', 'read', 'readv', 'write', 'writev', 'ioctl',
            'timerfd_settime', 'recvfrom', 'sendto', 'sendmsg', 'getrandom']


def run_perf_stat(a, out_dir):
    """evdal natively, `perf stat` on it over exactly N fetches: CPU, context switches and
    the system calls per fetch (what callgrind does not see: the kernel's side)."""
    conf = relaxed_config(a.build, a.workers, a.lookup_keys)
    port = harness.free_port()
    args = {'sqlite7': harness.page_args(), 'static7': harness.naps(*[0] * 7),
            'fanout10ms': harness.naps(*[10] * 7)}[a.scenario]
    log = open(os.path.join(out_dir, 'evdal.log'), 'w')
    p = subprocess.Popen([os.path.join(a.build, 'evdal'), '--config', conf,
                          '--listen', '127.0.0.1:%d' % port], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    events = ['task-clock', 'context-switches', 'raw_syscalls:sys_enter'] + \
             ['syscalls:sys_enter_' + s for s in SYSCALLS]
    out = os.path.join(out_dir, 'perf-stat-%s.txt' % a.scenario)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                harness.socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError('evdal did not start, see %s' % log.name)
                time.sleep(0.1)
        bench(a.build, port, a.connections, max(a.requests // 4, 100), args)  # warm-up
        st = subprocess.Popen(['perf', 'stat', '-x', ',', '-o', out, '-e', ','.join(events),
                               '-p', str(p.pid)])
        time.sleep(0.5)  # perf attaches
        bench(a.build, port, a.connections, a.requests, args)
        st.send_signal(signal.SIGINT)
        st.wait()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    print('evdal %s, per fetch over %d fetches at %d connections:'
          % (a.scenario, a.requests, a.connections))
    with open(out) as f:
        for line in f:
            parts = line.strip().split(',')
            if len(parts) < 3 or line.startswith('#'):
                continue
            try:
                v = float(parts[0])
            except ValueError:
                continue
            unit = 'us' if parts[2] == 'task-clock' else ''
            if parts[2] == 'task-clock':
                v *= 1000  # msec -> us
            print('  %-36s %10.2f %s' % (parts[2], v / a.requests, unit))


def run_bare(a, out_dir):
    conf = relaxed_config(a.build)
    irs = {}
    for n in (10, a.requests):
        out = os.path.join(out_dir, 'callgrind.out.bare-%d' % n)
        subprocess.run(['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out,
                        os.path.join(a.build, 'evdal-sqlite-bare'), '--config', conf,
                        '-t', '1', '-n', str(n)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        irs[n] = total_ir(out)
    per = (irs[a.requests] - irs[10]) / (a.requests - 10)
    print('evdal-sqlite-bare: %d pages, %.0f instructions per page  (%s)'
          % (a.requests, per, os.path.join(out_dir, 'callgrind.out.bare-%d' % a.requests)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--scenario', default='sqlite7', choices=['sqlite7', 'static7', 'fanout10ms'])
    ap.add_argument('-n', '--requests', type=int, default=2000)
    ap.add_argument('-c', '--connections', type=int, default=16)
    ap.add_argument('--out', default=None)
    ap.add_argument('--config',
                    help='sample config to relax (an older build: its own tree\'s deploy/evdal.conf)')
    ap.add_argument('--workers', type=int, help='SQLite workers (the sample config has 4)')
    ap.add_argument('--lookup-keys', help='keys added to each [lookup] of the page, '
                    'e.g. "coalesce = false" ("\\n" between several)')
    ap.add_argument('--bare', action='store_true', help='evdal-sqlite-bare instead of evdal')
    ap.add_argument('--per-thread', action='store_true',
                    help='a profile per thread, and instructions per fetch by kind of thread '
                         '(IO loops, SQLite workers)')
    ap.add_argument('--perf-stat', action='store_true',
                    help='evdal natively under perf stat: CPU, switches and system calls')
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    if a.config:
        global SAMPLE_CONFIG
        SAMPLE_CONFIG = os.path.abspath(a.config)
    out_dir = a.out or tempfile.mkdtemp(prefix='evdal-callgrind-')
    os.makedirs(out_dir, exist_ok=True)
    (run_bare if a.bare else run_perf_stat if a.perf_stat else run_evdal)(a, out_dir)


if __name__ == '__main__':
    main()

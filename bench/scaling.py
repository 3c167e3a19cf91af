#!/usr/bin/python3
"""The cost of one more hop: the seven-lookup page directly, through HAProxy, and through a
two-tier evdal, in one run (docs/SCALING.md, docs/BENCHMARKS.md "Beyond one machine").

    /usr/bin/python3 bench/scaling.py [--build build] [--rounds 3] [--seconds 3]
                                      [--out docs/BENCHMARKS.md]

Shapes, each driven by evdal-bench at 64 connections with the sqlite7 page (six SQLite lookups
and a static one, random users):
  direct    evdal-bench -> evdal (the sample config)
  haproxy   evdal-bench -> HAProxy (deploy/haproxy/haproxy.cfg, TCP mode) -> the same evdal
  two-tier  evdal-bench -> a front evdal whose seven lookups are `backend = thrift` upstream
            lookups of the same names -> the same evdal; each page is one remote fetch
  two-tier, a call per remote fetch
            the same with the front's max_calls_per_fetch = 1: seven remote fetches a page
For every process (evdal, the front evdal, HAProxy, the load generator) it reports CPU per
fetch over the measured seconds (utime + stime from /proc), next to fetches/s and p99, as the
median of the rounds (the shapes in alternation, A B C A B C ...).
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BEGIN = '<!-- scaling:begin (bench/scaling.py writes from here to the end marker) -->'
END = '<!-- scaling:end -->'
CONNS = 64


def wait_port(port, proc, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit('%s exited at start-up (%d)' % (what, proc.returncode))
        try:
            harness.socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit('%s did not listen within 30 s' % what)


def front_config(back_port, tmp, per_fetch):
    """A front evdal: each page lookup is the back evdal's lookup of the same name; the calls
    of one page go to the back evdal as remote fetches of at most `per_fetch` calls."""
    lines = ['[server]', 'listen = 127.0.0.1:0', 'admin_listen =', 'max_connections = 2000', '',
             '[upstream back]', 'backend = thrift', 'address = 127.0.0.1:%d' % back_port,
             'connections = 4', 'max_calls_per_fetch = %d' % per_fetch, '']
    for name in harness.PAGE:
        lines += ['[lookup %s]' % name, 'upstream = back', 'params = user_id', '']
    lines += ['[lookup feature_flags]', 'upstream = back', '']
    path = os.path.join(tmp, 'front-%d.conf' % per_fetch)
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def measure(build, port, procs, seconds, warmup):
    """One evdal-bench run of the page at `port`; CPU per fetch of each named process."""
    argv = ([os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', str(CONNS),
             '--threads', '2', '-d', str(seconds), '-w', str(warmup), '--json']
            + harness.page_args())
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = dict(procs, **{'load generator': bench.pid})
    time.sleep(warmup)
    t0 = time.monotonic()
    before = {k: harness.cpu_seconds(p) for k, p in procs.items()}
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    after = {k: harness.cpu_seconds(p) for k, p in procs.items()}
    out, err = bench.communicate(timeout=seconds + warmup + 60)
    if bench.returncode != 0:
        sys.exit('evdal-bench failed:\n%s%s' % (out, err))
    r = json.loads(out.strip().splitlines()[-1])
    fetches = max(r['rps'] * elapsed, 1)
    r['cpu_us'] = {k: (after[k] - before[k]) * 1e6 / fetches for k in procs}
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=float, default=3)
    ap.add_argument('--warmup', type=float, default=0.5)
    ap.add_argument('--out', default=os.path.join(harness.ROOT, 'docs', 'BENCHMARKS.md'))
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    conf = harness.prepare_config(os.path.join(harness.ROOT, 'deploy', 'evdal.conf'), build)
    tmp = os.path.dirname(conf)
    haproxy = shutil.which('haproxy') or '/usr/sbin/haproxy'
    procs = []

    def start(argv, port, what, env=None):
        log = open(os.path.join(tmp, what + '.log'), 'a')
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        procs.append(p)
        wait_port(port, p, what)
        return p

    try:
        back_port, back_admin = harness.free_port(), harness.free_port()
        with open(conf) as f:
            text = f.read().replace('admin_listen =\n', 'admin_listen = 127.0.0.1:%d\n' % back_admin)
        with open(conf, 'w') as f:
            f.write(text)
        back = start([os.path.join(build, 'evdal'), '--config', conf, '--listen',
                      '127.0.0.1:%d' % back_port], back_port, 'evdal')
        front_port = harness.free_port()
        front = start([os.path.join(build, 'evdal'), '--config',
                       front_config(back_port, tmp, 64), '--listen', '127.0.0.1:%d' % front_port],
                      front_port, 'front')
        single_port = harness.free_port()
        single = start([os.path.join(build, 'evdal'), '--config',
                        front_config(back_port, tmp, 1), '--listen',
                        '127.0.0.1:%d' % single_port], single_port, 'front-single')
        proxy_port = harness.free_port()
        env = dict(os.environ, EVDAL_FRONT='127.0.0.1:%d' % proxy_port)
        for i in (1, 2, 3):  # all three entries are the one evdal: the proxy's cost alone
            env['EVDAL%d' % i] = '127.0.0.1:%d' % back_port
            env['EVDAL%d_ADMIN_PORT' % i] = str(back_admin)
        proxy = start([haproxy, '-db', '-f', os.path.join(harness.ROOT, 'deploy', 'haproxy',
                                                          'haproxy.cfg')], proxy_port, 'haproxy',
                      env)
        shapes = {
            'direct': (back_port, {'evdal': back.pid}),
            'haproxy': (proxy_port, {'evdal': back.pid, 'HAProxy': proxy.pid}),
            'two-tier': (front_port, {'evdal': back.pid, 'front evdal': front.pid}),
            'two-tier, a call per remote fetch': (single_port, {'evdal': back.pid,
                                                                'front evdal': single.pid}),
        }
        for port, p in shapes.values():
            measure(build, port, p, 1, 0.2)  # warm-up
        results = {name: [] for name in shapes}
        for _ in range(args.rounds):
            for name, (port, p) in shapes.items():
                results[name].append(measure(build, port, p, args.seconds, args.warmup))
                print('%-34s %s fetches/s' % (name, harness.fmt(results[name][-1]['rps'])),
                      file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    med = harness.med
    lines = [BEGIN, '', '## Beyond one machine: the cost of one more hop (run of %s)'
             % datetime.date.today().isoformat(), '',
             'Machine: %s. Command: `/usr/bin/python3 bench/scaling.py --rounds %d --seconds %g`. '
             'The sqlite7 page at %d connections, the shapes in alternation; medians of '
             '%d rounds. CPU per fetch is each process\'s utime + stime over the measured '
             'seconds divided by the fetches answered.' % (harness.machine(), args.rounds,
                                                           args.seconds, CONNS, args.rounds), '',
             '| shape | fetches/s | p99 ms | evdal CPU us | front evdal CPU us | HAProxy CPU us '
             '| load generator CPU us | all CPU us |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, rs in results.items():
        cpu = lambda k: med([r['cpu_us'][k] for r in rs if k in r['cpu_us']])
        parts = [cpu(k) for k in ('evdal', 'front evdal', 'HAProxy', 'load generator')]
        total = sum(x for x in parts if x == x)
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
            name, harness.fmt(med([r['rps'] for r in rs])),
            harness.fmt(med([r['p99_ms'] for r in rs]), 1),
            *[harness.fmt(x, 1) if x == x else '-' for x in parts], harness.fmt(total, 1)))
    lines += ['', END]
    block = '\n'.join(lines) + '\n'
    text = open(args.out).read() if os.path.exists(args.out) else ''
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip('\n') + '\n\n' + block
    with open(args.out, 'w') as f:
        f.write(text)
    print(block)


if __name__ == '__main__':
    main()

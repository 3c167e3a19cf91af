#!/usr/bin/python3
"""evdal against the C++ TNonblockingServer peer, side by side: the harness of docs/BENCHMARKS.md.

    /usr/bin/python3 bench/harness.py [--build build] [--rounds 5] [--seconds 3]
                                      [--only NAME ...] [--out docs/BENCHMARKS.md]

Starts evdal and evdal-peer-cpp on the same configuration (deploy/evdal.conf, the sample
database) on loopback ports, then, for every scenario, runs `evdal-bench` against evdal, then
against the peer, then evdal again... (A B A B) for --rounds rounds after one warm-up run each.
It writes the results between the "harness" markers of --out (the rest of the file is kept):
the machine, every command, medians with min-max, the evdal/peer ratios, the goals of issue 5
and whether this run met them, and PNG plots (gnuplot) of throughput and p99 against the
number of connections. The raw results go to bench-results.json next to the plots.

Scenarios (the fetch each runs is its `evdal-bench --call` list):
  ping, static7        ping / seven delay_ms=0 calls (to seven distinct delay lookups), at
                       1, 16, 64 and 256 connections
  fanout10ms           seven 10 ms calls, at 100 and 1,000 connections
  sqlite7              the seven-lookup page for random users, 64 connections; also the bare
                       SQLite C API doing the same statements (evdal-sqlite-bare), and the
                       same pages through evdal's loops and SQLite pool alone (its --handoff)
  c10k                 static7 on 64 busy connections, with and without 10,000 idle ones held
                       open; both servers are restarted for each round, so that the RSS
                       growth between the two runs is the idle connections' alone
  article              seven calls of 20..140 ms from one connection
  redis7               seven Redis lookups (bench/redis7.py's: HGETALL, HMGET, LRANGE,
                       ZREVRANGE WITHSCORES, GET, SMEMBERS) for random users, 64 connections,
                       against a redis-server the harness starts on a unix socket; the peer
                       uses hiredis's blocking API on its lookup threads
  pg7                  (only with --only pg7, alone) the seven-lookup page from PostgreSQL 15
                       (a throwaway server loaded by evdal-mkdb --postgresql, or
                       --pg-conninfo), 64 connections: evdal, the peer (blocking libpq), and
                       evdal-pg-bare (libpq alone, one thread per core, the same number of
                       PostgreSQL connections; plain and pipelined), with the CPU per page of
                       every process: the server, PostgreSQL's backends, the load generator
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import redis7

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = '<!-- harness:begin (bench/harness.py writes from here to the end marker) -->'
END = '<!-- harness:end -->'
PAGE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
        'recommended_products']
IDLE = 10000

# Each server runs each scenario family with the settings that served it best on this
# machine, where the load generator takes about one of the two cores: `bench/tune.py evdal` and
# `bench/tune.py peer` measure them, docs/BENCHMARKS.md ("Tuning both servers") has the tables.
# A family not named runs with the server's defaults: evdal one IO loop per core, the peer
# 2 IO threads, 64 handlers and 256 lookup threads.
# evdal, ping: one IO loop. Two loops plus the load generator's thread are three busy threads on
# two cores, and a loop that loses its core for a scheduler slice holds its connections'
# replies: ping's p99 at 16 connections is 2-4 ms with two loops, under 1 ms with one. The
# other families gain 10-20% of throughput from the second loop, with a p99 far below the
# peer's either way. And busy polling for 50 us after work: at one connection a request waits
# for nothing but the wake-up of the sleeping loop thread, which this VM's halting idle CPUs
# make longer than the request's own work (ping-1 about 2.2x faster with it; no gain, or
# a loss within noise, for the families busy enough never to sleep).
EVDAL_TUNED = {'ping': {'io_threads': '1', 'busy_poll_us': '50'}}
# The peer: few handler threads for short calls (less switching on two cores), one IO thread
# where its handlers are the busier side; for fanout10ms, 128 handlers and 512 lookup threads:
# a fetch holds a handler and seven lookup threads for 10 ms, and more threads than that
# lose to switching (bench/tune.py peer, in docs/BENCHMARKS.md).
_FEW2 = ['--io-threads', '2', '--workers', '16', '--lookup-threads', '64']
_FEW1 = ['--io-threads', '1', '--workers', '16', '--lookup-threads', '64']
_WAITING = ['--io-threads', '2', '--workers', '128', '--lookup-threads', '512']
PEER_TUNED = {'ping': _FEW2, 'static7': _FEW1, 'c10k': _FEW1, 'sqlite7': _FEW1,
              'fanout10ms': _WAITING,
              # a Redis call holds a lookup thread for a round trip: 64 fetches x 7 calls
              'redis7': ['--io-threads', '1', '--workers', '64', '--lookup-threads', '128']}

# redis7: the Redis lookups get a prefix (the sample config has its own feature_flags), and
# REDIS_SOCKET is set by main() once it has started redis-server.
REDIS_PREFIX = 'r7_'
REDIS_USERS = 10000
REDIS_SOCKET = None


# Both servers merge identical calls of one fetch (same lookup, params and budget) into one
# backend run, so seven calls of one lookup would measure one timer per fetch. Each nap of a
# fetch therefore goes to its own delay lookup, nap1..nap7, which prepare_config adds.
NAPS = 7


def naps(*ms):
    return [a for i, d in enumerate(ms) for a in ('--call', 'nap%d:delay_ms=%d' % (i + 1, d))]


def page_args():
    args = ['--random', '1:100000']
    for lookup in PAGE:
        args += ['--call', '%s:user_id=@random' % lookup]
    return args + ['--call', 'feature_flags']


class Scenario:
    def __init__(self, name, family, conns, args, threads=1, idle=0, what=''):
        self.name, self.family, self.conns, self.args = name, family, conns, args
        self.threads, self.idle, self.what = threads, idle, what

    def bench_argv(self, build, port, seconds, warmup):
        return ([os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', str(self.conns),
                 '--threads', str(self.threads), '-d', str(seconds), '-w', str(warmup), '--json']
                + (['--idle', str(self.idle)] if self.idle else []) + self.args)


def scenarios():
    out = []
    for c in (1, 16, 64, 256):
        out.append(Scenario('ping-%d' % c, 'ping', c, ['--method', 'ping'],
                            threads=2 if c >= 64 else 1, what='ping()'))
    # 100 and 1,000 as well: fanout10ms's CPU per fetch is judged against static7's at the
    # same connection count (waiting should cost nothing).
    for c in (1, 16, 64, 100, 256, 1000):
        out.append(Scenario('static7-%d' % c, 'static7', c, naps(0, 0, 0, 0, 0, 0, 0),
                            threads=2 if c >= 64 else 1,
                            what='fetch of nap1..nap7, delay_ms=0'))
    for c in (100, 1000):
        out.append(Scenario('fanout10ms-%d' % c, 'fanout10ms', c, naps(*[10] * 7), threads=2,
                            what='fetch of nap1..nap7, delay_ms=10'))
    out.append(Scenario('sqlite7-64', 'sqlite7', 64, page_args(), threads=2,
                        what='the 7-lookup page (6 SQLite + 1 static), random user'))
    out.append(Scenario('c10k-base', 'c10k', 64, naps(0, 0, 0, 0, 0, 0, 0), threads=2,
                        what='static7, 64 busy connections, no idle ones'))
    out.append(Scenario('c10k-idle', 'c10k', 64, naps(0, 0, 0, 0, 0, 0, 0), threads=2,
                        idle=IDLE, what='static7, 64 busy + %d idle connections' % IDLE))
    out.append(Scenario('article-1', 'article', 1, naps(20, 40, 60, 80, 100, 120, 140),
                        what='fetch of nap1..nap7 of 20, 40, ..., 140 ms'))
    r7 = ['--random', '1:%d' % REDIS_USERS]
    for name, command, _ in redis7.LOOKUPS:
        r7 += ['--call', REDIS_PREFIX + name + (':user_id=@random' if '{' in command else '')]
    out.append(Scenario('redis7-64', 'redis7', 64, r7, threads=2,
                        what='seven Redis lookups, random user'))
    return out


# ---- The servers ----

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """One server process on a loopback port; restartable."""

    def __init__(self, name, argv_fn, log_dir, tuned=None):
        """argv_fn(port, setting) gives the command; tuned maps a scenario family to its
        setting (a family not in it gets None: the server's defaults)."""
        self.name, self.argv_fn, self.log_dir = name, argv_fn, log_dir
        self.tuned = tuned or {}
        self.proc, self.port, self.argv, self.setting = None, None, None, None

    def start(self):
        self.port = free_port()
        self.argv = self.argv_fn(self.port, self.setting)
        log = open(os.path.join(self.log_dir, '%s.log' % self.name), 'a')
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit('%s exited at start-up (%d): see %s' % (self.name, self.proc.returncode,
                                                                 self.log_dir))
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit('%s did not listen within 30 s' % self.name)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def tune_for(self, family):
        """(Re)starts the server with its setting for this family unless it already runs
        with it; True if it did."""
        setting = self.tuned.get(family)
        if setting == self.setting and self.proc is not None:
            return False
        self.setting = setting
        self.restart()
        return True


def show(argv):
    """A command as the report prints it: paths relative to the repository."""
    return shlex.join(os.path.relpath(a, ROOT) if a.startswith(ROOT + '/') else str(a)
                      for a in argv)


def cpu_seconds(pid):
    """utime + stime of every thread of process `pid` so far, in seconds (/proc, clock ticks)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return float('nan')
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_bare(argv, seconds):
    """One run of evdal-sqlite-bare: (pages/s, its CPU microseconds per page)."""
    before = children_cpu()
    p = subprocess.run(argv, capture_output=True, text=True, check=True)
    cpu = children_cpu() - before
    last = p.stdout.strip().splitlines()[-1]
    rps = json.loads(last[last.index('{'):])['rps']
    return rps, cpu * 1e6 / max(rps * seconds, 1)


def run_bench(build, server, sc, seconds, warmup):
    """One evdal-bench run; returns its JSON result plus the server's peak RSS (KiB) during it
    and its RSS just before."""
    argv = sc.bench_argv(build, server.port, seconds, warmup)
    before = rss_kib(server.proc.pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_kib(server.proc.pid))

    # CPU over the measured seconds only (after the load generator's warm-up): the server's
    # and the load generator's, each utime + stime from /proc.
    cpu = {}

    # On a busy machine this thread may wake after the load generator has already exited: a
    # missed start leaves the window unmeasured (NaN), a missed end is taken at once, which
    # is where the measured seconds ended (the generator's own CPU is then gone: NaN).
    def cpu_window(bench_pid, t_start):
        for key, wait in (('start', warmup), ('end', warmup + seconds)):
            if done.wait(max(0.0, t_start + wait - time.monotonic())) and key == 'start':
                return
            cpu[key] = (time.monotonic(), cpu_seconds(server.proc.pid), cpu_seconds(bench_pid))

    t = threading.Thread(target=sample)
    t.start()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        w = threading.Thread(target=cpu_window, args=(proc.pid, time.monotonic()))
        w.start()
        out, err = proc.communicate(timeout=seconds + warmup + 120)
    finally:
        done.set()
        t.join()
        w.join()
    if proc.returncode != 0 or not out.strip():
        sys.exit('%s failed against %s (%d):\n%s\n%s' % (shlex.join(argv), server.name,
                                                        proc.returncode, out, err))
    r = json.loads(out.strip().splitlines()[-1])
    r['rss_before_kib'], r['rss_peak_kib'] = before, peak[0]
    if 'start' in cpu and 'end' in cpu:
        elapsed = cpu['end'][0] - cpu['start'][0]
        answered = max(r['rps'] * elapsed, 1)
        r['cpu_us'] = (cpu['end'][1] - cpu['start'][1]) * 1e6 / answered
        r['gen_cpu_us'] = (cpu['end'][2] - cpu['start'][2]) * 1e6 / answered
        r['gen_cpu_share'] = (cpu['end'][2] - cpu['start'][2]) / (elapsed * os.cpu_count())
    else:
        r['cpu_us'] = r['gen_cpu_us'] = r['gen_cpu_share'] = float('nan')
    return r


# ---- Statistics and the report ----

def div(a, b):
    """a / b, or NaN where b is 0 (a window too short for the clock ticks to count any CPU)."""
    return a / b if b else float('nan')


def med(xs):
    return statistics.median(xs) if xs else float('nan')


def fmt(x, digits=0):
    if x != x:
        return 'n/a'
    if digits == 0:
        return '{:,.0f}'.format(x)
    return '{:,.{}f}'.format(x, digits)


def cell(xs, digits=0):
    return '%s (%s-%s)' % (fmt(med(xs), digits), fmt(min(xs), digits), fmt(max(xs), digits))


def machine():
    cpu = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30

    def pkg(name):
        p = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', name], capture_output=True,
                           text=True)
        return p.stdout.strip() or '?'
    return ('%d cores (%s), %.0f GiB, Linux %s; libthrift-c-glib %s, libthrift (C++) %s, '
            'libevent %s, SQLite %s' % (os.cpu_count(), cpu, mem, platform.release(),
                                        pkg('libthrift-c-glib0'), pkg('libthrift-0.17.0'),
                                        pkg('libevent-2.1-7:amd64'), pkg('libsqlite3-0:amd64')))


def plot(results, out_dir, family_list, metric, ylabel, png):
    """gnuplot, log-log: one line per (scenario family, server) against connections."""
    data = os.path.join(out_dir, png.replace('.png', '.dat'))
    blocks, titles = [], []
    for fam in family_list:
        for server in ('evdal', 'peer'):
            rows = []
            for name, r in results.items():
                if r['family'] == fam:
                    rows.append((r['conns'], med([x[metric] for x in r[server]])))
            blocks.append('\n'.join('%d %g' % row for row in sorted(rows)))
            titles.append('%s %s' % (fam, 'evdal' if server == 'evdal' else 'C++ peer'))
    with open(data, 'w') as f:
        f.write('\n\n\n'.join(blocks) + '\n')
    plots = ', '.join('"%s" index %d using 1:2 with linespoints lw 2 title "%s"' %
                      (data, i, t) for i, t in enumerate(titles))
    script = ('set terminal pngcairo size 900,540 font "sans,11"\n'
              'set output "%s"\nset logscale xy\nset grid\nset key outside right\n'
              'set xlabel "connections"\nset ylabel "%s"\nplot %s\n'
              % (os.path.join(out_dir, png), ylabel, plots))
    p = subprocess.run(['gnuplot'], input=script, text=True, capture_output=True)
    if p.returncode != 0:
        sys.exit('gnuplot failed: %s' % p.stderr)
    os.unlink(data)


def report(args, results, bare, commands, started, elapsed):
    ev = lambda name, k: [x[k] for x in results[name]['evdal']] if name in results else []
    pe = lambda name, k: [x[k] for x in results[name]['peer']] if name in results else []

    def ratio(name, k='rps'):
        return med(ev(name, k)) / med(pe(name, k)) if name in results else float('nan')

    lines = [BEGIN, '',
             '## Side by side with the C++ TNonblockingServer (run of %s)' % started, '',
             'Machine: %s. Load generator and both servers share these cores; all traffic is on '
             'loopback.' % machine(), '',
             'Command: `/usr/bin/python3 bench/harness.py --build %s --rounds %d --seconds %g%s` '
             '(%.0f min). Each cell is the median of %d rounds (min-max in brackets), evdal '
             'and the peer measured in alternation (A B A B ...) after one warm-up run each. '
             'Ratio: evdal / peer, of the medians. Each server runs each scenario with its best '
             'settings for this machine (thread counts, busy polling: `bench/tune.py`; the '
             'commands below say which).' %
             (os.path.relpath(args.build, ROOT), args.rounds, args.seconds,
              ''.join(' --only ' + o for o in args.only or []), elapsed / 60, args.rounds), '',
             'CPU per request leads: each server\'s utime + stime (every thread, from /proc) over '
             'the measured seconds, divided by the requests it answered in them. On this shared '
             '2-core VM it varies far less from run to run than requests per second. CPU ratio: '
             'peer / evdal (above 1: evdal spends less). "gen": the load generator\'s share of '
             'the two cores while driving evdal.', '',
             '| scenario | conns | evdal CPU us/req | peer CPU us/req | CPU ratio | evdal req/s '
             '| peer req/s | ratio | evdal p99 ms | peer p99 ms | gen |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, r in results.items():
        cpu_ratio = div(med(pe(name, 'cpu_us')), med(ev(name, 'cpu_us')))
        lines.append('| %s | %s | %s | %s | **%.2fx** | %s | %s | %.2fx | %s | %s | %.0f%% |' % (
            r['family'] + (' + %s idle' % fmt(r['idle']) if r['idle'] else ''),
            fmt(r['conns']), cell(ev(name, 'cpu_us'), 1), cell(pe(name, 'cpu_us'), 1),
            cpu_ratio, cell(ev(name, 'rps')), cell(pe(name, 'rps')), ratio(name),
            cell(ev(name, 'p99_ms'), 1), cell(pe(name, 'p99_ms'), 1),
            100 * med(ev(name, 'gen_cpu_share'))))
    if bare:
        lines += ['', 'The bare SQLite C API doing the same six statements for random users, one '
                  'thread per core, measured in turn with sqlite7\'s rounds (evdal, peer, bare, '
                  'evdal...; `%s`): %s pages/s, %s us of CPU per page.'
                  % (bare['command'], cell(bare['rps']), cell(bare['cpu_us'], 1)),
                  '', 'The same pages through evdal\'s own IO loops and SQLite pool, with no '
                  'network and no Thrift (`%s`, in the same rounds): %s pages/s, %s us of CPU '
                  'per page, %.2fx bare\'s: the floor of any evdal that keeps SQLite off its '
                  'loops.' % (bare['handoff_command'], cell(bare['handoff_rps']),
                              cell(bare['handoff_cpu_us'], 1),
                              div(med(bare['handoff_cpu_us']), med(bare['cpu_us'])))]
    errs = [(n, s, sum(x['errors'] for x in r[s])) for n, r in results.items()
            for s in ('evdal', 'peer')]
    errs = ['%s on %s: %d' % e for e in errs if e[2]]
    lines += ['', 'Errors (declared exceptions, application errors, connection errors) over all '
              'measured rounds: %s.' % ('; '.join(errs) if errs else 'none')]

    # c10k: RSS per idle connection, from the same round's two runs on fresh servers.
    goals = []
    if 'c10k-idle' in results:
        per = {}
        for s in ('evdal', 'peer'):
            per[s] = [(i['rss_peak_kib'] - b['rss_peak_kib']) * 1024 / max(i['idle_open'], 1)
                      for b, i in zip(results['c10k-base'][s], results['c10k-idle'][s])]
        held = {s: min(x['idle_open'] for x in results['c10k-idle'][s]) for s in per}
        keep = {s: med(ev('c10k-idle', 'rps') if s == 'evdal' else pe('c10k-idle', 'rps')) /
                med(ev('c10k-base', 'rps') if s == 'evdal' else pe('c10k-base', 'rps'))
                for s in per}
        lines += ['', 'c10k: RSS per idle connection (peak RSS of the run with the idle '
                  'connections, less that of the run without, on a freshly started server, '
                  'divided by the idle connections still open at the end): evdal %s bytes, '
                  'peer %s bytes. Idle connections held, fewest in a round: evdal %s, peer %s. '
                  'Throughput with them, against without: evdal %.0f%%, peer %.0f%%.' %
                  (cell(per['evdal']), cell(per['peer']), fmt(held['evdal']), fmt(held['peer']),
                   100 * keep['evdal'], 100 * keep['peer'])]
        goals.append(('c10k: at most 4 KiB of RSS per idle connection',
                      '%s bytes' % fmt(med(per['evdal'])), med(per['evdal']) <= 4096
                      and held['evdal'] == IDLE))
        goals.append(('c10k: throughput with the idle ones at least 90% of without',
                      '%.0f%%' % (100 * keep['evdal']), keep['evdal'] >= 0.9))

    for fam in ('ping', 'static7'):
        names = [n for n, r in results.items() if r['family'] == fam]
        if names:
            worst = min(ratio(n) for n in names)
            p99 = all(med(ev(n, 'p99_ms')) <= med(pe(n, 'p99_ms')) for n in names)
            goals.append(('%s: at least 2x the peer\'s throughput at every connection count, '
                          'p99 no worse' % fam, 'lowest ratio %.2fx; p99 %s' %
                          (worst, 'no worse at every count' if p99 else 'worse somewhere'),
                          worst >= 2 and p99))
    for c in (100, 1000):
        fan, flat = 'fanout10ms-%d' % c, 'static7-%d' % c
        if fan in results and flat in results:
            x = div(med(ev(fan, 'cpu_us')), med(ev(flat, 'cpu_us')))
            goals.append(('waiting is free: fanout10ms\'s CPU per fetch at most 1.2x static7\'s '
                          'at %s connections' % fmt(c), '%.2fx (%.1f vs %.1f us)'
                          % (x, med(ev(fan, 'cpu_us')), med(ev(flat, 'cpu_us'))), x <= 1.2))
        if fan in results:
            ceiling = c / 0.010
            goals.append(('fanout10ms at %s connections: share of the closed-loop ceiling '
                          '(%s fetches/s), for the record' % (fmt(c), fmt(ceiling)),
                          '%.0f%%; load generator %.0f%% of the cores'
                          % (100 * med(ev(fan, 'rps')) / ceiling,
                             100 * med(ev(fan, 'gen_cpu_share'))), True))
    if 'sqlite7-64' in results:
        goals.append(('sqlite7: at least 1.5x the peer', '%.2fx' % ratio('sqlite7-64'),
                      ratio('sqlite7-64') >= 1.5))
        if bare:
            b = med(ev('sqlite7-64', 'rps')) / med(bare['rps'])
            c = div(med(ev('sqlite7-64', 'cpu_us')), med(bare['cpu_us']))
            goals.append(('sqlite7: CPU per page at most 1.5x the bare SQLite C API\'s',
                          '%.2fx (%.1f vs %.1f us); pages/s %.2f of bare'
                          % (c, med(ev('sqlite7-64', 'cpu_us')), med(bare['cpu_us']), b),
                          c <= 1.5))
    if 'redis7-64' in results:
        goals.append(('redis7: at least 2x the peer', '%.2fx' % ratio('redis7-64'),
                      ratio('redis7-64') >= 2))
    if 'article-1' in results:
        m = med(ev('article-1', 'p50_ms'))
        goals.append(('article: median within 2 ms of 140 ms', '%.1f ms' % m, abs(m - 140) <= 2))
    lines += ['', '### Goals, by this run', '', '| goal | measured | met |',
              '| --- | --- | --- |']
    lines += ['| %s | %s | %s |' % (g, m, 'yes' if ok else '**no**') for g, m, ok in goals]

    plots = []
    fams = [f for f in ('ping', 'static7', 'fanout10ms') if any(r['family'] == f
                                                               for r in results.values())]
    if fams:
        plot(results, args.plots, fams, 'rps', 'requests/s', 'throughput.png')
        plot(results, args.plots, fams, 'p99_ms', 'p99 latency (ms)', 'p99.png')
        rel = os.path.relpath(args.plots, os.path.dirname(os.path.abspath(args.out)))
        plots = ['', '![throughput against connections](%s/throughput.png)' % rel, '',
                 '![p99 against connections](%s/p99.png)' % rel]
    lines += plots
    lines += ['', '<details><summary>Every command of this run</summary>', '', '```sh']
    lines += commands
    lines += ['```', '', '</details>', '', END]
    return '\n'.join(lines) + '\n'


def write_report(path, block):
    text = ''
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip('\n') + ('\n\n' if text else '') + block
    with open(path, 'w') as f:
        f.write(text)


def prepare_config(config, build, server_set=None):
    """The sample config as it is, in a temp folder, but with no admin port (one may be in
    use), room for c10k, the database by absolute path (made first if missing), and the
    [server] keys of server_set set (changed where the sample has them, else added)."""
    db = os.path.join(os.path.dirname(os.path.abspath(config)), 'sample.db')
    if not os.path.exists(db):
        subprocess.run([os.path.join(build, 'evdal-mkdb'), db], check=True,
                       stdout=subprocess.DEVNULL)
    conf = os.path.join(tempfile.mkdtemp(prefix='evdal-harness-'), 'evdal.conf')
    section = None
    with open(config) as f, open(conf, 'w') as out:
        for line in f:
            key = line.split('=', 1)[0].strip()
            if line.startswith('['):
                section = line.strip()
                if section == '[server]':  # every key of server_set, first; skipped below
                    line += ''.join('%s = %s\n' % kv for kv in (server_set or {}).items())
            elif section == '[server]' and key in (server_set or {}):
                continue
            if key == 'admin_listen':
                line = 'admin_listen =\n'
            elif key == 'max_connections':
                line = 'max_connections = %d\n' % (IDLE + 1000)
            elif key == 'path' and 'sample.db' in line:
                line = 'path = %s\n' % db
            out.write(line)
        for i in range(1, NAPS + 1):
            out.write('\n[lookup nap%d]\nbackend = delay\ndelay_ms = 0\n'
                      'description = One of the seven naps of a fetch\n' % i)
        if REDIS_SOCKET:
            out.write('\n[database r7_cache]\nbackend = redis\naddress = %s\n'
                      'connections = 2\n' % REDIS_SOCKET)
            for name, command, _ in redis7.LOOKUPS:
                out.write('\n[lookup %s%s]\ndatabase = r7_cache\ncommand = %s\n'
                          'timeout_ms = 1000\n' % (REDIS_PREFIX, name, command))
    return conf


# ---- pg7: the page from PostgreSQL (issue 15) ----

PG_BEGIN = '<!-- harness-pg7:begin (bench/harness.py --only pg7 writes to the end marker) -->'
PG_END = '<!-- harness-pg7:end -->'
PG_CONNS_PER_LOOP = 4     # evdal's `connections`; its 2 loops make 8, as many as the others get


def cpu_ticks(pids):
    """utime + stime of these processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf('SC_CLK_TCK')


def pg_cpu(postmaster_pid):
    """CPU seconds of PostgreSQL so far: the postmaster, its live children (backends, WAL
    writer...), and the children it has reaped (cutime+cstime: a client's backends that have
    exited by the end of its run)."""
    out = subprocess.run(['pgrep', '-P', str(postmaster_pid)], capture_output=True, text=True)
    total = cpu_ticks([int(x) for x in out.stdout.split()])
    try:
        with open('/proc/%d/stat' % postmaster_pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError):
        pass
    return total


def run_measured(argv, server_pid, pg_pid, timeout):
    """Runs a client to completion; returns its last JSON line plus the CPU seconds spent by
    the server (server_pid, or None), PostgreSQL's backends and the client itself."""
    s0, b0 = cpu_ticks([server_pid] if server_pid else []), pg_cpu(pg_pid)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s1, b1 = cpu_ticks([server_pid] if server_pid else []), pg_cpu(pg_pid)
    if p.returncode != 0:
        sys.exit('%s failed (%d):\n%s\n%s' % (shlex.join(argv), p.returncode, p.stdout, p.stderr))
    last = p.stdout.strip().splitlines()[-1]
    r = json.loads(last[last.index('{'):])
    r['cpu_server'] = s1 - s0
    r['cpu_pg'] = b1 - b0
    r['cpu_client'] = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    return r


def run_pg7(args):
    sys.path.insert(0, os.path.join(ROOT, 'tests', 'e2e'))
    import pg_fixture
    pg = None
    t0 = time.monotonic()
    if args.pg_conninfo:
        conninfo = args.pg_conninfo
    else:
        if not pg_fixture.available():
            sys.exit('pg7 needs PostgreSQL 15 (tools/dev.sh deps) or --pg-conninfo')
        pg = pg_fixture.PgServer().start()
        subprocess.run([os.path.join(args.build, 'evdal-mkdb'), '--postgresql', pg.conninfo],
                       check=True, stdout=subprocess.DEVNULL)
        conninfo = 'host=%s port=%d dbname=postgres user=evdal_ro' % (pg.dir, pg.port)
    tmp = tempfile.mkdtemp(prefix='evdal-harness-pg7-')
    conf = os.path.join(tmp, 'evdal-postgresql.conf')
    with open(os.path.join(ROOT, 'deploy', 'evdal-postgresql.conf')) as f, open(conf, 'w') as out:
        for line in f:
            key = line.split('=', 1)[0].strip()
            if key == 'conninfo':
                line = 'conninfo = %s\n' % conninfo
            elif key == 'admin_listen':
                line = 'admin_listen =\n'
            elif key == 'io_threads':
                line = 'io_threads = 2\n'
            elif key == 'connections':
                line = 'connections = %d\n' % PG_CONNS_PER_LOOP
            out.write(line)
    total = 2 * PG_CONNS_PER_LOOP
    # The postmaster: the first line of its unix socket's lock file names it.
    kv = dict(x.split('=', 1) for x in conninfo.split() if '=' in x)
    with open(os.path.join(kv['host'], '.s.PGSQL.%s.lock' % kv.get('port', '5432'))) as f:
        pg_pid = int(f.readline())
    evdal = Server('evdal', lambda port, _: [os.path.join(args.build, 'evdal'), '--config', conf,
                                             '--listen', '127.0.0.1:%s' % port], tmp)
    peer = Server('peer', lambda port, _: [os.path.join(args.build, 'evdal-peer-cpp'), '--config',
                                           conf, '--listen', '127.0.0.1:%s' % port]
                  + _FEW1 + ['--sqlite-threads', str(total)], tmp)
    sc = Scenario('pg7-64', 'pg7', 64, page_args(), threads=2,
                  what='the 7-lookup page (6 PostgreSQL + 1 static), random user')
    bare = {m: [os.path.join(args.build, 'evdal-pg-bare'), '--config', conf, '--threads', '2',
                '--connections', str(PG_CONNS_PER_LOOP), '-d', str(args.seconds)]
            + (['--pipeline'] if m == 'bare-pipelined' else []) for m in ('bare', 'bare-pipelined')}
    runs = {'evdal': [], 'peer': [], 'bare': [], 'bare-pipelined': []}
    commands = [show(evdal.argv_fn('PORT', None)), show(peer.argv_fn('PORT', None)),
                show(sc.bench_argv(args.build, 'PORT', args.seconds, 0))] + \
               [show(b) for b in bare.values()]
    try:
        for s in (evdal, peer):
            s.start()
            run_bench(args.build, s, sc, 1, 0)  # warm-up: connections made, statements prepared
        for rnd in range(args.rounds):
            for s in (evdal, peer):
                runs[s.name].append(run_measured(
                    sc.bench_argv(args.build, s.port, args.seconds, 0), s.proc.pid, pg_pid,
                    args.seconds + 120))
            for m, argv in bare.items():
                runs[m].append(run_measured(argv, None, pg_pid, args.seconds + 120))
            print('pg7 round %d: %s' % (rnd + 1, ', '.join(
                '%s %.0f' % (k, v[-1]['rps']) for k, v in runs.items())), file=sys.stderr)
    finally:
        for s in (evdal, peer):
            s.stop()
        if pg:
            pg.close()
    block = pg7_report(args, runs, commands, time.monotonic() - t0)
    text = open(args.out).read() if os.path.exists(args.out) else ''
    if PG_BEGIN in text and PG_END in text:
        text = text[:text.index(PG_BEGIN)] + block + text[text.index(PG_END) + len(PG_END) + 1:]
    else:
        text = text.rstrip('\n') + '\n\n' + block
    with open(args.out, 'w') as f:
        f.write(text)
    with open(os.path.join(args.plots, 'pg7-results.json'), 'w') as f:
        json.dump({'date': datetime.date.today().isoformat(), 'machine': machine(), 'runs': runs},
                  f, indent=1)
    print('wrote %s' % args.out, file=sys.stderr)


def pg7_report(args, runs, commands, elapsed):
    def per_page(r, k):
        pages = r['rps'] * r['seconds']
        return 1000 * r[k] / pages if pages else float('nan')

    def col(name, k):
        return [per_page(r, k) for r in runs[name]]

    rps = {k: [r['rps'] for r in v] for k, v in runs.items()}
    lines = [PG_BEGIN, '', '### pg7: the page from PostgreSQL (run of %s)' %
             datetime.date.today().isoformat(), '',
             'Machine: %s; PostgreSQL 15 on the same cores, over its unix socket. Command: '
             '`/usr/bin/python3 bench/harness.py --only pg7 --rounds %d --seconds %g` (%.0f min). '
             'Each round runs evdal, the peer, then evdal-pg-bare plain and pipelined, one after '
             'the other; cells are medians of %d rounds (min-max). CPU per page is '
             'utime+stime from /proc over the run, divided by the pages served; %d PostgreSQL '
             'connections for each (evdal: 2 IO loops x %d; the peer: %d pool threads, one '
             'blocking connection each; bare: 2 threads x %d).' %
             (machine(), args.rounds, args.seconds, elapsed / 60, args.rounds,
              2 * PG_CONNS_PER_LOOP, PG_CONNS_PER_LOOP, 2 * PG_CONNS_PER_LOOP, PG_CONNS_PER_LOOP),
             '', '| client of PostgreSQL | pages/s | p99 ms | its CPU ms/page | PostgreSQL '
             'backends ms/page | load generator ms/page |', '| --- | ---: | ---: | ---: | ---: | ---: |']
    for name, label in (('evdal', 'evdal (64 Thrift connections)'),
                        ('peer', 'C++ peer, blocking libpq (64 Thrift connections)'),
                        ('bare', 'evdal-pg-bare, one query per connection at a time'),
                        ('bare-pipelined', 'evdal-pg-bare, a page per pipeline')):
        own = 'cpu_server' if name in ('evdal', 'peer') else 'cpu_s'
        lines.append('| %s | %s | %s | %s | %s | %s |' % (
            label, cell(rps[name]), cell([r['p99_ms'] for r in runs[name]], 1),
            cell(col(name, own), 3), cell(col(name, 'cpu_pg'), 3),
            cell(col(name, 'cpu_client'), 3) if name in ('evdal', 'peer') else '(itself)'))
    ev, pe, ba = med(rps['evdal']), med(rps['peer']), med(rps['bare'])
    cev, cpe, cba = med(col('evdal', 'cpu_server')), med(col('peer', 'cpu_server')), \
        med(col('bare', 'cpu_s'))
    goals = [('pg7: at least 1.5x the peer\'s pages/s', '%.2fx' % (ev / pe), ev / pe >= 1.5),
             ('evdal\'s CPU per page at most 1.5x the bare client\'s', '%.2fx' % (cev / cba),
              cev / cba <= 1.5),
             ('evdal\'s CPU per page at most half the peer\'s', '%.2fx' % (cev / cpe),
              cev / cpe <= 0.5)]
    lines += ['', '| goal (issue 15) | measured | met |', '| --- | --- | --- |']
    lines += ['| %s | %s | %s |' % (g, m, 'yes' if ok else '**no**') for g, m, ok in goals]
    lines += ['', 'evdal against bare libpq: %.2f of its pages/s.' % (ev / ba)]
    lines += ['', '<details><summary>Every command of this run</summary>', '', '```sh']
    lines += commands + ['```', '', '</details>', '', PG_END]
    return '\n'.join(lines) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--seconds', type=float, default=3)
    ap.add_argument('--warmup', type=float, default=0.5, help='unmeasured seconds of each run')
    ap.add_argument('--only', action='append', help='scenario names or families (repeatable)')
    ap.add_argument('--out', default=os.path.join(ROOT, 'docs', 'BENCHMARKS.md'))
    ap.add_argument('--plots', help='folder of the PNGs and raw results (default: bench/ '
                    'next to --out)')
    ap.add_argument('--config', default=os.path.join(ROOT, 'deploy', 'evdal.conf'))
    ap.add_argument('--peer-args', default='', help='extra evdal-peer-cpp options')
    ap.add_argument('--pg-conninfo', help='pg7: a database evdal-mkdb --postgresql loaded, as '
                    'evdal_ro (default: a throwaway PostgreSQL 15, loaded first)')
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    args.plots = args.plots or os.path.join(os.path.dirname(os.path.abspath(args.out)), 'bench')
    os.makedirs(args.plots, exist_ok=True)
    if args.only and 'pg7' in args.only:
        run_pg7(args)
        return
    chosen = [s for s in scenarios() if not args.only or s.name in args.only
              or s.family in args.only]
    if any(s.family == 'c10k' for s in chosen):  # the pair belongs together
        chosen = [s for s in chosen if s.family != 'c10k'] + \
                 [s for s in scenarios() if s.family == 'c10k']
    if not chosen:
        sys.exit('no scenario matches --only')

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by both servers
    if hard < IDLE + 1000 and any(s.idle for s in chosen):
        sys.exit('c10k needs %d descriptors; the hard limit is %d' % (IDLE + 1000, hard))

    global REDIS_SOCKET
    redis = None
    if any(s.family == 'redis7' for s in chosen):
        redis, REDIS_SOCKET = redis7.start_redis(tempfile.mkdtemp(prefix='evdal-harness-redis-'))
        redis7.load(REDIS_SOCKET, REDIS_USERS)
    conf = prepare_config(args.config, args.build)
    tmp = os.path.dirname(conf)
    confs = {(): conf}  # evdal's config for each setting of its [server] keys

    def evdal_argv(port, setting):
        key = tuple(sorted((setting or {}).items()))
        if key not in confs:
            confs[key] = prepare_config(args.config, args.build, dict(key))
        return [os.path.join(args.build, 'evdal'), '--config', confs[key],
                '--listen', '127.0.0.1:%d' % port]

    evdal = Server('evdal', evdal_argv, tmp, EVDAL_TUNED)
    peer = Server('peer', lambda port, setting: [os.path.join(args.build, 'evdal-peer-cpp'),
                                                 '--config', conf, '--listen',
                                                 '127.0.0.1:%d' % port]
                  + (setting or []) + shlex.split(args.peer_args), tmp, PEER_TUNED)
    servers = (evdal, peer)
    started = datetime.date.today().isoformat()
    t0 = time.monotonic()
    results, commands = {}, []
    try:
        commands.append('# %s config: the sample one with admin_listen off and max_connections '
                        '%d; evdal\'s other configs differ from it in the [server] keys shown'
                        % (tmp, IDLE + 1000))

        def tune(family):
            for s in servers:
                if s.tune_for(family):
                    shown = (', '.join('%s = %s' % kv for kv in s.setting.items())
                             if isinstance(s.setting, dict) else 'its defaults'
                             if s.setting is None else ' '.join(s.setting))
                    commands.extend(['# %s, from here on (%s):' % (s.name, shown),
                                     show(s.argv)])

        for sc in chosen:
            results[sc.name] = {'family': sc.family, 'conns': sc.conns, 'idle': sc.idle,
                                'evdal': [], 'peer': []}
        plain = [sc for sc in chosen if sc.family != 'c10k']
        c10k = [sc for sc in chosen if sc.family == 'c10k']
        bare_argv = [os.path.join(args.build, 'evdal-sqlite-bare'), '--config', conf, '-d',
                     str(args.seconds)]
        # The floor of any design that keeps SQLite off the loops: the same pages through
        # evdal's own loops and SQLite pool, with no network and no Thrift.
        handoff_argv = bare_argv + ['--handoff']
        bare = None
        for sc in plain:
            tune(sc.family)
            commands.append(show(sc.bench_argv(args.build, 'PORT', args.seconds, args.warmup)))
            for s in servers:
                run_bench(args.build, s, sc, 1, 0)  # warm-up
            if sc.family == 'sqlite7':
                # The bare SQLite API takes its turn in the same rounds (A B C A B C ...): this
                # machine's speed drifts by more than the ratio's margin over minutes.
                bare = {'command': show(bare_argv), 'rps': [], 'cpu_us': [],
                        'handoff_command': show(handoff_argv), 'handoff_rps': [],
                        'handoff_cpu_us': []}
                commands += [bare['command'], bare['handoff_command']]
            for rnd in range(args.rounds):
                for s in servers:
                    results[sc.name][s.name].append(run_bench(args.build, s, sc, args.seconds,
                                                              args.warmup))
                if sc.family == 'sqlite7':
                    rps, cpu_us = run_bare(bare_argv, args.seconds)
                    bare['rps'].append(rps)
                    bare['cpu_us'].append(cpu_us)
                    rps, cpu_us = run_bare(handoff_argv, args.seconds)
                    bare['handoff_rps'].append(rps)
                    bare['handoff_cpu_us'].append(cpu_us)
            print('%-18s evdal %s req/s, peer %s req/s' % (
                sc.name, fmt(med([x['rps'] for x in results[sc.name]['evdal']])),
                fmt(med([x['rps'] for x in results[sc.name]['peer']]))), file=sys.stderr)
        if c10k:
            tune('c10k')
            commands += [show(sc.bench_argv(args.build, 'PORT', args.seconds, args.warmup))
                         for sc in c10k]
            commands.append('# c10k: each round restarts both servers, then runs both commands')
            for rnd in range(args.rounds):
                for s in servers:
                    s.restart()
                    run_bench(args.build, s, c10k[0], 1, 0)  # warm-up, without idle ones
                    for sc in c10k:
                        results[sc.name][s.name].append(run_bench(args.build, s, sc,
                                                                  args.seconds, args.warmup))
            print('c10k               done', file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
        if redis is not None:
            redis.terminate()
            redis.wait(20)
            shutil.rmtree(os.path.dirname(REDIS_SOCKET), True)
    with open(os.path.join(args.plots, 'bench-results.json'), 'w') as f:
        json.dump({'date': started, 'machine': machine(), 'results': results, 'bare': bare},
                  f, indent=1)
    write_report(args.out, report(args, results, bare, commands, started,
                                  time.monotonic() - t0))
    print('wrote %s and %s' % (args.out, args.plots), file=sys.stderr)


if __name__ == '__main__':
    main()

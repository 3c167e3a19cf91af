#!/usr/bin/python3
"""redis7: seven Redis lookups per fetch through evdal, against redis-benchmark sending the same
seven commands straight to the same redis-server (issue 16's benchmark, evdal's side).

    /usr/bin/python3 bench/redis7.py [--build build] [--seconds 5] [--rounds 3] [--users 10000]

Starts a redis-server on a unix socket in a temporary folder (no persistence), loads one
session, profile, cart, recent-views sorted set, name and tag set per user plus the feature
flags, then in turn (A B A B ...):
  evdal           evdal-bench -c 64 --threads 2 fetching the seven lookups for random users
                  (evdal: one IO loop per core, 2 Redis connections per loop, pipelined)
  redis-benchmark -c 64, each of the seven commands for -n requests (one key: a command's cost
                  does not depend on which key), the seven runs together
and prints, for each, the Redis commands per second and the CPU time per Redis command of
every process involved (from /proc/PID/stat and the children's rusage), medians over the
rounds, as a Markdown table.
"""
import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf('SC_CLK_TCK')

# name, command template, the same command for redis-benchmark (user 42)
LOOKUPS = [
    ('session', 'HGETALL session:{user_id}', ['HGETALL', 'session:42']),
    ('profile', 'HMGET user:{user_id} name email plan', ['HMGET', 'user:42', 'name', 'email',
                                                         'plan']),
    ('feature_flags', 'HGETALL feature_flags', ['HGETALL', 'feature_flags']),
    ('cart', 'LRANGE cart:{user_id} 0 -1', ['LRANGE', 'cart:42', '0', '-1']),
    ('recent', 'ZREVRANGE recent:{user_id} 0 4 WITHSCORES',
     ['ZREVRANGE', 'recent:42', '0', '4', 'WITHSCORES']),
    ('name', 'GET name:{user_id}', ['GET', 'name:42']),
    ('tags', 'SMEMBERS tags:{user_id}', ['SMEMBERS', 'tags:42']),
]


def resp(*args):
    out = [b'*%d\r\n' % len(args)]
    for a in args:
        a = str(a).encode()
        out.append(b'$%d\r\n%s\r\n' % (len(a), a))
    return b''.join(out)


def cpu_s(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load(sock_path, users):
    """Loads the data with one pipelined stream of commands."""
    cmds = [resp('HSET', 'feature_flags', 'new_checkout', 1, 'dark_mode', 0,
                 'recommendations_v2', 1)]
    for u in range(1, users + 1):
        cmds.append(resp('HSET', 'session:%d' % u, 'user_id', u, 'cart_items', 3,
                         'locale', 'en-GB'))
        cmds.append(resp('HSET', 'user:%d' % u, 'name', 'User %d' % u,
                         'email', 'user%d@example.com' % u, 'plan', 'pro'))
        cmds.append(resp('RPUSH', 'cart:%d' % u, 'p1', 'p2', 'p3'))
        cmds.append(resp('ZADD', 'recent:%d' % u, 1, 'p10', 2, 'p11', 3, 'p12', 4, 'p13',
                         5, 'p14'))
        cmds.append(resp('SET', 'name:%d' % u, 'User %d' % u))
        cmds.append(resp('SADD', 'tags:%d' % u, 'a', 'b', 'c'))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(b''.join(cmds) + resp('PING'))
    f = s.makefile('rb')
    while not f.readline().startswith(b'+PONG'):
        pass
    s.close()


def start_redis(tmp):
    sock_path = os.path.join(tmp, 'redis.sock')
    p = subprocess.Popen(['redis-server', '--port', '0', '--unixsocket', sock_path,
                          '--save', '', '--appendonly', 'no', '--dir', tmp,
                          '--logfile', os.path.join(tmp, 'redis.log')])
    deadline = time.monotonic() + 20
    while not os.path.exists(sock_path):
        if time.monotonic() > deadline:
            sys.exit('redis-server did not start')
        time.sleep(0.02)
    return p, sock_path


def evdal_config(tmp, sock_path):
    text = ['[server]', 'listen = 127.0.0.1:0',
            'admin_listen = 127.0.0.1:0', 'io_threads = 0', 'deadline_ms = 5000',
            '', '[database cache]', 'backend = redis', 'address = %s' % sock_path,
            'connections = 2', '']
    for name, command, _ in LOOKUPS:
        text += ['[lookup %s]' % name, 'database = cache', 'command = %s' % command,
                 'timeout_ms = 3000', '']
    path = os.path.join(tmp, 'evdal.conf')
    with open(path, 'w') as f:
        f.write('\n'.join(text))
    return path


def start_server(argv, log_path):
    """Starts evdal or the peer; returns the process and the port it logged."""
    import re
    log = open(log_path, 'wb')
    p = subprocess.Popen(argv, stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        with open(log_path) as f:
            m = re.search(r'listening on 127\.0\.0\.1:(\d+)', f.read())
        if m:
            return p, int(m.group(1))
        if time.monotonic() > deadline or p.poll() is not None:
            sys.exit('%s did not start: see %s' % (argv[0], log_path))
        time.sleep(0.02)


def redis_outcomes(tmp):
    """evdal_redis_calls_total by outcome, from the admin endpoint whose address evdal logged."""
    import re
    import urllib.request
    with open(os.path.join(tmp, 'evdal.log')) as f:
        admin = re.search(r'admin on (http://\S+?/)', f.read()).group(1)
    body = urllib.request.urlopen(admin + 'metrics', timeout=10).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^evdal_redis_calls_total\{database="cache",outcome="(\w+)"\} (\S+)$', body, re.M)}


def run_fetches(build, server, port, redis, seconds, users):
    argv = [os.path.join(build, 'evdal-bench'), '--port', str(port), '-c', '64',
            '--threads', '2', '-d', str(seconds), '-w', '1', '--json',
            '--random', '1:%d' % users]
    for name, command, _ in LOOKUPS:
        argv += ['--call', name + (':user_id=@random' if '{user_id}' in command else '')]
    # CPU of the measured part only: evdal-bench warms up for 1 s first, so sample the
    # servers' CPU at the start of the measured window and at its end.
    bench_cpu0 = children_cpu_s()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    e0, r0, t0 = cpu_s(server.pid), cpu_s(redis.pid), time.monotonic()
    out, _ = p.communicate(timeout=seconds + 60)
    e1, r1, t1 = cpu_s(server.pid), cpu_s(redis.pid), time.monotonic()
    res = json.loads(out.strip().splitlines()[-1])
    if res.get('errors'):
        sys.exit('evdal-bench saw errors: %s' % res)
    commands = res['requests'] * len(LOOKUPS)
    bench_cpu = children_cpu_s() - bench_cpu0
    return {'fetches_s': res['rps'], 'commands_s': res['rps'] * len(LOOKUPS),
            'p99_ms': res.get('p99_ms'),
            'server_us': (e1 - e0) / (res['rps'] * (t1 - t0) * len(LOOKUPS)) * 1e6,
            'redis_us': (r1 - r0) / (res['rps'] * (t1 - t0) * len(LOOKUPS)) * 1e6,
            'bench_us_per_fetch': bench_cpu / res['requests'] * 1e6,
            'commands': commands}


def run_redis_benchmark(redis, sock_path, n):
    total_req = 0
    total_s = 0.0
    bench_cpu = 0.0
    redis_cpu = 0.0
    for _, _, cmd in LOOKUPS:
        c0, r0, t0 = children_cpu_s(), cpu_s(redis.pid), time.monotonic()
        subprocess.run(['redis-benchmark', '-s', sock_path, '-c', '64', '-n', str(n), '-q']
                       + cmd, check=True, stdout=subprocess.DEVNULL)
        total_s += time.monotonic() - t0
        bench_cpu += children_cpu_s() - c0
        redis_cpu += cpu_s(redis.pid) - r0
        total_req += n
    return {'commands_s': total_req / total_s, 'bench_us': bench_cpu / total_req * 1e6,
            'redis_us': redis_cpu / total_req * 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'))
    ap.add_argument('--seconds', type=float, default=5)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--users', type=int, default=10000)
    ap.add_argument('--requests', type=int, default=100000,
                    help='redis-benchmark requests per command')
    ap.add_argument('--peer-args', default='--io-threads 1 --workers 64 --lookup-threads 128',
                    help='evdal-peer-cpp threads')
    args = ap.parse_args()
    if shutil.which('redis-server') is None or shutil.which('redis-benchmark') is None:
        sys.exit('needs redis-server and redis-benchmark (redis-tools)')
    tmp = tempfile.mkdtemp(prefix='evdal-redis7-')
    redis, sock_path = start_redis(tmp)
    servers = []
    try:
        load(sock_path, args.users)
        conf = evdal_config(tmp, sock_path)
        evdal, evdal_port = start_server([os.path.join(args.build, 'evdal'), '--config', conf],
                                         os.path.join(tmp, 'evdal.log'))
        servers.append(evdal)
        peer_argv = [os.path.join(args.build, 'evdal-peer-cpp'), '--config', conf,
                     '--listen', '127.0.0.1:0'] + args.peer_args.split()
        peer, peer_port = start_server(peer_argv, os.path.join(tmp, 'peer.log'))
        servers.append(peer)
        ev, pe, rb = [], [], []
        run_fetches(args.build, evdal, evdal_port, redis, 1, args.users)   # warm-up
        run_fetches(args.build, peer, peer_port, redis, 1, args.users)
        for r in range(args.rounds):
            ev.append(run_fetches(args.build, evdal, evdal_port, redis, args.seconds,
                                  args.users))
            bad = {k: v for k, v in redis_outcomes(tmp).items() if k != 'ok' and v}
            if bad:   # a busy machine can stall a loop past the timeout: say so, go on
                print('evdal answered Redis lookups with errors so far: %s' % bad,
                      file=sys.stderr)
            pe.append(run_fetches(args.build, peer, peer_port, redis, args.seconds, args.users))
            rb.append(run_redis_benchmark(redis, sock_path, args.requests))
            print('round %d: evdal %s | peer %s | redis-benchmark %s'
                  % (r + 1, json.dumps(ev[-1]), json.dumps(pe[-1]), json.dumps(rb[-1])),
                  file=sys.stderr)
    finally:
        for p in servers:
            p.terminate()
            p.wait(20)
        redis.terminate()
        redis.wait(20)
        shutil.rmtree(tmp, True)

    def m(rows, k):
        return statistics.median(x[k] for x in rows)

    print('| 64 connections, seven Redis lookups per fetch | fetches/s | p99 ms | Redis commands/s '
          '| CPU us per Redis command: server or client | redis-server |')
    print('| --- | --- | --- | --- | --- | --- |')
    for name, rows in (('evdal', ev), ('C++ peer, blocking hiredis (%s)' % args.peer_args, pe)):
        print('| %s | %.0f | %.2f | %.0f | %.1f (load generator: %.1f per fetch) | %.1f |'
              % (name, m(rows, 'fetches_s'), m(rows, 'p99_ms'), m(rows, 'commands_s'),
                 m(rows, 'server_us'), m(rows, 'bench_us_per_fetch'), m(rows, 'redis_us')))
    print('| redis-benchmark -c 64, the same seven commands | | | %.0f | %.1f | %.1f |'
          % (m(rb, 'commands_s'), m(rb, 'bench_us'), m(rb, 'redis_us')))
    print('\nevdal/peer fetches/s: %.2fx; evdal CPU per Redis lookup / redis-benchmark CPU per '
          'request: %.2f' % (m(ev, 'fetches_s') / m(pe, 'fetches_s'),
                             m(ev, 'server_us') / m(rb, 'bench_us')))


if __name__ == '__main__':
    main()

"""Overload soak (issue 6; label "long", not run in CI): find the server's sustainable
throughput, then offer twice that for 30 s, open loop, and check that

  - admitted (answered OK) throughput stays within 10% of the peak,
  - the p99 of admitted requests stays bounded (max_queue_ms sheds the rest at once),
  - the excess gets Overloaded, not timeouts or closed connections,
  - peak RSS stays bounded.

This machine's speed drifts by more than the 10% under test from one minute to the next
(shared cores: the same server's closed-loop peak has read 12,000 and 19,000 req/s ten
seconds apart). So the soak runs ROUNDS overload phases, each between two peak measurements,
compares each phase with the mean of the peaks on either side of it, and judges the median of
those ratios; every round must pass the other checks.

Usage (from CTest, or by hand): overload_soak.py BUILD_DIR [SECONDS [ROUNDS]]. Prints one JSON
line per round and one for the verdict; docs/RELIABILITY.md records the latest run.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

build = os.path.abspath(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
EVDAL = os.path.join(build, 'evdal')
BENCH = os.path.join(build, 'evdal-bench')

# One loop; seven zero-delay calls per fetch, so the loop's CPU is the limit. max_inflight is
# set for that: 4x the 64 connections that reach the peak. Left at thousands, a burst of
# admissions makes thousands of fetches (and 14 timers each) live at once, and each then costs
# more to serve: measured side by side, 256 admitted about 10% more than 4,096 under the same
# overload, with a p99 of 23 ms instead of 70 ms (docs/RELIABILITY.md).
CONFIG = """\
[server]
listen = 127.0.0.1:0
io_threads = 1
max_queue_ms = 20
max_inflight = 256
max_pipeline = 1024
deadline_ms = 1000

""" + ''.join('\n[lookup nap%d]\nbackend = delay\ndelay_ms = 0\n' % i for i in range(1, 8))
# Seven distinct lookups: seven calls of one lookup with the same params would run once.
CALLS = sum((['--call', 'nap%d:delay_ms=0' % i] for i in range(1, 8)), [])
PEAK_SECONDS = 10


def bench(port, *args):
    out = subprocess.run([BENCH, '--port', str(port), '--json'] + CALLS + list(args),
                         capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise SystemExit('evdal-bench failed: %s' % out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak(port):
    return bench(port, '-c', '64', '-d', str(PEAK_SECONDS), '-w', '2')


def start_server(tmp):
    conf = os.path.join(tmp, 'evdal.conf')
    with open(conf, 'w') as f:
        f.write(CONFIG)
    log = open(os.path.join(tmp, 'evdal.log'), 'w+')
    server = subprocess.Popen([EVDAL, '--config', conf], stdout=log, stderr=log)
    for _ in range(200):
        log.seek(0)
        text = log.read()
        if 'listening on' in text:
            return server, int(text.split('listening on ')[1].split()[0].rsplit(':', 1)[1])
        time.sleep(0.05)
    server.kill()
    raise SystemExit('evdal did not start:\n' + text)


def overload(server, port, offered):
    """Offers `offered` req/s for `seconds`; returns the bench result and sampled RSS."""
    rss = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            with open('/proc/%d/status' % server.pid) as f:
                rss.extend(int(l.split()[1]) for l in f if l.startswith('VmRSS:'))
            stop.wait(0.5)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return bench(port, '-c', '128', '-P', '64', '-R', '%.0f' % offered, '-d', str(seconds),
                     '-w', '2'), max(rss)
    finally:
        stop.set()
        sampler.join()


def main():
    server, port = start_server(tempfile.mkdtemp(prefix='evdal-soak-'))
    results = []
    try:
        before = peak(port)
        for i in range(rounds):
            offered = 2 * before['rps']
            over, rss = overload(server, port, offered)
            after = peak(port)
            peak_rps = (before['rps'] + after['rps']) / 2
            results.append({
                'round': i + 1, 'peak_rps': peak_rps, 'peak_before_rps': before['rps'],
                'peak_after_rps': after['rps'], 'peak_p99_ms': before['p99_ms'],
                'offered_rps': offered, 'seconds': seconds,
                'admitted_rps': over['ok_rps'], 'admitted_ratio': over['ok_rps'] / peak_rps,
                'admitted_p50_ms': over['ok_p50_ms'], 'admitted_p99_ms': over['ok_p99_ms'],
                'overloaded': over['overloaded'], 'errors': over['errors'],
                'not_sent': over['not_sent'], 'rss_max_kib_sampled': rss,
            })
            print(json.dumps(results[-1]), flush=True)
            before = after
        with open('/proc/%d/status' % server.pid) as f:
            hwm = [int(l.split()[1]) for l in f if l.startswith('VmHWM:')][0]
    finally:
        server.terminate()
        server.wait(30)
    median = statistics.median(r['admitted_ratio'] for r in results)
    print(json.dumps({'rounds': rounds, 'median_admitted_ratio': median, 'vmhwm_kib': hwm,
                      'server_exit': server.returncode}))
    failures = []
    if median < 0.9:
        failures.append('median admitted throughput is %.0f%% of the peak, below 90%%'
                        % (100 * median))
    for r in results:
        if r['admitted_p99_ms'] > 250:
            failures.append('round %d: p99 of admitted requests %.1f ms is not bounded (> 250 ms)'
                            % (r['round'], r['admitted_p99_ms']))
        if r['errors'] > 0:
            failures.append('round %d: %d errors (timeouts, closed connections): excess must be '
                            'Overloaded' % (r['round'], r['errors']))
    if hwm > 256 * 1024:
        failures.append('peak RSS %d KiB above 256 MiB' % hwm)
    if server.returncode != 0:
        failures.append('the server exited with %s after SIGTERM' % server.returncode)
    if failures:
        raise SystemExit('\n'.join(failures))


main()

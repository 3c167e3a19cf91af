"""Overload soak (issue 6; label "long", not run in CI): find the server's sustainable
throughput, then offer twice that for 30 s, open loop, and check that

  - admitted (answered OK) throughput stays within 10% of the peak,
  - the p99 of admitted requests stays bounded (max_queue_ms sheds the rest at once),
  - the excess gets Overloaded, not timeouts or closed connections,
  - peak RSS stays bounded.

Usage (from CTest, or by hand): overload_soak.py BUILD_DIR [SECONDS]. Prints one JSON line with
every figure; docs/RELIABILITY.md records the latest run.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

build = os.path.abspath(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
EVDAL = os.path.join(build, 'evdal')
BENCH = os.path.join(build, 'evdal-bench')

CONFIG = """\
[server]
listen = 127.0.0.1:0
io_threads = 1
max_queue_ms = 20
max_inflight = 4096
max_pipeline = 1024
deadline_ms = 1000

[lookup nap]
backend = delay
delay_ms = 0
"""
CALLS = sum((['--call', 'nap:delay_ms=0'] for _ in range(7)), [])


def bench(port, *args):
    out = subprocess.run([BENCH, '--port', str(port), '--json'] + CALLS + list(args),
                         capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise SystemExit('evdal-bench failed: %s' % out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    tmp = tempfile.mkdtemp(prefix='evdal-soak-')
    conf = os.path.join(tmp, 'evdal.conf')
    with open(conf, 'w') as f:
        f.write(CONFIG)
    log = open(os.path.join(tmp, 'evdal.log'), 'w+')
    server = subprocess.Popen([EVDAL, '--config', conf], stdout=log, stderr=log)
    try:
        port = None
        for _ in range(200):
            log.seek(0)
            text = log.read()
            if 'listening on' in text:
                port = int(text.split('listening on ')[1].split()[0].rsplit(':', 1)[1])
                break
            time.sleep(0.05)
        if port is None:
            raise SystemExit('evdal did not start:\n' + text)

        # The peak is measured before and after the overload, and the admitted throughput is
        # compared with their mean: this machine's speed drifts by more than the 10% under
        # test from one minute to the next (shared cores), and a single measurement before
        # would credit or blame the server for the drift.
        peak = bench(port, '-c', '64', '-d', '10', '-w', '2')
        offered = 2 * peak['rps']
        rss = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                with open('/proc/%d/status' % server.pid) as f:
                    for line in f:
                        if line.startswith('VmRSS:'):
                            rss.append(int(line.split()[1]))
                stop.wait(0.5)
        sampler = threading.Thread(target=sample)
        sampler.start()
        over = bench(port, '-c', '128', '-P', '64', '-R', '%.0f' % offered, '-d', str(seconds),
                     '-w', '2')
        stop.set()
        sampler.join()
        peak_after = bench(port, '-c', '64', '-d', '10', '-w', '2')
        with open('/proc/%d/status' % server.pid) as f:
            hwm = [int(l.split()[1]) for l in f if l.startswith('VmHWM:')][0]
    finally:
        server.terminate()
        server.wait(30)
    peak_rps = (peak['rps'] + peak_after['rps']) / 2
    result = {
        'peak_rps': peak_rps, 'peak_before_rps': peak['rps'], 'peak_after_rps': peak_after['rps'],
        'peak_p99_ms': peak['p99_ms'],
        'offered_rps': offered, 'seconds': seconds,
        'admitted_rps': over['ok_rps'], 'admitted_ratio': over['ok_rps'] / peak_rps,
        'admitted_p50_ms': over['ok_p50_ms'], 'admitted_p99_ms': over['ok_p99_ms'],
        'overloaded': over['overloaded'], 'errors': over['errors'], 'not_sent': over['not_sent'],
        'rss_max_kib_sampled': max(rss), 'vmhwm_kib': hwm, 'server_exit': server.returncode,
    }
    print(json.dumps(result))
    failures = []
    if result['admitted_ratio'] < 0.9:
        failures.append('admitted throughput %.0f is below 90%% of the peak %.0f'
                        % (over['ok_rps'], peak_rps))
    if over['ok_p99_ms'] > 250:
        failures.append('p99 of admitted requests %.1f ms is not bounded (> 250 ms)'
                        % over['ok_p99_ms'])
    if over['errors'] > 0:
        failures.append('%d errors (timeouts, closed connections): excess must be Overloaded'
                        % over['errors'])
    if hwm > 256 * 1024:
        failures.append('peak RSS %d KiB above 256 MiB' % hwm)
    if server.returncode != 0:
        failures.append('the server exited with %s after SIGTERM' % server.returncode)
    if failures:
        raise SystemExit('\n'.join(failures))


main()

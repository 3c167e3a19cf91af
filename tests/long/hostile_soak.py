"""Hostile soak (issue 13; label "long", not run in CI): an hour of mixed load on the sample
page's config, with the clients that lost replies or memory before round two:

  - page fetchers: closed loop, the seven-lookup page of a random user (framed binary);
  - slow readers: a page plus a 200 ms nap, read back in 512-byte sips;
  - half-closers: three fetches, then shutdown(SHUT_WR), then every reply read;
  - vanishers: a fetch with a 300 ms nap, then a close (FIN) or a reset, mid-fetch;
  - SIGHUP every HUP seconds (a full reload: new SQLite pools, the old ones freed after their
    last request).

RSS, open descriptors and threads are sampled every SAMPLE seconds. It passes when, after the
warm-up (the first quarter of the run, at least 30 s and past the first reload), RSS grows by less than 8 MiB from its
first sample to the median of the last quarter, descriptors and threads end where they began
(within the clients' own connections and a reload in progress), no page fetch and no
half-closer's reply is lost, and the server exits 0.

Usage: hostile_soak.py BUILD_DIR [SECONDS [HUP_SECONDS]] (defaults 3600 and 60). Prints one
JSON line per sample and one for the verdict; docs/RELIABILITY.md records the latest run.
"""
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import threading
import time

build = os.path.abspath(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
hup_every = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
SAMPLE = 5.0 if seconds > 600 else 2.0
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, '..', '..'))

os.environ.setdefault('EVDAL_BIN', os.path.join(build, 'evdal'))
os.environ.setdefault('EVDAL_GEN_PY', os.path.join(build, 'gen-py'))
os.environ.setdefault('EVDAL_SOURCE_DIR', SOURCE)
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'e2e'))
import evdal_harness as h  # noqa: E402
from evdal_harness import ttypes  # noqa: E402

PAGE = ['user', 'account', 'recent_orders', 'unread_notifications', 'permissions',
        'recommended_products']
STOP = threading.Event()
COUNTS = {}
LOCK = threading.Lock()


def count(what, n=1):
    with LOCK:
        COUNTS[what] = COUNTS.get(what, 0) + n


def page_request(extra=None):
    uid = ttypes.Value(int_value=random.randint(1, 100000))
    calls = {name: ttypes.LookupCall(lookup=name, params={'user_id': uid}) for name in PAGE}
    calls['flags'] = ttypes.LookupCall(lookup='feature_flags')
    calls.update(extra or {})
    return h.fetch_request(calls, request_id='soak-%d' % random.randrange(1 << 30))


def nap(ms):
    return {'nap': ttypes.LookupCall(lookup='nap', params={'delay_ms': ttypes.Value(int_value=ms)})}


def page_fetcher(srv):
    c = t = None
    while not STOP.is_set():
        try:
            if c is None:
                c, t = h.client(srv, timeout=10)
            r = c.fetch(page_request())
            bad = [k for k, v in r.results.items() if v.error is not None]
            count('page_ok' if not bad else 'page_call_error')
        except ttypes.Overloaded:
            count('page_overloaded')  # an answer (max_queue_ms shed it), not a lost reply
        except Exception as e:  # a lost reply: counted, judged at the end
            count('page_lost')
            print(json.dumps({'page_lost': repr(e)}), flush=True)
            if t is not None:
                t.close()
            c = t = None
            time.sleep(0.1)
    if t is not None:
        t.close()


def slow_reader(srv):
    while not STOP.is_set():
        try:
            s = srv.raw_socket(timeout=30)
            s.sendall(h.fetch_bytes(1, page_request(nap(200))))
            got = b''
            while len(got) < 4 or len(got) < 4 + struct.unpack('!i', got[:4])[0]:
                chunk = s.recv(512)
                if not chunk:
                    break
                got += chunk
                time.sleep(0.002)
            s.close()
            count('slow_ok' if len(got) >= 4 and len(got) == 4 + struct.unpack('!i', got[:4])[0]
                  else 'slow_lost')
        except Exception:
            count('slow_lost')


def half_closer(srv):
    while not STOP.is_set():
        try:
            s = srv.raw_socket(timeout=30)
            s.sendall(b''.join(h.fetch_bytes(10 + i, page_request()) for i in range(3)))
            s.shutdown(socket.SHUT_WR)
            closed, replies = h.wait_closed(s, 30)
            s.close()
            ok = closed and [getattr(r, 'seqid', None) for r in replies] == [10, 11, 12]
            count('halfclose_ok' if ok else 'halfclose_lost')
        except Exception:
            count('halfclose_lost')
        time.sleep(0.05)


def vanisher(srv):
    n = 0
    while not STOP.is_set():
        n += 1
        try:
            s = srv.raw_socket(timeout=10)
            s.sendall(h.fetch_bytes(1, page_request(nap(300))))
            time.sleep(random.uniform(0.0, 0.1))
            if n % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            s.close()
            count('vanished')
        except Exception:
            count('vanish_error')
        time.sleep(0.05)


def proc_sample(pid):
    rss = threads = 0
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
            elif line.startswith('Threads:'):
                threads = int(line.split()[1])
    return {'rss_kib': rss, 'fds': len(os.listdir('/proc/%d/fd' % pid)), 'threads': threads}


def main():
    db = h.sample_db()
    with open(os.path.join(SOURCE, 'deploy', 'evdal.conf')) as f:
        conf = f.read()
    conf = conf.replace('listen = 127.0.0.1:9090', 'listen = 127.0.0.1:0')
    conf = conf.replace('admin_listen = 127.0.0.1:9091', 'admin_listen = 127.0.0.1:0')
    conf = conf.replace('path = sample.db', 'path = %s' % db)
    srv = h.Server(conf, max_rss_mib=None, stop_timeout=60)
    srv.start()
    roles = [page_fetcher] * 4 + [slow_reader] * 2 + [half_closer] * 2 + [vanisher] * 2
    threads = [threading.Thread(target=fn, args=(srv,), daemon=True) for fn in roles]
    for t in threads:
        t.start()
    samples = []
    t0 = time.monotonic()
    next_hup = t0 + hup_every
    hups = 0
    while time.monotonic() - t0 < seconds:
        time.sleep(SAMPLE)
        now = time.monotonic()
        if now >= next_hup:
            srv.send_signal(signal.SIGHUP)
            hups += 1
            next_hup += hup_every
        s = dict(proc_sample(srv.pid), t=round(now - t0, 1), **dict(COUNTS))
        samples.append(s)
        print(json.dumps(s), flush=True)
    STOP.set()
    for t in threads:
        t.join(60)
    reloads = len(__import__('re').findall(r'reloaded ', srv.log_text()))
    srv.stop()
    # The warm-up covers the first reload: its SQLite workers are new threads, whose first
    # allocations give glibc new arenas once; later reloads reuse them.
    warm = max(30.0, seconds / 4, hup_every + 2 * SAMPLE)
    after = [s for s in samples if s['t'] >= warm]
    last = after[-max(1, len(after) // 4):]
    rss_growth = statistics.median(x['rss_kib'] for x in last) - after[0]['rss_kib']
    verdict = {
        'seconds': seconds, 'sighups': hups, 'reloads': reloads,
        'rss_first_after_warmup_kib': after[0]['rss_kib'],
        'rss_last_quarter_median_kib': statistics.median(x['rss_kib'] for x in last),
        'rss_max_kib': max(x['rss_kib'] for x in after),
        'rss_growth_kib': rss_growth,
        'fds_range_after_warmup': [min(x['fds'] for x in after), max(x['fds'] for x in after)],
        'threads_range_after_warmup': [min(x['threads'] for x in after),
                                       max(x['threads'] for x in after)],
        'counts': COUNTS, 'exit': srv.returncode,
    }
    problems = []
    if rss_growth >= 8 * 1024:
        problems.append('RSS grew by %d KiB after the warm-up' % rss_growth)
    if COUNTS.get('page_lost', 0) or COUNTS.get('halfclose_lost', 0):
        problems.append('replies lost')
    if reloads != hups:
        problems.append('%d SIGHUPs, %d reloads' % (hups, reloads))
    if abs(last[-1]['fds'] - after[0]['fds']) > 16 or abs(last[-1]['threads'] -
                                                         after[0]['threads']) > 8:
        problems.append('descriptors or threads did not come back')
    if srv.returncode != 0:
        problems.append('exit %s' % srv.returncode)
    verdict['ok'] = not problems
    verdict['problems'] = problems
    print(json.dumps(verdict), flush=True)
    return 0 if not problems else 1


if __name__ == '__main__':
    sys.exit(main())

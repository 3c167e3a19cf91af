#!/usr/bin/python3
"""Tunes either server's thread counts on this machine, for the harness to use the best.

    /usr/bin/python3 bench/tune.py peer  [--build build] [--seconds 3]
    /usr/bin/python3 bench/tune.py evdal [--build build] [--seconds 3]

peer: for each combination of --io-threads and --workers (handler threads; the delay pool gets
--lookup-threads = 4 x workers, enough for every handler's seven calls at once), starts
evdal-peer-cpp on the sample config. evdal: the same for io_threads = 1 and 2 (one loop per
core is the default; here the load generator shares the cores), each with busy_poll_us = 0
(the default) and 50. Each setting is measured on
the scenarios that thread counts matter for, with evdal-bench, and a markdown table is
printed: req/s and p99 in ms per cell, the best req/s of each column in bold.
bench/harness.py's EVDAL_TUNED and PEER_TUNED hold the choices; docs/BENCHMARKS.md the tables.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (same folder)

SETTINGS = {
    'peer': [['--io-threads', str(io), '--workers', str(w), '--lookup-threads', str(4 * w)]
             for io, w in [(1, 16), (1, 64), (2, 16), (2, 64), (2, 128), (2, 256), (2, 1024)]],
    'evdal': [{'io_threads': io, 'busy_poll_us': bp} for io in ('1', '2') for bp in ('0', '50')],
}
SCENARIOS = ['ping-1', 'ping-16', 'ping-64', 'static7-1', 'static7-64', 'fanout10ms-1000',
             'sqlite7-64']


def server_for(which, build, setting):
    """The server to measure with this setting, and the setting as the table shows it."""
    sample = os.path.join(harness.ROOT, 'deploy', 'evdal.conf')
    if which == 'peer':
        conf = harness.prepare_config(sample, build)
        argv = lambda port, _: [os.path.join(build, 'evdal-peer-cpp'), '--config', conf,
                                '--listen', '127.0.0.1:%d' % port] + setting
        return harness.Server('peer', argv, os.path.dirname(conf)), ' '.join(setting)
    conf = harness.prepare_config(sample, build, setting)
    argv = lambda port, _: [os.path.join(build, 'evdal'), '--config', conf,
                            '--listen', '127.0.0.1:%d' % port]
    return (harness.Server('evdal', argv, os.path.dirname(conf)),
            ', '.join('%s = %s' % kv for kv in setting.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('server', choices=sorted(SETTINGS))
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--seconds', type=float, default=3)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    by_name = {s.name: s for s in harness.scenarios()}
    rows = []
    for setting in SETTINGS[args.server]:
        server, label = server_for(args.server, build, setting)
        server.start()
        try:
            cells = []
            for name in SCENARIOS:
                harness.run_bench(build, server, by_name[name], 1, 0)  # warm-up
                r = harness.run_bench(build, server, by_name[name], args.seconds, 0.5)
                cells.append((r['rps'], r['p99_ms']))
        finally:
            server.stop()
        rows.append((label, cells))
        print('%s: %s' % (label, cells), file=sys.stderr)
    best = [max(r[1][i][0] for r in rows) for i in range(len(SCENARIOS))]
    print('| setting | %s |' % ' | '.join(SCENARIOS))
    print('| --- |%s' % (' ---: |' * len(SCENARIOS)))
    for label, cells in rows:
        shown = [('**%s**' if rps == b else '%s') % harness.fmt(rps) + ', %.1f' % p99
                 for (rps, p99), b in zip(cells, best)]
        print('| %s | %s |' % (label, ' | '.join(shown)))


if __name__ == '__main__':
    main()

#!/usr/bin/python3
"""Tunes the C++ peer fairly: its thread counts against the scenarios they matter for.

    /usr/bin/python3 bench/tune_peer.py [--build build] [--seconds 3]

For each combination of --io-threads and --workers (handler threads; the delay pool gets
--lookup-threads = 4 x workers, enough for every handler's seven calls at once), starts
evdal-peer-cpp on the sample config and measures static7 at 64 connections, fanout10ms at
1,000 connections and sqlite7 at 64 connections with evdal-bench, then prints a markdown table
(req/s; the best of each column in bold). docs/BENCHMARKS.md records the table and the defaults
of evdal-peer-cpp are its best overall.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (same folder)

COMBOS = [(1, 16), (1, 64), (2, 16), (2, 64), (2, 256), (2, 1024)]
SCENARIOS = ['static7-64', 'fanout10ms-1000', 'sqlite7-64']


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default=os.path.join(harness.ROOT, 'build'))
    ap.add_argument('--seconds', type=float, default=3)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    conf = harness.prepare_config(os.path.join(harness.ROOT, 'deploy', 'evdal.conf'), build)
    by_name = {s.name: s for s in harness.scenarios()}
    rows = []
    for io, workers in COMBOS:
        extra = ['--io-threads', str(io), '--workers', str(workers),
                 '--lookup-threads', str(4 * workers)]
        peer = harness.Server('peer', lambda port: [os.path.join(build, 'evdal-peer-cpp'),
                                                    '--config', conf, '--listen',
                                                    '127.0.0.1:%d' % port] + extra,
                              os.path.dirname(conf))
        peer.start()
        try:
            rps = []
            for name in SCENARIOS:
                harness.run_bench(build, peer, by_name[name], 1, 0)  # warm-up
                rps.append(harness.run_bench(build, peer, by_name[name], args.seconds,
                                             0.5)['rps'])
        finally:
            peer.stop()
        rows.append(((io, workers, 4 * workers), rps))
        print('io %d workers %d: %s' % (io, workers, rps), file=sys.stderr)
    best = [max(r[1][i] for r in rows) for i in range(len(SCENARIOS))]
    print('| --io-threads | --workers | --lookup-threads | %s |' % ' | '.join(SCENARIOS))
    print('| ---: | ---: | ---: |%s' % (' ---: |' * len(SCENARIOS)))
    for (io, w, lt), rps in rows:
        cells = [('**%s**' if x == b else '%s') % harness.fmt(x) for x, b in zip(rps, best)]
        print('| %d | %d | %d | %s |' % (io, w, lt, ' | '.join(cells)))


if __name__ == '__main__':
    main()

"""Reads from a replica (issue 19): a PostgreSQL 15 primary and a streaming replica started for
this module (pg_fixture.py), evdal's conninfo naming both (`host=localhost,localhost`, resolved
by evdns in order) with target_session_attrs=prefer-standby. Lookups run on the replica; the
replica is stopped (immediate) under load from several clients: every call is answered, the
only failures are BACKEND for calls in flight on the lost connections (at most one per
connection), and lookups are answered by the primary within 2 s of the stop; the replica is
started again and, with a short standby_recheck_ms, reads return to it with no call failing.
With `retries = 1` (issue 17) the same stop fails no call at all: the calls lost with their
connections are sent again and answered by the primary.

Exits 77 (skipped) when PostgreSQL 15 is not installed."""
import re
import sys
import threading
import time
import unittest

import evdal_harness as h
import pg_fixture
from evdal_harness import ttypes

if not pg_fixture.available():
    print('test_postgresql_replica: PostgreSQL 15 is not installed (tools/dev.sh deps)',
          file=sys.stderr)
    sys.exit(pg_fixture.SKIP)

PRIMARY = None
REPLICA = None
IO_THREADS = 2
CONNECTIONS = 2           # per IO loop
N_CONNS = IO_THREADS * CONNECTIONS
CLIENTS = 8
RECHECK_MS = 300
# The bound: lookups move to the primary within 2 s of the stop.
FAILOVER_S = 2.0

WHERE_SQL = ("SELECT pg_is_in_recovery()::int AS standby, current_setting('port')::int AS port, "
             ":n::int8 AS n")


def setUpModule():
    global PRIMARY, REPLICA
    PRIMARY = pg_fixture.PgServer().start()
    unittest.addModuleCleanup(PRIMARY.close)
    REPLICA = pg_fixture.PgServer(primary=PRIMARY).start()
    unittest.addModuleCleanup(REPLICA.close)
    PRIMARY.wait_streaming()


def replica_config():
    conninfo = ('host=localhost,localhost port=%d,%d dbname=postgres user=postgres '
                'target_session_attrs=prefer-standby application_name=evd_replica'
                % (REPLICA.port, PRIMARY.port))
    return h.config(
        '[database pg]\nbackend = postgresql\nconninfo = %s\nconnections = %d\n'
        'standby_recheck_ms = %d\n\n'
        '[lookup where]\ndatabase = pg\nsql = %s\ntimeout_ms = 3000\ncoalesce = false\n\n'
        # Busy enough that every connection has a call in flight when the replica stops.
        '[lookup where_retried]\ndatabase = pg\nsql = %s, pg_sleep(0.05)::text AS nap\n'
        'timeout_ms = 3000\ncoalesce = false\nretries = 1\n'
        % (conninfo, CONNECTIONS, RECHECK_MS, WHERE_SQL, WHERE_SQL),
        lookups='', io_threads=IO_THREADS, admin_listen='127.0.0.1:0',
        # Shedding on loop lag (Overloaded before a request is read) is not what this module
        # is about, and a sanitizer build on a busy machine lags its loops past 500 ms.
        max_queue_ms=0)


def role_metric(server, role):
    return server.metric('evdal_postgresql_connections_by_role{database="pg",role="%s"}' % role)


class Load:
    """CLIENTS threads fetching `where` in a closed loop; every call's outcome is kept with
    when it was sent and answered: ('standby' | 'primary' | 'error', t_sent, t_answered, what)."""

    def __init__(self, server, lookup='where'):
        self.server = server
        self.lookup = lookup
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = []
        self.broken = []          # exceptions: a call not answered at all
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(CLIENTS)]

    def run(self, seed):
        try:
            c, t = h.client(self.server, timeout=30)
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.broken.append(repr(e))
            return
        n = seed * 1000000
        try:
            while not self.stop.is_set():
                n += 1
                call = ttypes.LookupCall(lookup=self.lookup,
                                         params={'n': ttypes.Value(int_value=n)})
                t0 = time.monotonic()
                r = c.fetch(h.fetch_request({'w': call}, deadline_ms=5000)).results['w']
                t1 = time.monotonic()
                if r.error is not None:
                    outcome = ('error', t0, t1, (r.error.kind, r.error.message))
                else:
                    standby, port, got = r.table.rows[0][:3]
                    assert got.int_value == n, (got, n)
                    role = 'standby' if standby.int_value == 1 else 'primary'
                    expect = REPLICA.port if role == 'standby' else PRIMARY.port
                    assert port.int_value == expect, (role, port, expect)
                    outcome = (role, t0, t1, port.int_value)
                with self.lock:
                    self.calls.append(outcome)
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.broken.append(repr(e))
        finally:
            t.close()

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(60)

    def snapshot(self):
        with self.lock:
            return list(self.calls)


class ReplicaTest(h.EvdalTestCase):
    def test_failover_to_primary_and_back(self):
        h.raise_nofile(1024)
        with h.Server(replica_config()) as s:
            # Every connection lands on the replica, and lookups run there.
            s.wait_metric('evdal_postgresql_connections_by_role{database="pg",role="standby"}',
                          N_CONNS, timeout=15)
            self.assertEqual(role_metric(s, 'primary'), 0)
            load = Load(s)
            load.start()
            self.addCleanup(load.finish)
            h.wait_until(lambda: len(load.snapshot()) >= 200, timeout=20,
                         what='200 calls before the stop')
            before = load.snapshot()
            self.assertTrue(all(o[0] == 'standby' for o in before), before[:5])

            # The replica stops under load.
            t_stop = time.monotonic()
            REPLICA.stop('immediate')
            t_stopped = time.monotonic()
            # Lookups move to the primary: wait until a good run of them came from it.
            h.wait_until(lambda: sum(1 for o in load.snapshot() if o[0] == 'primary'
                                     and o[1] > t_stopped) >= 200,
                         timeout=20, what='200 calls answered by the primary')
            # Counted by role: none on the standby, and (recycling every RECHECK_MS, so not
            # necessarily all at one instant) some on the primary.
            s.wait_metric('evdal_postgresql_connections_by_role{database="pg",role="primary"}',
                          lambda v: v >= 1, timeout=10)
            self.assertEqual(role_metric(s, 'standby'), 0)
            after_stop = [o for o in load.snapshot() if o[2] > t_stop]
            # The last answer that did not come from the primary: the failover's end.
            last_bad = max([o[2] for o in after_stop if o[0] != 'primary'] or [t_stop])
            first_primary = min(o[2] for o in after_stop if o[0] == 'primary')
            failover = max(last_bad, first_primary) - t_stop
            errors = [o for o in load.snapshot() if o[0] == 'error']

            # The replica comes back: connections on the primary are recycled (gracefully:
            # under the same load) and reads return to it.
            recycles_before = s.metric('evdal_postgresql_recycles_total{database="pg"}')
            REPLICA.pg_ctl('start')
            t_back = time.monotonic()
            s.wait_metric('evdal_postgresql_connections_by_role{database="pg",role="standby"}',
                          N_CONNS, timeout=30)
            h.wait_until(lambda: sum(1 for o in load.snapshot() if o[0] == 'standby'
                                     and o[1] > t_back) >= 200,
                         timeout=20, what='200 calls answered by the replica again')
            returned = min(o[2] for o in load.snapshot() if o[0] == 'standby' and o[1] > t_back)
            load.finish()
            calls = load.snapshot()
            recycles = s.metric('evdal_postgresql_recycles_total{database="pg"}')
            failures = s.metric('evdal_postgresql_failures_total{database="pg"}')

        print('\nreplica stopped under %d clients (%d calls): %d failed (BACKEND, in flight), '
              'answered by the primary %.3f s after the stop (pg_ctl stop took %.3f s); '
              'back on the replica %.2f s after it accepted again, %d recycles' % (
                  CLIENTS, len(calls), len(errors), failover, t_stopped - t_stop,
                  returned - t_back, recycles), file=sys.stderr)
        self.assertEqual(load.broken, [])
        # Only calls in flight on the lost connections failed: at most one per connection,
        # all BACKEND "connection lost", all around the stop.
        self.assertLessEqual(len(errors), N_CONNS, errors)
        for kind, message in [o[3] for o in errors]:
            self.assertEqual(kind, ttypes.ErrorKind.BACKEND, message)
            self.assertRegex(message, r'^database pg: connection lost: ')
        self.assertEqual(failures, len(errors))
        self.assertEqual([o for o in calls if o[0] == 'error'], errors)   # none after
        self.assertLess(failover, h.scaled(FAILOVER_S))
        # Back on the replica: by recycling connections, none of which failed a call.
        self.assertGreater(recycles, recycles_before)
        self.assertGreaterEqual(recycles, N_CONNS)

    def test_retries_hide_the_failover(self):
        """With `retries = 1`, the calls in flight on the lost connections are sent again and
        answered by the primary: not one call fails."""
        with h.Server(replica_config()) as s:
            s.wait_metric('evdal_postgresql_connections_by_role{database="pg",role="standby"}',
                          N_CONNS, timeout=15)
            load = Load(s, lookup='where_retried')
            load.start()
            self.addCleanup(load.finish)
            h.wait_until(lambda: len(load.snapshot()) >= 50, timeout=20,
                         what='50 calls before the stop')
            REPLICA.stop('immediate')
            try:
                t_stopped = time.monotonic()
                h.wait_until(lambda: sum(1 for o in load.snapshot() if o[0] == 'primary'
                                         and o[1] > t_stopped) >= 50,
                             timeout=20, what='50 calls answered by the primary')
                load.finish()
            finally:
                REPLICA.pg_ctl('start')
            retries = s.metric('evdal_lookup_retries_total{lookup="where_retried"}')
            lost = s.metric('evdal_postgresql_failures_total{database="pg"}')
        calls = load.snapshot()
        print('\nreplica stopped under %d clients with retries = 1 (%d calls): %d connections '
              'lost a call, %d retries, %d failed' % (
                  CLIENTS, len(calls), lost, retries,
                  sum(1 for o in calls if o[0] == 'error')), file=sys.stderr)
        self.assertEqual(load.broken, [])
        self.assertEqual([o for o in calls if o[0] == 'error'], [])
        # Calls were lost with their connections (every connection was busy), and each was
        # sent again once.
        self.assertGreaterEqual(lost, 1)
        self.assertLessEqual(lost, N_CONNS)
        self.assertEqual(retries, lost)


class ConfigTest(h.EvdalTestCase):
    def test_standby_recheck_ms_is_validated(self):
        import os
        import tempfile
        with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as f:
            f.write(h.config('[database pg]\nbackend = postgresql\n'
                             'conninfo = host=/nonexistent dbname=x\nstandby_recheck_ms = -5\n',
                             lookups=''))
        self.addCleanup(os.unlink, f.name)
        r = h.run_evdal(['--check-config', '-c', f.name], timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr + r.stdout, re.escape(f.name) + r':\d+: \[database pg\] '
                         r'standby_recheck_ms: -5 is out of range')


if __name__ == '__main__':
    unittest.main()

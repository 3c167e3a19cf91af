"""Hostile clients and bad days, round two (issue 13): the ways evdal lost a reply, memory or
its loop past the first hostile catalogue (test_hostile). Each test is named after what broke
and fails on a server without its fix.

- half-close: a client that sends its requests, then shutdown(SHUT_WR), gets every reply;
- read timeout: a complete fetch in flight is answered when the next request stays partial;
- write timeout: a client that reads slowly but steadily is not closed as "not reading";
- unread replies: a connection that pipelines huge replies and reads nothing stays bounded;
- reply size: a reply never exceeds max_reply_bytes; the calls that do not fit fail alone;
- traces: client-sized strings are cut in the trace store, and /traces stays small;
- NUL: text carries its NULs end to end; a name holding one is refused, never merged;
- descriptors: an exhausted process does not spin on a pending admin connection, and idle
  admin connections cannot take the descriptors the Thrift port needs;
- reload: a writer's lock on a database does not stall the main loop during SIGHUP;
- operations: a live unix socket is not stolen; listen addresses are checked;
- evdal-cli: a reply nested 100,000 deep is refused (exit 3), text holding U+0000 is shown
  whole, escaped.
"""
import json
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from thrift.Thrift import TMessageType

import evdal_harness as h
from evdal_harness import ttypes

MIB = 1 << 20


def make_blob_db(folder):
    """A database whose lookups make rows of any size: SELECT zeroblob(:n)."""
    path = os.path.join(folder, 'blob.db')
    db = sqlite3.connect(path)
    db.execute('CREATE TABLE t (x)')
    db.commit()
    db.close()
    return path


def blob_lookups(db):
    return """
[database blobs]
path = %s
workers = 2

[lookup blob]
database = blobs
sql = SELECT zeroblob(:n) AS b
""" % db


def blob_call(n, lookup='blob'):
    return ttypes.LookupCall(lookup=lookup, params={'n': ttypes.Value(int_value=n)})


def read_replies(sock, n, timeout=10.0):
    return [h.read_reply(sock, timeout) for _ in range(n)]


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


class RepliesLostTest(h.EvdalTestCase):
    """Items 5 and 6: replies that were due and were never sent."""

    def test_half_close_answers_what_was_sent(self):
        """Three fetches then shutdown(SHUT_WR), as `nc -N` or a one-shot script does: the
        three replies come back in order, then the server closes."""
        with h.Server(h.config()) as srv:
            s = srv.raw_socket()
            try:
                data = b''.join(h.fetch_bytes(10 + i, h.fetch_request(
                    {'n': h.nap_call(50 * (3 - i))})) for i in range(3))
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                replies = read_replies(s, 3)
                self.assertEqual([r.seqid for r in replies], [10, 11, 12])
                for i, r in enumerate(replies):
                    self.assertEqual(r.mtype, TMessageType.REPLY, r)
                    self.assertEqual(h.slept_ms(r.result.success.results['n']), 50 * (3 - i))
                closed, more = h.wait_closed(s, 5.0)
                self.assertTrue(closed, 'not closed after the last reply')
                self.assertEqual(more, [])
            finally:
                s.close()
            # A half-close with half a request: what was whole is answered, the rest dropped.
            s = srv.raw_socket()
            try:
                s.sendall(h.ping_bytes(21) + h.fetch_bytes(22, h.fetch_request(
                    {'n': h.nap_call(10)}))[:9])
                s.shutdown(socket.SHUT_WR)
                closed, replies = h.wait_closed(s, 5.0)
                self.assertTrue(closed)
                self.assertEqual([r.seqid for r in replies], [21])
            finally:
                s.close()

    def test_read_timeout_answers_the_fetch_in_flight(self):
        """A complete fetch (a 700 ms nap) followed by 9 bytes of the next request: the read
        timeout (300 ms) comes first, and the fetch is still answered before the close."""
        with h.Server(h.config(read_timeout_ms=300)) as srv:
            s = srv.raw_socket()
            try:
                s.sendall(h.fetch_bytes(31, h.fetch_request({'n': h.nap_call(700)})) +
                          h.ping_bytes(32)[:9])
                closed, replies = h.wait_closed(s, 5.0)
                self.assertTrue(closed, 'not closed after the read timeout')
                self.assertEqual(len(replies), 1, replies)
                self.assertEqual(replies[0].seqid, 31)
                self.assertEqual(h.slept_ms(replies[0].result.success.results['n']), 700)
            finally:
                s.close()
            self.assertTrue(srv.wait_log(r'read timeout', 2.0), srv.log_tail())

    def test_bytes_sent_too_late_do_not_reset_the_reply_being_read(self):
        """A fetch with an 8 MiB reply, then 9 bytes of the next request; the client reads
        nothing until the read timeout has stopped the server reading it, then sends the rest
        of that request (too late: it is never read) and reads. The reply comes whole, then the
        close. Linux resets a socket closed with unread bytes, discarding what its send queue
        still holds: the client got about 7 of the 8 MiB, then a reset. (A SIGTERM drain lost
        the tail of a reply the same way when the client sent its next request after the
        signal.)"""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            cfg = h.config(lookups=blob_lookups(db), read_timeout_ms=300, deadline_ms=30000)
            with h.Server(cfg) as srv:
                s = srv.raw_socket(timeout=20)
                try:
                    late = h.ping_bytes(42)
                    s.sendall(h.fetch_bytes(41, h.fetch_request({'b': blob_call(8 * MIB)})) +
                              late[:9])
                    self.assertTrue(srv.wait_log(r'read timeout', h.scaled(5)), srv.log_tail())
                    s.sendall(late[9:] + h.ping_bytes(43))
                    closed, replies = h.wait_closed(s, h.scaled(20))
                    self.assertTrue(closed, 'not closed after the reply')
                    self.assertEqual([getattr(r, 'seqid', r) for r in replies], [41],
                                     'the reply was cut by a reset')
                    b = replies[0].result.success.results['b']
                    self.assertEqual(len(b.table.rows[0][0].blob_value), 8 * MIB)
                finally:
                    s.close()

    def test_steady_slow_reader_is_not_closed_by_write_timeout(self):
        """A 12 MiB reply read at about 1 MiB/s in 64 KiB sips, with write_timeout_ms = 1000:
        bytes leave the server all along, so the reader gets the whole reply. libevent's write
        timeout counted writability events, which a send buffer of megabytes spaces out past
        a second for such a reader, and closed it mid-reply."""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            cfg = h.config(lookups=blob_lookups(db), write_timeout_ms=1000,
                           max_output_bytes=1 << 20, deadline_ms=30000)
            with h.Server(cfg, max_rss_mib=256) as srv:
                s = srv.raw_socket(timeout=10)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
                try:
                    s.sendall(h.fetch_bytes(41, h.fetch_request({'b': blob_call(12 * MIB)})))
                    got = b''
                    t0 = time.monotonic()
                    while True:
                        try:
                            chunk = s.recv(64 << 10)
                        except ConnectionResetError:
                            chunk = b''
                        if not chunk:
                            break
                        got += chunk
                        if len(got) >= 4 and len(got) >= 4 + struct.unpack('!i', got[:4])[0]:
                            break
                        time.sleep(0.06)
                        self.assertLess(time.monotonic() - t0, 60)
                    self.assertGreaterEqual(len(got), 4, 'closed before any reply byte')
                    n = struct.unpack('!i', got[:4])[0]
                    self.assertEqual(len(got), 4 + n, 'closed after %d of %d bytes:\n%s'
                                     % (len(got), 4 + n, srv.log_tail()))
                    r = h.parse_reply(got[4:])
                    self.assertEqual(len(r.result.success.results['b'].table.rows[0][0]
                                         .blob_value), 12 * MIB)
                finally:
                    s.close()
                self.assertIsNone(srv.wait_log(r'write timeout', 0.1), srv.log_tail())

    def test_reader_that_stops_is_still_closed(self):
        """The other side of the bound: a client that reads part of a large reply, then
        nothing, is closed within a few write_timeout_ms."""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            cfg = h.config(lookups=blob_lookups(db), write_timeout_ms=500)
            with h.Server(cfg, max_rss_mib=256) as srv:
                s = srv.raw_socket(timeout=10)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
                try:
                    s.sendall(h.fetch_bytes(42, h.fetch_request({'b': blob_call(12 * MIB)})))
                    s.recv(64 << 10)
                    self.assertTrue(srv.wait_log(r'write timeout', 10.0), srv.log_tail())
                finally:
                    s.close()


class RepliesBoundedTest(h.EvdalTestCase):
    """Items 2 and 3: reply bytes a connection holds, and one reply's size."""

    def test_reply_too_large_fails_the_calls_that_do_not_fit(self):
        """Five calls of 1 MiB rows with max_reply_bytes = 3.5 MiB: the reply stays under the
        bound, the first three keep their rows, the last two fail with BACKEND "reply too
        large", and the small call after them keeps its rows."""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            cfg = h.config(lookups=blob_lookups(db), max_reply_bytes=3670016)
            with h.Server(cfg, max_rss_mib=256) as srv:
                s = srv.raw_socket(timeout=10)
                try:
                    calls = {'c%d' % i: blob_call(MIB + i) for i in range(5)}
                    calls['small'] = blob_call(10)
                    s.sendall(h.fetch_bytes(51, h.fetch_request(calls)))
                    payload = h.read_frame(s, 10)
                    self.assertLessEqual(len(payload) + 4, 3670016)
                    res = h.parse_reply(payload).result.success.results
                    kept = sorted(k for k, r in res.items() if r.table is not None)
                    cut = sorted(k for k, r in res.items() if r.error is not None)
                    self.assertEqual(len(kept) + len(cut), 6)
                    self.assertIn('small', kept)
                    self.assertEqual(len(kept), 4, (kept, cut))
                    for k in cut:
                        self.assertEqual(res[k].error.kind, ttypes.ErrorKind.BACKEND)
                        self.assertIn('reply too large', res[k].error.message)
                    # The connection goes on.
                    s.sendall(h.ping_bytes(52))
                    self.assertEqual(h.read_reply(s).seqid, 52)
                finally:
                    s.close()

    def test_traced_reply_stays_within_the_bound(self):
        """A traced fetch: each result carries a span naming its backend ("sqlite:" and the
        database's name). The cheap bound that decides whether a reply is measured left the
        spans out, so with long names a reply past max_reply_bytes went out whole. Twenty
        small calls on a database with a 200-character name and a large one sized to take the
        reply 1 KiB past the bound: the large one fails alone, the reply stays within."""
        name = 'small'
        database = 'blobs_' + 'x' * 194
        bound = 65536
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            lookups = blob_lookups(db) + """
[database %s]
path = %s

[lookup %s]
database = %s
sql = SELECT zeroblob(:n) AS b
""" % (database, db, name, database)
            cfg = h.config(lookups=lookups, max_reply_bytes=bound)
            with h.Server(cfg, max_rss_mib=256) as srv:
                s = srv.raw_socket(timeout=10)

                def fetch(seqid, n):
                    calls = {'s%02d' % i: blob_call(10, name) for i in range(20)}
                    calls['big'] = blob_call(n)
                    s.sendall(h.fetch_bytes(seqid, h.fetch_request(calls, trace=True)))
                    payload = h.read_frame(s, 10)
                    return len(payload) + 4, h.parse_reply(payload).result.success.results

                try:
                    # Well within the bound; in the binary protocol the reply then grows byte
                    # for byte with the blob.
                    size, res = fetch(61, 1000)
                    self.assertIsNotNone(res['big'].table)
                    self.assertLess(size, bound // 2)
                    size, res = fetch(62, 1000 + bound - size + 1024)
                    self.assertLessEqual(size, bound)
                    self.assertIsNone(res['big'].table)
                    self.assertEqual(res['big'].error.kind, ttypes.ErrorKind.BACKEND)
                    self.assertIn('reply too large', res['big'].error.message)
                    small = [k for k in res if k != 'big']
                    self.assertEqual(len(small), 20)
                    for k in small:
                        self.assertIsNotNone(res[k].table, k)
                        self.assertEqual(res[k].span.backend, 'sqlite:' + database)
                finally:
                    s.close()

    def test_default_reply_bound_fits_16mb_clients(self):
        """Twenty calls of 1 MiB rows: the reply stays within 16,000,000 bytes (Thrift's Java
        and Go clients refuse frames over 16,384,000) and the calls past it fail alone."""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            with h.Server(h.config(lookups=blob_lookups(db)), max_rss_mib=512) as srv:
                s = srv.raw_socket(timeout=20)
                try:
                    calls = {'c%02d' % i: blob_call(MIB + i) for i in range(20)}
                    s.sendall(h.fetch_bytes(53, h.fetch_request(calls)))
                    payload = h.read_frame(s, 20)
                    self.assertLessEqual(len(payload) + 4, 16000000)
                    res = h.parse_reply(payload).result.success.results
                    self.assertEqual(len(res), 20)
                    kept = [k for k, r in res.items() if r.table is not None]
                    self.assertGreaterEqual(len(kept), 14)
                    self.assertLess(len(kept), 20)
                finally:
                    s.close()

    def test_pipelined_large_replies_are_not_cut_for_a_reader(self):
        """A client that reads its replies pipelines four fetches of 3 MiB each (after one
        alone) with max_output_bytes and max_reply_bytes at 4 MiB: none is cut. Started
        together, they completed together and shared the connection's bound (8 MiB), so the
        third and fourth lost their rows; a call now starts only while the replies its running
        calls are likely to make fit under max_output_bytes."""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            cfg = h.config(lookups=blob_lookups(db), max_output_bytes=4 << 20,
                           max_reply_bytes=4 << 20, deadline_ms=30000)
            with h.Server(cfg, max_rss_mib=256) as srv:
                s = srv.raw_socket(timeout=20)
                try:
                    req = h.fetch_request({'b': blob_call(3 * MIB)})
                    s.sendall(h.fetch_bytes(300, req))
                    self.assertIsNotNone(h.read_reply(s, 20).result.success.results['b'].table)
                    s.sendall(b''.join(h.fetch_bytes(301 + i, req) for i in range(4)))
                    for i in range(4):
                        r = h.read_reply(s, 20)
                        self.assertEqual(r.seqid, 301 + i)
                        res = r.result.success.results['b']
                        self.assertIsNone(res.error, (i, res.error))
                        self.assertEqual(len(res.table.rows[0][0].blob_value), 3 * MIB)
                finally:
                    s.close()

    def test_unread_replies_stay_bounded(self):
        """One connection pipelines 24 fetches of 4 calls x 1 MiB rows (96 MiB of replies)
        and reads nothing until every fetch has ended. What it then reads is what the server
        held for it (plus the kernel's socket buffers): at most max_output_bytes +
        max_reply_bytes, because a reply may only take the connection that far; the calls
        that did not fit failed alone, every fetch was answered, in order."""
        with tempfile.TemporaryDirectory(prefix='evdal-blob-') as tmp:
            db = make_blob_db(tmp)
            cfg = h.config(lookups=blob_lookups(db), max_output_bytes=1 << 20,
                           write_timeout_ms=60000, deadline_ms=30000,
                           admin_listen='127.0.0.1:0')
            with h.Server(cfg, max_rss_mib=None) as srv:
                base = rss_kib(srv.pid)
                s = srv.raw_socket(timeout=20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
                try:
                    req = h.fetch_request({'c%d' % i: blob_call(MIB + i) for i in range(4)})
                    s.sendall(b''.join(h.fetch_bytes(100 + i, req) for i in range(24)))
                    deadline = time.monotonic() + 30
                    while srv.metric('evdal_inflight_requests') != 0:
                        self.assertLess(time.monotonic(), deadline, 'fetches never ended')
                        time.sleep(0.05)
                    grown_mib = (rss_kib(srv.pid) - base) / 1024
                    total = 0
                    for i in range(24):
                        payload = h.read_frame(s, 20)
                        total += 4 + len(payload)
                        r = h.parse_reply(payload)
                        self.assertEqual(r.seqid, 100 + i)
                        self.assertEqual(len(r.result.success.results), 4)
                    kernel_slack = 8 * MIB  # the server's send buffer and ours
                    self.assertLess(total, (1 * MIB) + 16000000 + kernel_slack,
                                    'the server held %.1f MiB of replies for one connection '
                                    '(RSS grew by %.0f MiB)' % (total / MIB, grown_mib))
                finally:
                    s.close()



class ClientSizedStringsTest(h.EvdalTestCase):
    """Items 1 and 4: what a client's strings cost the trace store, the admin page, the log."""

    def test_trace_store_cuts_client_sized_strings(self):
        """Forty traced fetches with 2 MiB request ids and 64 KiB keys: the store keeps each
        string cut to 256 bytes and marked, /traces and /traces.json stay under 1 MiB, and the
        server's RSS stays under the harness's 128 MiB (it kept ~100 MiB and rendered a page
        of hundreds of MiB)."""
        with h.Server(h.config(admin_listen='127.0.0.1:0', max_frame_bytes=8 << 20)) as srv:
            s = srv.raw_socket(timeout=20)
            try:
                for i in range(40):
                    rid = ('%02d' % i) + 'r' * (2 * MIB)
                    key = 'k' * (64 << 10)
                    s.sendall(h.fetch_bytes(200 + i, h.fetch_request(
                        {key: h.nap_call(1)}, request_id=rid, trace=True)))
                    r = h.read_reply(s, 20)
                    self.assertEqual(r.seqid, 200 + i)
            finally:
                s.close()
            status, _, text = srv.admin_get('/traces', timeout=60)
            self.assertEqual(status, 200)
            self.assertLess(len(text), 1 * MIB, 'a /traces page of %d bytes' % len(text))
            self.assertIn('[cut: 2097154 bytes]', text)
            self.assertIn('[cut: 65536 bytes]', text)
            status, _, body = srv.admin_get('/traces.json', timeout=60)
            self.assertLess(len(body), 1 * MIB)
            traces = json.loads(body)
            self.assertEqual(len(traces['recent']), 20)
            for t in traces['recent']:
                self.assertLessEqual(len(t['request_id'].encode()), 256 + 32)
                self.assertTrue(t['request_id'].endswith('[cut: 2097154 bytes]'))
                self.assertLessEqual(len(t['spans'][0]['key'].encode()), 256 + 32)

    def test_exported_spans_cut_client_sized_strings(self):
        """The OTLP exporter's queue is bounded in spans, not bytes: a sampled fetch with a
        2 MiB request id and a 64 KiB principal exports them cut to 256 bytes and marked, as
        the trace store keeps them (they went out whole)."""
        from test_tracing import Collector
        collector = Collector()
        self.addCleanup(collector.close)
        tracing = ('[tracing]\notlp_endpoint = %s\nsample_ratio = 1.0\n'
                   'service_name = evdal-test\nbatch_max_age_ms = 50\n' % collector.url)
        with h.Server(h.config(extra=tracing, max_frame_bytes=8 << 20)) as srv:
            s = srv.raw_socket(timeout=20)
            try:
                s.sendall(h.fetch_bytes(81, h.fetch_request(
                    {'n': h.nap_call(1)}, request_id='r' * (2 * MIB), principal='p' * (64 << 10))))
                self.assertEqual(h.read_reply(s, 20).seqid, 81)
            finally:
                s.close()
            spans = collector.wait_spans(2)
            fetch = [sp for sp in spans if sp['name'] == 'DataAccess/fetch']
            self.assertEqual(len(fetch), 1, spans)
            attrs = {a['key']: a['value'].get('stringValue') for a in fetch[0]['attributes']}
            self.assertLessEqual(len(attrs['evdal.request_id']), 256 + 32)
            self.assertTrue(attrs['evdal.request_id'].endswith('[cut: 2097152 bytes]'))
            self.assertTrue(attrs['evdal.principal'].endswith('[cut: 65536 bytes]'))

    def test_log_lines_cut_client_strings(self):
        """One fetch with a 4 MiB request id and 64 calls of unknown lookups named with
        64 KiB: the refusals logged (ten, then the limiter) carry the id and the names cut,
        so the log grows by kilobytes, not by the 40 MiB it wrote. (No shedding: reading
        8 MiB on a busy machine can put the loop past max_queue_ms, and this is about logs.)"""
        with h.Server(h.config(max_queue_ms=0)) as srv:
            before = os.path.getsize(srv.log_path)
            rid = 'r' * (4 * MIB)
            calls = {'c%02d' % i + 'k' * (64 << 10): h.nap_call(1, lookup='nope%02d' % i + 'l' *
                                                                   (64 << 10))
                     for i in range(64)}
            s = srv.raw_socket(timeout=20)
            try:
                s.sendall(h.fetch_bytes(71, h.fetch_request(calls, request_id=rid)))
                r = h.read_reply(s, 20)
                self.assertIsNotNone(r.result.success, r)
                self.assertEqual(len(r.result.success.results), 64)
            finally:
                s.close()
            self.assertTrue(srv.wait_log(r'refused', 3.0), srv.log_tail())
            grown = os.path.getsize(srv.log_path) - before
            self.assertLess(grown, 64 << 10, 'the log grew by %d bytes' % grown)
            self.assertIn('[cut: ', srv.log_text())



class NulInStringsTest(h.EvdalTestCase):
    """Item 7: strings that hold U+0000."""

    LOOKUPS = """
[database blobs]
path = %s
workers = 1

[lookup echo]
database = blobs
sql = SELECT :t AS t, length(CAST(:t AS BLOB)) AS n
"""

    def test_text_with_nul_is_carried_whole_and_not_merged(self):
        """Text "ab\0cd" binds as five bytes (it bound as "ab") and is not deduplicated with
        a real "ab": the two calls run apart and each gets its own value back."""
        with tempfile.TemporaryDirectory(prefix='evdal-nul-') as tmp:
            db = make_blob_db(tmp)
            with h.Server(h.config(lookups=self.LOOKUPS % db)) as srv:
                c, t = h.client(srv)
                try:
                    def echo(text):
                        return ttypes.LookupCall(lookup='echo',
                                                 params={'t': ttypes.Value(text_value=text)})
                    res = c.fetch(h.fetch_request({'nul': echo('ab\0cd'), 'plain': echo('ab'),
                                                   'u0': echo('\0')})).results
                    self.assertEqual(res['nul'].table.rows[0][0].text_value, 'ab\0cd')
                    self.assertEqual(res['nul'].table.rows[0][1].int_value, 5)
                    self.assertEqual(res['plain'].table.rows[0][0].text_value, 'ab')
                    self.assertEqual(res['plain'].table.rows[0][1].int_value, 2)
                    self.assertEqual(res['u0'].table.rows[0][1].int_value, 1)
                finally:
                    t.close()

    def test_call_keys_with_nul_are_refused_not_merged(self):
        """Keys "k\0one" and "k\0two" came back as one result under "k": a call vanished.
        A name holding a NUL is now refused with a message that says so; the connection
        goes on."""
        with h.Server(h.config()) as srv:
            s = srv.raw_socket()
            try:
                s.sendall(h.fetch_bytes(61, h.fetch_request(
                    {'k\0one': h.nap_call(1), 'k\0two': h.nap_call(2)})))
                r = h.read_reply(s)
                self.assertEqual(r.mtype, TMessageType.EXCEPTION, r)
                self.assertIn('call key holds a NUL byte', r.exc.message)
                s.sendall(h.fetch_bytes(62, h.fetch_request({'n': h.nap_call(1)},
                                                            request_id='a\0b')))
                r = h.read_reply(s)
                self.assertEqual(r.mtype, TMessageType.EXCEPTION, r)
                self.assertIn('request id holds a NUL byte', r.exc.message)
                s.sendall(h.ping_bytes(63))
                self.assertEqual(h.read_reply(s).seqid, 63)
            finally:
                s.close()



def proc_cpu_s(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def open_fds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


class DescriptorsTest(h.EvdalTestCase):
    """Items 8 and 9: the admin port when descriptors run out."""

    def admin_socket(self, srv):
        host, port, _ = h.parse_address(srv.admin_address)
        return socket.create_connection((host, port), timeout=5)

    def test_exhausted_descriptors_do_not_spin_the_admin_listener(self):
        """RLIMIT_NOFILE 64, Thrift connections until accept fails, then one connection
        waiting on the admin port: the main loop pauses that listener (it spun at 100% CPU and
        libevent logged ~200,000 "Too many open files" lines a second), and the warning is
        rate-limited."""
        cfg = h.config(admin_listen='127.0.0.1:0', max_connections=1000)
        with h.Server(cfg, wrapper=['prlimit', '--nofile=64:64']) as srv:
            held = []
            try:
                for _ in range(80):
                    held.append(srv.raw_socket())
                deadline = time.monotonic() + 10
                while not srv.wait_log(r'Too many open files', 0.1):
                    self.assertLess(time.monotonic(), deadline, srv.log_tail())
                    held.append(srv.raw_socket())
                waiting = self.admin_socket(srv)
                # The admin listener met EMFILE too, and paused (its own guard says so).
                self.assertTrue(srv.wait_log(r'accept on %s failed: Too many open files' %
                                             re.escape(srv.admin_address)), srv.log_tail())
                size0, cpu0 = os.path.getsize(srv.log_path), proc_cpu_s(srv.pid)
                time.sleep(2.0)
                cpu = proc_cpu_s(srv.pid) - cpu0
                grown = os.path.getsize(srv.log_path) - size0
                self.assertLess(cpu, 0.5, 'the server used %.2f s of CPU in 2 s' % cpu)
                self.assertLess(grown, 4096, 'the log grew by %d bytes in 2 s' % grown)
                waiting.close()
            finally:
                for s in held:
                    s.close()
            # Descriptors back: the Thrift port and the admin serve again.
            deadline = time.monotonic() + 10
            while True:
                try:
                    c, t = h.client(srv, timeout=2)
                    break
                except Exception:
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.1)
            try:
                self.assertPong(c)
            finally:
                t.close()
            self.assertEqual(srv.admin_get('/health')[0], 200)

    def test_idle_admin_connections_cannot_starve_the_thrift_port(self):
        """RLIMIT_NOFILE 256 and 300 idle admin connections: past 32 they are shut down at
        once, so a Thrift client still connects and is served, and /health still answers
        once the idle ones are gone."""
        cfg = h.config(admin_listen='127.0.0.1:0')
        with h.Server(cfg, wrapper=['prlimit', '--nofile=256:256']) as srv:
            idle = []
            try:
                for _ in range(300):
                    try:
                        idle.append(self.admin_socket(srv))
                    except OSError:
                        break
                # Past 32 they are shut down as they come: the count settles below the limit.
                h.wait_until(lambda: open_fds(srv.pid) < 256 - 32,
                             what='admin connections past 32 shut down (%d descriptors)'
                             % open_fds(srv.pid))
                c, t = h.client(srv, timeout=5)
                try:
                    self.assertPong(c)
                    self.assertNapFetch(c, [10, 20])
                finally:
                    t.close()
            finally:
                for s in idle:
                    s.close()
            self.assertTrue(srv.wait_log(r'admin connection refused', 2.0), srv.log_tail())
            # Until the server has seen the idle ones close, a new admin connection is still
            # past the cap and shut down at once (RemoteDisconnected, an OSError): poll.

            def health_ok():
                try:
                    return srv.admin_get('/health', timeout=2)[0] == 200
                except OSError:
                    return False
            h.wait_until(health_ok, timeout=10, what='/health answering once the idle are gone')


    def test_trickling_admin_connections_cannot_hold_health(self):
        """32 admin connections that each send a request line, then one header byte every
        2 s (slowloris): evhttp's 10 s timeout restarts with every byte, so they held every
        admin slot for ever and each /health probe was shut at once. A connection now has
        10 s for a whole request: they are closed, and /health answers again while they
        still trickle."""
        with h.Server(h.config(admin_listen='127.0.0.1:0')) as srv:
            slow = []
            stop = threading.Event()
            try:
                for _ in range(32):
                    s = self.admin_socket(srv)
                    s.sendall(b'GET /health HTTP/1.1\r\nHost: x\r\n')
                    slow.append(s)

                def trickle():
                    while not stop.wait(2.0):
                        for s in slow:
                            try:
                                s.sendall(b'X')
                            except OSError:
                                pass
                th = threading.Thread(target=trickle, daemon=True)
                th.start()

                def health_ok():
                    try:
                        return srv.admin_get('/health', timeout=2)[0] == 200
                    except OSError:
                        return False
                self.assertFalse(health_ok(), 'the 32 trickling connections hold no slot')
                t0 = time.monotonic()
                h.wait_until(health_ok, timeout=20, what='/health while 32 connections trickle')
                self.assertGreater(time.monotonic() - t0, 5)  # not before their time was up
                for s in slow:  # closed by the server: EOF (or a reset, past what it sent)
                    s.settimeout(5)
                    try:
                        self.assertEqual(s.recv(4096), b'')
                    except ConnectionResetError:
                        pass
            finally:
                stop.set()
                for s in slow:
                    s.close()


class ReloadTest(h.EvdalTestCase):
    """Item 10: a reload while a writer holds a lock on an SQLite file."""

    def test_reload_waiting_for_a_lock_does_not_stall_the_main_loop(self):
        """SIGHUP while another process holds an exclusive lock (rollback journal) and
        busy_timeout_ms = 3000: /health answers at once meanwhile (the new pool's probe held
        the main loop for the whole 3 s), the reload is refused as a transient lock, and the
        next SIGHUP, once the writer is done, reloads."""
        with tempfile.TemporaryDirectory(prefix='evdal-lock-') as tmp:
            db = make_blob_db(tmp)
            lookups = blob_lookups(db).replace('workers = 2', 'workers = 1\nbusy_timeout_ms = 3000')
            with h.Server(h.config(lookups=lookups, admin_listen='127.0.0.1:0')) as srv:
                writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
                try:
                    writer.execute('BEGIN EXCLUSIVE')
                    srv.send_signal(signal.SIGHUP)
                    self.assertTrue(srv.wait_log(r'SIGHUP: reloading', 2.0))
                    worst = 0.0
                    t_end = time.monotonic() + 2.0
                    while time.monotonic() < t_end:
                        t0 = time.monotonic()
                        self.assertEqual(srv.admin_get('/health', timeout=10)[0], 200)
                        worst = max(worst, time.monotonic() - t0)
                        time.sleep(0.05)
                    self.assertLess(worst, 0.5, '/health took %.2f s during the reload' % worst)
                    self.assertTrue(srv.wait_log(r'reload refused: .*locked by a writer.*'
                                                 r'transient', 5.0), srv.log_tail())
                finally:
                    writer.execute('ROLLBACK')
                    writer.close()
                srv.send_signal(signal.SIGHUP)
                self.assertTrue(srv.wait_log(r'reloaded .*evdal.conf', 5.0), srv.log_tail())
                c, t = h.client(srv)
                try:
                    r = c.fetch(h.fetch_request({'b': blob_call(3)})).results['b']
                    self.assertEqual(r.table.rows[0][0].blob_value, b'\0\0\0')
                finally:
                    t.close()



class OperationsTest(h.EvdalTestCase):
    """Items 11 and 12: unix sockets and listen addresses."""

    def test_second_server_does_not_steal_a_live_unix_socket(self):
        """A second evdal on the path of a running one stops with a clear error and leaves the
        first reachable (it unlinked the socket, bound, and both said "listening"); a socket
        file left by a process gone is still replaced. The start-up line names a unix socket
        as such (it said "plain TCP")."""
        with tempfile.TemporaryDirectory(prefix='evdal-unix-') as tmp:
            path = os.path.join(tmp, 'e.sock')
            with h.Server(h.config(listen=path)) as first:
                self.assertIn('plain unix socket', first.log_text())
                self.assertNotIn('plain TCP', first.log_text())
                second = h.Server(h.config(listen=path))
                with self.assertRaises(h.ServerError) as cm:
                    second.start()
                self.assertIn('another process accepts connections on this socket', str(cm.exception))
                self.assertTrue(os.path.exists(path))
                c, t = h.client(first)
                try:
                    self.assertPong(c)
                finally:
                    t.close()
            # A stale file (bound, never listened on: nothing accepts) is replaced.
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stale.bind(path)
            stale.close()
            with h.Server(h.config(listen=path)) as again:
                c, t = h.client(again)
                try:
                    self.assertPong(c)
                finally:
                    t.close()

    def test_listen_addresses_are_checked_and_off_means_off(self):
        """--check-config refuses ports past 65535 (":70000" bound 4464) with the file, line
        and key; admin_listen = "" (the documented "off") and listen = 127.0.0.1:0 pass the
        check and start."""
        with tempfile.TemporaryDirectory(prefix='evdal-addr-') as tmp:
            conf = os.path.join(tmp, 'evdal.conf')
            with open(conf, 'w') as f:
                f.write('[server]\nlisten = 127.0.0.1:70000\n')
            r = h.run_evdal(['--config', conf, '--check-config'])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn('evdal.conf:2: [server] listen: "127.0.0.1:70000": the port must be '
                          'a number from 0 to 65535', r.stderr)
            with open(conf, 'w') as f:
                f.write('[server]\nlisten = 127.0.0.1:0\nadmin_listen = ""\n')
            r = h.run_evdal(['--config', conf, '--check-config'])
            self.assertEqual(r.returncode, 0, r.stderr)
        with h.Server(h.config(listen='127.0.0.1:0', admin_listen='""')) as srv:
            self.assertIsNone(srv.admin_address)
            c, t = h.client(srv)
            try:
                self.assertPong(c)
            finally:
                t.close()



CLI = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-cli')


class CliRepliesTest(h.EvdalTestCase):
    """Items 13 and 14: what evdal-cli does with the replies it reads."""

    def cli(self, port, *args):
        # As test_evdal_cli runs it: under ASan, c_glib's finalizers leak a little at exit
        # (tests/lsan.supp), and the full stack lets the suppressions match.
        env = dict(os.environ)
        env['ASAN_OPTIONS'] = ':'.join(filter(None, [env.get('ASAN_OPTIONS'),
                                                     'fast_unwind_on_malloc=0']))
        env['LSAN_OPTIONS'] = ':'.join(filter(None, [
            env.get('LSAN_OPTIONS'), 'print_suppressions=0',
            'suppressions=' + os.path.join(h.EVDAL_SOURCE_DIR, 'tests', 'lsan.supp')]))
        return subprocess.run([CLI, '--host', '127.0.0.1', '--port', str(port)] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                              env=env)

    def fake_server(self, reply):
        def serve(conn):
            conn.recv(65536)
            try:
                conn.sendall(reply)
            except OSError:
                pass
        return h.one_shot_server(self, serve)

    def test_deep_nesting_in_a_reply_is_a_protocol_error(self):
        """A ping reply carrying an unknown field nested 100,000 lists deep overflowed the
        CLI's stack in c_glib's skip (a crash); the reply is now walked with the server's
        bounded validation first: exit 3, saying why."""
        depth = 100000
        body = struct.pack('!bh', 15, 9)            # field 9: list
        body += struct.pack('!bi', 15, 1) * depth    # of lists of lists...
        body += struct.pack('!bi', 8, 0)             # ...of no i32
        body += struct.pack('!bh', 11, 0) + struct.pack('!i', 4) + b'pong' + b'\0'
        msg = struct.pack('!I', 0x80010002) + struct.pack('!i', 4) + b'ping' + \
            struct.pack('!i', 0) + body
        port = self.fake_server(h.frame(msg))
        p = self.cli(port, 'ping')
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn(b'ping: no valid reply', p.stderr)
        self.assertIn(b'malformed', p.stderr)

    def test_text_with_nul_is_printed_whole_and_escaped(self):
        """A text value "a<U+0000>b<U+0000>" was printed "a" in tables and --json; it is now
        a\\x00b\\x00 in a table and "a\\u0000b\\u0000" in JSON."""
        with tempfile.TemporaryDirectory(prefix='evdal-nul-') as tmp:
            db = make_blob_db(tmp)
            lookups = self.NUL_LOOKUP % db
            with h.Server(h.config(lookups=lookups)) as srv:
                p = self.cli(srv.port, '--ascii', 'fetch', 'nul')
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn(b'a\\x00b\\x00', p.stdout)
                p = self.cli(srv.port, '--json', 'fetch', 'nul')
                self.assertEqual(p.returncode, 0, p.stderr)
                doc = json.loads(p.stdout)
                self.assertEqual(doc['results']['nul']['rows'], [['a\0b\0', 4]])

    NUL_LOOKUP = """
[database blobs]
path = %s
workers = 1

[lookup nul]
database = blobs
sql = SELECT 'a' || char(0) || 'b' || char(0) AS t, length(CAST('a' || char(0) || 'b' || char(0) AS BLOB)) AS n
"""


if __name__ == '__main__':
    unittest.main()

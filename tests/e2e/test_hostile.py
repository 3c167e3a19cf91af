"""Hostile input: over-long, negative and empty frames, random bytes, absurd declared sizes, deep
nesting, a frame with bytes after its message, unknown methods and services. Each case has the
one outcome the contract gives it (closed, or an exception with the connection kept, or an
exception then closed), a log line naming the peer and the reason, and never disturbs a
well-behaved client on another connection."""
import os
import random
import re
import socket
import struct
import sys
import time
import unittest

from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TTransport

import evdal_harness as h
from evdal_harness import DataAccess

MAX_FRAME = 1048576
HUGE = 0x7fffffff
VERDICT_TIMEOUT = 5.0


def binary_body(write_body):
    buf = TTransport.TMemoryBuffer()
    p = h.make_protocol(buf, 'binary')
    write_body(p)
    return buf.getvalue()


def fetch_with_huge_map():
    def args(p):
        p.writeStructBegin('fetch_args')
        p.writeFieldBegin('request', TType.STRUCT, 1)
        p.writeStructBegin('FetchRequest')
        p.writeFieldBegin('calls', TType.MAP, 2)
        p.writeMapBegin(TType.STRING, TType.STRUCT, HUGE)
        p.writeString('k')
        h.nap_call(10).write(p)
        # ... and nothing more: the other 2^31-2 entries never come.
    return h.frame(h.encode_message('fetch', 11, write_args=args))


def fetch_with_huge_string():
    def args(p):
        p.writeStructBegin('fetch_args')
        p.writeFieldBegin('request', TType.STRUCT, 1)
        p.writeStructBegin('FetchRequest')
        p.writeFieldBegin('context', TType.STRUCT, 1)
        p.writeStructBegin('RequestContext')
        p.writeFieldBegin('request_id', TType.STRING, 1)
        p.writeI32(HUGE)     # a string length...
        p.trans.write(b'abc')  # ...of which three bytes come
    return h.frame(h.encode_message('fetch', 12, write_args=args))


def fetch_with_huge_list():
    def args(p):
        p.writeStructBegin('fetch_args')
        p.writeFieldBegin('request', TType.STRUCT, 1)
        p.writeStructBegin('FetchRequest')
        p.writeFieldBegin('calls', TType.MAP, 2)
        p.writeMapBegin(TType.STRING, TType.STRUCT, 1)
        p.writeString('k')
        p.writeStructBegin('LookupCall')
        p.writeFieldBegin('lookup', TType.STRING, 1)
        p.writeString('nap')
        p.writeFieldEnd()
        # An unknown field (a server must skip it) holding a list that claims 2^31-1 i64s.
        p.writeFieldBegin('junk', TType.LIST, 99)
        p.writeListBegin(TType.I64, HUGE)
        p.writeI64(1)
    return h.frame(h.encode_message('fetch', 13, write_args=args))


def huge_method_name():
    # Strict binary header: version|type, then a name length of 2^31-1, then two bytes of it.
    msg = struct.pack('!iI', -2147418111, HUGE) + b'pi'  # 0x80010001 = CALL
    return h.frame(msg)


def deep_lists(depth=10000, protocol='binary', framed=True):
    def args(p):
        p.writeStructBegin('ping_args')
        p.writeFieldBegin('junk', TType.LIST, 1)  # ping has no field 1: it must be skipped
        for _ in range(depth - 1):
            p.writeListBegin(TType.LIST, 1)
        p.writeListBegin(TType.I32, 0)
        for _ in range(depth):
            p.writeListEnd()
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
    msg = h.encode_message('ping', 14, write_args=args, protocol=protocol)
    return h.frame(msg) if framed else msg


def deep_structs(depth=10000):
    def args(p):
        p.writeStructBegin('ping_args')
        for _ in range(depth):
            p.writeFieldBegin('junk', TType.STRUCT, 1)
            p.writeStructBegin('junk')
        for _ in range(depth):
            p.writeFieldStop()
            p.writeStructEnd()
            p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
    return h.frame(h.encode_message('ping', 15, write_args=args))


def ping_msg(seqid=1):
    return h.encode_message('ping', seqid, DataAccess.ping_args())


def fetch_with_wrong_field_type():
    """fetch's field 1 (a FetchRequest struct) sent as an i32."""
    return h.wrong_field_type_fetch(19)


# What the server does with each case (issue 2 and 6, docs/ARCHITECTURE.md "A request's path"):
# broken framing or a broken message header leaves no way to trust the stream: closed at once,
# no reply. A framed message whose header is fine but whose body is not gets a
# TApplicationException and the connection is kept, since the frame says where the next message
# starts. Unframed, there is no telling where the next message starts: the exception is sent,
# then the connection is closed.
CLOSED = 'closed'
ERROR_KEPT = 'exception, kept'
ERROR_CLOSED = 'exception, closed'
INVALID_KEPT = 'InvalidRequest, kept'

PROTOCOL_ERROR = TApplicationException.PROTOCOL_ERROR
UNKNOWN_METHOD = TApplicationException.UNKNOWN_METHOD


class Case:
    """A hostile input and what must come of it. `reason` is a regex of the log line that
    follows "PEER: "; `reason_used` the same on a connection that was already served (where
    the first bytes no longer decide the wire format); None: not logged (yet)."""

    def __init__(self, name, data, outcome, reason, exc=PROTOCOL_ERROR, seqid=None,
                 framed=True, protocol='binary', reason_used=None):
        self.name, self.data, self.outcome, self.reason = name, data, outcome, reason
        self.exc, self.seqid, self.framed, self.protocol = exc, seqid, framed, protocol
        self.reason_used = reason_used or reason


BAD_FRAME = r'bad frame: '
NOT_THRIFT = r'not a Thrift connection: '
MALFORMED = r'malformed arguments of (ping|fetch): '
CLOSING = r'.*; closing the connection'

CASES = [
    Case('frame longer than max_frame_bytes', struct.pack('!i', MAX_FRAME + 1) + ping_msg(),
         CLOSED, BAD_FRAME + r'the frame is longer than max_frame_bytes \(length %d' % (MAX_FRAME + 1)),
    Case('frame of 2^31-1 bytes', struct.pack('!i', HUGE) + ping_msg(),
         CLOSED, BAD_FRAME + r'the frame is longer than max_frame_bytes \(length %d' % HUGE),
    Case('negative frame length', struct.pack('!i', -5) + ping_msg(),
         CLOSED, NOT_THRIFT + r'.*frame length would be negative' + CLOSING,
         reason_used=BAD_FRAME + r'the frame length is negative \(length -5' + CLOSING),
    Case('zero frame length', struct.pack('!i', 0) + h.ping_bytes(2),
         CLOSED, NOT_THRIFT + r'frame holds neither a binary nor a compact message' + CLOSING,
         reason_used=BAD_FRAME + r'the frame is empty \(length 0' + CLOSING),
    Case('4 KiB of random bytes', random.Random(20240611).randbytes(4096),
         CLOSED, NOT_THRIFT + r'frame holds neither a binary nor a compact message' + CLOSING,
         reason_used=BAD_FRAME + r'the frame is longer than max_frame_bytes' + CLOSING),
    Case('map claiming 2^31-1 entries', fetch_with_huge_map(), ERROR_KEPT,
         MALFORMED + r'container size larger than the message could hold', seqid=11),
    Case('string claiming 2^31-1 bytes', fetch_with_huge_string(), ERROR_KEPT,
         MALFORMED + r'string longer than the message could hold', seqid=12),
    Case('list claiming 2^31-1 elements', fetch_with_huge_list(), ERROR_KEPT,
         MALFORMED + r'container size larger than the message could hold', seqid=13),
    Case('method name claiming 2^31-1 bytes', huge_method_name(), CLOSED,
         r'bad message header: message header longer than the length limit' + CLOSING),
    Case('lists nested 10,000 deep', deep_lists(), ERROR_KEPT,
         MALFORMED + r'nesting deeper than the depth limit', seqid=14),
    Case('structs nested 10,000 deep', deep_structs(), ERROR_KEPT,
         MALFORMED + r'nesting deeper than the depth limit', seqid=15),
    Case('frame holding bytes after its message', h.frame(ping_msg(16) + b'\0' * 8), ERROR_KEPT,
         MALFORMED + r'the frame holds bytes after the message', seqid=16),
    Case('valid header naming an unknown method',
         h.call_bytes('frobnicate', 17, DataAccess.ping_args()), ERROR_KEPT,
         r'UNKNOWN_METHOD: unknown method "frobnicate"', exc=UNKNOWN_METHOD, seqid=17),
    Case('multiplexed name of an unknown service',
         h.call_bytes('Nope:fetch', 18, DataAccess.ping_args()), ERROR_KEPT,
         r'UNKNOWN_METHOD: unknown service in "Nope:fetch"', exc=UNKNOWN_METHOD, seqid=18),
    # Thrift skips a field of an unexpected type, as every Thrift server does: fetch then has
    # no calls, a declared InvalidRequest. Not logged: a plain client error, answered as such.
    Case('fetch\'s request sent as an i32', fetch_with_wrong_field_type(), INVALID_KEPT, None,
         seqid=19),
    # Not framed: the cases above only on a fresh connection (a used one is framed).
    Case('unframed compact lists nested 10,000 deep',
         deep_lists(protocol='compact', framed=False), ERROR_CLOSED,
         MALFORMED + r'nesting deeper than the depth limit', seqid=14, framed=False,
         protocol='compact'),
    Case('unframed binary with a 2^31-1 byte method name',
         struct.pack('!iI', -2147418111, HUGE) + b'x', CLOSED,
         r'bad message header: message name longer than the length limit allows' + CLOSING,
         framed=False),
]
FRAMED_CASES = [c for c in CASES if c.framed]


def collect(sock, timeout, after_data=0.3):
    """Reads until the server closes the connection, or until `after_data` s after the first
    bytes (a kept connection), or `timeout`. Returns (closed, bytes read)."""
    deadline = time.monotonic() + timeout
    data = b''
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, data
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        if not chunk:
            return True, data
        if not data:
            deadline = min(deadline, time.monotonic() + after_data)
        data += chunk


def parse_replies(data, case):
    """The replies in `data`, in the case's transport and protocol."""
    if not case.framed:
        return [h.parse_reply(data, case.protocol)] if data else []
    replies = []
    while data:
        (n,) = struct.unpack('!i', data[:4])
        replies.append(h.parse_reply(data[4:4 + n], case.protocol))
        data = data[4 + n:]
    return replies


# Well above what the server needs (about 10 MiB idle, plus buffers of max_frame_bytes while a
# frame is read), far below what a leak or an unbounded buffer per claimed length would reach.
PEAK_RSS_LIMIT_MIB = 64


class HostileTest(h.EvdalTestCase):
    def setUp(self):
        self.server = h.Server(h.config(max_frame_bytes=MAX_FRAME, admin_listen='127.0.0.1:0'))
        self.server.__enter__()
        self.addCleanup(self.server.__exit__, None, None, None)
        self.addCleanup(self.check_memory)
        # The well-behaved client is connected before any hostile input arrives.
        self.good, self.good_t = h.client(self.server)
        self.addCleanup(self.good_t.close)

    def check_memory(self):
        """Memory stays bounded whatever a client sends: the peak, not just the end state."""
        if self.server.alive():
            peak = self.server.peak_rss_mib()
            sys.stderr.write('%s: peak RSS %.1f MiB\n' % (self.id(), peak))
            self.assertLess(peak, PEAK_RSS_LIMIT_MIB)

    def good_traffic(self, when):
        try:
            self.assertEqual(self.good.ping(), 'pong')
            self.assertNapFetch(self.good, [20, 10])
        except Exception as e:
            self.fail('the good client failed %s: %r\n%s' % (when, e, self.server.log_tail()))

    def verdict(self, sock, case):
        """Asserts what the server did with the case; returns its replies."""
        closed, data = collect(sock, VERDICT_TIMEOUT)
        try:
            replies = parse_replies(data, case)
        except Exception as e:
            self.fail('%s: %r does not parse as replies: %r' % (case.name, data[:64], e))
        if case.outcome == CLOSED:
            self.assertEqual(data, b'', '%s: answered instead of closed' % case.name)
        else:
            self.assertEqual(len(replies), 1, '%s: %r' % (case.name, replies))
            r = replies[0]
            self.assertEqual(r.seqid, case.seqid, '%s: %r' % (case.name, r))
            if case.outcome == INVALID_KEPT:
                self.assertEqual(r.mtype, TMessageType.REPLY, '%s: %r' % (case.name, r))
                self.assertIsNotNone(r.result.invalid, '%s: %r' % (case.name, r))
            else:
                self.assertEqual((r.mtype, r.exc and r.exc.type),
                                 (TMessageType.EXCEPTION, case.exc), '%s: %r' % (case.name, r))
        should_close = case.outcome in (CLOSED, ERROR_CLOSED)
        self.assertEqual(closed, should_close, '%s: %s' % (
            case.name, 'kept open' if should_close else 'closed'))
        return replies

    def assertStillServes(self, s, case):
        """A kept connection serves its next calls, a fetch among them: the frame marked where
        the bad message ended."""
        what = '%s: the connection kept after it' % case.name
        s.sendall(h.ping_bytes(4242))
        r = h.read_reply(s)
        self.assertEqual((r.seqid, r.mtype, r.result and r.result.success),
                         (4242, TMessageType.REPLY, 'pong'), what)
        s.sendall(h.fetch_bytes(4243, h.fetch_request({'n': h.nap_call(5)})))
        r = h.read_reply(s)
        self.assertEqual((r.seqid, r.mtype), (4243, TMessageType.REPLY), what)
        self.assertEqual(h.slept_ms(r.result.success.results['n']), 5, what)

    def run_case(self, case, prefix=b''):
        s = self.server.raw_socket()
        reason = case.reason_used if prefix else case.reason
        try:
            peer = '127.0.0.1:%d' % s.getsockname()[1]
            if prefix:
                s.sendall(prefix)
                r = h.read_reply(s)
                self.assertEqual(r.result.success, 'pong', r)
            t0 = time.monotonic()
            h.send_all(s, case.data)
            self.verdict(s, case)
            elapsed = time.monotonic() - t0
            if case.outcome in (ERROR_KEPT, INVALID_KEPT):
                self.assertStillServes(s, case)
            if os.environ.get('EVDAL_E2E_VERBOSE'):
                print('\n  %-50s %-22s %.3f s' % (case.name, case.outcome, elapsed), end='')
        finally:
            s.close()
        self.assertTrue(self.server.alive(),
                        '%s: the server died\n%s' % (case.name, self.server.log_tail()))
        if reason is not None:
            # The peer and the reason on one line.
            line = re.escape(peer) + r': ' + reason
            self.assertTrue(self.server.wait_log(line, 2.0),
                            '%s: no log line matching %r\n%s'
                            % (case.name, line, self.server.log_tail()))

    def test_each_case_on_a_fresh_connection(self):
        self.good_traffic('before any hostile input')
        for case in CASES:
            with self.subTest(case=case.name):
                self.run_case(case)
                self.good_traffic('after "%s"' % case.name)
                time.sleep(0.15)  # keep clear of the log rate limit (a few lines a second)

    def test_bad_frames_after_good_requests(self):
        """The framed cases, on a connection that has already been served once."""
        for case in FRAMED_CASES:
            with self.subTest(case=case.name):
                self.run_case(case, prefix=h.ping_bytes(1))
                self.good_traffic('after "%s" on a used connection' % case.name)
                time.sleep(0.15)

    def test_flood_of_bad_connections(self):
        rnd = random.Random(7)
        socks = []
        try:
            for i in range(100):
                s = self.server.raw_socket()
                socks.append(s)
                h.send_all(s, rnd.randbytes(64 + i))
            deadline = time.monotonic() + 10
            for s in socks:
                closed, replies = h.wait_closed(s, max(0.1, deadline - time.monotonic()))
                self.assertTrue(closed, 'a random-bytes connection stayed open')
        finally:
            for s in socks:
                s.close()
        self.good_traffic('after 100 random-bytes connections')
        self.assertTrue(self.server.alive())

    def test_half_a_message_then_hang_up(self):
        """A client that leaves mid-frame or mid-message (framed and unframed)."""
        whole = h.fetch_bytes(5, h.fetch_request({'n': h.nap_call(10)}))
        for cut in (3, 10, len(whole) - 1):
            s = self.server.raw_socket()
            s.sendall(whole[:cut])
            s.close()
        whole = h.fetch_bytes(6, h.fetch_request({'n': h.nap_call(10)}), protocol='compact',
                              framed=False)
        for cut in (1, 6, len(whole) - 1):
            s = self.server.raw_socket()
            s.sendall(whole[:cut])
            s.close()
        # Every hang-up handled: only the good client's connection is left.
        self.server.wait_metric('evdal_connections', 1)
        self.good_traffic('after clients hung up mid-message')

    def test_frame_of_exactly_max_frame_bytes_is_read(self):
        """The limit is the limit: a valid message padded to max_frame_bytes is no protocol
        violation (an unknown field of the args is skipped)."""
        def padded_ping(pad):
            def args(p):
                p.writeStructBegin('ping_args')
                p.writeFieldBegin('junk', TType.STRING, 1)
                p.writeBinary(b'x' * pad)
                p.writeFieldEnd()
                p.writeFieldStop()
                p.writeStructEnd()
            return h.encode_message('ping', 77, write_args=args)
        overhead = len(padded_ping(0))
        msg = padded_ping(MAX_FRAME - overhead)
        self.assertEqual(len(msg), MAX_FRAME)
        s = self.server.raw_socket(timeout=10)
        try:
            s.sendall(h.frame(msg))
            r = h.read_reply(s, timeout=10)
            self.assertEqual((r.mtype, r.seqid, r.result.success),
                             (TMessageType.REPLY, 77, 'pong'), r)
        finally:
            s.close()


if __name__ == '__main__':
    unittest.main()

"""Hostile input: over-long, negative and empty frames, random bytes, absurd declared sizes and
deep nesting. Each must end in a closed connection or a PROTOCOL_ERROR reply, quickly, and never
disturb a well-behaved client on another connection."""
import os
import random
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


CASES = [
    # (name, bytes to send)
    ('frame longer than max_frame_bytes', struct.pack('!i', MAX_FRAME + 1) + ping_msg()),
    ('frame of 2^31-1 bytes', struct.pack('!i', HUGE) + ping_msg()),
    ('negative frame length', struct.pack('!i', -5) + ping_msg()),
    ('zero frame length', struct.pack('!i', 0) + h.ping_bytes(2)),
    ('4 KiB of random bytes', random.Random(20240611).randbytes(4096)),
    ('map claiming 2^31-1 entries', fetch_with_huge_map()),
    ('string claiming 2^31-1 bytes', fetch_with_huge_string()),
    ('list claiming 2^31-1 elements', fetch_with_huge_list()),
    ('method name claiming 2^31-1 bytes', huge_method_name()),
    ('lists nested 10,000 deep', deep_lists()),
    ('structs nested 10,000 deep', deep_structs()),
    ('unframed compact lists nested 10,000 deep',
     deep_lists(protocol='compact', framed=False)),
    ('unframed binary with a 2^31-1 byte method name', struct.pack('!iI', -2147418111, HUGE) + b'x'),
]


# Well above what the server needs (about 10 MiB idle, plus buffers of max_frame_bytes while a
# frame is read), far below what a leak or an unbounded buffer per claimed length would reach.
PEAK_RSS_LIMIT_MIB = 64


class HostileTest(h.EvdalTestCase):
    def setUp(self):
        self.server = h.Server(h.config(max_frame_bytes=MAX_FRAME))
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

    def verdict(self, sock, name):
        """Closed by the server, or PROTOCOL_ERROR replies only; returns a description."""
        closed, replies = h.wait_closed(sock, VERDICT_TIMEOUT, after_reply=0.3)
        for r in replies:
            ok = (isinstance(r, h.Reply) and r.mtype == TMessageType.EXCEPTION and
                  r.exc.type == TApplicationException.PROTOCOL_ERROR)
            self.assertTrue(ok, '%s: the server answered %r' % (name, r))
        self.assertTrue(closed or replies,
                        '%s: neither closed nor answered within %.0f s' % (name, VERDICT_TIMEOUT))
        return 'closed' if closed else 'PROTOCOL_ERROR'

    def run_case(self, name, data, prefix=b''):
        s = self.server.raw_socket()
        try:
            peer = '127.0.0.1:%d' % s.getsockname()[1]
            if prefix:
                s.sendall(prefix)
                r = h.read_reply(s)
                self.assertEqual(r.result.success, 'pong', r)
            t0 = time.monotonic()
            h.send_all(s, data)
            outcome = self.verdict(s, name)
            elapsed = time.monotonic() - t0
            if outcome == 'PROTOCOL_ERROR':
                # The connection was kept: the frame marked where the bad message ended, so the
                # next one must be served.
                s.sendall(h.ping_bytes(4242))
                r = h.read_reply(s)
                self.assertEqual((r.seqid, r.mtype, r.result and r.result.success),
                                 (4242, TMessageType.REPLY, 'pong'),
                                 '%s: the connection kept after PROTOCOL_ERROR' % name)
            if os.environ.get('EVDAL_E2E_VERBOSE'):
                print('\n  %-50s %-15s %.3f s' % (name, outcome, elapsed), end='')
        finally:
            s.close()
        self.assertTrue(self.server.alive(),
                        '%s: the server died\n%s' % (name, self.server.log_tail()))
        self.assertTrue(self.server.wait_log(r'127\.0\.0\.1:%d\b' % int(peer.split(':')[1]), 2.0),
                        '%s (%s): the log does not name the peer %s\n%s'
                        % (name, outcome, peer, self.server.log_tail()))
        return outcome, elapsed

    def test_each_case_on_a_fresh_connection(self):
        self.good_traffic('before any hostile input')
        for name, data in CASES:
            with self.subTest(case=name):
                self.run_case(name, data)
                self.good_traffic('after "%s"' % name)
                time.sleep(0.15)  # keep clear of the log rate limit (a few lines a second)

    def test_bad_frames_after_good_requests(self):
        """The same frames, on a connection that has already been served once."""
        for name, data in CASES[:11]:
            with self.subTest(case=name):
                self.run_case(name + ' (after a ping)', data, prefix=h.ping_bytes(1))
                self.good_traffic('after "%s" on a used connection' % name)
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
        time.sleep(0.2)
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

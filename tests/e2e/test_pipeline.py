"""Hand-made messages on a raw socket: pipelining (calls in flight together, replies in
order), a closed connection cancelling its calls, a request arriving in many pieces, oneway
calls, unknown methods and services, undecodable arguments."""
import random
import re
import socket
import struct
import time
import unittest

from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TSocket, TTransport

import evdal_harness as h
from evdal_harness import DataAccess


def nap_request(delay_ms, key='n'):
    return h.fetch_request({key: h.nap_call(delay_ms)})


def read_unframed_reply(sock, protocol, method):
    """One unframed reply read straight off the socket with Thrift's own protocol."""
    ts = TSocket.TSocket()
    ts.setHandle(sock)
    p = h.make_protocol(TTransport.TBufferedTransport(ts), protocol)
    name, mtype, seqid = p.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        x = TApplicationException()
        x.read(p)
        return h.Reply(name, mtype, seqid, exc=x)
    result = getattr(DataAccess, method + '_result')()
    result.read(p)
    p.readMessageEnd()
    return h.Reply(name, mtype, seqid, result=result)


class PipelineTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config(lookups=h.NAP_LOOKUP + h.FAULT_LOOKUPS,
                                       admin_listen='127.0.0.1:0'))
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def sock(self):
        s = self.server.raw_socket()
        self.addCleanup(s.close)
        return s

    def assertPingReply(self, reply, seqid):
        self.assertEqual(reply.mtype, TMessageType.REPLY, reply)
        self.assertEqual(reply.seqid, seqid, reply)
        self.assertEqual(reply.result.success, 'pong', reply)

    def assertLogged(self, s, reason):
        """The server logged `reason` (a regex) about the peer that `s` is."""
        peer = r'127\.0\.0\.1:%d: ' % s.getsockname()[1]
        self.assertTrue(self.server.wait_log(peer + reason, 2.0),
                        'no log line "%s%s":\n%s' % (peer, reason, self.server.log_tail()))

    def assertStillWorks(self, s, seqid=9000):
        s.sendall(h.ping_bytes(seqid))
        self.assertPingReply(h.read_reply(s), seqid)
        s.sendall(h.fetch_bytes(seqid + 1, nap_request(5)))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.REPLY, seqid + 1), r)
        self.assertEqual(h.slept_ms(r.result.success.results['n']), 5)

    def test_replies_in_request_order(self):
        s = self.sock()
        batch = (h.fetch_bytes(101, nap_request(150)) + h.ping_bytes(102) + h.ping_bytes(103))
        t0 = time.monotonic()
        s.sendall(batch)  # one write: all three calls are in flight together
        first = h.read_reply(s)
        t_first = time.monotonic() - t0
        second = h.read_reply(s)
        third = h.read_reply(s)
        self.assertEqual([first.seqid, second.seqid, third.seqid], [101, 102, 103],
                         [first, second, third])
        self.assertEqual(first.mtype, TMessageType.REPLY, first)
        self.assertEqual(first.name, 'fetch')
        self.assertEqual(h.slept_ms(first.result.success.results['n']), 150)
        self.assertGreaterEqual(t_first, 0.14)
        self.assertPingReply(second, 102)
        self.assertPingReply(third, 103)
        self.assertStillWorks(s)

    def test_pipelined_fetches_run_together(self):
        """Three 300 ms naps in one write on one connection are in flight together: all three
        replies, in request order, within 600 ms. One at a time they would take 900 ms."""
        s = self.sock()
        batch = b''.join(h.fetch_bytes(110 + i, nap_request(300)) for i in range(3))
        t0 = time.monotonic()
        s.sendall(batch)
        replies = [h.read_reply(s) for _ in range(3)]
        elapsed = time.monotonic() - t0
        self.assertEqual([r.seqid for r in replies], [110, 111, 112], replies)
        for r in replies:
            self.assertEqual(r.mtype, TMessageType.REPLY, r)
            self.assertEqual(h.slept_ms(r.result.success.results['n']), 300)
        self.assertGreaterEqual(elapsed, 0.29)
        self.assertLess(elapsed, 0.6, 'three pipelined 300 ms naps took %.0f ms: run one at '
                        'a time' % (elapsed * 1000))

    def test_closing_cancels_calls_in_flight(self):
        """A client that leaves with a call in flight (its socket reset, as a process that
        dies with unread bytes or SO_LINGER 0 does): the call is cancelled (the fault backend
        logs it) long before its 5 s deadline, nothing stays in flight, and the server serves
        on. A plain close() sends a FIN, which looks like a half-close: evdal answers what was
        sent (test_hostile test_half_close_answers_what_was_sent) and the write that meets the
        closed socket ends the rest."""
        rid = 'cancel-on-close-%d' % random.randrange(1 << 30)
        cancelled = r'\[%s\] fault backend: call cancelled' % re.escape(rid)
        s = self.server.raw_socket()
        try:
            s.sendall(h.fetch_bytes(801, h.fetch_request(
                {'s': h.ttypes.LookupCall(lookup='stuck')}, request_id=rid)))
            deadline = time.monotonic() + 5
            while self.server.metric('evdal_inflight_requests') != 1:
                self.assertLess(time.monotonic(), deadline, 'the stuck fetch never started')
                time.sleep(0.02)
            self.assertIsNone(self.server.wait_log(cancelled, 0.2),
                              'cancelled while its client was still there')
        finally:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            s.close()
        t0 = time.monotonic()
        self.assertTrue(self.server.wait_log(cancelled, 2.0),
                        'no cancellation within 2 s of the close:\n' + self.server.log_tail())
        self.assertLess(time.monotonic() - t0, h.scaled(2.0))
        deadline = time.monotonic() + 2
        while self.server.metric('evdal_inflight_requests') != 0:
            self.assertLess(time.monotonic(), deadline, 'the cancelled fetch stayed in flight')
            time.sleep(0.02)
        c, t = h.client(self.server)
        self.addCleanup(t.close)
        self.assertNapFetch(c, [10, 20])

    def test_request_in_many_pieces(self):
        """A fetch whose context carries a 96 KiB attribute, sent in pieces of 1 to 7 bytes
        at both ends and of a few KiB in between (each its own read): the lookup that echoes
        the context gets it byte for byte, over both transports and protocols."""
        rnd = random.Random(20261202)
        alphabet = 'abcxyz0189 =;:/\\"\'\t\u00e9\u20ac\u4e2d\U0001f600'
        value = ''.join(rnd.choice(alphabet) for _ in range(96 * 1024))
        self.assertGreaterEqual(len(value.encode('utf-8')), 64 * 1024)
        for framed in (True, False):
            for protocol in ('binary', 'compact'):
                with self.subTest(framed=framed, protocol=protocol):
                    rid = 'pieces-%s-%s' % ('framed' if framed else 'unframed', protocol)
                    req = h.fetch_request({'c': h.ttypes.LookupCall(lookup='ctx')},
                                          request_id=rid, attributes={'big': value})
                    data = h.fetch_bytes(901, req, protocol=protocol, framed=framed)
                    s = self.sock()
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.send_in_pieces(s, data, rnd)
                    if framed:
                        r = h.read_reply(s, timeout=10, protocol=protocol)
                    else:
                        s.settimeout(10)
                        r = read_unframed_reply(s, protocol, 'fetch')
                    self.assertEqual((r.mtype, r.seqid), (TMessageType.REPLY, 901), r.exc)
                    res = r.result.success
                    self.assertEqual(res.request_id, rid)
                    table = res.results['c'].table
                    self.assertIsNotNone(table, res.results['c'].error)
                    row = dict(zip(table.columns, table.rows[0]))
                    echoed = row['attributes'].text_value
                    self.assertEqual(len(echoed), len('big=;') + len(value))
                    self.assertTrue(echoed.encode('utf-8') ==
                                    ('big=%s;' % value).encode('utf-8'),
                                    'the attribute came back changed')

    @staticmethod
    def send_in_pieces(s, data, rnd):
        """Tiny pieces for the first and last 150 bytes (the header, the start and end of
        the long string), pieces of 1-8 KiB in between; a pause after each, so that each is
        a read of its own. About a second at most."""
        small = 150
        pos = 0
        while pos < len(data):
            if pos < small or pos >= len(data) - small:
                n = rnd.randint(1, 7)
                pause = 0.001
            else:
                n = min(rnd.randint(1024, 8192), len(data) - small - pos)
                pause = 0.005
            s.sendall(data[pos:pos + n])
            pos += n
            time.sleep(pause)

    def test_many_pipelined_pings_and_fetches(self):
        s = self.sock()
        batch = b''
        expect = []
        for i in range(40):
            if i % 4 == 0:
                batch += h.fetch_bytes(1000 + i, nap_request(60 - i))
                expect.append(('fetch', 1000 + i, 60 - i))
            else:
                batch += h.ping_bytes(1000 + i)
                expect.append(('ping', 1000 + i, None))
        s.sendall(batch)
        for name, seqid, delay in expect:
            r = h.read_reply(s)
            self.assertEqual((r.name, r.seqid, r.mtype), (name, seqid, TMessageType.REPLY), r)
            if delay is None:
                self.assertEqual(r.result.success, 'pong')
            else:
                self.assertEqual(h.slept_ms(r.result.success.results['n']), delay)

    def test_pipelined_unframed_compact(self):
        s = self.sock()
        batch = (h.fetch_bytes(7, nap_request(100), protocol='compact', framed=False) +
                 h.ping_bytes(8, protocol='compact', framed=False))
        s.sendall(batch)
        # Unframed replies: decode with a buffered transport over the socket.
        from thrift.transport import TSocket, TTransport
        ts = TSocket.TSocket()
        ts.setHandle(s)
        s.settimeout(5)
        p = h.make_protocol(TTransport.TBufferedTransport(ts), 'compact')
        name, mtype, seqid = p.readMessageBegin()
        self.assertEqual((name, mtype, seqid), ('fetch', TMessageType.REPLY, 7))
        res = DataAccess.fetch_result()
        res.read(p)
        p.readMessageEnd()
        self.assertEqual(h.slept_ms(res.success.results['n']), 100)
        name, mtype, seqid = p.readMessageBegin()
        self.assertEqual((name, mtype, seqid), ('ping', TMessageType.REPLY, 8))
        res = DataAccess.ping_result()
        res.read(p)
        self.assertEqual(res.success, 'pong')

    def test_oneway_gets_no_reply(self):
        s = self.sock()
        s.sendall(h.ping_bytes(201, mtype=TMessageType.ONEWAY) + h.ping_bytes(202))
        self.assertPingReply(h.read_reply(s), 202)
        # A oneway fetch too: its nap runs, but only the ping after it is answered.
        s.sendall(h.fetch_bytes(203, nap_request(50), mtype=TMessageType.ONEWAY) +
                  h.ping_bytes(204))
        self.assertPingReply(h.read_reply(s), 204)
        # Nothing else arrives (no late reply to the oneway calls, no close).
        s.settimeout(0.3)
        try:
            data = s.recv(1)
        except socket.timeout:
            data = None
        self.assertIsNone(data, 'after the replies: %r (b"" means the server closed)' % data)
        self.assertStillWorks(s)

    def test_unknown_method(self):
        s = self.sock()
        s.sendall(h.call_bytes('frobnicate', 301, DataAccess.ping_args()))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.EXCEPTION, 301), r)
        self.assertEqual(r.exc.type, TApplicationException.UNKNOWN_METHOD, r)
        self.assertLogged(s, r'UNKNOWN_METHOD: unknown method "frobnicate"')
        self.assertStillWorks(s)

    def test_unknown_method_compact_unframed(self):
        c, t = h.client(self.server, framed=False, protocol='compact')
        self.addCleanup(t.close)
        # Drive the generated client by hand to call a method that does not exist.
        c._oprot.writeMessageBegin('nosuch', TMessageType.CALL, 77)
        DataAccess.ping_args().write(c._oprot)
        c._oprot.writeMessageEnd()
        c._oprot.trans.flush()
        with self.assertRaises(TApplicationException) as cm:
            c.recv_ping()
        self.assertEqual(cm.exception.type, TApplicationException.UNKNOWN_METHOD)
        self.assertEqual(c.ping(), 'pong')

    def test_multiplexed_names(self):
        s = self.sock()
        s.sendall(h.call_bytes('DataAccess:ping', 401, DataAccess.ping_args()))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.REPLY, 401), r)
        self.assertEqual(r.result.success, 'pong')
        s.sendall(h.call_bytes('Nope:ping', 402, DataAccess.ping_args()))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.EXCEPTION, 402), r)
        self.assertEqual(r.exc.type, TApplicationException.UNKNOWN_METHOD, r)
        self.assertLogged(s, r'UNKNOWN_METHOD: unknown service in "Nope:ping"')
        s.sendall(h.call_bytes('DataAccess:nosuch', 403, DataAccess.ping_args()))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.EXCEPTION, 403), r)
        self.assertEqual(r.exc.type, TApplicationException.UNKNOWN_METHOD, r)
        self.assertLogged(s, r'UNKNOWN_METHOD: unknown method "nosuch"')
        self.assertStillWorks(s)

    def test_wrong_field_type(self):
        """fetch's field 1 sent as an i32 instead of a FetchRequest struct."""
        s = self.sock()
        s.sendall(h.wrong_field_type_fetch(501))
        r = h.read_reply(s)
        self.assertEqual(r.seqid, 501, r)
        if r.mtype == TMessageType.EXCEPTION:
            self.assertEqual(r.exc.type, TApplicationException.PROTOCOL_ERROR, r)
        else:
            # Thrift's usual reading skips a field of the wrong type: the request then has no
            # calls, which the contract answers with InvalidRequest.
            self.assertEqual(r.mtype, TMessageType.REPLY, r)
            self.assertIsNotNone(r.result.invalid, r)
        self.assertStillWorks(s)

    def test_truncated_args(self):
        """A frame that ends in the middle of fetch's arguments: undecodable."""
        whole = h.encode_message('fetch', 601, DataAccess.fetch_args(request=nap_request(10)))
        # Cut inside the calls map, well past the message header.
        cut = whole[:len(whole) - 12]
        s = self.sock()
        s.sendall(h.frame(cut))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.EXCEPTION, 601), r)
        self.assertEqual(r.exc.type, TApplicationException.PROTOCOL_ERROR, r)
        self.assertStillWorks(s)

    def test_bad_value_type_in_map(self):
        """calls declared map<string, i32> instead of map<string, LookupCall>."""
        def write_args(p):
            p.writeStructBegin('fetch_args')
            p.writeFieldBegin('request', TType.STRUCT, 1)
            p.writeStructBegin('FetchRequest')
            p.writeFieldBegin('calls', TType.MAP, 2)
            p.writeMapBegin(TType.STRING, TType.I32, 1)
            p.writeString('k')
            p.writeI32(7)
            p.writeMapEnd()
            p.writeFieldEnd()
            p.writeFieldStop()
            p.writeStructEnd()
            p.writeFieldEnd()
            p.writeFieldStop()
            p.writeStructEnd()
        s = self.sock()
        s.sendall(h.frame(h.encode_message('fetch', 701, write_args=write_args)))
        r = h.read_reply(s)
        self.assertEqual(r.seqid, 701, r)
        if r.mtype == TMessageType.EXCEPTION:
            self.assertEqual(r.exc.type, TApplicationException.PROTOCOL_ERROR, r)
        else:
            # Never a successful answer to a call that could not be read.
            self.assertEqual(r.mtype, TMessageType.REPLY, r)
            if r.result.success is not None:
                res = r.result.success.results.get('k')
                self.assertIsNotNone(res, r)
                self.assertIsNotNone(res.error, r)
                self.assertIsNone(res.table, r)
            else:
                self.assertIsNotNone(r.result.invalid, r)
        self.assertStillWorks(s)


if __name__ == '__main__':
    unittest.main()

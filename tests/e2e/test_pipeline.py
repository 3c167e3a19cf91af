"""Hand-made messages on a raw socket: pipelining and reply order, oneway calls, unknown
methods and services, undecodable arguments."""
import socket
import time
import unittest

from thrift.Thrift import TApplicationException, TMessageType, TType

import evdal_harness as h
from evdal_harness import DataAccess


def nap_request(delay_ms, key='n'):
    return h.fetch_request({key: h.nap_call(delay_ms)})


class PipelineTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config())
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
        s.sendall(h.call_bytes('DataAccess:nosuch', 403, DataAccess.ping_args()))
        r = h.read_reply(s)
        self.assertEqual((r.mtype, r.seqid), (TMessageType.EXCEPTION, 403), r)
        self.assertEqual(r.exc.type, TApplicationException.UNKNOWN_METHOD, r)
        self.assertStillWorks(s)

    def test_wrong_field_type(self):
        """fetch's field 1 sent as an i32 instead of a FetchRequest struct."""
        def write_args(p):
            p.writeStructBegin('fetch_args')
            p.writeFieldBegin('request', TType.I32, 1)
            p.writeI32(12345)
            p.writeFieldEnd()
            p.writeFieldStop()
            p.writeStructEnd()
        s = self.sock()
        s.sendall(h.frame(h.encode_message('fetch', 501, write_args=write_args)))
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

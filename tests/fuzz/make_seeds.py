#!/usr/bin/python3
"""Seed corpora for the fuzzers, made from real requests: every DataAccess call written by the
generated Python stubs in every wire format evdal speaks, and the project's config files.

Usage: make_seeds.py GEN_PY_DIR SOURCE_DIR OUT_DIR  (writes OUT_DIR/wire and OUT_DIR/config)"""
import glob
import os
import struct
import sys

sys.path.insert(0, sys.argv[1])
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.Thrift import TMessageType  # noqa: E402
from thrift.transport import TTransport  # noqa: E402
from evdal import DataAccess, ttypes  # noqa: E402

V = ttypes.Value


def requests():
    uid = {'user_id': V(int_value=42)}
    page = ttypes.FetchRequest(
        context=ttypes.RequestContext(request_id='seed', principal='web', deadline_ms=300,
                                      trace=True, attributes={'locale': 'fr'}),
        calls={'flags': ttypes.LookupCall(lookup='flags', critical=True),
               'broken': ttypes.LookupCall(lookup='broken', timeout_ms=50),
               'user': ttypes.LookupCall(lookup='user', params=uid),
               'all': ttypes.LookupCall(lookup='flags', params={
                   'i': V(int_value=-1), 'r': V(real_value=1.5), 't': V(text_value='Zoë'),
                   'b': V(blob_value=b'\x00\xff'), 'n': V(null_value=True)})})
    yield 'ping', DataAccess.ping_args()
    yield 'lookups', DataAccess.lookups_args()
    yield 'fetch', DataAccess.fetch_args(request=page)
    yield 'fetch', DataAccess.fetch_args(request=ttypes.FetchRequest(calls={}))


def encode(name, args, proto, seqid):
    buf = TTransport.TMemoryBuffer()
    p = proto(buf)
    p.writeMessageBegin(name, TMessageType.CALL, seqid)
    args.write(p)
    p.writeMessageEnd()
    return buf.getvalue()


def main(gen, src, out):
    os.makedirs(os.path.join(out, 'wire'), exist_ok=True)
    os.makedirs(os.path.join(out, 'config'), exist_ok=True)
    n = 0
    protos = {'binary': TBinaryProtocol.TBinaryProtocol, 'compact': TCompactProtocol.TCompactProtocol}
    for i, (name, args) in enumerate(requests()):
        for pname, proto in protos.items():
            for prefix in ('', 'DataAccess:'):
                msg = encode(prefix + name, args, proto, i)
                for framed in (False, True):
                    data = struct.pack('!i', len(msg)) + msg if framed else msg
                    # The first byte picks how the fuzzer cuts the stream into pieces.
                    path = os.path.join(out, 'wire', '%s-%s-%s%s-%d' % (
                        name, pname, 'framed' if framed else 'unframed',
                        '-mux' if prefix else '', i))
                    with open(path, 'wb') as f:
                        f.write(bytes([i * 7 % 17]) + data)
                    n += 1
    for conf in glob.glob(os.path.join(src, 'deploy', '*.conf')):
        with open(conf, 'rb') as f, open(os.path.join(out, 'config', os.path.basename(conf)), 'wb') as g:
            g.write(f.read())
        n += 1
    print('make_seeds: %d seeds in %s' % (n, out))


if __name__ == '__main__':
    main(*sys.argv[1:4])

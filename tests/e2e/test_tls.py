"""TLS on the Thrift port (issue 6): with a certificate made by a CA made in the test, clients
speaking TLS are served in every wire format; a plain-TCP client is turned away without
disturbing them; with tls_client_ca only clients holding a certificate of that CA get in;
unusable key material stops start-up naming the file."""
import os
import signal
import ssl
import subprocess
import tempfile
import time
import unittest

import evdal_harness as h
from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.transport import TSSLSocket, TTransport
from evdal import DataAccess


def openssl(*args, cwd):
    subprocess.run(['openssl'] + list(args), cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1, and a client certificate, all signed by it."""
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=evdal test CA',
            '-keyout', 'ca.key', '-out', 'ca.pem', cwd=d)
    with open(os.path.join(d, 'san.ext'), 'w') as f:
        f.write('subjectAltName = IP:127.0.0.1\n')
    for who in ('server', 'client'):
        openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=%s' % who,
                '-keyout', who + '.key', '-out', who + '.csr', cwd=d)
        openssl('x509', '-req', '-in', who + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
                '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', who + '.pem', cwd=d)


class TlsTest(h.EvdalTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.TemporaryDirectory(prefix='evdal-pki-')
        cls.addClassCleanup(cls.pki.cleanup)
        make_pki(cls.pki.name)

    def path(self, name):
        return os.path.join(self.pki.name, name)

    def tls_client(self, srv, framed=True, compact=False, with_cert=False):
        ctx = ssl.create_default_context(cafile=self.path('ca.pem'))
        if with_cert:
            ctx.load_cert_chain(self.path('client.pem'), self.path('client.key'))
        sock = TSSLSocket.TSSLSocket(srv.host, srv.port, ssl_context=ctx, server_hostname='127.0.0.1')
        sock.setTimeout(5000)
        trans = TTransport.TFramedTransport(sock) if framed else TTransport.TBufferedTransport(sock)
        proto = (TCompactProtocol.TCompactProtocol if compact else TBinaryProtocol.TBinaryProtocol)(trans)
        trans.open()
        self.addCleanup(trans.close)
        return DataAccess.Client(proto)

    def config(self, client_ca=False, **server):
        extra = 'tls_cert = %s\ntls_key = %s\n' % (self.path('server.pem'), self.path('server.key'))
        if client_ca:
            extra += 'tls_client_ca = %s\n' % self.path('ca.pem')
        text = h.config(**server)
        return text.replace('[server]\n', '[server]\n' + extra, 1)

    def test_tls_clients_served_plain_ones_refused(self):
        with h.Server(self.config()) as srv:
            self.assertIn('TLS', srv.log_text())
            for framed, compact in ((True, False), (False, True)):
                c = self.tls_client(srv, framed, compact)
                self.assertPong(c)
                self.assertNapFetch(c, [20, 40])
            # A plain client's bytes are no TLS handshake: it is closed, others carry on.
            plain = srv.raw_socket()
            h.send_all(plain, h.ping_bytes(1))
            closed, replies = h.wait_closed(plain, timeout=5)
            self.assertTrue(closed)
            self.assertEqual(replies, [])
            self.assertPong(self.tls_client(srv))

    def test_handshake_begun_and_never_finished_is_closed_after_read_timeout(self):
        """A TLS handshake is the first request a client begins: half a ClientHello, then
        nothing, is slowloris, closed after read_timeout_ms like half a request in plain TCP (it
        was held until idle_timeout_ms, and forever with idle_timeout_ms = 0). A client that
        finished its handshake and then sends nothing is idle, not slow: it stays open."""
        with h.Server(self.config(read_timeout_ms=300, idle_timeout_ms=0)) as srv:
            idle = self.tls_client(srv)
            self.assertPong(idle)
            slow = srv.raw_socket()
            # A TLS record header announcing a 512-byte handshake message, and 3 bytes of it.
            h.send_all(slow, bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]))
            t0 = time.monotonic()
            closed, _ = h.wait_closed(slow, timeout=h.scaled(5))
            self.assertTrue(closed, 'a handshake left half-sent held its connection')
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
            self.assertPong(idle)  # the finished handshake's connection outlived the read timeout
            self.assertPong(self.tls_client(srv))

    def test_record_begun_and_never_finished_is_closed_after_read_timeout(self):
        """After a finished handshake, half the TLS record that carries a ping, then nothing:
        the request has begun, though nothing of it can be decrypted yet. It is closed within
        twice read_timeout_ms (it was held until idle_timeout_ms, and forever with 0)."""
        with h.Server(self.config(read_timeout_ms=300, idle_timeout_ms=0)) as srv:
            ctx = ssl.create_default_context(cafile=self.path('ca.pem'))
            raw = srv.raw_socket()
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname='127.0.0.1')
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    h.send_all(raw, outgoing.read())
                    data = raw.recv(65536)
                    self.assertTrue(data, 'closed during the handshake')
                    incoming.write(data)
            h.send_all(raw, outgoing.read())
            tls.write(h.ping_bytes(1))
            record = outgoing.read()
            h.send_all(raw, record[:len(record) // 2])
            t0 = time.monotonic()
            closed, _ = h.wait_closed(raw, timeout=h.scaled(5))
            self.assertTrue(closed, 'half a TLS record held its connection')
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
            self.assertPong(self.tls_client(srv))

    def test_mutual_tls(self):
        with h.Server(self.config(client_ca=True)) as srv:
            self.assertPong(self.tls_client(srv, with_cert=True))
            with self.assertRaises(Exception):
                c = self.tls_client(srv, with_cert=False)
                c.ping()  # TLS 1.3 may report the missing certificate only at the first read

    def test_sighup_reloads_a_tls_server(self):
        """The reload thread read no TLS key, so tls_cert, tls_key and tls_client_ca were
        "unknown keys" of the new file and every SIGHUP of a TLS server was refused. They are
        read (and read once, at start, like listen) now: the reload is applied, and a
        changed certificate is said to need a restart."""
        with h.Server(self.config(client_ca=True)) as srv:
            with open(srv.config_path, 'w') as f:
                f.write(self.config(client_ca=True).replace('delay_ms = 100', 'delay_ms = 7'))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reloaded .*evdal\.conf|reload refused: the config',
                                         10), srv.log_tail())
            self.assertNotIn('reload refused', srv.log_text())
            self.assertNotIn('take effect at the next restart', srv.log_text())
            c = self.tls_client(srv, with_cert=True)
            self.assertEqual(h.slept_ms(c.fetch(h.fetch_request({'n': h.nap_call()}))
                                        .results['n']), 7)
            # Changed TLS keys are applied at the next restart, and said to be.
            with open(srv.config_path, 'w') as f:
                f.write(self.config())
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'tls_client_ca changed; they take effect at the next '
                                         r'restart', 10), srv.log_tail())
            self.assertNotIn('reload refused', srv.log_text())
            # A key file that cannot be loaded is a problem of the new file.
            with open(srv.config_path, 'w') as f:
                f.write(self.config().replace('tls_cert = ', 'tls_cert = /nonexistent.pem\n#'))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reload refused: the config', 10), srv.log_tail())
            self.assertIn('[server] tls_cert: /nonexistent.pem', srv.log_text())
            self.assertPong(self.tls_client(srv, with_cert=True))

    def test_bad_key_material_stops_start_up(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, 'evdal.conf')
            with open(bad, 'w') as f:
                f.write(h.config().replace('[server]\n', '[server]\ntls_cert = %s\ntls_key = %s\n'
                                           % (self.path('server.pem'), self.path('client.key')), 1))
            r = h.run_evdal(['--config', bad, '--check-config'])
            self.assertEqual(r.returncode, 1)
            self.assertIn('[server] tls_key: %s' % self.path('client.key'), r.stderr)
            with open(bad, 'w') as f:
                f.write(h.config().replace('[server]\n', '[server]\ntls_cert = /nonexistent.pem\n'
                                           'tls_key = %s\n' % self.path('server.key'), 1))
            r = h.run_evdal(['--config', bad, '--check-config'])
            self.assertEqual(r.returncode, 1)
            self.assertIn('[server] tls_cert: /nonexistent.pem', r.stderr)


if __name__ == '__main__':
    unittest.main()

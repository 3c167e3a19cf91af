"""evdal-cli, the C command-line client (tools/evdal_cli.c), run as a subprocess against the
real server: ping, lookups, fetch as tables and as JSON, the --trace waterfall, the context
options, every transport and protocol, a unix socket, and each exit code (0..5) produced by a
real situation. Tables and JSON are checked against the same data read independently: SQLite
through Python's sqlite3, lookups() through the generated Python client."""
import configparser
import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import time
import unicodedata
import unittest

from thrift.Thrift import TMessageType, TType
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

import evdal_harness as h

CLI = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-cli')
SAMPLE_DB = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'sample.db')
SAMPLE_CONF = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal.conf')
LSAN_SUPP = os.path.join(h.EVDAL_SOURCE_DIR, 'tests', 'lsan.supp')

# A database of awkward values, made by the test: control characters, quotes, wide
# characters, a comma, blobs (one empty), reals, the int64 extremes and NULLs.
ODD_ROWS = [
    (1, 'plain', 0.1, b'\x00\xff\x10', None, 9223372036854775807),
    (2, 'tab\there "q" \\ back', -2.5e-300, b'', None, -9223372036854775808),
    (3, 'line1\nline2\x01\x1b', 1e300, None, None, 0),
    (4, '東京 😀 naïve', 3.0, b'\xde\xad\xbe\xef', None, 42),
    (5, 'a, b', None, None, None, None),
]

LOOKUPS = h.NAP_LOOKUP + """
[lookup flags]
backend = static
columns = flag, enabled
row.1 = checkout, 1
row.2 = dark_mode, 0
description = Feature flags

""" + h.FAULT_LOOKUPS + """
[database odd]
path = @TMPDIR@/odd.db
workers = 2

[lookup odd]
database = odd
sql = SELECT id, label, r, b, n, big FROM odd ORDER BY id

[lookup odd_by_label]
database = odd
sql = SELECT id FROM odd WHERE label = :label

[lookup odd_by_blob]
database = odd
sql = SELECT id FROM odd WHERE b = :b

[lookup odd_by_real]
database = odd
sql = SELECT id FROM odd WHERE r = :r
"""

MAX_CALLS = 8


def make_odd_db(path):
    db = sqlite3.connect(path)
    db.execute('CREATE TABLE odd (id INTEGER PRIMARY KEY, label TEXT, r REAL, b BLOB, n, big INTEGER)')
    db.executemany('INSERT INTO odd VALUES (?, ?, ?, ?, ?, ?)', ODD_ROWS)
    db.commit()
    db.close()


def display(value):
    """A SQLite value as the CLI's tables show it."""
    if value is None:
        return 'NULL'
    if isinstance(value, bytes):
        return "x'%s'" % value.hex()
    if isinstance(value, float):
        for digits in (15, 16, 17):
            text = '%.*g' % (digits, value)
            if float(text) == value:
                break
        return text if any(c in text for c in '.eE') else text + '.0'
    return str(value)


def json_value(value):
    """A SQLite value as the CLI's JSON has it."""
    if isinstance(value, bytes):
        return {'hex': value.hex()}
    return value


def width(text):
    """Columns a terminal gives `text` (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in 'WF' else 1 for c in text)


def parse_sections(out):
    """The text output of fetch: {heading: ('table', columns, rows, footer)} or
    {heading: ('error', kind, message)}. Tables must be drawn with --ascii and hold no '|'."""
    sections = {}
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r'^(\S.*?): ERROR (\w+): (.*)$', line)
        if m:
            sections[m.group(1)] = ('error', m.group(2), m.group(3))
            i += 1
            continue
        m = re.match(r'^(\S.*):$', line)
        if not m:
            i += 1
            continue
        heading, grid = m.group(1), []
        i += 1
        while not re.match(r'^\(\d+ rows?\)$', lines[i]):
            if lines[i].startswith('|'):
                grid.append([c.strip() for c in lines[i][1:-1].split('|')])
            i += 1
        sections[heading] = ('table', grid[0], grid[1:], lines[i])
        i += 1
    return sections


WATERFALL_LINE = re.compile(r'^(\S+)\s+(\S+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+\|([# ]+)\|(.*)$')


def parse_waterfall(out):
    """The lines of the --trace waterfall (drawn with --ascii) after its title."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('trace of request '))
    self_check = lines[start + 1].split()
    assert self_check[:3] == ['call', 'lookup', 'backend'], lines[start + 1]
    rows = []
    for line in lines[start + 2:]:
        m = WATERFALL_LINE.match(line)
        assert m, 'not a waterfall line: %r' % line
        rows.append({'key': m.group(1), 'lookup': m.group(2), 'backend': m.group(3),
                     'start_ms': float(m.group(4)), 'dur_ms': float(m.group(5)),
                     'bar': m.group(6), 'note': m.group(7).strip()})
    return lines[start], rows


cli_env = h.cli_env


class CliCase(h.EvdalTestCase):
    server = None

    def cli(self, *args, server=None, timeout=30, env=None, address=True):
        server = server or self.server
        argv = [CLI]
        if address and server is not None:
            if server.unix_path:
                argv += ['--unix', server.unix_path]
            else:
                argv += ['--host', server.host, '--port', str(server.port)]
        e = cli_env()
        e.update(env or {})
        return subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, env=e)

    def assertExit(self, p, code):
        self.assertEqual(p.returncode, code, 'exit %d, expected %d\nstdout:\n%s\nstderr:\n%s'
                         % (p.returncode, code, p.stdout, p.stderr))


class CliTest(CliCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config(lookups=LOOKUPS, deadline_ms=3000, max_calls=MAX_CALLS))
        make_odd_db(os.path.join(cls.server.tmpdir, 'odd.db'))
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    # ---- ping, lookups ----

    def test_ping(self):
        p = self.cli('ping')
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, 'pong\n')
        p = self.cli('--json', 'ping')
        self.assertExit(p, 0)
        doc = json.loads(p.stdout)
        self.assertEqual(doc['ping'], 'pong')
        self.assertGreaterEqual(doc['ms'], 0)

    def test_lookups_table_and_json_match_the_server(self):
        c, t = h.client(self.server)
        self.addCleanup(t.close)
        infos = c.lookups()
        configured = re.findall(r'^\[lookup (\S+)\]$', LOOKUPS, re.M)
        self.assertEqual([i.name for i in infos], configured)

        p = self.cli('--ascii', 'lookups')
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        grid = [[c.strip() for c in l[1:-1].split('|')] for l in lines if l.startswith('|')]
        self.assertEqual(grid[0], ['name', 'backend', 'params', 'timeout_ms', 'description'])
        self.assertEqual(grid[1:], [[i.name, i.backend, ', '.join(i.params), str(i.timeout_ms),
                                     i.description] for i in infos])
        self.assertEqual(lines[-1], '(%d rows)' % len(infos))

        p = self.cli('--json', 'lookups')
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout)['lookups'],
                         [{'name': i.name, 'backend': i.backend, 'params': list(i.params),
                           'timeout_ms': i.timeout_ms, 'description': i.description}
                          for i in infos])

    # ---- fetch: tables ----

    def test_fetch_one_call_with_a_param(self):
        p = self.cli('--ascii', 'fetch', 'nap', 'delay_ms=5')
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, 'nap:\n'
                                   '+----------+\n'
                                   '| slept_ms |\n'
                                   '+----------+\n'
                                   '|        5 |\n'
                                   '+----------+\n'
                                   '(1 row)\n')
        self.assertEqual(p.stderr, '')

    def test_fetch_odd_values_as_a_table(self):
        p = self.cli('--ascii', 'fetch', 'odd')
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0], 'odd:')
        self.assertEqual(lines[-1], '(%d rows)' % len(ODD_ROWS))
        # Every line of the grid is as wide as the others, wide characters included.
        grid = lines[1:-1]
        self.assertEqual(len({width(l) for l in grid}), 1, '\n'.join(grid))
        for row in ODD_ROWS:
            line = next(l for l in grid if re.match(r'^\|\s+%d \|' % row[0], l))
            for value in row[2:]:
                self.assertIn(' %s ' % display(value), line)
        # Control characters are shown, not let loose on the terminal; text passes as UTF-8.
        self.assertIn('line1\\nline2\\x01\\x1b', p.stdout)
        self.assertIn('tab\\there "q" \\ back', p.stdout)
        self.assertIn('東京 😀 naïve', p.stdout)
        self.assertIn("x''", p.stdout)
        self.assertIn('1e+300', p.stdout)
        self.assertRegex(p.stdout, r'\|\s+3\.0 \|')
        self.assertNotIn('\x1b', p.stdout)

    def test_box_drawing_in_a_utf8_locale(self):
        p = self.cli('fetch', 'odd', env={'LC_ALL': 'C.UTF-8'})
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[1].startswith('┌') and lines[1].endswith('┐'), lines[1])
        self.assertTrue(lines[3].startswith('├'), lines[3])
        self.assertTrue(lines[-2].startswith('└'), lines[-2])
        self.assertEqual(len({width(l) for l in lines[1:-1]}), 1, p.stdout)

    def test_several_calls_in_order_with_keys_and_errors(self):
        p = self.cli('--ascii', 'fetch', '--call', 'flags', '--call', 'a=nap:delay_ms=1',
                     '--call', 'nap:delay_ms=2', '--call', 'nap:delay_ms=3', '--call', 'broken',
                     '--call', 'nope')
        self.assertExit(p, 1)
        headings = [l[:-1] for l in p.stdout.splitlines() if re.match(r'^\S.*:$', l)]
        self.assertEqual(headings, ['flags', 'a (nap)', 'nap', 'nap#2 (nap)'])
        s = parse_sections(p.stdout)
        self.assertEqual(s['flags'][1:3], (['flag', 'enabled'], [['checkout', '1'],
                                                                 ['dark_mode', '0']]))
        self.assertEqual(s['flags'][3], '(2 rows)')
        self.assertEqual([s[k][2] for k in ('a (nap)', 'nap', 'nap#2 (nap)')],
                         [[['1']], [['2']], [['3']]])
        self.assertEqual(s['broken'][:2], ('error', 'BACKEND'))
        self.assertIn('injected failure', s['broken'][2])
        self.assertEqual(s['nope'][:2], ('error', 'UNKNOWN_LOOKUP'))
        self.assertIn('2 of 6 calls failed', p.stderr)

    def test_typed_params(self):
        # A comma inside a --call value is escaped; x'..' is a blob; 0.1 a real; :text forces.
        p = self.cli('--json', 'fetch', '--call', 'l=odd_by_label:label=a\\, b',
                     '--call', 'b=odd_by_blob:b=x\'deadbeef\'', '--call', 'r=odd_by_real:r=0.1',
                     '--call', 'bt=odd_by_blob:b:blob=00ff10', '--call', 'n=nap:delay_ms:text=5')
        self.assertExit(p, 1)
        res = json.loads(p.stdout)['results']
        self.assertEqual(res['l']['rows'], [[5]])
        self.assertEqual(res['b']['rows'], [[4]])
        self.assertEqual(res['r']['rows'], [[1]])
        self.assertEqual(res['bt']['rows'], [[1]])
        self.assertEqual(res['n']['error']['kind'], 'BAD_PARAMS')
        self.assertIn('text', res['n']['error']['message'])
        # The positional form takes any text, commas included.
        p = self.cli('--json', 'fetch', 'odd_by_label', 'label=tab\there "q" \\ back')
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout)['results']['odd_by_label']['rows'], [[2]])

    # ---- fetch: JSON ----

    def test_json_of_odd_values(self):
        p = self.cli('--json', 'fetch', 'odd', '--request-id', 'json-1')
        self.assertExit(p, 0)
        doc = json.loads(p.stdout)
        self.assertEqual(doc['request_id'], 'json-1')
        self.assertIs(doc['ok'], True)
        self.assertGreater(doc['server_us'], 0)
        odd = doc['results']['odd']
        self.assertEqual(odd['lookup'], 'odd')
        self.assertEqual(odd['columns'], ['id', 'label', 'r', 'b', 'n', 'big'])
        self.assertEqual(odd['rows'], [[json_value(v) for v in row] for row in ODD_ROWS])
        # Reals stay reals (3.0 is not 3), ints stay ints.
        self.assertIsInstance(odd['rows'][3][2], float)
        self.assertIsInstance(odd['rows'][0][5], int)
        self.assertNotIn('span', odd)

    def test_json_with_errors_and_spans(self):
        p = self.cli('--json', 'fetch', '--trace', '--call', 'broken', '--call', 'n=nap:delay_ms=30')
        self.assertExit(p, 1)
        doc = json.loads(p.stdout)
        self.assertIs(doc['ok'], False)
        self.assertEqual(doc['results']['broken']['error']['kind'], 'BACKEND')
        self.assertNotIn('rows', doc['results']['broken'])
        span = doc['results']['n']['span']
        self.assertEqual(span['backend'], 'delay:nap')
        self.assertGreaterEqual(span['end_us'] - span['start_us'], 29000)

    # ---- the context ----

    def test_context_options_reach_the_lookup(self):
        p = self.cli('--json', 'fetch', 'ctx', '--request-id', 'r-42', '--principal', 'alice',
                     '--attr', 'locale=de_CH', '--attr', 'tenant=t1', '--deadline-ms', '1500',
                     '--trace')
        self.assertExit(p, 0)
        cols = json.loads(p.stdout)['results']['ctx']
        row = dict(zip(cols['columns'], cols['rows'][0]))
        self.assertEqual(row['request_id'], 'r-42')
        self.assertEqual(row['principal'], 'alice')
        self.assertEqual(row['trace'], 1)
        self.assertEqual(row['attributes'], 'locale=de_CH;tenant=t1;')
        self.assertGreater(row['deadline_left_ms'], 1000)
        self.assertLessEqual(row['deadline_left_ms'], 1500)

    def test_call_timeout_and_deadline(self):
        t0 = time.monotonic()
        p = self.cli('--json', 'fetch', '--call-timeout-ms', '100', '--call', 'stuck',
                     '--call', 'nap:delay_ms=10')
        self.assertExit(p, 1)
        self.assertLess(time.monotonic() - t0, h.scaled(2.5))
        res = json.loads(p.stdout)['results']
        self.assertEqual(res['stuck']['error']['kind'], 'TIMEOUT')
        self.assertEqual(res['nap']['rows'], [[10]])
        p = self.cli('--json', 'fetch', 'stuck', '--deadline-ms', '150')
        self.assertExit(p, 1)
        self.assertEqual(json.loads(p.stdout)['results']['stuck']['error']['kind'], 'TIMEOUT')

    # ---- --trace ----

    def test_trace_waterfall(self):
        delays = {'a': 50, 'b': 150, 'c': 100}
        p = self.cli('--ascii', 'fetch', '--trace', '--request-id', 'wf-1',
                     *sum([['--call', '%s=nap:delay_ms=%d' % kd] for kd in delays.items()], []),
                     '--call', 'broken')
        self.assertExit(p, 1)
        title, rows = parse_waterfall(p.stdout)
        self.assertTrue(title.startswith('trace of request wf-1: 4 calls, '), title)
        self.assertEqual([r['key'] for r in rows], ['a', 'b', 'c', 'broken'])
        total = max(r['start_ms'] + r['dur_ms'] for r in rows)
        for r in rows:
            self.assertEqual(len(r['bar']), 50, r)        # a fixed 50 columns into a pipe
            filled = r['bar'].strip()
            self.assertTrue(filled and set(filled) == {'#'}, r)  # one contiguous bar
            if r['key'] in delays:
                self.assertEqual((r['lookup'], r['backend']), ('nap', 'delay:nap'))
                self.assertGreaterEqual(r['dur_ms'], delays[r['key']] - 1, r)
                self.assertLess(r['dur_ms'], delays[r['key']] + h.scaled(80), r)
                self.assertLessEqual(abs(len(filled) - 50 * r['dur_ms'] / total), 2, r)
                self.assertEqual(r['note'], '')
        broken = rows[3]
        self.assertEqual((broken['backend'], broken['note']), ('fault:broken', 'BACKEND'))
        # The axis runs to the last span's end, so the call that ends last reaches its right
        # edge. (How much of the axis that call fills depends on when its loop started it, which
        # a loaded machine delays: once 47 of 50 columns were asked for here, and it flaked.)
        last = max(rows, key=lambda r: r['start_ms'] + r['dur_ms'])
        self.assertGreaterEqual(len(last['bar'].rstrip()), 49, last)
        self.assertEqual(max(rows, key=lambda r: len(r['bar'].strip()))['key'], 'b')

    def test_trace_shows_the_trace_id_the_server_used(self):
        """--trace starts a sampled W3C trace: its id is in the JSON and the waterfall's title,
        and is the one the server handed its backends (the ctx lookup shows it)."""
        p = self.cli('--json', 'fetch', 'ctx', '--trace')
        self.assertExit(p, 0)
        doc = json.loads(p.stdout)
        self.assertRegex(doc['trace_id'], r'^[0-9a-f]{32}$')
        cols = doc['results']['ctx']
        row = dict(zip(cols['columns'], cols['rows'][0]))
        self.assertRegex(row['traceparent'], r'^00-%s-[0-9a-f]{16}-01$' % doc['trace_id'])
        p = self.cli('--ascii', 'fetch', '--trace', '--call', 'nap:delay_ms=1')
        self.assertExit(p, 0)
        title, _ = parse_waterfall(p.stdout)
        self.assertRegex(title, r', trace id [0-9a-f]{32}$')
        p = self.cli('--json', 'fetch', 'ctx')  # no --trace: no trace id of the client's
        self.assertNotIn('trace_id', json.loads(p.stdout))

    def test_trace_waterfall_shows_odd_keys_as_the_tables_do(self):
        """Keys, lookup names and the request id go into the waterfall as into a table's
        heading: control characters escaped, bytes that are not UTF-8 replaced. They went in
        raw: the terminal got the escape sequences, and a lookup name ending in the lead byte
        of a 4-byte character (the one argument GOption does not convert) was measured past
        its end."""
        p = subprocess.run([CLI, '--host', self.server.host, '--port', str(self.server.port),
                            '--ascii', 'fetch', 'n\udcf0', '--trace', '--request-id', 'wf\x1b[1m',
                            '--call', 'e\x1b[2Jx=nap:delay_ms=1'],  # \udcf0: the byte 0xf0
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                           env=cli_env())
        self.assertExit(p, 1)
        out = p.stdout.decode('utf-8')  # every byte of it UTF-8
        self.assertNotIn('\x1b', out)
        title, rows = parse_waterfall(out)
        self.assertTrue(title.startswith('trace of request wf\\x1b[1m: 2 calls, '), title)
        self.assertEqual([(r['key'], r['lookup']) for r in rows],
                         [('n\ufffd', 'n\ufffd'), ('e\\x1b[2Jx', 'nap')])
        lines = out.splitlines()
        start = next(i for i, l in enumerate(lines) if l.startswith('trace of request '))
        # The bars start in one column: names are padded by their shown width.
        self.assertEqual(len({l.index('|') for l in lines[start + 2:]}), 1, out)

    def test_a_malformed_traceparent_attr_keeps_the_json_valid(self):
        """A traceparent of the caller's (--attr) is shown as a trace id only when it has one:
        32 characters with a quote and a backslash once went into the JSON unescaped."""
        tp = '00-"quoted" and a back\\slash here!!-00f067aa0ba902b7-01'
        p = self.cli('--json', 'fetch', 'ctx', '--attr', 'traceparent=' + tp)
        self.assertExit(p, 0)
        self.assertNotIn('trace_id', json.loads(p.stdout))
        p = self.cli('--ascii', 'fetch', 'nap', '--trace', '--attr', 'traceparent=' + tp)
        self.assertExit(p, 0)
        self.assertNotIn('trace id', p.stdout)
        good = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
        p = self.cli('--json', 'fetch', 'ctx', '--attr', 'traceparent=' + good)
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout)['trace_id'], '4bf92f3577b34da6a3ce929d0e0e4736')

    def test_trace_without_spans_of_unknown_lookups(self):
        p = self.cli('--ascii', 'fetch', '--trace', '--call', 'nope', '--call', 'nap:delay_ms=1')
        self.assertExit(p, 1)
        _, rows = parse_waterfall(p.stdout)
        self.assertEqual([r['key'] for r in rows], ['nope', 'nap'])
        self.assertEqual(rows[0]['note'], 'UNKNOWN_LOOKUP')

    # ---- transports and protocols ----

    def test_every_transport_and_protocol(self):
        for flags in ([], ['--framed', '--binary'], ['--compact'], ['--buffered'],
                      ['--buffered', '--compact'], ['--service', 'DataAccess'],
                      ['--buffered', '--compact', '--service', 'DataAccess']):
            with self.subTest(flags=flags):
                p = self.cli(*flags, 'ping')
                self.assertExit(p, 0)
                self.assertEqual(p.stdout, 'pong\n')
                p = self.cli(*flags, '--json', 'fetch', 'odd', '--call', 'n=nap:delay_ms=3')
                self.assertExit(p, 0)
                res = json.loads(p.stdout)['results']
                self.assertEqual(res['odd']['rows'], [[json_value(v) for v in row]
                                                      for row in ODD_ROWS])
                self.assertEqual(res['n']['rows'], [[3]])
                p = self.cli(*flags, '--json', 'lookups')
                self.assertExit(p, 0)
                self.assertEqual(len(json.loads(p.stdout)['lookups']),
                                 len(re.findall(r'^\[lookup ', LOOKUPS, re.M)))

    # ---- exit codes ----

    def test_exit_1_a_call_failed(self):
        p = self.cli('fetch', 'broken')
        self.assertExit(p, 1)
        self.assertIn('ERROR BACKEND', p.stdout)
        self.assertIn('1 of 1 call failed', p.stderr)

    def test_exit_2_usage(self):
        cases = [
            [],                                        # no command
            ['frobnicate'],                            # unknown command
            ['--frob', 'ping'],                        # unknown option
            ['ping', 'extra'],                         # ping takes no arguments
            ['ping', '--trace'],                       # a fetch option elsewhere
            ['fetch'],                                 # no call
            ['fetch', 'nap', 'delay_ms'],              # not NAME=VALUE
            ['fetch', 'nap', 'delay_ms=99999999999999999999'],   # does not fit int64
            ['fetch', 'nap', 'delay_ms:int=soon'],     # not an int
            ['fetch', 'nap', 'x=1', 'x=2'],            # a param twice
            ['fetch', '--call', 'odd_by_blob:b=x\'abc\''],   # odd number of hex digits
            ['fetch', '--call', 'k=nap', '--call', 'k=flags'],  # a key twice
            ['fetch', 'nap', '--critical=nope'],       # no such key
            ['--framed', '--buffered', 'ping'],        # two transports
            ['--port', '0', 'ping'],
            ['fetch', 'nap', '--deadline-ms', '0'],
        ]
        for args in cases:
            with self.subTest(args=args):
                p = self.cli(*args)
                self.assertExit(p, 2)
                self.assertEqual(p.stdout, '')
                self.assertTrue(p.stderr.startswith('evdal-cli: '), p.stderr)
        p = self.cli('--help', address=False)
        self.assertExit(p, 0)
        for code in range(6):
            self.assertRegex(p.stdout, r'(?m)^  %d  \S' % code)

    def test_exit_3_closed_port(self):
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
        s.close()
        for args in (['ping'], ['--json', 'fetch', 'nap']):
            p = self.cli('--port', str(port), *args, address=False)
            self.assertExit(p, 3)
            self.assertEqual(p.stdout, '')
            self.assertIn('cannot connect to 127.0.0.1:%d' % port, p.stderr)

    def test_exit_3_timeout(self):
        t0 = time.monotonic()
        p = self.cli('--timeout-ms', '300', 'fetch', 'stuck')
        elapsed = time.monotonic() - t0
        self.assertExit(p, 3)
        self.assertIn('no answer within 300 ms', p.stderr)
        self.assertGreaterEqual(elapsed, 0.29)
        self.assertLess(elapsed, h.scaled(2.5))
        # The server noticed the client leave and still answers others.
        self.assertExit(self.cli('ping'), 0)

    def test_exit_3_not_a_thrift_server(self):
        """A peer that answers garbage, and one that hangs up without answering."""
        for reply in (b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n', b''):
            with self.subTest(reply=reply):
                def serve(conn, reply=reply):
                    conn.recv(65536)
                    conn.sendall(reply)
                port = h.one_shot_server(self, serve)
                p = self.cli('--port', str(port), 'ping', address=False)
                self.assertExit(p, 3)
                self.assertIn('ping: no valid reply', p.stderr)

    def test_exit_3_reply_of_the_wrong_element_types(self):
        """A fetch reply whose results map holds i32s, not LookupResults: the reply is checked
        against fetch's result schema before c_glib reads it (whose generated decoders never
        compare element types, and would read the i32's bytes as a LookupResult)."""
        def serve(conn):
            (n,) = struct.unpack('>i', h.recv_exact(conn, 4, timeout=10))
            req = TBinaryProtocol.TBinaryProtocol(
                TTransport.TMemoryBuffer(h.recv_exact(conn, n, timeout=10)))
            _, _, seqid = req.readMessageBegin()
            buf = TTransport.TMemoryBuffer()
            p = TBinaryProtocol.TBinaryProtocol(buf)
            p.writeMessageBegin('fetch', TMessageType.REPLY, seqid)
            p.writeStructBegin('fetch_result')
            p.writeFieldBegin('success', TType.STRUCT, 0)
            p.writeStructBegin('FetchResponse')
            p.writeFieldBegin('request_id', TType.STRING, 1)
            p.writeString('r')
            p.writeFieldBegin('results', TType.MAP, 2)
            p.writeMapBegin(TType.STRING, TType.I32, 1)
            p.writeString('nap')
            p.writeI32(0)
            p.writeFieldStop()
            p.writeFieldStop()
            p.writeMessageEnd()
            data = buf.getvalue()
            conn.sendall(struct.pack('>i', len(data)) + data)
        port = h.one_shot_server(self, serve)
        p = self.cli('--port', str(port), 'fetch', 'nap', address=False)
        self.assertExit(p, 3)
        self.assertIn('fetch: no valid reply', p.stderr)

    def test_exit_4_critical_call_failed(self):
        t0 = time.monotonic()
        p = self.cli('fetch', '--call', 'must=broken', '--call', 'stuck', '--critical=must')
        self.assertExit(p, 4)
        self.assertLess(time.monotonic() - t0, h.scaled(2.5), 'the stuck call was not cancelled')
        self.assertEqual(p.stdout, '')
        self.assertIn('LookupFailed', p.stderr)
        self.assertIn('must (lookup broken)', p.stderr)
        self.assertIn('BACKEND', p.stderr)
        p = self.cli('--json', 'fetch', 'broken', '--critical')
        self.assertExit(p, 4)
        self.assertEqual(json.loads(p.stdout), {'exception': {
            'type': 'LookupFailed', 'call': 'broken', 'lookup': 'broken',
            'error': {'kind': 'BACKEND', 'message': 'injected failure'}}})
        # Not critical: the same failure is a result, and exit 1.
        self.assertExit(self.cli('fetch', 'broken'), 1)

    def test_exit_4_shows_the_message_as_a_result_does(self):
        """A LookupFailed's message on stderr is escaped as the same error in a table is: the
        server's message holds what the caller typed (here a param name with an escape)."""
        p = self.cli('fetch', 'ctx', 'na\x1b[7mme=1', '--critical')
        self.assertExit(p, 4)
        self.assertNotIn('\x1b', p.stderr)
        self.assertIn('LookupFailed', p.stderr)
        self.assertIn('BAD_PARAMS', p.stderr)
        self.assertIn('na\\x1b[7mme', p.stderr)
        p = self.cli('--ascii', 'fetch', 'ctx', 'na\x1b[7mme=1')  # the same, as a result
        self.assertExit(p, 1)
        self.assertIn('na\\x1b[7mme', p.stdout)

    def test_exit_4_invalid_request(self):
        calls = sum([['--call', 'k%d=nap:delay_ms=1' % i] for i in range(MAX_CALLS + 1)], [])
        p = self.cli('--json', 'fetch', *calls)
        self.assertExit(p, 4)
        exc = json.loads(p.stdout)['exception']
        self.assertEqual(exc['type'], 'InvalidRequest')
        self.assertIn('max_calls', exc['message'])
        self.assertIn('InvalidRequest', p.stderr)

    def test_exit_5_application_exception(self):
        # The only TApplicationException a well-formed client can draw: a service name the
        # server does not have, through the multiplexed protocol.
        p = self.cli('--service', 'NoSuchService', 'ping')
        self.assertExit(p, 5)
        self.assertIn('TApplicationException UNKNOWN_METHOD', p.stderr)
        self.assertIn('NoSuchService', p.stderr)
        p = self.cli('--json', '--service', 'NoSuchService', 'fetch', 'nap')
        self.assertExit(p, 5)
        exc = json.loads(p.stdout)['exception']
        self.assertEqual((exc['type'], exc['kind']), ('TApplicationException', 'UNKNOWN_METHOD'))


class CliUnixOverloadedTest(CliCase):
    """A server on a unix socket that admits one fetch at a time."""

    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(h.config(listen='@TMPDIR@/evdal.sock', max_inflight=1,
                                       admin_listen='127.0.0.1:0'))
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def test_unix_socket(self):
        self.assertIsNotNone(self.server.unix_path)
        p = self.cli('ping')
        self.assertExit(p, 0)
        p = self.cli('--compact', '--buffered', '--json', 'fetch', 'nap', 'delay_ms=7')
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout)['results']['nap']['rows'], [[7]])

    def test_exit_4_overloaded(self):
        argv = [CLI, '--unix', self.server.unix_path, 'fetch', 'nap', 'delay_ms=3000']
        slow = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=cli_env())
        try:
            # The slow fetch has taken the only place; probing sooner could take it from
            # under it.
            self.server.wait_metric('evdal_inflight_requests', 1)
            p = self.cli('--json', 'fetch', 'nap', 'delay_ms=1')
            self.assertExit(p, 4)
            exc = json.loads(p.stdout)['exception']
            self.assertEqual(exc['type'], 'Overloaded')
            self.assertGreater(exc['retry_after_ms'], 0)
            self.assertIn('Overloaded', p.stderr)
        finally:
            self.assertEqual(slow.wait(10), 0)


@unittest.skipUnless(os.path.exists(SAMPLE_DB), 'deploy/sample.db not built (tools/dev.sh builds it)')
class CliSampleDbTest(CliCase):
    """deploy/evdal.conf on the sample web-shop database: what the CLI prints is what SQLite
    has."""

    @classmethod
    def setUpClass(cls):
        with open(SAMPLE_CONF) as f:
            text = f.read()
        text = re.sub(r'^listen\s*=.*$', 'listen = 127.0.0.1:0', text, flags=re.M)
        text = re.sub(r'^path\s*=\s*sample\.db\b', 'path = ' + SAMPLE_DB, text, flags=re.M)
        # No admin port: the line goes, as "admin_listen =   # comment" reads the comment.
        text = re.sub(r'^admin_listen\s*=.*$', '', text, flags=re.M)
        cp = configparser.ConfigParser(inline_comment_prefixes=('#',), interpolation=None)
        cp.read_string(text)
        cls.sql = {s[len('lookup '):]: cp[s]['sql'] for s in cp.sections()
                   if s.startswith('lookup ') and 'sql' in cp[s]}
        cls.server = h.Server(text)
        cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)
        cls.db = sqlite3.connect('file:%s?mode=ro' % SAMPLE_DB, uri=True)
        cls.addClassCleanup(cls.db.close)
        # A user whose rows have every kind of value: a blob avatar, NULL and real discounts.
        cls.user_id = cls.db.execute(
            'SELECT o.user_id FROM orders o JOIN accounts a ON a.user_id = o.user_id '
            'WHERE a.avatar IS NOT NULL GROUP BY o.user_id '
            'HAVING count(o.discount) > 0 AND count(o.discount) < count(*) LIMIT 1').fetchone()[0]

    def expected(self, lookup):
        cur = self.db.execute(self.sql[lookup], {'user_id': self.user_id})
        return [d[0] for d in cur.description], cur.fetchall()

    def test_fetch_user_table(self):
        p = self.cli('--ascii', 'fetch', 'user', 'user_id=%d' % self.user_id)
        self.assertExit(p, 0)
        cols, rows = self.expected('user')
        self.assertEqual(len(rows), 1)
        kind, got_cols, got_rows, footer = parse_sections(p.stdout)['user']
        self.assertEqual(got_cols, cols)
        self.assertEqual(got_rows, [[display(v) for v in row] for row in rows])
        self.assertEqual(footer, '(1 row)')

    def test_fetch_page_tables_and_json(self):
        page = ['user', 'account', 'recent_orders', 'permissions']
        calls = sum([['--call', '%s:user_id=%d' % (l, self.user_id)] for l in page], [])
        p = self.cli('--ascii', 'fetch', *calls)
        self.assertExit(p, 0)
        sections = parse_sections(p.stdout)
        self.assertEqual(list(sections), page)
        for lookup in page:
            cols, rows = self.expected(lookup)
            _, got_cols, got_rows, footer = sections[lookup]
            self.assertEqual(got_cols, cols, lookup)
            self.assertEqual(got_rows, [[display(v) for v in row] for row in rows], lookup)
            self.assertEqual(footer, '(%d row%s)' % (len(rows), '' if len(rows) == 1 else 's'))
        self.assertIn('NULL', sum(sections['recent_orders'][2], []))
        self.assertTrue(sections['account'][2][0][4].startswith("x'"))

        p = self.cli('--json', '--compact', 'fetch', *calls)
        self.assertExit(p, 0)
        results = json.loads(p.stdout)['results']
        self.assertEqual(list(results), page)
        for lookup in page:
            cols, rows = self.expected(lookup)
            self.assertEqual(results[lookup]['columns'], cols)
            self.assertEqual(results[lookup]['rows'],
                             [[json_value(v) for v in row] for row in rows], lookup)

    def test_unknown_user_is_zero_rows(self):
        p = self.cli('--ascii', 'fetch', 'user', 'user_id=-1')
        self.assertExit(p, 0)
        _, cols, rows, footer = parse_sections(p.stdout)['user']
        self.assertEqual((cols, rows, footer), (self.expected('user')[0], [], '(0 rows)'))


if __name__ == '__main__':
    unittest.main()

"""The command line: --help, --version, --check-config on good and bad files, start-up refusing a bad
configuration, --listen overriding the configuration."""
import os
import re
import shutil
import tempfile
import unittest

import evdal_harness as h

# Line numbers matter: the expected messages below name them.
BAD_CONFIG = """\
# evdal configuration with several mistakes
[server]
listen = 127.0.0.1:0
workers = 4
max_connections = lots
max_calls = 64   # an inline comment is fine
max_frobs = 12
deadline_ms = -7

[lookup nap]
backend = delay
delay_ms = 100

[lookup beam]
backend = teleport

[lookup nobackend]
description = Has no backend

[frobnicate]
x = 1
"""

BAD_CONFIG_EXPECT = [
    # (line, group, key or None)
    (5, 'server', 'max_connections'),
    (7, 'server', 'max_frobs'),
    (8, 'server', 'deadline_ms'),
    (15, 'lookup beam', 'backend'),
    (None, 'lookup nobackend', None),
    (20, 'frobnicate', None),
]

GOOD_CONFIG = """\
# every [server] key of the contract, with comments after values
[server]
listen = 127.0.0.1:0          # host:port
io_threads = 0                # one loop per core
workers = 4
max_connections = 10000
max_frame_bytes = 16777216
max_calls = 64
max_inflight = 100000
deadline_ms = 1000
idle_timeout_ms = 300000
shutdown_timeout_ms = 10000

[lookup nap]
backend = delay
delay_ms = 100     # a call's int param delay_ms overrides
description = Sleeps, then answers
"""


class CliTest(h.EvdalTestCase):
    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='evdal-cli-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)

    def write(self, name, text):
        path = os.path.join(self.tmpdir, name)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def test_version(self):
        r = h.run_evdal(['--version'])
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertIn('evdal', out)
        self.assertRegex(out, r'\d+\.\d+')

    def test_help(self):
        r = h.run_evdal(['--help'])
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        for option in ('--config', '--listen', '--check-config', '--version'):
            self.assertRegex(r.stdout, r'(?m)^\s+(-\w, )?%s\b' % re.escape(option),
                             'no %s in --help:\n%s' % (option, out))
        self.assertNotIn('listening on', out)

    def test_check_config_sample(self):
        path = os.path.join(h.EVDAL_SOURCE_DIR, 'deploy', 'evdal.conf')
        self.assertTrue(os.path.exists(path), '%s is missing' % path)
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        self.assertTrue(any(l.rstrip().endswith('OK') for l in lines), r.stdout + r.stderr)

    def test_check_config_good(self):
        path = self.write('good.conf', GOOD_CONFIG)
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(any(l.rstrip().endswith('OK') for l in (r.stdout + r.stderr).splitlines()),
                        r.stdout + r.stderr)

    def test_sections_name_their_backend(self):
        """[database X] and [upstream X] say which backend kind serves them (a database without
        `backend =` is SQLite): an unknown kind is refused with the file, line and key even
        when no lookup names the section, and a lookup naming a section takes its kind."""
        path = self.write('sections.conf', h.config(lookups="""\
[database typo]
backend = postgress

[upstream recs]
backend = gopher

[lookup nap]
backend = delay
"""))
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r'(?m)^%s:\d+: \[database typo\] backend: unknown backend '
                         r'"postgress" \(known: .*sqlite' % re.escape(path))
        self.assertRegex(r.stderr, r'(?m)^%s:\d+: \[upstream recs\] backend: unknown backend '
                         r'"gopher"' % re.escape(path))

    def check_bad_messages(self, path, stderr):
        for line, group, key in BAD_CONFIG_EXPECT:
            if line is None:
                rx = r'^%s:\d+: \[%s\]' % (re.escape(path), re.escape(group))
            elif key is None:
                rx = r'^%s:%d: \[%s\]' % (re.escape(path), line, re.escape(group))
            else:
                rx = r'^%s:%d: \[%s\] %s: \S' % (re.escape(path), line, re.escape(group),
                                                re.escape(key))
            self.assertRegex(stderr, re.compile(rx, re.M), 'no problem reported for %s' % rx)
        # Good lines are not blamed.
        for good_line in (3, 4, 6, 11, 12):
            self.assertNotRegex(stderr, re.compile(r'^%s:%d:' % (re.escape(path), good_line), re.M))

    def test_check_config_reports_every_problem(self):
        path = self.write('evdal.conf', BAD_CONFIG)
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.check_bad_messages(path, r.stderr)
        self.assertFalse(any(l.rstrip().endswith('OK') for l in r.stdout.splitlines()), r.stdout)

    def test_relative_config_path_in_messages(self):
        self.write('evdal.conf', '[server]\nlisten = 127.0.0.1:0\nmax_connections = lots\n')
        r = h.run_evdal(['--config', 'evdal.conf', '--check-config'], cwd=self.tmpdir)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.compile(r'^evdal\.conf:3: \[server\] max_connections:', re.M))

    def test_syntax_error_does_not_hide_other_problems(self):
        """"Prints every problem": a line that is no key, group or comment is one problem
        among others, not the only one reported."""
        path = self.write('evdal.conf', '[server]\nlisten = 127.0.0.1:0\nthis is not a key\n'
                                        'max_connections = lots\n')
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.compile(r'^%s:3: ' % re.escape(path), re.M))
        self.assertRegex(r.stderr, re.compile(r'^%s:4: \[server\] max_connections:'
                                              % re.escape(path), re.M))

    def test_unknown_keys_of_a_static_lookup_are_reported(self):
        """A static lookup read its group with evd_config_keys, which marked every key read:
        a typo (timout_ms) or a [server] key in the wrong group passed --check-config. Only
        its rows are read that way now; a row of a lookup whose columns are wrong is still
        not called unknown."""
        path = self.write('evdal.conf', '[server]\n'                 # 1
                                        'listen = 127.0.0.1:0\n'     # 2
                                        '\n'                         # 3
                                        '[lookup flags]\n'           # 4
                                        'backend = static\n'         # 5
                                        'columns = flag\n'           # 6
                                        'row.1 = old\n'              # 7
                                        'timout_ms = 50\n'           # 8
                                        'max_connections = 5\n'      # 9
                                        'timeout_ms = 50\n'          # 10
                                        '\n'                         # 11
                                        '[lookup nocolumns]\n'       # 12
                                        'backend = static\n'         # 13
                                        'row.1 = a\n')               # 14
        r = h.run_evdal(['--config', path, '--check-config'])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        p = re.escape(path)
        self.assertRegex(r.stderr, re.compile(r'^%s:8: \[lookup flags\] timout_ms: unknown key'
                                              % p, re.M))
        self.assertRegex(r.stderr, re.compile(r'^%s:9: \[lookup flags\] max_connections: '
                                              r'unknown key' % p, re.M))
        self.assertRegex(r.stderr, re.compile(r'^%s:\d+: \[lookup nocolumns\] columns: '
                                              r'is required' % p, re.M))
        self.assertEqual(len(r.stderr.strip().splitlines()), 3, r.stderr)

    def test_start_with_bad_config_fails(self):
        path = self.write('evdal.conf', BAD_CONFIG)
        r = h.run_evdal(['--config', path])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.check_bad_messages(path, r.stderr)
        self.assertNotIn('listening on', r.stdout + r.stderr)

    def test_missing_config_file(self):
        r = h.run_evdal(['--config', os.path.join(self.tmpdir, 'nope.conf'), '--check-config'])
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('nope.conf', r.stderr)

    def test_bad_command_line(self):
        r = h.run_evdal(['--no-such-option'])
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_listen_overrides_config(self):
        # The configured address cannot be bound (its folder does not exist): only the
        # override can make this server start.
        text = h.config(listen='/nonexistent-evdal-dir/evdal.sock')
        with h.Server(text, extra_args=['--listen', '127.0.0.1:0']) as server:
            self.assertEqual(server.host, '127.0.0.1', server.address)
            c, t = h.client(server)
            try:
                self.assertEqual(c.ping(), 'pong')
            finally:
                t.close()

    def test_listen_override_to_unix_socket(self):
        with h.Server(h.config(), extra_args=['--listen', '@TMPDIR@/o.sock']) as server:
            self.assertEqual(server.unix_path, os.path.join(server.tmpdir, 'o.sock'),
                             server.address)
            c, t = h.client(server)
            try:
                self.assertEqual(c.ping(), 'pong')
            finally:
                t.close()

    def test_verbose_starts(self):
        with h.Server(h.config(), extra_args=['--verbose']) as server:
            c, t = h.client(server)
            try:
                self.assertEqual(c.ping(), 'pong')
            finally:
                t.close()


if __name__ == '__main__':
    unittest.main()

"""Backend modules (issue 14): `[server] modules = a.so` loads backend kinds built outside the
tree against the installed interface alone.

The build is installed into a staging folder (DESTDIR), examples/c-backend/whoami.c is copied
out of the tree and compiled as a module with `pkg-config evdal` as its only flags, and the
staged evdal binary serves a fetch through it. Then the refusals: a module built against
another interface version, a file that is not a module, and a path that does not exist each
stop start-up with the path and why.

Needs EVDAL_BUILD_DIR (set by CTest), cmake, pkg-config and a C compiler (tools/dev.sh deps).
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

import evdal_harness as h
from evdal_harness import ttypes

BUILD_DIR = os.environ.get('EVDAL_BUILD_DIR')
WHOAMI = os.path.join(h.EVDAL_SOURCE_DIR, 'examples', 'c-backend', 'whoami.c')
CC = os.environ.get('CC', 'cc')

# A module built against an interface version this evdal does not have.
OTHER_VERSION_C = """\
#include <glib.h>
#include <gmodule.h>
G_MODULE_EXPORT extern const guint evdal_backend_module_api_version;
G_MODULE_EXPORT const guint evdal_backend_module_api_version = 999;
G_MODULE_EXPORT gboolean evdal_backend_module_init (GError **error);
G_MODULE_EXPORT gboolean evdal_backend_module_init (GError **error) { (void) error; return TRUE; }
"""

# A shared object that exports neither symbol.
NOT_A_MODULE_C = 'int not_a_module (void); int not_a_module (void) { return 1; }\n'


def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
    if r.returncode != 0:
        raise AssertionError('%s failed (%d):\n%s%s' % (' '.join(argv), r.returncode, r.stdout,
                                                        r.stderr))
    return r.stdout


class ModulesTest(h.EvdalTestCase):

    @classmethod
    def setUpClass(cls):
        for tool in ('cmake', 'pkg-config', CC):
            if shutil.which(tool) is None:
                print('%s not installed (tools/dev.sh deps installs it)' % tool, file=sys.stderr)
                sys.exit(77)
        if not BUILD_DIR:
            raise RuntimeError('EVDAL_BUILD_DIR is not set: run through CTest')
        cls.tmp = tempfile.mkdtemp(prefix='evdal-modules-')
        stage = os.path.join(cls.tmp, 'stage')
        run(['cmake', '--install', BUILD_DIR], env=dict(os.environ, DESTDIR=stage))
        pcs = glob.glob(os.path.join(stage, '**', 'pkgconfig', 'evdal.pc'), recursive=True)
        bins = glob.glob(os.path.join(stage, '**', 'bin', 'evdal'), recursive=True)
        assert len(pcs) == 1 and len(bins) == 1, (pcs, bins)
        # pkg-config finds evdal in the stage only; glib and libevent where the system has them.
        cls.pc_env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]))
        cls.staged_bin = bins[0]
        cls.saved_bin, h.EVDAL_BIN = h.EVDAL_BIN, cls.staged_bin
        cls.mod_dir = os.path.join(cls.tmp, 'mod')
        os.mkdir(cls.mod_dir)
        shutil.copy(WHOAMI, cls.mod_dir)

    @classmethod
    def tearDownClass(cls):
        h.EVDAL_BIN = cls.saved_bin
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def build_module(self, source, name, text=None):
        """Compiles `source` (a file in mod_dir, written from `text` when given) into
        mod_dir/name with the flags of `pkg-config evdal` and nothing else."""
        if text is not None:
            with open(os.path.join(self.mod_dir, source), 'w') as f:
                f.write(text)
        flags = run(['pkg-config', '--cflags', '--libs', 'evdal'], env=self.pc_env).split()
        out = os.path.join(self.mod_dir, name)
        run([CC, '-shared', '-fPIC', '-Wall', '-Wextra', '-Werror', '-o', out, source] + flags,
            cwd=self.mod_dir)
        return out

    def config(self, modules, lookups=''):
        return h.config(lookups=lookups, modules=modules)

    def test_flags_point_into_the_stage_only(self):
        cflags = run(['pkg-config', '--cflags', 'evdal'], env=self.pc_env)
        self.assertIn(self.tmp, cflags)
        self.assertNotIn(h.EVDAL_SOURCE_DIR, cflags)
        self.assertNotIn(BUILD_DIR, cflags)
        version = run(['pkg-config', '--variable=backend_api_version', 'evdal'],
                      env=self.pc_env).strip()
        self.assertRegex(version, r'^[0-9]+$')

    def test_module_built_out_of_tree_serves_a_fetch(self):
        so = self.build_module('whoami.c', 'whoami.so')
        lookups = '[lookup me]\nbackend = whoami\npause_ms = 5\n'
        with h.Server(self.config(so, lookups)) as srv:
            srv.wait_log(r'backend module .*whoami\.so: whoami')
            c, t = h.client(srv)
            try:
                r = c.fetch(h.fetch_request({'me': ttypes.LookupCall(lookup='me')},
                                            request_id='req-mod-1', principal='ada'))
            finally:
                t.close()
            res = r.results['me']
            self.assertIsNone(res.error)
            self.assertEqual(res.table.columns, ['request_id', 'principal'])
            self.assertEqual([[v.text_value for v in row] for row in res.table.rows],
                             [['req-mod-1', 'ada']])
            # A reload reads the key (no "unknown key") and keeps the module's kinds; a changed
            # list waits for a restart, and says so.
            with open(srv.config_path, 'w') as f:
                f.write(self.config(so + ', other.so', lookups + '[lookup me2]\nbackend = whoami\n'))
            srv.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'reloaded .*', timeout=10), srv.log_tail())
            self.assertIn('[server] modules changed', srv.log_text())
            c, t = h.client(srv)
            try:
                r = c.fetch(h.fetch_request({'me2': ttypes.LookupCall(lookup='me2')}))
            finally:
                t.close()
            self.assertIsNone(r.results['me2'].error)

    def assertRefused(self, modules, *expected):
        with tempfile.TemporaryDirectory(prefix='evdal-modules-conf-') as d:
            conf = os.path.join(d, 'evdal.conf')
            with open(conf, 'w') as f:
                f.write(self.config(modules))
            r = h.run_evdal(['--config', conf])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('[server] modules: ', r.stderr)
        for e in expected:
            self.assertIn(e, r.stderr)

    def test_other_interface_version_is_refused_naming_both(self):
        so = self.build_module('other.c', 'other.so', OTHER_VERSION_C)
        version = run(['pkg-config', '--variable=backend_api_version', 'evdal'],
                      env=self.pc_env).strip()
        self.assertRefused(so, so + ': built against backend API version 999, this evdal has '
                           'version ' + version)

    def test_not_a_module_is_refused(self):
        so = self.build_module('plain.c', 'plain.so', NOT_A_MODULE_C)
        self.assertRefused(so, so + ': not an evdal backend module (',
                           'evdal_backend_module_api_version')

    def test_missing_file_stops_start_up_with_path_and_reason(self):
        missing = os.path.join(self.mod_dir, 'missing.so')
        self.assertRefused(missing, missing + ': ', 'No such file or directory')


if __name__ == '__main__':
    unittest.main()

"""evdal-mkdb --postgresql against a real PostgreSQL 15 started for this module (pg_fixture.py):
the rows PostgreSQL gets are the SQLite file's, whatever client encoding the environment
(PGCLIENTENCODING) asks libpq for.

Exits 77 (skipped) when PostgreSQL 15 is not installed."""
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

import evdal_harness as h
import pg_fixture

if not pg_fixture.available():
    print('test_mkdb: PostgreSQL 15 is not installed (tools/dev.sh deps)', file=sys.stderr)
    sys.exit(pg_fixture.SKIP)

MKDB = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-mkdb')
N_USERS = 300

PG = None
TMP = None


def setUpModule():
    global PG, TMP
    TMP = tempfile.mkdtemp(prefix='evdal-mkdbtest-')
    unittest.addModuleCleanup(shutil.rmtree, TMP, ignore_errors=True)
    PG = pg_fixture.PgServer().start()
    unittest.addModuleCleanup(PG.close)


def mkdb(db, **env):
    subprocess.run([MKDB, '--users', str(N_USERS), '--postgresql', PG.conninfo, db], check=True,
                   timeout=300, stdout=subprocess.DEVNULL, env=dict(os.environ, **env))


class MkdbPostgresqlTest(unittest.TestCase):
    def test_names_survive_a_latin1_client_encoding(self):
        # The sample's names are UTF-8 (Chloé, Łukasz, 渡辺). libpq takes its client encoding
        # from PGCLIENTENCODING, so without its own client_encoding=UTF8 evdal-mkdb sent those
        # bytes as LATIN1, and PostgreSQL stored "ChloÃ©" where SQLite has "Chloé".
        db = os.path.join(TMP, 'latin1.db')
        mkdb(db, PGCLIENTENCODING='LATIN1')
        with sqlite3.connect(db) as lite:
            want = [(str(i), n) for i, n in lite.execute('SELECT id, name FROM users ORDER BY id')]
        self.assertTrue(any(not n.isascii() for _, n in want), 'the sample has non-ASCII names')
        out = PG.psql("SET client_encoding = 'UTF8'; SELECT id, name FROM users ORDER BY id")
        got = [tuple(line.split('|', 1)) for line in out.splitlines()]
        self.assertEqual(got, want)


if __name__ == '__main__':
    unittest.main()

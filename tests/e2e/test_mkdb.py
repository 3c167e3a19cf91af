"""evdal-mkdb: a database made again over an old one is whole, whatever the old one left
beside it (a WAL with frames); and with --postgresql, against a real PostgreSQL 15 started for
the test (pg_fixture.py), the rows PostgreSQL gets are the SQLite file's, whatever client
encoding the environment (PGCLIENTENCODING) asks libpq for.

The PostgreSQL test is skipped (exit 77) when PostgreSQL 15 is not installed."""
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

import evdal_harness as h
import pg_fixture

MKDB = os.path.join(os.path.dirname(h.EVDAL_BIN), 'evdal-mkdb')
N_USERS = 300

PG = None
TMP = None


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix='evdal-mkdbtest-')
    unittest.addModuleCleanup(shutil.rmtree, TMP, ignore_errors=True)


def mkdb(db, *args, **env):
    subprocess.run([MKDB, '--users', str(N_USERS)] + list(args) + [db], check=True,
                   timeout=300, stdout=subprocess.DEVNULL, env=dict(os.environ, **env))


# A writer of the old database that dies (os._exit: no checkpoint) with commits in its WAL.
STALE_WRITER = r"""
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('PRAGMA wal_autocheckpoint = 0')
c.execute("UPDATE users SET name = 'stale ' || id")
c.execute('CREATE TABLE stale (x)')
os._exit(0)
"""


class MkdbSqliteTest(unittest.TestCase):
    def test_made_again_over_a_database_whose_wal_has_frames(self):
        # The new file was renamed over the old one beside the old one's -wal and -shm, and
        # the next open replayed the old commits onto the new pages: "database disk image is
        # malformed".
        db = os.path.join(TMP, 'again.db')
        mkdb(db)
        subprocess.run([sys.executable, '-c', STALE_WRITER, db], check=True, timeout=60)
        self.assertGreater(os.path.getsize(db + '-wal'), 0)
        mkdb(db)
        with sqlite3.connect(db) as lite:
            self.assertEqual(lite.execute('PRAGMA integrity_check').fetchall(), [('ok',)])
            self.assertEqual(lite.execute("SELECT count(*) FROM users WHERE name LIKE 'stale %'")
                             .fetchone(), (0,))
            self.assertEqual(lite.execute("SELECT count(*) FROM sqlite_master "
                                          "WHERE name = 'stale'").fetchone(), (0,))


class MkdbPostgresqlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        global PG
        if not pg_fixture.available():
            raise unittest.SkipTest('PostgreSQL 15 is not installed (tools/dev.sh deps)')
        PG = pg_fixture.PgServer().start()
        cls.addClassCleanup(PG.close)

    def test_names_survive_a_latin1_client_encoding(self):
        # The sample's names are UTF-8 (Chloé, Łukasz, 渡辺). libpq takes its client encoding
        # from PGCLIENTENCODING, so without its own client_encoding=UTF8 evdal-mkdb sent those
        # bytes as LATIN1, and PostgreSQL stored "ChloÃ©" where SQLite has "Chloé".
        db = os.path.join(TMP, 'latin1.db')
        mkdb(db, '--postgresql', PG.conninfo, PGCLIENTENCODING='LATIN1')
        with sqlite3.connect(db) as lite:
            want = [(str(i), n) for i, n in lite.execute('SELECT id, name FROM users ORDER BY id')]
        self.assertTrue(any(not n.isascii() for _, n in want), 'the sample has non-ASCII names')
        out = PG.psql("SET client_encoding = 'UTF8'; SELECT id, name FROM users ORDER BY id")
        got = [tuple(line.split('|', 1)) for line in out.splitlines()]
        self.assertEqual(got, want)

    def test_a_role_name_with_dollars_and_quotes_reads_only(self):
        # The role was created in a DO $$ ... $$ block: a name holding "$$" ended the block
        # early, so evdal-mkdb failed (or ran the rest of the name as SQL).
        role = 'ro$$ "odd" $$x'
        db = os.path.join(TMP, 'role.db')
        mkdb(db, '--postgresql', PG.conninfo, '--role', role)
        self.assertEqual(PG.psql('SELECT count(*) FROM users', user=role), str(N_USERS))
        for sql in ('DELETE FROM orders', 'CREATE TABLE public.mine (x int)'):
            with self.assertRaises(subprocess.CalledProcessError, msg=sql):
                PG.psql(sql, user=role)
        # Run again over the same database and role: the role is kept, the grants made anew.
        mkdb(db, '--postgresql', PG.conninfo, '--role', role)
        self.assertEqual(PG.psql('SELECT count(*) FROM users', user=role), str(N_USERS))

    def test_tables_go_to_public_beside_a_schema_named_after_the_user(self):
        # PostgreSQL's default search_path is "$user", public: with a schema named after the
        # loading user (the docs' secure usage pattern), the tables went there, and the role,
        # granted SELECT on schema public's tables only, found none.
        PG.psql('CREATE SCHEMA postgres')
        self.addCleanup(PG.psql, 'DROP SCHEMA postgres CASCADE')
        mkdb(os.path.join(TMP, 'schema.db'), '--postgresql', PG.conninfo)
        self.assertEqual(PG.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'postgres'"),
                         '0')
        self.assertEqual(PG.psql('SELECT count(*) FROM users', user='evdal_ro'), str(N_USERS))


if __name__ == '__main__':
    unittest.main()

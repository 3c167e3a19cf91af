"""A throwaway PostgreSQL 15 for tests: initdb in a temporary folder, a unix socket in that
folder and a free loopback port, fsync off, stopped (and the folder removed) at the end.

As root, the server runs as the `postgres` user (runuser), since PostgreSQL refuses to run
as root; clients (psql, evdal) connect as the `postgres` role over the socket, trust auth.

From Python:   with PgServer() as pg: pg.psql("SELECT 1"); pg.conninfo
               PgServer(primary=pg).start(): a streaming replica of `pg` (pg_basebackup -R),
               in a folder and on a port of its own; the primary allows replication
               (wal_level = replica, and initdb's pg_hba has `replication` entries for the
               socket and loopback with trust auth)
From a shell:  python3 pg_fixture.py run [--locale de_DE.UTF-8]... -- CMD ARGS...
               (CMD runs with EVDAL_PG_CONNINFO, EVDAL_PG_DIR and EVDAL_PG_PORT set; the
               exit status is CMD's, or 77 when PostgreSQL 15 is not installed)

Locales: PgServer(locales=['de_DE.UTF-8']) (or --locale) compiles each with localedef into the
server's folder and starts the server with LOCPATH there, so that a test can give a role or
database a locale this machine may not have installed (lc_monetary changes money's text).
`pg.locales` (EVDAL_PG_LOCALES, space-separated, for CMD) lists those that were made: none
when the locale sources (Debian's `locales`, which postgresql-15 depends on) are missing.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("EVDAL_PG_BIN", "/usr/lib/postgresql/15/bin")
SKIP = 77


def available():
    return os.access(os.path.join(PG_BIN, "initdb"), os.X_OK) and shutil.which("psql") is not None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, port=None, primary=None, locales=()):
        self.port = port or free_port()
        self.dir = None
        self.as_root = os.geteuid() == 0
        self.primary = primary
        self.want_locales = list(locales)
        self.locales = []
        self.env = None

    # ---- Life.
    def _as_pg(self, args, **kw):
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=self.env, **kw)

    def _make_locales(self):
        path = os.path.join(self.dir, "locale")
        os.mkdir(path)
        os.chmod(path, 0o755)
        for name in self.want_locales:
            lang, _, charset = name.partition(".")
            # Exit status 1 is "warnings, locale written": what was written is what counts.
            subprocess.run(["localedef", "-i", lang, "-f", charset or "UTF-8",
                            os.path.join(path, name)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if os.path.exists(os.path.join(path, name, "LC_MONETARY")):
                self.locales.append(name)
            else:
                print("pg_fixture: could not make locale %s (localedef)" % name, file=sys.stderr)
        if self.locales:
            self.env = dict(os.environ, LOCPATH=path)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="evdal-pg-")
        os.chmod(self.dir, 0o755)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        if self.want_locales and shutil.which("localedef"):
            self._make_locales()
        if self.primary is None:
            self._as_pg([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                         "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"])
        else:
            # A copy of the primary's data folder, with standby.signal and primary_conninfo
            # (-R); it streams WAL from the primary once started. Its postgresql.conf is the
            # primary's, so the lines below (later ones win) give it its own port and folder.
            self._as_pg([os.path.join(PG_BIN, "pg_basebackup"), "-D", self.data,
                         "-h", self.primary.dir, "-p", str(self.primary.port), "-U", "postgres",
                         "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# evdal test fixture\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 200\nshared_buffers = 32MB\n"
                    "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
                    "log_min_messages = warning\n")
        self.pg_ctl("start")
        return self

    def wait_streaming(self, timeout=60.0):
        """On a primary: waits until a replica streams from it."""
        deadline = time.monotonic() + timeout
        while self.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") \
                == "0":
            if time.monotonic() > deadline:
                raise TimeoutError("no replica streaming from %s" % self.dir)
            time.sleep(0.05)

    def pg_ctl(self, action, *extra):
        args = [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                "-l", os.path.join(self.dir, "log")]
        self._as_pg(args + list(extra) + [action])

    def stop(self, mode="fast"):
        self.pg_ctl("stop", "-m", mode)

    def restart(self, mode="fast"):
        self.pg_ctl("restart", "-m", mode)

    def close(self):
        if self.dir is None:
            return
        try:
            self.resume()
            self.stop("immediate")
        except (subprocess.CalledProcessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    # ---- Clients.
    @property
    def conninfo(self):
        return f"host={self.dir} port={self.port} dbname=postgres user=postgres"

    @property
    def tcp_conninfo(self):
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def psql(self, sql, db="postgres", user="postgres"):
        """Runs SQL with psql; returns its unaligned, tuples-only output."""
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", self.dir, "-p", str(self.port), "-U", user, "-d", db],
                           input=sql, check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        return r.stdout.strip()

    # ---- Faults.
    def pids(self):
        """The postmaster and its children."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            pm = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(pm)], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        return [pm] + [int(k) for k in kids]

    def suspend(self):
        # A backend may exit between pgrep and its SIGSTOP (a client of the previous test
        # closing): skipped, never an exception that would leave the postmaster stopped for
        # every later test (seen once at load 12: the whole module then timed out).
        self._stopped = []
        for p in self.pids():
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            self._stopped.append(p)

    def resume(self):
        for p in getattr(self, "_stopped", []):
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._stopped = []

    def sessions(self, application_name="evdal"):
        return int(self.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                             f"'{application_name}'"))


def main(argv):
    locales = []
    args = argv[2:]
    while len(args) >= 2 and args[0] == "--locale":
        locales.append(args[1])
        args = args[2:]
    if len(argv) < 2 or argv[1] != "run" or not args or args[0] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    if not available():
        print("pg_fixture: PostgreSQL 15 not installed (tools/dev.sh deps)", file=sys.stderr)
        return SKIP
    with PgServer(locales=locales) as pg:
        env = dict(os.environ, EVDAL_PG_CONNINFO=pg.conninfo, EVDAL_PG_DIR=pg.dir,
                   EVDAL_PG_PORT=str(pg.port), EVDAL_PG_LOCALES=" ".join(pg.locales))
        # Ctrl-C reaches the command (the terminal's whole foreground group gets it); this
        # process waits for it to finish, then stops PostgreSQL.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return subprocess.run(args[1:], env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))

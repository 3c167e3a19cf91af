/* evd_sample: builds the sample web-shop database (see evd_sample.h). */
#include "evd_sample.h"

#include <sqlite3.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* the SQL files beside it, embedded at build time by cmake/embed_sql.py */
extern const char evd_sample_schema_sql[];
extern const char evd_sample_data_sql[];
extern const char evd_sample_indexes_sql[];

GQuark evd_sample_error_quark (void);
G_DEFINE_QUARK (evd-sample-error-quark, evd_sample_error)

/* splitmix64: well mixed, cheap, and the same everywhere. */
static guint64
evd_sample_mix (guint64 x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* rnd(stream, n): a non-negative 63-bit number, a function of (seed, stream, n) only. */
static void
evd_sample_rnd (sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
  guint64 seed = *(guint64 *) sqlite3_user_data (ctx);
  guint64 stream = (guint64) sqlite3_value_int64 (argv[0]);
  guint64 n = (guint64) sqlite3_value_int64 (argv[1]);

  (void) argc;
  sqlite3_result_int64 (ctx, (gint64) (evd_sample_mix (seed ^ evd_sample_mix (stream) ^
                                                       (n * 0x2545f4914f6cdd1dull)) >> 1));
}

/* randomblob_det(x, len): len bytes that depend on x only. */
static void
evd_sample_blob (sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
  guint64 x = (guint64) sqlite3_value_int64 (argv[0]);
  int len = CLAMP (sqlite3_value_int (argv[1]), 0, 4096);
  g_autofree guint8 *b = g_malloc (len + 8);

  (void) argc;
  for (int i = 0; i < len; i += 8) {
    guint64 v = evd_sample_mix (x + (guint64) i);
    memcpy (b + i, &v, 8);
  }
  sqlite3_result_blob (ctx, b, len, SQLITE_TRANSIENT);
}

static gboolean
evd_sample_exec (sqlite3 *db, const char *sql, const char *what, GError **error)
{
  char *msg = NULL;

  if (sqlite3_exec (db, sql, NULL, NULL, &msg) == SQLITE_OK)
    return TRUE;
  g_set_error (error, evd_sample_error_quark (), 1, "%s: %s", what, msg ? msg : "?");
  sqlite3_free (msg);
  return FALSE;
}

/* The data script uses :users; each statement is prepared with it bound. */
static gboolean
evd_sample_fill (sqlite3 *db, guint users, GError **error)
{
  const char *sql = evd_sample_data_sql;

  while (*sql != '\0') {
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2 (db, sql, -1, &st, &tail);
    int idx;

    if (rc != SQLITE_OK) {
      g_set_error (error, evd_sample_error_quark (), 1, "sample data: %s", sqlite3_errmsg (db));
      return FALSE;
    }
    if (st != NULL) {
      if ((idx = sqlite3_bind_parameter_index (st, ":users")) > 0)
        sqlite3_bind_int64 (st, idx, users);
      rc = sqlite3_step (st);
      sqlite3_finalize (st);
      if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        g_set_error (error, evd_sample_error_quark (), 1, "sample data: %s", sqlite3_errmsg (db));
        return FALSE;
      }
    }
    sql = tail;
  }
  return TRUE;
}

static gboolean
evd_sample_build (sqlite3 *db, const EvdSampleOptions *o, GError **error)
{
  sqlite3_create_function (db, "rnd", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, (void *) &o->seed,
                           evd_sample_rnd, NULL, NULL);
  sqlite3_create_function (db, "randomblob_det", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                           evd_sample_blob, NULL, NULL);
  /* A throwaway file until the rename: no journal, no fsync while it is built. */
  return evd_sample_exec (db, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; "
                              "PRAGMA cache_size = -200000; BEGIN;", "setup", error) &&
         evd_sample_exec (db, evd_sample_schema_sql, "schema", error) &&
         evd_sample_fill (db, o->users, error) &&
         evd_sample_exec (db, evd_sample_indexes_sql, "indexes", error) &&
         evd_sample_exec (db, "COMMIT; ANALYZE; PRAGMA journal_mode = WAL;", "finish", error);
}

/* Removes the -wal and -shm files of the database at path. */
static void
evd_sample_unlink_wal (const char *path)
{
  g_autofree char *wal = g_strconcat (path, "-wal", NULL);
  g_autofree char *shm = g_strconcat (path, "-shm", NULL);

  unlink (wal);
  unlink (shm);
}

gboolean
evd_sample_generate (const char *path, const EvdSampleOptions *o, GError **error)
{
  g_autofree char *tmp = g_strdup_printf ("%s.tmp-%d", path, (int) getpid ());
  sqlite3 *db = NULL;
  gboolean ok;

  unlink (tmp);
  if (sqlite3_open_v2 (tmp, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
    g_set_error (error, evd_sample_error_quark (), 1, "%s: %s", tmp, sqlite3_errmsg (db));
    sqlite3_close (db);
    return FALSE;
  }
  ok = evd_sample_build (db, o, error);
  sqlite3_close (db);
  /* An old database's -wal and -shm go with it: left beside the new file, the next open
   * replays the old commits (a writer that died before its checkpoint) onto its pages. */
  if (ok)
    evd_sample_unlink_wal (path);
  if (ok && rename (tmp, path) != 0) {
    g_set_error (error, evd_sample_error_quark (), 1, "rename %s: %s", path, g_strerror (errno));
    ok = FALSE;
  }
  if (!ok) {
    unlink (tmp);
    evd_sample_unlink_wal (tmp);
  }
  return ok;
}

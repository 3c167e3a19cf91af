/* test_sqlite_pool: the SQLite worker pool (storage/evd_sqlite.c) on its own, without a loop:
 * statements prepared once and reused, read-only connections, cancelling a queued or a
 * running job, a job waiting for a lock freed by its cancel or deadline, text holding NUL,
 * and freeing a pool with jobs still queued.
 *
 * The pool keeps its connections to itself. To watch them without a hook in the pool, an
 * SQLite auto-extension (run inside every sqlite3_open_v2 of the process) records each new
 * connection and sets an authorizer on it that counts calls: SQLite consults the authorizer
 * only while it compiles a statement, so a count that stays put proves no statement was
 * compiled again.
 */
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <string.h>

#include "evd_sqlite.h"

static char *dir;

/* ---- Watching the pool's connections. ---- */

typedef struct {
  sqlite3 *db;
  gint compiles;            /* authorizer calls: atomic */
} Watched;

static GMutex watched_lock;
static GPtrArray *watched;  /* Watched *, connections opened since watch_reset() */

static int
on_authorize (void *arg, int action, const char *a, const char *b, const char *c,
              const char *d)
{
  Watched *wd = arg;

  (void) action, (void) a, (void) b, (void) c, (void) d;
  g_atomic_int_inc (&wd->compiles);
  return SQLITE_OK;
}

static int
on_open (sqlite3 *db, char **errmsg, const struct sqlite3_api_routines *api)
{
  Watched *wd = g_new0 (Watched, 1);

  (void) errmsg, (void) api;
  wd->db = db;
  sqlite3_set_authorizer (db, on_authorize, wd);
  g_mutex_lock (&watched_lock);
  g_ptr_array_add (watched, wd);
  g_mutex_unlock (&watched_lock);
  return SQLITE_OK;
}

static void
watch_reset (void)
{
  g_mutex_lock (&watched_lock);
  g_ptr_array_set_size (watched, 0);
  g_mutex_unlock (&watched_lock);
}

/* ---- Jobs the test waits for. ---- */

typedef struct {
  EvdSqliteJob job;         /* first: the done callback gets it back */
  EvdParam param;
  int done_calls;           /* under done_lock */
  EvdRows *rows;
  GError *error;
} TestJob;

static GMutex done_lock;
static GCond done_cond;

static void
on_done (EvdSqliteJob *job, EvdRows *rows, GError *error)
{
  TestJob *tj = (TestJob *) job;

  g_mutex_lock (&done_lock);
  tj->done_calls++;
  tj->rows = rows;
  tj->error = error ? g_error_copy (error) : NULL;
  g_cond_broadcast (&done_cond);
  g_mutex_unlock (&done_lock);
}

static void
job_init (TestJob *tj, int stmt, gint64 deadline_us)
{
  memset (tj, 0, sizeof *tj);
  tj->job.stmt = stmt;
  tj->job.max_rows = 1000;
  tj->job.deadline_us = deadline_us;
  tj->job.done = on_done;
}

static void
job_clear (TestJob *tj)
{
  g_clear_pointer (&tj->rows, evd_rows_unref);
  g_clear_error (&tj->error);
}

/* Waits (up to 10 s) for the job's completion. */
static void
job_wait (TestJob *tj)
{
  gint64 until = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  g_mutex_lock (&done_lock);
  while (tj->done_calls == 0)
    if (!g_cond_wait_until (&done_cond, &done_lock, until))
      break;
  g_assert_cmpint (tj->done_calls, ==, 1);
  g_mutex_unlock (&done_lock);
}

static void
wait_for (EvdSqlitePool *pool, guint busy, guint queued)
{
  gint64 until = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (evd_sqlite_pool_busy (pool) != busy || evd_sqlite_pool_queued (pool) != queued) {
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    g_usleep (1000);
  }
}

/* ---- Fixtures. ---- */

#define ENDLESS "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " \
                "SELECT count(*) FROM c"

static char *
make_db (const char *name)
{
  char *path = g_build_filename (dir, name, NULL);
  sqlite3 *db;

  g_assert_cmpint (sqlite3_open (path, &db), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_exec (db, "DROP TABLE IF EXISTS t; CREATE TABLE t (x INTEGER);"
                                 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                 "FROM c WHERE x < 10) INSERT INTO t SELECT x FROM c;",
                                 NULL, NULL, NULL), ==, SQLITE_OK);
  sqlite3_close (db);
  return path;
}

static EvdSqlitePool *
pool_new (const char *path, int workers, int busy_timeout_ms)
{
  g_autoptr (GError) error = NULL;
  EvdSqlitePool *pool = evd_sqlite_pool_new (path, workers, busy_timeout_ms, &error);

  g_assert_no_error (error);
  g_assert_nonnull (pool);
  return pool;
}

static int
prepare (EvdSqlitePool *pool, const char *sql)
{
  g_autoptr (GError) error = NULL;
  int id = evd_sqlite_pool_prepare (pool, sql, NULL, &error);

  g_assert_no_error (error);
  g_assert_cmpint (id, >=, 0);
  return id;
}

/* ---- Tests. ---- */

/* One worker, many jobs on one lookup: one statement, compiled once, run each time. */
static void
test_statement_prepared_once (void)
{
  g_autofree char *path = make_db ("once.db");
  enum { N = 50 };
  TestJob jobs[N];
  EvdSqlitePool *pool;
  Watched *wd;
  sqlite3_stmt *st;
  int compiles, id;

  watch_reset ();
  pool = pool_new (path, 1, 1000);
  g_assert_cmpuint (watched->len, ==, 1);
  wd = watched->pdata[0];
  id = prepare (pool, "SELECT x FROM t WHERE x >= :min ORDER BY x");
  compiles = g_atomic_int_get (&wd->compiles);
  g_assert_cmpint (compiles, >, 0);  /* the authorizer does see compiles */

  for (int i = 0; i < N; i++) {
    job_init (&jobs[i], id, G_MAXINT64);
    jobs[i].param = (EvdParam) { "min", { .kind = EVD_VALUE_INT, .i = 1 + i % 10 } };
    jobs[i].job.params = &jobs[i].param;
    jobs[i].job.n_params = 1;
    evd_sqlite_pool_submit (pool, &jobs[i].job);
  }
  for (int i = 0; i < N; i++) {
    job_wait (&jobs[i]);
    g_assert_no_error (jobs[i].error);
    g_assert_cmpuint (evd_rows_n_rows (jobs[i].rows), ==, 10 - i % 10);
    g_assert_cmpint (evd_rows_cell (jobs[i].rows, 0, 0)->v.i, ==, 1 + i % 10);
    job_clear (&jobs[i]);
  }
  g_assert_cmpuint (evd_sqlite_pool_jobs (pool), ==, N);
  /* The worker is idle again: its connection can be looked at from here. */
  g_assert_cmpint (g_atomic_int_get (&wd->compiles), ==, compiles);
  st = sqlite3_next_stmt (wd->db, NULL);
  g_assert_nonnull (st);
  g_assert_null (sqlite3_next_stmt (wd->db, st));  /* the only statement it holds */
  g_assert_cmpint (sqlite3_stmt_status (st, SQLITE_STMTSTATUS_RUN, 0), ==, N);
  g_assert_cmpint (sqlite3_stmt_status (st, SQLITE_STMTSTATUS_REPREPARE, 0), ==, 0);
  evd_sqlite_pool_free (pool);
}

/* Every connection is opened read-only and query_only. */
static void
test_connections_read_only (void)
{
  g_autofree char *path = make_db ("ro.db");
  TestJob tj;
  EvdSqlitePool *pool;
  int id;

  watch_reset ();
  pool = pool_new (path, 3, 1000);
  g_assert_cmpuint (watched->len, ==, 3);
  for (guint i = 0; i < watched->len; i++) {
    Watched *wd = watched->pdata[i];
    g_assert_cmpint (sqlite3_db_readonly (wd->db, "main"), ==, 1);
  }
  id = prepare (pool, "SELECT query_only FROM pragma_query_only");
  for (int i = 0; i < 6; i++) {
    job_init (&tj, id, G_MAXINT64);
    evd_sqlite_pool_submit (pool, &tj.job);
    job_wait (&tj);
    g_assert_no_error (tj.error);
    g_assert_cmpint (evd_rows_cell (tj.rows, 0, 0)->v.i, ==, 1);
    job_clear (&tj);
  }
  evd_sqlite_pool_free (pool);
}

/* With the only worker running a statement that never ends, a queued job that is cancelled
 * completes without running, and cancelling the running one frees the worker. */
static void
test_cancel_queued_and_running (void)
{
  g_autofree char *path = make_db ("cancel.db");
  EvdSqlitePool *pool;
  TestJob running, queued;
  Watched *wd;
  sqlite3_stmt *st;
  int endless, quick;

  watch_reset ();
  pool = pool_new (path, 1, 1000);
  wd = watched->pdata[0];
  endless = prepare (pool, ENDLESS);
  quick = prepare (pool, "SELECT count(*) FROM t");
  job_init (&running, endless, G_MAXINT64);
  job_init (&queued, quick, G_MAXINT64);
  evd_sqlite_pool_submit (pool, &running.job);
  evd_sqlite_pool_submit (pool, &queued.job);
  wait_for (pool, 1, 1);
  evd_sqlite_job_cancel (&queued.job);
  /* Not completed by the cancel itself, and still in the queue behind the running one: no
   * worker has taken it, so none can have completed it (a worker completes what it takes). */
  g_mutex_lock (&done_lock);
  g_assert_cmpint (queued.done_calls, ==, 0);
  g_mutex_unlock (&done_lock);
  g_assert_cmpuint (evd_sqlite_pool_queued (pool), ==, 1);
  g_assert_cmpuint (evd_sqlite_pool_busy (pool), ==, 1);
  evd_sqlite_job_cancel (&running.job);
  job_wait (&running);
  job_wait (&queued);
  g_assert_error (running.error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_INTERRUPTED);
  g_assert_cmpstr (running.error->message, ==, "cancelled");
  g_assert_error (queued.error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_INTERRUPTED);
  g_assert_cmpstr (queued.error->message, ==, "cancelled before it ran");
  g_assert_null (queued.rows);
  wait_for (pool, 0, 0);
  /* The quick statement never ran. */
  for (st = sqlite3_next_stmt (wd->db, NULL); st != NULL; st = sqlite3_next_stmt (wd->db, st))
    if (strcmp (sqlite3_sql (st), "SELECT count(*) FROM t") == 0)
      g_assert_cmpint (sqlite3_stmt_status (st, SQLITE_STMTSTATUS_RUN, 0), ==, 0);
  job_clear (&running);
  job_clear (&queued);
  evd_sqlite_pool_free (pool);
}

/* A statement waiting for a lock held by another connection (rollback journal, EXCLUSIVE):
 * its cancel or its deadline frees the worker within milliseconds, long before
 * busy_timeout_ms; with no job deadline, busy_timeout_ms ends the wait as a failure. */
static void
test_busy_wait_ends_with_the_job (void)
{
  g_autofree char *path = make_db ("busy.db");
  EvdSqlitePool *pool = pool_new (path, 1, 5000);
  EvdSqlitePool *short_pool = pool_new (path, 1, 100);
  int id = prepare (pool, "SELECT count(*) FROM t");
  int short_id = prepare (short_pool, "SELECT count(*) FROM t");
  sqlite3 *writer;
  TestJob tj;
  gint64 t0;

  /* The worker has run a job already (its thread is up), and the deadline leaves it time to
   * take the next one on a busy machine: the job must end in the lock wait, not before. */
  job_init (&tj, id, G_MAXINT64);
  evd_sqlite_pool_submit (pool, &tj.job);
  job_wait (&tj);
  g_assert_no_error (tj.error);
  job_clear (&tj);
  g_assert_cmpint (sqlite3_open (path, &writer), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_exec (writer, "BEGIN EXCLUSIVE", NULL, NULL, NULL), ==, SQLITE_OK);

  t0 = g_get_monotonic_time ();
  job_init (&tj, id, t0 + 400 * 1000);
  evd_sqlite_pool_submit (pool, &tj.job);
  job_wait (&tj);
  g_assert_error (tj.error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_INTERRUPTED);
  g_assert_cmpstr (tj.error->message, ==, "deadline passed");
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 2 * G_USEC_PER_SEC);
  job_clear (&tj);

  t0 = g_get_monotonic_time ();
  job_init (&tj, id, G_MAXINT64);
  evd_sqlite_pool_submit (pool, &tj.job);
  wait_for (pool, 1, 0);
  g_usleep (50000);
  evd_sqlite_job_cancel (&tj.job);
  job_wait (&tj);
  g_assert_error (tj.error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_INTERRUPTED);
  g_assert_cmpstr (tj.error->message, ==, "cancelled");
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 2 * G_USEC_PER_SEC);
  job_clear (&tj);

  job_init (&tj, short_id, G_MAXINT64);
  evd_sqlite_pool_submit (short_pool, &tj.job);
  job_wait (&tj);
  g_assert_error (tj.error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_FAILED);
  g_assert_nonnull (strstr (tj.error->message, "locked"));
  job_clear (&tj);

  /* The lock gone, the same statement runs. */
  g_assert_cmpint (sqlite3_exec (writer, "ROLLBACK", NULL, NULL, NULL), ==, SQLITE_OK);
  job_init (&tj, id, G_MAXINT64);
  evd_sqlite_pool_submit (pool, &tj.job);
  job_wait (&tj);
  g_assert_no_error (tj.error);
  g_assert_cmpint (evd_rows_cell (tj.rows, 0, 0)->v.i, ==, 10);
  job_clear (&tj);
  sqlite3_close (writer);
  evd_sqlite_pool_free (short_pool);
  evd_sqlite_pool_free (pool);
}

/* Text is valid UTF-8 with NUL (U+0000) in it; bytes that are not UTF-8 stay an error. */
static void
test_text_with_nul (void)
{
  g_autofree char *path = make_db ("nul.db");
  EvdSqlitePool *pool = pool_new (path, 1, 1000);
  int good = prepare (pool, "SELECT CAST(x'610062' AS TEXT), CAST(x'00' AS TEXT)");
  int bad = prepare (pool, "SELECT CAST(x'6100ff' AS TEXT)");
  const EvdCell *cell;
  TestJob tj;

  job_init (&tj, good, G_MAXINT64);
  evd_sqlite_pool_submit (pool, &tj.job);
  job_wait (&tj);
  g_assert_no_error (tj.error);
  cell = evd_rows_cell (tj.rows, 0, 0);
  g_assert_cmpint (cell->kind, ==, EVD_VALUE_TEXT);
  g_assert_cmpmem (evd_rows_cell_data (tj.rows, cell), cell->len, "a\0b", 3);
  cell = evd_rows_cell (tj.rows, 0, 1);
  g_assert_cmpmem (evd_rows_cell_data (tj.rows, cell), cell->len, "\0", 1);
  job_clear (&tj);

  job_init (&tj, bad, G_MAXINT64);
  evd_sqlite_pool_submit (pool, &tj.job);
  job_wait (&tj);
  g_assert_error (tj.error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_FAILED);
  g_assert_nonnull (strstr (tj.error->message, "UTF-8"));
  job_clear (&tj);
  evd_sqlite_pool_free (pool);
}

/* A worker keeps each statement's column names (one table of them, copied into every new
 * table); when the schema changes under it, SQLite compiles the statement again at its first
 * step, and the next table has the new names and count: a column renamed and one added to
 * the table a `SELECT *` reads, by another connection, between two runs. */
static void
test_columns_follow_the_schema (void)
{
  g_autofree char *path = make_db ("schema.db");
  EvdSqlitePool *pool = pool_new (path, 1, 1000);
  int id = prepare (pool, "SELECT * FROM t WHERE rowid = 3");
  static const char *const before[] = { "x" }, *const after[] = { "x2", "label" };
  sqlite3 *db;
  TestJob tj;

  /* Twice each: the second run from the kept names. */
  for (int run = 0; run < 4; run++) {
    const char *const *names = run < 2 ? before : after;
    guint n = run < 2 ? G_N_ELEMENTS (before) : G_N_ELEMENTS (after);

    if (run == 2) {
      g_assert_cmpint (sqlite3_open (path, &db), ==, SQLITE_OK);
      g_assert_cmpint (sqlite3_exec (db, "ALTER TABLE t ADD COLUMN label TEXT DEFAULT 'd';"
                                     "ALTER TABLE t RENAME COLUMN x TO x2;", NULL, NULL, NULL),
                       ==, SQLITE_OK);
      sqlite3_close (db);
    }
    job_init (&tj, id, G_MAXINT64);
    evd_sqlite_pool_submit (pool, &tj.job);
    job_wait (&tj);
    g_assert_no_error (tj.error);
    g_assert_cmpuint (evd_rows_n_columns (tj.rows), ==, n);
    for (guint c = 0; c < n; c++)
      g_assert_cmpstr (evd_rows_column (tj.rows, c), ==, names[c]);
    g_assert_cmpuint (evd_rows_n_rows (tj.rows), ==, 1);
    g_assert_cmpint (evd_rows_cell (tj.rows, 0, 0)->v.i, ==, 3);
    if (n == 2)
      g_assert_cmpmem (evd_rows_cell_data (tj.rows, evd_rows_cell (tj.rows, 0, 1)), 1, "d", 1);
    job_clear (&tj);
  }
  evd_sqlite_pool_free (pool);
}

/* Freeing a pool with jobs still queued: each completes exactly once before free returns
 * (run, as the header promises), nothing leaks (ASan's leak check), nothing crashes. */
static void
test_free_with_jobs_queued (void)
{
  g_autofree char *path = make_db ("free.db");
  EvdSqlitePool *pool = pool_new (path, 1, 1000);
  int slow = prepare (pool, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                            "WHERE x < 200000) SELECT count(*) FROM c");
  int quick = prepare (pool, "SELECT x FROM t");
  enum { N = 20 };
  TestJob jobs[N];

  for (int i = 0; i < N; i++) {
    job_init (&jobs[i], i == 0 ? slow : quick, G_MAXINT64);
    evd_sqlite_pool_submit (pool, &jobs[i].job);
  }
  evd_sqlite_pool_free (pool);
  for (int i = 0; i < N; i++) {
    g_assert_cmpint (jobs[i].done_calls, ==, 1);
    g_assert_no_error (jobs[i].error);
    g_assert_cmpuint (evd_rows_n_rows (jobs[i].rows), ==, i == 0 ? 1 : 10);
    job_clear (&jobs[i]);
  }
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  dir = g_dir_make_tmp ("evdal-sqlite-pool-XXXXXX", NULL);
  g_assert_nonnull (dir);
  watched = g_ptr_array_new_with_free_func (g_free);
  sqlite3_auto_extension ((void (*) (void)) on_open);
  g_test_add_func ("/sqlite_pool/statement_prepared_once", test_statement_prepared_once);
  g_test_add_func ("/sqlite_pool/connections_read_only", test_connections_read_only);
  g_test_add_func ("/sqlite_pool/cancel_queued_and_running", test_cancel_queued_and_running);
  g_test_add_func ("/sqlite_pool/busy_wait_ends_with_the_job", test_busy_wait_ends_with_the_job);
  g_test_add_func ("/sqlite_pool/text_with_nul", test_text_with_nul);
  g_test_add_func ("/sqlite_pool/columns_follow_the_schema", test_columns_follow_the_schema);
  g_test_add_func ("/sqlite_pool/free_with_jobs_queued", test_free_with_jobs_queued);
  rc = g_test_run ();
  sqlite3_reset_auto_extension ();
  g_ptr_array_unref (watched);
  {
    g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
      g_autofree char *p = g_build_filename (dir, name, NULL);
      g_unlink (p);
    }
  }
  g_rmdir (dir);
  g_free (dir);
  return rc;
}

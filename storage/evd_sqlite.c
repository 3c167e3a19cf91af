/* evd_sqlite: SQLite worker pool with read-only connections (see evd_sqlite.h). */
#include "evd_sqlite.h"
#include "evd_quark.h"

#include <sqlite3.h>
#include <string.h>


/* How often (in SQLite VM instructions) a running statement checks for cancel and deadline:
 * a few microseconds of work between checks, so an interrupt lands well within a millisecond
 * while costing nothing measurable. */
#define EVD_SQLITE_PROGRESS_OPS 1000

/* The longest nap of the busy handler between two tries at a lock: short enough that a
 * cancelled or timed-out job frees its worker within a few milliseconds, long enough that a
 * reader waiting out a writer's transaction wakes a few hundred times a second at most. */
#define EVD_SQLITE_BUSY_MAX_NAP_US 4000

/* How big a statement's tables have been lately, on one worker: the hints for its next
 * table (evd_rows_new_sized), so that a table is one allocation, made on the worker and freed
 * on an IO loop, instead of a struct, cells and an arena, regrown row after row. Each new
 * table raises the size to its own at once and lets it down by 1/16 otherwise: a statement
 * whose row count varies (a user's last 0 to 10 orders) keeps room for its recent largest,
 * while one huge answer is forgotten within a few dozen (and evd_rows caps the block). */
typedef struct {
  guint cells;
  gsize arena;
  /* The statement's column names, as a table without rows that each new table copies
   * (evd_rows_new_like): asked of SQLite once, not per table. SQLite compiles a statement
   * again when the schema changed (its names may have too): the count of those recompiles
   * when the names were taken tells. */
  EvdRows *columns;
  int reprepares;
} EvdSqliteSize;

typedef struct {
  EvdSqlitePool *pool;
  GThread *thread;
  sqlite3 *db;
  GPtrArray *stmts;            /* sqlite3_stmt *, by statement id */
  GArray *sizes;               /* EvdSqliteSize, by statement id: sized at start-up by
                                * evd_sqlite_pool_prepare, then read and written by this
                                * worker alone, without a lock */
  EvdSqliteJob *current;       /* read by the progress and busy handlers, on this thread only */
  gint64 busy_since_us;        /* when the busy handler was first called for this lock */
  gboolean busy_interrupted;   /* the busy handler gave up for the job, not the timeout */
} EvdSqliteWorker;

struct _EvdSqlitePool {
  char *path;
  /* The queue. A loop that submits wakes at most one idle worker, and only when no wakeup
   * is already on its way; a worker that takes a job and sees more waiting wakes the next.
   * So a fetch that submits six statements costs its loop one futex wake, not six: the
   * wakeups that spread the work over the workers are made by the workers themselves. */
  GMutex lock;
  GCond cond;
  /* The jobs waiting, in submission order, linked through their `next`: a GQueue cost a
   * list node's malloc on submit and its free on take, per statement (issue 20). */
  EvdSqliteJob *head, *tail;
  guint idle;                  /* workers waiting on cond */
  gboolean waking;             /* signalled, and the woken worker has not taken the lock yet */
  gboolean stopping;           /* the workers exit once waiting is empty */
  gint queued;                 /* atomic mirror of the queue's length, for metrics */
  GPtrArray *workers;          /* EvdSqliteWorker * */
  int busy_timeout_ms;         /* how long a statement waits for a lock in all */
  gint busy;                   /* atomic */
  guint64 busy_us;             /* atomic */
  guint64 jobs;                /* atomic */
};

EVD_DEFINE_QUARK (evd-sqlite-error-quark, evd_sqlite_error)

/* ---- Rows. ---- */

/* Valid UTF-8, NUL (U+0000) included: g_utf8_validate_len() stops at a NUL byte and calls
 * it invalid, so validate the pieces between NULs. A NUL cut in the middle of a sequence
 * still fails, since the piece before it ends in an incomplete character. */
static gboolean
evd_sqlite_utf8_valid (const char *text, gsize len)
{
  const char *end;

  while (!g_utf8_validate_len (text, len, &end)) {
    if (*end != '\0')
      return FALSE;
    len -= (gsize) (end - text) + 1;
    text = end + 1;
  }
  return TRUE;
}

/* Straight from SQLite's buffers into the table's arena: no value object, no copy between. */
static gboolean
evd_sqlite_add_column (EvdRows *rows, sqlite3_stmt *st, int i, GError **error)
{
  switch (sqlite3_column_type (st, i)) {
  case SQLITE_INTEGER:
    evd_rows_add_int (rows, sqlite3_column_int64 (st, i));
    return TRUE;
  case SQLITE_FLOAT:
    evd_rows_add_real (rows, sqlite3_column_double (st, i));
    return TRUE;
  case SQLITE_TEXT: {
    const char *text = (const char *) sqlite3_column_text (st, i);
    int len = sqlite3_column_bytes (st, i);
    if (!evd_sqlite_utf8_valid (text, (gsize) len)) {
      g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_FAILED,
                   "column %s holds text that is not valid UTF-8", sqlite3_column_name (st, i));
      return FALSE;
    }
    evd_rows_add_text (rows, text, len);
    return TRUE;
  }
  case SQLITE_BLOB:
    evd_rows_add_blob (rows, sqlite3_column_blob (st, i), (gsize) sqlite3_column_bytes (st, i));
    return TRUE;
  default:
    evd_rows_add_null (rows);
    return TRUE;
  }
}

static gboolean
evd_sqlite_add_row (EvdRows *rows, sqlite3_stmt *st, GError **error)
{
  int n = sqlite3_column_count (st);

  for (int i = 0; i < n; i++)
    if (!evd_sqlite_add_column (rows, st, i, error))
      return FALSE;
  return TRUE;
}

/* A table sized for what the statement returned lately, with an eighth more room, so that
 * a table a little larger than the last ones still fits its block. */
static EvdRows *
evd_sqlite_new_rows (sqlite3_stmt *st, EvdSqliteSize *size)
{
  int reprepares = sqlite3_stmt_status (st, SQLITE_STMTSTATUS_REPREPARE, 0);

  if (size->columns == NULL || size->reprepares != reprepares) {
    int n = sqlite3_column_count (st);
    const char **names = g_newa (const char *, n);

    for (int i = 0; i < n; i++)
      names[i] = sqlite3_column_name (st, i);
    g_clear_pointer (&size->columns, evd_rows_unref);
    size->columns = evd_rows_new_sized ((guint) n, names, (guint) n, 0);
    size->reprepares = reprepares;
  }
  return evd_rows_new_like (size->columns, size->cells + size->cells / 8,
                            size->arena + size->arena / 8);
}

static void
evd_sqlite_remember_size (EvdSqliteSize *size, const EvdRows *rows)
{
  guint cells;
  gsize arena;

  evd_rows_size (rows, &cells, &arena);
  size->cells = MAX (cells, size->cells - size->cells / 16);
  size->arena = MAX (arena, size->arena - size->arena / 16);
}

/* ---- Running a job. ---- */

/* Values are bound SQLITE_STATIC: they live in the request, which outlives the job, and the
 * bindings are cleared when the statement is reset after it. */
static int
evd_sqlite_bind (sqlite3_stmt *st, int i, const EvdValue *v)
{
  switch (v->kind) {
  case EVD_VALUE_INT: return sqlite3_bind_int64 (st, i, v->i);
  case EVD_VALUE_REAL: return sqlite3_bind_double (st, i, v->r);
  case EVD_VALUE_TEXT: return sqlite3_bind_text (st, i, v->data, (int) v->len, SQLITE_STATIC);
  case EVD_VALUE_BLOB: return sqlite3_bind_blob64 (st, i, v->data, v->len, SQLITE_STATIC);
  default: return sqlite3_bind_null (st, i);
  }
}

static gboolean
evd_sqlite_bind_all (EvdSqliteWorker *w, sqlite3_stmt *st, const EvdSqliteJob *job,
                     GError **error)
{
  int n = sqlite3_bind_parameter_count (st);

  for (int i = 1; i <= n; i++) {
    const char *name = sqlite3_bind_parameter_name (st, i);
    const EvdValue *v = name ? evd_value_find_param (job->params, job->n_params, name + 1) : NULL;

    /* The engine checked every required param; an absent one binds NULL. */
    if ((v ? evd_sqlite_bind (st, i, v) : sqlite3_bind_null (st, i)) != SQLITE_OK) {
      g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_FAILED, "binding %s: %s",
                   name ? name : "?", sqlite3_errmsg (w->db));
      return FALSE;
    }
  }
  return TRUE;
}

static void
evd_sqlite_step_error (EvdSqliteWorker *w, EvdSqliteJob *job, int rc, GError **error)
{
  if (rc == SQLITE_INTERRUPT || ((rc & 0xff) == SQLITE_BUSY && w->busy_interrupted))
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_INTERRUPTED, "%s",
                 g_atomic_int_get (&job->cancelled) ? "cancelled" : "deadline passed");
  else
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_FAILED, "%s (%s)",
                 sqlite3_errmsg (w->db), sqlite3_errstr (rc));
}

static EvdRows *
evd_sqlite_run (EvdSqliteWorker *w, EvdSqliteJob *job, GError **error)
{
  sqlite3_stmt *st = w->stmts->pdata[job->stmt];
  EvdSqliteSize *size = &g_array_index (w->sizes, EvdSqliteSize, job->stmt);
  g_autoptr (EvdRows) t = NULL;
  int rc, rows = 0;

  if (!evd_sqlite_bind_all (w, st, job, error))
    return NULL;
  /* The table is made after the first step: SQLite compiles the statement again there when
   * the schema changed, and its columns (names, count) are then the new ones. */
  rc = sqlite3_step (st);
  t = evd_sqlite_new_rows (st, size);
  for (; rc == SQLITE_ROW; rc = sqlite3_step (st)) {
    if (rows++ == job->max_rows) {
      g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_TOO_MANY_ROWS,
                   "more than max_rows (%d) rows", job->max_rows);
      return NULL;
    }
    if (!evd_sqlite_add_row (t, st, error))
      return NULL;
  }
  if (rc != SQLITE_DONE) {
    evd_sqlite_step_error (w, job, rc, error);
    return NULL;
  }
  evd_sqlite_remember_size (size, t);
  return g_steal_pointer (&t);
}

static void
evd_sqlite_serve (EvdSqliteWorker *w, EvdSqliteJob *job)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdRows) rows = NULL;
  sqlite3_stmt *st = w->stmts->pdata[job->stmt];

  if (g_atomic_int_get (&job->cancelled) || g_get_monotonic_time () >= job->deadline_us) {
    /* Its time ran out while it waited for a worker: do not run it for nobody. */
    g_set_error (&error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_INTERRUPTED, "%s",
                 g_atomic_int_get (&job->cancelled) ? "cancelled before it ran"
                                                    : "deadline passed before it ran");
  } else {
    gint64 start = g_get_monotonic_time ();

    g_atomic_int_inc (&w->pool->busy);
    w->current = job;
    w->busy_interrupted = FALSE;
    rows = evd_sqlite_run (w, job, &error);
    w->current = NULL;
    sqlite3_reset (st);
    sqlite3_clear_bindings (st);
    g_atomic_int_add (&w->pool->busy, -1);
    __atomic_fetch_add (&w->pool->busy_us, (guint64) (g_get_monotonic_time () - start),
                        __ATOMIC_RELAXED);
    __atomic_fetch_add (&w->pool->jobs, 1, __ATOMIC_RELAXED);
  }
  job->done (job, g_steal_pointer (&rows), error);
}

/* The job on this worker is over (cancelled or past its deadline), or there is none. */
static gboolean
evd_sqlite_job_over (const EvdSqliteJob *job)
{
  return job != NULL && (g_atomic_int_get (&job->cancelled) ||
                         g_get_monotonic_time () >= job->deadline_us);
}

/* Called by SQLite when a lock it needs is held by another connection (a writer in
 * rollback-journal mode, a WAL index being rebuilt): non-zero tries again. SQLite's own
 * sqlite3_busy_timeout() sleeps in naps of up to 100 ms and never looks at the job, and the
 * progress handler does not run while it sleeps, so a call that timed out or was cancelled
 * kept its worker for up to busy_timeout_ms. This one naps a few milliseconds at a time and
 * gives up as soon as the job is over (the statement then fails as interrupted, see
 * evd_sqlite_step_error) or busy_timeout_ms has passed since the first try (SQLITE_BUSY, a
 * BACKEND error). `count` is 0 on the first call for each lock SQLite waits for. */
static int
evd_sqlite_on_busy (void *arg, int count)
{
  EvdSqliteWorker *w = arg;
  gint64 now = g_get_monotonic_time ();
  gint64 left_us;

  if (count == 0)
    w->busy_since_us = now;
  if (evd_sqlite_job_over (w->current)) {
    w->busy_interrupted = TRUE;
    return 0;
  }
  left_us = w->busy_since_us + (gint64) w->pool->busy_timeout_ms * 1000 - now;
  if (left_us <= 0)
    return 0;
  /* 1, 2, 4, 4, 4... ms: a lock held for a moment is retaken at once. */
  g_usleep ((gulong) MIN (left_us, MIN ((gint64) 1000 << MIN (count, 2),
                                        EVD_SQLITE_BUSY_MAX_NAP_US)));
  return 1;
}

/* Called by SQLite every EVD_SQLITE_PROGRESS_OPS instructions: non-zero interrupts. */
static int
evd_sqlite_on_progress (void *arg)
{
  EvdSqliteWorker *w = arg;

  return evd_sqlite_job_over (w->current);
}

/* Signals one idle worker unless one is already being woken; under the lock. TRUE when the
 * caller must g_cond_signal once it has unlocked. */
static gboolean
evd_sqlite_want_wake (EvdSqlitePool *pool)
{
  if (pool->idle == 0 || pool->waking || pool->head == NULL)
    return FALSE;
  pool->waking = TRUE;
  return TRUE;
}

/* The next job, waiting for one; NULL once the pool stops and the queue is empty. */
static EvdSqliteJob *
evd_sqlite_take (EvdSqlitePool *pool)
{
  EvdSqliteJob *job;
  gboolean wake;

  g_mutex_lock (&pool->lock);
  while (pool->head == NULL && !pool->stopping) {
    pool->idle++;
    g_cond_wait (&pool->cond, &pool->lock);
    pool->idle--;
    pool->waking = FALSE;  /* the wakeup (or a spurious one) has landed */
  }
  job = pool->head;
  if (job != NULL) {
    pool->head = job->next;
    if (pool->head == NULL)
      pool->tail = NULL;
    job->next = NULL;
    g_atomic_int_add (&pool->queued, -1);
  }
  wake = evd_sqlite_want_wake (pool);
  g_mutex_unlock (&pool->lock);
  if (wake)
    g_cond_signal (&pool->cond);
  return job;
}

static gpointer
evd_sqlite_worker_main (gpointer data)
{
  EvdSqliteWorker *w = data;
  EvdSqliteJob *job;

  while ((job = evd_sqlite_take (w->pool)) != NULL)
    evd_sqlite_serve (w, job);
  return NULL;
}

/* ---- Connections. ---- */

static sqlite3 *
evd_sqlite_open (EvdSqliteWorker *w, const char *path, GError **error)
{
  sqlite3 *db = NULL;
  int rc;

  if (!g_file_test (path, G_FILE_TEST_IS_REGULAR)) {
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_OPEN, "%s: no such database file",
                 path);
    return NULL;
  }
  /* NOMUTEX: each connection is used by its own worker thread only. */
  rc = sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_handler (db, evd_sqlite_on_busy, w);
    /* Touch the schema now: a file that is not a database fails here, at start-up. */
    rc = sqlite3_exec (db, "PRAGMA query_only = ON; SELECT count(*) FROM sqlite_schema;",
                       NULL, NULL, NULL);
  }
  if ((rc & 0xff) == SQLITE_BUSY) {
    /* A writer's lock, held past busy_timeout_ms: the file is fine, only busy now. */
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_OPEN, "%s: database is locked by "
                 "a writer, still after busy_timeout_ms (%d ms): a transient condition, not a "
                 "bad file; try again once the writer is done", path, w->pool->busy_timeout_ms);
    sqlite3_close (db);
    return NULL;
  }
  if (rc != SQLITE_OK) {
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_OPEN, "%s: %s", path,
                 db ? sqlite3_errmsg (db) : sqlite3_errstr (rc));
    sqlite3_close (db);
    return NULL;
  }
  return db;
}

static void
evd_sqlite_finalize (gpointer stmt)
{
  sqlite3_finalize (stmt);
}

/* SQLite's allocation statistics (sqlite3_memory_used) take one process-wide mutex around
 * every sqlite3_malloc and sqlite3_free; with several workers stepping at once that mutex
 * was the commonest futex wait in the process. evdal never reads those statistics. The
 * setting only applies before SQLite initialises: a process that used SQLite before its
 * first pool keeps them (and works the same, a little slower). */
static void
evd_sqlite_configure_library (void)
{
  static gsize once = 0;

  if (g_once_init_enter (&once)) {
    if (sqlite3_config (SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK)
      g_debug ("SQLite was initialised before the first pool: allocation statistics stay on");
    g_once_init_leave (&once, 1);
  }
}

EvdSqlitePool *
evd_sqlite_pool_new (const char *path, int workers, int busy_timeout_ms, GError **error)
{
  g_autoptr (EvdSqlitePool) pool = NULL;

  evd_sqlite_configure_library ();
  pool = g_new0 (EvdSqlitePool, 1);

  pool->path = g_strdup (path);
  pool->busy_timeout_ms = MAX (busy_timeout_ms, 0);
  g_mutex_init (&pool->lock);
  g_cond_init (&pool->cond);
  pool->workers = g_ptr_array_new ();
  for (int i = 0; i < workers; i++) {
    EvdSqliteWorker *w = g_new0 (EvdSqliteWorker, 1);

    w->pool = pool;
    w->stmts = g_ptr_array_new_with_free_func (evd_sqlite_finalize);
    w->sizes = g_array_new (FALSE, TRUE, sizeof (EvdSqliteSize));
    g_ptr_array_add (pool->workers, w);
    w->db = evd_sqlite_open (w, path, error);
    if (w->db == NULL)
      return NULL;
    sqlite3_progress_handler (w->db, EVD_SQLITE_PROGRESS_OPS, evd_sqlite_on_progress, w);
  }
  for (guint i = 0; i < pool->workers->len; i++) {
    EvdSqliteWorker *w = pool->workers->pdata[i];
    w->thread = g_thread_new ("evdal-sqlite", evd_sqlite_worker_main, w);
  }
  return g_steal_pointer (&pool);
}

void
evd_sqlite_pool_free (EvdSqlitePool *pool)
{
  if (pool == NULL)
    return;
  g_mutex_lock (&pool->lock);
  pool->stopping = TRUE;
  g_cond_broadcast (&pool->cond);
  g_mutex_unlock (&pool->lock);
  for (guint i = 0; i < pool->workers->len; i++) {
    EvdSqliteWorker *w = pool->workers->pdata[i];

    if (w->thread != NULL)
      g_thread_join (w->thread);
    g_ptr_array_unref (w->stmts);  /* statements before their connection */
    for (guint k = 0; k < w->sizes->len; k++)
      g_clear_pointer (&g_array_index (w->sizes, EvdSqliteSize, k).columns, evd_rows_unref);
    g_array_unref (w->sizes);
    sqlite3_close (w->db);
    g_free (w);
  }
  g_ptr_array_unref (pool->workers);
  g_mutex_clear (&pool->lock);
  g_cond_clear (&pool->cond);
  g_free (pool->path);
  g_free (pool);
}

/* ---- Statements. ---- */

static sqlite3_stmt *
evd_sqlite_compile (sqlite3 *db, const char *sql, GError **error)
{
  sqlite3_stmt *st = NULL;
  const char *tail = NULL;

  if (sqlite3_prepare_v3 (db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail) != SQLITE_OK) {
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_PREPARE, "%s", sqlite3_errmsg (db));
    return NULL;
  }
  if (st == NULL) {
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_PREPARE, "no SQL statement");
    return NULL;
  }
  while (tail && g_ascii_isspace (*tail))
    tail++;
  if (tail && *tail != '\0' && *tail != ';') {
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_PREPARE,
                 "one statement only: \"%.40s\" follows the first", tail);
  } else if (!sqlite3_stmt_readonly (st)) {
    g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_PREPARE,
                 "the statement writes to the database; lookups are read-only");
  } else {
    return st;
  }
  sqlite3_finalize (st);
  return NULL;
}

int
evd_sqlite_pool_prepare (EvdSqlitePool *pool, const char *sql, GPtrArray **params,
                         GError **error)
{
  int id = -1;

  for (guint i = 0; i < pool->workers->len; i++) {
    EvdSqliteWorker *w = pool->workers->pdata[i];
    sqlite3_stmt *st = evd_sqlite_compile (w->db, sql, error);

    if (st == NULL)
      return -1;
    id = (int) w->stmts->len;
    g_ptr_array_add (w->stmts, st);
    g_array_set_size (w->sizes, w->stmts->len);  /* zeroed: no hint until its first table */
  }
  if (params != NULL && id >= 0) {
    EvdSqliteWorker *w = pool->workers->pdata[0];
    sqlite3_stmt *st = w->stmts->pdata[id];

    *params = g_ptr_array_new_with_free_func (g_free);
    for (int i = 1; i <= sqlite3_bind_parameter_count (st); i++) {
      const char *name = sqlite3_bind_parameter_name (st, i);
      if (name == NULL) {
        g_set_error (error, EVD_SQLITE_ERROR, EVD_SQLITE_ERROR_PREPARE,
                     "parameter %d has no name: use :name placeholders, not ?", i);
        g_clear_pointer (params, g_ptr_array_unref);
        return -1;
      }
      g_ptr_array_add (*params, g_strdup (name + 1));
    }
  }
  return id;
}

void
evd_sqlite_pool_submit (EvdSqlitePool *pool, EvdSqliteJob *job)
{
  gboolean wake;

  job->next = NULL;
  g_mutex_lock (&pool->lock);
  if (pool->tail != NULL)
    pool->tail->next = job;
  else
    pool->head = job;
  pool->tail = job;
  g_atomic_int_inc (&pool->queued);
  wake = evd_sqlite_want_wake (pool);
  g_mutex_unlock (&pool->lock);
  if (wake)
    g_cond_signal (&pool->cond);
}

void
evd_sqlite_job_cancel (EvdSqliteJob *job)
{
  g_atomic_int_set (&job->cancelled, TRUE);
}

guint
evd_sqlite_pool_queued (EvdSqlitePool *pool)
{
  return (guint) MAX (g_atomic_int_get (&pool->queued), 0);
}

guint
evd_sqlite_pool_busy (EvdSqlitePool *pool)
{
  return (guint) g_atomic_int_get (&pool->busy);
}

guint
evd_sqlite_pool_workers (EvdSqlitePool *pool)
{
  return pool->workers->len;
}

guint64
evd_sqlite_pool_busy_us (EvdSqlitePool *pool)
{
  return __atomic_load_n (&pool->busy_us, __ATOMIC_RELAXED);
}

guint64
evd_sqlite_pool_jobs (EvdSqlitePool *pool)
{
  return __atomic_load_n (&pool->jobs, __ATOMIC_RELAXED);
}

/* evd_sqlite: a pool of worker threads, each with its own read-only connection to one SQLite
 * database, running prepared statements for the loops.
 *
 * SQLite calls block, so they never run on an event loop. A pool owns `workers` threads; each
 * opens the database read-only (SQLITE_OPEN_READONLY and PRAGMA query_only), prepares every
 * registered statement once, and reuses it. Jobs wait in one queue per pool (its lock is
 * shared by that pool's workers and by the loops handing work over: never by all loops
 * together for anything else). A submitting loop wakes at most one worker; workers wake
 * each other for the rest (see evd_sqlite.c), so the loop's cost does not grow with the
 * statements a fetch runs.
 *
 * The life of a job. evd_sqlite_pool_submit() queues it; a worker binds its params by name,
 * steps the statement and builds the rows, then calls job->done from the worker thread,
 * exactly once, with a table or an error. evd_sqlite_job_cancel() (any thread) makes a queued
 * job complete at once with EVD_SQLITE_ERROR_INTERRUPTED when a worker reaches it, and
 * interrupts a running one through a progress handler, which also stops a statement that
 * outlives the job's deadline; a statement waiting for a lock (busy) looks at both every few
 * milliseconds too. Either way the worker is free again at once. The submitter
 * frees the job after done has run.
 */
#pragma once

#include "evd_rows.h"
#include "evd_value.h"

G_BEGIN_DECLS

typedef struct _EvdSqlitePool EvdSqlitePool;
typedef struct _EvdSqliteJob EvdSqliteJob;

/* Exactly one of rows (a reference handed over) and error. */
typedef void (*EvdSqliteDone) (EvdSqliteJob *job, EvdRows *rows, GError *error);

struct _EvdSqliteJob {
  int stmt;                 /* from evd_sqlite_pool_prepare */
  const EvdParam *params;   /* borrowed until done */
  guint n_params;
  int max_rows;
  gint64 deadline_us;       /* monotonic; the statement is interrupted past it */
  gint cancelled;           /* atomic */
  EvdSqliteDone done;
  gpointer data;
};

#define EVD_SQLITE_ERROR (evd_sqlite_error_quark ())
GQuark evd_sqlite_error_quark (void);
typedef enum {
  EVD_SQLITE_ERROR_OPEN,         /* missing, unreadable or corrupt database */
  EVD_SQLITE_ERROR_PREPARE,      /* a statement that does not compile, writes, or is several */
  EVD_SQLITE_ERROR_INTERRUPTED,  /* cancelled, or its deadline passed */
  EVD_SQLITE_ERROR_TOO_MANY_ROWS,
  EVD_SQLITE_ERROR_FAILED,       /* SQLite failed the statement (busy for too long, I/O...) */
} EvdSqliteError;

/* Opens `workers` read-only connections to `path` and starts their threads. Fails with the
 * path when the file is missing or is not a database. A statement that finds the database
 * locked retries for up to `busy_timeout_ms` in all, then fails (EVD_SQLITE_ERROR_FAILED). */
EvdSqlitePool *evd_sqlite_pool_new (const char *path, int workers, int busy_timeout_ms,
                                    GError **error);
/* Stops the workers once the queue is empty, closes the connections. */
void evd_sqlite_pool_free (EvdSqlitePool *pool);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdSqlitePool, evd_sqlite_pool_free)

/* Compiles `sql` on every connection (start-up only, before any job). Returns the statement's
 * id, or -1 with an error naming SQLite's message. `params` receives its parameter names
 * without their prefix (":user_id" -> "user_id"). */
int evd_sqlite_pool_prepare (EvdSqlitePool *pool, const char *sql, GPtrArray **params,
                             GError **error);

void evd_sqlite_pool_submit (EvdSqlitePool *pool, EvdSqliteJob *job);
void evd_sqlite_job_cancel (EvdSqliteJob *job);

/* Jobs waiting for a worker, and workers running one: for metrics and tests. */
guint evd_sqlite_pool_queued (EvdSqlitePool *pool);
guint evd_sqlite_pool_busy (EvdSqlitePool *pool);
guint evd_sqlite_pool_workers (EvdSqlitePool *pool);
/* Time the workers have spent running statements, summed (utilisation = its rate / workers),
 * and the statements run. */
guint64 evd_sqlite_pool_busy_us (EvdSqlitePool *pool);
guint64 evd_sqlite_pool_jobs (EvdSqlitePool *pool);

G_END_DECLS

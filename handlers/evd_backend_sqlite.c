/* evd_backend_sqlite: lookups written as one SQL statement in the config, run on a database's
 * worker pool (storage/evd_sqlite.c), never on a loop.
 *
 *   [database main]
 *   backend = sqlite          # the default
 *   path = sample.db          # relative to the config file's folder
 *   workers = 4               # threads, each with its own read-only connection
 *   busy_timeout_ms = 1000    # how long a statement retries while a writer holds a lock
 *
 *   [lookup user]
 *   database = main           # implies backend = sqlite
 *   sql = SELECT id, name, email FROM users WHERE id = :user_id
 *   max_rows = 1000           # more rows than this is a BACKEND error, not a huge reply
 *
 * Every statement is compiled at start-up on every worker's connection: SQL that does not
 * compile or that writes stops start-up with the lookup's name and SQLite's message. The
 * lookup's params are the statement's :name placeholders, all required, any Value type.
 */
#include <string.h>

#include "evd_backend.h"
#include "evd_metrics.h"
#include "evd_sqlite.h"

typedef struct {
  GHashTable *pools;        /* database name -> EvdSqlitePool *, those that opened */
  GHashTable *names;        /* every [database NAME] configured, opened or not */
} EvdBackendSqliteShared;

typedef struct {
  EvdSqlitePool *pool;
  int stmt;
  int max_rows;
} EvdBackendSqliteLookup;

/* A job shared by the loop (cancel) and a worker (run). It lives in the call's own room
 * (evd_backend_call_room), so it is alive as long as the call: cancel() never finds it freed,
 * and no statement costs an allocation and a free. */
typedef struct {
  EvdSqliteJob job;
  EvdBackendCall *call;
} EvdBackendSqliteCall;

G_STATIC_ASSERT (sizeof (EvdBackendSqliteCall) <= EVD_BACKEND_CALL_ROOM);

/* ---- [database NAME] ---- */

static void
evd_backend_sqlite_open_database (EvdBackendSqliteShared *sh, EvdConfig *cfg, const char *group)
{
  const char *name = group + strlen ("database ");
  g_autofree char *path = NULL;
  g_autofree char *full = NULL;
  int workers = (int) evd_config_int (cfg, group, "workers", evd_config_server (cfg)->workers,
                                      1, 1024);
  int busy_ms = (int) evd_config_int (cfg, group, "busy_timeout_ms", 1000, 0, 600000);
  g_autoptr (GError) error = NULL;
  EvdSqlitePool *pool;

  path = evd_config_require (cfg, group, "path");
  if (path == NULL)
    return;
  full = evd_config_resolve_path (cfg, path);
  pool = evd_sqlite_pool_new (full, workers, busy_ms, &error);
  if (pool == NULL) {
    evd_config_problem (cfg, group, "path", "%s", error->message);
    return;
  }
  g_hash_table_insert (sh->pools, g_strdup (name), pool);
}

static gpointer
evd_backend_sqlite_setup (EvdConfig *cfg)
{
  EvdBackendSqliteShared *sh = g_new0 (EvdBackendSqliteShared, 1);
  g_auto (GStrv) groups = evd_backend_sections (cfg, "database", "sqlite");

  sh->pools = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                     (GDestroyNotify) evd_sqlite_pool_free);
  sh->names = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; groups[i] != NULL; i++) {
    g_hash_table_add (sh->names, g_strdup (groups[i] + strlen ("database ")));
    evd_backend_sqlite_open_database (sh, cfg, groups[i]);
  }
  return sh;
}

static void
evd_backend_sqlite_teardown (gpointer shared)
{
  EvdBackendSqliteShared *sh = shared;

  g_hash_table_unref (sh->pools);
  g_hash_table_unref (sh->names);
  g_free (sh);
}

/* Per database: workers, how many are busy, the queue, and busy time (utilisation is
 * rate(evdal_sqlite_busy_seconds_total) / evdal_sqlite_workers). */
static void
evd_backend_sqlite_collect (gpointer shared, GString *out)
{
  EvdBackendSqliteShared *sh = shared;
  static const struct {
    const char *name, *type, *help;
  } families[] = {
    { "evdal_sqlite_workers", "gauge", "Worker threads of each database." },
    { "evdal_sqlite_workers_busy", "gauge", "Workers running a statement now." },
    { "evdal_sqlite_queue_depth", "gauge", "Statements waiting for a worker." },
    { "evdal_sqlite_busy_seconds_total", "counter", "Time workers spent running statements." },
    { "evdal_sqlite_statements_total", "counter", "Statements run." },
  };

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    GHashTableIter it;
    gpointer name, pool;

    evd_metrics_family (out, families[f].name, families[f].type, families[f].help);
    g_hash_table_iter_init (&it, sh->pools);
    while (g_hash_table_iter_next (&it, &name, &pool)) {
      double v = f == 0 ? evd_sqlite_pool_workers (pool)
               : f == 1 ? evd_sqlite_pool_busy (pool)
               : f == 2 ? evd_sqlite_pool_queued (pool)
               : f == 3 ? evd_sqlite_pool_busy_us (pool) / 1e6
                        : (double) evd_sqlite_pool_jobs (pool);
      evd_metrics_sample (out, families[f].name, v, "database", (const char *) name, NULL);
    }
  }
}

/* ---- [lookup NAME] ---- */

static gpointer
evd_backend_sqlite_lookup_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  EvdBackendSqliteShared *sh = shared;
  g_autofree char *db = evd_config_require (cfg, spec->group, "database");
  g_autofree char *sql = evd_config_require (cfg, spec->group, "sql");
  int max_rows = (int) evd_config_int (cfg, spec->group, "max_rows", 1000, 1, 10000000);
  g_autoptr (GPtrArray) params = NULL;
  g_autoptr (GError) error = NULL;
  EvdBackendSqliteLookup *l;

  if (db == NULL || sql == NULL)
    return NULL;
  l = g_new0 (EvdBackendSqliteLookup, 1);
  l->pool = g_hash_table_lookup (sh->pools, db);
  l->max_rows = max_rows;
  if (l->pool == NULL) {
    /* A database that failed to open has said so already. */
    if (!g_hash_table_contains (sh->names, db))
      evd_config_problem (cfg, spec->group, "database", "no [database %s] is configured", db);
    g_free (l);
    return NULL;
  }
  l->stmt = evd_sqlite_pool_prepare (l->pool, sql, &params, &error);
  if (l->stmt < 0) {
    evd_config_problem (cfg, spec->group, "sql", "lookup %s: %s", spec->name, error->message);
    g_free (l);
    return NULL;
  }
  for (guint i = 0; i < params->len; i++)
    evd_lookup_spec_add_param (spec, params->pdata[i], EVD_PARAM_ANY, TRUE);
  g_free (spec->backend_name);
  spec->backend_name = g_strdup_printf ("sqlite:%s", db);
  return l;
}

static void
evd_backend_sqlite_lookup_close (gpointer backend)
{
  g_free (backend);
}

/* ---- Calls. ---- */

/* On the worker thread. */
static void
evd_backend_sqlite_on_done (EvdSqliteJob *job, EvdRows *rows, GError *error)
{
  EvdBackendSqliteCall *sc = (EvdBackendSqliteCall *) job;

  if (rows != NULL) {
    evd_backend_call_return (sc->call, rows);
    return;
  }
  switch (error->code) {
  case EVD_SQLITE_ERROR_INTERRUPTED:
    evd_backend_call_fail (sc->call, g_atomic_int_get (&job->cancelled)
                           ? EVD_ERROR_KIND_CANCELLED : EVD_ERROR_KIND_TIMEOUT,
                           "%s", error->message);
    break;
  default:
    evd_backend_call_fail (sc->call, EVD_ERROR_KIND_BACKEND, "%s", error->message);
  }
}

static void
evd_backend_sqlite_start (gpointer backend, EvdBackendCall *call)
{
  EvdBackendSqliteLookup *l = backend;
  EvdBackendSqliteCall *sc = evd_backend_call_room (call, sizeof *sc);

  sc->call = call;
  sc->job.stmt = l->stmt;
  sc->job.params = evd_backend_call_params (call, &sc->job.n_params);
  sc->job.max_rows = l->max_rows;
  sc->job.deadline_us = evd_backend_call_deadline_us (call);
  sc->job.done = evd_backend_sqlite_on_done;
  *evd_backend_call_data (call) = sc;
  evd_sqlite_pool_submit (l->pool, &sc->job);
}

static void
evd_backend_sqlite_cancel (gpointer backend, EvdBackendCall *call)
{
  EvdBackendSqliteCall *sc = *evd_backend_call_data (call);

  (void) backend;
  evd_sqlite_job_cancel (&sc->job);  /* the worker completes it, interrupted */
}

const EvdBackendClass evd_backend_sqlite_class = {
  .kind = "sqlite",
  .setup = evd_backend_sqlite_setup,
  .teardown = evd_backend_sqlite_teardown,
  .open = evd_backend_sqlite_lookup_open,
  .start = evd_backend_sqlite_start,
  .cancel = evd_backend_sqlite_cancel,
  .close = evd_backend_sqlite_lookup_close,
  .collect = evd_backend_sqlite_collect,
};

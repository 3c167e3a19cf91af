/* evd_backend_postgresql: lookups written as one SQL statement, run by PostgreSQL through
 * libpq's asynchronous API on the IO loops themselves (storage/evd_pg.c): no thread per call.
 *
 *   [database shop]
 *   backend = postgresql
 *   conninfo = host=/run/postgresql dbname=shop user=evdal_ro   # any libpq string or URI
 *   connections = 4               # per IO loop; opened at start-up, reopened when lost
 *   statement_timeout_ms = 5000   # server-side backstop; each call is also cut at its deadline
 *   connect_timeout_ms = 2000     # one connection attempt, name resolution included
 *   standby_recheck_ms = 30000    # prefer-standby: a connection that fell back to the
 *                                 # primary is remade after this (0: never)
 *
 *   [lookup user]
 *   database = shop               # implies backend = postgresql
 *   sql = SELECT id, name, email FROM users WHERE id = :user_id
 *   max_rows = 1000
 *
 * Each database has one pool of connections per IO loop (evd_loop_local), opened when the
 * loop attaches the config's lookups. When the database answers at start-up (or reload), every
 * lookup's statement is prepared and described there first: one that does not prepare,
 * returns no columns or has a param PostgreSQL cannot type stops start-up with the lookup's
 * name and PostgreSQL's message. When it does not answer, evdal starts anyway: its lookups
 * fail at once with BACKEND "database NAME unavailable: ..." until a connection is up.
 *
 * Replicas: `conninfo = host=replica,primary ... target_session_attrs=prefer-standby` reads
 * from the standby and falls back to the primary when it is gone (libpq picks; evd_pg.h tells
 * how evdal retries and recycles). A connection lost before its query was answered, or none
 * to be had, fails the call as retryable (a lookup with `retries` sends it again); an SQL
 * error does not.
 */
#include <string.h>

#include "evd_backend.h"
#include "evd_loop_local.h"
#include "evd_metrics.h"
#include "evd_pg.h"

/* Bounds the server-side check of each lookup at start-up and reload (the main thread waits
 * for it; no IO loop does): a database that does not answer in time is taken as down. */
#define EVD_BACKEND_POSTGRESQL_CHECK_MAX_MS 2000
/* client_connection_check_interval: how soon the server notices evdal closed a connection
 * whose query it gave up, and stops that query. */
#define EVD_BACKEND_POSTGRESQL_CHECK_INTERVAL_MS 1000
/* standby_recheck_ms: how long reads stay on the primary after a standby came back. A
 * reconnect costs a few milliseconds of one connection every this often, and only while a
 * standby is missing; half a minute keeps that negligible and a standby's return prompt. */
#define EVD_BACKEND_POSTGRESQL_STANDBY_RECHECK_MS 30000

typedef struct {
  gint refs;                /* the shared state's, and one per loop's pool */
  EvdPgDb *db;
  EvdLoopLocal *pools;      /* EvdBackendPostgresqlLoopPool per IO loop */
  gboolean down;            /* did not answer the start-up check: the others are skipped */
} EvdBackendPostgresqlDatabase;

typedef struct {
  GHashTable *dbs;          /* name -> EvdBackendPostgresqlDatabase * */
} EvdBackendPostgresqlShared;

typedef struct {
  EvdPgPool *pool;
  EvdBackendPostgresqlDatabase *pdb;
} EvdBackendPostgresqlLoopPool;

typedef struct {
  EvdBackendPostgresqlDatabase *pdb;
  int stmt;
  int max_rows;
} EvdBackendPostgresqlLookup;

/* One call: the query the pool completes, and the call it answers. Freed by release(). */
typedef struct {
  EvdPgQuery q;
  EvdBackendCall *call;
  char *comment;            /* the trace context for pg_stat_activity; NULL when unsampled */
} EvdBackendPostgresqlCall;

static void
evd_backend_postgresql_database_unref (EvdBackendPostgresqlDatabase *pdb)
{
  if (!g_atomic_int_dec_and_test (&pdb->refs))
    return;
  evd_pg_db_free (pdb->db);
  g_free (pdb);
}

/* ---- Per-loop pools. ---- */

static gpointer
evd_backend_postgresql_loop_pool_make (EvdLoop *loop, gpointer owner)
{
  EvdBackendPostgresqlDatabase *pdb = owner;
  EvdBackendPostgresqlLoopPool *lp = g_new0 (EvdBackendPostgresqlLoopPool, 1);

  g_atomic_int_inc (&pdb->refs);
  lp->pdb = pdb;
  lp->pool = evd_pg_pool_new (pdb->db, evd_loop_base (loop));
  return lp;
}

static void
evd_backend_postgresql_loop_pool_destroy (gpointer data)
{
  EvdBackendPostgresqlLoopPool *lp = data;

  evd_pg_pool_free (lp->pool);
  evd_backend_postgresql_database_unref (lp->pdb);
  g_free (lp);
}

/* ---- [database NAME] ---- */

/* A loop's pool lost its last connection, or has one again: said once per change. */
static void
evd_backend_postgresql_on_notify (gpointer data, gboolean up, const char *message)
{
  EvdBackendPostgresqlDatabase *pdb = data;

  if (up)
    g_message ("database %s: connected", evd_pg_db_name (pdb->db));
  else
    g_warning ("database %s unavailable: %s; reconnecting", evd_pg_db_name (pdb->db), message);
}

static void
evd_backend_postgresql_open_database (EvdBackendPostgresqlShared *sh, EvdConfig *cfg, const char *group)
{
  const char *name = group + strlen ("database ");
  g_autofree char *conninfo = evd_config_require (cfg, group, "conninfo");
  EvdPgOptions o = {
    .connections = (int) evd_config_int (cfg, group, "connections", 4, 1, 256),
    .statement_timeout_ms = (int) evd_config_int (cfg, group, "statement_timeout_ms", 5000, 0,
                                                  3600000),
    .connect_timeout_ms = (int) evd_config_int (cfg, group, "connect_timeout_ms", 2000, 10,
                                                600000),
    .check_interval_ms = EVD_BACKEND_POSTGRESQL_CHECK_INTERVAL_MS,
    .standby_recheck_ms = (int) evd_config_int (cfg, group, "standby_recheck_ms",
                                                EVD_BACKEND_POSTGRESQL_STANDBY_RECHECK_MS, 0,
                                                86400000),
  };
  g_autoptr (GError) error = NULL;
  EvdBackendPostgresqlDatabase *pdb;
  EvdPgDb *db;

  if (conninfo == NULL)
    return;
  pdb = g_new0 (EvdBackendPostgresqlDatabase, 1);
  o.notify = evd_backend_postgresql_on_notify;
  o.notify_data = pdb;
  db = evd_pg_db_new (name, conninfo, &o, &error);
  if (db == NULL) {
    evd_config_problem (cfg, group, "conninfo", "%s", error->message);
    g_free (pdb);
    return;
  }
  pdb->refs = 1;
  pdb->db = db;
  pdb->pools = evd_loop_local_new (evd_backend_postgresql_loop_pool_make, evd_backend_postgresql_loop_pool_destroy, pdb);
  g_hash_table_insert (sh->dbs, g_strdup (name), pdb);
}

static gpointer
evd_backend_postgresql_setup (EvdConfig *cfg)
{
  EvdBackendPostgresqlShared *sh = g_new0 (EvdBackendPostgresqlShared, 1);
  g_auto (GStrv) groups = evd_backend_sections (cfg, "database", "postgresql");

  sh->dbs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; groups[i] != NULL; i++)
    evd_backend_postgresql_open_database (sh, cfg, groups[i]);
  return sh;
}

static void
evd_backend_postgresql_teardown (gpointer shared)
{
  EvdBackendPostgresqlShared *sh = shared;
  GHashTableIter it;
  gpointer name, pdb;

  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, &name, &pdb)) {
    evd_loop_local_free (((EvdBackendPostgresqlDatabase *) pdb)->pools);  /* each pool goes on its loop */
    evd_backend_postgresql_database_unref (pdb);
  }
  g_hash_table_unref (sh->dbs);
  g_free (sh);
}

static void
evd_backend_postgresql_attach (gpointer shared, EvdLoop *loop)
{
  EvdBackendPostgresqlShared *sh = shared;
  GHashTableIter it;
  gpointer name, pdb;

  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, &name, &pdb))
    evd_loop_local_get (((EvdBackendPostgresqlDatabase *) pdb)->pools, loop);
}

/* Per database: connections by state, queries running and queued, reconnects. */
static void
evd_backend_postgresql_collect (gpointer shared, GString *out)
{
  EvdBackendPostgresqlShared *sh = shared;
  static const struct {
    const char *name, *type, *help;
  } families[] = {
    { "evdal_postgresql_connections", "gauge",
      "Connections of each database (all IO loops) by state: up, connecting, broken." },
    { "evdal_postgresql_in_flight", "gauge", "Queries running on a connection now." },
    { "evdal_postgresql_queue_depth", "gauge", "Queries waiting for a free connection." },
    { "evdal_postgresql_reconnects_total", "counter", "Connection attempts after the first." },
    { "evdal_postgresql_queries_total", "counter", "Queries sent." },
    { "evdal_postgresql_failures_total", "counter", "Queries that failed (BACKEND)." },
    { "evdal_postgresql_connections_by_role", "gauge",
      "Connections up by their server's role (in_hot_standby): standby, primary." },
    { "evdal_postgresql_recycles_total", "counter",
      "prefer-standby connections on a primary closed and remade after standby_recheck_ms." },
  };

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    GHashTableIter it;
    gpointer name, pdb;

    evd_metrics_family (out, families[f].name, families[f].type, families[f].help);
    g_hash_table_iter_init (&it, sh->dbs);
    while (g_hash_table_iter_next (&it, &name, &pdb)) {
      EvdPgStats s;

      evd_pg_db_stats (((EvdBackendPostgresqlDatabase *) pdb)->db, &s);
      if (f == 6) {
        evd_metrics_sample (out, families[f].name, s.standby, "database", (const char *) name,
                            "role", "standby", NULL);
        evd_metrics_sample (out, families[f].name, s.primary, "database", (const char *) name,
                            "role", "primary", NULL);
        continue;
      }
      if (f == 0) {
        evd_metrics_sample (out, families[f].name, s.up, "database", (const char *) name,
                            "state", "up", NULL);
        evd_metrics_sample (out, families[f].name, s.connecting, "database",
                            (const char *) name, "state", "connecting", NULL);
        evd_metrics_sample (out, families[f].name, s.broken, "database", (const char *) name,
                            "state", "broken", NULL);
        continue;
      }
      evd_metrics_sample (out, families[f].name,
                          f == 1 ? s.in_flight : f == 2 ? s.queued
                          : f == 3 ? (double) s.reconnects : f == 4 ? (double) s.queries
                          : f == 5 ? (double) s.failures : (double) s.recycles,
                          "database", (const char *) name, NULL);
    }
  }
}

/* "database shop: 8/8 connections up" (or "unavailable" with none up), for /health. */
static void
evd_backend_postgresql_health (gpointer shared, GString *out)
{
  EvdBackendPostgresqlShared *sh = shared;
  GHashTableIter it;
  gpointer name, pdb;

  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, &name, &pdb)) {
    EvdPgStats s;
    int total;

    evd_pg_db_stats (((EvdBackendPostgresqlDatabase *) pdb)->db, &s);
    total = s.up + s.connecting + s.broken;
    evd_backend_health_line (out, "database", name, s.up, total);
  }
}

/* ---- [lookup NAME] ---- */

static void
evd_backend_postgresql_check_lookup (EvdBackendPostgresqlDatabase *pdb, EvdConfig *cfg, EvdLookupSpec *spec, int stmt,
                     gboolean *ok)
{
  g_autoptr (GError) error = NULL;

  *ok = TRUE;
  if (pdb->down)
    return;
  if (evd_pg_db_check (pdb->db, stmt, EVD_BACKEND_POSTGRESQL_CHECK_MAX_MS, &error))
    return;
  if (g_error_matches (error, EVD_PG_ERROR, EVD_PG_ERROR_SERVER)) {
    evd_config_problem (cfg, spec->group, "sql", "lookup %s: %s", spec->name, error->message);
    *ok = FALSE;
    return;
  }
  /* Down: start anyway, its lookups unchecked, and say so once. */
  pdb->down = TRUE;
  g_warning ("%s; its lookups are not checked now and fail until it answers",
             error->message);
}

static gpointer
evd_backend_postgresql_lookup_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  EvdBackendPostgresqlShared *sh = shared;
  g_autofree char *db = evd_config_require (cfg, spec->group, "database");
  g_autofree char *sql = evd_config_require (cfg, spec->group, "sql");
  int max_rows = (int) evd_config_int (cfg, spec->group, "max_rows", 1000, 1, 10000000);
  g_autoptr (GError) error = NULL;
  const char *const *names;
  guint n_names;
  EvdBackendPostgresqlDatabase *pdb;
  EvdBackendPostgresqlLookup *l;
  gboolean ok;
  int stmt;

  if (db == NULL || sql == NULL)
    return NULL;
  pdb = g_hash_table_lookup (sh->dbs, db);
  if (pdb == NULL) {
    /* One that failed to open has said so already. */
    g_autofree char *group = g_strdup_printf ("database %s", db);

    if (!evd_config_has_key (cfg, group, "conninfo"))
      evd_config_problem (cfg, spec->group, "database",
                          "no [database %s] with backend = postgresql is configured", db);
    return NULL;
  }
  stmt = evd_pg_db_add_statement (pdb->db, sql, &names, &n_names, &error);
  if (stmt < 0) {
    evd_config_problem (cfg, spec->group, "sql", "lookup %s: %s", spec->name, error->message);
    return NULL;
  }
  evd_backend_postgresql_check_lookup (pdb, cfg, spec, stmt, &ok);
  if (!ok)
    return NULL;
  for (guint i = 0; i < n_names; i++)
    evd_lookup_spec_add_param (spec, names[i], EVD_PARAM_ANY, TRUE);
  l = g_new0 (EvdBackendPostgresqlLookup, 1);
  l->pdb = pdb;
  l->stmt = stmt;
  l->max_rows = max_rows;
  g_free (spec->backend_name);
  spec->backend_name = g_strdup_printf ("postgresql:%s", db);
  return l;
}

static void
evd_backend_postgresql_lookup_close (gpointer backend)
{
  g_free (backend);
}

/* ---- Calls. ---- */

/* On the call's loop, inside evd_pg_pool_submit or a later loop callback. */
static void
evd_backend_postgresql_on_done (EvdPgQuery *q, EvdPgStatus status, EvdRows *rows, const char *message)
{
  EvdBackendPostgresqlCall *pc = (EvdBackendPostgresqlCall *) q;

  switch (status) {
  case EVD_PG_OK:
    evd_backend_call_return (pc->call, rows);
    break;
  case EVD_PG_CANCELLED:
    evd_backend_call_fail (pc->call, EVD_ERROR_KIND_CANCELLED, "cancelled");
    break;
  case EVD_PG_LOST:
    evd_backend_call_fail_retryable (pc->call, EVD_ERROR_KIND_BACKEND, "%s", message);
    break;
  default:
    evd_backend_call_fail (pc->call, EVD_ERROR_KIND_BACKEND, "%s", message);
  }
}

/* Trace context out: a sampled call's statement carries its traceparent (this call's span as
 * parent) and the caller's tracestate as a sqlcommenter comment, which pg_stat_activity shows
 * while it runs (docs/ARCHITECTURE.md, "Distributed tracing"). Not application_name: a SET
 * costs a statement of its own before the query (libpq sends one query per Sync outside
 * pipeline mode) and another to clear it after, or the session keeps showing a finished
 * call's context; and unsampled calls would pay for the clearing. Unsampled calls keep the
 * prepared statement and pay one flag test. */
static char *
evd_backend_postgresql_trace_comment (EvdBackendCall *call)
{
  char traceparent[EVD_TRACEPARENT_LEN + 1];
  const char *pairs[] = { "traceparent", traceparent,
                          "tracestate", evd_backend_call_tracestate (call), NULL };

  if (!evd_backend_call_sampled (call))
    return NULL;
  evd_backend_call_traceparent (call, traceparent);
  return evd_pg_sql_comment (pairs);
}

static void
evd_backend_postgresql_start (gpointer backend, EvdBackendCall *call)
{
  EvdBackendPostgresqlLookup *l = backend;
  EvdBackendPostgresqlLoopPool *lp = evd_loop_local_get (l->pdb->pools, evd_backend_call_loop (call));
  EvdBackendPostgresqlCall *pc = g_new0 (EvdBackendPostgresqlCall, 1);

  pc->call = call;
  pc->q.stmt = l->stmt;
  pc->q.params = evd_backend_call_params (call, &pc->q.n_params);
  pc->q.max_rows = l->max_rows;
  pc->q.done = evd_backend_postgresql_on_done;
  pc->comment = evd_backend_postgresql_trace_comment (call);
  pc->q.comment = pc->comment;
  *evd_backend_call_data (call) = pc;
  evd_pg_pool_submit (lp->pool, &pc->q);
}

static void
evd_backend_postgresql_cancel (gpointer backend, EvdBackendCall *call)
{
  EvdBackendPostgresqlCall *pc = *evd_backend_call_data (call);

  (void) backend;
  if (pc != NULL)
    evd_pg_query_cancel (&pc->q);   /* completes it at once unless it has completed */
}

static void
evd_backend_postgresql_release (gpointer backend, EvdBackendCall *call)
{
  EvdBackendPostgresqlCall *pc = *evd_backend_call_data (call);

  (void) backend;
  *evd_backend_call_data (call) = NULL;
  g_free (pc->comment);
  g_free (pc);
}

const EvdBackendClass evd_backend_postgresql_class = {
  .kind = "postgresql",
  .setup = evd_backend_postgresql_setup,
  .teardown = evd_backend_postgresql_teardown,
  .attach = evd_backend_postgresql_attach,
  .open = evd_backend_postgresql_lookup_open,
  .start = evd_backend_postgresql_start,
  .cancel = evd_backend_postgresql_cancel,
  .release = evd_backend_postgresql_release,
  .close = evd_backend_postgresql_lookup_close,
  .collect = evd_backend_postgresql_collect,
  .health = evd_backend_postgresql_health,
};

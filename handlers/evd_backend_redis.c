/* evd_backend_redis: lookups answered by a Redis command, on evdal's own pipelined connections
 * (storage/evd_redis.c), each IO loop with its own.
 *
 *   [database cache]
 *   backend = redis
 *   address = 127.0.0.1:6379        # host:port, [v6]:port, or an absolute unix socket path
 *   connections = 2                 # per IO loop
 *   password_file = redis.pass      # optional (AUTH), relative to the config's folder
 *   max_reply_bytes = 16000000      # a longer reply fails its call (default: [server]'s)
 *
 *   [lookup session]
 *   database = cache
 *   command = HGETALL session:{session_id}
 *   max_rows = 1000                 # more rows than this is a BACKEND error, as for SQL
 *
 * The command is split into arguments when the config is read; {name} is the call's param
 * inside one argument, so no param can add, remove or split arguments. Only read-only commands
 * are allowed (evd_redis_allowed_commands): any other stops start-up naming the lookup and
 * the command. The connections are opened when the config starts serving on a loop (attach),
 * never by --check-config, which checks templates and addresses only.
 */
#include <string.h>

#include "evd_backend.h"
#include "evd_loop_local.h"
#include "evd_metrics.h"
#include "evd_redis.h"

/* Call outcomes counted per database: 0 rows, then the IDL's ErrorKind values. */
static const char *const evd_redis_kind_names[EVD_ERROR_KIND_N] = {
  "ok", "unknown_lookup", "bad_params", "timeout", "backend", "overloaded", "cancelled",
};

/* One [database NAME] of kind redis. Reference counted: each loop's client holds one, since
 * it is destroyed on its loop after teardown (and counts into `stats` until then). A
 * gatomicrefcount rather than g_atomic_rc_box: the TSan build can only follow
 * g_atomic_ref_count_* (tests/tsan/evd_tsan_glib.c replaces them), not the rc_box's calls
 * inside libglib, and two loops dropping their clients' references at a reload then looked
 * like a race with the free (a CI rehearsal's TSan run of e2e/test_redis). */
typedef struct {
  gatomicrefcount refs;
  char *name;
  char *address;
  char *host;               /* address without the port: the calls' spans' server.address */
  char *password;           /* NULL: no AUTH */
  guint connections;
  gsize max_reply_bytes;
  EvdRedisStats stats;
  guint64 calls[EVD_ERROR_KIND_N];   /* relaxed atomics */
  EvdHistogram latency;
  EvdLoopLocal *clients;    /* EvdRedisLoopClient per IO loop */
} EvdRedisDb;

typedef struct {
  EvdRedisClient *client;
  EvdRedisDb *db;           /* a reference */
} EvdRedisLoopClient;

typedef struct {
  GHashTable *dbs;          /* name -> EvdRedisDb *, those configured without problems */
} EvdRedisShared;

typedef struct {
  EvdRedisDb *db;
  EvdRedisTemplate *tmpl;   /* with the lookup's max_rows, which evd_redis enforces */
} EvdRedisLookup;

/* A call in flight: what its completion needs (the data slot points here until then). */
typedef struct {
  EvdBackendCall *call;
  EvdRedisCall *rc;         /* NULL until sent */
  EvdRedisDb *db;
  gint64 start_us;
} EvdRedisBackendCall;

static void
evd_redis_db_unref (EvdRedisDb *db)
{
  if (!g_atomic_ref_count_dec (&db->refs))
    return;
  g_free (db->name);
  g_free (db->address);
  g_free (db->host);
  if (db->password != NULL)
    memset (db->password, 0, strlen (db->password));
  g_free (db->password);
  g_free (db);
}

static gpointer
evd_redis_loop_client_new (EvdLoop *loop, gpointer owner)
{
  EvdRedisDb *db = owner;
  EvdRedisLoopClient *lc = g_new0 (EvdRedisLoopClient, 1);
  EvdRedisOptions o = {
    .name = db->name, .address = db->address, .password = db->password,
    .connections = db->connections, .stats = &db->stats,
    .max_reply_bytes = db->max_reply_bytes,
  };

  g_atomic_ref_count_inc (&db->refs);
  lc->db = db;
  lc->client = evd_redis_client_new (evd_loop_base (loop), &o);
  return lc;
}

static void
evd_redis_loop_client_free (gpointer data)
{
  EvdRedisLoopClient *lc = data;

  evd_redis_client_free (lc->client);
  evd_redis_db_unref (lc->db);
  g_free (lc);
}

/* ---- [database NAME] ---- */

/* The first line of the password file, without its line end. */
static char *
evd_redis_read_password (EvdConfig *cfg, const char *group, const char *file)
{
  g_autofree char *path = evd_config_resolve_path (cfg, file);
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;
  char *password;

  if (!g_file_get_contents (path, &text, NULL, &error)) {
    evd_config_problem (cfg, group, "password_file", "%s", error->message);
    return NULL;
  }
  text[strcspn (text, "\r\n")] = '\0';
  if (text[0] == '\0') {
    evd_config_problem (cfg, group, "password_file", "%s: the first line is empty", path);
    return NULL;
  }
  password = g_strdup (text);
  memset (text, 0, strlen (text));   /* one copy of the secret, wiped when its database goes */
  return password;
}


/* "host:port" -> "host", "[v6]:port" -> "v6", a unix socket path as it is (checked before). */
static char *
evd_redis_host_of (const char *address)
{
  const char *colon = strrchr (address, ':');

  if (address[0] == '/' || colon == NULL)
    return g_strdup (address);
  if (address[0] == '[' && colon > address + 1 && colon[-1] == ']')
    return g_strndup (address + 1, (gsize) (colon - address - 2));
  return g_strndup (address, (gsize) (colon - address));
}

static void
evd_redis_open_database (EvdRedisShared *sh, EvdConfig *cfg, const char *group)
{
  g_autofree char *address = evd_config_require (cfg, group, "address");
  g_autofree char *password_file = evd_config_string (cfg, group, "password_file", NULL);
  /* 2: a slow reply (a large HGETALL) delays only the calls behind it on its connection. */
  guint connections = (guint) evd_config_int (cfg, group, "connections", 2, 1, 256);
  /* A reply's rows could not go back in a bigger Thrift reply anyway; the bound is on the
   * wire bytes, checked as they come, so a huge value is refused before it is all held. */
  gsize max_reply_bytes = (gsize) evd_config_int (cfg, group, "max_reply_bytes",
                                                  evd_config_server (cfg)->max_reply_bytes,
                                                  64, 1 << 30);
  g_autoptr (GError) error = NULL;
  EvdRedisDb *db;

  if (evd_config_has_key (cfg, group, "password")) {
    evd_config_mark_used (cfg, group, "password");
    evd_config_problem (cfg, group, "password",
                        "a password is never written in the config: use password_file");
  }
  if (address == NULL)
    return;
  if (!evd_redis_address_check (address, &error)) {
    evd_config_problem (cfg, group, "address", "%s", error->message);
    return;
  }
  db = g_new0 (EvdRedisDb, 1);
  g_atomic_ref_count_init (&db->refs);
  db->name = g_strdup (group + strlen ("database "));
  db->host = evd_redis_host_of (address);
  db->address = g_steal_pointer (&address);
  db->connections = connections;
  db->max_reply_bytes = max_reply_bytes;
  if (password_file != NULL && (db->password = evd_redis_read_password (cfg, group,
                                                                        password_file)) == NULL) {
    evd_redis_db_unref (db);
    return;
  }
  db->clients = evd_loop_local_new (evd_redis_loop_client_new, evd_redis_loop_client_free, db);
  g_hash_table_insert (sh->dbs, db->name, db);
}

static void
evd_redis_db_close (gpointer data)
{
  EvdRedisDb *db = data;

  evd_loop_local_free (db->clients);  /* each loop's client goes on its loop, later */
  evd_redis_db_unref (db);
}

static gpointer
evd_redis_setup (EvdConfig *cfg)
{
  EvdRedisShared *sh = g_new0 (EvdRedisShared, 1);
  g_auto (GStrv) groups = evd_backend_sections (cfg, "database", "redis");

  sh->dbs = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, evd_redis_db_close);
  for (guint i = 0; groups[i] != NULL; i++)
    evd_redis_open_database (sh, cfg, groups[i]);
  return sh;
}

static void
evd_redis_teardown (gpointer shared)
{
  EvdRedisShared *sh = shared;

  g_hash_table_unref (sh->dbs);
  g_free (sh);
}

/* Connections open when the config starts serving on a loop, not at the first call. */
static void
evd_redis_attach (gpointer shared, EvdLoop *loop)
{
  EvdRedisShared *sh = shared;
  GHashTableIter it;
  gpointer db;

  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, NULL, &db))
    evd_loop_local_get (((EvdRedisDb *) db)->clients, loop);
}

/* The per-database samples, by family: what each reads from a database (atomics only: this
 * runs on the admin thread). */
typedef enum { EVD_REDIS_CONNECTIONS, EVD_REDIS_IN_FLIGHT, EVD_REDIS_LOSSES } EvdRedisGauge;

static double
evd_redis_gauge (EvdRedisDb *db, EvdRedisGauge g)
{
  switch (g) {
  case EVD_REDIS_CONNECTIONS: return g_atomic_int_get (&db->stats.connections);
  case EVD_REDIS_IN_FLIGHT: return g_atomic_int_get (&db->stats.in_flight);
  default: return (double) __atomic_load_n (&db->stats.losses, __ATOMIC_RELAXED);
  }
}

/* "database cache: 4/4 connections up" (" (unavailable)" with none up), for /health. */
static void
evd_redis_health (gpointer shared, GString *out)
{
  EvdRedisShared *sh = shared;
  GHashTableIter it;
  gpointer name, value;

  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, &name, &value)) {
    EvdRedisDb *db = value;

    evd_backend_health_line (out, "database", name, g_atomic_int_get (&db->stats.connections),
                             (int) (evd_loop_local_count (db->clients) * db->connections));
  }
}

static void
evd_redis_collect (gpointer shared, GString *out)
{
  static const struct {
    const char *name, *type, *help;
  } families[] = {
    [EVD_REDIS_CONNECTIONS] = { "evdal_redis_connections", "gauge",
                                "Connections up, all IO loops together." },
    [EVD_REDIS_IN_FLIGHT] = { "evdal_redis_in_flight", "gauge",
                              "Commands sent whose reply has not come (timed-out ones included)." },
    [EVD_REDIS_LOSSES] = { "evdal_redis_connection_losses_total", "counter",
                           "Connections lost or refused (each is made again after a backoff)." },
  };
  /* The outcomes a Redis call can have: ok, bad_params, timeout, backend, cancelled. */
  static const guint outcomes[] = { 0, 2, 3, 4, 6 };
  EvdRedisShared *sh = shared;
  GHashTableIter it;
  gpointer name, db;

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    evd_metrics_family (out, families[f].name, families[f].type, families[f].help);
    g_hash_table_iter_init (&it, sh->dbs);
    while (g_hash_table_iter_next (&it, &name, &db))
      evd_metrics_sample (out, families[f].name, evd_redis_gauge (db, f), "database",
                          (const char *) name, NULL);
  }
  evd_metrics_family (out, "evdal_redis_calls_total", "counter",
                      "Calls completed, by outcome (ok or the error kind).");
  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, &name, &db))
    for (guint i = 0; i < G_N_ELEMENTS (outcomes); i++)
      evd_metrics_sample (out, "evdal_redis_calls_total",
                          (double) __atomic_load_n (&((EvdRedisDb *) db)->calls[outcomes[i]],
                                                    __ATOMIC_RELAXED),
                          "database", (const char *) name,
                          "outcome", evd_redis_kind_names[outcomes[i]], NULL);
  evd_metrics_family (out, "evdal_redis_call_duration_seconds", "histogram",
                      "From sending a call to its completion.");
  g_hash_table_iter_init (&it, sh->dbs);
  while (g_hash_table_iter_next (&it, &name, &db))
    evd_metrics_histogram (out, "evdal_redis_call_duration_seconds", "database", name,
                           &((EvdRedisDb *) db)->latency);
}

/* ---- [lookup NAME] ---- */

static gpointer
evd_redis_lookup_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  EvdRedisShared *sh = shared;
  g_autofree char *db_name = evd_config_require (cfg, spec->group, "database");
  g_autofree char *command = evd_config_require (cfg, spec->group, "command");
  guint max_rows = (guint) evd_config_int (cfg, spec->group, "max_rows", 1000, 1, 10000000);
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdRedisTemplate) tmpl = NULL;
  EvdRedisLookup *l;
  EvdRedisDb *db;

  if (db_name == NULL || command == NULL)
    return NULL;
  tmpl = evd_redis_template_new (command, &error);
  if (tmpl == NULL) {
    evd_config_problem (cfg, spec->group, "command", "lookup %s: %s", spec->name,
                        error->message);
    return NULL;
  }
  db = g_hash_table_lookup (sh->dbs, db_name);
  if (db == NULL) {
    g_autofree char *group = g_strdup_printf ("database %s", db_name);

    /* A redis database with a problem has said so already. */
    if (!evd_config_has_key (cfg, group, "backend"))
      evd_config_problem (cfg, spec->group, "database", "no [database %s] with backend = redis "
                          "is configured", db_name);
    return NULL;
  }
  /* Enforced by evd_redis as the reply is read: an array of more rows is dropped, never
   * built, and the call fails "more than max_rows (N) rows"; a reply that is no array makes
   * one row at most. */
  evd_redis_template_set_max_rows (tmpl, max_rows);
  for (guint i = 0; i < evd_redis_template_n_params (tmpl); i++)
    evd_lookup_spec_add_param (spec, evd_redis_template_param (tmpl, i), EVD_PARAM_ANY, TRUE);
  g_free (spec->backend_name);
  spec->backend_name = g_strdup_printf ("redis:%s", db_name);
  l = g_new0 (EvdRedisLookup, 1);
  l->db = db;
  l->tmpl = g_steal_pointer (&tmpl);
  return l;
}

static void
evd_redis_lookup_close (gpointer backend)
{
  EvdRedisLookup *l = backend;

  evd_redis_template_free (l->tmpl);
  g_free (l);
}

/* ---- Calls. ---- */

static EvdErrorKind
evd_redis_error_kind (const GError *error)
{
  switch (error->code) {
  case EVD_REDIS_ERROR_BAD_PARAMS: return EVD_ERROR_KIND_BAD_PARAMS;
  case EVD_REDIS_ERROR_TIMEOUT: return EVD_ERROR_KIND_TIMEOUT;
  case EVD_REDIS_ERROR_CANCELLED: return EVD_ERROR_KIND_CANCELLED;
  default: return EVD_ERROR_KIND_BACKEND;
  }
}

/* Whether an error reply's code (its first word) is `code`: "BUSYKEY" and "BUSYGROUP" are
 * not "BUSY", and a message that merely mentions the word is not the code. */
static gboolean
evd_redis_reply_code_is (const char *message, const char *code)
{
  gsize n = strlen (code);

  return strncmp (message, code, n) == 0 && (message[n] == ' ' || message[n] == '\0');
}

/* What a failure means to retries (evd_xreq): no connection, or one lost before the reply,
 * and Redis saying LOADING or BUSY may be retried; any other error reply is final. */
static guint
evd_redis_fail_flags (const GError *error)
{
  if (error->domain != EVD_REDIS_ERROR)
    return 0;
  if (error->code == EVD_REDIS_ERROR_UNAVAILABLE)
    return EVD_BACKEND_FAIL_RETRYABLE;
  if (error->code == EVD_REDIS_ERROR_REPLY &&
      (evd_redis_reply_code_is (error->message, "LOADING") ||
       evd_redis_reply_code_is (error->message, "BUSY")))
    return EVD_BACKEND_FAIL_RETRYABLE;
  return 0;
}

/* On the call's loop, exactly once (evd_redis.h). */
static void
evd_redis_on_done (gpointer data, EvdRows *rows, const GError *error)
{
  EvdRedisBackendCall *bc = data;
  EvdBackendCall *call = bc->call;
  EvdRedisDb *db = bc->db;
  int kind = error ? (int) evd_redis_error_kind (error) : 0;

  __atomic_fetch_add (&db->calls[kind], 1, __ATOMIC_RELAXED);
  evd_histogram_observe (&db->latency, g_get_monotonic_time () - bc->start_us);
  *evd_backend_call_data (call) = NULL;   /* cancel() finds nothing left to stop */
  g_free (bc);
  if (rows != NULL)
    evd_backend_call_return (call, rows);
  else
    evd_backend_call_fail_full (call, evd_redis_fail_flags (error), (EvdErrorKind) kind, "%s",
                                error->message);
}

static void
evd_redis_start (gpointer backend, EvdBackendCall *call)
{
  EvdRedisLookup *l = backend;
  EvdRedisLoopClient *lc = evd_loop_local_get (l->db->clients, evd_backend_call_loop (call));
  EvdRedisBackendCall *bc = g_new0 (EvdRedisBackendCall, 1);
  const EvdParam *params;
  guint n_params;
  EvdRedisCall *rc;

  bc->call = call;
  bc->db = l->db;
  bc->start_us = g_get_monotonic_time ();
  evd_backend_call_trace_peer (call, l->db->host);
  *evd_backend_call_data (call) = bc;
  params = evd_backend_call_params (call, &n_params);
  rc = evd_redis_client_call (lc->client, l->tmpl, params, n_params,
                              evd_backend_call_deadline_us (call), evd_redis_on_done, bc);
  if (rc != NULL)           /* else it is done already, and bc freed */
    bc->rc = rc;
}

static void
evd_redis_cancel (gpointer backend, EvdBackendCall *call)
{
  EvdRedisBackendCall *bc = *evd_backend_call_data (call);

  (void) backend;
  if (bc == NULL)
    return;                 /* answered already */
  evd_redis_call_cancel (bc->rc);   /* completes it now; its reply will be dropped */
}

const EvdBackendClass evd_backend_redis_class = {
  .kind = "redis",
  .setup = evd_redis_setup,
  .teardown = evd_redis_teardown,
  .attach = evd_redis_attach,
  .open = evd_redis_lookup_open,
  .start = evd_redis_start,
  .cancel = evd_redis_cancel,
  .close = evd_redis_lookup_close,
  .collect = evd_redis_collect,
  .health = evd_redis_health,
};

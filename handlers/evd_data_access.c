/* evd_service: DataAccess's methods and live reloading (see evd_service.h). */
#include "evd_data_access.h"

#include "evd_json.h"

#include <string.h>

/* Loops are numbered 1..io_threads (0 is the main loop); io_threads is at most 256. */
#define EVD_SERVICE_MAX_LOOPS 258

typedef struct {
  gint generation;            /* of `engine`; read and written by its loop only */
  EvdEngine *engine;          /* a reference */
} EvdLoopEngine;

struct _EvdDataAccess {
  EvdService service;
  EvdMethod methods[3];
  EvdEngineCounters counters;

  GMutex lock;                /* guards `current` for the rare refresh */
  EvdEngine *current;
  gint generation;            /* atomic: bumped by every reload */
  EvdLoopEngine loops[EVD_SERVICE_MAX_LOOPS];
  EvdLoop *started[EVD_SERVICE_MAX_LOOPS];  /* under `lock`: IO loops running, to attach to */
};

static EvdEngine *evd_service_current (EvdDataAccess *da);

/* The engine `loop`'s requests use: the loop's own reference, refreshed after a reload.
 * Taking a new one attaches its backends to the loop (evd_engine_attach) before any of its
 * calls runs there. */
static EvdEngine *
evd_service_loop_engine (EvdDataAccess *da, EvdLoop *loop)
{
  EvdLoopEngine *le = &da->loops[MIN (evd_loop_index (loop), EVD_SERVICE_MAX_LOOPS - 1)];
  gint generation = g_atomic_int_get (&da->generation);

  if (le->engine == NULL || le->generation != generation) {
    EvdEngine *old = le->engine;

    g_mutex_lock (&da->lock);
    le->engine = evd_engine_ref (da->current);
    le->generation = g_atomic_int_get (&da->generation);
    g_mutex_unlock (&da->lock);
    evd_engine_attach (le->engine, loop);
    evd_engine_unref (old);
  }
  return le->engine;
}

static EvdEngine *
evd_service_engine (EvdDataAccess *da, EvdCall *call)
{
  return evd_service_loop_engine (da, evd_call_loop (call));
}

typedef struct {
  EvdDataAccess *da;
  EvdLoop *loop;
} EvdServiceRefresh;

static void
evd_service_on_refresh (gpointer data)
{
  EvdServiceRefresh *r = data;

  evd_service_loop_engine (r->da, r->loop);
  g_free (r);
}

/* A new generation is attached to every running loop at once rather than at the loop's next
 * request, so its connections are up before they are needed. */
static void
evd_service_refresh_loops (EvdDataAccess *da)
{
  g_mutex_lock (&da->lock);
  for (guint i = 0; i < EVD_SERVICE_MAX_LOOPS; i++) {
    EvdServiceRefresh *r;

    if (da->started[i] == NULL)
      continue;
    r = g_new (EvdServiceRefresh, 1);
    *r = (EvdServiceRefresh) { da, da->started[i] };
    evd_loop_post (da->started[i], evd_service_on_refresh, r);
  }
  g_mutex_unlock (&da->lock);
}

static void
evd_service_loop_started (gpointer data, EvdLoop *loop)
{
  EvdDataAccess *da = data;

  g_mutex_lock (&da->lock);
  da->started[MIN (evd_loop_index (loop), EVD_SERVICE_MAX_LOOPS - 1)] = loop;
  g_mutex_unlock (&da->lock);
  evd_service_loop_engine (da, loop);
}

static void
evd_service_ping (EvdCall *call, gpointer args, gpointer data)
{
  evdalDataAccessPingResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_RESULT, NULL);

  (void) args;
  r->success = g_strdup ("pong");
  r->__isset_success = TRUE;
  evd_metrics_request (((EvdDataAccess *) data)->counters.metrics, EVD_METHOD_PING,
                       EVD_OUTCOME_OK);
  evd_call_reply (call, THRIFT_STRUCT (r));
}

static evdalLookupInfo *
evd_service_lookup_info (EvdLookup *l)
{
  const EvdLookupSpec *spec = evd_lookup_spec (l);
  evdalLookupInfo *info = g_object_new (EVDAL_TYPE_LOOKUP_INFO, NULL);

  info->name = g_strdup (spec->name);
  info->backend = g_strdup (spec->backend_name);
  for (guint i = 0; i < spec->params->len; i++)
    g_ptr_array_add (info->params, g_strdup (g_array_index (spec->params, EvdParamSpec, i).name));
  info->timeout_ms = evd_lookup_timeout_ms (l);
  info->description = g_strdup (evd_lookup_description (l));
  info->__isset_name = info->__isset_backend = info->__isset_params = TRUE;
  info->__isset_timeout_ms = info->__isset_description = TRUE;
  return info;
}

static void
evd_service_lookups (EvdCall *call, gpointer args, gpointer data)
{
  EvdLookupSet *set = evd_engine_lookups (evd_service_engine (data, call));
  evdalDataAccessLookupsResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_LOOKUPS_RESULT, NULL);

  (void) args;
  for (guint i = 0; i < evd_lookup_set_size (set); i++)
    g_ptr_array_add (r->success, evd_service_lookup_info (evd_lookup_set_nth (set, i)));
  r->__isset_success = TRUE;
  evd_metrics_request (((EvdDataAccess *) data)->counters.metrics, EVD_METHOD_LOOKUPS,
                       EVD_OUTCOME_OK);
  evd_call_reply (call, THRIFT_STRUCT (r));
}

static void
evd_service_fetch (EvdCall *call, gpointer args, gpointer data)
{
  evd_engine_fetch (evd_service_engine (data, call), call, args);
}

/* fetch's args are decoded by hand into plain C (evd_request), not by c_glib. */
static gpointer
evd_service_fetch_decode (EvdProto proto, const guint8 *body, gsize len, GError **error)
{
  return evd_request_decode (proto, body, len, error);
}

static void
evd_service_fetch_free (gpointer args)
{
  evd_request_unref (args);
}

static void
evd_service_fetch_shed (EvdCall *call, gpointer args, gpointer data)
{
  (void) args;
  evd_engine_shed (evd_service_engine (data, call), call);
}

/* Asked before a fetch's args are decoded, on the loop that read it. The loop's own engine
 * reference is used when it has one (no lock); a loop that has not served yet asks the
 * current engine. */
static gboolean
evd_service_overloaded (gpointer data, EvdLoop *loop)
{
  EvdDataAccess *da = data;
  EvdLoopEngine *le = &da->loops[MIN (evd_loop_index (loop), EVD_SERVICE_MAX_LOOPS - 1)];
  g_autoptr (EvdEngine) engine = NULL;

  if (le->engine != NULL)
    return evd_engine_busy (le->engine, loop);
  engine = evd_service_current (da);
  return evd_engine_busy (engine, loop);
}

static guint
evd_service_pending (gpointer data)
{
  EvdDataAccess *da = data;

  return (guint) g_atomic_int_get (&da->counters.outstanding);
}

/* The current engine, with a reference (any thread). */
static EvdEngine *
evd_service_current (EvdDataAccess *da)
{
  EvdEngine *engine;

  g_mutex_lock (&da->lock);
  engine = evd_engine_ref (da->current);
  g_mutex_unlock (&da->lock);
  return engine;
}

static void
evd_service_collect (GString *out, gpointer data)
{
  EvdDataAccess *da = data;
  g_autoptr (EvdEngine) engine = evd_service_current (da);

  evd_metrics_family (out, "evdal_inflight_requests", "gauge",
                      "Fetches admitted and not yet answered (max_inflight bounds it).");
  evd_metrics_sample (out, "evdal_inflight_requests", g_atomic_int_get (&da->counters.inflight),
                      NULL);
  /* Lookup calls, each once: the attempts evd_xreq makes for them (one for many coalesced
   * calls, two with a hedge) are not calls of their own. */
  evd_metrics_family (out, "evdal_backend_calls_outstanding", "gauge",
                      "Lookup calls started on a backend and not yet completed.");
  evd_metrics_sample (out, "evdal_backend_calls_outstanding",
                      MAX (g_atomic_int_get (&da->counters.outstanding) -
                           g_atomic_int_get (&da->counters.attempts), 0), NULL);
  evd_metrics_family (out, "evdal_lookups", "gauge", "Lookups configured.");
  evd_metrics_sample (out, "evdal_lookups", evd_lookup_set_size (evd_engine_lookups (engine)),
                      NULL);
  evd_lookup_set_collect (evd_engine_lookups (engine), out);
}

void
evd_data_access_health (EvdDataAccess *da, GString *out)
{
  g_autoptr (EvdEngine) engine = evd_service_current (da);

  evd_lookup_set_health (evd_engine_lookups (engine), out);
}

void
evd_data_access_lookups_json (EvdDataAccess *da, GString *out)
{
  g_autoptr (EvdEngine) engine = evd_service_current (da);
  EvdLookupSet *set = evd_engine_lookups (engine);

  g_string_append (out, "[");
  for (guint i = 0; i < evd_lookup_set_size (set); i++) {
    EvdLookup *l = evd_lookup_set_nth (set, i);
    const EvdLookupSpec *spec = evd_lookup_spec (l);
    EvdMetricsLookup *stats = evd_lookup_stats (l);

    g_string_append (out, i ? ",\n {\"name\": " : "\n {\"name\": ");
    evd_json_string (out, spec->name);
    g_string_append (out, ", \"backend\": ");
    evd_json_string (out, spec->backend_name);
    g_string_append (out, ", \"params\": [");
    for (guint p = 0; p < spec->params->len; p++) {
      const EvdParamSpec *ps = &g_array_index (spec->params, EvdParamSpec, p);
      g_string_append (out, p ? ", " : "");
      evd_json_string (out, ps->name);
    }
    g_string_append_printf (out, "], \"timeout_ms\": %d, \"description\": ",
                            evd_lookup_timeout_ms (l));
    evd_json_string (out, evd_lookup_description (l) ? evd_lookup_description (l) : "");
    if (stats != NULL) {
      guint64 calls = 0;
      for (guint o = 0; o < EVD_ERROR_KIND_N; o++)
        calls += __atomic_load_n (&stats->calls[o], __ATOMIC_RELAXED);
      g_string_append_printf (out, ", \"calls\": %" G_GUINT64_FORMAT ", \"errors\": %"
                              G_GUINT64_FORMAT, calls,
                              calls - __atomic_load_n (&stats->calls[0], __ATOMIC_RELAXED));
    }
    g_string_append (out, "}");
  }
  g_string_append (out, "\n]\n");
}

EvdDataAccess *
evd_data_access_new (EvdConfig *cfg, EvdMetrics *metrics, EvdTraceStore *traces)
{
  EvdDataAccess *da = g_new0 (EvdDataAccess, 1);

  /* GTypes are known only at run time, so the table is filled here. */
  da->methods[0] = (EvdMethod) {
    .name = "fetch", .handler = evd_service_fetch, .shed = evd_service_fetch_shed,
    .decode = evd_service_fetch_decode, .free_args = evd_service_fetch_free,
  };
  da->methods[1] = (EvdMethod) {
    .name = "lookups", .args_type = EVDAL_TYPE_DATA_ACCESS_LOOKUPS_ARGS,
    .handler = evd_service_lookups,
  };
  da->methods[2] = (EvdMethod) {
    .name = "ping", .args_type = EVDAL_TYPE_DATA_ACCESS_PING_ARGS, .handler = evd_service_ping,
  };
  da->service.name = "DataAccess";
  da->service.methods = da->methods;
  da->service.n_methods = G_N_ELEMENTS (da->methods);
  da->service.data = da;
  da->service.pending = evd_service_pending;
  da->service.overloaded = evd_service_overloaded;
  da->service.loop_started = evd_service_loop_started;
  da->service.args_schema = evd_wire_schema_args;
  evd_engine_counters_init (&da->counters);
  da->counters.metrics = metrics;
  da->counters.traces = traces;
  da->service.metrics = metrics;
  g_mutex_init (&da->lock);
  da->current = evd_engine_new (cfg, &da->counters);
  evd_engine_activate (da->current);
  evd_metrics_add_collector (metrics, evd_service_collect, da);
  return da;
}

void
evd_data_access_free (EvdDataAccess *da)
{
  if (da == NULL)
    return;
  evd_metrics_remove_collector (da->counters.metrics, evd_service_collect, da);
  for (guint i = 0; i < EVD_SERVICE_MAX_LOOPS; i++)
    evd_engine_unref (da->loops[i].engine);
  evd_engine_unref (da->current);
  g_mutex_clear (&da->lock);
  g_free (da);
}

void
evd_data_access_set_otlp (EvdDataAccess *da, EvdOtlp *otlp)
{
  da->counters.otlp = otlp;
}

const EvdService *
evd_data_access_service (EvdDataAccess *da)
{
  return &da->service;
}

/* "5 lookups; added: a, b; removed: c" */
static char *
evd_service_diff (EvdLookupSet *before, EvdLookupSet *after)
{
  GString *s = g_string_new (NULL);
  GString *added = g_string_new (NULL), *removed = g_string_new (NULL);

  for (guint i = 0; i < evd_lookup_set_size (after); i++) {
    const char *name = evd_lookup_spec (evd_lookup_set_nth (after, i))->name;
    if (evd_lookup_set_find (before, name) == NULL)
      g_string_append_printf (added, "%s%s", added->len ? ", " : "", name);
  }
  for (guint i = 0; i < evd_lookup_set_size (before); i++) {
    const char *name = evd_lookup_spec (evd_lookup_set_nth (before, i))->name;
    if (evd_lookup_set_find (after, name) == NULL)
      g_string_append_printf (removed, "%s%s", removed->len ? ", " : "", name);
  }
  g_string_append_printf (s, "%u lookups", evd_lookup_set_size (after));
  if (added->len)
    g_string_append_printf (s, "; added: %s", added->str);
  if (removed->len)
    g_string_append_printf (s, "; removed: %s", removed->str);
  g_string_free (added, TRUE);
  g_string_free (removed, TRUE);
  return g_string_free (s, FALSE);
}

EvdEngine *
evd_data_access_prepare (EvdDataAccess *da, EvdConfig *cfg, GError **error)
{
  g_autoptr (EvdEngine) next = evd_engine_new (cfg, &da->counters);

  if (!evd_config_check (cfg, error)) {
    evd_metrics_reload (da->counters.metrics, FALSE);
    return NULL;  /* `next` goes, with what it had opened; the current engine stays */
  }
  return g_steal_pointer (&next);
}

void
evd_data_access_commit (EvdDataAccess *da, EvdEngine *next, char **summary)
{
  EvdEngine *old;

  if (summary != NULL)
    *summary = evd_service_diff (evd_engine_lookups (da->current), evd_engine_lookups (next));
  evd_engine_activate (next);
  g_mutex_lock (&da->lock);
  old = da->current;
  da->current = next;
  g_atomic_int_inc (&da->generation);
  g_mutex_unlock (&da->lock);
  evd_engine_unref (old);
  evd_service_refresh_loops (da);
  evd_metrics_reload (da->counters.metrics, TRUE);
}

gboolean
evd_data_access_reload (EvdDataAccess *da, EvdConfig *cfg, char **summary, GError **error)
{
  EvdEngine *next = evd_data_access_prepare (da, cfg, error);

  if (next == NULL)
    return FALSE;
  evd_data_access_commit (da, next, summary);
  return TRUE;
}

/* evd_backend_http: lookups answered by an internal HTTP/JSON service, over connections that
 * each IO loop keeps alive (storage/evd_http.c), the JSON mapped to rows by
 * storage/evd_json_rows.c.
 *
 *   [upstream recs]
 *   backend = http                 # the default and only kind
 *   base_url = http://127.0.0.1:8081
 *   connections = 8                # per IO loop and host, kept alive
 *   max_response_bytes = 1048576   # a longer body is a BACKEND error
 *   ca_file = ca.pem               # optional, relative to the config's folder (https)
 *
 *   [lookup recommended]
 *   upstream = recs                # implies backend = http
 *   get = /users/{user_id}/recommendations?limit={limit}
 *   rows = data.items              # where the rows are in the JSON; none: the whole body
 *
 * The `get` template is checked at load and expanded per call by storage/evd_http_text.c: each
 * {name} is a required param of the lookup (any type, null is BAD_PARAMS), its text
 * percent-encoded so that it stays inside its path segment or query value. The request context
 * goes as headers: X-Request-Id and X-Principal (when given), percent-encoded beyond printable
 * ASCII, and X-Attributes (when any), the attributes form-encoded, keys sorted: nothing a
 * client sends (CR, LF, NUL, non-ASCII) can add or split a header line. The W3C trace context
 * goes as `traceparent` (the call's span as the parent) and `tracestate`.
 *
 * Each upstream has one EvdHttpClient per IO loop (evd_loop_local), made when a generation
 * attaches to the loop; calls use their own loop's client, so a connection is only ever touched
 * by one thread. A call completes from the client's done callback (a libevent callback, outside
 * curl), at once in cancel() while its request is in curl, or from a worker thread that maps a
 * long body (EVD_BACKEND_HTTP_INLINE_JSON_BYTES); release() frees it.
 */
#include <string.h>

#include <curl/curl.h>

#include "evd_backend.h"
#include "evd_http.h"
#include "evd_http_text.h"
#include "evd_json_rows.h"
#include "evd_loop_local.h"
#include "evd_metrics.h"

/* Error kinds counted per upstream (evdal_http_errors_total{kind}). */
typedef enum {
  EVD_BACKEND_HTTP_ERR_CONNECT,
  EVD_BACKEND_HTTP_ERR_TIMEOUT,
  EVD_BACKEND_HTTP_ERR_TOO_BIG,
  EVD_BACKEND_HTTP_ERR_STATUS,      /* a status other than 2xx */
  EVD_BACKEND_HTTP_ERR_JSON,        /* not JSON, or the rows path is absent */
  EVD_BACKEND_HTTP_ERR_TRANSFER,    /* reset, malformed response, ... */
  EVD_BACKEND_HTTP_ERR_CANCELLED,
  EVD_BACKEND_HTTP_ERR_N,
} EvdBackendHttpErr;

static const char *const evd_backend_http_err_names[EVD_BACKEND_HTTP_ERR_N] = {
  "connect", "timeout", "too_big", "status", "json", "transfer", "cancelled",
};

typedef struct {
  gatomicrefcount refs;     /* the shared state's, and one per loop's client */
  char *name;
  char *base_url;           /* without a trailing '/' */
  char *host;               /* base_url's host: the spans' server.address */
  guint connections;
  gsize max_response_bytes;
  char *ca_file;            /* absolute, or NULL */
  EvdHttpStats stats;       /* atomics, summed over the loops' clients */
  guint64 errors[EVD_BACKEND_HTTP_ERR_N];  /* atomic */
  EvdHistogram latency;
  EvdLoopLocal *clients;    /* EvdHttpClient per IO loop */
} EvdBackendHttpUpstream;

typedef struct {
  GHashTable *upstreams;    /* name -> EvdBackendHttpUpstream *, those valid */
  GHashTable *names;        /* every http [upstream NAME] configured, valid or not */
  GThreadPool *mappers;     /* long bodies to rows, off the loops ([server] workers threads) */
} EvdBackendHttpShared;

typedef struct {
  EvdBackendHttpUpstream *up;  /* a reference */
  GThreadPool *mappers;     /* the shared state's, which outlives the lookup */
  char *get;                /* the template, for messages (never a call's values) */
  char *rows;               /* NULL: the whole body */
  EvdHttpTextTemplate *path;  /* `get`, checked */
} EvdBackendHttpLookup;

/* A body longer than this is mapped to rows on a worker thread, not on the loop: json-glib
 * is slow (a 1 MB answer of 14,000 objects took 0.75-1 s on a busy 2-core machine), and a
 * loop holding that long holds every other connection on it. A short body (a few rows) is
 * mapped at once: that costs less than the hand-off. */
#define EVD_BACKEND_HTTP_INLINE_JSON_BYTES 8192

/* One call: made by start(), freed by release() once the engine took the completion, so that
 * a worker mapping its body never finds it freed. */
typedef struct {
  EvdBackendCall *call;
  EvdBackendHttpLookup *lookup;
  EvdHttpRequest *req;      /* while the request is in curl */
  gint64 start_us;
  gboolean on_worker;       /* the body went to a worker, which completes the call */
  gint cancelled;           /* atomic: set by cancel() while on_worker */
  char *body;               /* the body a worker maps */
  gsize len;
} EvdBackendHttpCall;

/* ---- Upstreams and their per-loop clients. ---- */

static EvdBackendHttpUpstream *
evd_backend_http_upstream_ref (EvdBackendHttpUpstream *up)
{
  g_atomic_ref_count_inc (&up->refs);
  return up;
}

static void
evd_backend_http_upstream_unref (EvdBackendHttpUpstream *up)
{
  if (!g_atomic_ref_count_dec (&up->refs))
    return;
  g_free (up->name);
  g_free (up->base_url);
  g_free (up->host);
  g_free (up->ca_file);
  g_free (up);
}

/* A loop's client, with the upstream it counts into: the client may outlive teardown (it is
 * destroyed later, on its loop), so it holds a reference. */
typedef struct {
  EvdHttpClient *client;
  EvdBackendHttpUpstream *up;
} EvdBackendHttpLoopClient;

/* On the loop's thread (evd_loop_local). */
static gpointer
evd_backend_http_loop_make (EvdLoop *loop, gpointer owner)
{
  EvdBackendHttpLoopClient *lc = g_new0 (EvdBackendHttpLoopClient, 1);
  EvdBackendHttpUpstream *up = owner;
  EvdHttpOptions opts = {
    .max_connections = up->connections,
    .max_response_bytes = up->max_response_bytes,
    .ca_file = up->ca_file,
    .stats = &up->stats,
  };

  lc->up = evd_backend_http_upstream_ref (up);
  lc->client = evd_http_client_new (evd_loop_base (loop), &opts);
  return lc;
}

static void
evd_backend_http_loop_destroy (gpointer data)
{
  EvdBackendHttpLoopClient *lc = data;

  evd_http_client_free (lc->client);
  evd_backend_http_upstream_unref (lc->up);
  g_free (lc);
}

/* Parses base_url: http or https, a host, no query or fragment. */
static gboolean
evd_backend_http_check_base_url (EvdConfig *cfg, const char *group, const char *url,
                                 char **host)
{
  CURLU *u = curl_url ();
  g_autofree char *scheme = NULL;
  char *part = NULL;
  gboolean ok = FALSE;
  CURLUcode rc = curl_url_set (u, CURLUPART_URL, url, 0);

  if (rc != CURLUE_OK) {
    evd_config_problem (cfg, group, "base_url", "\"%s\": %s", url, curl_url_strerror (rc));
    goto out;
  }
  curl_url_get (u, CURLUPART_SCHEME, &part, 0);
  scheme = g_strdup (part);
  curl_free (part);
  if (g_strcmp0 (scheme, "http") != 0 && g_strcmp0 (scheme, "https") != 0) {
    evd_config_problem (cfg, group, "base_url", "\"%s\": expected http:// or https://", url);
    goto out;
  }
  if (curl_url_get (u, CURLUPART_QUERY, &part, 0) == CURLUE_OK ||
      curl_url_get (u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK) {
    curl_free (part);
    evd_config_problem (cfg, group, "base_url", "\"%s\": no query or fragment here (the "
                        "lookups' get = templates hold them)", url);
    goto out;
  }
  if (curl_url_get (u, CURLUPART_HOST, &part, 0) == CURLUE_OK) {
    gboolean literal = g_hostname_is_ip_address (part) ||
                       (part[0] == '[' && strchr (part, ']') != NULL);
    *host = g_strdup (part);
    curl_free (part);
    /* Without a resolver thread, curl would resolve names on the loop's thread. */
    if (!literal && !evd_http_async_dns ()) {
      evd_config_problem (cfg, group, "base_url", "\"%s\": this libcurl resolves names "
                          "blocking (no AsynchDNS): give an IP address", url);
      goto out;
    }
  }
  ok = TRUE;
out:
  curl_url_cleanup (u);
  return ok;
}

static EvdBackendHttpUpstream *
evd_backend_http_upstream_open (EvdConfig *cfg, const char *group)
{
  g_autofree char *url = evd_config_require (cfg, group, "base_url");
  g_autofree char *ca = evd_config_string (cfg, group, "ca_file", NULL);
  int connections = (int) evd_config_int (cfg, group, "connections", 8, 1, 1024);
  gint64 max_bytes = evd_config_int (cfg, group, "max_response_bytes", 1048576, 1,
                                     G_GINT64_CONSTANT (1) << 30);
  EvdBackendHttpUpstream *up;

  g_autofree char *host = NULL;

  if (url == NULL || !evd_backend_http_check_base_url (cfg, group, url, &host))
    return NULL;
  up = g_new0 (EvdBackendHttpUpstream, 1);
  g_atomic_ref_count_init (&up->refs);
  up->name = g_strdup (group + strlen ("upstream "));
  while (g_str_has_suffix (url, "/"))
    url[strlen (url) - 1] = '\0';
  up->base_url = g_steal_pointer (&url);
  up->host = g_steal_pointer (&host);
  up->connections = (guint) connections;
  up->max_response_bytes = (gsize) max_bytes;
  if (ca != NULL) {
    up->ca_file = evd_config_resolve_path (cfg, ca);
    if (!g_file_test (up->ca_file, G_FILE_TEST_IS_REGULAR))
      evd_config_problem (cfg, group, "ca_file", "%s: no such file", up->ca_file);
  }
  up->clients = evd_loop_local_new (evd_backend_http_loop_make, evd_backend_http_loop_destroy,
                                    up);
  return up;
}

static void
evd_backend_http_upstream_close (gpointer data)
{
  EvdBackendHttpUpstream *up = data;

  evd_loop_local_free (up->clients);  /* each client goes on its loop, later */
  up->clients = NULL;
  evd_backend_http_upstream_unref (up);
}

static void evd_backend_http_on_mapper (gpointer data, gpointer unused);

static gpointer
evd_backend_http_setup (EvdConfig *cfg)
{
  EvdBackendHttpShared *sh = g_new0 (EvdBackendHttpShared, 1);
  /* The [upstream NAME] sections whose kind is http (the default of an upstream). */
  g_auto (GStrv) groups = evd_backend_sections (cfg, "upstream", "http");

  evd_http_global_init ();   /* on the main thread, before any loop uses curl */
  sh->upstreams = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                         evd_backend_http_upstream_close);
  sh->names = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  /* Threads are made when the first long body comes, not at --check-config. */
  sh->mappers = g_thread_pool_new (evd_backend_http_on_mapper, NULL,
                                   evd_config_server (cfg)->workers, FALSE, NULL);
  for (guint i = 0; groups[i] != NULL; i++) {
    const char *name = groups[i] + strlen ("upstream ");
    EvdBackendHttpUpstream *up = evd_backend_http_upstream_open (cfg, groups[i]);

    g_hash_table_add (sh->names, g_strdup (name));
    if (up != NULL)
      g_hash_table_insert (sh->upstreams, g_strdup (name), up);
  }
  return sh;
}

static void
evd_backend_http_teardown (gpointer shared)
{
  EvdBackendHttpShared *sh = shared;

  g_thread_pool_free (sh->mappers, FALSE, TRUE);  /* idle by now: no call is in flight */
  g_hash_table_unref (sh->upstreams);
  g_hash_table_unref (sh->names);
  g_free (sh);
}

/* On each IO loop as a generation starts serving there: its clients exist before any call.
 * (Connections themselves open at the first request and stay open: libcurl 7.88 cannot open
 * one that later transfers reuse, and an HTTP server may close an idle connection it never
 * saw a request on; docs/ARCHITECTURE.md, "HTTP upstreams".) */
static void
evd_backend_http_attach (gpointer shared, EvdLoop *loop)
{
  EvdBackendHttpShared *sh = shared;
  GHashTableIter it;
  gpointer up;

  g_hash_table_iter_init (&it, sh->upstreams);
  while (g_hash_table_iter_next (&it, NULL, &up))
    evd_loop_local_get (((EvdBackendHttpUpstream *) up)->clients, loop);
}

/* Per upstream: connections open, opened, requests, in flight, errors by kind, latency. */
static void
evd_backend_http_collect (gpointer shared, GString *out)
{
  EvdBackendHttpShared *sh = shared;
  static const struct {
    const char *name, *type, *help;
  } families[] = {
    { "evdal_http_connections", "gauge", "Connections to each upstream open now (all IO loops)." },
    { "evdal_http_connects_total", "counter", "Connections opened to each upstream." },
    { "evdal_http_requests_total", "counter", "Requests sent to each upstream." },
    { "evdal_http_requests_in_flight", "gauge", "Requests to each upstream not answered yet." },
  };
  GHashTableIter it;
  gpointer name, p;

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    evd_metrics_family (out, families[f].name, families[f].type, families[f].help);
    g_hash_table_iter_init (&it, sh->upstreams);
    while (g_hash_table_iter_next (&it, &name, &p)) {
      EvdHttpStats *s = &((EvdBackendHttpUpstream *) p)->stats;
      double v = f == 0 ? g_atomic_int_get (&s->connections)
               : f == 1 ? (double) __atomic_load_n (&s->connects, __ATOMIC_RELAXED)
               : f == 2 ? (double) __atomic_load_n (&s->requests, __ATOMIC_RELAXED)
                        : g_atomic_int_get (&s->in_flight);
      evd_metrics_sample (out, families[f].name, v, "upstream", (const char *) name, NULL);
    }
  }
  evd_metrics_family (out, "evdal_http_errors_total", "counter",
                      "Failed requests to each upstream, by kind.");
  g_hash_table_iter_init (&it, sh->upstreams);
  while (g_hash_table_iter_next (&it, &name, &p))
    for (guint k = 0; k < EVD_BACKEND_HTTP_ERR_N; k++)
      evd_metrics_sample (out, "evdal_http_errors_total",
                          (double) __atomic_load_n (&((EvdBackendHttpUpstream *) p)->errors[k],
                                                    __ATOMIC_RELAXED),
                          "upstream", (const char *) name,
                          "kind", evd_backend_http_err_names[k], NULL);
  evd_metrics_family (out, "evdal_http_request_seconds", "histogram",
                      "Time from sending a request to its answer (or failure), per upstream.");
  g_hash_table_iter_init (&it, sh->upstreams);
  while (g_hash_table_iter_next (&it, &name, &p))
    evd_metrics_histogram (out, "evdal_http_request_seconds", "upstream", name,
                           &((EvdBackendHttpUpstream *) p)->latency);
}

/* ---- [lookup NAME]: the get = template. ---- */

static void
evd_backend_http_lookup_close (gpointer backend)
{
  EvdBackendHttpLookup *l = backend;

  if (l == NULL)
    return;
  g_clear_pointer (&l->path, evd_http_text_template_free);
  if (l->up != NULL)
    evd_backend_http_upstream_unref (l->up);
  g_free (l->get);
  g_free (l->rows);
  g_free (l);
}

static gboolean
evd_backend_http_lookup_upstream (EvdBackendHttpShared *sh, EvdConfig *cfg, EvdLookupSpec *spec,
                                  EvdBackendHttpLookup *l)
{
  g_autofree char *name = evd_config_require (cfg, spec->group, "upstream");

  if (name == NULL)
    return FALSE;
  l->up = g_hash_table_lookup (sh->upstreams, name);
  if (l->up == NULL) {
    /* An upstream that failed to open has said so already. */
    if (!g_hash_table_contains (sh->names, name))
      evd_config_problem (cfg, spec->group, "upstream", "no [upstream %s] is configured", name);
    return FALSE;
  }
  evd_backend_http_upstream_ref (l->up);
  l->mappers = sh->mappers;
  g_free (spec->backend_name);
  spec->backend_name = g_strdup_printf ("http:%s", name);
  return TRUE;
}

static gpointer
evd_backend_http_lookup_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  EvdBackendHttpLookup *l = g_new0 (EvdBackendHttpLookup, 1);
  g_autofree char *rows = evd_config_string (cfg, spec->group, "rows", NULL);
  g_autoptr (GError) error = NULL;

  l->get = evd_config_require (cfg, spec->group, "get");
  if (!evd_backend_http_lookup_upstream (shared, cfg, spec, l) || l->get == NULL) {
    evd_backend_http_lookup_close (l);
    return NULL;
  }
  l->path = evd_http_text_template_new (l->get, &error);
  if (l->path == NULL) {
    evd_config_problem (cfg, spec->group, "get", "%s", error->message);
    evd_backend_http_lookup_close (l);
    return NULL;
  }
  if (!evd_json_rows_path_valid (rows)) {
    evd_config_problem (cfg, spec->group, "rows", "\"%s\": expected keys joined by single "
                        "dots, like data.items", rows);
    evd_backend_http_lookup_close (l);
    return NULL;
  }
  l->rows = rows != NULL && rows[0] != '\0' ? g_steal_pointer (&rows) : NULL;
  for (guint i = 0; i < evd_http_text_template_n_params (l->path); i++)
    evd_lookup_spec_add_param (spec, evd_http_text_template_param (l->path, i), EVD_PARAM_ANY,
                               TRUE);
  return l;
}

/* ---- Calls: the URL and headers. ---- */

/* The call's URL; NULL (and the name of the null param) when a param is null. */
static char *
evd_backend_http_url (EvdBackendHttpLookup *l, EvdBackendCall *call, const char **null_param)
{
  GString *url = g_string_new (l->up->base_url);
  const EvdParam *params;
  guint n;

  params = evd_backend_call_params (call, &n);
  if (!evd_http_text_template_expand (l->path, params, n, url, null_param)) {
    g_string_free (url, TRUE);
    return NULL;
  }
  return g_string_free (url, FALSE);
}

static gint
evd_backend_http_strcmp (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Appends X-Attributes: k=v&k2=v2, form-encoded (printable ASCII already), keys sorted (a
 * hash table has no order); FALSE (nothing appended) without attributes. */
static gboolean
evd_backend_http_attributes (GHashTable *attributes, GString *out)
{
  g_autoptr (GPtrArray) keys = NULL;
  g_autoptr (GPtrArray) values = NULL;
  GHashTableIter it;
  gpointer k;

  if (g_hash_table_size (attributes) == 0)
    return FALSE;
  keys = g_ptr_array_new ();
  values = g_ptr_array_new ();
  g_hash_table_iter_init (&it, attributes);
  while (g_hash_table_iter_next (&it, &k, NULL))
    g_ptr_array_add (keys, k);
  g_ptr_array_sort (keys, evd_backend_http_strcmp);
  for (guint i = 0; i < keys->len; i++)
    g_ptr_array_add (values, g_hash_table_lookup (attributes, keys->pdata[i]));
  g_ptr_array_add (keys, NULL);
  g_ptr_array_add (values, NULL);
  g_string_append (out, "X-Attributes: ");
  evd_http_text_form (out, (const char *const *) keys->pdata,
                      (const char *const *) values->pdata);
  return TRUE;
}

/* Header lines a call sends at most: traceparent, tracestate, Accept, X-Request-Id,
 * X-Principal, X-Attributes. */
#define EVD_BACKEND_HTTP_MAX_HEADERS 6

/* Ends the header line being written into buf: its NUL, and where the next one starts. */
static void
evd_backend_http_line_end (GString *buf, gsize *at, guint *n)
{
  g_string_append_c (buf, '\0');
  at[++*n] = buf->len;
}

/* The request context as header lines: the call's W3C trace context (its own span as the
 * parent; tracestate checked by the W3C rules already), then the request's. The lines are
 * written one after the other into `buf` (NUL-separated: one allocation for them all) and
 * `lines` (EVD_BACKEND_HTTP_MAX_HEADERS + 1) points at them, NULL-terminated. */
static void
evd_backend_http_context_headers (EvdBackendCall *call, GString *buf, const char **lines)
{
  const EvdRequestContext *ctx = evd_backend_call_context (call);
  char traceparent[EVD_TRACEPARENT_LEN + 1];
  const char *tracestate = evd_backend_call_tracestate (call);
  gsize at[EVD_BACKEND_HTTP_MAX_HEADERS + 1];   /* where each line starts, and one past */
  guint n = 0;

  at[0] = buf->len;
  evd_backend_call_traceparent (call, traceparent);
  g_string_append (buf, "traceparent: ");
  g_string_append (buf, traceparent);
  evd_backend_http_line_end (buf, at, &n);
  if (tracestate != NULL) {
    g_string_append (buf, "tracestate: ");
    g_string_append (buf, tracestate);
    evd_backend_http_line_end (buf, at, &n);
  }
  /* curl would accept any type by default; a lookup reads JSON. */
  g_string_append (buf, "Accept: application/json");
  evd_backend_http_line_end (buf, at, &n);
  if (ctx->request_id != NULL) {
    evd_http_text_header_append (buf, "X-Request-Id", ctx->request_id);
    evd_backend_http_line_end (buf, at, &n);
  }
  if (ctx->principal != NULL) {
    evd_http_text_header_append (buf, "X-Principal", ctx->principal);
    evd_backend_http_line_end (buf, at, &n);
  }
  if (evd_backend_http_attributes (ctx->attributes, buf))
    evd_backend_http_line_end (buf, at, &n);
  /* Pointers only now: the buffer may have moved while it grew. */
  for (guint i = 0; i < n; i++)
    lines[i] = buf->str + at[i];
  lines[n] = NULL;
}

/* ---- Calls: sending and answering. ---- */

static void
evd_backend_http_count (EvdBackendHttpUpstream *up, EvdBackendHttpErr err)
{
  __atomic_add_fetch (&up->errors[err], 1, __ATOMIC_RELAXED);
}

/* `flags` (EvdBackendFailFlags) tell retries and breakers what the failure means. */
static void
evd_backend_http_fail_flags (EvdBackendHttpCall *hc, EvdBackendHttpErr err, guint flags,
                             const char *message)
{
  evd_backend_http_count (hc->lookup->up, err);
  evd_backend_call_fail_full (hc->call, flags, err == EVD_BACKEND_HTTP_ERR_TIMEOUT
                              ? EVD_ERROR_KIND_TIMEOUT : err == EVD_BACKEND_HTTP_ERR_CANCELLED
                              ? EVD_ERROR_KIND_CANCELLED : EVD_ERROR_KIND_BACKEND, "%s", message);
}

/* A refused or lost connection may be retried (the request did not get an answer); the
 * rest (too big, not JSON, the deadline) is final. */
static void
evd_backend_http_fail (EvdBackendHttpCall *hc, EvdBackendHttpErr err, const char *message)
{
  evd_backend_http_fail_flags (hc, err, err == EVD_BACKEND_HTTP_ERR_CONNECT ||
                               err == EVD_BACKEND_HTTP_ERR_TRANSFER
                               ? EVD_BACKEND_FAIL_RETRYABLE : 0, message);
}

/* 502, 503 and 504 say the upstream could not answer now: retryable. So is a 429 whose
 * Retry-After ends before the call's deadline (without one a retry could come too soon, and
 * one past the deadline could not be waited for); a Retry-After on a 429 or 503 is the least
 * a retry waits (evd_backend_call_retry_after). Another 4xx is the request's fault, the
 * upstream is well: not a breaker failure. */
static guint
evd_backend_http_status_flags (EvdBackendCall *call, const EvdHttpResponse *r)
{
  long status = r->status;
  gint64 wait_us = r->retry_after_s * G_USEC_PER_SEC;

  if (r->retry_after_s >= 0)
    evd_backend_call_retry_after (call, wait_us);
  if (status == 502 || status == 503 || status == 504)
    return EVD_BACKEND_FAIL_RETRYABLE;
  if (status == 429)
    return r->retry_after_s >= 0 &&
           g_get_monotonic_time () + wait_us < evd_backend_call_deadline_us (call)
           ? EVD_BACKEND_FAIL_RETRYABLE : 0;
  if (status >= 400 && status <= 499)
    return EVD_BACKEND_FAIL_CLIENT;
  return 0;
}

/* Maps a 2xx body and completes the call with its rows or a JSON error. Any thread. */
static void
evd_backend_http_map (EvdBackendHttpCall *hc, const char *body, gsize len)
{
  EvdBackendHttpLookup *l = hc->lookup;
  g_autoptr (GError) error = NULL;
  g_autofree char *message = NULL;
  EvdRows *rows = evd_json_rows_parse (body, len, l->rows, &error);

  if (rows != NULL) {
    evd_backend_call_return (hc->call, rows);
    return;
  }
  message = g_strdup_printf ("upstream %s: GET %s: %s", l->up->name, l->get, error->message);
  evd_backend_http_fail (hc, EVD_BACKEND_HTTP_ERR_JSON, message);
}

/* On a mapper thread: the call completes from here, exactly once, even when cancelled. */
static void
evd_backend_http_on_mapper (gpointer data, gpointer unused)
{
  EvdBackendHttpCall *hc = data;
  g_autofree char *message = NULL;

  (void) unused;
  if (!g_atomic_int_get (&hc->cancelled)) {
    evd_backend_http_map (hc, hc->body, hc->len);
    return;
  }
  message = g_strdup_printf ("upstream %s: GET %s: cancelled", hc->lookup->up->name,
                             hc->lookup->get);
  evd_backend_http_fail (hc, EVD_BACKEND_HTTP_ERR_CANCELLED, message);
}

/* A response: a status other than 2xx fails the call; a short body is mapped here, a long
 * one handed to a mapper thread with a copy of the body (the response lives only during
 * done). */
static void
evd_backend_http_answer (EvdBackendHttpCall *hc, const EvdHttpResponse *r)
{
  EvdBackendHttpLookup *l = hc->lookup;
  g_autofree char *message = NULL;

  if (r->status < 200 || r->status > 299) {
    message = g_strdup_printf ("upstream %s: GET %s answered HTTP %ld", l->up->name, l->get,
                               r->status);
    evd_backend_http_fail_flags (hc, EVD_BACKEND_HTTP_ERR_STATUS,
                                 evd_backend_http_status_flags (hc->call, r), message);
  } else if (r->len <= EVD_BACKEND_HTTP_INLINE_JSON_BYTES) {
    evd_backend_http_map (hc, r->body, r->len);
  } else {
    hc->body = g_memdup2 (r->body, r->len);
    hc->len = r->len;
    hc->on_worker = TRUE;
    g_thread_pool_push (l->mappers, hc, NULL);
  }
}

static EvdBackendHttpErr
evd_backend_http_err_of (const GError *error)
{
  switch (error->code) {
  case EVD_HTTP_ERROR_CONNECT: return EVD_BACKEND_HTTP_ERR_CONNECT;
  case EVD_HTTP_ERROR_UNTRUSTED: return EVD_BACKEND_HTTP_ERR_CONNECT;
  case EVD_HTTP_ERROR_TIMEOUT: return EVD_BACKEND_HTTP_ERR_TIMEOUT;
  case EVD_HTTP_ERROR_TOO_BIG: return EVD_BACKEND_HTTP_ERR_TOO_BIG;
  case EVD_HTTP_ERROR_CANCELLED: return EVD_BACKEND_HTTP_ERR_CANCELLED;
  default: return EVD_BACKEND_HTTP_ERR_TRANSFER;
  }
}

/* The client's done: on the call's loop, from a libevent callback. */
static void
evd_backend_http_on_done (EvdHttpRequest *req, const EvdHttpResponse *response,
                          const GError *error, gpointer data)
{
  EvdBackendHttpCall *hc = data;
  EvdBackendHttpLookup *l = hc->lookup;
  g_autofree char *message = NULL;

  (void) req;
  hc->req = NULL;
  evd_histogram_observe (&l->up->latency, g_get_monotonic_time () - hc->start_us);
  if (response != NULL) {
    evd_backend_call_trace_http_status (hc->call, (int) response->status);
    evd_backend_http_answer (hc, response);
    return;
  }
  message = g_strdup_printf ("upstream %s: GET %s: %s", l->up->name, l->get, error->message);
  /* A certificate that did not verify will not on a retry either: final (still the
   * upstream's failure for its breaker). */
  if (g_error_matches (error, EVD_HTTP_ERROR, EVD_HTTP_ERROR_UNTRUSTED))
    evd_backend_http_fail_flags (hc, EVD_BACKEND_HTTP_ERR_CONNECT, 0, message);
  else
    evd_backend_http_fail (hc, evd_backend_http_err_of (error), message);
}

static void
evd_backend_http_start (gpointer backend, EvdBackendCall *call)
{
  EvdBackendHttpLookup *l = backend;
  const char *null_param = NULL;
  g_autofree char *url = evd_backend_http_url (l, call, &null_param);
  g_autoptr (GString) header_text = NULL;
  const char *headers[EVD_BACKEND_HTTP_MAX_HEADERS + 1];
  g_autoptr (GError) error = NULL;
  EvdBackendHttpLoopClient *lc;
  EvdBackendHttpCall *hc;

  if (url == NULL) {
    evd_backend_call_fail (call, EVD_ERROR_KIND_BAD_PARAMS, "param %s is null: an HTTP "
                           "lookup puts each param's text in the URL", null_param);
    return;
  }
  header_text = g_string_sized_new (256);
  evd_backend_http_context_headers (call, header_text, headers);
  evd_backend_call_trace_peer (call, l->up->host);
  lc = evd_loop_local_get (l->up->clients, evd_backend_call_loop (call));
  hc = g_new0 (EvdBackendHttpCall, 1);
  hc->call = call;
  hc->lookup = l;
  hc->start_us = g_get_monotonic_time ();
  *evd_backend_call_data (call) = hc;
  hc->req = evd_http_get (lc->client, url, headers,
                          evd_backend_call_deadline_us (call), evd_backend_http_on_done, hc,
                          &error);
  if (hc->req == NULL) {
    gboolean late = g_error_matches (error, EVD_HTTP_ERROR, EVD_HTTP_ERROR_TIMEOUT);
    g_autofree char *message = g_strdup_printf ("upstream %s: GET %s: %s", l->up->name,
                                                l->get, error->message);

    evd_backend_http_fail (hc, late ? EVD_BACKEND_HTTP_ERR_TIMEOUT
                           : EVD_BACKEND_HTTP_ERR_TRANSFER, message);
  }
}

/* On the loop, outside curl's callbacks (the engine's timer, or another call's completion).
 * A request still in curl leaves it at once and the call completes here; a body being mapped
 * on a worker cannot be stopped half-way, so the worker completes the call (its outcome is
 * ignored by then) and skips the mapping if it has not begun. */
static void
evd_backend_http_cancel (gpointer backend, EvdBackendCall *call)
{
  EvdBackendHttpLookup *l = backend;
  EvdBackendHttpCall *hc = *evd_backend_call_data (call);
  gboolean late = g_get_monotonic_time () >= evd_backend_call_deadline_us (call);
  g_autofree char *message = NULL;

  if (hc == NULL)
    return;
  if (hc->on_worker) {
    g_atomic_int_set (&hc->cancelled, TRUE);
    return;
  }
  g_assert (hc->req != NULL);  /* else the call has completed, and cancel is not called */
  evd_http_request_cancel (hc->req);
  hc->req = NULL;
  evd_histogram_observe (&l->up->latency, g_get_monotonic_time () - hc->start_us);
  message = g_strdup_printf ("upstream %s: GET %s: %s", l->up->name, l->get,
                             late ? "no answer before the deadline" : "cancelled");
  evd_backend_http_fail (hc, late ? EVD_BACKEND_HTTP_ERR_TIMEOUT
                         : EVD_BACKEND_HTTP_ERR_CANCELLED, message);
}

/* On the loop, once the engine took the completion: nothing can reach the call any more. */
static void
evd_backend_http_release (gpointer backend, EvdBackendCall *call)
{
  EvdBackendHttpCall *hc = *evd_backend_call_data (call);

  (void) backend;
  *evd_backend_call_data (call) = NULL;
  if (hc != NULL) {
    g_free (hc->body);
    g_free (hc);
  }
}

const EvdBackendClass evd_backend_http_class = {
  .kind = "http",
  .setup = evd_backend_http_setup,
  .teardown = evd_backend_http_teardown,
  .attach = evd_backend_http_attach,
  .open = evd_backend_http_lookup_open,
  .start = evd_backend_http_start,
  .cancel = evd_backend_http_cancel,
  .release = evd_backend_http_release,
  .close = evd_backend_http_lookup_close,
  .collect = evd_backend_http_collect,
};

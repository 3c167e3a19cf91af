/* evd_otlp: the span queue and the OTLP/HTTP JSON exporter thread (see evd_otlp.h). */
#include "evd_otlp.h"

#include <curl/curl.h>
#include <errno.h>
#include <string.h>

#include "evd_trace.h"
#include "evd_traceparent.h"

#define EVD_OTLP_GROUP "tracing"
/* One export failure logged per this long: a collector that is down fails every batch, and
 * the counter says how many. */
#define EVD_OTLP_LOG_EVERY_US (10 * G_USEC_PER_SEC)
/* After a POST that failed, the next waits this long: a collector that is down or refusing
 * is not hammered, and the exporter does not spin on batches it cannot send. Short enough
 * that a collector that comes back loses little more. */
#define EVD_OTLP_PAUSE_US (G_USEC_PER_SEC / 4)

/* Queued spans of one fetch: the JSON objects, their count, when they were queued. */
typedef struct {
  GString *json;
  guint n_spans;
  gint64 queued_us;
} EvdOtlpItem;

struct _EvdOtlp {
  EvdOtlpConfig conf;
  EvdMetrics *metrics;
  /* The queue: loops push, the exporter pops; the lock is held for that only, never across
   * a POST, so a loop waits at most for a few pointer moves. */
  GMutex lock;
  GCond wake;
  GQueue items;               /* EvdOtlpItem * */
  guint queued_spans;
  gboolean stopping;
  GThread *thread;
  /* counters: relaxed atomics, read by /metrics */
  guint64 invalid;
  guint64 dropped;
  guint64 exported;
  guint64 failed_posts;
  /* the exporter thread's own */
  CURL *curl;
  struct curl_slist *headers;
  gint64 last_log_us;
  guint unlogged_failures;
  gint64 pause_until_us;      /* after a failed POST: no other before this (under the lock) */
};

static void
evd_otlp_count (guint64 *counter, guint64 n)
{
  __atomic_fetch_add (counter, n, __ATOMIC_RELAXED);
}

static guint64
evd_otlp_read (const guint64 *counter)
{
  return __atomic_load_n (counter, __ATOMIC_RELAXED);
}

/* ---- Config ---- */

static double
evd_otlp_read_ratio (EvdConfig *cfg)
{
  g_autofree char *s = evd_config_string (cfg, EVD_OTLP_GROUP, "sample_ratio", NULL);
  char *end;
  double r;

  if (s == NULL)
    return 0.01;  /* one fetch in a hundred: a trace of most kinds of request, little cost */
  errno = 0;
  r = g_ascii_strtod (s, &end);
  if (*s == '\0' || *end != '\0' || errno != 0 || !(r >= 0.0 && r <= 1.0)) {
    evd_config_problem (cfg, EVD_OTLP_GROUP, "sample_ratio", "\"%s\" is not a number from 0 "
                        "to 1", s);
    return 0.01;
  }
  return r;
}

static void
evd_otlp_read_config (EvdOtlpConfig *c, EvdConfig *cfg)
{
  const char *g = EVD_OTLP_GROUP;

  evd_config_mark_used (cfg, g, NULL);  /* the group is known, even with no key set */
  c->otlp_endpoint = evd_config_string (cfg, g, "otlp_endpoint", NULL);
  if (c->otlp_endpoint != NULL && *c->otlp_endpoint == '\0')
    g_clear_pointer (&c->otlp_endpoint, g_free);
  if (c->otlp_endpoint != NULL && !g_str_has_prefix (c->otlp_endpoint, "http://") &&
      !g_str_has_prefix (c->otlp_endpoint, "https://")) {
    evd_config_problem (cfg, g, "otlp_endpoint", "\"%s\" is not an http:// or https:// URL "
                        "(OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)", c->otlp_endpoint);
    g_clear_pointer (&c->otlp_endpoint, g_free);
  }
  c->sample_ratio = evd_otlp_read_ratio (cfg);
  c->service_name = evd_config_string (cfg, g, "service_name", "evdal");
  /* 512 spans make a POST of some 300 KiB: big enough to amortise a request, small enough
   * for any collector's default body limit. */
  c->batch_max_spans = (int) evd_config_int (cfg, g, "batch_max_spans", 512, 1, 65536);
  /* Spans reach the collector within a second of their fetch when traffic is light. */
  c->batch_max_age_ms = (int) evd_config_int (cfg, g, "batch_max_age_ms", 1000, 1, 600000);
  /* What a collector that is down or slow may cost in memory: some 600 bytes a span. */
  c->queue_max_spans = (int) evd_config_int (cfg, g, "queue_max_spans", 8192, 1, 10000000);
  /* A POST (and its one retry) ends within this; a shutdown flushes within it too. */
  c->export_timeout_ms = (int) evd_config_int (cfg, g, "export_timeout_ms", 2000, 1, 600000);
}

/* ---- Metrics ---- */

static void
evd_otlp_collect (GString *out, gpointer data)
{
  EvdOtlp *o = data;
  guint queued;

  g_mutex_lock (&o->lock);
  queued = o->queued_spans;
  g_mutex_unlock (&o->lock);
  evd_metrics_family (out, "evdal_tracing_invalid_context_total", "counter",
                      "Incoming traceparent or tracestate values ignored as invalid.");
  evd_metrics_sample (out, "evdal_tracing_invalid_context_total",
                      (double) evd_otlp_read (&o->invalid), NULL);
  evd_metrics_family (out, "evdal_tracing_spans_dropped_total", "counter",
                      "Sampled spans lost: queue full, or a POST that failed or timed out.");
  evd_metrics_sample (out, "evdal_tracing_spans_dropped_total",
                      (double) evd_otlp_read (&o->dropped), NULL);
  evd_metrics_family (out, "evdal_tracing_spans_exported_total", "counter",
                      "Spans the collector accepted.");
  evd_metrics_sample (out, "evdal_tracing_spans_exported_total",
                      (double) evd_otlp_read (&o->exported), NULL);
  evd_metrics_family (out, "evdal_tracing_export_failures_total", "counter",
                      "Batches the collector did not accept (after the one retry).");
  evd_metrics_sample (out, "evdal_tracing_export_failures_total",
                      (double) evd_otlp_read (&o->failed_posts), NULL);
  evd_metrics_family (out, "evdal_tracing_queued_spans", "gauge",
                      "Spans waiting for the exporter (queue_max_spans bounds it).");
  evd_metrics_sample (out, "evdal_tracing_queued_spans", queued, NULL);
}

/* ---- The exporter thread ---- */

static size_t
evd_otlp_on_body (char *data, size_t size, size_t n, void *unused)
{
  (void) data, (void) unused;
  return size * n;  /* the collector's answer is not needed */
}

/* The whole request body around the spans of `batch`. */
static GString *
evd_otlp_body (EvdOtlp *o, GPtrArray *batch)
{
  GString *b = g_string_sized_new (4096);

  g_string_append (b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
  evd_otlp_attr_string (b, "service.name", o->conf.service_name);
  g_string_append (b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"evdal\",\"version\":\""
                      EVDAL_VERSION "\"},\"spans\":[");
  for (guint i = 0; i < batch->len; i++) {
    const EvdOtlpItem *item = batch->pdata[i];
    if (i > 0)
      g_string_append_c (b, ',');
    g_string_append_len (b, item->json->str, item->json->len);
  }
  g_string_append (b, "]}]}]}");
  return b;
}

/* One POST within `left_us`; the HTTP status, 0 when none came (refused, timed out). */
static long
evd_otlp_post (EvdOtlp *o, const GString *body, gint64 left_us, char *errbuf)
{
  long status = 0;
  long ms = MAX (left_us / 1000, 1);

  curl_easy_setopt (o->curl, CURLOPT_POSTFIELDS, body->str);
  curl_easy_setopt (o->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body->len);
  curl_easy_setopt (o->curl, CURLOPT_TIMEOUT_MS, ms);
  curl_easy_setopt (o->curl, CURLOPT_CONNECTTIMEOUT_MS, ms);
  errbuf[0] = '\0';
  if (curl_easy_perform (o->curl) == CURLE_OK)
    curl_easy_getinfo (o->curl, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

static gboolean
evd_otlp_retryable (long status)
{
  return status == 429 || status == 502 || status == 503 || status == 504;
}

static void
evd_otlp_log_failure (EvdOtlp *o, long status, const char *why, guint n_spans)
{
  gint64 now = g_get_monotonic_time ();

  if (o->last_log_us != 0 && now - o->last_log_us < EVD_OTLP_LOG_EVERY_US) {
    o->unlogged_failures++;
    return;
  }
  if (status != 0)
    g_warning ("tracing: %s answered HTTP %ld; %u spans dropped (%u more failures since the "
               "last message)", o->conf.otlp_endpoint, status, n_spans, o->unlogged_failures);
  else
    g_warning ("tracing: export to %s failed: %s; %u spans dropped (%u more failures since the "
               "last message)", o->conf.otlp_endpoint, why, n_spans, o->unlogged_failures);
  o->last_log_us = now;
  o->unlogged_failures = 0;
}

/* Sends one batch by `deadline_us` (monotonic), retrying once when the collector asks for it;
 * counts what became of its spans. FALSE when the batch was lost. */
static gboolean
evd_otlp_export (EvdOtlp *o, GPtrArray *batch, guint n_spans, gint64 deadline_us)
{
  g_autoptr (GString) body = evd_otlp_body (o, batch);
  char errbuf[CURL_ERROR_SIZE] = "";
  long status = 0;

  curl_easy_setopt (o->curl, CURLOPT_ERRORBUFFER, errbuf);
  for (int attempt = 0; attempt < 2; attempt++) {
    gint64 left = deadline_us - g_get_monotonic_time ();

    if (left <= 0)
      break;
    status = evd_otlp_post (o, body, left, errbuf);
    if (status >= 200 && status < 300) {
      evd_otlp_count (&o->exported, n_spans);
      return TRUE;
    }
    if (!evd_otlp_retryable (status))
      break;
  }
  evd_otlp_count (&o->dropped, n_spans);
  evd_otlp_count (&o->failed_posts, 1);
  evd_otlp_log_failure (o, status, errbuf[0] ? errbuf : "timed out", n_spans);
  return FALSE;
}

/* Takes up to batch_max_spans spans (at least one item) off the queue. Under the lock. */
static guint
evd_otlp_take (EvdOtlp *o, GPtrArray *batch)
{
  guint n = 0;

  while (!g_queue_is_empty (&o->items)) {
    EvdOtlpItem *item = g_queue_peek_head (&o->items);

    if (n > 0 && n + item->n_spans > (guint) o->conf.batch_max_spans)
      break;
    g_queue_pop_head (&o->items);
    o->queued_spans -= item->n_spans;
    n += item->n_spans;
    g_ptr_array_add (batch, item);
  }
  return n;
}

static void
evd_otlp_item_free (gpointer data)
{
  EvdOtlpItem *item = data;

  g_string_free (item->json, TRUE);
  g_free (item);
}

/* Whether a batch should leave now: full, old enough, or the end has come. Under the lock. */
static gboolean
evd_otlp_due (EvdOtlp *o, gint64 *wait_until)
{
  EvdOtlpItem *oldest = g_queue_peek_head (&o->items);

  if (oldest == NULL) {
    *wait_until = 0;
    return FALSE;
  }
  *wait_until = oldest->queued_us + o->conf.batch_max_age_ms * (gint64) 1000;
  if (o->stopping)
    return TRUE;
  if (g_get_monotonic_time () < o->pause_until_us) {
    *wait_until = o->pause_until_us;
    return FALSE;
  }
  return o->queued_spans >= (guint) o->conf.batch_max_spans ||
         g_get_monotonic_time () >= *wait_until;
}

static gpointer
evd_otlp_run (gpointer data)
{
  EvdOtlp *o = data;
  gint64 flush_deadline = 0;

  g_mutex_lock (&o->lock);
  for (;;) {
    g_autoptr (GPtrArray) batch = NULL;
    gint64 wait_until, now, deadline;
    gboolean failed = FALSE;
    guint n;

    if (!evd_otlp_due (o, &wait_until)) {
      if (o->stopping)
        break;  /* stopping with nothing queued */
      if (wait_until == 0)
        g_cond_wait (&o->wake, &o->lock);
      else
        g_cond_wait_until (&o->wake, &o->lock, wait_until);
      continue;
    }
    if (o->stopping && flush_deadline == 0)
      flush_deadline = g_get_monotonic_time () + o->conf.export_timeout_ms * (gint64) 1000;
    batch = g_ptr_array_new_with_free_func (evd_otlp_item_free);
    n = evd_otlp_take (o, batch);
    g_mutex_unlock (&o->lock);
    now = g_get_monotonic_time ();
    deadline = now + o->conf.export_timeout_ms * (gint64) 1000;
    if (flush_deadline != 0)
      deadline = MIN (deadline, flush_deadline);
    if (now >= deadline)
      evd_otlp_count (&o->dropped, n);  /* the shutdown's bound has passed */
    else
      failed = !evd_otlp_export (o, batch, n, deadline);
    g_clear_pointer (&batch, g_ptr_array_unref);  /* frees the spans outside the lock */
    g_mutex_lock (&o->lock);
    /* A collector that is down refuses at once: without a pause the thread would spin on
     * batches it cannot send. The queue fills meanwhile, and drops (counted) past its bound. */
    if (failed)
      o->pause_until_us = g_get_monotonic_time () + EVD_OTLP_PAUSE_US;
  }
  g_mutex_unlock (&o->lock);
  return NULL;
}

/* ---- Life ---- */

EvdOtlp *
evd_otlp_new (EvdConfig *cfg, EvdMetrics *metrics)
{
  EvdOtlp *o = g_new0 (EvdOtlp, 1);

  evd_otlp_read_config (&o->conf, cfg);
  g_mutex_init (&o->lock);
  g_cond_init (&o->wake);
  g_queue_init (&o->items);
  o->metrics = metrics;
  evd_metrics_add_collector (metrics, evd_otlp_collect, o);
  return o;
}

void
evd_otlp_start (EvdOtlp *o)
{
  if (o->conf.otlp_endpoint == NULL || o->thread != NULL)
    return;
  curl_global_init (CURL_GLOBAL_DEFAULT);
  o->curl = curl_easy_init ();
  o->headers = curl_slist_append (NULL, "Content-Type: application/json");
  curl_easy_setopt (o->curl, CURLOPT_URL, o->conf.otlp_endpoint);
  curl_easy_setopt (o->curl, CURLOPT_HTTPHEADER, o->headers);
  curl_easy_setopt (o->curl, CURLOPT_WRITEFUNCTION, evd_otlp_on_body);
  curl_easy_setopt (o->curl, CURLOPT_NOSIGNAL, 1L);  /* timeouts without SIGALRM: a thread */
  curl_easy_setopt (o->curl, CURLOPT_USERAGENT, "evdal/" EVDAL_VERSION);
  o->thread = g_thread_new ("evdal-otlp", evd_otlp_run, o);
  g_message ("tracing: exporting sampled spans to %s (sample_ratio %g for requests without "
             "a trace context)", o->conf.otlp_endpoint, o->conf.sample_ratio);
}

void
evd_otlp_free (EvdOtlp *o)
{
  if (o == NULL)
    return;
  evd_metrics_remove_collector (o->metrics, evd_otlp_collect, o);
  if (o->thread != NULL) {
    g_mutex_lock (&o->lock);
    o->stopping = TRUE;
    g_cond_signal (&o->wake);
    g_mutex_unlock (&o->lock);
    g_thread_join (o->thread);
    curl_easy_cleanup (o->curl);
    curl_slist_free_all (o->headers);
  }
  g_queue_clear_full (&o->items, evd_otlp_item_free);
  g_mutex_clear (&o->lock);
  g_cond_clear (&o->wake);
  g_free (o->conf.otlp_endpoint);
  g_free (o->conf.service_name);
  g_free (o);
}

const EvdOtlpConfig *
evd_otlp_config (const EvdOtlp *otlp)
{
  return &otlp->conf;
}

double
evd_otlp_sample_ratio (const EvdOtlp *otlp)
{
  return otlp != NULL ? otlp->conf.sample_ratio : 0.0;
}

gboolean
evd_otlp_exporting (const EvdOtlp *otlp)
{
  return otlp != NULL && otlp->thread != NULL;
}

void
evd_otlp_count_invalid (EvdOtlp *otlp)
{
  if (otlp != NULL)
    evd_otlp_count (&otlp->invalid, 1);
}

void
evd_otlp_submit (EvdOtlp *o, GString *spans, guint n_spans)
{
  EvdOtlpItem *item;
  gboolean wake;

  if (!evd_otlp_exporting (o)) {
    g_string_free (spans, TRUE);
    return;
  }
  g_mutex_lock (&o->lock);
  if (o->stopping || o->queued_spans + n_spans > (guint) o->conf.queue_max_spans) {
    g_mutex_unlock (&o->lock);
    evd_otlp_count (&o->dropped, n_spans);
    g_string_free (spans, TRUE);
    return;
  }
  item = g_new (EvdOtlpItem, 1);
  *item = (EvdOtlpItem) { spans, n_spans, g_get_monotonic_time () };
  /* The exporter sleeps until the oldest item's age is up: only the first item, and a queue
   * that just reached a batch, need to wake it. */
  wake = g_queue_is_empty (&o->items) ||
         (o->queued_spans < (guint) o->conf.batch_max_spans &&
          o->queued_spans + n_spans >= (guint) o->conf.batch_max_spans);
  g_queue_push_tail (&o->items, item);
  o->queued_spans += n_spans;
  if (wake)
    g_cond_signal (&o->wake);
  g_mutex_unlock (&o->lock);
}

/* ---- Span JSON ----
 * Written on the loop of every sampled fetch, so the common case is short: names, keys and
 * values that are plain ASCII are copied whole, numbers and ids written without printf. */

/* A JSON string: copied as it is when nothing in it needs escaping, else evd_json_string. */
static void
evd_otlp_json_string (GString *out, const char *s)
{
  const char *p = s;

  for (; *p != '\0'; p++)
    if ((guchar) *p < 0x20 || (guchar) *p >= 0x80 || *p == '"' || *p == '\\') {
      evd_json_string (out, s);
      return;
    }
  g_string_append_c (out, '"');
  g_string_append_len (out, s, p - s);
  g_string_append_c (out, '"');
}

/* A decimal integer, optionally followed by `suffix`, in quotes (int64 in the mapping). */
static void
evd_otlp_int_string (GString *out, gint64 v, const char *suffix)
{
  char buf[32], *p = buf + sizeof buf;
  guint64 u = v < 0 ? -(guint64) v : (guint64) v;

  *--p = '"';
  for (gsize i = strlen (suffix); i > 0; i--)
    *--p = suffix[i - 1];
  do
    *--p = (char) ('0' + u % 10);
  while ((u /= 10) != 0);
  if (v < 0)
    *--p = '-';
  *--p = '"';
  g_string_append_len (out, p, buf + sizeof buf - p);
}

/* "name":"<hex>", */
static void
evd_otlp_hex_field (GString *out, const char *name, const guint8 *id, gsize n)
{
  char hex[33];

  evd_traceparent_hex (id, n, hex);
  g_string_append_c (out, '"');
  g_string_append (out, name);
  g_string_append (out, "\":\"");
  g_string_append_len (out, hex, (gssize) (2 * n));
  g_string_append (out, "\",");
}

void
evd_otlp_span_begin (GString *out, const EvdOtlpSpan *s)
{
  if (out->len > 0)
    g_string_append_c (out, ',');
  g_string_append_c (out, '{');
  evd_otlp_hex_field (out, "traceId", s->trace_id, 16);
  evd_otlp_hex_field (out, "spanId", s->span_id, 8);
  if (s->parent_id != NULL)
    evd_otlp_hex_field (out, "parentSpanId", s->parent_id, 8);
  if (s->trace_state != NULL) {
    g_string_append (out, "\"traceState\":");
    evd_otlp_json_string (out, s->trace_state);
    g_string_append_c (out, ',');
  }
  g_string_append (out, "\"name\":");
  evd_otlp_json_string (out, s->name);
  g_string_append (out, ",\"kind\":");
  g_string_append_c (out, (char) ('0' + s->kind));  /* 1..3 */
  /* int64 nanoseconds are strings in the protobuf JSON mapping */
  g_string_append (out, ",\"startTimeUnixNano\":");
  evd_otlp_int_string (out, s->start_unix_us, "000");
  g_string_append (out, ",\"endTimeUnixNano\":");
  evd_otlp_int_string (out, s->end_unix_us, "000");
  g_string_append (out, ",\"attributes\":[");
}

static void
evd_otlp_attr_key (GString *out, const char *key)
{
  if (out->str[out->len - 1] != '[')
    g_string_append_c (out, ',');
  g_string_append (out, "{\"key\":");
  evd_otlp_json_string (out, key);
}

void
evd_otlp_attr_string (GString *out, const char *key, const char *value)
{
  evd_otlp_attr_key (out, key);
  g_string_append (out, ",\"value\":{\"stringValue\":");
  evd_otlp_json_string (out, value);
  g_string_append (out, "}}");
}

void
evd_otlp_attr_int (GString *out, const char *key, gint64 value)
{
  evd_otlp_attr_key (out, key);
  g_string_append (out, ",\"value\":{\"intValue\":");
  evd_otlp_int_string (out, value, "");
  g_string_append (out, "}}");
}

void
evd_otlp_attr_strings (GString *out, const char *key, const char *const *values, guint n)
{
  evd_otlp_attr_key (out, key);
  g_string_append (out, ",\"value\":{\"arrayValue\":{\"values\":[");
  for (guint i = 0; i < n; i++) {
    g_string_append (out, i ? ",{\"stringValue\":" : "{\"stringValue\":");
    evd_otlp_json_string (out, values[i]);
    g_string_append_c (out, '}');
  }
  g_string_append (out, "]}}}");
}

void
evd_otlp_span_end (GString *out, const char *error_message)
{
  g_string_append (out, "],\"status\":{");
  if (error_message != NULL) {
    g_string_append (out, "\"code\":2,\"message\":");  /* STATUS_CODE_ERROR */
    evd_otlp_json_string (out, error_message);
  }
  g_string_append (out, "}}");
}

/* evd_metrics: counters, histograms and the Prometheus text format (see evd_metrics.h). */
#include "evd_metrics.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Bucket bounds: from a cached lookup (0.5 ms) to a whole deadline (10 s). */
static const gint64 evd_histogram_bounds_us[EVD_HISTOGRAM_N] = {
  500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
  1000000, 2500000, 5000000, 10000000,
};

static const char *const evd_method_names[EVD_METHOD_N] = { "fetch", "lookups", "ping", "other" };
static const char *const evd_outcome_names[EVD_OUTCOME_N] = {
  "ok", "failed", "invalid", "overloaded", "cancelled", "app_error",
};
/* Index = EvdErrorKind, the IDL's ErrorKind (0: success). */
static const char *const evd_call_outcome_names[EVD_ERROR_KIND_N] = {
  "ok", "unknown_lookup", "bad_params", "timeout", "backend", "overloaded", "cancelled",
};

typedef struct {
  EvdMetricsCollector fn;
  gpointer data;
} EvdCollector;

struct _EvdMetrics {
  guint64 requests[EVD_METHOD_N][EVD_OUTCOME_N];
  guint64 call_errors[EVD_ERROR_KIND_N];
  guint64 reloads[2];              /* refused, done */
  EvdHistogram fetch_latency;
  gint64 start_time;               /* wall clock, seconds */

  GMutex lock;                     /* the two lists below */
  GPtrArray *lookups;              /* EvdMetricsLookup *, in order of first use */
  GArray *collectors;              /* EvdCollector */
};

static inline void
evd_metrics_add (guint64 *counter, guint64 n)
{
  __atomic_fetch_add (counter, n, __ATOMIC_RELAXED);
}

static inline guint64
evd_metrics_get (const guint64 *counter)
{
  return __atomic_load_n (counter, __ATOMIC_RELAXED);
}

void
evd_histogram_observe (EvdHistogram *h, gint64 us)
{
  guint i = 0;

  if (h == NULL)
    return;
  us = MAX (us, 0);
  while (i < EVD_HISTOGRAM_N && us > evd_histogram_bounds_us[i])
    i++;
  evd_metrics_add (&h->buckets[i], 1);
  evd_metrics_add (&h->sum_us, (guint64) us);
}

void
evd_metrics_lookup_record (EvdMetricsLookup *s, int error_kind, gint64 us)
{
  if (s == NULL)
    return;
  if (error_kind < 0 || error_kind >= EVD_ERROR_KIND_N)
    error_kind = 4;  /* BACKEND: a kind this build does not know is still an error */
  evd_metrics_add (&s->calls[error_kind], 1);
  evd_histogram_observe (&s->latency, us);
}

static void
evd_metrics_lookup_free (gpointer data)
{
  EvdMetricsLookup *s = data;

  g_free (s->name);
  g_free (s);
}

EvdMetrics *
evd_metrics_new (void)
{
  EvdMetrics *m = g_new0 (EvdMetrics, 1);

  g_mutex_init (&m->lock);
  m->lookups = g_ptr_array_new_with_free_func (evd_metrics_lookup_free);
  m->collectors = g_array_new (FALSE, FALSE, sizeof (EvdCollector));
  m->start_time = g_get_real_time () / G_USEC_PER_SEC;
  return m;
}

void
evd_metrics_free (EvdMetrics *m)
{
  if (m == NULL)
    return;
  g_ptr_array_unref (m->lookups);
  g_array_unref (m->collectors);
  g_mutex_clear (&m->lock);
  g_free (m);
}

EvdMetricMethod
evd_metrics_method (const char *name)
{
  for (guint i = 0; name != NULL && i < EVD_METHOD_OTHER; i++)
    if (strcmp (name, evd_method_names[i]) == 0)
      return (EvdMetricMethod) i;
  return EVD_METHOD_OTHER;
}

void
evd_metrics_request (EvdMetrics *m, EvdMetricMethod method, EvdMetricOutcome outcome)
{
  if (m != NULL && method < EVD_METHOD_N && outcome < EVD_OUTCOME_N)
    evd_metrics_add (&m->requests[method][outcome], 1);
}

void
evd_metrics_fetch_latency (EvdMetrics *m, gint64 us)
{
  if (m != NULL)
    evd_histogram_observe (&m->fetch_latency, us);
}

void
evd_metrics_call_error (EvdMetrics *m, int error_kind)
{
  if (m != NULL && error_kind > 0 && error_kind < EVD_ERROR_KIND_N)
    evd_metrics_add (&m->call_errors[error_kind], 1);
}

void
evd_metrics_reload (EvdMetrics *m, gboolean ok)
{
  if (m != NULL)
    evd_metrics_add (&m->reloads[ok ? 1 : 0], 1);
}

EvdMetricsLookup *
evd_metrics_lookup (EvdMetrics *m, const char *name)
{
  EvdMetricsLookup *s = NULL;

  if (m == NULL)
    return NULL;
  g_mutex_lock (&m->lock);
  for (guint i = 0; i < m->lookups->len && s == NULL; i++)
    if (strcmp (((EvdMetricsLookup *) m->lookups->pdata[i])->name, name) == 0)
      s = m->lookups->pdata[i];
  if (s == NULL) {
    s = g_new0 (EvdMetricsLookup, 1);
    s->name = g_strdup (name);
    g_ptr_array_add (m->lookups, s);
  }
  g_mutex_unlock (&m->lock);
  return s;
}

void
evd_metrics_add_collector (EvdMetrics *m, EvdMetricsCollector fn, gpointer data)
{
  EvdCollector c = { fn, data };

  if (m == NULL)
    return;
  g_mutex_lock (&m->lock);
  g_array_append_val (m->collectors, c);
  g_mutex_unlock (&m->lock);
}

void
evd_metrics_remove_collector (EvdMetrics *m, EvdMetricsCollector fn, gpointer data)
{
  if (m == NULL)
    return;
  g_mutex_lock (&m->lock);
  for (guint i = 0; i < m->collectors->len; i++) {
    EvdCollector *c = &g_array_index (m->collectors, EvdCollector, i);
    if (c->fn == fn && c->data == data) {
      g_array_remove_index (m->collectors, i);
      break;
    }
  }
  g_mutex_unlock (&m->lock);
}

/* ---- The text format. ---- */

void
evd_metrics_family (GString *out, const char *name, const char *type, const char *help)
{
  g_string_append_printf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, double quote and newline; nothing else. */
static void
evd_metrics_label_value (GString *out, const char *v)
{
  for (; *v != '\0'; v++) {
    if (*v == '\\' || *v == '"')
      g_string_append_c (out, '\\');
    if (*v == '\n')
      g_string_append (out, "\\n");
    else
      g_string_append_c (out, *v);
  }
}

static void
evd_metrics_value (GString *out, double value)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  /* Prometheus spells these three its own way; printf's "nan" and "inf" are not its text. */
  if (isnan (value))
    g_string_append (out, " NaN\n");
  else if (isinf (value))
    g_string_append (out, value > 0 ? " +Inf\n" : " -Inf\n");
  /* Whole numbers as integers (counts), the rest in C-locale shortest form. The range first:
   * casting a double outside gint64's to it is undefined. */
  else if (value < 9e15 && value > -9e15 && value == (double) (gint64) value)
    g_string_append_printf (out, " %" G_GINT64_FORMAT "\n", (gint64) value);
  else
    g_string_append_printf (out, " %s\n", g_ascii_formatd (buf, sizeof buf, "%.9g", value));
}

static void
evd_metrics_sample_va (GString *out, const char *name, double value, va_list ap)
{
  const char *k = va_arg (ap, const char *);

  g_string_append (out, name);
  if (k != NULL) {
    g_string_append_c (out, '{');
    for (gboolean first = TRUE; k != NULL; k = va_arg (ap, const char *), first = FALSE) {
      g_string_append_printf (out, "%s%s=\"", first ? "" : ",", k);
      evd_metrics_label_value (out, va_arg (ap, const char *));
      g_string_append_c (out, '"');
    }
    g_string_append_c (out, '}');
  }
  evd_metrics_value (out, value);
}

void
evd_metrics_sample (GString *out, const char *name, double value, ...)
{
  va_list ap;

  va_start (ap, value);
  evd_metrics_sample_va (out, name, value, ap);
  va_end (ap);
}

void
evd_metrics_histogram (GString *out, const char *name, const char *label,
                       const char *label_value, const EvdHistogram *h)
{
  g_autofree char *bucket = g_strconcat (name, "_bucket", NULL);
  g_autofree char *sum = g_strconcat (name, "_sum", NULL);
  g_autofree char *count = g_strconcat (name, "_count", NULL);
  guint64 cumulative = 0;
  char le[32];

  for (guint i = 0; i <= EVD_HISTOGRAM_N; i++) {
    cumulative += evd_metrics_get (&h->buckets[i]);
    if (i < EVD_HISTOGRAM_N)
      g_ascii_formatd (le, sizeof le, "%g", evd_histogram_bounds_us[i] / 1e6);
    else
      g_strlcpy (le, "+Inf", sizeof le);
    if (label != NULL)
      evd_metrics_sample (out, bucket, (double) cumulative, label, label_value, "le", le, NULL);
    else
      evd_metrics_sample (out, bucket, (double) cumulative, "le", le, NULL);
  }
  if (label != NULL) {
    evd_metrics_sample (out, sum, evd_metrics_get (&h->sum_us) / 1e6, label, label_value, NULL);
    evd_metrics_sample (out, count, (double) cumulative, label, label_value, NULL);
  } else {
    evd_metrics_sample (out, sum, evd_metrics_get (&h->sum_us) / 1e6, NULL);
    evd_metrics_sample (out, count, (double) cumulative, NULL);
  }
}

static void
evd_metrics_render_own (EvdMetrics *m, GString *out)
{
  evd_metrics_family (out, "evdal_build_info", "gauge", "The running version.");
  evd_metrics_sample (out, "evdal_build_info", 1, "version", EVDAL_VERSION, NULL);
  evd_metrics_family (out, "evdal_start_time_seconds", "gauge",
                      "When the process started, in seconds since the epoch.");
  evd_metrics_sample (out, "evdal_start_time_seconds", (double) m->start_time, NULL);

  evd_metrics_family (out, "evdal_requests_total", "counter",
                      "Requests answered, by method and outcome.");
  for (guint i = 0; i < EVD_METHOD_N; i++)
    for (guint o = 0; o < EVD_OUTCOME_N; o++)
      evd_metrics_sample (out, "evdal_requests_total", (double) evd_metrics_get (&m->requests[i][o]),
                          "method", evd_method_names[i], "outcome", evd_outcome_names[o], NULL);
  evd_metrics_family (out, "evdal_fetch_duration_seconds", "histogram",
                      "Time from reading a fetch to its answer.");
  evd_metrics_histogram (out, "evdal_fetch_duration_seconds", NULL, NULL, &m->fetch_latency);

  evd_metrics_family (out, "evdal_call_errors_total", "counter",
                      "Calls answered with an error, by kind (refused before running included).");
  for (guint k = 1; k < EVD_ERROR_KIND_N; k++)
    evd_metrics_sample (out, "evdal_call_errors_total", (double) evd_metrics_get (&m->call_errors[k]),
                        "kind", evd_call_outcome_names[k], NULL);

  evd_metrics_family (out, "evdal_config_reloads_total", "counter",
                      "SIGHUP reloads, by result.");
  evd_metrics_sample (out, "evdal_config_reloads_total", (double) evd_metrics_get (&m->reloads[1]),
                      "result", "done", NULL);
  evd_metrics_sample (out, "evdal_config_reloads_total", (double) evd_metrics_get (&m->reloads[0]),
                      "result", "refused", NULL);

  evd_metrics_family (out, "evdal_lookup_calls_total", "counter",
                      "Executions of each lookup, by outcome (identical calls of one fetch run once).");
  for (guint i = 0; i < m->lookups->len; i++) {
    EvdMetricsLookup *s = m->lookups->pdata[i];
    for (guint o = 0; o < EVD_ERROR_KIND_N; o++)
      evd_metrics_sample (out, "evdal_lookup_calls_total", (double) evd_metrics_get (&s->calls[o]),
                          "lookup", s->name, "outcome", evd_call_outcome_names[o], NULL);
  }
  evd_metrics_family (out, "evdal_lookup_duration_seconds", "histogram",
                      "Time each lookup execution took, queueing for its bulkhead included.");
  for (guint i = 0; i < m->lookups->len; i++) {
    EvdMetricsLookup *s = m->lookups->pdata[i];
    evd_metrics_histogram (out, "evdal_lookup_duration_seconds", "lookup", s->name, &s->latency);
  }
}

char *
evd_metrics_render (EvdMetrics *m)
{
  GString *out = g_string_sized_new (16384);
  g_autoptr (GArray) collectors = NULL;

  if (m == NULL)
    return g_string_free (out, FALSE);
  g_mutex_lock (&m->lock);
  evd_metrics_render_own (m, out);
  collectors = g_array_copy (m->collectors);
  g_mutex_unlock (&m->lock);
  /* Collectors run without our lock: they take their owners' locks, and an owner may be
   * inside evd_metrics_lookup() with its own lock held (a reload building an engine). */
  for (guint i = 0; i < collectors->len; i++) {
    EvdCollector *c = &g_array_index (collectors, EvdCollector, i);
    c->fn (out, c->data);
  }
  return g_string_free (out, FALSE);
}

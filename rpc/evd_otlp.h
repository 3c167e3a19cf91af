/* evd_otlp: OpenTelemetry export of evdal's spans, OTLP/HTTP with the protobuf JSON mapping,
 * from a thread of its own; and the [tracing] config and counters.
 *
 * The life of a span. A fetch that is sampled (evd_traceparent: parent-based, or
 * TraceIdRatioBased on sample_ratio) writes its spans as JSON objects with the writers below,
 * on its loop, when it ends, and hands the string to evd_otlp_submit(). Submitting takes the
 * exporter's lock for a queue push and never waits: when queue_max_spans spans are queued
 * already, the spans are dropped and counted (evdal_tracing_spans_dropped_total). An unsampled
 * fetch never gets here, so it costs no lock and no allocation.
 *
 * The exporter thread takes up to batch_max_spans spans at a time, when that many are queued
 * or the oldest has waited batch_max_age_ms, and POSTs them to otlp_endpoint with libcurl's
 * easy interface (blocking, which is why it has a thread: no IO loop ever waits on the
 * collector). A POST has export_timeout_ms in all; a 429, 502, 503 or 504 is retried once
 * within that time; any other failure drops the batch, counted, is logged at most once per
 * EVD_OTLP_LOG_EVERY_US with the number of failures in between, and makes the next POST wait
 * EVD_OTLP_PAUSE_US (a collector that is down is not hammered; the queue bounds what waits). evd_otlp_free() flushes
 * what is queued within one more export_timeout_ms, then drops (and counts) the rest.
 */
#pragma once

#include <glib.h>

#include "evd_config.h"
#include "evd_metrics.h"

G_BEGIN_DECLS

/* The [tracing] group. Every limit has its reason beside its default in evd_otlp.c. */
typedef struct {
  char *otlp_endpoint;       /* NULL: spans are not exported (the context still travels) */
  double sample_ratio;       /* for fetches that bring no trace context */
  char *service_name;        /* the resource's service.name */
  int batch_max_spans;
  int batch_max_age_ms;
  int queue_max_spans;
  int export_timeout_ms;
} EvdOtlpConfig;

typedef struct _EvdOtlp EvdOtlp;

/* Reads [tracing] (problems are recorded in cfg) and registers its metrics with `metrics`
 * (may be NULL). No thread yet: see evd_otlp_start. */
EvdOtlp *evd_otlp_new (EvdConfig *cfg, EvdMetrics *metrics);
/* Starts the exporter thread when an endpoint is configured. Main thread, once. */
void evd_otlp_start (EvdOtlp *otlp);
/* Flushes what is queued within export_timeout_ms, stops the thread. Submitting must have
 * stopped (the IO loops are gone). NULL-safe. */
void evd_otlp_free (EvdOtlp *otlp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdOtlp, evd_otlp_free)

const EvdOtlpConfig *evd_otlp_config (const EvdOtlp *otlp);
/* 0 for a NULL exporter. */
double evd_otlp_sample_ratio (const EvdOtlp *otlp);
/* Whether sampled spans go anywhere (an endpoint is set and the thread runs). */
gboolean evd_otlp_exporting (const EvdOtlp *otlp);

/* A trace context that came in broken (any thread; NULL-safe). */
void evd_otlp_count_invalid (EvdOtlp *otlp);
/* Queues `spans` (a comma-separated list of span objects, taken) holding n_spans spans, or
 * drops and counts them when the queue is full. Any thread; never waits. */
void evd_otlp_submit (EvdOtlp *otlp, GString *spans, guint n_spans);

/* ---- Writing spans (the protobuf JSON mapping of opentelemetry.proto.trace.v1.Span). ---- */

typedef enum {
  EVD_OTLP_KIND_INTERNAL = 1,
  EVD_OTLP_KIND_SERVER = 2,
  EVD_OTLP_KIND_CLIENT = 3,
} EvdOtlpKind;

typedef struct {
  const guint8 *trace_id;    /* 16 bytes */
  const guint8 *span_id;     /* 8 bytes */
  const guint8 *parent_id;   /* 8 bytes, or NULL for a root span */
  const char *trace_state;   /* may be NULL */
  const char *name;
  EvdOtlpKind kind;
  gint64 start_unix_us, end_unix_us;
} EvdOtlpSpan;

/* Appends a span object up to its open attribute list (a ',' first when `out` is not empty);
 * then any number of attributes, then evd_otlp_span_end. */
void evd_otlp_span_begin (GString *out, const EvdOtlpSpan *span);
void evd_otlp_attr_string (GString *out, const char *key, const char *value);
void evd_otlp_attr_int (GString *out, const char *key, gint64 value);
/* A list of strings (an arrayValue): span marks such as evdal.marks = [cache_hit, stale]. */
void evd_otlp_attr_strings (GString *out, const char *key, const char *const *values, guint n);
/* Closes the span; `error_message` non-NULL sets status ERROR with it. */
void evd_otlp_span_end (GString *out, const char *error_message);

G_END_DECLS

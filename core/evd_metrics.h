/* evd_metrics: the numbers /metrics exposes (Prometheus text format 0.0.4), counted where
 * they happen.
 *
 * Counters and histograms are structs of 64-bit integers updated with relaxed atomic adds:
 * recording costs a few uncontended instructions and no lock, from any loop or worker thread.
 * Labels whose values are known in advance (method, outcome, error kind) are array indexes.
 * Per-lookup records are made once per lookup name, under a lock, when an engine is built, and
 * never freed before the registry: the hot path keeps a pointer, and a reload that keeps a
 * lookup keeps its counts (a lookup removed by a reload keeps its last values, as Prometheus
 * expects of a counter). Gauges (connections, loop lag, queue depths, workers busy) are read
 * when scraped, by collectors their owners register.
 *
 * Every function accepts a NULL registry or record and then does nothing, so unit tests and
 * fuzzers build engines without one.
 */
#pragma once

#include <glib.h>

#include "evd_value.h"

G_BEGIN_DECLS

typedef enum {
  EVD_METHOD_FETCH,
  EVD_METHOD_LOOKUPS,
  EVD_METHOD_PING,
  EVD_METHOD_OTHER,          /* unknown or undecodable: one label, whatever the client sent */
  EVD_METHOD_N,
} EvdMetricMethod;

typedef enum {
  EVD_OUTCOME_OK,
  EVD_OUTCOME_FAILED,        /* a critical call failed: LookupFailed */
  EVD_OUTCOME_INVALID,       /* InvalidRequest */
  EVD_OUTCOME_OVERLOADED,    /* Overloaded */
  EVD_OUTCOME_CANCELLED,     /* the client left before the answer */
  EVD_OUTCOME_APP_ERROR,     /* TApplicationException: unknown method, protocol error */
  EVD_OUTCOME_N,
} EvdMetricOutcome;

/* Upper bounds of the latency buckets, in microseconds; a last bucket is +Inf. */
#define EVD_HISTOGRAM_N 14
typedef struct {
  guint64 buckets[EVD_HISTOGRAM_N + 1];   /* not cumulative; rendering sums them */
  guint64 sum_us;
} EvdHistogram;

void evd_histogram_observe (EvdHistogram *h, gint64 us);

typedef struct {
  char *name;
  guint64 calls[EVD_ERROR_KIND_N];
  EvdHistogram latency;
} EvdMetricsLookup;

/* Records one execution of a lookup: `error_kind` an EvdErrorKind, 0 (NONE) when it returned
 * rows. */
void evd_metrics_lookup_record (EvdMetricsLookup *s, int error_kind, gint64 us);

typedef struct _EvdMetrics EvdMetrics;

EvdMetrics *evd_metrics_new (void);
void evd_metrics_free (EvdMetrics *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdMetrics, evd_metrics_free)

/* The label of a method name: DataAccess's by name, anything else (or NULL) as "other". */
EvdMetricMethod evd_metrics_method (const char *name);
void evd_metrics_request (EvdMetrics *m, EvdMetricMethod method, EvdMetricOutcome outcome);
/* A fetch answered (any outcome but cancelled), from reading it to encoding its reply. */
void evd_metrics_fetch_latency (EvdMetrics *m, gint64 us);
/* Every call answered with an error, those refused before running included. */
void evd_metrics_call_error (EvdMetrics *m, int error_kind);
void evd_metrics_reload (EvdMetrics *m, gboolean ok);
/* The record of lookup `name`, made on first use (any thread; takes a lock). */
EvdMetricsLookup *evd_metrics_lookup (EvdMetrics *m, const char *name);

/* Gauges and anything else read at scrape time, on the admin thread. A collector writes whole
 * families (HELP, TYPE, samples) with the helpers below. */
typedef void (*EvdMetricsCollector) (GString *out, gpointer data);
void evd_metrics_add_collector (EvdMetrics *m, EvdMetricsCollector fn, gpointer data);
void evd_metrics_remove_collector (EvdMetrics *m, EvdMetricsCollector fn, gpointer data);

/* The whole exposition. */
char *evd_metrics_render (EvdMetrics *m);

/* ---- Writing the text format. ---- */
void evd_metrics_family (GString *out, const char *name, const char *type, const char *help);
/* `labels` is NULL or "k1", "v1", "k2", "v2", ..., NULL; values are escaped. */
void evd_metrics_sample (GString *out, const char *name, double value, ...) G_GNUC_NULL_TERMINATED;
void evd_metrics_histogram (GString *out, const char *name, const char *label,
                            const char *label_value, const EvdHistogram *h);

G_END_DECLS

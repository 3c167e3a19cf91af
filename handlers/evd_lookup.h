/* evd_lookup: the configured lookups: one per [lookup NAME] group, each bound to an opened
 * backend, with the limits the engine enforces for it.
 *
 * The set is built once at start-up from the config and is read-only afterwards, so every
 * loop reads it without locks. The only mutable part, a lookup's bulkhead (calls in flight
 * across all requests and loops, and the calls waiting for a turn), sits behind that
 * lookup's own lock: a slow backend's contention never touches another lookup.
 */
#pragma once

#include "evd_backend.h"
#include "evd_metrics.h"

G_BEGIN_DECLS

typedef struct _EvdLookup EvdLookup;
typedef struct _EvdLookupSet EvdLookupSet;

/* Reads every [lookup NAME] group and opens its backend; problems are recorded in cfg (see
 * evd_config_check). Always returns a set, possibly missing the lookups that failed. */
EvdLookupSet *evd_lookup_set_new (EvdConfig *cfg);
void evd_lookup_set_free (EvdLookupSet *set);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdLookupSet, evd_lookup_set_free)

EvdLookup *evd_lookup_set_find (EvdLookupSet *set, const char *name);
guint evd_lookup_set_size (EvdLookupSet *set);
EvdLookup *evd_lookup_set_nth (EvdLookupSet *set, guint i);

const EvdLookupSpec *evd_lookup_spec (EvdLookup *l);
const EvdBackendClass *evd_lookup_class (EvdLookup *l);
gpointer evd_lookup_backend (EvdLookup *l);
int evd_lookup_timeout_ms (EvdLookup *l);     /* 0: only the request's deadline applies */
const char *evd_lookup_description (EvdLookup *l);
const EvdParamSpec *evd_lookup_param (EvdLookup *l, const char *name);
/* "a, b, c" for messages. Free with g_free. */
char *evd_lookup_param_names (EvdLookup *l);
/* Where this lookup's executions are counted (NULL: nowhere). Set once, before serving. */
void evd_lookup_set_stats (EvdLookup *l, EvdMetricsLookup *stats);
EvdMetricsLookup *evd_lookup_stats (EvdLookup *l);

/* Runs each backend kind's attach hook for `loop` (on that loop's thread): the set starts
 * serving there. */
void evd_lookup_set_attach (EvdLookupSet *set, EvdLoop *loop);

/* Gauges of the set (each bulkhead's running and queued calls) and of what the backends
 * share (their collect hooks), for /metrics. Any thread. */
void evd_lookup_set_collect (EvdLookupSet *set, GString *out);
/* For /health: a line per database/upstream whose circuit breaker is not closed
 * ("breaker NAME open"). Any thread. */
void evd_lookup_set_health (EvdLookupSet *set, GString *out);
/* The layer between requests of a lookup (evd_xreq), or NULL when it has none: its class
 * is then evd_xreq_class in place of the backend's. */
struct _EvdXreq *evd_lookup_xreq (EvdLookup *l);

/* ---- The bulkhead (max_concurrent, max_queue). ---- */

typedef enum {
  EVD_ADMIT_RUN,       /* start now */
  EVD_ADMIT_QUEUED,    /* the `run` function will be posted to `loop` when a place frees */
  EVD_ADMIT_REJECTED,  /* the wait queue is full */
} EvdAdmit;

/* Asks for a place for one call. With EVD_ADMIT_QUEUED, `data` identifies the wait and must
 * stay valid until `run` has run or the wait is withdrawn. */
EvdAdmit evd_lookup_admit (EvdLookup *l, EvdLoop *loop, EvdLoopFunc run, gpointer data);
/* Gives up the queued wait for `data` (its deadline passed). FALSE when it was already handed
 * a place: its `run` is on its way, and must release that place. */
gboolean evd_lookup_withdraw (EvdLookup *l, gpointer data);
/* A call that ran has finished: its place goes to the next waiter, if any. Any thread. */
void evd_lookup_release (EvdLookup *l);

G_END_DECLS

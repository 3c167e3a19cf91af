/* evd_engine: the fan-out: one fetch starts every call at once, each on its own backend, and
 * merges the replies, so a request takes as long as its slowest lookup.
 *
 * One EvdFetch per request owns everything about it: the request context, one slot per
 * distinct (lookup, params, time budget) — calls that name the same lookup with the same
 * params run once and share the result — and the timers that bound each slot. It ends in
 * exactly one place (evd_engine's finish), when every slot is done, a critical call failed,
 * or the client went away; backends still running then are cancelled and the fetch is freed
 * when the last of them has completed.
 *
 * Everything here runs on the request's loop. The only state shared across loops is a
 * counter of fetches in flight (atomic, for max_inflight) and each lookup's bulkhead
 * (evd_lookup, under that lookup's own lock).
 */
#pragma once

#include "evd_config.h"
#include "evd_lookup.h"
#include "evd_metrics.h"
#include "evd_otlp.h"
#include "evd_request.h"
#include "evd_rpc.h"
#include "evd_trace.h"

G_BEGIN_DECLS

typedef struct _EvdEngine EvdEngine;

/* What every generation of the engine shares (a reload makes a new engine from the new
 * config; requests in flight finish on the old one): the admission counter, so that a reload
 * cannot reset max_inflight, the backend calls under way, for shutdown, and request ids. */
typedef struct {
  gint inflight;              /* atomic: fetches admitted and not yet answered */
  gint outstanding;           /* atomic: backend calls started and not yet completed */
  gint attempts;              /* atomic: of those, calls a layer made (evd_xreq's attempts):
                                 shutdown waits for them, the metric counts lookup calls */
  guint64 next_id;            /* atomic: for request ids the caller did not give */
  char id_prefix[9];          /* random per process, so ids differ across instances */
  EvdMetrics *metrics;        /* where requests and calls are counted; may be NULL */
  EvdTraceStore *traces;      /* where traced requests are kept; may be NULL */
  EvdOtlp *otlp;              /* [tracing]: sampling ratio and span export; may be NULL */
} EvdEngineCounters;

void evd_engine_counters_init (EvdEngineCounters *counters);

/* Opens every configured lookup; problems are recorded in cfg (see evd_config_check). The
 * engine keeps a reference to cfg; `counters` must outlive it. */
EvdEngine *evd_engine_new (EvdConfig *cfg, EvdEngineCounters *counters);
/* Every fetch holds a reference: an engine replaced by a reload lives until its last
 * request has ended. References are atomic; the last one may drop on any loop. */
EvdEngine *evd_engine_ref (EvdEngine *engine);
void evd_engine_unref (EvdEngine *engine);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdEngine, evd_engine_unref)

EvdLookupSet *evd_engine_lookups (EvdEngine *engine);
/* The engine becomes the one serving (start-up, a reload's commit; never one whose config was
 * refused): the [server] keys that bound the whole process take its values (cache_max_bytes,
 * the budget of every lookup's result cache, which all generations share), and its lookups
 * get their /metrics records. */
void evd_engine_activate (EvdEngine *engine);
/* The engine starts serving on `loop` (its thread): its backends prepare what they keep per
 * loop. */
void evd_engine_attach (EvdEngine *engine, EvdLoop *loop);

/* Runs `request` and completes `call` with a DataAccessFetchResult (the response or a
 * declared exception). Takes its own reference to the request. */
void evd_engine_fetch (EvdEngine *engine, EvdCall *call, EvdFetchRequest *request);

/* Whether `loop` is further behind than max_queue_ms: fetches arriving now are refused. */
gboolean evd_engine_lagging (EvdEngine *engine, EvdLoop *loop);
/* Lagging, or max_inflight fetches in flight: a fetch read now would be refused, so it is
 * shed before its args are decoded. */
gboolean evd_engine_busy (EvdEngine *engine, EvdLoop *loop);
/* Completes a fetch with Overloaded at once (its args were never decoded). */
void evd_engine_shed (EvdEngine *engine, EvdCall *call);

G_END_DECLS

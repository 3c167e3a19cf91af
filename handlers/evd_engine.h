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
#include "evd_rpc.h"

G_BEGIN_DECLS

typedef struct _EvdEngine EvdEngine;

/* Opens every configured lookup; problems are recorded in cfg (see evd_config_check). */
EvdEngine *evd_engine_new (EvdConfig *cfg);
void evd_engine_free (EvdEngine *engine);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdEngine, evd_engine_free)

EvdLookupSet *evd_engine_lookups (EvdEngine *engine);

/* Backend calls started and not yet completed, on every loop. */
guint evd_engine_pending (EvdEngine *engine);

/* Runs `request` and completes `call` with a DataAccessFetchResult (the response or a
 * declared exception). Takes its own reference to the request. */
void evd_engine_fetch (EvdEngine *engine, EvdCall *call, evdalFetchRequest *request);

G_END_DECLS

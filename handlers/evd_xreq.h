/* evd_xreq: what sits between requests and a backend: coalescing (evd_coalesce), a result
 * cache (evd_cache), hedged calls (evd_hedge), retries within a budget (evd_retry) and
 * circuit breakers (evd_breaker). Each is a module of its own; this one ties them together
 * around one lookup's calls.
 *
 * A lookup with any of them on is opened behind an EvdXreq: evd_lookup puts evd_xreq_class
 * in place of the backend's class, so the engine starts and cancels its calls as for any
 * backend and nothing in the engine changes. A call (the engine's, one per slot of a fetch)
 * then goes:
 *   1. cache: fresh rows under its key answer at once, marked cache_hit;
 *   2. coalescing: an identical call in flight anywhere in the process is joined (marked
 *      coalesced); else this call makes a *flight*, the shared execution, which lives on
 *      this call's loop and goes out with this call's request id and context;
 *   3. the flight runs attempts on the real backend (evd_backend_call_new_attempt): the
 *      breaker of the lookup's database/upstream may refuse one (breaker_open); a first
 *      attempt slower than the hedge threshold gets one hedge (hedged), the first answer wins
 *      and the other is cancelled; a retryable failure is retried after a jittered backoff
 *      (retried:N); hedges and retries withdraw from the section's retry budget (and give
 *      it back when they do not go out: the breaker refused them, the flight ended first);
 *   4. rows go into the cache and to every waiter (completed on its own loop by the engine);
 *      a failure, or a breaker's refusal, answers with expired rows still within
 *      stale_if_error_ms when there are some (stale), else with the error.
 * Each waiter keeps its own deadline: the engine times it out and cancels it alone. One that
 * leaves while others wait is answered at once; the last one to leave stops the flight, and
 * its own answer waits until the flight's attempts have ended, so that the request behind it
 * (and with it the engine generation, the lookups and their backends) outlives them. The
 * shared call thus runs to the latest deadline among the callers still waiting.
 *
 * Threads: a flight's state is touched on its loop only; waiters join and leave from their
 * own loops under the lookup's coalescing lock, and the shared objects (cache, breaker,
 * budget, hedge statistics) each have their own short lock.
 */
#pragma once

#include "evd_backend.h"
#include "evd_breaker.h"
#include "evd_cache.h"
#include "evd_retry.h"

G_BEGIN_DECLS

typedef struct _EvdXreq EvdXreq;
typedef struct _EvdXreqSet EvdXreqSet;

/* The lookup keys, as read. */
typedef struct {
  gboolean coalesce;        /* coalesce: on by default for SQL, Redis and HTTP lookups */
  gboolean per_principal;   /* per_principal: the key includes the principal */
  gboolean with_attributes; /* HTTP lookups: the key includes principal and attributes */
  gint64 cache_ttl_ms;      /* 0: no cache */
  gint64 cache_max_bytes;   /* default: [server] cache_max_bytes */
  gint64 stale_if_error_ms;
  gint64 hedge_after_ms;    /* 0: not fixed */
  gboolean hedge_p95;
  int retries;
} EvdXreqConfig;

/* Counters of one lookup (the cache's are in EvdCacheStats). */
typedef struct {
  guint64 coalesced;        /* calls that joined a flight */
  guint64 backend_calls;    /* attempts sent to the backend */
  guint64 hedges_sent, hedges_won;
  guint64 retries;
  guint64 budget_denials;   /* retries and hedges the budget refused */
  guint64 breaker_rejections;
  guint64 stale;            /* answers with stale rows */
} EvdXreqStats;

/* The sections a lookup's breaker and retry budget belong to: every [database NAME] and
 * [upstream NAME] (their breaker keys are read here), and the lookups that have neither. */
EvdXreqSet *evd_xreq_set_new (EvdConfig *cfg);
void evd_xreq_set_free (EvdXreqSet *set);
/* evdal_breaker_state and evdal_breaker_transitions_total. Any thread. */
void evd_xreq_set_collect (EvdXreqSet *set, GString *out);
/* "breaker NAME open" lines for /health, one per breaker that is not closed. */
void evd_xreq_set_health (EvdXreqSet *set, GString *out);

/* Reads the lookup's keys. NULL when none of the mechanisms is on: the lookup then calls its
 * backend directly. Otherwise the EvdXreq owns `backend` (closing it closes the backend). */
EvdXreq *evd_xreq_open (EvdXreqSet *set, EvdConfig *cfg, const EvdLookupSpec *spec,
                        const EvdBackendClass *klass, gpointer backend);
/* The class whose backend is an EvdXreq. */
extern const EvdBackendClass evd_xreq_class;

const EvdXreqConfig *evd_xreq_config (EvdXreq *x);
void evd_xreq_stats (EvdXreq *x, EvdXreqStats *out);
/* NULL without a cache. */
EvdCache *evd_xreq_cache (EvdXreq *x);
/* NULL when the section has no breaker. */
EvdBreaker *evd_xreq_breaker (EvdXreq *x);
/* The retry budget of the lookup's section (its database/upstream, or its own). */
EvdRetryBudget *evd_xreq_budget (EvdXreq *x);
/* For tests: the monotonic clock that TTLs, breakers, budgets and p95 read. */
void evd_xreq_set_clock (EvdXreq *x, gint64 (*now) (gpointer data), gpointer data);
/* For tests: points where another loop may act at any moment (complete the flight, join
 * it), so that a test acts there deterministically, on the loop of the point. */
typedef enum {
  EVD_XREQ_HOOK_JOINED,     /* a caller just joined a flight (its own loop) */
  EVD_XREQ_HOOK_FAILING,    /* a flight decided to answer with its failure: neither a retry
                             * nor going on for a caller with more time (the flight's loop) */
} EvdXreqHookPoint;
void evd_xreq_set_hook (EvdXreq *x, void (*hook) (EvdXreqHookPoint at, gpointer data),
                        gpointer data);
/* The per-lookup families (coalesced, cache, hedges, retries, budget denials) of these
 * lookups ("lookup" label = `names[i]`). Any thread. */
void evd_xreq_collect (EvdXreq *const *xs, const char *const *names, guint n, GString *out);

G_END_DECLS

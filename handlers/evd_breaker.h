/* evd_breaker: a circuit breaker for one database or upstream, so that a backend that is
 * down is asked a few probes instead of every call until each times out.
 *
 * Closed, it counts the outcomes of every attempt (first calls, retries and hedges) over a
 * sliding window of `window_ms`. Once the window holds at least `min_calls` attempts and the
 * failed share reaches `failure_ratio`, it opens: calls are refused at once. After `open_ms`
 * it is half-open: `probes` calls go through and the rest are still refused; when all probes
 * succeed it closes, when any fails it opens again. A probe that ends neither way (cancelled:
 * its caller left) gives its place back. A failure is what evd_xreq says it is: a BACKEND
 * error other than a 4xx, and a timeout.
 *
 * One breaker is shared by every lookup of its section on every loop, so it has its own lock,
 * held for a few instructions per attempt; every call takes the current time as an argument
 * (`now_us`, monotonic) so that a test can drive it with a clock of its own. Each transition
 * is logged once and counted.
 */
#pragma once

#include <glib.h>

#include "evd_config.h"

G_BEGIN_DECLS

typedef struct {
  int min_calls;            /* breaker_min_calls = 20 */
  double failure_ratio;     /* breaker_failure_ratio = 0.5 */
  gint64 window_ms;         /* breaker_window_ms = 10000 */
  gint64 open_ms;           /* breaker_open_ms = 5000 */
  int probes;               /* breaker_probes = 3 */
} EvdBreakerConfig;

typedef enum {
  EVD_BREAKER_CLOSED,
  EVD_BREAKER_OPEN,
  EVD_BREAKER_HALF_OPEN,
  EVD_BREAKER_N_STATES,
} EvdBreakerState;

/* What evd_breaker_ask() decided about one attempt; handed back to evd_breaker_record(). */
typedef enum {
  EVD_BREAKER_DENY,         /* refuse it: the breaker is open, or half-open with every probe out */
  EVD_BREAKER_ALLOW,        /* closed: go */
  EVD_BREAKER_PROBE,        /* half-open: go, as one of the probes */
} EvdBreakerVerdict;

typedef enum {
  EVD_BREAKER_SUCCESS,
  EVD_BREAKER_FAILURE,
  EVD_BREAKER_NEUTRAL,      /* cancelled by its caller: says nothing about the backend */
} EvdBreakerOutcome;

typedef struct _EvdBreaker EvdBreaker;

/* Reads `breaker` and the breaker_* keys of `group`; FALSE (and the defaults in `out`) when
 * the breaker is off. Problems go to cfg. */
gboolean evd_breaker_config_read (EvdConfig *cfg, const char *group, EvdBreakerConfig *out);

/* `name` is the section's, for the log and /health ("main" for [database main]). */
EvdBreaker *evd_breaker_new (const char *name, const EvdBreakerConfig *config);
void evd_breaker_free (EvdBreaker *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdBreaker, evd_breaker_free)

const char *evd_breaker_name (EvdBreaker *b);
/* May an attempt go out now? Any thread. `round` (may be NULL) says which half-open period
 * let a probe through, to hand back to evd_breaker_record with the verdict: a probe still
 * running when its round ended (another one failed) is none of a later round's probes. */
EvdBreakerVerdict evd_breaker_ask (EvdBreaker *b, gint64 now_us, guint64 *round);
/* How an attempt that was let through ended. Any thread. */
void evd_breaker_record (EvdBreaker *b, EvdBreakerVerdict verdict, guint64 round,
                         EvdBreakerOutcome outcome, gint64 now_us);
/* The state now (an open breaker whose open_ms passed reads half-open). Any thread. */
EvdBreakerState evd_breaker_state (EvdBreaker *b, gint64 now_us);
const char *evd_breaker_state_name (EvdBreakerState state);
/* Transitions into `state` so far. */
guint64 evd_breaker_transitions (EvdBreaker *b, EvdBreakerState state);

G_END_DECLS

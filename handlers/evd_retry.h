/* evd_retry: the retry budget of one database or upstream, and the backoff between retries.
 *
 * A sick backend must never see a retry storm: retries and hedges together may be at most
 * `percent` of the calls made over a sliding window, plus `min_per_sec` per second of the
 * window as a reserve so that a quiet backend can still be retried (Finagle's RetryBudget:
 * 20% over 10 s, plus 10 per second). Each call deposits, each retry or hedge withdraws; a
 * withdrawal past the budget is refused and counted (evd_retry_budget_denials). A withdrawal
 * whose attempt never went out (the breaker refused it, or its flight ended while the retry
 * waited for its backoff) is refunded: a token spent on nothing would shrink the room left
 * for the retries a recovering backend needs.
 *
 * Shared by every lookup of its section on every loop: its own lock, a few instructions per
 * call. The time is an argument (`now_us`, monotonic), for tests.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Finagle's defaults, which the issue asks for. */
#define EVD_RETRY_BUDGET_PERCENT 0.2
#define EVD_RETRY_BUDGET_MIN_PER_SEC 10
#define EVD_RETRY_BUDGET_WINDOW_US (10 * G_USEC_PER_SEC)

/* Backoff: from 25 ms, doubling, at most 250 ms, jittered. */
#define EVD_RETRY_BACKOFF_FIRST_US (25 * 1000)
#define EVD_RETRY_BACKOFF_MAX_US (250 * 1000)

typedef struct _EvdRetryBudget EvdRetryBudget;

EvdRetryBudget *evd_retry_budget_new (double percent, int min_per_sec, gint64 window_us);
void evd_retry_budget_free (EvdRetryBudget *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdRetryBudget, evd_retry_budget_free)

/* A call went out (its first attempt). */
void evd_retry_budget_deposit (EvdRetryBudget *b, gint64 now_us);
/* May a retry or a hedge go out? TRUE takes it from the budget; FALSE is counted. */
gboolean evd_retry_budget_withdraw (EvdRetryBudget *b, gint64 now_us);
guint64 evd_retry_budget_denials (EvdRetryBudget *b);
/* Gives back a withdrawal made at `withdrawn_us` (the time it was made with, not now: the
 * window counts each withdrawal in the period it was made in) whose retry or hedge did not
 * go out. Exact: it is taken off the count it was added to, so the budget is what it would
 * have been without it, never more; once its period left the window it counts no more, and
 * nothing is given back. */
void evd_retry_budget_refund (EvdRetryBudget *b, gint64 withdrawn_us);
/* Retries and hedges withdrawn (and not refunded) over the window at `now_us`: for tests. */
guint evd_retry_budget_spent (EvdRetryBudget *b, gint64 now_us);

/* How long to wait before retry number `retry` (1, 2, ...): 25 ms doubling up to 250 ms,
 * then a random point in its upper half (`random` any 32 bits), so that callers that failed
 * together do not come back together. */
gint64 evd_retry_backoff_us (guint retry, guint32 random);

G_END_DECLS

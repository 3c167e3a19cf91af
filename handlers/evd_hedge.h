/* evd_hedge: when a lookup's attempt has taken long enough to send a second one.
 *
 * `hedge_after_ms = N`: after N ms. `hedge = p95`: after the 95th percentile of this lookup's
 * successful attempt latencies over the last 10 s, recomputed every second, and not at all
 * until 100 attempts have been seen (a threshold from a handful of samples would hedge
 * half the calls). Latencies go into a log-scale histogram per second (buckets a fifth of an
 * octave wide, so the threshold is at most ~15% above the true percentile): a fixed 10 x 160
 * counters whatever the rate.
 *
 * Shared by the lookup's calls on every loop: its own lock, taken once per successful
 * attempt and once per call asking for the threshold. The time is an argument, for tests.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define EVD_HEDGE_WINDOW_S 10
#define EVD_HEDGE_MIN_SEEN 100
#define EVD_HEDGE_PERCENTILE 0.95

typedef struct _EvdHedge EvdHedge;

/* A fixed threshold (`after_us` > 0) or the p95 one (`after_us` 0). */
EvdHedge *evd_hedge_new (gint64 after_us);
void evd_hedge_free (EvdHedge *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdHedge, evd_hedge_free)

/* A successful attempt took `latency_us`. */
void evd_hedge_record (EvdHedge *h, gint64 latency_us, gint64 now_us);
/* How long the first attempt may take before a hedge goes out; 0: no hedge (yet). */
gint64 evd_hedge_after_us (EvdHedge *h, gint64 now_us);

G_END_DECLS

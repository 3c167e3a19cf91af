/* evd_hedge: hedging thresholds (see evd_hedge.h). */
#include "evd_hedge.h"

#include <math.h>
#include <string.h>

/* Five buckets per octave from 1 us: 160 buckets reach 2^32 us (71 minutes), past any
 * deadline. */
#define EVD_HEDGE_PER_OCTAVE 5
#define EVD_HEDGE_BUCKETS 160

typedef struct {
  gint64 second;            /* -1: unused */
  guint total;
  guint counts[EVD_HEDGE_BUCKETS];
} EvdHedgeSecond;

struct _EvdHedge {
  gint64 fixed_us;
  GMutex lock;
  guint64 seen;
  gint64 computed_second;   /* the second `after_us` was computed in; -1: never */
  gint64 after_us;
  EvdHedgeSecond seconds[EVD_HEDGE_WINDOW_S];
};

EvdHedge *
evd_hedge_new (gint64 after_us)
{
  EvdHedge *h = g_new0 (EvdHedge, 1);

  h->fixed_us = after_us;
  h->computed_second = -1;
  g_mutex_init (&h->lock);
  for (guint i = 0; i < EVD_HEDGE_WINDOW_S; i++)
    h->seconds[i].second = -1;
  return h;
}

void
evd_hedge_free (EvdHedge *h)
{
  if (h == NULL)
    return;
  g_mutex_clear (&h->lock);
  g_free (h);
}

static guint
evd_hedge_bucket (gint64 us)
{
  double b = us <= 1 ? 0 : floor (log2 ((double) us) * EVD_HEDGE_PER_OCTAVE) + 1;

  return (guint) MIN (b, EVD_HEDGE_BUCKETS - 1);
}

/* The upper bound of a bucket: a latency above every one it holds. */
static gint64
evd_hedge_bucket_top (guint b)
{
  return (gint64) ceil (exp2 ((double) b / EVD_HEDGE_PER_OCTAVE));
}

void
evd_hedge_record (EvdHedge *h, gint64 latency_us, gint64 now_us)
{
  gint64 second = now_us / G_USEC_PER_SEC;
  EvdHedgeSecond *s;

  if (h->fixed_us > 0)
    return;
  g_mutex_lock (&h->lock);
  s = &h->seconds[second % EVD_HEDGE_WINDOW_S];
  if (s->second != second) {
    memset (s, 0, sizeof *s);
    s->second = second;
  }
  s->counts[evd_hedge_bucket (latency_us)]++;
  s->total++;
  h->seen++;
  g_mutex_unlock (&h->lock);
}

/* Under the lock: the p95 of the window ending with `second`; 0 when it is empty. */
static gint64
evd_hedge_compute (EvdHedge *h, gint64 second)
{
  guint counts[EVD_HEDGE_BUCKETS] = { 0 };
  guint total = 0, rank, sum = 0;

  for (guint i = 0; i < EVD_HEDGE_WINDOW_S; i++) {
    const EvdHedgeSecond *s = &h->seconds[i];
    if (s->second < 0 || s->second <= second - EVD_HEDGE_WINDOW_S)
      continue;
    for (guint b = 0; b < EVD_HEDGE_BUCKETS; b++)
      counts[b] += s->counts[b];
    total += s->total;
  }
  if (total == 0)
    return 0;
  rank = (guint) ceil (EVD_HEDGE_PERCENTILE * total);
  for (guint b = 0; b < EVD_HEDGE_BUCKETS; b++) {
    sum += counts[b];
    if (sum >= rank)
      return evd_hedge_bucket_top (b);
  }
  return evd_hedge_bucket_top (EVD_HEDGE_BUCKETS - 1);
}

gint64
evd_hedge_after_us (EvdHedge *h, gint64 now_us)
{
  gint64 second = now_us / G_USEC_PER_SEC, after;

  if (h->fixed_us > 0)
    return h->fixed_us;
  g_mutex_lock (&h->lock);
  if (h->seen < EVD_HEDGE_MIN_SEEN) {
    after = 0;
  } else {
    if (h->computed_second != second) {
      h->after_us = evd_hedge_compute (h, second);
      h->computed_second = second;
    }
    after = h->after_us;
  }
  g_mutex_unlock (&h->lock);
  return after;
}

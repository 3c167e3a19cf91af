/* evd_bench_hist: log-linear latency histogram (see evd_bench_hist.h). */
#include "evd_bench_hist.h"

static guint
evd_hist_index (guint64 v)
{
  int e;

  if (v < EVD_HIST_SUB)
    return (guint) v;
  e = 63 - __builtin_clzll (v);  /* >= 7 */
  if (e > 7 + 23)
    return EVD_HIST_BUCKETS - 1;
  return EVD_HIST_SUB + (guint) (e - 7) * EVD_HIST_SUB + (guint) ((v >> (e - 7)) - EVD_HIST_SUB);
}

static double
evd_hist_value (guint idx)
{
  guint e, sub;
  double lo, width;

  if (idx < EVD_HIST_SUB)
    return idx;
  e = (idx - EVD_HIST_SUB) / EVD_HIST_SUB + 7;
  sub = (idx - EVD_HIST_SUB) % EVD_HIST_SUB;
  width = (double) (1ull << (e - 7));
  lo = (double) (EVD_HIST_SUB + sub) * width;
  return lo + width / 2;
}

void
evd_hist_add (EvdHist *h, gint64 us)
{
  if (us < 0)
    us = 0;
  h->counts[evd_hist_index ((guint64) us)]++;
  h->total++;
  h->max_us = MAX (h->max_us, us);
}

void
evd_hist_merge (EvdHist *into, const EvdHist *from)
{
  for (guint i = 0; i < EVD_HIST_BUCKETS; i++)
    into->counts[i] += from->counts[i];
  into->total += from->total;
  into->max_us = MAX (into->max_us, from->max_us);
}

double
evd_hist_quantile (const EvdHist *h, double q)
{
  guint64 rank, seen = 0;

  if (h->total == 0)
    return 0;
  rank = (guint64) (q * (double) h->total);
  if (rank >= h->total)
    rank = h->total - 1;
  for (guint i = 0; i < EVD_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen > rank)
      return MIN (evd_hist_value (i), (double) h->max_us);
  }
  return (double) h->max_us;
}

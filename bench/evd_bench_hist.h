/* evd_bench_hist: a latency histogram with ~1% precision, for evdal-bench.
 *
 * Log-linear buckets in microseconds, as HdrHistogram does: values below 128 us are exact;
 * above, each power of two has 128 sub-buckets, so a value is known within 1/128 (0.8%).
 * Up to 2^31 us (35 minutes); a few KiB per histogram; merging is adding arrays. */
#pragma once

#include <glib.h>

#define EVD_HIST_SUB 128
#define EVD_HIST_BUCKETS (EVD_HIST_SUB + 24 * EVD_HIST_SUB)

typedef struct {
  guint64 counts[EVD_HIST_BUCKETS];
  guint64 total;
  gint64 max_us;
} EvdHist;

void evd_hist_add (EvdHist *h, gint64 us);
void evd_hist_merge (EvdHist *into, const EvdHist *from);
/* The value (us) at quantile q (0..1): the middle of its bucket. */
double evd_hist_quantile (const EvdHist *h, double q);

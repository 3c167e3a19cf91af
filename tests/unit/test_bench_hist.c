/* test_bench_hist: evdal-bench's latency histogram keeps its ~1% promise. */
#include <string.h>

#include "evd_bench_hist.h"

static void
test_precision (void)
{
  static EvdHist h;
  /* Every value, alone, comes back within 1% (exactly below 128 us). */
  for (gint64 v = 1; v < G_GINT64_CONSTANT (2000000000); v = v * 11 / 10 + 1) {
    double got;
    memset (&h, 0, sizeof h);
    evd_hist_add (&h, v);
    got = evd_hist_quantile (&h, 0.5);
    if (v < 128)
      g_assert_cmpfloat (got, ==, (double) v);
    else
      g_assert_cmpfloat (ABS (got - (double) v) / (double) v, <=, 0.01);
  }
}

static void
test_quantiles_and_merge (void)
{
  static EvdHist a, b;

  for (int i = 1; i <= 1000; i++)
    evd_hist_add (i % 2 ? &a : &b, i * 1000);  /* 1 ms .. 1 s */
  evd_hist_merge (&a, &b);
  g_assert_cmpuint (a.total, ==, 1000);
  g_assert_cmpint (a.max_us, ==, 1000000);
  g_assert_cmpfloat (ABS (evd_hist_quantile (&a, 0.5) - 500000) / 500000, <=, 0.01);
  g_assert_cmpfloat (ABS (evd_hist_quantile (&a, 0.99) - 990000) / 990000, <=, 0.01);
  g_assert_cmpfloat (evd_hist_quantile (&a, 1.0), <=, 1000000);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/bench-hist/precision", test_precision);
  g_test_add_func ("/bench-hist/quantiles-and-merge", test_quantiles_and_merge);
  return g_test_run ();
}

/* test_hedge: handlers/evd_hedge.c: a fixed threshold, and p95 of the last 10 s recomputed
 * once a second, nothing before 100 attempts, with a clock of the test's own. */
#include "evd_hedge.h"

#define S G_USEC_PER_SEC
#define MS 1000

static void
test_fixed (void)
{
  g_autoptr (EvdHedge) h = evd_hedge_new (30 * MS);

  g_assert_cmpint (evd_hedge_after_us (h, 0), ==, 30 * MS);
}

static void
test_p95 (void)
{
  g_autoptr (EvdHedge) h = evd_hedge_new (0);
  gint64 t = 100 * S;
  gint64 after;

  /* 1 ms .. 99 ms: 99 attempts, one short of judging. */
  for (guint i = 1; i < 100; i++)
    evd_hedge_record (h, i * MS, t);
  g_assert_cmpint (evd_hedge_after_us (h, t), ==, 0);
  evd_hedge_record (h, 100 * MS, t);
  after = evd_hedge_after_us (h, t);
  /* The 95th of 100 is 95 ms; buckets are a fifth of an octave (15%) wide. */
  g_assert_cmpint (after, >=, 95 * MS);
  g_assert_cmpint (after, <=, 95 * MS * 115 / 100);
  /* Recomputed once a second: more samples in the same second change nothing yet. */
  for (guint i = 0; i < 1000; i++)
    evd_hedge_record (h, 1 * MS, t);
  g_assert_cmpint (evd_hedge_after_us (h, t + S - 1), ==, after);
  /* Then the 95th of 1,100 is the 1,045th: the 44th of 2..100 ms, 45 ms. */
  after = evd_hedge_after_us (h, t + S);
  g_assert_cmpint (after, >=, 45 * MS);
  g_assert_cmpint (after, <=, 45 * MS * 115 / 100);
  /* Ten seconds on, the window is empty: no hedge. */
  g_assert_cmpint (evd_hedge_after_us (h, t + 10 * S), ==, 0);
  /* ... until attempts come again (100 were seen long ago). */
  evd_hedge_record (h, 20 * MS, t + 11 * S);
  after = evd_hedge_after_us (h, t + 11 * S);
  g_assert_cmpint (after, >=, 20 * MS);
  g_assert_cmpint (after, <=, 20 * MS * 115 / 100);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/hedge/fixed", test_fixed);
  g_test_add_func ("/hedge/p95", test_p95);
  return g_test_run ();
}

/* test_retry: handlers/evd_retry.c: the retry budget (20% of calls over 10 s plus 10 per
 * second) under a failing backend, counted exactly, with a clock of the test's own; the
 * backoff's bounds. */
#include "evd_retry.h"

#define S G_USEC_PER_SEC

static EvdRetryBudget *
budget (void)
{
  return evd_retry_budget_new (EVD_RETRY_BUDGET_PERCENT, EVD_RETRY_BUDGET_MIN_PER_SEC,
                               EVD_RETRY_BUDGET_WINDOW_US);
}

static void
test_reserve_without_calls (void)
{
  g_autoptr (EvdRetryBudget) b = budget ();
  gint64 t = 100 * S;

  /* 10 per second over 10 s: 100 retries with no call at all, then none. */
  for (guint i = 0; i < 100; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t));
  g_assert_false (evd_retry_budget_withdraw (b, t));
  g_assert_cmpuint (evd_retry_budget_denials (b), ==, 1);
  /* 10 s later the window has slid past them. */
  g_assert_true (evd_retry_budget_withdraw (b, t + 10 * S));
}

static void
test_failing_backend (void)
{
  g_autoptr (EvdRetryBudget) b = budget ();
  gint64 t = 100 * S;
  guint granted = 0, denied = 0;

  /* 1000 calls, each failing and asking for a retry at once. */
  for (guint i = 0; i < 1000; i++) {
    evd_retry_budget_deposit (b, t);
    if (evd_retry_budget_withdraw (b, t))
      granted++;
    else
      denied++;
  }
  /* 20% of 1000 plus the reserve of 100. */
  g_assert_cmpuint (granted, ==, 300);
  g_assert_cmpuint (denied, ==, 700);
  g_assert_cmpuint (evd_retry_budget_denials (b), ==, 700);
}

static void
test_window_slides_per_second (void)
{
  g_autoptr (EvdRetryBudget) b = budget ();
  gint64 t = 100 * S;

  for (guint i = 0; i < 100; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t));
  g_assert_false (evd_retry_budget_withdraw (b, t + 9 * S));
  /* 500 calls deposit room for 100 more. */
  for (guint i = 0; i < 500; i++)
    evd_retry_budget_deposit (b, t + 9 * S);
  for (guint i = 0; i < 100; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t + 9 * S));
  g_assert_false (evd_retry_budget_withdraw (b, t + 9 * S));
  /* At t + 10 s the first second's 100 retries left the window. */
  for (guint i = 0; i < 100; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t + 10 * S));
  g_assert_false (evd_retry_budget_withdraw (b, t + 10 * S));
}

static void
test_backoff (void)
{
  static const gint64 nominal_ms[] = { 25, 50, 100, 200, 250, 250, 250 };

  for (guint r = 1; r <= G_N_ELEMENTS (nominal_ms); r++) {
    gint64 top = nominal_ms[r - 1] * 1000, lo = G_MAXINT64, hi = 0;

    for (guint32 i = 0; i < 2000; i++) {
      gint64 d = evd_retry_backoff_us (r, g_random_int ());
      lo = MIN (lo, d);
      hi = MAX (hi, d);
    }
    g_assert_cmpint (lo, >=, top / 2);
    g_assert_cmpint (hi, <=, top);
    g_assert_cmpint (hi - lo, >, top / 4);  /* jittered */
    g_assert_cmpint (evd_retry_backoff_us (r, 0), ==, top / 2);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/retry/budget/reserve-without-calls", test_reserve_without_calls);
  g_test_add_func ("/retry/budget/failing-backend", test_failing_backend);
  g_test_add_func ("/retry/budget/window-slides", test_window_slides_per_second);
  g_test_add_func ("/retry/backoff", test_backoff);
  return g_test_run ();
}

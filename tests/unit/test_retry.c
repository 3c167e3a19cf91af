/* test_retry: handlers/evd_retry.c: the retry budget (20% of calls over 10 s plus 10 per
 * second) under a failing backend, counted exactly, with a clock of the test's own; the
 * backoff's bounds; refunds of withdrawals whose attempt never went out. */
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

/* A refund gives the room back at once: the budget is as if the withdrawal had not been
 * made. Without it, the breaker's refusals and the flights that ended during a backoff each
 * burnt a token of the 100 in reserve. */
static void
test_refund_gives_the_room_back (void)
{
  g_autoptr (EvdRetryBudget) b = budget ();
  gint64 t = 100 * S;

  for (guint i = 0; i < 100; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t));
  g_assert_cmpuint (evd_retry_budget_spent (b, t), ==, 100);
  g_assert_false (evd_retry_budget_withdraw (b, t));
  /* Three of them did not go out. */
  for (guint i = 0; i < 3; i++)
    evd_retry_budget_refund (b, t);
  g_assert_cmpuint (evd_retry_budget_spent (b, t), ==, 97);
  for (guint i = 0; i < 3; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t));
  g_assert_false (evd_retry_budget_withdraw (b, t));
  g_assert_cmpuint (evd_retry_budget_denials (b), ==, 2);  /* refunds do not touch these */
}

/* A refund made later (a retry's backoff, a period or two on) comes off the period the
 * withdrawal was counted in, not the current one: taken off the current one, the budget would
 * have one more than it should once the withdrawal's own period left the window. Never more
 * than was withdrawn, and nothing once the period has left the window. */
static void
test_refund_is_exact (void)
{
  g_autoptr (EvdRetryBudget) b = budget ();
  gint64 t = 100 * S;

  for (guint i = 0; i < 50; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t));
  for (guint i = 0; i < 50; i++)
    g_assert_true (evd_retry_budget_withdraw (b, t + 2 * S));
  /* Refunded at t + 2 s for a withdrawal made at t. */
  evd_retry_budget_refund (b, t);
  g_assert_cmpuint (evd_retry_budget_spent (b, t + 2 * S), ==, 99);
  /* At t + 10 s the first period left: the second's 50 remain, all of them. */
  g_assert_cmpuint (evd_retry_budget_spent (b, t + 10 * S), ==, 50);
  /* More refunds than withdrawals in a period give back no more than it had. */
  for (guint i = 0; i < 60; i++)
    evd_retry_budget_refund (b, t);
  g_assert_cmpuint (evd_retry_budget_spent (b, t + 2 * S), ==, 50);
  /* A withdrawal whose period left the window: nothing to give back. */
  evd_retry_budget_refund (b, t + 2 * S - 10 * S);
  g_assert_cmpuint (evd_retry_budget_spent (b, t + 2 * S), ==, 50);
  /* A period's bucket reused by a later one (t + 12 s shares t + 2 s's): the refund for a
   * withdrawal at t + 2 s finds it gone, and leaves the later period's count alone. */
  g_assert_true (evd_retry_budget_withdraw (b, t + 12 * S));
  evd_retry_budget_refund (b, t + 2 * S);
  g_assert_cmpuint (evd_retry_budget_spent (b, t + 12 * S), ==, 1);
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
  g_test_add_func ("/retry/budget/refund-gives-the-room-back", test_refund_gives_the_room_back);
  g_test_add_func ("/retry/budget/refund-is-exact", test_refund_is_exact);
  g_test_add_func ("/retry/backoff", test_backoff);
  return g_test_run ();
}

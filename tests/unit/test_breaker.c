/* test_breaker: handlers/evd_breaker.c with a clock of the test's own: the breaker opens at
 * exactly min_calls and failure_ratio, half-opens at exactly open_ms, lets exactly `probes`
 * calls through, closes when all succeed and opens again when one fails. */
#include <string.h>

#include "evd_breaker.h"

#define MS 1000

static const EvdBreakerConfig config = { 20, 0.5, 10000, 5000, 3 };

static void
record_n (EvdBreaker *b, guint n, EvdBreakerOutcome outcome, gint64 now)
{
  for (guint i = 0; i < n; i++) {
    g_assert_cmpint (evd_breaker_ask (b, now, NULL), ==, EVD_BREAKER_ALLOW);
    evd_breaker_record (b, EVD_BREAKER_ALLOW, 0, outcome, now);
  }
}

static void
test_opens_at_exact_threshold (void)
{
  g_autoptr (EvdBreaker) b = evd_breaker_new ("main", &config);
  gint64 t = 1000 * MS;

  /* 19 calls, 9 of them failed: too few calls to judge. */
  record_n (b, 10, EVD_BREAKER_SUCCESS, t);
  record_n (b, 9, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
  /* The 20th, failed: 10 of 20 = 0.5, the ratio exactly. */
  record_n (b, 1, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_OPEN);
  g_assert_cmpint (evd_breaker_ask (b, t, NULL), ==, EVD_BREAKER_DENY);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_OPEN), ==, 1);
}

static void
test_below_ratio_stays_closed (void)
{
  g_autoptr (EvdBreaker) b = evd_breaker_new ("main", &config);
  gint64 t = 1000 * MS;

  /* 21 calls, 10 failed: 0.476, under the ratio. */
  record_n (b, 11, EVD_BREAKER_SUCCESS, t);
  record_n (b, 10, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
  /* Cancelled calls count for nothing. */
  record_n (b, 100, EVD_BREAKER_NEUTRAL, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
  record_n (b, 1, EVD_BREAKER_FAILURE, t);  /* 11 of 22 */
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_OPEN);
}

static void
test_window_slides (void)
{
  g_autoptr (EvdBreaker) b = evd_breaker_new ("main", &config);
  gint64 t = 1000 * MS;

  record_n (b, 19, EVD_BREAKER_FAILURE, t);
  /* Those failures are out of the window 10 s later: one more is 1 of 1. */
  t += 10000 * MS;
  record_n (b, 1, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
}

static EvdBreaker *
opened_at (gint64 t)
{
  EvdBreaker *b = evd_breaker_new ("main", &config);

  record_n (b, 20, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_OPEN);
  return b;
}

static void
test_half_open_probes_then_closed (void)
{
  gint64 t = 1000 * MS;
  guint64 round = 0;
  g_autoptr (EvdBreaker) b = opened_at (t);

  g_assert_cmpint (evd_breaker_ask (b, t + 5000 * MS - 1, NULL), ==, EVD_BREAKER_DENY);
  g_assert_cmpint (evd_breaker_state (b, t + 5000 * MS - 1), ==, EVD_BREAKER_OPEN);
  t += 5000 * MS;
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_HALF_OPEN);
  for (guint i = 0; i < 3; i++)
    g_assert_cmpint (evd_breaker_ask (b, t, &round), ==, EVD_BREAKER_PROBE);
  g_assert_cmpint (evd_breaker_ask (b, t, NULL), ==, EVD_BREAKER_DENY);  /* every probe is out */
  evd_breaker_record (b, EVD_BREAKER_PROBE, round, EVD_BREAKER_SUCCESS, t);
  evd_breaker_record (b, EVD_BREAKER_PROBE, round, EVD_BREAKER_SUCCESS, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_HALF_OPEN);
  evd_breaker_record (b, EVD_BREAKER_PROBE, round, EVD_BREAKER_SUCCESS, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
  g_assert_cmpint (evd_breaker_ask (b, t, NULL), ==, EVD_BREAKER_ALLOW);
  /* Closed afresh: the failures before it opened are forgotten. */
  record_n (b, 1, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_HALF_OPEN), ==, 1);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_CLOSED), ==, 1);
}

static void
test_failed_probe_opens_again (void)
{
  gint64 t = 1000 * MS;
  guint64 round = 0;
  g_autoptr (EvdBreaker) b = opened_at (t);

  t += 5000 * MS;
  g_assert_cmpint (evd_breaker_ask (b, t, &round), ==, EVD_BREAKER_PROBE);
  g_assert_cmpint (evd_breaker_ask (b, t, &round), ==, EVD_BREAKER_PROBE);
  evd_breaker_record (b, EVD_BREAKER_PROBE, round, EVD_BREAKER_SUCCESS, t);
  evd_breaker_record (b, EVD_BREAKER_PROBE, round, EVD_BREAKER_FAILURE, t + 1);
  g_assert_cmpint (evd_breaker_state (b, t + 1), ==, EVD_BREAKER_OPEN);
  /* open_ms counts from the new opening. */
  g_assert_cmpint (evd_breaker_ask (b, t + 5000 * MS, NULL), ==, EVD_BREAKER_DENY);
  g_assert_cmpint (evd_breaker_ask (b, t + 1 + 5000 * MS, NULL), ==, EVD_BREAKER_PROBE);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_OPEN), ==, 2);
}

static void
test_cancelled_probe_gives_its_place_back (void)
{
  gint64 t = 1000 * MS;
  guint64 round = 0;
  g_autoptr (EvdBreaker) b = opened_at (t);

  t += 5000 * MS;
  for (guint i = 0; i < 3; i++)
    g_assert_cmpint (evd_breaker_ask (b, t, &round), ==, EVD_BREAKER_PROBE);
  evd_breaker_record (b, EVD_BREAKER_PROBE, round, EVD_BREAKER_NEUTRAL, t);
  g_assert_cmpint (evd_breaker_ask (b, t, NULL), ==, EVD_BREAKER_PROBE);
  g_assert_cmpint (evd_breaker_ask (b, t, NULL), ==, EVD_BREAKER_DENY);
  /* A call let through while closed that ends now says nothing. */
  evd_breaker_record (b, EVD_BREAKER_ALLOW, 0, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_HALF_OPEN);
}

/* A probe still running when its round ended (another probe failed) ends in a later round:
 * it is none of that round's probes, whatever its outcome. */
static void
test_probe_of_an_earlier_round_counts_for_nothing (void)
{
  gint64 t = 1000 * MS;
  guint64 first = 0, next = 0;
  g_autoptr (EvdBreaker) b = opened_at (t);

  t += 5000 * MS;
  for (guint i = 0; i < 3; i++)
    g_assert_cmpint (evd_breaker_ask (b, t, &first), ==, EVD_BREAKER_PROBE);
  evd_breaker_record (b, EVD_BREAKER_PROBE, first, EVD_BREAKER_FAILURE, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_OPEN);
  /* The next round: its 3 probes go out; the two left of the first round end. */
  t += 5000 * MS;
  for (guint i = 0; i < 3; i++)
    g_assert_cmpint (evd_breaker_ask (b, t, &next), ==, EVD_BREAKER_PROBE);
  evd_breaker_record (b, EVD_BREAKER_PROBE, first, EVD_BREAKER_NEUTRAL, t);
  g_assert_cmpint (evd_breaker_ask (b, t, NULL), ==, EVD_BREAKER_DENY);  /* no 4th probe */
  evd_breaker_record (b, EVD_BREAKER_PROBE, first, EVD_BREAKER_SUCCESS, t);
  /* Two of this round's probes succeed: the third is still out. */
  evd_breaker_record (b, EVD_BREAKER_PROBE, next, EVD_BREAKER_SUCCESS, t);
  evd_breaker_record (b, EVD_BREAKER_PROBE, next, EVD_BREAKER_SUCCESS, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_HALF_OPEN);
  evd_breaker_record (b, EVD_BREAKER_PROBE, next, EVD_BREAKER_SUCCESS, t);
  g_assert_cmpint (evd_breaker_state (b, t), ==, EVD_BREAKER_CLOSED);
}

static void
test_config_keys (void)
{
  static const char text[] =
    "[database a]\nbreaker = on\nbreaker_min_calls = 5\nbreaker_failure_ratio = 0.25\n"
    "breaker_window_ms = 2000\nbreaker_open_ms = 100\nbreaker_probes = 1\n"
    "[database b]\npath = x\n"
    "[database c]\nbreaker = maybe\nbreaker_failure_ratio = 1.5\n";
  g_autoptr (EvdConfig) cfg = evd_config_load_data (text, sizeof text - 1, "t.conf", "/tmp");
  g_autoptr (GError) error = NULL;
  EvdBreakerConfig c;

  g_assert_true (evd_breaker_config_read (cfg, "database a", &c));
  g_assert_cmpint (c.min_calls, ==, 5);
  g_assert_cmpfloat (c.failure_ratio, ==, 0.25);
  g_assert_cmpint (c.window_ms, ==, 2000);
  g_assert_cmpint (c.open_ms, ==, 100);
  g_assert_cmpint (c.probes, ==, 1);
  g_assert_false (evd_breaker_config_read (cfg, "database b", &c));
  g_assert_cmpint (c.min_calls, ==, 20);
  g_assert_cmpfloat (c.failure_ratio, ==, 0.5);
  g_assert_cmpint (c.window_ms, ==, 10000);
  g_assert_cmpint (c.open_ms, ==, 5000);
  g_assert_cmpint (c.probes, ==, 3);
  g_assert_false (evd_breaker_config_read (cfg, "database c", &c));
  evd_config_mark_used (cfg, "database b", "path");
  g_assert_false (evd_config_check (cfg, &error));
  g_assert_nonnull (strstr (error->message, "t.conf:11: [database c] breaker: \"maybe\""));
  g_assert_nonnull (strstr (error->message, "[database c] breaker_failure_ratio"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/breaker/opens-at-exact-threshold", test_opens_at_exact_threshold);
  g_test_add_func ("/breaker/below-ratio-stays-closed", test_below_ratio_stays_closed);
  g_test_add_func ("/breaker/window-slides", test_window_slides);
  g_test_add_func ("/breaker/half-open-probes-then-closed", test_half_open_probes_then_closed);
  g_test_add_func ("/breaker/failed-probe-opens-again", test_failed_probe_opens_again);
  g_test_add_func ("/breaker/cancelled-probe-gives-its-place-back",
                   test_cancelled_probe_gives_its_place_back);
  g_test_add_func ("/breaker/probe-of-an-earlier-round-counts-for-nothing",
                   test_probe_of_an_earlier_round_counts_for_nothing);
  g_test_add_func ("/breaker/config-keys", test_config_keys);
  return g_test_run ();
}

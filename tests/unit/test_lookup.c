/* test_lookup: a lookup's bulkhead (handlers/evd_lookup.c): max_concurrent calls run, up to
 * max_queue wait, the rest are refused; a freed place goes straight to the oldest waiter, on
 * the loop that waits; a waiter may withdraw until it has been handed a place.
 *
 * The first tests drive two loops that no thread runs (evd_loop_run_pending shows which loop
 * a hand-off went to); the last runs two loop threads that admit and release against each
 * other, and checks that the bound held at every instant. */
#include <event2/thread.h>
#include <string.h>

#include "evd_lookup.h"

static const char test_config[] =
  "[lookup bounded]\n"
  "backend = static\n"
  "columns = a\n"
  "row.1 = 1\n"
  "max_concurrent = 2\n"
  "max_queue = 2\n"
  "[lookup wide]\n"
  "backend = static\n"
  "columns = a\n"
  "row.1 = 1\n"
  "max_concurrent = 3\n"
  "max_queue = 100000\n"
  "[lookup free]\n"
  "backend = static\n"
  "columns = a\n"
  "row.1 = 1\n";

static EvdLookupSet *set;

/* The bulkhead's gauges of `lookup`, as /metrics shows them. */
static void
test_assert_gauges (const char *lookup, int running, int queued)
{
  g_autoptr (GString) out = g_string_new (NULL);
  g_autofree char *want_running = g_strdup_printf ("evdal_lookup_running{lookup=\"%s\"} %d\n",
                                                   lookup, running);
  g_autofree char *want_queued = g_strdup_printf (
    "evdal_lookup_queue_depth{lookup=\"%s\"} %d\n", lookup, queued);

  evd_lookup_set_collect (set, out);
  if (strstr (out->str, want_running) == NULL || strstr (out->str, want_queued) == NULL)
    g_error ("want %s and %s in:\n%s", want_running, want_queued, out->str);
}

/* A wait: which loop it asked to run on, and how often its turn came. */
typedef struct {
  EvdLoop *loop;
  int turns;
} TestWaiter;

static void
test_on_turn (gpointer data)
{
  TestWaiter *w = data;

  g_assert_true (evd_loop_is_current (w->loop));
  w->turns++;
}

static void
test_admit_queue_reject_release (void)
{
  EvdLookup *l = evd_lookup_set_find (set, "bounded");
  g_autoptr (GError) error = NULL;
  EvdLoop *a = evd_loop_new (0, &error), *b = evd_loop_new (1, &error);
  TestWaiter wb = { b, 0 }, wa = { a, 0 }, refused = { a, 0 };

  g_assert_no_error (error);
  g_assert_cmpint (evd_lookup_admit (l, a, test_on_turn, NULL), ==, EVD_ADMIT_RUN);
  g_assert_cmpint (evd_lookup_admit (l, a, test_on_turn, NULL), ==, EVD_ADMIT_RUN);
  test_assert_gauges ("bounded", 2, 0);
  g_assert_cmpint (evd_lookup_admit (l, b, test_on_turn, &wb), ==, EVD_ADMIT_QUEUED);
  g_assert_cmpint (evd_lookup_admit (l, a, test_on_turn, &wa), ==, EVD_ADMIT_QUEUED);
  g_assert_cmpint (evd_lookup_admit (l, a, test_on_turn, &refused), ==, EVD_ADMIT_REJECTED);
  test_assert_gauges ("bounded", 2, 2);

  /* A place frees: it goes to the oldest waiter, on its own loop (b), and stays taken. */
  evd_lookup_release (l);
  evd_loop_run_pending (a);
  g_assert_cmpint (wb.turns, ==, 0);
  evd_loop_run_pending (b);
  g_assert_cmpint (wb.turns, ==, 1);
  g_assert_cmpint (wa.turns, ==, 0);
  test_assert_gauges ("bounded", 2, 1);
  /* Handed a place already: too late to withdraw. Still waiting: withdrawn. */
  g_assert_false (evd_lookup_withdraw (l, &wb));
  g_assert_true (evd_lookup_withdraw (l, &wa));
  g_assert_false (evd_lookup_withdraw (l, &wa));
  test_assert_gauges ("bounded", 2, 0);
  /* With nobody waiting, a release frees the place; the withdrawn wait never runs. */
  evd_lookup_release (l);
  test_assert_gauges ("bounded", 1, 0);
  evd_lookup_release (l);
  test_assert_gauges ("bounded", 0, 0);
  evd_loop_run_pending (a);
  evd_loop_run_pending (b);
  g_assert_cmpint (wa.turns, ==, 0);
  g_assert_cmpint (refused.turns, ==, 0);
  /* Free again: the next calls run at once. */
  g_assert_cmpint (evd_lookup_admit (l, b, test_on_turn, NULL), ==, EVD_ADMIT_RUN);
  evd_lookup_release (l);
  test_assert_gauges ("bounded", 0, 0);
  evd_loop_free (a);
  evd_loop_free (b);
}

/* Waiters get their turn oldest first, each on the loop it asked from. */
static void
test_turns_in_order (void)
{
  EvdLookup *l = evd_lookup_set_find (set, "bounded");
  g_autoptr (GError) error = NULL;
  EvdLoop *a = evd_loop_new (0, &error), *b = evd_loop_new (1, &error);
  TestWaiter w1 = { a, 0 }, w2 = { b, 0 };

  g_assert_cmpint (evd_lookup_admit (l, a, test_on_turn, NULL), ==, EVD_ADMIT_RUN);
  g_assert_cmpint (evd_lookup_admit (l, b, test_on_turn, NULL), ==, EVD_ADMIT_RUN);
  g_assert_cmpint (evd_lookup_admit (l, a, test_on_turn, &w1), ==, EVD_ADMIT_QUEUED);
  g_assert_cmpint (evd_lookup_admit (l, b, test_on_turn, &w2), ==, EVD_ADMIT_QUEUED);
  evd_lookup_release (l);
  evd_loop_run_pending (b);
  g_assert_cmpint (w2.turns, ==, 0);  /* w1 came first: its turn went to a */
  evd_loop_run_pending (a);
  g_assert_cmpint (w1.turns, ==, 1);
  evd_lookup_release (l);
  evd_loop_run_pending (b);
  g_assert_cmpint (w2.turns, ==, 1);
  test_assert_gauges ("bounded", 2, 0);
  evd_lookup_release (l);
  evd_lookup_release (l);
  test_assert_gauges ("bounded", 0, 0);
  evd_loop_free (a);
  evd_loop_free (b);
}

/* Without max_concurrent nothing is counted nor refused, and no gauge is shown. */
static void
test_unbounded (void)
{
  EvdLookup *l = evd_lookup_set_find (set, "free");
  g_autoptr (GString) out = g_string_new (NULL);

  for (int i = 0; i < 1000; i++)
    g_assert_cmpint (evd_lookup_admit (l, NULL, test_on_turn, NULL), ==, EVD_ADMIT_RUN);
  for (int i = 0; i < 1000; i++)
    evd_lookup_release (l);
  evd_lookup_set_collect (set, out);
  g_assert_null (strstr (out->str, "lookup=\"free\""));
}

/* ---- Two loop threads against one bulkhead. ---- */

#define TEST_CALLS_PER_LOOP 400

typedef struct _TestCall TestCall;
typedef struct {
  EvdLoop *loops[2];
  EvdLookup *lookup;
  gint holding;               /* calls holding a place now */
  gint most;                  /* the most ever seen at once */
  gint queued;                /* admissions that had to wait */
  gint finished;
  TestCall *calls;
} TestRace;

struct _TestCall {
  TestRace *race;
  guint side;                 /* the loop it runs on: 0 or 1 */
  gint turns;
};

static void
test_race_release (gpointer data)
{
  TestCall *c = data;

  /* From the other loop's thread: a place freed there goes to a waiter on either loop. */
  g_atomic_int_add (&c->race->holding, -1);  /* before the place is given back */
  evd_lookup_release (c->race->lookup);
  g_atomic_int_inc (&c->race->finished);
}

/* A call got its place: count it, and give the place back later, from the other loop. */
static void
test_race_run (gpointer data)
{
  TestCall *c = data;
  TestRace *r = c->race;
  gint now = g_atomic_int_add (&r->holding, 1) + 1, most;

  g_assert_true (evd_loop_is_current (r->loops[c->side]));
  g_assert_cmpint (g_atomic_int_add (&c->turns, 1), ==, 0);
  while ((most = g_atomic_int_get (&r->most)) < now &&
         !g_atomic_int_compare_and_exchange (&r->most, most, now))
    ;
  evd_loop_post (r->loops[!c->side], test_race_release, c);
}

static void
test_race_admit (gpointer data)
{
  TestCall *c = data;
  TestRace *r = c->race;

  switch (evd_lookup_admit (r->lookup, r->loops[c->side], test_race_run, c)) {
  case EVD_ADMIT_RUN:
    test_race_run (c);
    break;
  case EVD_ADMIT_QUEUED:
    g_atomic_int_inc (&r->queued);
    break;
  case EVD_ADMIT_REJECTED:
    g_assert_not_reached ();  /* max_queue is larger than every call together */
  }
}

static void
test_two_loops_never_exceed_the_bound (void)
{
  g_autoptr (GError) error = NULL;
  TestRace race = { .lookup = evd_lookup_set_find (set, "wide") };
  gint64 give_up = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;

  race.calls = g_new0 (TestCall, 2 * TEST_CALLS_PER_LOOP);
  for (guint i = 0; i < 2; i++) {
    race.loops[i] = evd_loop_new (i, &error);
    g_assert_no_error (error);
  }
  /* Everything is queued before the threads start, so both loops begin with a burst. */
  for (guint i = 0; i < 2 * TEST_CALLS_PER_LOOP; i++) {
    race.calls[i] = (TestCall) { &race, i % 2, 0 };
    evd_loop_post (race.loops[i % 2], test_race_admit, &race.calls[i]);
  }
  for (guint i = 0; i < 2; i++)
    g_assert_true (evd_loop_start (race.loops[i], &error));
  /* Polls for the end (with a deadline): the threads decide when. */
  while (g_atomic_int_get (&race.finished) < 2 * TEST_CALLS_PER_LOOP) {
    g_assert_cmpint (g_get_monotonic_time (), <, give_up);
    g_thread_yield ();
  }
  for (guint i = 0; i < 2; i++) {
    evd_loop_quit (race.loops[i]);
    evd_loop_free (race.loops[i]);
  }
  for (guint i = 0; i < 2 * TEST_CALLS_PER_LOOP; i++)
    g_assert_cmpint (race.calls[i].turns, ==, 1);
  g_assert_cmpint (race.most, <=, 3);
  g_assert_cmpint (race.most, >=, 1);
  /* A burst of 400 against 3 places: most of it waited, and got its turn. */
  g_assert_cmpint (race.queued, >, 0);
  test_assert_gauges ("wide", 0, 0);
  g_free (race.calls);
}

int
main (int argc, char **argv)
{
  g_autoptr (EvdConfig) cfg = NULL;
  g_autoptr (GError) error = NULL;
  int rc;

  evthread_use_pthreads ();
  g_test_init (&argc, &argv, NULL);
  cfg = evd_config_load_data (test_config, strlen (test_config), "lookup.conf", "/tmp");
  set = evd_lookup_set_new (cfg);
  evd_config_check (cfg, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (evd_lookup_set_size (set), ==, 3);

  g_test_add_func ("/lookup/admit-queue-reject-release", test_admit_queue_reject_release);
  g_test_add_func ("/lookup/turns-in-order", test_turns_in_order);
  g_test_add_func ("/lookup/unbounded", test_unbounded);
  g_test_add_func ("/lookup/two-loops-never-exceed-the-bound",
                   test_two_loops_never_exceed_the_bound);
  rc = g_test_run ();
  evd_lookup_set_free (set);
  return rc;
}

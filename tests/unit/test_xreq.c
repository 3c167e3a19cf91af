/* test_xreq: handlers/evd_xreq.c driven on a loop with the fault and delay backends (behind a
 * wrapper that counts their starts and cancels) and, where time decides (TTL, stale window,
 * breaker, budget), a clock of the test's own: callers leaving a shared call one by one (the
 * backend is cancelled only when the last leaves), callers joining one just as it answers
 * (a hook of evd_xreq's acts where another loop could), TTL, stale-if-error, one hedge and
 * the loser cancelled, the budget under a failing backend, the breaker's transitions. The engine
 * is not involved: callers are calls made with evd_backend_call_new, as the engine's are. */
#include <event2/event.h>
#include <event2/thread.h>
#include <glib/gstdio.h>
#include <string.h>

#include "evd_coalesce.h"
#include "evd_xreq.h"

#define MS 1000

/* ---- A backend that counts. ---- */

typedef struct {
  const EvdBackendClass *real;
  gpointer backend;
  int starts, cancels;
} Counted;

static void
counted_start (gpointer backend, EvdBackendCall *call)
{
  Counted *c = backend;

  c->starts++;
  c->real->start (c->backend, call);
}

static void
counted_cancel (gpointer backend, EvdBackendCall *call)
{
  Counted *c = backend;

  c->cancels++;
  c->real->cancel (c->backend, call);
}

static void
counted_release (gpointer backend, EvdBackendCall *call)
{
  Counted *c = backend;

  if (c->real->release != NULL)
    c->real->release (c->backend, call);
}

static void
counted_close (gpointer backend)
{
  Counted *c = backend;

  c->real->close (c->backend);
  g_free (c);
}

static const EvdBackendClass counted_class = {
  .kind = "counted", .start = counted_start, .cancel = counted_cancel,
  .release = counted_release, .close = counted_close,
};

/* ---- A backend that keeps to its deadline as the real ones do. ----
 * SQLite, HTTP and Redis read a call's deadline once, in start(), and fail the call with
 * TIMEOUT when it passes; the fault and delay backends leave deadlines to the engine. This
 * one answers [ms] after `delay_ms` (or, with `fails`, fails retryably then, as a backend
 * that lost its connection: the fault backend fails inside start()), or TIMEOUT at the
 * deadline it read in start(). The same functions serve under other kinds' names
 * (`timed_as`), for what evd_xreq decides by kind. */

typedef struct {
  gint64 delay_ms;
  gboolean fails;
} Timed;

typedef struct {
  EvdBackendCall *call;
  struct event *answer, *expire;
  gboolean fails;
} TimedCall;

static gpointer
timed_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  Timed *t = g_new0 (Timed, 1);

  (void) shared;
  t->delay_ms = evd_config_int (cfg, spec->group, "delay_ms", 10, 0, 60000);
  t->fails = evd_config_bool (cfg, spec->group, "fails", FALSE);
  return t;
}

/* Takes the call's state off it: the call is then the caller's to complete. */
static void
timed_call_free (EvdBackendCall *call)
{
  TimedCall *tc = *evd_backend_call_data (call);

  *evd_backend_call_data (call) = NULL;
  event_free (tc->answer);
  event_free (tc->expire);
  g_free (tc);
}

static void
timed_on_answer (evutil_socket_t fd, short what, void *arg)
{
  EvdBackendCall *call = arg;
  static const char *const columns[] = { "ms" };
  gboolean fails = ((TimedCall *) *evd_backend_call_data (call))->fails;
  EvdRows *rows;

  (void) fd, (void) what;
  timed_call_free (call);
  if (fails) {
    evd_backend_call_fail_full (call, EVD_BACKEND_FAIL_RETRYABLE, EVD_ERROR_KIND_BACKEND,
                                "connection lost");
    return;
  }
  rows = evd_rows_new (1, columns);
  evd_rows_add_int (rows, 1);
  evd_backend_call_return (call, rows);
}

static void
timed_on_expire (evutil_socket_t fd, short what, void *arg)
{
  EvdBackendCall *call = arg;

  (void) fd, (void) what;
  timed_call_free (call);
  evd_backend_call_fail (call, EVD_ERROR_KIND_TIMEOUT, "deadline passed");
}

static void
timed_start (gpointer backend, EvdBackendCall *call)
{
  Timed *t = backend;
  struct event_base *base = evd_loop_base (evd_backend_call_loop (call));
  TimedCall *tc = g_new0 (TimedCall, 1);
  gint64 left = MAX (0, evd_backend_call_deadline_us (call) - g_get_monotonic_time ());
  struct timeval answer_tv = { t->delay_ms / 1000, (t->delay_ms % 1000) * 1000 };
  struct timeval expire_tv = { left / G_USEC_PER_SEC, left % G_USEC_PER_SEC };

  tc->call = call;
  tc->fails = t->fails;
  tc->answer = evtimer_new (base, timed_on_answer, call);
  tc->expire = evtimer_new (base, timed_on_expire, call);
  *evd_backend_call_data (call) = tc;
  evtimer_add (tc->answer, &answer_tv);
  evtimer_add (tc->expire, &expire_tv);
}

static void
timed_cancel (gpointer backend, EvdBackendCall *call)
{
  (void) backend;
  if (*evd_backend_call_data (call) == NULL)
    return;
  timed_call_free (call);
  evd_backend_call_fail (call, EVD_ERROR_KIND_CANCELLED, "cancelled");
}

static const EvdBackendClass timed_class = {
  .kind = "timed", .open = timed_open, .start = timed_start, .cancel = timed_cancel,
  .close = g_free,
};

/* ---- A lookup behind evd_xreq, on a loop of this thread. ---- */

typedef struct {
  EvdConfig *cfg;
  EvdLoop *loop;
  EvdXreqSet *set;
  EvdXreq *x;
  Counted *counted;
  EvdBackendClass counted_as;  /* counted_class under the real backend's kind, which evd_xreq
                                * reads (what is sent upstream, defaults) */
  EvdLookupSpec spec;
  gint64 now;               /* the clock, when fake */
  char *tmpdir;
} Fixture;

static gint64
fixture_clock (gpointer data)
{
  return ((Fixture *) data)->now;
}

/* `keys` are the [lookup t] group's; "@TMP@" is a temp folder. The lookup's backend is
 * `klass`, whatever its kind says. */
static void
fixture_open_class (Fixture *fx, const EvdBackendClass *klass, const char *keys,
                    gboolean fake_clock)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *text = NULL, *joined = NULL;
  g_auto (GStrv) parts = NULL;
  const char *kind = klass->kind;

  memset (fx, 0, sizeof *fx);
  fx->tmpdir = g_dir_make_tmp ("test-xreq-XXXXXX", NULL);
  parts = g_strsplit (keys, "@TMP@", -1);
  joined = g_strjoinv (fx->tmpdir, parts);
  text = g_strdup_printf ("[lookup t]\nbackend = %s\n%s\n", kind, joined);
  fx->cfg = evd_config_load_data (text, strlen (text), "t.conf", fx->tmpdir);
  fx->spec.name = g_strdup ("t");
  fx->spec.group = g_strdup ("lookup t");
  fx->spec.backend_name = g_strdup_printf ("%s:t", kind);
  fx->spec.params = g_array_new (FALSE, FALSE, sizeof (EvdParamSpec));
  fx->counted = g_new0 (Counted, 1);
  fx->counted->real = klass;
  fx->counted->backend = klass->open (NULL, fx->cfg, &fx->spec);
  g_assert_nonnull (fx->counted->backend);
  fx->set = evd_xreq_set_new (fx->cfg);
  fx->counted_as = counted_class;
  fx->counted_as.kind = kind;
  fx->x = evd_xreq_open (fx->set, fx->cfg, &fx->spec, &fx->counted_as, fx->counted);
  g_assert_nonnull (fx->x);
  evd_config_mark_used (fx->cfg, "lookup t", "backend");
  g_strfreev (evd_config_groups_of_kind (fx->cfg, "lookup"));  /* what evd_lookup does */
  evd_config_check (fx->cfg, &error);
  g_assert_no_error (error);
  fx->now = 1000000 * MS;
  if (fake_clock)
    evd_xreq_set_clock (fx->x, fixture_clock, fx);
  fx->loop = evd_loop_new (0, NULL);
}

static void
fixture_open (Fixture *fx, const char *kind, const char *keys, gboolean fake_clock)
{
  fixture_open_class (fx, evd_backend_find (kind), keys, fake_clock);
}

static void
fixture_close (Fixture *fx)
{
  /* What cancels posted (their backends' deferred unrefs) runs before the lookup goes. */
  for (guint i = 0; i < 10; i++) {
    event_base_loop (evd_loop_base (fx->loop), EVLOOP_NONBLOCK);
    evd_loop_run_pending (fx->loop);
  }
  evd_xreq_class.close (fx->x);
  evd_xreq_set_free (fx->set);
  evd_loop_free (fx->loop);
  for (guint i = 0; i < fx->spec.params->len; i++)
    g_free (g_array_index (fx->spec.params, EvdParamSpec, i).name);
  g_array_unref (fx->spec.params);
  g_free (fx->spec.name);
  g_free (fx->spec.group);
  g_free (fx->spec.backend_name);
  evd_config_unref (fx->cfg);
  g_rmdir (fx->tmpdir);
  g_free (fx->tmpdir);
}

/* ---- Callers. ---- */

typedef struct {
  EvdRequestContext ctx;
  EvdParam param;
  EvdBackendCall *call;
  gboolean done;
  EvdRows *rows;
  int kind;
  char *message;
  guint marks, retries;
  gint64 done_us;           /* real monotonic time */
} Caller;

static GHashTable *no_attributes;

static void
caller_on_done (EvdBackendCall *call, EvdRows *rows, EvdErrorKind kind, const char *message,
                guint flags, gpointer data)
{
  Caller *c = data;

  (void) flags;
  g_assert_false (c->done);
  c->done = TRUE;
  c->done_us = g_get_monotonic_time ();
  c->rows = rows ? evd_rows_ref (rows) : NULL;
  c->kind = kind;
  c->message = g_strdup (message);
  c->marks = evd_backend_call_marks (call, &c->retries);
}

/* A caller as `principal` with `attributes` (NULL: none). */
static void
caller_start_as (Fixture *fx, Caller *c, gint64 user_id, gint64 deadline_ms,
                 const char *principal, GHashTable *attributes)
{
  gint64 start = g_get_monotonic_time ();

  memset (c, 0, sizeof *c);
  c->ctx = (EvdRequestContext) {
    .request_id = "test", .start_us = start, .deadline_us = start + deadline_ms * MS,
    .principal = principal, .attributes = attributes ? attributes : no_attributes,
  };
  c->param = (EvdParam) { "user_id", { .kind = EVD_VALUE_INT, .i = user_id } };
  c->call = evd_backend_call_new (fx->loop, &c->ctx, &c->param, 1, c->ctx.deadline_us,
                                  &evd_xreq_class, fx->x, caller_on_done, c);
  evd_backend_call_start (c->call);
}

static void
caller_start (Fixture *fx, Caller *c, gint64 user_id, gint64 deadline_ms)
{
  caller_start_as (fx, c, user_id, deadline_ms, NULL, NULL);
}

static void
caller_clear (Caller *c)
{
  g_assert_true (c->done);
  evd_backend_call_unref (c->call);
  g_clear_pointer (&c->rows, evd_rows_unref);
  g_clear_pointer (&c->message, g_free);
}

/* The `call` column of a fault `ok` answer: which backend execution it was. */
static gint64
caller_call_number (const Caller *c)
{
  g_assert_true (c->done);
  g_assert_nonnull (c->rows);
  return evd_rows_cell (c->rows, 0, 1)->v.i;
}

/* Runs the loop until every caller is done, for at most `timeout_ms`. */
static gboolean
run_until_done (Fixture *fx, Caller **callers, guint n, gint64 timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + timeout_ms * MS;

  for (;;) {
    guint done = 0;

    event_base_loop (evd_loop_base (fx->loop), EVLOOP_NONBLOCK);
    evd_loop_run_pending (fx->loop);
    for (guint i = 0; i < n; i++)
      done += callers[i]->done;
    if (done == n)
      return TRUE;
    if (g_get_monotonic_time () > deadline)
      return FALSE;
    g_usleep (200);
  }
}

static void
run_for (Fixture *fx, gint64 ms)
{
  gint64 until = g_get_monotonic_time () + ms * MS;

  while (g_get_monotonic_time () < until) {
    event_base_loop (evd_loop_base (fx->loop), EVLOOP_NONBLOCK);
    evd_loop_run_pending (fx->loop);
    g_usleep (200);
  }
}

/* ---- Coalescing. ---- */

static void
test_coalesce_shares_one_call (void)
{
  Fixture fx;
  Caller a, b, c, other;
  Caller *all[] = { &a, &b, &c, &other };
  EvdXreqStats s;

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 20\ncoalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 5000);
  caller_start (&fx, &b, 7, 5000);
  caller_start (&fx, &c, 7, 5000);
  caller_start (&fx, &other, 8, 5000);
  g_assert_true (run_until_done (&fx, all, 4, 5000));
  g_assert_cmpint (fx.counted->starts, ==, 2);
  g_assert_cmpint (caller_call_number (&a), ==, caller_call_number (&b));
  g_assert_cmpint (caller_call_number (&a), ==, caller_call_number (&c));
  g_assert_cmpint (caller_call_number (&a), !=, caller_call_number (&other));
  g_assert_true (a.rows == b.rows);  /* one table, shared */
  g_assert_cmpuint (a.marks, ==, 0);
  g_assert_cmpuint (b.marks, ==, EVD_MARK_COALESCED);
  g_assert_cmpuint (c.marks, ==, EVD_MARK_COALESCED);
  g_assert_cmpuint (other.marks, ==, 0);
  evd_xreq_stats (fx.x, &s);
  g_assert_cmpuint (s.coalesced, ==, 2);
  g_assert_cmpuint (s.backend_calls, ==, 2);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

static void
test_coalesce_callers_leave_one_by_one (void)
{
  Fixture fx;
  Caller a, b, c, d;
  Caller *all[] = { &a, &b, &c, &d };

  fixture_open (&fx, "fault", "mode = hang\ncoalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 5000);
  caller_start (&fx, &b, 7, 5000);
  caller_start (&fx, &c, 7, 5000);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  /* The first two leave: each is answered at once; the backend call goes on. */
  evd_backend_call_cancel (a.call);
  g_assert_true (a.done);
  g_assert_cmpint (a.kind, ==, EVD_ERROR_KIND_CANCELLED);
  evd_backend_call_cancel (b.call);
  g_assert_true (b.done);
  run_for (&fx, 20);
  g_assert_false (c.done);
  g_assert_cmpint (fx.counted->cancels, ==, 0);
  /* The last leaves: the backend call is cancelled, and only then is the last answered. */
  evd_backend_call_cancel (c.call);
  g_assert_false (c.done);
  g_assert_true (run_until_done (&fx, all + 2, 1, 1000));
  g_assert_cmpint (fx.counted->cancels, ==, 1);
  g_assert_cmpint (c.kind, ==, EVD_ERROR_KIND_CANCELLED);
  /* A caller after that starts afresh. */
  caller_start (&fx, &d, 7, 5000);
  g_assert_cmpint (fx.counted->starts, ==, 2);
  evd_backend_call_cancel (d.call);
  g_assert_true (run_until_done (&fx, all + 3, 1, 1000));
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* A caller who joined a flight with a later deadline had its rows from the attempt made for
 * it once the first one ran out of the first caller's time. */
static void
assert_joiner_went_on (Fixture *fx, const Caller *b)
{
  g_assert_cmpint (b->kind, ==, EVD_ERROR_KIND_NONE);
  g_assert_nonnull (b->rows);
  g_assert_cmpuint (b->marks, ==, EVD_MARK_COALESCED);
  g_assert_cmpint (fx->counted->starts, ==, 2);
}

/* A caller who joins a shared call with a later deadline than the first caller's keeps its
 * own deadline: the first caller leaves (its request ended), the backend's attempt, which
 * took the first caller's deadline at its start, runs out of it, and the shared call goes on
 * for the one still waiting (README: "each caller keeps its own deadline, the shared call
 * runs until the last caller still waiting gives up"). It failed with the first caller's
 * TIMEOUT, at the first caller's deadline. */
static void
test_coalesce_joiner_keeps_its_later_deadline (void)
{
  Fixture fx;
  Caller a, b;
  Caller *all[] = { &a, &b };

  fixture_open_class (&fx, &timed_class, "delay_ms = 150\ncoalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 40);
  caller_start (&fx, &b, 7, 5000);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  evd_backend_call_cancel (a.call);
  g_assert_true (a.done);
  g_assert_true (run_until_done (&fx, all + 1, 1, 4000));
  assert_joiner_went_on (&fx, &b);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* The caller that made the shared call keeps its own (earlier) deadline too: the attempt
 * still times out at it when no one with more time joined. */
static void
test_coalesce_alone_times_out_at_its_deadline (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };

  fixture_open_class (&fx, &timed_class, "delay_ms = 2000\ncoalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 40);
  g_assert_true (run_until_done (&fx, all, 1, 1500));
  g_assert_cmpint (a.kind, ==, EVD_ERROR_KIND_TIMEOUT);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  caller_clear (&a);
  fixture_close (&fx);
}

/* A caller who joins a flight as its attempt runs out of the flight's (earlier) deadline is
 * answered at its own deadline, not then: joining and raising the flight's deadline are one
 * step for whoever completes the flight. They were two, and a flight that completed between
 * them (on its own loop, another thread) had not seen the joiner's deadline: every caller,
 * the joiner too, got the first caller's TIMEOUT. The hook completes the flight right after
 * the join, as that loop may. */
typedef struct {
  Fixture *fx;
  EvdXreqHookPoint at;      /* acts there, the first time only */
  Caller *caller;           /* the caller it waits for or starts */
  gboolean ran;
} Hook;

static gboolean
hook_acts (Hook *h, EvdXreqHookPoint at)
{
  if (at != h->at || h->ran)
    return FALSE;
  h->ran = TRUE;
  return TRUE;
}

static void
run_out_on_join (EvdXreqHookPoint at, gpointer data)
{
  Hook *h = data;
  gint64 until = g_get_monotonic_time () + 2000 * MS;

  if (!hook_acts (h, at))
    return;
  /* The attempt's TIMEOUT is due: until the flight answered it or went on without it. */
  while (!h->caller->done && h->fx->counted->starts < 2 && g_get_monotonic_time () < until) {
    event_base_loop (evd_loop_base (h->fx->loop), EVLOOP_NONBLOCK);
    evd_loop_run_pending (h->fx->loop);
  }
}

static void
test_coalesce_joiner_as_the_flight_runs_out (void)
{
  Fixture fx;
  Caller a, b;
  Caller *all[] = { &a, &b };
  Hook hook = { &fx, EVD_XREQ_HOOK_JOINED, &a, FALSE };

  fixture_open_class (&fx, &timed_class, "delay_ms = 150\ncoalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 20);
  while (g_get_monotonic_time () <= a.ctx.deadline_us)  /* the attempt's time is up */
    g_usleep (1000);
  evd_xreq_set_hook (fx.x, run_out_on_join, &hook);
  caller_start (&fx, &b, 7, 5000);
  g_assert_true (hook.ran);
  g_assert_true (run_until_done (&fx, all, 2, 4000));
  assert_joiner_went_on (&fx, &b);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* The same for a retry: a flight whose attempt failed retryably with too little time left
 * for a retry by its deadline decides to answer the failure; a caller with time for a retry
 * who joins as it does is retried for. It got the failure: the decision was made from the
 * deadline before the join and the answer went to every caller in the entry, the joiner
 * included. The hook joins right after the decision, as another loop may. */
static void
join_on_failing (EvdXreqHookPoint at, gpointer data)
{
  Hook *h = data;

  if (hook_acts (h, at))
    caller_start (h->fx, h->caller, 7, 5000);
}

static void
test_coalesce_joiner_as_the_flight_fails (void)
{
  Fixture fx;
  Caller a, b;
  Caller *all[] = { &a, &b };
  Hook hook = { &fx, EVD_XREQ_HOOK_FAILING, &b, FALSE };

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 1\nfail_first = 1\nretryable = true\n"
                "retries = 1\ncoalesce = true\n", FALSE);
  evd_xreq_set_hook (fx.x, join_on_failing, &hook);
  /* The first attempt fails inside start(); 2 ms leave no room for the first backoff (12.5
   * to 25 ms). */
  caller_start (&fx, &a, 7, 2);
  g_assert_true (hook.ran);
  g_assert_true (run_until_done (&fx, all, 2, 4000));
  g_assert_cmpint (b.kind, ==, EVD_ERROR_KIND_NONE);
  g_assert_cmpint (caller_call_number (&b), ==, 2);
  g_assert_cmpuint (b.marks, ==, EVD_MARK_COALESCED | EVD_MARK_RETRIED);
  g_assert_cmpint (fx.counted->starts, ==, 2);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

static void
seal_test_init (gpointer data, gpointer init_data)
{
  (void) data, (void) init_data;
}

/* The table under both: an entry's deadline is its waiters' latest, raised by the join
 * itself; a seal with an older deadline fails and leaves the entry open, one with the latest
 * closes it to new callers while its waiters still leave (and the last closes it). */
static void
test_coalesce_seal (void)
{
  EvdCoalesce *c = evd_coalesce_new ();
  int w1, w2, w3;
  gboolean created;
  EvdCoalesceEntry *e = evd_coalesce_join (c, "k", 1, &w1, 100, 0, seal_test_init, NULL, NULL,
                                           &created), *again;

  g_assert_true (created);
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 100);
  again = evd_coalesce_join (c, "k", 1, &w2, 300, 0, seal_test_init, NULL, NULL, &created);
  g_assert_false (created);
  g_assert_true (again == e);
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 300);
  evd_coalesce_entry_unref (again);
  g_assert_false (evd_coalesce_seal (e, 100));  /* decided before w2 joined */
  g_assert_cmpuint (evd_coalesce_size (c), ==, 1);
  g_assert_true (evd_coalesce_seal (e, 300));
  g_assert_cmpuint (evd_coalesce_size (c), ==, 0);
  /* Sealed: a new caller makes an entry of its own. */
  again = evd_coalesce_join (c, "k", 1, &w3, 50, 0, seal_test_init, NULL, NULL, &created);
  g_assert_true (created);
  g_assert_true (again != e);
  g_assert_cmpint (evd_coalesce_entry_deadline (again), ==, 50);
  g_assert_cmpint (evd_coalesce_leave (again, &w3), ==, EVD_COALESCE_LAST);
  evd_coalesce_entry_unref (again);  /* the waiter's */
  evd_coalesce_entry_unref (again);  /* the work's */
  /* The sealed entry's waiters still leave; the owner's close then finds it closed. */
  g_assert_cmpint (evd_coalesce_leave (e, &w2), ==, EVD_COALESCE_LEFT);
  g_assert_cmpint (evd_coalesce_leave (e, &w1), ==, EVD_COALESCE_LAST);
  g_assert_true (evd_coalesce_seal (e, 0));  /* closed: nobody to decide for */
  g_assert_false (evd_coalesce_close (e));
  evd_coalesce_entry_unref (e);
  evd_coalesce_entry_unref (e);
  evd_coalesce_free (c);
}

/* Join against seal on two threads, as two loops meet in a table: a joiner joins the entry
 * again and again with later and later deadlines while its owner decides from the deadline
 * it reads and seals with it. Once sealed and closed, every waiter in it has a deadline the
 * decision saw; the joiner, shut out, made an entry of its own. */
enum { SEAL_RACE_JOINS = 2048 };

typedef struct {
  EvdCoalesce *c;
  gint64 deadlines[SEAL_RACE_JOINS];  /* the joiner's waiters: each its own deadline */
} SealRace;

static gpointer
seal_race_joiner (gpointer data)
{
  SealRace *r = data;

  for (guint i = 0; i < SEAL_RACE_JOINS; i++) {
    gboolean created;
    EvdCoalesceEntry *e = evd_coalesce_join (r->c, "k", 1, &r->deadlines[i], r->deadlines[i],
                                             0, seal_test_init, NULL, NULL, &created);

    if (created) {          /* sealed: an entry of its own, which it leaves at once */
      g_assert_cmpint (evd_coalesce_leave (e, &r->deadlines[i]), ==, EVD_COALESCE_LAST);
      evd_coalesce_entry_unref (e);
      evd_coalesce_entry_unref (e);
      return NULL;
    }
  }
  return NULL;
}

static void
test_coalesce_seal_against_joiners (void)
{
  g_autofree SealRace *r = g_new0 (SealRace, 1);
  guint contested = 0;

  r->c = evd_coalesce_new ();
  for (guint i = 0; i < SEAL_RACE_JOINS; i++)
    r->deadlines[i] = i + 1;
  for (guint round = 0; round < 200; round++) {
    gint64 owner = 0, deadline;
    gboolean created;
    EvdCoalesceEntry *e = evd_coalesce_join (r->c, "k", 1, &owner, owner, 0, seal_test_init,
                                             NULL, NULL, &created);
    GThread *joiner = g_thread_new ("joiner", seal_race_joiner, r);

    g_assert_true (created);
    while (evd_coalesce_entry_deadline (e) == 0)  /* the joiner is at it */
      g_thread_yield ();
    do {
      deadline = evd_coalesce_entry_deadline (e);
      contested++;
    } while (!evd_coalesce_seal (e, deadline));
    contested--;
    g_thread_join (joiner);
    g_assert_true (evd_coalesce_close (e));
    for (guint i = 0; i < evd_coalesce_entry_n_waiters (e); i++) {
      g_assert_cmpint (*(gint64 *) evd_coalesce_entry_waiter (e, i), <=, deadline);
      evd_coalesce_entry_unref (e);  /* the waiter's */
    }
    evd_coalesce_entry_unref (e);    /* the work's */
    g_assert_cmpuint (evd_coalesce_size (r->c), ==, 0);
  }
  g_test_message ("seals that met a later joiner: %u", contested);
  evd_coalesce_free (r->c);
}

/* The table: an entry's deadline is the latest of the waiters still in it. When the waiter
 * with the latest leaves, it falls to the latest of the others (it stayed: the shared work
 * ran, and retried, to a deadline no one waited for). A seal decided from the deadline before
 * that leave still holds; one from an earlier deadline than the remaining waiters' does not.
 * Six waiters: past those an entry holds inline. */
static void
test_coalesce_deadline_falls_when_the_latest_leaves (void)
{
  static const gint64 deadlines[] = { 100, 600, 300, 200, 500, 400 };
  EvdCoalesce *c = evd_coalesce_new ();
  int w[G_N_ELEMENTS (deadlines)], late;
  gboolean created;
  EvdCoalesceEntry *e = NULL, *again;

  for (guint i = 0; i < G_N_ELEMENTS (deadlines); i++) {
    again = evd_coalesce_join (c, "k", 1, &w[i], deadlines[i], 0, seal_test_init, NULL, NULL,
                               &created);
    g_assert_true (created == (i == 0));
    e = again;
  }
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 600);
  g_assert_cmpint (evd_coalesce_leave (e, &w[1]), ==, EVD_COALESCE_LEFT);  /* 600 */
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 500);
  g_assert_cmpint (evd_coalesce_leave (e, &w[2]), ==, EVD_COALESCE_LEFT);  /* 300 */
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 500);
  g_assert_false (evd_coalesce_seal (e, 400));  /* a waiter has more time than that */
  g_assert_cmpint (evd_coalesce_leave (e, &w[4]), ==, EVD_COALESCE_LEFT);  /* 500 */
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 400);
  /* A joiner raises it again; its leaving lowers it back. */
  again = evd_coalesce_join (c, "k", 1, &late, 700, 0, seal_test_init, NULL, NULL, &created);
  g_assert_false (created);
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 700);
  g_assert_cmpint (evd_coalesce_leave (e, &late), ==, EVD_COALESCE_LEFT);
  evd_coalesce_entry_unref (again);
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 400);
  /* Decided from 500, before the waiter with it left: still holds for the rest. */
  g_assert_true (evd_coalesce_seal (e, 500));
  g_assert_cmpuint (evd_coalesce_size (c), ==, 0);
  g_assert_cmpint (evd_coalesce_leave (e, &w[5]), ==, EVD_COALESCE_LEFT);  /* 400 */
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 200);
  g_assert_cmpint (evd_coalesce_leave (e, &w[0]), ==, EVD_COALESCE_LEFT);  /* 100 */
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 200);
  g_assert_cmpint (evd_coalesce_leave (e, &w[3]), ==, EVD_COALESCE_LAST);  /* 200 */
  g_assert_cmpint (evd_coalesce_entry_deadline (e), ==, 200);  /* the last one's, kept */
  for (guint i = 0; i < G_N_ELEMENTS (deadlines); i++)
    evd_coalesce_entry_unref (e);  /* the waiters' */
  evd_coalesce_entry_unref (e);    /* the work's */
  evd_coalesce_free (c);
}

/* A shared call whose caller with the latest deadline left (its request ended) retries only
 * within the deadline of the callers still waiting. It went on to the deadline of the one who
 * left: a retry no one would wait for, with a budget token and that late deadline sent to
 * the backend. `a` waits 60 ms; the attempt fails retryably at 50 ms, and the first backoff
 * (12.5 to 25 ms) does not fit. */
static void
test_coalesce_no_retry_past_the_remaining_deadline (void)
{
  Fixture fx;
  Caller a, b;
  Caller *all[] = { &a, &b };
  EvdXreqStats s;

  fixture_open_class (&fx, &timed_class, "delay_ms = 50\nfails = true\nretries = 1\n"
                      "coalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 60);
  caller_start (&fx, &b, 7, 5000);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  evd_backend_call_cancel (b.call);
  g_assert_true (b.done);
  g_assert_true (run_until_done (&fx, all, 1, 4000));
  g_assert_cmpint (a.kind, ==, EVD_ERROR_KIND_BACKEND);
  g_assert_cmpstr (a.message, ==, "connection lost");
  g_assert_cmpint (fx.counted->starts, ==, 1);
  evd_xreq_stats (fx.x, &s);
  g_assert_cmpuint (s.retries, ==, 0);
  g_assert_cmpuint (evd_retry_budget_spent (evd_xreq_budget (fx.x), g_get_monotonic_time ()),
                    ==, 0);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* A caller who joins after the one that made the shared call left is marked coalesced: the
 * flight compared callers with the creator's address, and a joiner given the memory the
 * creator's state had (freed when it left) passed for the creator, unmarked. */
static void
test_coalesce_joiner_after_creator_left_is_marked (void)
{
  Fixture fx;
  Caller a, b, c;
  Caller *all[] = { &a, &b, &c };

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 100\ncoalesce = true\n", FALSE);
  caller_start (&fx, &a, 7, 5000);
  caller_start (&fx, &c, 7, 5000);
  evd_backend_call_cancel (a.call);
  g_assert_true (a.done);
  caller_clear (&a);        /* its state is freed: the next caller's may take its memory */
  caller_start (&fx, &b, 7, 5000);
  g_assert_true (run_until_done (&fx, all + 1, 2, 5000));
  g_assert_cmpint (fx.counted->starts, ==, 1);
  g_assert_cmpuint (b.marks, ==, EVD_MARK_COALESCED);
  g_assert_cmpuint (c.marks, ==, EVD_MARK_COALESCED);
  caller_clear (&b);
  caller_clear (&c);
  fixture_close (&fx);
}

/* Coalescing is on by default for the SQL, Redis and HTTP kinds (README, issue 17): the
 * PostgreSQL backend's kind is "postgresql", which the list of remote kinds missed. */
static void
test_coalesce_default_by_kind (void)
{
  static const struct {
    const char *kind;
    gboolean coalesce;
  } kinds[] = {
    { "sqlite", TRUE }, { "postgresql", TRUE }, { "redis", TRUE }, { "http", TRUE },
    { "delay", FALSE }, { "static", FALSE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++) {
    EvdBackendClass klass = timed_class;
    const char *text = "[lookup t]\n";
    EvdConfig *cfg = evd_config_load_data (text, strlen (text), "t.conf", "/");
    EvdLookupSpec spec = { .name = (char *) "t", .group = (char *) "lookup t" };
    EvdXreqSet *set = evd_xreq_set_new (cfg);
    Timed *backend = g_new0 (Timed, 1);
    EvdXreq *x;

    klass.kind = kinds[i].kind;
    x = evd_xreq_open (set, cfg, &spec, &klass, backend);
    if (kinds[i].coalesce) {
      g_assert_nonnull (x);
      g_assert_true (evd_xreq_config (x)->coalesce);
      evd_xreq_class.close (x);  /* and the backend with it */
    } else {
      g_assert_null (x);  /* nothing on: the lookup goes to its backend directly */
      g_free (backend);
    }
    evd_xreq_set_free (set);
    evd_config_unref (cfg);
  }
}

/* A Thrift upstream is sent who asks and the attributes (its RequestContext), as an HTTP
 * upstream is: callers that differ in either never share an answer (coalesced or cached),
 * as the README says of what is sent upstream. They did, for a Thrift lookup. */
static void
test_coalesce_thrift_keeps_principals_apart (void)
{
  Fixture fx;
  Caller a, b, c, d;
  Caller *all[] = { &a, &b, &c, &d };
  EvdBackendClass thrift = timed_class;
  g_autoptr (GHashTable) attributes = g_hash_table_new (g_str_hash, g_str_equal);

  thrift.kind = "thrift";
  g_hash_table_insert (attributes, (gpointer) "tenant", (gpointer) "x");
  fixture_open_class (&fx, &thrift, "delay_ms = 20\ncoalesce = true\n", FALSE);
  caller_start_as (&fx, &a, 7, 5000, "alice", NULL);
  caller_start_as (&fx, &b, 7, 5000, "bob", NULL);
  caller_start_as (&fx, &c, 7, 5000, "alice", NULL);
  caller_start_as (&fx, &d, 7, 5000, "alice", attributes);
  g_assert_true (run_until_done (&fx, all, 4, 5000));
  g_assert_cmpint (fx.counted->starts, ==, 3);
  g_assert_true (a.rows == c.rows);
  g_assert_true (a.rows != b.rows);
  g_assert_true (a.rows != d.rows);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* ---- The cache. ---- */

static void
test_cache_ttl (void)
{
  Fixture fx;
  Caller a, b, c;
  Caller *all[] = { &a, &b, &c };

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 1\ncache_ttl_ms = 1000\n", TRUE);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  g_assert_cmpint (caller_call_number (&a), ==, 1);
  fx.now += 1000 * MS - 1;
  caller_start (&fx, &b, 7, 5000);
  g_assert_true (b.done);  /* a hit answers inside start() */
  g_assert_cmpuint (b.marks, ==, EVD_MARK_CACHE_HIT);
  g_assert_cmpint (caller_call_number (&b), ==, 1);
  fx.now += 1;
  caller_start (&fx, &c, 7, 5000);
  g_assert_true (run_until_done (&fx, all + 2, 1, 2000));
  g_assert_cmpint (caller_call_number (&c), ==, 2);
  g_assert_cmpuint (c.marks, ==, 0);
  g_assert_cmpint (fx.counted->starts, ==, 2);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

static void
test_cache_stale_if_error (void)
{
  Fixture fx;
  Caller a, b, c;
  Caller *all[] = { &a, &b, &c };
  g_autofree char *down = NULL;

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 1\ncache_ttl_ms = 1000\n"
                "stale_if_error_ms = 500\nfail_while_exists = @TMP@/down\n", TRUE);
  down = g_build_filename (fx.tmpdir, "down", NULL);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  g_assert_true (g_file_set_contents (down, "", 0, NULL));
  /* Expired, within the stale window, and the refresh fails: the old rows, marked. */
  fx.now += 1200 * MS;
  caller_start (&fx, &b, 7, 5000);
  g_assert_true (run_until_done (&fx, all + 1, 1, 2000));
  g_assert_cmpint (b.kind, ==, 0);
  g_assert_cmpint (caller_call_number (&b), ==, 1);
  g_assert_cmpuint (b.marks, ==, EVD_MARK_STALE);
  /* Past it: the error. */
  fx.now += 300 * MS;
  caller_start (&fx, &c, 7, 5000);
  g_assert_true (run_until_done (&fx, all + 2, 1, 2000));
  g_assert_cmpint (c.kind, ==, EVD_ERROR_KIND_BACKEND);
  g_assert_cmpint (fx.counted->starts, ==, 3);
  g_unlink (down);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

static void
test_cache_stale_on_timeout (void)
{
  Fixture fx;
  Caller a, b;
  Caller *all[] = { &a, &b };
  gint64 t0;

  /* The first call takes 1 ms, the second 5 s: the refresh outlives its caller's deadline. */
  fixture_open (&fx, "delay", "delay_ms = 1\ntail_every = 2\ntail_ms = 5000\n"
                "cache_ttl_ms = 1000\nstale_if_error_ms = 10000\n", TRUE);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  fx.now += 1500 * MS;
  t0 = g_get_monotonic_time ();
  caller_start (&fx, &b, 7, 200);
  g_assert_true (run_until_done (&fx, all + 1, 1, 2000));
  /* Answered at its deadline (5 ms before it: the engine's TIMEOUT would come at it) with the
   * expired rows; the refresh was cancelled. The upper bound leaves room for a busy machine. */
  g_assert_cmpint (b.kind, ==, 0);
  g_assert_cmpint (evd_rows_cell (b.rows, 0, 0)->v.i, ==, 1);
  g_assert_cmpuint (b.marks, ==, EVD_MARK_STALE);
  g_assert_cmpint (b.done_us - t0, >=, 190 * MS);
  g_assert_cmpint (b.done_us - t0, <, 700 * MS);
  g_assert_cmpint (fx.counted->starts, ==, 2);
  g_assert_cmpint (fx.counted->cancels, ==, 1);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* Stale rows go only to callers whose own look at the cache found the entry within its stale
 * window. One who asked after the window had passed (the cache dropped the entry and offered
 * nothing) and joined a refresh begun within it gets the refresh's error, not rows older
 * than stale_if_error_ms allows: they used to go to every caller of the flight. */
static void
test_cache_stale_only_to_callers_within_the_window (void)
{
  Fixture fx;
  Caller a, b, c;
  Caller *all[] = { &a, &b, &c };
  g_autofree char *down = NULL;

  /* A failed refresh is retried once after a backoff: the time a later caller joins in. */
  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 1\ncache_ttl_ms = 1000\n"
                "stale_if_error_ms = 500\nfail_while_exists = @TMP@/down\nretryable = true\n"
                "retries = 1\ncoalesce = true\n", TRUE);
  down = g_build_filename (fx.tmpdir, "down", NULL);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  g_assert_true (g_file_set_contents (down, "", 0, NULL));
  fx.now += 1200 * MS;  /* expired, within the window */
  caller_start (&fx, &b, 7, 5000);
  g_assert_false (b.done);  /* its refresh failed and waits to be retried */
  fx.now += 400 * MS;   /* past the window */
  caller_start (&fx, &c, 7, 5000);
  g_assert_false (c.done);
  g_assert_true (run_until_done (&fx, all + 1, 2, 2000));
  g_assert_cmpint (fx.counted->starts, ==, 3);  /* the fill, the refresh, its retry */
  g_assert_cmpint (b.kind, ==, 0);
  g_assert_cmpint (caller_call_number (&b), ==, 1);
  g_assert_cmpuint (b.marks & EVD_MARK_STALE, ==, EVD_MARK_STALE);
  g_assert_cmpint (c.kind, ==, EVD_ERROR_KIND_BACKEND);
  g_assert_null (c.rows);
  g_assert_cmpuint (c.marks & EVD_MARK_STALE, ==, 0);
  g_assert_cmpuint (c.marks & EVD_MARK_COALESCED, ==, EVD_MARK_COALESCED);
  g_unlink (down);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    caller_clear (all[i]);
  fixture_close (&fx);
}

/* ---- Hedging. ---- */

static void
test_hedge_one_and_loser_cancelled (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };
  EvdXreqStats s;
  gint64 t0 = g_get_monotonic_time ();

  /* Odd calls take 2 s, even ones 5 ms: the first attempt is slow, its hedge fast. */
  fixture_open (&fx, "delay", "delay_ms = 2000\ntail_every = 2\ntail_ms = 5\n"
                "hedge_after_ms = 20\n", FALSE);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 3000));
  g_assert_cmpint (a.kind, ==, 0);
  g_assert_cmpint (evd_rows_cell (a.rows, 0, 0)->v.i, ==, 5);
  g_assert_cmpint (a.done_us - t0, <, 1000 * MS);
  g_assert_cmpuint (a.marks, ==, EVD_MARK_HEDGED);
  g_assert_cmpint (fx.counted->starts, ==, 2);
  g_assert_cmpint (fx.counted->cancels, ==, 1);  /* the loser */
  evd_xreq_stats (fx.x, &s);
  g_assert_cmpuint (s.hedges_sent, ==, 1);
  g_assert_cmpuint (s.hedges_won, ==, 1);
  caller_clear (&a);
  fixture_close (&fx);
}

static void
test_hedge_never_more_than_one (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };
  EvdXreqStats s;

  /* Every attempt takes 150 ms: one hedge at 20 ms, none after, the first one wins. */
  fixture_open (&fx, "delay", "delay_ms = 150\nhedge_after_ms = 20\n", FALSE);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 3000));
  g_assert_cmpint (a.kind, ==, 0);
  g_assert_cmpint (fx.counted->starts, ==, 2);
  g_assert_cmpint (fx.counted->cancels, ==, 1);
  evd_xreq_stats (fx.x, &s);
  g_assert_cmpuint (s.hedges_sent, ==, 1);
  g_assert_cmpuint (s.hedges_won, ==, 0);
  caller_clear (&a);
  fixture_close (&fx);
}

/* Opens the lookup's breaker (4 calls, half of them failed, at the fake clock's now) as
 * failures of other calls to its database would. */
static void
breaker_trip (Fixture *fx)
{
  EvdBreaker *b = evd_xreq_breaker (fx->x);

  for (guint i = 0; i < 8 && evd_breaker_state (b, fx->now) != EVD_BREAKER_OPEN; i++) {
    guint64 round = 0;
    EvdBreakerVerdict v = evd_breaker_ask (b, fx->now, &round);

    evd_breaker_record (b, v, round, EVD_BREAKER_FAILURE, fx->now);
  }
  g_assert_cmpint (evd_breaker_state (b, fx->now), ==, EVD_BREAKER_OPEN);
}

#define BREAKER_KEYS "breaker = on\nbreaker_min_calls = 4\nbreaker_failure_ratio = 0.5\n" \
                     "breaker_window_ms = 1000\nbreaker_open_ms = 10000\n"

/* Runs the loop until the lookup's breaker has refused `n` attempts, for at most 2 s. */
static gboolean
run_until_rejections (Fixture *fx, guint64 n)
{
  gint64 deadline = g_get_monotonic_time () + 2000 * MS;
  EvdXreqStats s;

  for (;;) {
    event_base_loop (evd_loop_base (fx->loop), EVLOOP_NONBLOCK);
    evd_loop_run_pending (fx->loop);
    evd_xreq_stats (fx->x, &s);
    if (s.breaker_rejections >= n)
      return TRUE;
    if (g_get_monotonic_time () > deadline)
      return FALSE;
    g_usleep (200);
  }
}

/* A hedge the breaker refuses leaves the retry budget as it was: its token was withdrawn
 * before the breaker was asked, and kept, although no hedge went out. */
static void
test_hedge_refused_by_breaker_keeps_the_budget (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };
  EvdXreqStats s;

  fixture_open (&fx, "delay", "delay_ms = 2000\nhedge_after_ms = 20\n" BREAKER_KEYS, TRUE);
  caller_start (&fx, &a, 7, 5000);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  breaker_trip (&fx);       /* while the first attempt runs */
  g_assert_true (run_until_rejections (&fx, 1));  /* the hedge's */
  evd_xreq_stats (fx.x, &s);
  g_assert_cmpuint (s.hedges_sent, ==, 0);
  g_assert_cmpuint (s.budget_denials, ==, 0);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  g_assert_cmpuint (evd_retry_budget_spent (evd_xreq_budget (fx.x), fx.now), ==, 0);
  evd_backend_call_cancel (a.call);
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  caller_clear (&a);
  fixture_close (&fx);
}

/* ---- Retries and their budget. ---- */

static void
test_retry_budget_under_failing_backend (void)
{
  enum { N = 1000 };
  Fixture fx;
  g_autofree Caller *callers = g_new0 (Caller, N);
  g_autofree Caller **all = g_new (Caller *, N);
  EvdXreqStats s;

  /* Every call fails, retryably; each may be retried once. The clock stands still: all of it
   * falls in one window of the budget. */
  fixture_open (&fx, "fault", "mode = fail\nretryable = true\nretries = 1\n", TRUE);
  for (guint i = 0; i < N; i++) {
    all[i] = &callers[i];
    caller_start (&fx, &callers[i], i, 10000);  /* distinct: no coalescing anyway */
  }
  g_assert_true (run_until_done (&fx, all, N, 10000));
  evd_xreq_stats (fx.x, &s);
  /* 20% of 1000 calls, plus 10 a second over 10 s. */
  g_assert_cmpuint (s.retries, ==, 300);
  g_assert_cmpuint (s.budget_denials, ==, 700);
  g_assert_cmpint (fx.counted->starts, ==, N + 300);
  for (guint i = 0; i < N; i++) {
    g_assert_cmpint (callers[i].kind, ==, EVD_ERROR_KIND_BACKEND);
    caller_clear (&callers[i]);
  }
  fixture_close (&fx);
}

static void
test_retry_marks (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 1\nfail_first = 2\nretryable = true\n"
                "retries = 3\n", FALSE);
  caller_start (&fx, &a, 7, 5000);
  g_assert_true (run_until_done (&fx, all, 1, 3000));
  g_assert_cmpint (caller_call_number (&a), ==, 3);
  g_assert_cmpuint (a.marks, ==, EVD_MARK_RETRIED);
  g_assert_cmpuint (a.retries, ==, 2);
  caller_clear (&a);
  fixture_close (&fx);
}

/* A retry the breaker refuses when its backoff is over gives its token back: it was taken
 * when the retry was scheduled. The caller gets the breaker's refusal. */
static void
test_retry_refused_by_breaker_keeps_the_budget (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };
  EvdRetryBudget *budget;

  fixture_open (&fx, "fault", "mode = fail\nretryable = true\nretries = 1\n" BREAKER_KEYS,
                TRUE);
  budget = evd_xreq_budget (fx.x);
  caller_start (&fx, &a, 7, 5000);  /* fails inside start(): a retry waits for its backoff */
  g_assert_false (a.done);
  g_assert_cmpuint (evd_retry_budget_spent (budget, fx.now), ==, 1);
  breaker_trip (&fx);
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  g_assert_cmpstr (a.message, ==, "circuit open for t");
  g_assert_cmpint (fx.counted->starts, ==, 1);
  g_assert_cmpuint (evd_retry_budget_spent (budget, fx.now), ==, 0);
  caller_clear (&a);
  fixture_close (&fx);
}

/* A retry whose flight ended during its backoff (its last caller left) gives its token back:
 * it never went out. The caller leaves before the loop runs again, so the abandonment is
 * handled before the retry's timer can fire. */
static void
test_retry_cancelled_in_backoff_keeps_the_budget (void)
{
  Fixture fx;
  Caller a;
  Caller *all[] = { &a };
  EvdRetryBudget *budget;

  fixture_open (&fx, "fault", "mode = fail\nretryable = true\nretries = 1\n", TRUE);
  budget = evd_xreq_budget (fx.x);
  caller_start (&fx, &a, 7, 5000);
  g_assert_false (a.done);
  g_assert_cmpuint (evd_retry_budget_spent (budget, fx.now), ==, 1);
  evd_backend_call_cancel (a.call);
  evd_loop_run_pending (fx.loop);  /* the flight learns it was abandoned */
  g_assert_true (run_until_done (&fx, all, 1, 2000));
  g_assert_cmpint (a.kind, ==, EVD_ERROR_KIND_CANCELLED);
  g_assert_cmpint (fx.counted->starts, ==, 1);
  g_assert_cmpuint (evd_retry_budget_spent (budget, fx.now), ==, 0);
  caller_clear (&a);
  fixture_close (&fx);
}

/* ---- The breaker. ---- */

static void
test_breaker_transitions (void)
{
  Fixture fx;
  Caller c[12];
  Caller *p[12];
  g_autofree char *down = NULL;
  EvdBreaker *b;

  fixture_open (&fx, "fault", "mode = ok\ndelay_ms = 1\nfail_while_exists = @TMP@/down\n"
                "breaker = on\nbreaker_min_calls = 4\nbreaker_failure_ratio = 0.5\n"
                "breaker_window_ms = 1000\nbreaker_open_ms = 100\nbreaker_probes = 2\n", TRUE);
  down = g_build_filename (fx.tmpdir, "down", NULL);
  b = evd_xreq_breaker (fx.x);
  for (guint i = 0; i < G_N_ELEMENTS (c); i++)
    p[i] = &c[i];
  /* 2 successes, then failures: 1 of 3 closed, 2 of 4 open. */
  caller_start (&fx, &c[0], 1, 5000);
  caller_start (&fx, &c[1], 2, 5000);
  g_assert_true (run_until_done (&fx, p, 2, 2000));
  g_assert_true (g_file_set_contents (down, "", 0, NULL));
  caller_start (&fx, &c[2], 3, 5000);
  g_assert_true (run_until_done (&fx, p + 2, 1, 2000));
  g_assert_cmpint (evd_breaker_state (b, fx.now), ==, EVD_BREAKER_CLOSED);
  caller_start (&fx, &c[3], 4, 5000);
  g_assert_true (run_until_done (&fx, p + 3, 1, 2000));
  g_assert_cmpint (evd_breaker_state (b, fx.now), ==, EVD_BREAKER_OPEN);
  /* Open: refused at once, without reaching the backend. */
  caller_start (&fx, &c[4], 5, 5000);
  g_assert_true (c[4].done);
  g_assert_cmpstr (c[4].message, ==, "circuit open for t");
  g_assert_cmpuint (c[4].marks, ==, EVD_MARK_BREAKER_OPEN);
  g_assert_cmpint (fx.counted->starts, ==, 4);
  /* open_ms later, half-open: two probes go, the third caller is refused; the backend is
   * still down, so a probe fails and it opens again. */
  fx.now += 100 * MS;
  caller_start (&fx, &c[5], 6, 5000);
  caller_start (&fx, &c[6], 7, 5000);
  g_assert_true (c[5].done && c[6].done);  /* the fault backend fails inside start() */
  g_assert_cmpint (fx.counted->starts, ==, 5);
  g_assert_cmpint (c[5].kind, ==, EVD_ERROR_KIND_BACKEND);
  g_assert_cmpstr (c[6].message, ==, "circuit open for t");
  g_assert_cmpint (evd_breaker_state (b, fx.now), ==, EVD_BREAKER_OPEN);
  /* Recovered: two probes, both succeed: closed. */
  g_unlink (down);
  fx.now += 100 * MS;
  caller_start (&fx, &c[7], 8, 5000);
  caller_start (&fx, &c[8], 9, 5000);
  caller_start (&fx, &c[9], 10, 5000);
  g_assert_true (c[9].done);  /* both probes out: refused */
  g_assert_cmpstr (c[9].message, ==, "circuit open for t");
  g_assert_true (run_until_done (&fx, p + 7, 2, 2000));
  g_assert_cmpint (c[7].kind, ==, 0);
  g_assert_cmpint (c[8].kind, ==, 0);
  g_assert_cmpint (evd_breaker_state (b, fx.now), ==, EVD_BREAKER_CLOSED);
  caller_start (&fx, &c[10], 11, 5000);
  g_assert_true (run_until_done (&fx, p + 10, 1, 2000));
  g_assert_cmpint (c[10].kind, ==, 0);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_OPEN), ==, 2);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_HALF_OPEN), ==, 2);
  g_assert_cmpuint (evd_breaker_transitions (b, EVD_BREAKER_CLOSED), ==, 1);
  for (guint i = 0; i < 11; i++)
    caller_clear (&c[i]);
  fixture_close (&fx);
}

int
main (int argc, char **argv)
{
  evthread_use_pthreads ();
  g_test_init (&argc, &argv, NULL);
  no_attributes = g_hash_table_new (g_str_hash, g_str_equal);
  g_test_add_func ("/xreq/coalesce/shares-one-call", test_coalesce_shares_one_call);
  g_test_add_func ("/xreq/coalesce/callers-leave-one-by-one",
                   test_coalesce_callers_leave_one_by_one);
  g_test_add_func ("/xreq/coalesce/joiner-keeps-its-later-deadline",
                   test_coalesce_joiner_keeps_its_later_deadline);
  g_test_add_func ("/xreq/coalesce/alone-times-out-at-its-deadline",
                   test_coalesce_alone_times_out_at_its_deadline);
  g_test_add_func ("/xreq/coalesce/joiner-as-the-flight-runs-out",
                   test_coalesce_joiner_as_the_flight_runs_out);
  g_test_add_func ("/xreq/coalesce/joiner-as-the-flight-fails",
                   test_coalesce_joiner_as_the_flight_fails);
  g_test_add_func ("/xreq/coalesce/seal", test_coalesce_seal);
  g_test_add_func ("/xreq/coalesce/seal-against-joiners", test_coalesce_seal_against_joiners);
  g_test_add_func ("/xreq/coalesce/deadline-falls-when-the-latest-leaves",
                   test_coalesce_deadline_falls_when_the_latest_leaves);
  g_test_add_func ("/xreq/coalesce/no-retry-past-the-remaining-deadline",
                   test_coalesce_no_retry_past_the_remaining_deadline);
  g_test_add_func ("/xreq/coalesce/joiner-after-creator-left-is-marked",
                   test_coalesce_joiner_after_creator_left_is_marked);
  g_test_add_func ("/xreq/coalesce/default-by-kind", test_coalesce_default_by_kind);
  g_test_add_func ("/xreq/coalesce/thrift-keeps-principals-apart",
                   test_coalesce_thrift_keeps_principals_apart);
  g_test_add_func ("/xreq/cache/ttl", test_cache_ttl);
  g_test_add_func ("/xreq/cache/stale-if-error", test_cache_stale_if_error);
  g_test_add_func ("/xreq/cache/stale-on-timeout", test_cache_stale_on_timeout);
  g_test_add_func ("/xreq/cache/stale-only-to-callers-within-the-window",
                   test_cache_stale_only_to_callers_within_the_window);
  g_test_add_func ("/xreq/hedge/one-and-loser-cancelled", test_hedge_one_and_loser_cancelled);
  g_test_add_func ("/xreq/hedge/never-more-than-one", test_hedge_never_more_than_one);
  g_test_add_func ("/xreq/hedge/refused-by-breaker-keeps-the-budget",
                   test_hedge_refused_by_breaker_keeps_the_budget);
  g_test_add_func ("/xreq/retry/budget-under-failing-backend",
                   test_retry_budget_under_failing_backend);
  g_test_add_func ("/xreq/retry/marks", test_retry_marks);
  g_test_add_func ("/xreq/retry/refused-by-breaker-keeps-the-budget",
                   test_retry_refused_by_breaker_keeps_the_budget);
  g_test_add_func ("/xreq/retry/cancelled-in-backoff-keeps-the-budget",
                   test_retry_cancelled_in_backoff_keeps_the_budget);
  g_test_add_func ("/xreq/breaker/transitions", test_breaker_transitions);
  return g_test_run ();
}

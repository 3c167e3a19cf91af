/* test_loop: the cross-thread hand-off of rpc/evd_loop.c: every posted function runs
 * exactly once, on the loop's thread, in posting order per poster; what is posted after the
 * loop stopped runs when it is freed; pass-end tasks; busy polling. */
#include <event2/thread.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "evd_loop.h"

#define POSTERS 4
#define PER_POSTER 10000

typedef struct {
  EvdLoop *loop;
  gint seen[POSTERS];      /* last sequence number seen per poster, on the loop */
  gint total;              /* atomic */
  gboolean order_ok;
  gboolean thread_ok;
} Shared;

typedef struct {
  Shared *sh;
  int poster;
  int seq;
} Item;

static void
on_item (gpointer data)
{
  Item *it = data;

  it->sh->thread_ok &= evd_loop_is_current (it->sh->loop);
  it->sh->order_ok &= it->seq == it->sh->seen[it->poster] + 1;
  it->sh->seen[it->poster] = it->seq;
  g_atomic_int_inc (&it->sh->total);
  g_free (it);
}

static gpointer
poster (gpointer data)
{
  Item *first = data;

  for (int i = 1; i <= PER_POSTER; i++) {
    Item *it = g_new (Item, 1);
    *it = (Item) { first->sh, first->poster, i };
    evd_loop_post (first->sh->loop, on_item, it);
  }
  g_free (first);
  return NULL;
}

static void
wait_for (gint *counter, gint value)
{
  for (int i = 0; i < 1000 && g_atomic_int_get (counter) < value; i++)
    g_usleep (5000);
  g_assert_cmpint (g_atomic_int_get (counter), ==, value);
}

static void
test_posts_from_many_threads (void)
{
  Shared sh = { .order_ok = TRUE, .thread_ok = TRUE };
  GThread *threads[POSTERS];

  sh.loop = evd_loop_new (1, NULL);
  g_assert_true (evd_loop_start (sh.loop, NULL));
  for (int p = 0; p < POSTERS; p++) {
    Item *it = g_new (Item, 1);
    *it = (Item) { &sh, p, 0 };
    threads[p] = g_thread_new ("poster", poster, it);
  }
  for (int p = 0; p < POSTERS; p++)
    g_thread_join (threads[p]);
  wait_for (&sh.total, POSTERS * PER_POSTER);
  g_assert_false (evd_loop_is_current (sh.loop));
  evd_loop_quit (sh.loop);
  evd_loop_free (sh.loop);
  g_assert_true (sh.order_ok);
  g_assert_true (sh.thread_ok);
}

typedef struct {
  EvdLoop *loop;
  gint runs;
  gint depth;               /* > 0 while a task runs */
  gboolean nested;          /* a task ran inside another */
} Chain;

static void
on_chain (gpointer data)
{
  Chain *c = data;

  c->nested |= c->depth > 0;
  c->depth++;
  /* Atomic: the test thread polls it, and reading 100 must also show it `nested`. */
  if (g_atomic_int_add (&c->runs, 1) + 1 < 100)
    evd_loop_post (c->loop, on_chain, c);  /* runs later, not inside this one */
  c->depth--;
}

static void
test_self_post_runs_later_and_free_runs_leftovers (void)
{
  Chain c = { 0 };

  c.loop = evd_loop_new (1, NULL);
  g_assert_true (evd_loop_start (c.loop, NULL));
  evd_loop_post (c.loop, on_chain, &c);
  wait_for (&c.runs, 100);
  g_assert_false (c.nested);
  evd_loop_quit (c.loop);
  /* Posted to a stopped loop: runs (once) when the loop is freed, even if it posts again. */
  c.runs = 95;
  evd_loop_post (c.loop, on_chain, &c);
  evd_loop_free (c.loop);
  g_assert_cmpint (c.runs, ==, 100);
}

static void
on_quit (gpointer data)
{
  evd_loop_quit (data);
}

static void
test_run_here (void)
{
  EvdLoop *loop = evd_loop_new (0, NULL);

  /* A loop not started belongs to the thread that made it. */
  g_assert_true (evd_loop_is_current (loop));
  evd_loop_post (loop, on_quit, loop);
  evd_loop_run_here (loop);  /* returns once the posted quit ran */
  evd_loop_free (loop);
}

typedef struct {
  EvdLoop *loop;
  GString *order;
} Pass;

static void
on_second_pass_end (gpointer data)
{
  g_string_append (((Pass *) data)->order, "U");
}

static void
on_pass_end (gpointer data)
{
  Pass *p = data;

  g_string_append (p->order, "T");
  evd_loop_at_pass_end (p->loop, on_second_pass_end, p);  /* queued by a task: still runs */
}

static void
on_ready (evutil_socket_t fd, short what, void *arg)
{
  Pass *p = arg;

  (void) what;
  g_string_append_printf (p->order, "%d", (int) fd);
  /* Two callbacks of the pass ask for the same task: it runs twice, once they all have run. */
  if (fd != 2)
    evd_loop_at_pass_end (p->loop, on_pass_end, p);
}

/* A pass-end task runs after every callback that was ready when it was queued, in that
 * same pass; tasks it queues run after it; a loop freed with tasks left runs them. */
static void
test_pass_end (void)
{
  Pass p = { evd_loop_new (0, NULL), g_string_new (NULL) };
  struct event *ev[3];

  for (int i = 0; i < 3; i++) {
    ev[i] = event_new (evd_loop_base (p.loop), i + 1, 0, on_ready, &p);
    event_active (ev[i], EV_READ, 0);
  }
  event_base_loop (evd_loop_base (p.loop), EVLOOP_ONCE);
  g_assert_cmpstr (p.order->str, ==, "123TTUU");

  g_string_truncate (p.order, 0);
  evd_loop_at_pass_end (p.loop, on_pass_end, &p);
  for (int i = 0; i < 3; i++)
    event_free (ev[i]);
  evd_loop_free (p.loop);
  g_assert_cmpstr (p.order->str, ==, "TU");
  g_string_free (p.order, TRUE);
}

/* ---- Busy polling. ---- */

typedef struct {
  EvdLoop *loop;
  gint tid;                /* the loop thread's id, for /proc/self/task/TID/stat */
  gint ready;              /* atomic: work tasks run */
} Poll;

static void
on_nothing (gpointer data)
{
  (void) data;
}

/* Work, as the poller counts it: a task that queues a pass-end task (a reply to send). */
static void
on_work (gpointer data)
{
  Poll *p = data;

  g_atomic_int_set (&p->tid, (gint) syscall (SYS_gettid));
  evd_loop_at_pass_end (p->loop, on_nothing, NULL);
  g_atomic_int_inc (&p->ready);
}

/* Whether the loop's thread is running or waiting to run ('R'), rather than blocked in the
 * kernel ('S'): a polling thread never blocks, a sleeping one always is. Unlike CPU time, what
 * a thread is doing does not depend on how much of the machine it gets. */
static gboolean
thread_runnable (Poll *p)
{
  g_autofree char *path = g_strdup_printf ("/proc/self/task/%d/stat", g_atomic_int_get (&p->tid));
  g_autofree char *stat = NULL;
  const char *state;

  g_assert_true (g_file_get_contents (path, &stat, NULL, NULL));
  state = strrchr (stat, ')');  /* the name, in parentheses, may hold anything */
  g_assert_nonnull (state);
  return state[2] == 'R';
}

/* Of 40 looks at the thread over `ms`, how many found it runnable. */
static int
runnable_looks (Poll *p, int ms)
{
  int n = 0;

  for (int i = 0; i < 40; i++) {
    n += thread_runnable (p);
    g_usleep (ms * 1000 / 40);
  }
  return n;
}

/* Waits (with a deadline) until the thread is blocked: its polling spell is over. */
static void
wait_asleep (Poll *p)
{
  gint64 give_up = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (thread_runnable (p)) {
    g_assert_cmpint (g_get_monotonic_time (), <, give_up);
    g_usleep (1000);
  }
}

static void
start_and_work (Poll *p, int busy_poll_us)
{
  p->loop = evd_loop_new (1, NULL);
  evd_loop_set_busy_poll (p->loop, busy_poll_us);
  g_assert_true (evd_loop_start (p->loop, NULL));
  evd_loop_post (p->loop, on_work, p);
  for (int i = 0; i < 1000 && !g_atomic_int_get (&p->ready); i++)
    g_usleep (1000);
  g_assert_cmpint (g_atomic_int_get (&p->ready), ==, 1);
}

/* After work, a polling loop keeps its thread running for busy_poll_us, then sleeps; one that
 * does not poll sleeps at once; quitting stops either. The thread's state tells: runnable
 * while it polls, blocked while it sleeps, however busy the machine (its CPU time, which
 * this test measured before, is what a loaded machine withholds). */
static void
test_busy_poll (void)
{
  Poll p = { 0 };
  Poll q = { 0 };
  gint64 t0;

  start_and_work (&p, 2 * 1000 * 1000);                     /* polls for 2 s after work */
  g_assert_cmpint (runnable_looks (&p, 100), >=, 38);       /* polling: never blocked */
  wait_asleep (&p);                                         /* past busy_poll_us */
  g_assert_cmpint (runnable_looks (&p, 200), <=, 2);        /* asleep: it stays so */
  evd_loop_post (p.loop, on_work, &p);                      /* work again: polls again */
  for (int i = 0; i < 1000 && g_atomic_int_get (&p.ready) < 2; i++)
    g_usleep (1000);
  g_assert_cmpint (g_atomic_int_get (&p.ready), ==, 2);
  g_assert_cmpint (runnable_looks (&p, 100), >=, 38);
  t0 = g_get_monotonic_time ();
  evd_loop_quit (p.loop);                                   /* quits while polling */
  evd_loop_free (p.loop);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, G_USEC_PER_SEC);

  start_and_work (&q, 0);
  wait_asleep (&q);
  g_assert_cmpint (runnable_looks (&q, 200), <=, 2);
  t0 = g_get_monotonic_time ();
  evd_loop_quit (q.loop);                                   /* quits while asleep */
  evd_loop_free (q.loop);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, G_USEC_PER_SEC);
}

int
main (int argc, char **argv)
{
  evthread_use_pthreads ();
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/loop/posts-from-many-threads", test_posts_from_many_threads);
  g_test_add_func ("/loop/self-post-and-leftovers", test_self_post_runs_later_and_free_runs_leftovers);
  g_test_add_func ("/loop/run-here", test_run_here);
  g_test_add_func ("/loop/pass-end", test_pass_end);
  g_test_add_func ("/loop/busy-poll", test_busy_poll);
  return g_test_run ();
}

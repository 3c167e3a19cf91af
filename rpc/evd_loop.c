/* evd_loop: an event loop thread and its post queue (see evd_loop.h). */
#include "evd_loop.h"

#include <event2/thread.h>
#include <gio/gio.h>
#include <pthread.h>

typedef struct {
  EvdLoopFunc fn;
  gpointer data;
} EvdLoopTask;

struct _EvdLoop {
  gatomicrefcount refs;      /* evd_loop_free() drops the owner's; per-loop state holds others */
  guint index;
  struct event_base *base;
  GThread *thread;
  pthread_t tid;
  gboolean running;

  /* The post queue: the only state another thread may touch, always under `lock`. */
  GMutex lock;
  GArray *queue;       /* EvdLoopTask */
  GArray *spare;       /* swapped with queue when draining, so posting never waits on a run */
  struct event *wakeup;
  gboolean wakeup_pending;

  /* Tasks for the end of this pass (this loop's thread only). */
  GArray *pass_end;    /* EvdLoopTask */
  GArray *pass_end_spare;
  struct event *pass_end_ev;
  guint64 passes_with_work;  /* pass-end runs that had tasks: what busy polling watches */
  gint64 busy_poll_us;       /* 0: passes block when there is nothing to do */
  gint quitting;             /* atomic: evd_loop_quit() was called */

  gpointer codec;
  GDestroyNotify free_codec;

  /* Watching (this loop's thread only). */
  struct event *beat;
  gint64 next_beat_us;
  gint64 lag_us;
  gint64 stall_warn_us;      /* 0: not watched */
  gint64 watch_since_us;     /* start of the watched callback, or 0 */
  const char *watch_what;
  char watch_who[80];
};

/* Runs the tasks queued so far. Tasks posted while these run wait for the next wakeup, so a
 * task that posts to its own loop cannot starve the sockets. */
static void
evd_loop_drain (EvdLoop *loop)
{
  GArray *batch;

  g_mutex_lock (&loop->lock);
  batch = loop->queue;
  loop->queue = loop->spare;
  loop->spare = NULL;
  loop->wakeup_pending = FALSE;
  g_mutex_unlock (&loop->lock);

  evd_loop_watch_begin (loop, "running tasks handed over by other threads", NULL);
  for (guint i = 0; i < batch->len; i++) {
    EvdLoopTask *t = &g_array_index (batch, EvdLoopTask, i);
    t->fn (t->data);
  }
  evd_loop_watch_end (loop);
  g_array_set_size (batch, 0);

  g_mutex_lock (&loop->lock);
  loop->spare = batch;
  g_mutex_unlock (&loop->lock);
}

static void
evd_loop_on_wakeup (evutil_socket_t fd, short what, void *arg)
{
  (void) fd;
  (void) what;
  evd_loop_drain (arg);
}

/* Runs the pass-end tasks queued so far, and those they queue. Two arrays swapped, as the
 * post queue does: this runs every pass, and allocates nothing. */
static void
evd_loop_run_pass_end (EvdLoop *loop)
{
  if (loop->pass_end->len > 0)
    loop->passes_with_work++;
  while (loop->pass_end->len > 0) {
    GArray *batch = loop->pass_end;

    loop->pass_end = loop->pass_end_spare;
    for (guint i = 0; i < batch->len; i++) {
      EvdLoopTask *t = &g_array_index (batch, EvdLoopTask, i);
      t->fn (t->data);
    }
    g_array_set_size (batch, 0);
    loop->pass_end_spare = batch;
  }
}

/* libevent appends an event made active to the queue it is running, so this runs after every
 * callback that was ready before the first task was queued, in the same pass. */
static void
evd_loop_on_pass_end (evutil_socket_t fd, short what, void *arg)
{
  (void) fd;
  (void) what;
  evd_loop_run_pass_end (arg);
}

/* libevent 2.1 measures time with CLOCK_MONOTONIC_COARSE unless asked not to, and adds a
 * timer to the time cached when the loop iteration began: either way timers fire early (a
 * jiffy, or however long the iteration has run), and a deadline or a 140 ms nap must not.
 * Reading the clock for each timer added costs a vDSO call. */
static struct event_base *
evd_loop_new_base (void)
{
  struct event_config *cfg = event_config_new ();
  struct event_base *base;

  event_config_set_flag (cfg, EVENT_BASE_FLAG_PRECISE_TIMER | EVENT_BASE_FLAG_NO_CACHE_TIME);
  base = event_base_new_with_config (cfg);
  event_config_free (cfg);
  return base;
}

EvdLoop *
evd_loop_new (guint index, GError **error)
{
  EvdLoop *loop = g_new0 (EvdLoop, 1);

  g_atomic_ref_count_init (&loop->refs);
  loop->index = index;
  /* Until its thread starts, a loop belongs to the thread that made it: tests and fuzzers
   * can then drive it synchronously. */
  loop->tid = pthread_self ();
  loop->base = evd_loop_new_base ();
  if (loop->base == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "event_base_new failed");
    g_free (loop);
    return NULL;
  }
  g_mutex_init (&loop->lock);
  loop->queue = g_array_new (FALSE, FALSE, sizeof (EvdLoopTask));
  loop->spare = g_array_new (FALSE, FALSE, sizeof (EvdLoopTask));
  loop->wakeup = event_new (loop->base, -1, 0, evd_loop_on_wakeup, loop);
  loop->pass_end = g_array_new (FALSE, FALSE, sizeof (EvdLoopTask));
  loop->pass_end_spare = g_array_new (FALSE, FALSE, sizeof (EvdLoopTask));
  loop->pass_end_ev = event_new (loop->base, -1, 0, evd_loop_on_pass_end, loop);
  return loop;
}

/* The loop with busy polling: for busy_poll_us after a pass that did work (one that queued
 * pass-end tasks, such as replies to send), passes do not block but poll again; then one
 * blocking pass. A thread blocked in epoll_wait() leaves its CPU idle, and on a virtual
 * machine whose idle CPUs halt, waking it for the next request takes tens of microseconds:
 * at one request in flight, more than evdal's own work on it. quitting is checked between
 * passes, since a loopbreak that comes while no pass runs would be cleared by the next. */
static void
evd_loop_run_polling (EvdLoop *loop)
{
  gint64 last_work_us = 0;
  guint64 seen = loop->passes_with_work;

  while (!g_atomic_int_get (&loop->quitting)) {
    gboolean poll = g_get_monotonic_time () - last_work_us < loop->busy_poll_us;

    event_base_loop (loop->base, EVLOOP_NO_EXIT_ON_EMPTY | (poll ? EVLOOP_NONBLOCK
                                                                 : EVLOOP_ONCE));
    if (loop->passes_with_work != seen) {
      seen = loop->passes_with_work;
      last_work_us = g_get_monotonic_time ();
    }
  }
}

static gpointer
evd_loop_thread (gpointer data)
{
  EvdLoop *loop = data;

  loop->tid = pthread_self ();
  if (loop->busy_poll_us == 0) {
    /* EVLOOP_NO_EXIT_ON_EMPTY: a loop with no connections yet must keep waiting for posts. */
    event_base_loop (loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
  }
  evd_loop_run_polling (loop);
  return NULL;
}

gboolean
evd_loop_start (EvdLoop *loop, GError **error)
{
  g_autofree char *name = g_strdup_printf ("evdal-io%u", loop->index);

  loop->running = TRUE;
  loop->thread = g_thread_try_new (name, evd_loop_thread, loop, error);
  if (loop->thread == NULL) {
    loop->running = FALSE;
    return FALSE;
  }
  return TRUE;
}

void
evd_loop_run_here (EvdLoop *loop)
{
  evd_loop_thread (loop);
}

void
evd_loop_run_pending (EvdLoop *loop)
{
  g_return_if_fail (evd_loop_is_current (loop));
  while (loop->queue->len > 0 || loop->pass_end->len > 0) {
    while (loop->queue->len > 0)
      evd_loop_drain (loop);
    evd_loop_run_pass_end (loop);
  }
}

void
evd_loop_quit (EvdLoop *loop)
{
  g_atomic_int_set (&loop->quitting, 1);
  event_base_loopbreak (loop->base);
}

/* Runs what is still queued on the calling thread, which is the loop's now: its own thread
 * has ended (or never started). A task may post again (a cancelled call completing), hence
 * the repeats; libevent's deferred callbacks still queued (a bufferevent's last release, an
 * OpenSSL session's teardown) run too, since freeing the base would drop them. */
static void
evd_loop_run_leftovers (EvdLoop *loop)
{
  loop->tid = pthread_self ();
  evd_loop_run_pending (loop);
  event_base_loop (loop->base, EVLOOP_NONBLOCK);
  evd_loop_run_pending (loop);
}

static void
evd_loop_destroy (EvdLoop *loop)
{
  evd_loop_run_leftovers (loop);
  if (loop->free_codec != NULL && loop->codec != NULL)
    loop->free_codec (loop->codec);
  if (loop->beat != NULL)
    event_free (loop->beat);
  event_free (loop->wakeup);
  event_free (loop->pass_end_ev);
  event_base_free (loop->base);
  g_array_unref (loop->pass_end);
  g_array_unref (loop->pass_end_spare);
  g_array_unref (loop->queue);
  g_array_unref (loop->spare);
  g_mutex_clear (&loop->lock);
  g_free (loop);
}

void
evd_loop_free (EvdLoop *loop)
{
  if (loop == NULL)
    return;
  if (loop->thread != NULL) {
    g_thread_join (loop->thread);
    loop->thread = NULL;
  }
  /* The loop is gone: what was posted to it runs here, where nothing else runs any more. */
  evd_loop_run_leftovers (loop);
  evd_loop_unref (loop);
}

EvdLoop *
evd_loop_ref (EvdLoop *loop)
{
  g_atomic_ref_count_inc (&loop->refs);
  return loop;
}

void
evd_loop_unref (EvdLoop *loop)
{
  if (loop != NULL && g_atomic_ref_count_dec (&loop->refs))
    evd_loop_destroy (loop);
}

void
evd_loop_set_busy_poll (EvdLoop *loop, int busy_poll_us)
{
  g_return_if_fail (loop->thread == NULL);
  loop->busy_poll_us = MAX (busy_poll_us, 0);
}

struct event_base *
evd_loop_base (EvdLoop *loop)
{
  return loop->base;
}

guint
evd_loop_index (EvdLoop *loop)
{
  return loop->index;
}

gboolean
evd_loop_is_current (EvdLoop *loop)
{
  return pthread_equal (loop->tid, pthread_self ());
}

void
evd_loop_post (EvdLoop *loop, EvdLoopFunc fn, gpointer data)
{
  EvdLoopTask t = { fn, data };
  gboolean wake;

  g_mutex_lock (&loop->lock);
  g_array_append_val (loop->queue, t);
  wake = !loop->wakeup_pending;
  loop->wakeup_pending = TRUE;
  g_mutex_unlock (&loop->lock);
  /* One wakeup per batch: posts that find one pending ride along with it. */
  if (wake)
    event_active (loop->wakeup, 0, 0);
}

void
evd_loop_at_pass_end (EvdLoop *loop, EvdLoopFunc fn, gpointer data)
{
  EvdLoopTask t = { fn, data };

  g_return_if_fail (evd_loop_is_current (loop));
  if (loop->pass_end->len == 0)
    event_active (loop->pass_end_ev, 0, 0);
  g_array_append_val (loop->pass_end, t);
}

/* ---- Watching. ---- */

static void
evd_loop_on_beat (evutil_socket_t fd, short what, void *arg)
{
  EvdLoop *loop = arg;
  gint64 now = g_get_monotonic_time ();

  (void) fd;
  (void) what;
  /* Atomic stores: the main thread reads both for /metrics and the systemd watchdog. */
  __atomic_store_n (&loop->lag_us, MAX (now - loop->next_beat_us, 0), __ATOMIC_RELAXED);
  __atomic_store_n (&loop->next_beat_us, now + EVD_LOOP_BEAT_MS * 1000, __ATOMIC_RELAXED);
}

void
evd_loop_watch (EvdLoop *loop, int stall_warn_ms)
{
  struct timeval tv = { 0, EVD_LOOP_BEAT_MS * 1000 };

  loop->stall_warn_us = stall_warn_ms * (gint64) 1000;
  loop->next_beat_us = g_get_monotonic_time () + EVD_LOOP_BEAT_MS * 1000;
  loop->beat = event_new (loop->base, -1, EV_PERSIST, evd_loop_on_beat, loop);
  event_add (loop->beat, &tv);
}

gint64
evd_loop_lag_us (EvdLoop *loop)
{
  /* An overdue beat means the loop is behind now, even before the timer gets to say so. */
  if (loop->beat == NULL)
    return 0;
  return MAX (__atomic_load_n (&loop->lag_us, __ATOMIC_RELAXED),
              g_get_monotonic_time () - __atomic_load_n (&loop->next_beat_us, __ATOMIC_RELAXED));
}

void
evd_loop_watch_begin (EvdLoop *loop, const char *what, const char *who)
{
  if (loop->stall_warn_us == 0 || loop->watch_since_us != 0)
    return;  /* not watched, or already inside a watched callback */
  loop->watch_since_us = g_get_monotonic_time ();
  loop->watch_what = what;
  g_strlcpy (loop->watch_who, who ? who : "", sizeof loop->watch_who);
}

void
evd_loop_watch_end (EvdLoop *loop)
{
  gint64 took;

  if (loop->watch_since_us == 0)
    return;
  took = g_get_monotonic_time () - loop->watch_since_us;
  loop->watch_since_us = 0;
  if (took > loop->stall_warn_us)
    g_warning ("loop %u stalled for %" G_GINT64_FORMAT " ms %s%s%s: every connection on it "
               "waited", loop->index, took / 1000, loop->watch_what,
               loop->watch_who[0] ? " " : "", loop->watch_who);
}

gpointer *
evd_loop_codec_slot (EvdLoop *loop)
{
  return &loop->codec;
}

void
evd_loop_set_codec_free (EvdLoop *loop, GDestroyNotify free_codec)
{
  loop->free_codec = free_codec;
}

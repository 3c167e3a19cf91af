/* evd_loop: one libevent event loop on its own thread, and the only way into it from others.
 *
 * evdal runs `io_threads` loops; each connection, request and lookup lives on exactly one of
 * them and is touched by no other thread. Work done elsewhere (the acceptor handing over a new
 * socket, a SQLite worker finishing a query) comes back with evd_loop_post(): the function is
 * queued under the loop's own lock (never a lock shared by all loops) and one event_active()
 * wakes the loop, which runs every queued function in order on its thread. Functions posted
 * to a loop that has stopped run when its last reference goes, on that thread, so every hand-off
 * completes exactly once and only its owner frees what it carries.
 */
#pragma once

#include <event2/event.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct _EvdLoop EvdLoop;
typedef void (*EvdLoopFunc) (gpointer data);

/* Creates the loop's event base; call evthread_use_pthreads() once before the first. */
EvdLoop *evd_loop_new (guint index, GError **error);
/* Busy polling (before evd_loop_start): after a pass that did work, the loop polls without
 * blocking for busy_poll_us before it blocks again, so a request arriving meanwhile is read
 * without waking a sleeping thread. Costs up to that much CPU per quiet spell; 0 (the
 * default) never polls. */
void evd_loop_set_busy_poll (EvdLoop *loop, int busy_poll_us);
/* Starts the loop's thread; it runs until evd_loop_quit(). */
gboolean evd_loop_start (EvdLoop *loop, GError **error);
/* Runs the loop on the calling thread until evd_loop_quit() (the main loop does this). */
void evd_loop_run_here (EvdLoop *loop);
/* Runs what is queued (posts and pass-end tasks, until none is left), on the calling thread,
 * which must be the loop's (a loop not started, driven by a test or a fuzzer). */
void evd_loop_run_pending (EvdLoop *loop);
/* Asks the loop to stop after this iteration (any thread). */
void evd_loop_quit (EvdLoop *loop);
/* Waits for the thread, runs what is still queued, and drops the owner's reference. */
void evd_loop_free (EvdLoop *loop);
/* A loop lives until its last reference: per-loop state of a backend (evd_loop_local) holds
 * one, so that it can still post its own teardown to a loop that has stopped. What is posted
 * to a stopped loop runs when the last reference goes, on the thread that drops it, and only
 * then is the event base freed. Any thread. */
EvdLoop *evd_loop_ref (EvdLoop *loop);
void evd_loop_unref (EvdLoop *loop);

struct event_base *evd_loop_base (EvdLoop *loop);
guint evd_loop_index (EvdLoop *loop);
/* Whether the calling thread is this loop's (before evd_loop_start: the one that made it). */
gboolean evd_loop_is_current (EvdLoop *loop);
/* Runs fn(data) on the loop's thread, later, in posting order. Safe from any thread. */
void evd_loop_post (EvdLoop *loop, EvdLoopFunc fn, gpointer data);
/* Runs fn(data) once the callbacks this loop pass has already made ready have run: still in
 * this pass, after the other sockets and timers that woke it (the loop's own thread only).
 * Work that many callbacks of one pass each want done, like sending a connection's replies,
 * is then done once for all of them. A loop freed first runs them as it frees. */
void evd_loop_at_pass_end (EvdLoop *loop, EvdLoopFunc fn, gpointer data);

/* ---- Watching the loop (its own thread only). ----
 *
 * A heartbeat timer fires every EVD_LOOP_BEAT_MS and measures how late it fires: the loop's
 * lag, the time a request that arrives now waits before the loop reads it. Callbacks that can
 * run long are bracketed by watch_begin/watch_end: one that takes more than stall_warn_ms is
 * logged with what it was doing. */
#define EVD_LOOP_BEAT_MS 10

void evd_loop_watch (EvdLoop *loop, int stall_warn_ms);
/* How far behind the loop is now: also what a loop stuck in one callback has been stuck for,
 * since its beat is overdue by that much. Any thread (the watchdog and /metrics read it). */
gint64 evd_loop_lag_us (EvdLoop *loop);
/* `what` is a static description; `who` (may be NULL) is copied. */
void evd_loop_watch_begin (EvdLoop *loop, const char *what, const char *who);
void evd_loop_watch_end (EvdLoop *loop);

/* A slot the RPC layer keeps its per-loop codec in (evd_rpc owns and frees it). */
gpointer *evd_loop_codec_slot (EvdLoop *loop);
void evd_loop_set_codec_free (EvdLoop *loop, GDestroyNotify free_codec);

G_END_DECLS

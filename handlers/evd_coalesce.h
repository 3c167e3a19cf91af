/* evd_coalesce: identical calls in flight at the same time, anywhere in the process, meet
 * here and share one execution.
 *
 * A rendezvous by key: the first caller of a key makes an entry (the caller then starts the
 * shared work, kept in the entry's data), later callers join it while it is open. Each caller
 * is a waiter and may leave on its own (its deadline passed, its request ended); the one that
 * leaves last learns so (EVD_COALESCE_LAST), and the entry is then closed to new callers, who
 * start afresh: the shared work is to be stopped. When the work is done its owner closes the
 * entry and answers its waiters; a waiter leaving after that learns it is too late
 * (EVD_COALESCE_CLOSED): its answer is on its way. Once closed, the list of waiters never
 * changes again, so whoever closed it reads it without the lock.
 *
 * Each waiter joins with its deadline, and the entry keeps the latest of the waiters still in
 * it: the work may run that long. A join raises it; a leave lowers it when the waiter with
 * the latest deadline goes (its request ended early), so that the work does not go on, or
 * retry, for time no one waits for any more. A decision made from it outside the lock
 * (answer with a failure: no time is left for a retry, the work ran out of the time it had)
 * is confirmed with evd_coalesce_seal, under the lock: a caller who joined meanwhile with a
 * later deadline makes the owner decide again, and once sealed no one joins any more, so the
 * decision holds for every waiter it answers. A deadline lowered meanwhile does not undo it:
 * the waiters it answers have less time than it saw, not more.
 *
 * One EvdCoalesce per lookup, in 16 shards by key hash, each under its own lock, held for a
 * chain walk and a link or unlink: never one lock for the process. An entry is one block (its
 * key, its data and room for a few waiters inline), reused from a stock of the thread's, and
 * chains in its shard through itself, so a call that finds no one to share with allocates
 * nothing here in the steady state. An entry made with a NULL EvdCoalesce is private
 * (coalescing off: the same life, with nobody to share it). Entries are reference counted atomically: each waiter and
 * the work hold one.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _EvdCoalesce EvdCoalesce;
typedef struct _EvdCoalesceEntry EvdCoalesceEntry;

typedef enum {
  EVD_COALESCE_LEFT,        /* others still wait */
  EVD_COALESCE_LAST,        /* it was the last: the entry is closed, stop the work */
  EVD_COALESCE_CLOSED,      /* the work had ended: this waiter's answer is on its way */
} EvdCoalesceLeave;

EvdCoalesce *evd_coalesce_new (void);
/* Every entry must have been closed. */
void evd_coalesce_free (EvdCoalesce *c);

/* Joins the open entry for `key` as `waiter`, or makes one (*created TRUE) with `data_size`
 * bytes of data (zeroed) that `init (data, init_data)` fills, under the lock, so that no
 * joiner can see the entry without it; `destroy (data)` runs (any thread) when the entry's
 * last reference goes. The entry's deadline is raised to `deadline_us` in the same step, so
 * that no one sees the waiter without it. Returns the entry with a reference for the waiter.
 * `c` NULL: a private entry. */
EvdCoalesceEntry *evd_coalesce_join (EvdCoalesce *c, const void *key, gsize key_len,
                                     gpointer waiter, gint64 deadline_us, gsize data_size,
                                     void (*init) (gpointer data, gpointer init_data),
                                     gpointer init_data, GDestroyNotify destroy,
                                     gboolean *created);
EvdCoalesceLeave evd_coalesce_leave (EvdCoalesceEntry *e, gpointer waiter);
/* The work is done: closes the entry; FALSE when the last waiter had closed it already.
 * The waiters are then evd_coalesce_entry_waiter (e, 0 .. n - 1), fixed from now on. */
gboolean evd_coalesce_close (EvdCoalesceEntry *e);
/* Closes the entry to new callers, unless a waiter whose deadline is later than `deadline_us`
 * (the one a decision was made from) joined it: FALSE, decide again. TRUE with any
 * `deadline_us` at or past the entry's now (leaves may have lowered it since). Its waiters
 * may still leave, and the work's owner still closes it. TRUE when it was closed already. */
gboolean evd_coalesce_seal (EvdCoalesceEntry *e, gint64 deadline_us);
/* The latest deadline of the waiters still in the entry (once the last has left, its own).
 * Any thread: read without the lock, it may rise (a join) or fall (a leave) right after. */
gint64 evd_coalesce_entry_deadline (EvdCoalesceEntry *e);
guint evd_coalesce_entry_n_waiters (EvdCoalesceEntry *e);
gpointer evd_coalesce_entry_waiter (EvdCoalesceEntry *e, guint i);
gpointer evd_coalesce_entry_data (EvdCoalesceEntry *e);
const void *evd_coalesce_entry_key (EvdCoalesceEntry *e, gsize *len);
EvdCoalesceEntry *evd_coalesce_entry_ref (EvdCoalesceEntry *e);
void evd_coalesce_entry_unref (EvdCoalesceEntry *e);
/* Entries open now (for tests and metrics). */
guint evd_coalesce_size (EvdCoalesce *c);

G_END_DECLS

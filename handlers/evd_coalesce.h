/* evd_coalesce: identical calls in flight at the same time, anywhere in the process, meet
 * here and share one execution.
 *
 * A rendezvous by key: the first caller of a key makes an entry (the caller then starts the
 * shared work, kept in the entry's data), later callers join it while it is open. Each caller
 * is a waiter and may leave on its own (its deadline passed, its request ended); the one that
 * leaves last learns so (EVD_COALESCE_LAST), and the entry is then closed to new callers, who
 * start afresh: the shared work is to be stopped. When the work is done its owner closes the
 * entry and gets the waiters to answer; a waiter leaving after that learns it is too late
 * (EVD_COALESCE_CLOSED): its answer is on its way.
 *
 * One EvdCoalesce per lookup, under its own lock, held for a hash lookup and an array append
 * or removal: never one lock for the process. An entry made with a NULL EvdCoalesce is private
 * (coalescing off: the same life, with nobody to share it). Entries are reference counted
 * atomically: each waiter and the work hold one.
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

/* Joins the open entry for `key` as `waiter`, or makes one (*created TRUE) whose data is
 * `make (make_data)`, called under the lock so that no joiner can see the entry without it,
 * and freed with `destroy` (any thread) when the entry's last reference goes. Returns the
 * entry with a reference for the waiter. `c` NULL: a private entry. */
EvdCoalesceEntry *evd_coalesce_join (EvdCoalesce *c, GBytes *key, gpointer waiter,
                                     gpointer (*make) (gpointer make_data), gpointer make_data,
                                     GDestroyNotify destroy, gboolean *created);
EvdCoalesceLeave evd_coalesce_leave (EvdCoalesceEntry *e, gpointer waiter);
/* The work is done: closes the entry and returns its waiters (the caller frees the array);
 * NULL when the last waiter had left already. */
GPtrArray *evd_coalesce_close (EvdCoalesceEntry *e);
gpointer evd_coalesce_entry_data (EvdCoalesceEntry *e);
guint evd_coalesce_entry_waiters (EvdCoalesceEntry *e);
EvdCoalesceEntry *evd_coalesce_entry_ref (EvdCoalesceEntry *e);
void evd_coalesce_entry_unref (EvdCoalesceEntry *e);
/* Entries open now (for tests and metrics). */
guint evd_coalesce_size (EvdCoalesce *c);

G_END_DECLS

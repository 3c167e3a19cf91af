/* evd_loop_local: one object per IO loop for a shared owner, such as a database's connections
 * on each loop, made and destroyed on that loop's own thread.
 *
 * A backend with connections (PostgreSQL, Redis, HTTP) keeps them per loop so that no socket
 * is touched by two threads and the query path takes no lock. The owner (what a backend's
 * setup() made from the config) holds an EvdLoopLocal; the first evd_loop_local_get() on a
 * loop makes that loop's object with make(loop, owner), on the loop's thread. When the owner
 * goes (a reload replaced its config, or shutdown), evd_loop_local_free() hands each object
 * back to its own loop to be destroyed there; a loop that has already stopped destroys it
 * when its last reference goes (the set holds one per loop it made an object on), so this is
 * safe whatever order shutdown frees things in.
 */
#pragma once

#include "evd_loop.h"

G_BEGIN_DECLS

/* The largest loop index an EvdLoopLocal serves (loops are numbered 0..io_threads, at most
 * 256 IO loops). */
#define EVD_LOOP_LOCAL_MAX_LOOPS 260

typedef struct _EvdLoopLocal EvdLoopLocal;
/* Makes the object of `loop`, on its thread; must not return NULL. */
typedef gpointer (*EvdLoopLocalMake) (EvdLoop *loop, gpointer owner);

EvdLoopLocal *evd_loop_local_new (EvdLoopLocalMake make, GDestroyNotify destroy,
                                  gpointer owner);
/* The object of `loop`, made at the first call. On that loop's thread only. */
gpointer evd_loop_local_get (EvdLoopLocal *ll, EvdLoop *loop);
/* The object of `loop` if made already, else NULL. On that loop's thread only. */
gpointer evd_loop_local_peek (EvdLoopLocal *ll, EvdLoop *loop);
/* Calls fn(object, data) for each object made so far, under the set's lock, in the order
 * they were made. Any thread (/metrics): fn must read only what is safe to read from another
 * thread (atomics) and must not call back into the set. */
void evd_loop_local_foreach (EvdLoopLocal *ll, GFunc fn, gpointer data);
/* How many objects were made so far: the loops a backend serves on. Any thread. */
guint evd_loop_local_count (EvdLoopLocal *ll);
/* Destroys every object on its own loop's thread (later), then the set. Any thread; no
 * evd_loop_local_get() may run on it any more. */
void evd_loop_local_free (EvdLoopLocal *ll);

G_END_DECLS

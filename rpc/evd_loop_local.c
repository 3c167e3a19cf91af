/* evd_loop_local: per-loop objects of a shared owner (see evd_loop_local.h). */
#include "evd_loop_local.h"

typedef struct {
  EvdLoop *loop;            /* a reference, so that the destroy task always has a loop to run on */
  gpointer object;
  GDestroyNotify destroy;
} EvdLoopLocalEntry;

struct _EvdLoopLocal {
  EvdLoopLocalMake make;
  GDestroyNotify destroy;
  gpointer owner;
  GMutex lock;              /* guards `made`: makers append, foreach reads from other threads */
  GPtrArray *made;          /* EvdLoopLocalEntry *, in the order made */
  /* By loop index: written once by that loop's thread, read only by it (get), so the fast
   * path is one load without a lock. */
  gpointer objects[EVD_LOOP_LOCAL_MAX_LOOPS];
};

EvdLoopLocal *
evd_loop_local_new (EvdLoopLocalMake make, GDestroyNotify destroy, gpointer owner)
{
  EvdLoopLocal *ll = g_new0 (EvdLoopLocal, 1);

  ll->make = make;
  ll->destroy = destroy;
  ll->owner = owner;
  g_mutex_init (&ll->lock);
  ll->made = g_ptr_array_new ();
  return ll;
}

gpointer
evd_loop_local_peek (EvdLoopLocal *ll, EvdLoop *loop)
{
  guint i = evd_loop_index (loop);

  g_return_val_if_fail (i < EVD_LOOP_LOCAL_MAX_LOOPS, NULL);
  return ll->objects[i];
}

gpointer
evd_loop_local_get (EvdLoopLocal *ll, EvdLoop *loop)
{
  guint i = evd_loop_index (loop);
  EvdLoopLocalEntry *e;

  g_return_val_if_fail (i < EVD_LOOP_LOCAL_MAX_LOOPS, NULL);
  if (ll->objects[i] != NULL)
    return ll->objects[i];
  e = g_new0 (EvdLoopLocalEntry, 1);
  e->loop = evd_loop_ref (loop);
  e->object = ll->make (loop, ll->owner);
  e->destroy = ll->destroy;
  ll->objects[i] = e->object;
  g_mutex_lock (&ll->lock);
  g_ptr_array_add (ll->made, e);
  g_mutex_unlock (&ll->lock);
  return e->object;
}

void
evd_loop_local_foreach (EvdLoopLocal *ll, GFunc fn, gpointer data)
{
  g_mutex_lock (&ll->lock);
  for (guint i = 0; i < ll->made->len; i++)
    fn (((EvdLoopLocalEntry *) ll->made->pdata[i])->object, data);
  g_mutex_unlock (&ll->lock);
}

guint
evd_loop_local_count (EvdLoopLocal *ll)
{
  guint n;

  g_mutex_lock (&ll->lock);
  n = ll->made->len;
  g_mutex_unlock (&ll->lock);
  return n;
}

static void
evd_loop_local_destroy_entry (gpointer data)
{
  EvdLoopLocalEntry *e = data;

  e->destroy (e->object);
  g_free (e);
}

void
evd_loop_local_free (EvdLoopLocal *ll)
{
  if (ll == NULL)
    return;
  for (guint i = 0; i < ll->made->len; i++) {
    EvdLoopLocalEntry *e = ll->made->pdata[i];
    EvdLoop *loop = e->loop;

    /* Posted, then the reference dropped: on a running loop the task runs there later; on a
     * stopped one, whoever drops the last reference (maybe this very unref) runs it. */
    evd_loop_post (loop, evd_loop_local_destroy_entry, e);
    evd_loop_unref (loop);
  }
  g_ptr_array_unref (ll->made);
  g_mutex_clear (&ll->lock);
  g_free (ll);
}

/* test_loop_local: per-loop objects (rpc/evd_loop_local.c) and loop references: an object
 * is made on its loop's thread at the first get and destroyed there when the set is freed; a
 * set freed after its loop stopped still destroys every object, once, on the freeing thread,
 * and the loop's base lives until then. */
#include <event2/thread.h>

#include "evd_loop_local.h"

typedef struct {
  EvdLoop *loop;
  gint made;                /* atomic */
  gint destroyed;           /* atomic */
  gboolean made_on_loop;
  gboolean destroyed_on_loop;
  gboolean base_alive_at_destroy;
} Owner;

typedef struct {
  Owner *owner;
  EvdLoop *loop;
  struct event *timer;      /* an event of the loop's base, freed by destroy: needs the base */
} Object;

static void
on_timer (evutil_socket_t fd, short what, void *arg)
{
  (void) fd, (void) what, (void) arg;
}

static gpointer
make_object (EvdLoop *loop, gpointer owner)
{
  Owner *o = owner;
  Object *obj = g_new0 (Object, 1);

  obj->owner = o;
  obj->loop = loop;
  obj->timer = evtimer_new (evd_loop_base (loop), on_timer, obj);
  o->made_on_loop = evd_loop_is_current (loop);
  g_atomic_int_inc (&o->made);
  return obj;
}

static void
destroy_object (gpointer data)
{
  Object *obj = data;

  obj->owner->destroyed_on_loop = evd_loop_is_current (obj->loop);
  obj->owner->base_alive_at_destroy = evd_loop_base (obj->loop) != NULL;
  event_free (obj->timer);  /* ASan: the base must not be freed yet */
  g_atomic_int_inc (&obj->owner->destroyed);
  g_free (obj);
}

typedef struct {
  EvdLoopLocal *ll;
  EvdLoop *loop;
  gpointer first, second;
  gint done;                /* atomic */
} GetTwice;

static void
on_get_twice (gpointer data)
{
  GetTwice *g = data;

  g->first = evd_loop_local_get (g->ll, g->loop);
  g->second = evd_loop_local_get (g->ll, g->loop);
  g_atomic_int_set (&g->done, 1);
}

static void
wait_for (gint *counter, gint value)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (g_atomic_int_get (counter) < value && g_get_monotonic_time () < deadline)
    g_usleep (1000);
  g_assert_cmpint (g_atomic_int_get (counter), ==, value);
}

static void
count_object (gpointer object, gpointer data)
{
  (void) object;
  (*(int *) data)++;
}

static void
test_made_and_destroyed_on_the_loop (void)
{
  Owner o = { 0 };
  EvdLoopLocal *ll;
  GetTwice g = { 0 };
  int seen = 0;

  o.loop = evd_loop_new (3, NULL);
  g_assert_true (evd_loop_start (o.loop, NULL));
  ll = evd_loop_local_new (make_object, destroy_object, &o);
  g_assert_cmpuint (evd_loop_local_count (ll), ==, 0);
  g = (GetTwice) { ll, o.loop, NULL, NULL, 0 };
  evd_loop_post (o.loop, on_get_twice, &g);
  wait_for (&g.done, 1);
  g_assert_nonnull (g.first);
  g_assert_true (g.first == g.second);      /* made once */
  g_assert_cmpint (g_atomic_int_get (&o.made), ==, 1);
  g_assert_true (o.made_on_loop);
  evd_loop_local_foreach (ll, count_object, &seen);
  g_assert_cmpint (seen, ==, 1);
  g_assert_cmpuint (evd_loop_local_count (ll), ==, 1);

  evd_loop_local_free (ll);                  /* the loop runs: destroyed there, later */
  wait_for (&o.destroyed, 1);
  g_assert_true (o.destroyed_on_loop);
  evd_loop_quit (o.loop);
  evd_loop_free (o.loop);
  g_assert_cmpint (g_atomic_int_get (&o.destroyed), ==, 1);
}

static void
test_freed_after_the_loop_stopped (void)
{
  Owner o = { 0 };
  EvdLoopLocal *ll;
  GetTwice g = { 0 };

  o.loop = evd_loop_new (1, NULL);
  g_assert_true (evd_loop_start (o.loop, NULL));
  ll = evd_loop_local_new (make_object, destroy_object, &o);
  g = (GetTwice) { ll, o.loop, NULL, NULL, 0 };
  evd_loop_post (o.loop, on_get_twice, &g);
  wait_for (&g.done, 1);

  /* Shutdown's order: the server frees its loops before the backends' state goes. */
  evd_loop_quit (o.loop);
  evd_loop_free (o.loop);
  g_assert_cmpint (g_atomic_int_get (&o.destroyed), ==, 0);
  evd_loop_local_free (ll);                  /* drops the last reference: runs it here */
  g_assert_cmpint (g_atomic_int_get (&o.destroyed), ==, 1);
  g_assert_true (o.destroyed_on_loop);       /* the freeing thread is the loop's now */
  g_assert_true (o.base_alive_at_destroy);
}

static void
test_unused_set_frees_nothing (void)
{
  Owner o = { 0 };
  EvdLoopLocal *ll = evd_loop_local_new (make_object, destroy_object, &o);

  o.loop = evd_loop_new (2, NULL);
  g_assert_null (evd_loop_local_peek (ll, o.loop));
  evd_loop_local_free (ll);
  evd_loop_free (o.loop);
  g_assert_cmpint (o.made, ==, 0);
  g_assert_cmpint (o.destroyed, ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  evthread_use_pthreads ();
  g_test_add_func ("/loop-local/made-and-destroyed-on-the-loop", test_made_and_destroyed_on_the_loop);
  g_test_add_func ("/loop-local/freed-after-the-loop-stopped", test_freed_after_the_loop_stopped);
  g_test_add_func ("/loop-local/unused-set-frees-nothing", test_unused_set_frees_nothing);
  return g_test_run ();
}

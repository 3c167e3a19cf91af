/* evd_coalesce: shared executions of identical calls (see evd_coalesce.h). */
#include "evd_coalesce.h"

struct _EvdCoalesce {
  GMutex lock;
  GHashTable *open;         /* GBytes key -> EvdCoalesceEntry (borrowed: closing removes it) */
};

struct _EvdCoalesceEntry {
  gint refs;                /* atomic */
  EvdCoalesce *table;       /* NULL: private */
  GMutex own_lock;          /* a private entry's */
  GMutex *lock;             /* the table's, or own_lock */
  GBytes *key;
  gboolean closed;
  GPtrArray *waiters;
  gpointer data;
  GDestroyNotify destroy;
};

EvdCoalesce *
evd_coalesce_new (void)
{
  EvdCoalesce *c = g_new0 (EvdCoalesce, 1);

  g_mutex_init (&c->lock);
  c->open = g_hash_table_new (g_bytes_hash, g_bytes_equal);
  return c;
}

void
evd_coalesce_free (EvdCoalesce *c)
{
  if (c == NULL)
    return;
  g_warn_if_fail (g_hash_table_size (c->open) == 0);
  g_hash_table_unref (c->open);
  g_mutex_clear (&c->lock);
  g_free (c);
}

EvdCoalesceEntry *
evd_coalesce_entry_ref (EvdCoalesceEntry *e)
{
  g_atomic_int_inc (&e->refs);
  return e;
}

void
evd_coalesce_entry_unref (EvdCoalesceEntry *e)
{
  if (e == NULL || !g_atomic_int_dec_and_test (&e->refs))
    return;
  if (e->destroy != NULL)
    e->destroy (e->data);
  g_bytes_unref (e->key);
  g_ptr_array_unref (e->waiters);
  g_mutex_clear (&e->own_lock);
  g_free (e);
}

EvdCoalesceEntry *
evd_coalesce_join (EvdCoalesce *c, GBytes *key, gpointer waiter,
                   gpointer (*make) (gpointer make_data), gpointer make_data,
                   GDestroyNotify destroy, gboolean *created)
{
  EvdCoalesceEntry *e = NULL;

  if (c != NULL) {
    g_mutex_lock (&c->lock);
    e = g_hash_table_lookup (c->open, key);
  }
  *created = e == NULL;
  if (e == NULL) {
    e = g_new0 (EvdCoalesceEntry, 1);
    e->refs = 1;  /* the work's */
    e->table = c;
    g_mutex_init (&e->own_lock);
    e->lock = c != NULL ? &c->lock : &e->own_lock;
    e->key = g_bytes_ref (key);
    e->waiters = g_ptr_array_new ();
    e->data = make (make_data);
    e->destroy = destroy;
    if (c != NULL)
      g_hash_table_insert (c->open, e->key, e);
  }
  g_ptr_array_add (e->waiters, waiter);
  evd_coalesce_entry_ref (e);
  if (c != NULL)
    g_mutex_unlock (&c->lock);
  return e;
}

/* Under the lock. */
static void
evd_coalesce_close_locked (EvdCoalesceEntry *e)
{
  e->closed = TRUE;
  if (e->table != NULL && g_hash_table_lookup (e->table->open, e->key) == e)
    g_hash_table_remove (e->table->open, e->key);
}

EvdCoalesceLeave
evd_coalesce_leave (EvdCoalesceEntry *e, gpointer waiter)
{
  EvdCoalesceLeave r;

  g_mutex_lock (e->lock);
  if (e->closed) {
    r = EVD_COALESCE_CLOSED;
  } else {
    g_ptr_array_remove_fast (e->waiters, waiter);
    r = e->waiters->len > 0 ? EVD_COALESCE_LEFT : EVD_COALESCE_LAST;
    if (r == EVD_COALESCE_LAST)
      evd_coalesce_close_locked (e);
  }
  g_mutex_unlock (e->lock);
  return r;
}

GPtrArray *
evd_coalesce_close (EvdCoalesceEntry *e)
{
  GPtrArray *waiters = NULL;

  g_mutex_lock (e->lock);
  if (!e->closed) {
    evd_coalesce_close_locked (e);
    waiters = e->waiters;
    e->waiters = g_ptr_array_new ();
  }
  g_mutex_unlock (e->lock);
  return waiters;
}

gpointer
evd_coalesce_entry_data (EvdCoalesceEntry *e)
{
  return e->data;
}

guint
evd_coalesce_entry_waiters (EvdCoalesceEntry *e)
{
  guint n;

  g_mutex_lock (e->lock);
  n = e->waiters->len;
  g_mutex_unlock (e->lock);
  return n;
}

guint
evd_coalesce_size (EvdCoalesce *c)
{
  guint n;

  g_mutex_lock (&c->lock);
  n = g_hash_table_size (c->open);
  g_mutex_unlock (&c->lock);
  return n;
}

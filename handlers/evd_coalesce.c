/* evd_coalesce: shared executions of identical calls (see evd_coalesce.h). */
#include "evd_coalesce.h"

#include <string.h>

/* Waiters an entry holds without a separate array: most calls share with nobody. */
#define EVD_COALESCE_INLINE_WAITERS 4

/* A lookup's table is split by key hash so that two loops joining different keys of one
 * lookup rarely meet on a lock: a lock held by a thread the scheduler preempted makes the
 * other loop sleep in the kernel, which a busy machine does often. */
#define EVD_COALESCE_SHARDS 16

/* The hash table's key, inside its entry; a lookup probes with one on the stack. */
typedef struct {
  const guint8 *data;
  gsize len;
  guint hash;
} EvdCoalesceKey;

typedef struct {
  GMutex lock;
  GHashTable *open;         /* EvdCoalesceKey * (in its entry) -> EvdCoalesceEntry */
} EvdCoalesceShard;

struct _EvdCoalesce {
  EvdCoalesceShard shards[EVD_COALESCE_SHARDS];
};

struct _EvdCoalesceEntry {
  EvdCoalesceKey key;       /* first: the table's key points here */
  gint refs;                /* atomic */
  EvdCoalesceShard *table;  /* NULL: private */
  GMutex own_lock;          /* a private entry's */
  GMutex *lock;             /* the table's, or own_lock */
  gboolean closed;
  gpointer *waiters;        /* `inline_waiters` until it outgrows them */
  guint n_waiters, size;
  gpointer inline_waiters[EVD_COALESCE_INLINE_WAITERS];
  gpointer data;            /* in this block, after the struct */
  GDestroyNotify destroy;
};

static guint
evd_coalesce_key_hash (gconstpointer k)
{
  return ((const EvdCoalesceKey *) k)->hash;
}

static gboolean
evd_coalesce_key_equal (gconstpointer a, gconstpointer b)
{
  const EvdCoalesceKey *x = a, *y = b;

  return x->hash == y->hash && x->len == y->len && memcmp (x->data, y->data, x->len) == 0;
}

/* FNV-1a: keys are a few dozen bytes. */
static guint
evd_coalesce_hash (const guint8 *p, gsize len)
{
  guint32 h = 2166136261u;

  for (gsize i = 0; i < len; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}

EvdCoalesce *
evd_coalesce_new (void)
{
  EvdCoalesce *c = g_new0 (EvdCoalesce, 1);

  for (guint i = 0; i < EVD_COALESCE_SHARDS; i++) {
    g_mutex_init (&c->shards[i].lock);
    c->shards[i].open = g_hash_table_new (evd_coalesce_key_hash, evd_coalesce_key_equal);
  }
  return c;
}

void
evd_coalesce_free (EvdCoalesce *c)
{
  if (c == NULL)
    return;
  for (guint i = 0; i < EVD_COALESCE_SHARDS; i++) {
    g_warn_if_fail (g_hash_table_size (c->shards[i].open) == 0);
    g_hash_table_unref (c->shards[i].open);
    g_mutex_clear (&c->shards[i].lock);
  }
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
  if (e->waiters != e->inline_waiters)
    g_free (e->waiters);
  g_mutex_clear (&e->own_lock);
  g_free (e);
}

/* Under the lock. */
static void
evd_coalesce_add_waiter (EvdCoalesceEntry *e, gpointer waiter)
{
  if (e->n_waiters == e->size) {
    e->size *= 2;
    if (e->waiters == e->inline_waiters)
      e->waiters = memcpy (g_new (gpointer, e->size), e->inline_waiters,
                           sizeof e->inline_waiters);
    else
      e->waiters = g_renew (gpointer, e->waiters, e->size);
  }
  e->waiters[e->n_waiters++] = waiter;
}

static EvdCoalesceEntry *
evd_coalesce_entry_new (EvdCoalesceShard *c, const EvdCoalesceKey *key, gsize data_size)
{
  /* The block: the entry, its data (aligned as any struct), its key's bytes. */
  gsize data_at = (sizeof (EvdCoalesceEntry) + 15) & ~(gsize) 15;
  gsize key_at = data_at + ((data_size + 15) & ~(gsize) 15);
  EvdCoalesceEntry *e = g_malloc0 (key_at + key->len);

  e->refs = 1;  /* the work's */
  e->table = c;
  g_mutex_init (&e->own_lock);
  e->lock = c != NULL ? &c->lock : &e->own_lock;
  e->waiters = e->inline_waiters;
  e->size = EVD_COALESCE_INLINE_WAITERS;
  e->data = (char *) e + data_at;
  e->key.data = memcpy ((char *) e + key_at, key->data, key->len);
  e->key.len = key->len;
  e->key.hash = key->hash;
  return e;
}

EvdCoalesceEntry *
evd_coalesce_join (EvdCoalesce *c, const void *key, gsize key_len, gpointer waiter,
                   gsize data_size, void (*init) (gpointer data, gpointer init_data),
                   gpointer init_data, GDestroyNotify destroy, gboolean *created)
{
  EvdCoalesceKey probe = { key, key_len, evd_coalesce_hash (key, key_len) };
  EvdCoalesceShard *shard = c != NULL ? &c->shards[probe.hash % EVD_COALESCE_SHARDS] : NULL;
  EvdCoalesceEntry *e = NULL;

  if (shard != NULL) {
    g_mutex_lock (&shard->lock);
    e = g_hash_table_lookup (shard->open, &probe);
  }
  *created = e == NULL;
  if (e == NULL) {
    e = evd_coalesce_entry_new (shard, &probe, data_size);
    init (e->data, init_data);
    e->destroy = destroy;
    if (shard != NULL)
      g_hash_table_insert (shard->open, &e->key, e);
  }
  evd_coalesce_add_waiter (e, waiter);
  evd_coalesce_entry_ref (e);
  if (shard != NULL)
    g_mutex_unlock (&shard->lock);
  return e;
}

/* Under the lock. */
static void
evd_coalesce_close_locked (EvdCoalesceEntry *e)
{
  e->closed = TRUE;
  if (e->table != NULL && g_hash_table_lookup (e->table->open, &e->key) == e)
    g_hash_table_remove (e->table->open, &e->key);
}

EvdCoalesceLeave
evd_coalesce_leave (EvdCoalesceEntry *e, gpointer waiter)
{
  EvdCoalesceLeave r;

  g_mutex_lock (e->lock);
  if (e->closed) {
    r = EVD_COALESCE_CLOSED;
  } else {
    for (guint i = 0; i < e->n_waiters; i++)
      if (e->waiters[i] == waiter) {
        e->waiters[i] = e->waiters[--e->n_waiters];
        break;
      }
    r = e->n_waiters > 0 ? EVD_COALESCE_LEFT : EVD_COALESCE_LAST;
    if (r == EVD_COALESCE_LAST)
      evd_coalesce_close_locked (e);
  }
  g_mutex_unlock (e->lock);
  return r;
}

gboolean
evd_coalesce_close (EvdCoalesceEntry *e)
{
  gboolean closed_now;

  g_mutex_lock (e->lock);
  closed_now = !e->closed;
  if (closed_now)
    evd_coalesce_close_locked (e);
  g_mutex_unlock (e->lock);
  return closed_now;
}

guint
evd_coalesce_entry_n_waiters (EvdCoalesceEntry *e)
{
  guint n;

  g_mutex_lock (e->lock);
  n = e->n_waiters;
  g_mutex_unlock (e->lock);
  return n;
}

gpointer
evd_coalesce_entry_waiter (EvdCoalesceEntry *e, guint i)
{
  return e->waiters[i];
}

gpointer
evd_coalesce_entry_data (EvdCoalesceEntry *e)
{
  return e->data;
}

const void *
evd_coalesce_entry_key (EvdCoalesceEntry *e, gsize *len)
{
  *len = e->key.len;
  return e->key.data;
}

guint
evd_coalesce_size (EvdCoalesce *c)
{
  guint n = 0;

  for (guint i = 0; i < EVD_COALESCE_SHARDS; i++) {
    g_mutex_lock (&c->shards[i].lock);
    n += g_hash_table_size (c->shards[i].open);
    g_mutex_unlock (&c->shards[i].lock);
  }
  return n;
}

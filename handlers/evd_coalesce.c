/* evd_coalesce: shared executions of identical calls (see evd_coalesce.h). */
#include "evd_coalesce.h"

#include <string.h>

/* Waiters an entry holds without a separate array: most calls share with nobody. */
#define EVD_COALESCE_INLINE_WAITERS 4

/* A lookup's table is split by key hash so that two loops joining different keys of one
 * lookup rarely meet on a lock: a lock held by a thread the scheduler preempted makes the
 * other loop sleep in the kernel, which a busy machine does often. */
#define EVD_COALESCE_SHARDS 16

/* Chains per shard: a shard's open entries are about the calls of its lookup in flight at
 * once, a few dozen per loop; chains stay short for thousands. */
#define EVD_COALESCE_BUCKETS 64

/* Entry blocks of up to this size (an EvdXreqFlight and a key of a few hundred bytes) are
 * kept for reuse by the thread that frees them, up to EVD_COALESCE_SPARE_BLOCKS: a busy loop
 * has more entries open than malloc's per-thread cache keeps of one size, and its slow path
 * cost the uncontended call more than the table did. */
#define EVD_COALESCE_BLOCK_BYTES 1024
#define EVD_COALESCE_SPARE_BLOCKS 64

/* An entry's key, inside its entry; a lookup probes with one on the stack. */
typedef struct {
  const guint8 *data;
  gsize len;
  guint hash;
} EvdCoalesceKey;

/* An intrusive hash table: entries chain through their `next`, so that opening and closing
 * an entry allocates nothing (GHashTable cost the uncontended call as much as the rest). */
typedef struct {
  GMutex lock;
  EvdCoalesceEntry *buckets[EVD_COALESCE_BUCKETS];
  guint size;
} EvdCoalesceShard;

struct _EvdCoalesce {
  guint64 seed;             /* random per table: no one can choose keys that share a chain */
  EvdCoalesceShard shards[EVD_COALESCE_SHARDS];
};

/* A waiter and the deadline it joined with: the entry's deadline is the latest of those still
 * in it, recomputed when the one with it leaves. */
typedef struct {
  gpointer waiter;
  gint64 deadline_us;
} EvdCoalesceWaiter;

struct _EvdCoalesceEntry {
  EvdCoalesceKey key;
  EvdCoalesceEntry *next;   /* in its bucket, while open in a table */
  gboolean in_table;
  gsize block_size;         /* EVD_COALESCE_BLOCK_BYTES when reusable */
  gint refs;                /* atomic */
  EvdCoalesceShard *table;  /* NULL: private */
  GMutex own_lock;          /* a private entry's */
  GMutex *lock;             /* the table's, or own_lock */
  gboolean closed;
  gint64 deadline_us;       /* the waiters' latest; set under the lock (raised by a join,
                             * lowered by a leave); read atomically without it */
  EvdCoalesceWaiter *waiters;  /* `inline_waiters` until it outgrows them */
  guint n_waiters, size;
  EvdCoalesceWaiter inline_waiters[EVD_COALESCE_INLINE_WAITERS];
  gpointer data;            /* in this block, after the struct */
  GDestroyNotify destroy;
};

static gboolean
evd_coalesce_key_equal (const EvdCoalesceKey *x, const EvdCoalesceKey *y)
{
  return x->hash == y->hash && x->len == y->len && memcmp (x->data, y->data, x->len) == 0;
}

/* Eight bytes at a time, each mixed by a multiply and a shift (keys are a few dozen bytes;
 * FNV's byte at a time cost more than the rest of the key). */
static guint
evd_coalesce_hash (guint64 seed, const guint8 *p, gsize len)
{
  guint64 h = seed ^ (len * 0x9e3779b97f4a7c15ull), w;

  for (; len >= 8; p += 8, len -= 8) {
    memcpy (&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  if (len > 0) {
    w = 0;
    memcpy (&w, p, len);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  }
  h ^= h >> 29;
  return (guint) (h ^ (h >> 32));
}

/* ---- Entry blocks kept for reuse (per thread; freed with it). ---- */

typedef struct {
  guint n;
  gpointer blocks[EVD_COALESCE_SPARE_BLOCKS];
} EvdCoalesceSpares;

static void
evd_coalesce_spares_free (gpointer data)
{
  EvdCoalesceSpares *s = data;

  for (guint i = 0; i < s->n; i++)
    g_free (s->blocks[i]);
  g_free (s);
}

static GPrivate evd_coalesce_spares = G_PRIVATE_INIT (evd_coalesce_spares_free);

static EvdCoalesceSpares *
evd_coalesce_spares_here (void)
{
  EvdCoalesceSpares *s = g_private_get (&evd_coalesce_spares);

  if (s == NULL) {
    s = g_new0 (EvdCoalesceSpares, 1);
    g_private_set (&evd_coalesce_spares, s);
  }
  return s;
}

/* `size` bytes, the first `zeroed` of them zero. */
static gpointer
evd_coalesce_block_new (gsize size, gsize zeroed, gsize *block_size)
{
  EvdCoalesceSpares *s;
  gpointer b;

  if (size > EVD_COALESCE_BLOCK_BYTES) {
    *block_size = size;
    return g_malloc0 (size);
  }
  *block_size = EVD_COALESCE_BLOCK_BYTES;
  s = evd_coalesce_spares_here ();
  b = s->n > 0 ? s->blocks[--s->n] : g_malloc (EVD_COALESCE_BLOCK_BYTES);
  return memset (b, 0, zeroed);
}

static void
evd_coalesce_block_free (gpointer b, gsize block_size)
{
  EvdCoalesceSpares *s;

  if (block_size == EVD_COALESCE_BLOCK_BYTES &&
      (s = evd_coalesce_spares_here ())->n < EVD_COALESCE_SPARE_BLOCKS) {
    s->blocks[s->n++] = b;
    return;
  }
  g_free (b);
}

/* ---- The table. ---- */

EvdCoalesce *
evd_coalesce_new (void)
{
  EvdCoalesce *c = g_new0 (EvdCoalesce, 1);

  c->seed = ((guint64) g_random_int () << 32) | g_random_int ();
  for (guint i = 0; i < EVD_COALESCE_SHARDS; i++)
    g_mutex_init (&c->shards[i].lock);
  return c;
}

void
evd_coalesce_free (EvdCoalesce *c)
{
  if (c == NULL)
    return;
  for (guint i = 0; i < EVD_COALESCE_SHARDS; i++) {
    g_warn_if_fail (c->shards[i].size == 0);
    g_mutex_clear (&c->shards[i].lock);
  }
  g_free (c);
}

static EvdCoalesceEntry **
evd_coalesce_bucket (EvdCoalesceShard *shard, guint hash)
{
  return &shard->buckets[(hash / EVD_COALESCE_SHARDS) % EVD_COALESCE_BUCKETS];
}

/* Under the shard's lock. */
static EvdCoalesceEntry *
evd_coalesce_find (EvdCoalesceShard *shard, const EvdCoalesceKey *key)
{
  for (EvdCoalesceEntry *e = *evd_coalesce_bucket (shard, key->hash); e != NULL; e = e->next)
    if (evd_coalesce_key_equal (&e->key, key))
      return e;
  return NULL;
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
  if (e->table == NULL)
    g_mutex_clear (&e->own_lock);
  evd_coalesce_block_free (e, e->block_size);
}

/* Under the lock. */
static void
evd_coalesce_add_waiter (EvdCoalesceEntry *e, gpointer waiter, gint64 deadline_us)
{
  if (deadline_us > e->deadline_us)
    __atomic_store_n (&e->deadline_us, deadline_us, __ATOMIC_RELAXED);
  if (e->n_waiters == e->size) {
    e->size *= 2;
    if (e->waiters == e->inline_waiters)
      e->waiters = memcpy (g_new (EvdCoalesceWaiter, e->size), e->inline_waiters,
                           sizeof e->inline_waiters);
    else
      e->waiters = g_renew (EvdCoalesceWaiter, e->waiters, e->size);
  }
  e->waiters[e->n_waiters++] = (EvdCoalesceWaiter) { waiter, deadline_us };
}

static EvdCoalesceEntry *
evd_coalesce_entry_new (EvdCoalesceShard *c, const EvdCoalesceKey *key, gsize data_size)
{
  /* The block: the entry, its data (aligned as any struct), its key's bytes. */
  gsize data_at = (sizeof (EvdCoalesceEntry) + 15) & ~(gsize) 15;
  gsize key_at = data_at + ((data_size + 15) & ~(gsize) 15);
  gsize block_size;
  EvdCoalesceEntry *e = evd_coalesce_block_new (key_at + key->len, key_at, &block_size);

  e->block_size = block_size;
  e->refs = 1;  /* the work's */
  e->table = c;
  if (c == NULL)
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
                   gint64 deadline_us, gsize data_size,
                   void (*init) (gpointer data, gpointer init_data), gpointer init_data,
                   GDestroyNotify destroy, gboolean *created)
{
  EvdCoalesceKey probe = { key, key_len, c != NULL ? evd_coalesce_hash (c->seed, key, key_len)
                                                     : 0 };
  EvdCoalesceShard *shard = c != NULL ? &c->shards[probe.hash % EVD_COALESCE_SHARDS] : NULL;
  EvdCoalesceEntry *e = NULL;

  if (shard != NULL) {
    g_mutex_lock (&shard->lock);
    e = evd_coalesce_find (shard, &probe);
  }
  *created = e == NULL;
  if (e == NULL) {
    e = evd_coalesce_entry_new (shard, &probe, data_size);
    e->deadline_us = G_MININT64;
    init (e->data, init_data);
    e->destroy = destroy;
    if (shard != NULL) {
      EvdCoalesceEntry **bucket = evd_coalesce_bucket (shard, probe.hash);

      e->next = *bucket;
      *bucket = e;
      e->in_table = TRUE;
      shard->size++;
    }
  }
  evd_coalesce_add_waiter (e, waiter, deadline_us);
  evd_coalesce_entry_ref (e);
  if (shard != NULL)
    g_mutex_unlock (&shard->lock);
  return e;
}

/* Under the lock: no one joins it any more. */
static void
evd_coalesce_unlink (EvdCoalesceEntry *e)
{
  if (e->in_table) {
    EvdCoalesceEntry **at = evd_coalesce_bucket (e->table, e->key.hash);

    while (*at != e)
      at = &(*at)->next;
    *at = e->next;
    e->in_table = FALSE;
    e->table->size--;
  }
}

/* Under the lock. */
static void
evd_coalesce_close_locked (EvdCoalesceEntry *e)
{
  e->closed = TRUE;
  evd_coalesce_unlink (e);
}

/* Under the lock: a waiter with the entry's deadline left. The work is not to run past the
 * deadline of everyone still waiting (it had kept running, and retrying, to a deadline no
 * one waited for any more). A decision sealed from the old, later deadline still holds:
 * the waiters it answers have no more time than it saw. */
static void
evd_coalesce_lower_deadline (EvdCoalesceEntry *e)
{
  gint64 latest = G_MININT64;

  for (guint i = 0; i < e->n_waiters; i++)
    latest = MAX (latest, e->waiters[i].deadline_us);
  __atomic_store_n (&e->deadline_us, latest, __ATOMIC_RELAXED);
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
      if (e->waiters[i].waiter == waiter) {
        gint64 deadline_us = e->waiters[i].deadline_us;

        e->waiters[i] = e->waiters[--e->n_waiters];
        /* The last one's deadline stays: nothing is decided from it any more. */
        if (deadline_us == e->deadline_us && e->n_waiters > 0)
          evd_coalesce_lower_deadline (e);
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

gboolean
evd_coalesce_seal (EvdCoalesceEntry *e, gint64 deadline_us)
{
  gboolean sealed;

  g_mutex_lock (e->lock);
  sealed = e->closed || e->deadline_us <= deadline_us;
  if (sealed)
    evd_coalesce_unlink (e);
  g_mutex_unlock (e->lock);
  return sealed;
}

gint64
evd_coalesce_entry_deadline (EvdCoalesceEntry *e)
{
  return __atomic_load_n (&e->deadline_us, __ATOMIC_RELAXED);
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
  return e->waiters[i].waiter;
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
    n += c->shards[i].size;
    g_mutex_unlock (&c->shards[i].lock);
  }
  return n;
}

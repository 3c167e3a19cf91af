/* evd_cache: per-lookup result caches under a process-wide bound (see evd_cache.h). */
#include "evd_cache.h"

#include "evd_response.h"

/* 64 MiB unless [server] cache_max_bytes says otherwise. */
static EvdCacheBudget evd_cache_process = { 64 * 1024 * 1024, 0 };

typedef struct {
  GBytes *key;
  EvdRows *rows;
  gsize bytes;
  gint64 expires_us;
  GList link;               /* in the cache's LRU, most recent at the head */
} EvdCacheEntry;

struct _EvdCache {
  EvdCacheBudget *budget;
  gint64 max_bytes;
  gint64 ttl_us, stale_us;
  GMutex lock;
  GHashTable *entries;      /* GBytes key -> EvdCacheEntry (the table frees them) */
  GQueue lru;
  gint64 bytes;
  guint64 hits, misses, stale, evictions;
};

EvdCacheBudget *
evd_cache_budget_process (void)
{
  return &evd_cache_process;
}

gsize
evd_cache_rows_bytes (const EvdRows *rows)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  EvdWriter w;

  evd_writer_init (&w, out, EVD_PROTO_BINARY);
  evd_response_write_rows (&w, rows);
  return out->len;
}

static void
evd_cache_entry_free (gpointer data)
{
  EvdCacheEntry *e = data;

  g_bytes_unref (e->key);
  evd_rows_unref (e->rows);
  g_free (e);
}

EvdCache *
evd_cache_new (EvdCacheBudget *budget, gint64 max_bytes, gint64 ttl_us, gint64 stale_us)
{
  EvdCache *c = g_new0 (EvdCache, 1);

  c->budget = budget;
  c->max_bytes = max_bytes;
  c->ttl_us = ttl_us;
  c->stale_us = stale_us;
  g_mutex_init (&c->lock);
  c->entries = g_hash_table_new_full (g_bytes_hash, g_bytes_equal, NULL, evd_cache_entry_free);
  g_queue_init (&c->lru);
  return c;
}

/* Under the lock. */
static void
evd_cache_remove (EvdCache *c, EvdCacheEntry *e)
{
  g_queue_unlink (&c->lru, &e->link);
  c->bytes -= (gint64) e->bytes;
  __atomic_fetch_sub (&c->budget->bytes, (gint64) e->bytes, __ATOMIC_RELAXED);
  g_hash_table_remove (c->entries, e->key);
}

void
evd_cache_free (EvdCache *c)
{
  if (c == NULL)
    return;
  while (c->lru.tail != NULL)
    evd_cache_remove (c, c->lru.tail->data);
  g_hash_table_unref (c->entries);
  g_mutex_clear (&c->lock);
  g_free (c);
}

EvdRows *
evd_cache_get (EvdCache *c, GBytes *key, gint64 now_us, EvdRows **stale)
{
  EvdCacheEntry *e;
  EvdRows *rows = NULL;

  g_mutex_lock (&c->lock);
  e = g_hash_table_lookup (c->entries, key);
  if (e != NULL && now_us < e->expires_us) {
    g_queue_unlink (&c->lru, &e->link);
    g_queue_push_head_link (&c->lru, &e->link);
    rows = evd_rows_ref (e->rows);
    c->hits++;
  } else {
    c->misses++;
    if (e != NULL && now_us >= e->expires_us + c->stale_us)
      evd_cache_remove (c, e);
    else if (e != NULL && stale != NULL)
      *stale = evd_rows_ref (e->rows);
  }
  g_mutex_unlock (&c->lock);
  return rows;
}

/* Under the lock: takes `bytes` of the process's budget, evicting this cache's oldest while
 * they would not fit within both bounds; FALSE (nothing taken) when they do not fit even with
 * none left. The check and the take are one atomic step: other caches take from the budget
 * at the same time under locks of their own, and a check followed by an add let two of them
 * both take the last room. */
static gboolean
evd_cache_make_room (EvdCache *c, gsize bytes)
{
  for (;;) {
    gint64 used = __atomic_load_n (&c->budget->bytes, __ATOMIC_RELAXED);

    if (c->bytes + (gint64) bytes <= c->max_bytes &&
        used + (gint64) bytes <= __atomic_load_n (&c->budget->max_bytes, __ATOMIC_RELAXED)) {
      if (__atomic_compare_exchange_n (&c->budget->bytes, &used, used + (gint64) bytes, FALSE,
                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return TRUE;
      continue;  /* another cache took or gave back some meanwhile: look again */
    }
    if (c->lru.tail == NULL)
      return FALSE;
    evd_cache_remove (c, c->lru.tail->data);
    c->evictions++;
  }
}

void
evd_cache_put (EvdCache *c, GBytes *key, EvdRows *rows, gint64 now_us)
{
  gsize bytes = evd_cache_rows_bytes (rows);  /* outside the lock: it writes the table */
  EvdCacheEntry *e;

  g_mutex_lock (&c->lock);
  /* The older rows go even when the new ones are not kept: they must not be served (fresh
   * or stale) after a newer answer went out. */
  e = g_hash_table_lookup (c->entries, key);
  if (e != NULL)
    evd_cache_remove (c, e);
  /* Larger than the lookup's bound: never kept. */
  if ((gint64) bytes <= c->max_bytes && evd_cache_make_room (c, bytes)) {
    e = g_new0 (EvdCacheEntry, 1);
    e->key = g_bytes_ref (key);
    e->rows = evd_rows_ref (rows);
    e->bytes = bytes;
    e->expires_us = now_us + c->ttl_us;
    e->link.data = e;
    g_hash_table_insert (c->entries, e->key, e);
    g_queue_push_head_link (&c->lru, &e->link);
    c->bytes += (gint64) bytes;  /* the budget's share was taken by evd_cache_make_room */
  }
  g_mutex_unlock (&c->lock);
}

void
evd_cache_served_stale (EvdCache *c)
{
  g_mutex_lock (&c->lock);
  c->stale++;
  g_mutex_unlock (&c->lock);
}

void
evd_cache_stats (EvdCache *c, EvdCacheStats *out)
{
  g_mutex_lock (&c->lock);
  *out = (EvdCacheStats) {
    c->hits, c->misses, c->stale, c->evictions, g_hash_table_size (c->entries), c->bytes,
  };
  g_mutex_unlock (&c->lock);
}

/* evd_cache: a lookup's result cache: rows kept by key for `ttl`, least recently used first
 * out when the lookup's bytes or the process's are exceeded, and expired rows kept a while
 * longer (`stale`) to answer when a refresh fails.
 *
 * The key is what coalescing keys a call by (evd_xreq: params, and principal or attributes
 * where they matter); the value an EvdRows shared by reference, so a hit copies nothing. An
 * entry's bytes are its encoded table (what it costs on the wire, which is what a Table of
 * that size costs everywhere); an entry larger than the lookup's bound is not kept. Errors
 * are never cached (evd_xreq does not put them); tables with zero rows are.
 *
 * Every lookup has its own cache with its own lock, held for a hash lookup and a list move;
 * the process-wide bound ([server] cache_max_bytes) is an EvdCacheBudget of atomic bytes
 * shared by all of them: a lookup that would push it over evicts its own oldest entries
 * first, and keeps nothing new if that is not enough. The time is an argument, for tests.
 */
#pragma once

#include <glib.h>

#include "evd_rows.h"

G_BEGIN_DECLS

typedef struct {
  gint64 max_bytes;         /* atomic: [server] cache_max_bytes, set by each config generation */
  gint64 bytes;             /* atomic: held by every cache of the process */
} EvdCacheBudget;

/* The process's budget (all engine generations share it). */
EvdCacheBudget *evd_cache_budget_process (void);

typedef struct _EvdCache EvdCache;

typedef struct {
  guint64 hits, misses, stale, evictions, entries;
  gint64 bytes;
} EvdCacheStats;

EvdCache *evd_cache_new (EvdCacheBudget *budget, gint64 max_bytes, gint64 ttl_us,
                         gint64 stale_us);
/* Frees every entry and gives its bytes back to the budget. */
void evd_cache_free (EvdCache *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdCache, evd_cache_free)

/* The rows under `key` if fresh (a reference: a hit, counted). Else NULL (a miss, counted),
 * and when `stale` is not NULL and the entry expired less than stale_us ago, *stale gets its
 * rows (a reference) for evd_cache_served_stale later. An entry past that is dropped. */
EvdRows *evd_cache_get (EvdCache *c, GBytes *key, gint64 now_us, EvdRows **stale);
/* Keeps `rows` under `key` (takes its own reference), fresh from now until now + ttl. What was
 * under `key` goes, even when the rows are too large to keep. */
void evd_cache_put (EvdCache *c, GBytes *key, EvdRows *rows, gint64 now_us);
/* Stale rows went out in place of a failed refresh: counts it. */
void evd_cache_served_stale (EvdCache *c);
void evd_cache_stats (EvdCache *c, EvdCacheStats *out);
/* The encoded size of a table: what an entry costs. */
gsize evd_cache_rows_bytes (const EvdRows *rows);

G_END_DECLS

/* test_cache: handlers/evd_cache.c with a clock of the test's own: TTL, stale-if-error's
 * window, LRU by bytes (an entry's bytes being its encoded table), the lookup's bound and the
 * process's, and tables with zero rows. */
#include <string.h>

#include "evd_cache.h"

#define MS 1000

static EvdRows *
table (guint n_rows, guint text_len)
{
  static const char *const columns[] = { "id", "name" };
  EvdRows *t = evd_rows_new (2, columns);
  g_autofree char *text = g_strnfill (text_len, 'x');

  for (guint i = 0; i < n_rows; i++) {
    evd_rows_add_int (t, i);
    evd_rows_add_text (t, text, -1);
  }
  return t;
}

static GBytes *
key (const char *k)
{
  return g_bytes_new (k, strlen (k));
}

static void
test_ttl_and_stale (void)
{
  EvdCacheBudget budget = { 1 << 20, 0 };
  g_autoptr (EvdCache) c = evd_cache_new (&budget, 1 << 20, 1000 * MS, 500 * MS);
  g_autoptr (GBytes) k = key ("user=7");
  g_autoptr (EvdRows) rows = table (3, 10);
  gint64 t = 1000000 * MS;
  EvdRows *got, *stale = NULL;
  EvdCacheStats s;

  g_assert_null (evd_cache_get (c, k, t, &stale));
  g_assert_null (stale);
  evd_cache_put (c, k, rows, t);
  got = evd_cache_get (c, k, t + 1000 * MS - 1, &stale);
  g_assert_true (got == rows);  /* shared, not copied */
  g_assert_null (stale);
  evd_rows_unref (got);
  /* Expired at exactly its TTL: a miss that offers the stale rows. */
  g_assert_null (evd_cache_get (c, k, t + 1000 * MS, &stale));
  g_assert_true (stale == rows);
  g_clear_pointer (&stale, evd_rows_unref);
  g_assert_null (evd_cache_get (c, k, t + 1500 * MS - 1, &stale));
  g_assert_true (stale == rows);
  g_clear_pointer (&stale, evd_rows_unref);
  evd_cache_served_stale (c);
  /* Past stale_if_error_ms: gone. */
  g_assert_null (evd_cache_get (c, k, t + 1500 * MS, &stale));
  g_assert_null (stale);
  evd_cache_stats (c, &s);
  g_assert_cmpuint (s.hits, ==, 1);
  g_assert_cmpuint (s.misses, ==, 4);
  g_assert_cmpuint (s.stale, ==, 1);
  g_assert_cmpuint (s.entries, ==, 0);
  g_assert_cmpint (s.bytes, ==, 0);
  g_assert_cmpint (budget.bytes, ==, 0);
}

static void
test_lru_by_bytes (void)
{
  g_autoptr (EvdRows) rows = table (4, 100);
  gsize one = evd_cache_rows_bytes (rows);
  EvdCacheBudget budget = { 1 << 20, 0 };
  /* Room for three entries, not four. */
  g_autoptr (EvdCache) c = evd_cache_new (&budget, (gint64) (3 * one + one / 2), 60000 * MS, 0);
  g_autoptr (GBytes) a = key ("a"), b = key ("b"), cc = key ("c"), d = key ("d");
  EvdCacheStats s;
  EvdRows *got;

  g_assert_cmpuint (one, >, 400);
  evd_cache_put (c, a, rows, 0);
  evd_cache_put (c, b, rows, 1);
  evd_cache_put (c, cc, rows, 2);
  got = evd_cache_get (c, a, 3, NULL);  /* a is now the most recently used */
  g_assert_nonnull (got);
  evd_rows_unref (got);
  evd_cache_put (c, d, rows, 4);  /* b goes */
  g_assert_null (evd_cache_get (c, b, 5, NULL));
  for (guint i = 0; i < 3; i++) {
    GBytes *k = i == 0 ? a : i == 1 ? cc : d;
    got = evd_cache_get (c, k, 5, NULL);
    g_assert_nonnull (got);
    evd_rows_unref (got);
  }
  evd_cache_stats (c, &s);
  g_assert_cmpuint (s.evictions, ==, 1);
  g_assert_cmpuint (s.entries, ==, 3);
  g_assert_cmpint (s.bytes, ==, (gint64) (3 * one));
  g_assert_cmpint (budget.bytes, ==, (gint64) (3 * one));
}

static void
test_bounds (void)
{
  g_autoptr (EvdRows) small = table (1, 10);
  g_autoptr (EvdRows) big = table (100, 100);
  g_autoptr (EvdRows) empty = table (0, 0);
  gsize small_bytes = evd_cache_rows_bytes (small);
  /* The process may hold two small tables; each lookup more. */
  EvdCacheBudget budget = { (gint64) (2 * small_bytes), 0 };
  g_autoptr (EvdCache) c1 = evd_cache_new (&budget, 1000, 60000 * MS, 0);
  g_autoptr (EvdCache) c2 = evd_cache_new (&budget, 1000, 60000 * MS, 0);
  g_autoptr (GBytes) k1 = key ("1"), k2 = key ("2"), k3 = key ("3");
  EvdCacheStats s;
  EvdRows *got;

  /* Larger than the lookup's bound: never kept. */
  evd_cache_put (c1, k1, big, 0);
  g_assert_null (evd_cache_get (c1, k1, 1, NULL));
  /* Zero rows are an answer: kept. */
  evd_cache_put (c1, k3, empty, 0);
  got = evd_cache_get (c1, k3, 1, NULL);
  g_assert_nonnull (got);
  g_assert_cmpuint (evd_rows_n_rows (got), ==, 0);
  evd_rows_unref (got);
  evd_cache_free (g_steal_pointer (&c1));
  c1 = evd_cache_new (&budget, 1000, 60000 * MS, 0);
  /* The process's bound: c2 cannot push it over, and evicts its own oldest to stay within. */
  evd_cache_put (c1, k1, small, 0);
  evd_cache_put (c2, k1, small, 0);
  evd_cache_put (c2, k2, small, 1);
  g_assert_cmpint (budget.bytes, ==, (gint64) (2 * small_bytes));
  got = evd_cache_get (c2, k2, 2, NULL);
  g_assert_nonnull (got);
  evd_rows_unref (got);
  g_assert_null (evd_cache_get (c2, k1, 2, NULL));
  got = evd_cache_get (c1, k1, 2, NULL);  /* another lookup's entry is not taken */
  g_assert_nonnull (got);
  evd_rows_unref (got);
  evd_cache_stats (c2, &s);
  g_assert_cmpuint (s.evictions, ==, 1);
  evd_cache_free (g_steal_pointer (&c1));
  evd_cache_free (g_steal_pointer (&c2));
  g_assert_cmpint (budget.bytes, ==, 0);
}

/* A newer answer too large to keep still supersedes the entry it would have replaced: the
 * older rows are neither served fresh nor kept for stale-if-error (a caller who saw the new
 * answer would otherwise get the old one back when a refresh fails), as when the budget has
 * no room for it. */
static void
test_too_large_answer_supersedes (void)
{
  g_autoptr (EvdRows) small = table (1, 10);
  g_autoptr (EvdRows) big = table (100, 100);
  EvdCacheBudget budget = { 1 << 20, 0 };
  g_autoptr (EvdCache) c = evd_cache_new (&budget, 1000, 1000 * MS, 60000 * MS);
  g_autoptr (GBytes) k = key ("user=7");
  EvdRows *stale = NULL;
  EvdCacheStats s;

  g_assert_cmpuint (evd_cache_rows_bytes (big), >, 1000);
  evd_cache_put (c, k, small, 0);
  /* Expired: the refresh's answer is too large to keep. */
  g_assert_null (evd_cache_get (c, k, 1000 * MS, &stale));
  g_assert_true (stale == small);
  g_clear_pointer (&stale, evd_rows_unref);
  evd_cache_put (c, k, big, 1001 * MS);
  g_assert_null (evd_cache_get (c, k, 1002 * MS, &stale));
  g_assert_null (stale);
  evd_cache_stats (c, &s);
  g_assert_cmpuint (s.entries, ==, 0);
  g_assert_cmpint (s.bytes, ==, 0);
  g_assert_cmpint (budget.bytes, ==, 0);
  /* The same while fresh. */
  evd_cache_put (c, k, small, 2000 * MS);
  evd_cache_put (c, k, big, 2001 * MS);
  g_assert_null (evd_cache_get (c, k, 2002 * MS, NULL));
  g_assert_cmpint (budget.bytes, ==, 0);
}

/* Lookups on different loops put at once, each under its own lock: the process's bound
 * holds at every moment, as a third thread watching the budget sees. Room is taken from the
 * budget in one atomic step with the check; a check, then an add, let two puts that each saw
 * room for one entry both add theirs. */
typedef struct {
  EvdCacheBudget *budget;
  EvdCache *cache;
  EvdRows *rows;
  gint *stop;
  gint64 most;              /* the most the budget held, seen right after a put */
} TestPutter;

static gpointer
test_putter (gpointer data)
{
  TestPutter *p = data;

  for (guint i = 0; !g_atomic_int_get (p->stop); i++) {
    char k[16];
    g_autoptr (GBytes) b = NULL;

    g_snprintf (k, sizeof k, "%u", i % 64);
    b = key (k);
    evd_cache_put (p->cache, b, p->rows, 0);
    __atomic_store_n (&p->most, MAX (__atomic_load_n (&p->most, __ATOMIC_RELAXED),
                                     __atomic_load_n (&p->budget->bytes, __ATOMIC_RELAXED)),
                      __ATOMIC_RELAXED);
  }
  return NULL;
}

static void
test_budget_holds_across_threads (void)
{
  g_autoptr (EvdRows) rows = table (1, 10);
  gint64 one = (gint64) evd_cache_rows_bytes (rows);
  EvdCacheBudget budget = { one, 0 };  /* room for one entry in the whole process */
  gint stop = 0;
  TestPutter p[2];
  GThread *threads[2];
  gint64 most = 0, until = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;

  for (guint i = 0; i < 2; i++) {
    p[i] = (TestPutter) { &budget, evd_cache_new (&budget, 1 << 20, 60000 * MS, 0), rows, &stop,
                          0 };
    threads[i] = g_thread_new ("putter", test_putter, &p[i]);
  }
  while (g_get_monotonic_time () < until && most <= one)
    most = MAX (MAX (most, __atomic_load_n (&budget.bytes, __ATOMIC_RELAXED)),
                MAX (__atomic_load_n (&p[0].most, __ATOMIC_RELAXED),
                     __atomic_load_n (&p[1].most, __ATOMIC_RELAXED)));
  g_atomic_int_set (&stop, 1);
  for (guint i = 0; i < 2; i++) {
    g_thread_join (threads[i]);
    most = MAX (most, p[i].most);
    evd_cache_free (p[i].cache);
  }
  g_assert_cmpint (most, <=, one);
  g_assert_cmpint (budget.bytes, ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cache/ttl-and-stale", test_ttl_and_stale);
  g_test_add_func ("/cache/lru-by-bytes", test_lru_by_bytes);
  g_test_add_func ("/cache/bounds", test_bounds);
  g_test_add_func ("/cache/too-large-answer-supersedes", test_too_large_answer_supersedes);
  g_test_add_func ("/cache/budget-holds-across-threads", test_budget_holds_across_threads);
  return g_test_run ();
}

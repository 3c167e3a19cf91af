/* evd_retry: retry budgets and backoff (see evd_retry.h). */
#include "evd_retry.h"

/* The window slides in this many steps (one second each with the default 10 s). */
#define EVD_RETRY_BUCKETS 10

typedef struct {
  gint64 slot;              /* which period it counts; -1: unused; atomic reads */
  guint calls;              /* atomic: deposits come from every loop, for every call */
  guint retries;
} EvdRetryBucket;

struct _EvdRetryBudget {
  double percent;
  int min_per_sec;
  gint64 window_us;
  GMutex lock;
  EvdRetryBucket buckets[EVD_RETRY_BUCKETS];
  guint64 denials;
};

EvdRetryBudget *
evd_retry_budget_new (double percent, int min_per_sec, gint64 window_us)
{
  EvdRetryBudget *b = g_new0 (EvdRetryBudget, 1);

  b->percent = percent;
  b->min_per_sec = min_per_sec;
  b->window_us = MAX (window_us, EVD_RETRY_BUCKETS);
  g_mutex_init (&b->lock);
  for (guint i = 0; i < EVD_RETRY_BUCKETS; i++)
    b->buckets[i].slot = -1;
  return b;
}

void
evd_retry_budget_free (EvdRetryBudget *b)
{
  if (b == NULL)
    return;
  g_mutex_clear (&b->lock);
  g_free (b);
}

static EvdRetryBucket *
evd_retry_bucket (EvdRetryBudget *b, gint64 now_us)
{
  gint64 slot = now_us / (b->window_us / EVD_RETRY_BUCKETS);
  EvdRetryBucket *k = &b->buckets[slot % EVD_RETRY_BUCKETS];

  if (k->slot != slot) {
    __atomic_store_n (&k->calls, 0, __ATOMIC_RELAXED);
    k->retries = 0;
    __atomic_store_n (&k->slot, slot, __ATOMIC_RELEASE);
  }
  return k;
}

/* Every call of every lookup of the section deposits, from every loop: without the lock
 * while the current period's bucket is in place (all but once a period), so that loops do
 * not queue on one mutex per call. A deposit racing the bucket's reset may be lost: one
 * call in a period, which the budget can afford to miscount. */
void
evd_retry_budget_deposit (EvdRetryBudget *b, gint64 now_us)
{
  gint64 slot = now_us / (b->window_us / EVD_RETRY_BUCKETS);
  EvdRetryBucket *k = &b->buckets[slot % EVD_RETRY_BUCKETS];

  if (__atomic_load_n (&k->slot, __ATOMIC_ACQUIRE) == slot) {
    __atomic_fetch_add (&k->calls, 1, __ATOMIC_RELAXED);
    return;
  }
  g_mutex_lock (&b->lock);
  __atomic_fetch_add (&evd_retry_bucket (b, now_us)->calls, 1, __ATOMIC_RELAXED);
  g_mutex_unlock (&b->lock);
}

/* Under the lock: what the window ending in period `slot` holds. */
static void
evd_retry_budget_sum (EvdRetryBudget *b, gint64 slot, guint *calls, guint *retries)
{
  *calls = *retries = 0;
  for (guint i = 0; i < EVD_RETRY_BUCKETS; i++) {
    const EvdRetryBucket *k = &b->buckets[i];
    if (k->slot >= 0 && k->slot > slot - EVD_RETRY_BUCKETS && k->slot <= slot) {
      *calls += __atomic_load_n (&k->calls, __ATOMIC_RELAXED);
      *retries += k->retries;
    }
  }
}

gboolean
evd_retry_budget_withdraw (EvdRetryBudget *b, gint64 now_us)
{
  EvdRetryBucket *now;
  guint calls, retries;
  gboolean ok;

  g_mutex_lock (&b->lock);
  now = evd_retry_bucket (b, now_us);
  evd_retry_budget_sum (b, now->slot, &calls, &retries);
  ok = retries < b->percent * calls + b->min_per_sec * (double) b->window_us / G_USEC_PER_SEC;
  if (ok)
    now->retries++;
  else
    b->denials++;
  g_mutex_unlock (&b->lock);
  return ok;
}

/* The withdrawal was counted in the bucket of its own period: while that bucket still holds
 * that period it is in the window (or past it, where it counts for nothing either way), and
 * the count comes off it. A bucket reused for a later period dropped it already. */
void
evd_retry_budget_refund (EvdRetryBudget *b, gint64 withdrawn_us)
{
  gint64 slot = withdrawn_us / (b->window_us / EVD_RETRY_BUCKETS);
  EvdRetryBucket *k = &b->buckets[slot % EVD_RETRY_BUCKETS];

  g_mutex_lock (&b->lock);
  if (k->slot == slot && k->retries > 0)
    k->retries--;
  g_mutex_unlock (&b->lock);
}

guint
evd_retry_budget_spent (EvdRetryBudget *b, gint64 now_us)
{
  guint calls, retries;

  g_mutex_lock (&b->lock);
  evd_retry_budget_sum (b, now_us / (b->window_us / EVD_RETRY_BUCKETS), &calls, &retries);
  g_mutex_unlock (&b->lock);
  return retries;
}

guint64
evd_retry_budget_denials (EvdRetryBudget *b)
{
  guint64 n;

  g_mutex_lock (&b->lock);
  n = b->denials;
  g_mutex_unlock (&b->lock);
  return n;
}

gint64
evd_retry_backoff_us (guint retry, guint32 random)
{
  gint64 d = EVD_RETRY_BACKOFF_FIRST_US;

  for (guint i = 1; i < retry && d < EVD_RETRY_BACKOFF_MAX_US; i++)
    d *= 2;
  d = MIN (d, EVD_RETRY_BACKOFF_MAX_US);
  return d / 2 + (gint64) (random % (guint32) (d / 2 + 1));
}

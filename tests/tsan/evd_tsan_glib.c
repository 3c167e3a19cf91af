/* evd_tsan_glib: GLib's mutexes, conditions and atomic reference counts in a form
 * ThreadSanitizer sees, linked into the EVDAL_TSAN build only (core/CMakeLists.txt).
 *
 * GLib 2.74 implements GMutex and GCond on Linux with its own futex code, and
 * g_atomic_ref_count_* as functions, all inside libglib, which is not instrumented: TSan then
 * sees no order between one thread's g_mutex_unlock and another's g_mutex_lock, and reports
 * every access a GMutex protects (evd_loop's post queue, the SQLite queue, the bulkheads) as a
 * race. These definitions take the place of GLib's for every call from evdal's code (an
 * executable's own definitions win over a shared library's): pthread mutexes and conditions,
 * which TSan intercepts, and __atomic builtins, which it instruments. GLib's internal calls keep
 * GLib's implementation, which is consistent because evdal never hands a GMutex of its own to
 * a GLib function that locks it (g_cond_wait and g_cond_wait_until are replaced here too).
 *
 * g_strerror is replaced for the same reason: GLib caches its strings under an internal lock,
 * so a string one loop had GLib make looked unsynchronized when another loop read it.
 *
 * A GMutex or GCond may be zero-initialized (static) rather than g_*_init'ed: the pthread
 * object is made at first use and published with a compare-and-swap, as GLib's own portable
 * implementation does.
 */
#define _GNU_SOURCE  /* the GNU strerror_r, which returns the string */
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t *
evd_tsan_glib_mutex (GMutex *m)
{
  pthread_mutex_t **slot = (pthread_mutex_t **) &m->p;
  pthread_mutex_t *impl = __atomic_load_n (slot, __ATOMIC_ACQUIRE), *expected = NULL;

  if (G_LIKELY (impl != NULL))
    return impl;
  impl = malloc (sizeof *impl);
  g_assert (impl != NULL);
  pthread_mutex_init (impl, NULL);
  if (__atomic_compare_exchange_n (slot, &expected, impl, FALSE, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return impl;
  pthread_mutex_destroy (impl);  /* another thread made it first */
  free (impl);
  return expected;
}

static pthread_cond_t *
evd_tsan_glib_cond (GCond *c)
{
  pthread_cond_t **slot = (pthread_cond_t **) &c->p;
  pthread_cond_t *impl = __atomic_load_n (slot, __ATOMIC_ACQUIRE), *expected = NULL;
  pthread_condattr_t attr;

  if (G_LIKELY (impl != NULL))
    return impl;
  impl = malloc (sizeof *impl);
  g_assert (impl != NULL);
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);  /* g_cond_wait_until's clock */
  pthread_cond_init (impl, &attr);
  pthread_condattr_destroy (&attr);
  if (__atomic_compare_exchange_n (slot, &expected, impl, FALSE, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return impl;
  pthread_cond_destroy (impl);
  free (impl);
  return expected;
}

void
g_mutex_init (GMutex *mutex)
{
  mutex->p = NULL;
  evd_tsan_glib_mutex (mutex);
}

void
g_mutex_clear (GMutex *mutex)
{
  pthread_mutex_t *impl = mutex->p;

  if (impl != NULL) {
    pthread_mutex_destroy (impl);
    free (impl);
  }
  mutex->p = NULL;
}

void
g_mutex_lock (GMutex *mutex)
{
  pthread_mutex_lock (evd_tsan_glib_mutex (mutex));
}

void
g_mutex_unlock (GMutex *mutex)
{
  pthread_mutex_unlock (evd_tsan_glib_mutex (mutex));
}

gboolean
g_mutex_trylock (GMutex *mutex)
{
  return pthread_mutex_trylock (evd_tsan_glib_mutex (mutex)) == 0;
}

void
g_cond_init (GCond *cond)
{
  cond->p = NULL;
  evd_tsan_glib_cond (cond);
}

void
g_cond_clear (GCond *cond)
{
  pthread_cond_t *impl = cond->p;

  if (impl != NULL) {
    pthread_cond_destroy (impl);
    free (impl);
  }
  cond->p = NULL;
}

void
g_cond_wait (GCond *cond, GMutex *mutex)
{
  pthread_cond_wait (evd_tsan_glib_cond (cond), evd_tsan_glib_mutex (mutex));
}

gboolean
g_cond_wait_until (GCond *cond, GMutex *mutex, gint64 end_time)
{
  struct timespec ts = { end_time / G_USEC_PER_SEC, (end_time % G_USEC_PER_SEC) * 1000 };

  return pthread_cond_timedwait (evd_tsan_glib_cond (cond), evd_tsan_glib_mutex (mutex),
                                 &ts) != ETIMEDOUT;
}

void
g_cond_signal (GCond *cond)
{
  pthread_cond_signal (evd_tsan_glib_cond (cond));
}

void
g_cond_broadcast (GCond *cond)
{
  pthread_cond_broadcast (evd_tsan_glib_cond (cond));
}

void
g_atomic_ref_count_init (gatomicrefcount *arc)
{
  __atomic_store_n (arc, 1, __ATOMIC_RELAXED);
}

void
g_atomic_ref_count_inc (gatomicrefcount *arc)
{
  __atomic_fetch_add (arc, 1, __ATOMIC_RELAXED);
}

gboolean
g_atomic_ref_count_dec (gatomicrefcount *arc)
{
  return __atomic_fetch_sub (arc, 1, __ATOMIC_ACQ_REL) == 1;
}

gboolean
g_atomic_ref_count_compare (gatomicrefcount *arc, gint val)
{
  return __atomic_load_n (arc, __ATOMIC_ACQUIRE) == val;
}

const gchar *
g_strerror (gint errnum)
{
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  static GHashTable *cache;  /* errnum -> its message, kept for the process's life */
  const gchar *msg;
  char buf[256];

  pthread_mutex_lock (&lock);
  if (cache == NULL)
    cache = g_hash_table_new (NULL, NULL);
  msg = g_hash_table_lookup (cache, GINT_TO_POINTER (errnum));
  if (msg == NULL) {
    msg = g_strdup (strerror_r (errnum, buf, sizeof buf));
    g_hash_table_insert (cache, GINT_TO_POINTER (errnum), (gpointer) msg);
  }
  pthread_mutex_unlock (&lock);
  return msg;
}

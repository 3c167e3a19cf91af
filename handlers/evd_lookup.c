/* evd_lookup: the configured lookups and their bulkheads (see evd_lookup.h). */
#include "evd_lookup.h"

#include <string.h>

#include "evd_xreq.h"

typedef struct {
  EvdLoop *loop;
  EvdLoopFunc run;
  gpointer data;
} EvdWaiter;

struct _EvdLookup {
  EvdLookupSpec spec;
  const EvdBackendClass *klass;
  gpointer backend;
  int timeout_ms;
  char *description;

  /* The bulkhead. max_concurrent 0 means unbounded (and the lock is never taken). */
  int max_concurrent;
  int max_queue;
  GMutex lock;
  int running;
  GQueue waiting;       /* EvdWaiter *, oldest first */
  EvdMetricsLookup *stats;
  EvdXreq *xreq;        /* coalescing, cache, hedges, retries, breaker; NULL when all off */
};

struct _EvdLookupSet {
  GPtrArray *lookups;   /* EvdLookup *, in config order */
  GHashTable *by_name;  /* borrowed names -> EvdLookup * */
  GHashTable *shared;   /* EvdBackendClass * -> what its setup() made */
  EvdXreqSet *xreq;     /* breakers and retry budgets of the databases/upstreams */
};

void
evd_lookup_spec_add_param (EvdLookupSpec *spec, const char *name, EvdParamType type,
                           gboolean required)
{
  EvdParamSpec p = { g_strdup (name), type, required };

  g_array_append_val (spec->params, p);
}

static void
evd_lookup_free (EvdLookup *l)
{
  if (l->backend != NULL)
    l->klass->close (l->backend);
  for (guint i = 0; i < l->spec.params->len; i++)
    g_free (g_array_index (l->spec.params, EvdParamSpec, i).name);
  g_array_unref (l->spec.params);
  g_free (l->spec.name);
  g_free (l->spec.group);
  g_free (l->spec.backend_name);
  g_free (l->description);
  g_mutex_clear (&l->lock);
  g_queue_clear_full (&l->waiting, g_free);
  g_free (l);
}

/* The lookup keys that name a section instead of a backend (`database = NAME`). */
static const char *const evd_lookup_section_keys[] = { "database", "upstream" };

/* The backend kind of [lookup NAME]: its own `backend =`, or that of the [database X] or
 * [upstream X] section it names. NULL, with a problem recorded, when neither is given. */
static char *
evd_lookup_kind (EvdConfig *cfg, const char *group)
{
  if (evd_config_has_key (cfg, group, "backend"))
    return evd_config_require (cfg, group, "backend");
  for (guint i = 0; i < G_N_ELEMENTS (evd_lookup_section_keys); i++) {
    const char *key = evd_lookup_section_keys[i];
    g_autofree char *name = NULL;
    g_autofree char *section = NULL;

    if (!evd_config_has_key (cfg, group, key))
      continue;
    name = evd_config_string (cfg, group, key, "");
    section = g_strdup_printf ("%s %s", key, name);
    return evd_backend_section_kind (cfg, section);
  }
  return evd_config_require (cfg, group, "backend");
}

/* Every [database X] and [upstream X] must name a backend kind that exists, whether or not
 * a lookup uses it: a typo there must not pass silently. */
static void
evd_lookup_check_sections (EvdConfig *cfg)
{
  for (guint i = 0; i < G_N_ELEMENTS (evd_lookup_section_keys); i++) {
    g_auto (GStrv) groups = evd_config_groups_of_kind (cfg, evd_lookup_section_keys[i]);

    for (guint g = 0; groups[g] != NULL; g++) {
      g_autofree char *kind = evd_backend_section_kind (cfg, groups[g]);

      if (evd_backend_find (kind) == NULL) {
        g_autofree char *kinds = evd_backend_kinds ();
        evd_config_problem (cfg, groups[g], "backend", "unknown backend \"%s\" (known: %s)",
                            kind, kinds);
      }
    }
  }
}

static EvdLookup *
evd_lookup_open (EvdLookupSet *set, EvdConfig *cfg, const char *group)
{
  EvdLookup *l = g_new0 (EvdLookup, 1);
  g_autofree char *kind = evd_lookup_kind (cfg, group);

  l->spec.group = g_strdup (group);
  l->spec.name = g_strdup (group + strlen ("lookup "));
  l->spec.params = g_array_new (FALSE, FALSE, sizeof (EvdParamSpec));
  g_mutex_init (&l->lock);
  /* 0: the request's deadline alone bounds the call. */
  l->timeout_ms = (int) evd_config_int (cfg, group, "timeout_ms", 0, 0, 3600000);
  /* 0: unbounded. A slow backend should have a bound, so that it cannot hold every request. */
  l->max_concurrent = (int) evd_config_int (cfg, group, "max_concurrent", 0, 0, 1000000);
  l->max_queue = (int) evd_config_int (cfg, group, "max_queue", 1000, 0, 10000000);
  l->description = evd_config_string (cfg, group, "description", "");
  if (kind == NULL)
    return l;
  l->klass = evd_backend_find (kind);
  if (l->klass == NULL) {
    g_autofree char *kinds = evd_backend_kinds ();
    evd_config_problem (cfg, group, "backend", "unknown backend \"%s\" (known: %s)", kind,
                        kinds);
    return l;
  }
  l->spec.backend_name = g_strdup_printf ("%s:%s", kind, l->spec.name);
  l->backend = l->klass->open (g_hash_table_lookup (set->shared, l->klass), cfg, &l->spec);
  if (l->backend != NULL)
    l->xreq = evd_xreq_open (set->xreq, cfg, &l->spec, l->klass, l->backend);
  if (l->xreq != NULL) {
    /* The engine calls the layer between requests, which calls the backend. */
    l->klass = &evd_xreq_class;
    l->backend = l->xreq;
  }
  return l;
}

EvdLookupSet *
evd_lookup_set_new (EvdConfig *cfg)
{
  EvdLookupSet *set = g_new0 (EvdLookupSet, 1);
  g_auto (GStrv) groups = evd_config_groups_of_kind (cfg, "lookup");

  const EvdBackendClass *const *kinds = evd_backend_all ();

  set->lookups = g_ptr_array_new_with_free_func ((GDestroyNotify) evd_lookup_free);
  set->by_name = g_hash_table_new (g_str_hash, g_str_equal);
  set->shared = g_hash_table_new (NULL, NULL);
  evd_lookup_check_sections (cfg);
  set->xreq = evd_xreq_set_new (cfg);
  for (guint i = 0; kinds[i] != NULL; i++)
    if (kinds[i]->setup != NULL)
      g_hash_table_insert (set->shared, (gpointer) kinds[i], kinds[i]->setup (cfg));
  for (guint i = 0; groups[i] != NULL; i++) {
    EvdLookup *l = evd_lookup_open (set, cfg, groups[i]);

    if (l->backend == NULL) {
      evd_lookup_free (l);
      continue;
    }
    g_ptr_array_add (set->lookups, l);
    g_hash_table_insert (set->by_name, l->spec.name, l);
  }
  return set;
}

void
evd_lookup_set_free (EvdLookupSet *set)
{
  if (set == NULL)
    return;
  GHashTableIter it;
  gpointer klass, shared;

  g_hash_table_unref (set->by_name);
  g_ptr_array_unref (set->lookups);  /* closes every lookup before what they share */
  g_hash_table_iter_init (&it, set->shared);
  while (g_hash_table_iter_next (&it, &klass, &shared))
    if (shared != NULL)
      ((const EvdBackendClass *) klass)->teardown (shared);
  g_hash_table_unref (set->shared);
  evd_xreq_set_free (set->xreq);
  g_free (set);
}

EvdLookup *
evd_lookup_set_find (EvdLookupSet *set, const char *name)
{
  return g_hash_table_lookup (set->by_name, name);
}

guint
evd_lookup_set_size (EvdLookupSet *set)
{
  return set->lookups->len;
}

EvdLookup *
evd_lookup_set_nth (EvdLookupSet *set, guint i)
{
  return set->lookups->pdata[i];
}

const EvdLookupSpec *
evd_lookup_spec (EvdLookup *l)
{
  return &l->spec;
}

const EvdBackendClass *
evd_lookup_class (EvdLookup *l)
{
  return l->klass;
}

gpointer
evd_lookup_backend (EvdLookup *l)
{
  return l->backend;
}

int
evd_lookup_timeout_ms (EvdLookup *l)
{
  return l->timeout_ms;
}

const char *
evd_lookup_description (EvdLookup *l)
{
  return l->description;
}

const EvdParamSpec *
evd_lookup_param (EvdLookup *l, const char *name)
{
  for (guint i = 0; i < l->spec.params->len; i++) {
    const EvdParamSpec *p = &g_array_index (l->spec.params, EvdParamSpec, i);
    if (strcmp (p->name, name) == 0)
      return p;
  }
  return NULL;
}

char *
evd_lookup_param_names (EvdLookup *l)
{
  GString *s = g_string_new (NULL);

  for (guint i = 0; i < l->spec.params->len; i++)
    g_string_append_printf (s, "%s%s", i ? ", " : "",
                            g_array_index (l->spec.params, EvdParamSpec, i).name);
  if (s->len == 0)
    g_string_append (s, "none");
  return g_string_free (s, FALSE);
}

static void evd_lookup_set_collect_xreq (EvdLookupSet *set, GString *out);

/* ---- Bulkhead. ---- */

EvdAdmit
evd_lookup_admit (EvdLookup *l, EvdLoop *loop, EvdLoopFunc run, gpointer data)
{
  EvdAdmit verdict;

  if (l->max_concurrent == 0)
    return EVD_ADMIT_RUN;
  g_mutex_lock (&l->lock);
  if (l->running < l->max_concurrent) {
    l->running++;
    verdict = EVD_ADMIT_RUN;
  } else if ((int) l->waiting.length >= l->max_queue) {
    verdict = EVD_ADMIT_REJECTED;
  } else {
    EvdWaiter *w = g_new (EvdWaiter, 1);
    *w = (EvdWaiter) { loop, run, data };
    g_queue_push_tail (&l->waiting, w);
    verdict = EVD_ADMIT_QUEUED;
  }
  g_mutex_unlock (&l->lock);
  return verdict;
}

gboolean
evd_lookup_withdraw (EvdLookup *l, gpointer data)
{
  EvdWaiter *found = NULL;

  g_mutex_lock (&l->lock);
  for (GList *i = l->waiting.head; i != NULL; i = i->next) {
    EvdWaiter *w = i->data;
    if (w->data == data) {
      found = w;
      g_queue_delete_link (&l->waiting, i);
      break;
    }
  }
  g_mutex_unlock (&l->lock);
  g_free (found);
  return found != NULL;
}

void
evd_lookup_release (EvdLookup *l)
{
  EvdWaiter *next;

  if (l->max_concurrent == 0)
    return;
  g_mutex_lock (&l->lock);
  next = g_queue_pop_head (&l->waiting);
  if (next == NULL)
    l->running--;
  g_mutex_unlock (&l->lock);
  /* The place passes straight to the waiter: `running` stays as it is. */
  if (next != NULL) {
    evd_loop_post (next->loop, next->run, next->data);
    g_free (next);
  }
}

void
evd_lookup_set_stats (EvdLookup *l, EvdMetricsLookup *stats)
{
  l->stats = stats;
}

EvdMetricsLookup *
evd_lookup_stats (EvdLookup *l)
{
  return l->stats;
}

void
evd_lookup_set_attach (EvdLookupSet *set, EvdLoop *loop)
{
  GHashTableIter it;
  gpointer klass, shared;

  g_hash_table_iter_init (&it, set->shared);
  while (g_hash_table_iter_next (&it, &klass, &shared))
    if (shared != NULL && ((const EvdBackendClass *) klass)->attach != NULL)
      ((const EvdBackendClass *) klass)->attach (shared, loop);
}

void
evd_lookup_set_collect (EvdLookupSet *set, GString *out)
{
  GHashTableIter it;
  gpointer klass, shared;

  evd_metrics_family (out, "evdal_lookup_running", "gauge",
                      "Calls running now, of each lookup with a max_concurrent.");
  for (guint i = 0; i < set->lookups->len; i++) {
    EvdLookup *l = set->lookups->pdata[i];
    int running;

    if (l->max_concurrent == 0)
      continue;  /* unbounded: nothing is counted, so that the lock is never taken */
    g_mutex_lock (&l->lock);
    running = l->running;
    g_mutex_unlock (&l->lock);
    evd_metrics_sample (out, "evdal_lookup_running", running, "lookup", l->spec.name, NULL);
  }
  evd_metrics_family (out, "evdal_lookup_queue_depth", "gauge",
                      "Calls waiting for a place, of each lookup with a max_concurrent.");
  for (guint i = 0; i < set->lookups->len; i++) {
    EvdLookup *l = set->lookups->pdata[i];
    guint queued;

    if (l->max_concurrent == 0)
      continue;
    g_mutex_lock (&l->lock);
    queued = g_queue_get_length (&l->waiting);
    g_mutex_unlock (&l->lock);
    evd_metrics_sample (out, "evdal_lookup_queue_depth", queued, "lookup", l->spec.name, NULL);
  }
  g_hash_table_iter_init (&it, set->shared);
  while (g_hash_table_iter_next (&it, &klass, &shared))
    if (shared != NULL && ((const EvdBackendClass *) klass)->collect != NULL)
      ((const EvdBackendClass *) klass)->collect (shared, out);
  evd_lookup_set_collect_xreq (set, out);
}

static void
evd_lookup_set_collect_xreq (EvdLookupSet *set, GString *out)
{
  g_autofree EvdXreq **xs = g_new (EvdXreq *, set->lookups->len + 1);
  g_autofree const char **names = g_new (const char *, set->lookups->len + 1);
  guint n = 0;

  for (guint i = 0; i < set->lookups->len; i++) {
    EvdLookup *l = set->lookups->pdata[i];
    if (l->xreq != NULL) {
      xs[n] = l->xreq;
      names[n++] = l->spec.name;
    }
  }
  evd_xreq_collect (xs, names, n, out);
  evd_xreq_set_collect (set->xreq, out);
}

void
evd_lookup_set_health (EvdLookupSet *set, GString *out)
{
  evd_xreq_set_health (set->xreq, out);
}

EvdXreq *
evd_lookup_xreq (EvdLookup *l)
{
  return l->xreq;
}

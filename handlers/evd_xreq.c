/* evd_xreq: coalescing, cache, hedges, retries and breakers around one lookup (see
 * evd_xreq.h). */
#include "evd_xreq.h"

#include <event2/event.h>
#include <string.h>

#include "evd_coalesce.h"
#include "evd_hedge.h"
#include "evd_metrics.h"
#include "evd_retry.h"

/* The most retries a lookup may ask for: past a few, a retry is a storm of one caller. */
#define EVD_XREQ_MAX_RETRIES 10

/* A caller with stale rows to fall back on answers with them this long before its deadline
 * (or a tenth of its budget, if less), so that its answer is not the engine's TIMEOUT. */
#define EVD_XREQ_STALE_MARGIN_US (5 * 1000)

/* A database's or upstream's share of the mechanisms: its breaker and its retry budget. */
typedef struct {
  char *name;               /* "main" for [database main]; a lookup's name when it has none */
  char *group;              /* "database main", or the lookup's group */
  EvdBreaker *breaker;      /* NULL: breaker = off */
  EvdRetryBudget *budget;
} EvdXreqSection;

struct _EvdXreqSet {
  GHashTable *sections;     /* group name -> EvdXreqSection */
  GPtrArray *order;         /* EvdXreqSection *, for stable output */
};

struct _EvdXreq {
  const EvdBackendClass *klass;  /* the real backend's */
  gpointer backend;
  char *name;
  char *breaker_message;    /* "circuit open for NAME" */
  EvdXreqConfig config;
  EvdXreqSection *section;
  EvdCoalesce *coalesce;    /* NULL: coalescing off (flights are private) */
  EvdCache *cache;          /* NULL: no cache; else shared through evd_xreq_kept */
  char *definition;         /* what the cache is kept under across reloads */
  EvdHedge *hedge;          /* NULL: no hedging */
  gint64 (*now) (gpointer data);
  gpointer now_data;
  void (*hook) (EvdXreqHookPoint at, gpointer data);  /* tests' (evd_xreq_set_hook) */
  gpointer hook_data;
  EvdXreqStats stats;       /* atomics */
};

typedef struct _EvdXreqFlight EvdXreqFlight;

/* One caller: the engine's call, in its data slot until the engine took its completion. */
typedef struct {
  EvdBackendCall *outer;
  EvdCoalesceEntry *entry;  /* a reference: keeps the flight */
  EvdXreqFlight *flight;
  gint64 deadline_us;
  EvdRows *stale;           /* expired rows to answer with if its time runs out, or NULL */
  struct event *stale_timer;  /* on its own loop, a little before its deadline */
  gboolean timing_out;      /* left because its time ran out */
  gboolean created;         /* made the flight (its span is not marked coalesced) */
  gboolean offered_stale;   /* its look at the cache found the entry within its stale window:
                             * it may be answered with the flight's stale rows */
} EvdXreqWaiter;

/* The waiter lives in its call's room (evd_backend_call_room), which outlives the engine's
 * release of the call: a malloc and a free per call on the IO loop fewer, where all of what
 * coalescing costs is spent (the SQLite workers do the same work either way). */
G_STATIC_ASSERT (sizeof (EvdXreqWaiter) <= EVD_BACKEND_CALL_ROOM);

/* One run of the real backend. */
typedef struct {
  EvdXreqFlight *flight;
  EvdBackendCall *call;
  EvdBreakerVerdict verdict;
  guint64 round;            /* the breaker's half-open round that let a probe through */
  gint64 start_us;
  gboolean hedge;
  gboolean stopped;         /* cancelled by the flight */
  gboolean timed_out;       /* ... because every caller's time ran out */
} EvdXreqAttempt;

/* The shared execution; the entry's data, freed with the entry. Everything below `loop` is the
 * flight loop's alone. Its deadline, the latest of its callers still waiting, is the entry's
 * (evd_coalesce_entry_deadline): a caller raises it as it joins, and lowers it as it leaves
 * when it had the latest, under the table's lock. */
struct _EvdXreqFlight {
  EvdXreq *x;
  EvdCoalesceEntry *entry;  /* borrowed; the work's reference is held until drained */
  EvdLoop *loop;
  EvdBackendCall *tmpl;     /* holds the creator's request: attempts are made from it */
  EvdBackendCall *from;     /* the creator's call, valid during evd_xreq_flight_begin only */
  EvdRows *stale;           /* expired rows for stale-if-error, or NULL */
  EvdXreqAttempt *attempts[2];  /* running, in `slots` */
  EvdXreqAttempt slots[2];  /* never more than two at once: the first and its hedge */
  guint running;
  guint retries;
  const char *trace_peer;   /* what the last attempt said of its upstream, for the spans */
  int trace_http_status;
  gboolean hedged;
  guint marks;
  struct event *hedge_timer, *retry_timer;
  gboolean retry_withdrawn; /* the retry waiting on retry_timer took a token from the budget */
  gint64 retry_withdrawn_us;  /* ... at this time, to give it back with if it does not go */
  gboolean over;            /* answered, or abandoned: no attempt starts any more */
  gboolean answered;        /* with rows from an attempt */
  gboolean drained;
  EvdXreqWaiter *anchor;    /* the last caller to leave, answered once drained */
  EvdErrorKind error_kind;  /* the last failure: NONE when there was none */
  char *error_message;
  guint error_flags;
  gint64 retry_after_us;    /* the last failure's Retry-After: the least a retry waits */
};

static void evd_xreq_flight_drain (EvdXreqFlight *f);

static gint64
evd_xreq_monotonic (gpointer data)
{
  (void) data;
  return g_get_monotonic_time ();
}

static gint64
evd_xreq_now (EvdXreq *x)
{
  return x->now (x->now_data);
}

#define EVD_XREQ_COUNT(x, field) __atomic_fetch_add (&(x)->stats.field, 1, __ATOMIC_RELAXED)

/* ---- Sections. ---- */

static EvdXreqSection *
evd_xreq_section_new (EvdXreqSet *set, EvdConfig *cfg, const char *group, const char *name)
{
  EvdXreqSection *s = g_new0 (EvdXreqSection, 1);
  EvdBreakerConfig bc;

  s->name = g_strdup (name);
  s->group = g_strdup (group);
  if (evd_breaker_config_read (cfg, group, &bc))
    s->breaker = evd_breaker_new (name, &bc);
  s->budget = evd_retry_budget_new (EVD_RETRY_BUDGET_PERCENT, EVD_RETRY_BUDGET_MIN_PER_SEC,
                                    EVD_RETRY_BUDGET_WINDOW_US);
  g_hash_table_insert (set->sections, g_strdup (group), s);
  g_ptr_array_add (set->order, s);
  return s;
}

static void
evd_xreq_section_free (gpointer data)
{
  EvdXreqSection *s = data;

  evd_breaker_free (s->breaker);
  evd_retry_budget_free (s->budget);
  g_free (s->name);
  g_free (s->group);
  g_free (s);
}

EvdXreqSet *
evd_xreq_set_new (EvdConfig *cfg)
{
  static const char *const kinds[] = { "database", "upstream" };
  EvdXreqSet *set = g_new0 (EvdXreqSet, 1);

  set->sections = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  set->order = g_ptr_array_new_with_free_func (evd_xreq_section_free);
  /* The process's budget ([server] cache_max_bytes) is set when the generation becomes
   * current (evd_engine_activate), not here: a reload that is refused is built too. */
  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++) {
    g_auto (GStrv) groups = evd_config_groups_of_kind (cfg, kinds[k]);
    for (guint i = 0; groups[i] != NULL; i++)
      evd_xreq_section_new (set, cfg, groups[i], groups[i] + strlen (kinds[k]) + 1);
  }
  return set;
}

void
evd_xreq_set_free (EvdXreqSet *set)
{
  if (set == NULL)
    return;
  g_hash_table_unref (set->sections);
  g_ptr_array_unref (set->order);
  g_free (set);
}

/* The section of a lookup: [database X] or [upstream X] for a backend named "kind:X", else
 * the lookup's own group (delay, fault and static lookups have no section of their own, and
 * may set `breaker` and its keys in [lookup NAME]). */
static EvdXreqSection *
evd_xreq_section_of (EvdXreqSet *set, EvdConfig *cfg, const EvdLookupSpec *spec)
{
  const char *colon = spec->backend_name ? strchr (spec->backend_name, ':') : NULL;
  EvdXreqSection *s;

  if (colon != NULL) {
    g_autofree char *db = g_strdup_printf ("database %s", colon + 1);
    g_autofree char *up = g_strdup_printf ("upstream %s", colon + 1);

    if ((s = g_hash_table_lookup (set->sections, db)) != NULL ||
        (s = g_hash_table_lookup (set->sections, up)) != NULL)
      return s;
  }
  return evd_xreq_section_new (set, cfg, spec->group, spec->name);
}

void
evd_xreq_set_collect (EvdXreqSet *set, GString *out)
{
  gint64 now = g_get_monotonic_time ();

  evd_metrics_family (out, "evdal_breaker_state", "gauge",
                      "Circuit breaker of each database/upstream with breaker = on: "
                      "0 closed, 1 open, 2 half-open.");
  for (guint i = 0; i < set->order->len; i++) {
    EvdXreqSection *s = set->order->pdata[i];
    if (s->breaker != NULL)
      evd_metrics_sample (out, "evdal_breaker_state", evd_breaker_state (s->breaker, now),
                          "breaker", s->name, NULL);
  }
  evd_metrics_family (out, "evdal_breaker_transitions_total", "counter",
                      "Circuit breaker transitions, by the state entered.");
  for (guint i = 0; i < set->order->len; i++) {
    EvdXreqSection *s = set->order->pdata[i];
    for (EvdBreakerState st = EVD_BREAKER_CLOSED; s->breaker && st < EVD_BREAKER_N_STATES; st++)
      evd_metrics_sample (out, "evdal_breaker_transitions_total",
                          (double) evd_breaker_transitions (s->breaker, st), "breaker", s->name,
                          "to", evd_breaker_state_name (st), NULL);
  }
  evd_metrics_family (out, "evdal_retry_budget_denials_total", "counter",
                      "Retries and hedges refused by the retry budget of each "
                      "database/upstream.");
  for (guint i = 0; i < set->order->len; i++) {
    EvdXreqSection *s = set->order->pdata[i];
    evd_metrics_sample (out, "evdal_retry_budget_denials_total",
                        (double) evd_retry_budget_denials (s->budget), "section", s->name, NULL);
  }
}

void
evd_xreq_set_health (EvdXreqSet *set, GString *out)
{
  gint64 now = g_get_monotonic_time ();

  for (guint i = 0; i < set->order->len; i++) {
    EvdXreqSection *s = set->order->pdata[i];
    EvdBreakerState st = s->breaker ? evd_breaker_state (s->breaker, now) : EVD_BREAKER_CLOSED;

    if (st != EVD_BREAKER_CLOSED)
      g_string_append_printf (out, "breaker %s %s\n", s->name, evd_breaker_state_name (st));
  }
}

/* ---- Caches kept across reloads. ----
 * A reload opens every lookup anew. One whose definition did not change (its own keys and
 * those of its [database]/[upstream] section, as written) keeps its cache: the new
 * generation's EvdXreq shares the old one's, found here by that definition, while requests
 * of both run. One that changed gets an empty cache, and its old one goes with the old
 * generation. (A process has one server; its generations are what meet here.) */
typedef struct {
  EvdCache *cache;
  guint refs;               /* EvdXreqs of any generation */
} EvdXreqKept;

static GMutex evd_xreq_kept_lock;
static GHashTable *evd_xreq_kept;  /* definition -> EvdXreqKept */

/* The bound the cache is made with is in it as well: a lookup without a cache_max_bytes of its
 * own takes [server]'s, which a reload may change while the lookup's text stays the same. */
static char *
evd_xreq_definition (EvdConfig *cfg, const EvdLookupSpec *spec, const EvdXreqSection *section,
                     const EvdXreqConfig *c)
{
  g_autofree char *own = evd_config_group_text (cfg, spec->group);
  g_autofree char *shared = strcmp (section->group, spec->group) != 0
                            ? evd_config_group_text (cfg, section->group) : g_strdup ("");

  return g_strdup_printf ("[%s]\n%s[%s]\n%s(cache_max_bytes %" G_GINT64_FORMAT ")",
                          spec->group, own, section->group, shared, c->cache_max_bytes);
}

static EvdCache *
evd_xreq_kept_take (const char *definition, const EvdXreqConfig *c)
{
  EvdXreqKept *k;

  g_mutex_lock (&evd_xreq_kept_lock);
  if (evd_xreq_kept == NULL)
    evd_xreq_kept = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  k = g_hash_table_lookup (evd_xreq_kept, definition);
  if (k == NULL) {
    k = g_new0 (EvdXreqKept, 1);
    k->cache = evd_cache_new (evd_cache_budget_process (), c->cache_max_bytes,
                              c->cache_ttl_ms * 1000, c->stale_if_error_ms * 1000);
    g_hash_table_insert (evd_xreq_kept, g_strdup (definition), k);
  }
  k->refs++;
  g_mutex_unlock (&evd_xreq_kept_lock);
  return k->cache;
}

static void
evd_xreq_kept_give_back (const char *definition)
{
  EvdXreqKept *k;

  g_mutex_lock (&evd_xreq_kept_lock);
  k = g_hash_table_lookup (evd_xreq_kept, definition);
  if (--k->refs == 0) {
    evd_cache_free (k->cache);
    g_hash_table_remove (evd_xreq_kept, definition);
  }
  g_mutex_unlock (&evd_xreq_kept_lock);
}

/* ---- Opening a lookup. ---- */

static gboolean
evd_xreq_kind_is_remote (const char *kind)
{
  /* The backends' kinds, as they register them ("postgresql": the list once had guesses at
   * it, and PostgreSQL lookups did not coalesce by default, as the README says SQL ones do). */
  static const char *const remote[] = { "sqlite", "postgresql", "redis", "http" };

  for (guint i = 0; i < G_N_ELEMENTS (remote); i++)
    if (strcmp (kind, remote[i]) == 0)
      return TRUE;
  return FALSE;
}

static void
evd_xreq_read_config (EvdConfig *cfg, const EvdLookupSpec *spec, const EvdBackendClass *klass,
                      EvdXreqConfig *c)
{
  const char *g = spec->group;
  g_autofree char *hedge = evd_config_string (cfg, g, "hedge", "off");

  c->coalesce = evd_config_bool (cfg, g, "coalesce", evd_xreq_kind_is_remote (klass->kind));
  c->per_principal = evd_config_bool (cfg, g, "per_principal", FALSE);
  /* What an HTTP lookup sends upstream includes who asks and the attributes, so one
   * caller's answer may not be another's; so does a Thrift lookup (its RequestContext). */
  c->with_attributes = strcmp (klass->kind, "http") == 0 ||
                       strcmp (klass->kind, "thrift") == 0;
  c->cache_ttl_ms = evd_config_int (cfg, g, "cache_ttl_ms", 0, 0, 86400000);
  c->cache_max_bytes = evd_config_int (cfg, g, "cache_max_bytes",
                                       evd_config_server (cfg)->cache_max_bytes, 0,
                                       (gint64) 1 << 40);
  c->stale_if_error_ms = evd_config_int (cfg, g, "stale_if_error_ms", 0, 0, 86400000);
  c->hedge_after_ms = evd_config_int (cfg, g, "hedge_after_ms", 0, 0, 3600000);
  c->hedge_p95 = strcmp (hedge, "p95") == 0;
  if (!c->hedge_p95 && strcmp (hedge, "off") != 0)
    evd_config_problem (cfg, g, "hedge", "\"%s\" is not p95 or off", hedge);
  if (c->hedge_p95 && c->hedge_after_ms > 0)
    evd_config_problem (cfg, g, "hedge", "set hedge = p95 or hedge_after_ms, not both");
  c->retries = (int) evd_config_int (cfg, g, "retries", 0, 0, EVD_XREQ_MAX_RETRIES);
  if (c->stale_if_error_ms > 0 && c->cache_ttl_ms == 0)
    evd_config_problem (cfg, g, "stale_if_error_ms", "needs cache_ttl_ms: stale rows are "
                        "expired cache entries");
}

EvdXreq *
evd_xreq_open (EvdXreqSet *set, EvdConfig *cfg, const EvdLookupSpec *spec,
               const EvdBackendClass *klass, gpointer backend)
{
  EvdXreqConfig c = { 0 };
  EvdXreqSection *section;
  EvdXreq *x;

  evd_xreq_read_config (cfg, spec, klass, &c);
  section = evd_xreq_section_of (set, cfg, spec);
  if (!c.coalesce && c.cache_ttl_ms == 0 && !c.hedge_p95 && c.hedge_after_ms == 0 &&
      c.retries == 0 && section->breaker == NULL)
    return NULL;
  x = g_new0 (EvdXreq, 1);
  x->klass = klass;
  x->backend = backend;
  x->name = g_strdup (spec->name);
  x->breaker_message = g_strdup_printf ("circuit open for %s", section->name);
  x->config = c;
  x->section = section;
  x->coalesce = c.coalesce ? evd_coalesce_new () : NULL;
  if (c.cache_ttl_ms > 0) {
    x->definition = evd_xreq_definition (cfg, spec, section, &c);
    x->cache = evd_xreq_kept_take (x->definition, &c);
  }
  if (c.hedge_p95 || c.hedge_after_ms > 0)
    x->hedge = evd_hedge_new (c.hedge_after_ms * 1000);
  x->now = evd_xreq_monotonic;
  return x;
}

static void
evd_xreq_close (gpointer backend)
{
  EvdXreq *x = backend;

  x->klass->close (x->backend);
  evd_coalesce_free (x->coalesce);
  if (x->cache != NULL)
    evd_xreq_kept_give_back (x->definition);
  g_free (x->definition);
  evd_hedge_free (x->hedge);
  g_free (x->breaker_message);
  g_free (x->name);
  g_free (x);
}

const EvdXreqConfig *
evd_xreq_config (EvdXreq *x)
{
  return &x->config;
}

void
evd_xreq_stats (EvdXreq *x, EvdXreqStats *out)
{
  guint64 *from = (guint64 *) &x->stats, *to = (guint64 *) out;

  for (guint i = 0; i < sizeof *out / sizeof (guint64); i++)
    to[i] = __atomic_load_n (&from[i], __ATOMIC_RELAXED);
}

EvdCache *
evd_xreq_cache (EvdXreq *x)
{
  return x->cache;
}

EvdBreaker *
evd_xreq_breaker (EvdXreq *x)
{
  return x->section->breaker;
}

EvdRetryBudget *
evd_xreq_budget (EvdXreq *x)
{
  return x->section->budget;
}

void
evd_xreq_set_clock (EvdXreq *x, gint64 (*now) (gpointer data), gpointer data)
{
  x->now = now;
  x->now_data = data;
}

void
evd_xreq_set_hook (EvdXreq *x, void (*hook) (EvdXreqHookPoint at, gpointer data), gpointer data)
{
  x->hook = hook;
  x->hook_data = data;
}

static void
evd_xreq_hook (EvdXreq *x, EvdXreqHookPoint at)
{
  if (G_UNLIKELY (x->hook != NULL))
    x->hook (at, x->hook_data);
}

/* ---- Keys. ---- */

static int
evd_xreq_param_order (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(const EvdParam *const *) a)->name, (*(const EvdParam *const *) b)->name);
}

/* A key is built in a buffer on the stack (most are a few dozen bytes), then copied once. */
typedef struct {
  guint8 stack[256];
  guint8 *data;
  gsize len, size;
} EvdXreqKey;

/* Room for `len` more bytes; returns where they go. */
static inline guint8 *
evd_xreq_key_room (EvdXreqKey *k, gsize len)
{
  guint8 *at;

  if (G_UNLIKELY (k->len + len > k->size)) {
    gsize size = MAX (k->size * 2, k->len + len);

    if (k->data == k->stack)
      k->data = memcpy (g_malloc (size), k->stack, k->len);
    else
      k->data = g_realloc (k->data, size);
    k->size = size;
  }
  at = k->data + k->len;
  k->len += len;
  return at;
}

static void
evd_xreq_key_add (EvdXreqKey *k, const void *bytes, gsize len)
{
  memcpy (evd_xreq_key_room (k, len), bytes, len);
}

/* Fixed sizes: the compiler makes each a store, not a call to memcpy (a key is a few of
 * these per param, and building it was a tenth of what coalescing cost a call). */
#define EVD_XREQ_KEY_PUT(k, value) \
  G_STMT_START { __typeof__ (value) v_ = (value); \
                 memcpy (evd_xreq_key_room ((k), sizeof v_), &v_, sizeof v_); } G_STMT_END

static void
evd_xreq_key_string (EvdXreqKey *k, const char *s)
{
  guint32 len = s ? (guint32) strlen (s) : G_MAXUINT32;

  EVD_XREQ_KEY_PUT (k, len);
  if (s != NULL)
    evd_xreq_key_add (k, s, len);
}

static void
evd_xreq_key_value (EvdXreqKey *k, const EvdParam *p)
{
  const EvdValue *v = &p->value;

  evd_xreq_key_string (k, p->name);
  EVD_XREQ_KEY_PUT (k, (guint8) v->kind);
  if (v->kind == EVD_VALUE_INT) {
    EVD_XREQ_KEY_PUT (k, v->i);
  } else if (v->kind == EVD_VALUE_REAL) {
    EVD_XREQ_KEY_PUT (k, v->r);  /* bits: NaN, -0.0 */
  } else if (v->kind == EVD_VALUE_TEXT || v->kind == EVD_VALUE_BLOB) {
    EVD_XREQ_KEY_PUT (k, v->len);
    evd_xreq_key_add (k, v->data, v->len);
  }
}

/* What makes two calls of this lookup identical: their params in name order (kind and value
 * bytes), and the principal and attributes when the answer may depend on them. Lengths come
 * before bytes, so no two different calls make the same key. Params are few (a lookup
 * declares them): an insertion sort of their indices, no allocation. */
static void
evd_xreq_key (EvdXreq *x, EvdBackendCall *call, EvdXreqKey *key)
{
  const EvdRequestContext *ctx = evd_backend_call_context (call);
  EvdXreqKey *k = key;
  guint n, order[16];
  const EvdParam *params = evd_backend_call_params (call, &n);

  k->len = 0;
  k->size = sizeof k->stack;
  k->data = k->stack;
  if (n <= G_N_ELEMENTS (order)) {
    for (guint i = 0; i < n; i++) {
      guint j = i;
      for (; j > 0 && strcmp (params[order[j - 1]].name, params[i].name) > 0; j--)
        order[j] = order[j - 1];
      order[j] = i;
    }
    for (guint i = 0; i < n; i++)
      evd_xreq_key_value (k, &params[order[i]]);
  } else {
    g_autofree const EvdParam **sorted = g_new (const EvdParam *, n);

    for (guint i = 0; i < n; i++)
      sorted[i] = &params[i];
    qsort (sorted, n, sizeof *sorted, evd_xreq_param_order);
    for (guint i = 0; i < n; i++)
      evd_xreq_key_value (k, sorted[i]);
  }
  if (x->config.per_principal || x->config.with_attributes) {
    evd_xreq_key_add (k, "P", 1);
    evd_xreq_key_string (k, ctx->principal);
  }
  if (x->config.with_attributes) {
    g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (ctx->attributes),
                                          (GCompareFunc) strcmp);
    evd_xreq_key_add (k, "A", 1);
    for (GList *i = keys; i != NULL; i = i->next) {
      evd_xreq_key_string (k, i->data);
      evd_xreq_key_string (k, g_hash_table_lookup (ctx->attributes, i->data));
    }
  }
}

static void
evd_xreq_key_clear (EvdXreqKey *k)
{
  if (k->data != k->stack)
    g_free (k->data);
}

/* ---- Flights. ---- */

typedef struct {
  EvdXreq *x;
  EvdXreqWaiter *creator;
  EvdLoop *loop;
} EvdXreqMake;

/* The flight lives in its entry's block (evd_coalesce_join zeroed it). */
static void
evd_xreq_flight_init (gpointer data, gpointer init_data)
{
  EvdXreqFlight *f = data;
  EvdXreqMake *m = init_data;

  f->x = m->x;
  /* The waiter says it made the flight: the flight keeps no pointer to it, which would dangle
   * once it left, and pass for a later joiner given the same memory. Under the table's lock,
   * before anyone can join. */
  m->creator->created = TRUE;
  f->loop = m->loop;
}

/* The entry's last reference: any thread. What needs the loop went when it drained. */
static void
evd_xreq_flight_destroy (gpointer data)
{
  EvdXreqFlight *f = data;

  g_clear_pointer (&f->stale, evd_rows_unref);
  g_free (f->error_message);
}

/* Read without the lock: what is decided from it is sealed (evd_xreq_flight_after_failure).
 * Every decision reads it afresh (a retry, a hedge, going on, a new attempt's deadline), so
 * once the caller with the latest deadline has left they all use the remaining callers'.
 * An attempt already running keeps the deadline it started with (backends read it once, at
 * start, and cutting it short would throw away what it has done): it never runs past the
 * remaining callers' deadline for long, since the last of them to leave stops it. */
static gint64
evd_xreq_flight_deadline (EvdXreqFlight *f)
{
  return evd_coalesce_entry_deadline (f->entry);
}

/* The retry that withdrew from the budget will not go out (the breaker refused it, or the
 * flight ended during its backoff): its token goes back. */
static void
evd_xreq_flight_refund_retry (EvdXreqFlight *f)
{
  if (f->retry_withdrawn) {
    f->retry_withdrawn = FALSE;
    evd_retry_budget_refund (f->x->section->budget, f->retry_withdrawn_us);
  }
}

static void
evd_xreq_flight_stop_timers (EvdXreqFlight *f)
{
  if (f->hedge_timer != NULL)
    event_del (f->hedge_timer);
  if (f->retry_timer != NULL)
    event_del (f->retry_timer);
  evd_xreq_flight_refund_retry (f);
}

/* Cancels the attempts still running (their completions still come, to the flight). */
static void
evd_xreq_flight_stop_attempts (EvdXreqFlight *f, gboolean timed_out)
{
  EvdXreqAttempt *running[2] = { f->attempts[0], f->attempts[1] };

  for (guint i = 0; i < 2; i++)
    if (running[i] != NULL) {
      running[i]->stopped = TRUE;
      running[i]->timed_out = timed_out;
    }
  /* One at a time: a cancel may complete at once, and the completion clears its place. */
  for (guint i = 0; i < 2; i++)
    if (running[i] != NULL && f->attempts[i] == running[i])
      evd_backend_call_cancel (running[i]->call);
}

/* Answers every caller still waiting with `rows` (a success) or the error; with both, `rows`
 * are expired ones: those who were offered them (offered_stale) get them, the others the
 * error (the cache found the entry past its stale window when they asked). */
static void
evd_xreq_flight_answer (EvdXreqFlight *f, EvdRows *rows, EvdErrorKind kind, const char *message,
                        guint flags)
{
  gboolean stale = rows != NULL && kind != EVD_ERROR_KIND_NONE;

  f->over = TRUE;
  evd_xreq_flight_stop_timers (f);
  /* Closed by us: its waiters are ours to answer, and fixed. Closed already: the last one
   * left, and is answered once the flight drains. */
  for (guint i = 0, n = evd_coalesce_close (f->entry) ? evd_coalesce_entry_n_waiters (f->entry)
                                                      : 0; i < n; i++) {
    EvdXreqWaiter *w = evd_coalesce_entry_waiter (f->entry, i);
    gboolean with_rows = rows != NULL && (!stale || w->offered_stale);
    guint marks = f->marks | (!w->created ? EVD_MARK_COALESCED : 0) |
                  (stale && with_rows ? EVD_MARK_STALE : 0);

    evd_backend_call_mark (w->outer, marks, f->retries);
    if (f->trace_peer != NULL)
      evd_backend_call_trace_peer (w->outer, f->trace_peer);
    if (f->trace_http_status != 0)
      evd_backend_call_trace_http_status (w->outer, f->trace_http_status);
    if (stale && with_rows) {
      EVD_XREQ_COUNT (f->x, stale);
      evd_cache_served_stale (f->x->cache);
    }
    if (with_rows)
      evd_backend_call_return (w->outer, evd_rows_ref (rows));
    else
      evd_backend_call_fail_full (w->outer, flags, kind, "%s", message);
  }
  evd_xreq_flight_stop_attempts (f, FALSE);
}

static void
evd_xreq_flight_fail (EvdXreqFlight *f, EvdErrorKind kind, const char *message, guint flags)
{
  if (f->stale != NULL) {
    g_autoptr (EvdRows) stale = g_steal_pointer (&f->stale);

    evd_xreq_flight_answer (f, stale, kind, message, flags);  /* counted per caller there */
    return;
  }
  evd_xreq_flight_answer (f, NULL, kind, message, flags);
}

static void
evd_xreq_flight_fail_open (EvdXreqFlight *f)
{
  evd_xreq_flight_fail (f, EVD_ERROR_KIND_BACKEND, f->x->breaker_message, 0);
}

static EvdBreakerOutcome
evd_xreq_outcome (const EvdXreqAttempt *a, EvdRows *rows, EvdErrorKind kind, guint flags)
{
  if (rows != NULL)
    return EVD_BREAKER_SUCCESS;
  if (a->stopped)
    return a->timed_out ? EVD_BREAKER_FAILURE : EVD_BREAKER_NEUTRAL;
  switch (kind) {
  case EVD_ERROR_KIND_TIMEOUT:
    return EVD_BREAKER_FAILURE;
  case EVD_ERROR_KIND_BACKEND:
    return flags & EVD_BACKEND_FAIL_CLIENT ? EVD_BREAKER_SUCCESS : EVD_BREAKER_FAILURE;
  case EVD_ERROR_KIND_CANCELLED:
    return EVD_BREAKER_NEUTRAL;
  default:
    return EVD_BREAKER_SUCCESS;  /* the backend answered: bad params, not found... */
  }
}

static void evd_xreq_flight_after_failure (EvdXreqFlight *f, const EvdXreqAttempt *a,
                                           EvdBackendCall *call, gint64 now);
static void evd_xreq_flight_arm_hedge (EvdXreqFlight *f, gint64 now);
static gboolean evd_xreq_flight_attempt (EvdXreqFlight *f, gboolean hedge, gint64 now);

/* Whether the attempt failed only because it ran out of its own time while a caller with more
 * time still waits: an attempt's deadline is the flight's when it started, and backends read
 * it once, at start (SQLite, HTTP, Redis), so a caller who joined later with a later deadline
 * would get the first caller's TIMEOUT at the first caller's deadline. */
static gboolean
evd_xreq_attempt_ran_out_early (const EvdXreqAttempt *a, EvdBackendCall *call, EvdErrorKind kind,
                                gint64 flight_deadline)
{
  gint64 deadline = evd_backend_call_deadline_us (call);

  return kind == EVD_ERROR_KIND_TIMEOUT && !a->stopped &&
         g_get_monotonic_time () >= deadline && deadline < flight_deadline;
}

/* The shared call goes on for the callers with more time (README: "each caller keeps its own
 * deadline, the shared call runs until the last caller still waiting gives up"): a new
 * attempt with the flight's deadline, made from the one that ran out (the creator may have
 * left, and a lookup without retries or hedges keeps no template). Neither a retry nor a
 * hedge: no budget, no mark. */
static void
evd_xreq_flight_go_on (EvdXreqFlight *f, EvdBackendCall *ran_out, gint64 now)
{
  f->from = ran_out;
  if (!evd_xreq_flight_attempt (f, FALSE, now))
    evd_xreq_flight_fail_open (f);
  else
    evd_xreq_flight_arm_hedge (f, now);
  f->from = NULL;
}

static void
evd_xreq_on_attempt_done (EvdBackendCall *call, EvdRows *rows, EvdErrorKind kind,
                          const char *message, guint flags, gpointer data)
{
  EvdXreqAttempt *a = data;
  EvdXreqFlight *f = a->flight;
  EvdXreq *x = f->x;
  gint64 now = evd_xreq_now (x);
  EvdCoalesceEntry *hold = evd_coalesce_entry_ref (f->entry);

  f->running--;
  for (guint i = 0; i < 2; i++)
    if (f->attempts[i] == a)
      f->attempts[i] = NULL;
  if (!f->over)
    evd_backend_call_trace_get (call, &f->trace_peer, &f->trace_http_status);
  if (x->section->breaker != NULL)
    evd_breaker_record (x->section->breaker, a->verdict, a->round,
                        evd_xreq_outcome (a, rows, kind, flags), now);
  /* Successful attempts' latencies make the p95; so does a loser's time until the winner
   * answered (it was at least that slow): leaving it out would keep the slow attempts that
   * hedging cut short out of the distribution, lower the p95, hedge more, and so on. */
  if (x->hedge != NULL && (rows != NULL || (a->stopped && !a->timed_out && f->answered)))
    evd_hedge_record (x->hedge, now - a->start_us, now);
  if (!f->over && rows != NULL) {
    if (a->hedge)
      EVD_XREQ_COUNT (x, hedges_won);
    if (x->cache != NULL) {
      gsize len;
      const void *k = evd_coalesce_entry_key (f->entry, &len);
      g_autoptr (GBytes) key = g_bytes_new (k, len);

      evd_cache_put (x->cache, key, rows, now);
    }
    f->answered = TRUE;
    evd_xreq_flight_answer (f, rows, EVD_ERROR_KIND_NONE, NULL, 0);
  } else if (!f->over) {
    g_free (f->error_message);
    f->error_kind = kind;
    f->error_message = g_strdup (message);
    f->error_flags = flags;
    f->retry_after_us = evd_backend_call_retry_after_us (call);
    if (f->running == 0)
      evd_xreq_flight_after_failure (f, a, call, now);  /* else the other may still answer */
  }
  evd_backend_call_unref (call);
  memset (a, 0, sizeof *a);  /* its slot is free */
  evd_xreq_flight_drain (f);
  evd_coalesce_entry_unref (hold);
}

/* Starts an attempt unless the breaker refuses; FALSE when it did. The attempt may complete
 * before this returns. */
static gboolean
evd_xreq_flight_attempt (EvdXreqFlight *f, gboolean hedge, gint64 now)
{
  EvdXreq *x = f->x;
  EvdBreakerVerdict verdict = EVD_BREAKER_ALLOW;
  guint64 round = 0;
  EvdXreqAttempt *a;

  if (x->section->breaker != NULL)
    verdict = evd_breaker_ask (x->section->breaker, now, &round);
  if (verdict == EVD_BREAKER_DENY) {
    EVD_XREQ_COUNT (x, breaker_rejections);
    f->marks |= EVD_MARK_BREAKER_OPEN;
    return FALSE;
  }
  a = f->slots[0].flight == NULL ? &f->slots[0] : &f->slots[1];
  g_assert (a->flight == NULL);
  a->flight = f;
  a->verdict = verdict;
  a->round = round;
  a->start_us = now;
  a->hedge = hedge;
  g_assert (f->tmpl != NULL || f->from != NULL);
  a->call = evd_backend_call_new_attempt (f->tmpl ? f->tmpl : f->from, x->klass, x->backend,
                                          evd_xreq_flight_deadline (f),
                                          evd_xreq_on_attempt_done, a);
  f->attempts[f->attempts[0] == NULL ? 0 : 1] = a;
  f->running++;
  EVD_XREQ_COUNT (x, backend_calls);
  evd_backend_call_start (a->call);
  return TRUE;
}

static void
evd_xreq_flight_on_hedge (evutil_socket_t fd, short what, void *arg)
{
  EvdXreqFlight *f = arg;
  EvdCoalesceEntry *hold = evd_coalesce_entry_ref (f->entry);
  gint64 now = evd_xreq_now (f->x);

  (void) fd, (void) what;
  if (!f->over && f->running == 1 && !f->hedged) {
    f->hedged = TRUE;  /* never more than one, sent or denied */
    if (!evd_retry_budget_withdraw (f->x->section->budget, now)) {
      EVD_XREQ_COUNT (f->x, budget_denials);
    } else if (evd_xreq_flight_attempt (f, TRUE, now)) {
      f->marks |= EVD_MARK_HEDGED;
      EVD_XREQ_COUNT (f->x, hedges_sent);
    } else {
      /* The breaker refused it: no hedge went out, and the token goes back. (Asking the
       * breaker first would take a half-open breaker's probe for a hedge the budget then
       * refuses.) */
      evd_retry_budget_refund (f->x->section->budget, now);
    }
  }
  evd_xreq_flight_drain (f);
  evd_coalesce_entry_unref (hold);
}

static void
evd_xreq_flight_arm_hedge (EvdXreqFlight *f, gint64 now)
{
  gint64 after = f->x->hedge != NULL && !f->hedged ? evd_hedge_after_us (f->x->hedge, now) : 0;
  struct timeval tv;

  if (after <= 0 || f->over || now + after >= evd_xreq_flight_deadline (f))
    return;
  if (f->hedge_timer == NULL)
    f->hedge_timer = evtimer_new (evd_loop_base (f->loop), evd_xreq_flight_on_hedge, f);
  tv.tv_sec = after / G_USEC_PER_SEC;
  tv.tv_usec = after % G_USEC_PER_SEC;
  evtimer_add (f->hedge_timer, &tv);
}

static void
evd_xreq_flight_on_retry (evutil_socket_t fd, short what, void *arg)
{
  EvdXreqFlight *f = arg;
  EvdCoalesceEntry *hold = evd_coalesce_entry_ref (f->entry);
  gint64 now = evd_xreq_now (f->x);

  (void) fd, (void) what;
  if (!f->over) {
    gboolean withdrawn = f->retry_withdrawn;

    /* The token is this attempt's from now on: one that completes inside start() may end the
     * flight or schedule the next retry (with a token of its own) before this returns. */
    f->retry_withdrawn = FALSE;
    f->retries++;
    f->marks |= EVD_MARK_RETRIED;
    EVD_XREQ_COUNT (f->x, retries);
    if (!evd_xreq_flight_attempt (f, FALSE, now)) {
      /* Refused by the breaker: it did not go out, and its token goes back. */
      if (withdrawn)
        evd_retry_budget_refund (f->x->section->budget, f->retry_withdrawn_us);
      evd_xreq_flight_fail_open (f);
    } else {
      evd_xreq_flight_arm_hedge (f, now);
    }
  }
  evd_xreq_flight_drain (f);
  evd_coalesce_entry_unref (hold);
}

/* Every attempt failed (the last was `a`, with `call`). From the flight's deadline: go on for
 * the callers with more time when the attempt only ran out of its own; retry after a backoff
 * when the error allows it, the lookup asks for it, the deadline leaves time for it and the
 * budget has room; else answer every caller with the failure. A caller may join from its
 * own loop at any moment with a later deadline, which this decision did not see: the entry
 * is sealed with the deadline decided from, and when someone joined with a later one the
 * decision is made again. (Decided and answered without it, the joiner had the first
 * caller's TIMEOUT before its own deadline, or a failure a retry in its time might cure.) */
static void
evd_xreq_flight_after_failure (EvdXreqFlight *f, const EvdXreqAttempt *a, EvdBackendCall *call,
                               gint64 now)
{
  EvdXreq *x = f->x;
  gboolean may_retry = (f->error_flags & EVD_BACKEND_FAIL_RETRYABLE) &&
                       f->retries < (guint) x->config.retries;
  /* An upstream that said when to come back (Retry-After) is not asked sooner; one that said
   * later than the deadline is not asked again. */
  gint64 backoff = may_retry ? MAX (evd_retry_backoff_us (f->retries + 1, g_random_int ()),
                                    f->retry_after_us) : 0;
  gint64 deadline;

  do {
    deadline = evd_xreq_flight_deadline (f);
    if (evd_xreq_attempt_ran_out_early (a, call, f->error_kind, deadline)) {
      evd_xreq_flight_go_on (f, call, now);
      return;
    }
    if (may_retry && now + backoff < deadline) {
      may_retry = FALSE;  /* the budget is asked once */
      if (evd_retry_budget_withdraw (x->section->budget, now)) {
        struct timeval tv = { backoff / G_USEC_PER_SEC, backoff % G_USEC_PER_SEC };

        /* Given back if the retry does not go out (evd_xreq_flight_refund_retry). */
        f->retry_withdrawn = TRUE;
        f->retry_withdrawn_us = now;
        if (f->retry_timer == NULL)
          f->retry_timer = evtimer_new (evd_loop_base (f->loop), evd_xreq_flight_on_retry, f);
        evtimer_add (f->retry_timer, &tv);
        return;
      }
      EVD_XREQ_COUNT (x, budget_denials);
    }
    evd_xreq_hook (x, EVD_XREQ_HOOK_FAILING);
  } while (!evd_coalesce_seal (f->entry, deadline));
  if (f->error_kind == EVD_ERROR_KIND_NONE || f->error_message == NULL) {
    f->error_kind = EVD_ERROR_KIND_BACKEND;
    g_free (f->error_message);
    f->error_message = g_strdup ("backend returned nothing");
  }
  evd_xreq_flight_fail (f, f->error_kind, f->error_message, f->error_flags);
}

/* The flight is over and nothing of it runs any more: give back what it held on the loop.
 * The last caller to leave (if that is how it ended) is answered now, which lets its request,
 * and the engine generation behind it, go. */
/* Answers the last caller to leave, once the flight is drained: with its stale rows when its
 * time ran out and it had some, else (its request ended, or it timed out) cancelled, which
 * the engine ignores. */
static void
evd_xreq_flight_answer_anchor (EvdXreqFlight *f)
{
  EvdXreqWaiter *anchor = g_steal_pointer (&f->anchor);

  if (anchor == NULL)
    return;
  if (anchor->timing_out && anchor->stale != NULL) {
    evd_backend_call_mark (anchor->outer, EVD_MARK_STALE |
                           (!anchor->created ? EVD_MARK_COALESCED : 0), f->retries);
    EVD_XREQ_COUNT (f->x, stale);
    evd_cache_served_stale (f->x->cache);
    evd_backend_call_return (anchor->outer, evd_rows_ref (anchor->stale));
    return;
  }
  evd_backend_call_fail (anchor->outer, EVD_ERROR_KIND_CANCELLED,
                         "cancelled: no caller is waiting");
}

static void
evd_xreq_flight_drain (EvdXreqFlight *f)
{
  if (!f->over || f->running > 0 || f->drained)
    return;
  f->drained = TRUE;
  g_clear_pointer (&f->hedge_timer, event_free);
  g_clear_pointer (&f->retry_timer, event_free);
  g_clear_pointer (&f->tmpl, evd_backend_call_unref);
  evd_xreq_flight_answer_anchor (f);
  evd_coalesce_entry_unref (f->entry);  /* the work's: may free the flight */
}

/* What the last caller to leave posts to the flight's loop. */
typedef struct {
  EvdCoalesceEntry *entry;  /* a reference */
  EvdXreqWaiter *waiter;
} EvdXreqAbandon;

/* On the flight's loop: its last caller left. An attempt may have answered meanwhile (and
 * found the entry closed): the flight may be drained already, and then the caller is
 * answered here; else when it drains. The anchor is set here, on the loop, never from the
 * caller's loop, so that the drain cannot miss it. */
static void
evd_xreq_flight_on_abandoned (gpointer data)
{
  EvdXreqAbandon *ab = data;
  EvdXreqFlight *f = evd_coalesce_entry_data (ab->entry);
  gboolean timed_out = ab->waiter->timing_out || evd_xreq_now (f->x) >= ab->waiter->deadline_us;

  f->anchor = ab->waiter;
  if (!f->over) {
    f->over = TRUE;
    evd_xreq_flight_stop_timers (f);
    evd_xreq_flight_stop_attempts (f, timed_out);
  }
  if (!f->drained) {
    evd_xreq_flight_drain (f);  /* answers the anchor if nothing runs any more */
  } else {
    /* Drained before this ran (or just now, by a cancel that completed at once). */
    evd_xreq_flight_answer_anchor (f);
  }
  evd_coalesce_entry_unref (ab->entry);
  g_free (ab);
}

static void
evd_xreq_noop_done (EvdBackendCall *call, EvdRows *rows, EvdErrorKind kind, const char *message,
                    guint flags, gpointer data)
{
  (void) call, (void) rows, (void) kind, (void) message, (void) flags, (void) data;
}

/* The creator's part: the first attempt, on the creator's loop. */
static void
evd_xreq_flight_begin (EvdXreqFlight *f, EvdCoalesceEntry *entry, EvdBackendCall *outer)
{
  EvdCoalesceEntry *hold = evd_coalesce_entry_ref (entry);
  gint64 now = evd_xreq_now (f->x);

  /* The work's reference is the one the entry was made with (evd_coalesce_join gave the
   * creator one of its own): taking another here leaked every entry (valgrind). */
  f->entry = entry;
  /* Later attempts (retries, hedges) may start after the creator left: they are made from
   * a template that holds the creator's request. A lookup with neither makes its one attempt
   * from the creator's call, in its start(), and needs none. */
  f->from = outer;
  if (f->x->config.retries > 0 || f->x->hedge != NULL)
    f->tmpl = evd_backend_call_new_attempt (outer, f->x->klass, f->x->backend,
                                            evd_xreq_flight_deadline (f), evd_xreq_noop_done,
                                            NULL);
  evd_retry_budget_deposit (f->x->section->budget, now);
  if (!evd_xreq_flight_attempt (f, FALSE, now))
    evd_xreq_flight_fail_open (f);
  else
    evd_xreq_flight_arm_hedge (f, now);
  f->from = NULL;
  evd_xreq_flight_drain (f);
  evd_coalesce_entry_unref (hold);
}

/* ---- Callers. ---- */

/* The last caller leaves: it closed the entry, and hands itself to the flight's loop. */
static void
evd_xreq_waiter_hand_over (EvdXreqWaiter *w)
{
  EvdXreqAbandon *ab = g_new (EvdXreqAbandon, 1);

  ab->entry = evd_coalesce_entry_ref (w->entry);
  ab->waiter = w;
  evd_loop_post (w->flight->loop, evd_xreq_flight_on_abandoned, ab);
}

/* On the caller's loop, a little before its deadline, when it has stale rows: a refresh that
 * has not answered by now counts as timed out, and the caller takes the stale rows. */
static void
evd_xreq_waiter_on_stale (evutil_socket_t fd, short what, void *arg)
{
  EvdXreqWaiter *w = arg;

  (void) fd, (void) what;
  w->timing_out = TRUE;
  switch (evd_coalesce_leave (w->entry, w)) {
  case EVD_COALESCE_LEFT:
    evd_backend_call_mark (w->outer, EVD_MARK_STALE |
                           (!w->created ? EVD_MARK_COALESCED : 0), 0);
    EVD_XREQ_COUNT (w->flight->x, stale);
    evd_cache_served_stale (w->flight->x->cache);
    evd_backend_call_return (w->outer, evd_rows_ref (w->stale));
    break;
  case EVD_COALESCE_LAST:
    evd_xreq_waiter_hand_over (w);  /* answered with the stale rows once the flight stopped */
    break;
  case EVD_COALESCE_CLOSED:
    break;  /* the flight's answer is on its way */
  }
}

static void
evd_xreq_waiter_arm_stale (EvdXreqWaiter *w, EvdRows *stale)
{
  EvdLoop *loop = evd_backend_call_loop (w->outer);
  gint64 now = g_get_monotonic_time ();
  gint64 margin = MIN (EVD_XREQ_STALE_MARGIN_US, (w->deadline_us - now) / 10);
  gint64 left = w->deadline_us - margin - now;
  struct timeval tv;

  if (left <= 0)
    return;
  w->stale = evd_rows_ref (stale);
  w->stale_timer = evtimer_new (evd_loop_base (loop), evd_xreq_waiter_on_stale, w);
  tv.tv_sec = left / G_USEC_PER_SEC;
  tv.tv_usec = left % G_USEC_PER_SEC;
  evtimer_add (w->stale_timer, &tv);
}

/* ---- The class the engine sees. ---- */

static void
evd_xreq_start (gpointer backend, EvdBackendCall *outer)
{
  EvdXreq *x = backend;
  g_autoptr (EvdRows) stale = NULL;
  EvdXreqKey key;
  EvdXreqWaiter *w;
  EvdXreqMake make;
  gboolean created;

  evd_xreq_key (x, outer, &key);
  if (x->cache != NULL) {
    g_autoptr (GBytes) k = g_bytes_new_static (key.data, key.len);  /* lookup only */
    EvdRows *rows = evd_cache_get (x->cache, k, evd_xreq_now (x),
                                   x->config.stale_if_error_ms > 0 ? &stale : NULL);
    if (rows != NULL) {
      evd_xreq_key_clear (&key);
      evd_backend_call_mark (outer, EVD_MARK_CACHE_HIT, 0);
      evd_backend_call_return (outer, rows);
      return;
    }
  }
  w = evd_backend_call_room (outer, sizeof *w);
  *w = (EvdXreqWaiter) { .outer = outer, .deadline_us = evd_backend_call_deadline_us (outer),
                         .offered_stale = stale != NULL };
  *evd_backend_call_data (outer) = w;
  make = (EvdXreqMake) { x, w, evd_backend_call_loop (outer) };
  /* The caller's deadline goes in with it, in one step: a flight deciding whether its time is
   * up sees either both or neither (evd_xreq_flight_after_failure). */
  w->entry = evd_coalesce_join (x->coalesce, key.data, key.len, w, w->deadline_us,
                                sizeof (EvdXreqFlight), evd_xreq_flight_init, &make,
                                evd_xreq_flight_destroy, &created);
  evd_xreq_key_clear (&key);
  w->flight = evd_coalesce_entry_data (w->entry);
  if (!created)
    evd_xreq_hook (x, EVD_XREQ_HOOK_JOINED);
  if (stale != NULL)
    evd_xreq_waiter_arm_stale (w, stale);
  if (!created) {
    EVD_XREQ_COUNT (x, coalesced);
    return;
  }
  w->flight->stale = g_steal_pointer (&stale);
  evd_xreq_flight_begin (w->flight, w->entry, outer);
}

/* The engine gave up on this caller (its deadline, its request's end). */
static void
evd_xreq_cancel (gpointer backend, EvdBackendCall *outer)
{
  EvdXreqWaiter *w = *evd_backend_call_data (outer);

  (void) backend;
  if (w == NULL)
    return;  /* answered from the cache: completed already */
  if (w->stale_timer != NULL)
    event_del (w->stale_timer);
  switch (evd_coalesce_leave (w->entry, w)) {
  case EVD_COALESCE_LEFT:
    evd_backend_call_fail (outer, EVD_ERROR_KIND_CANCELLED, "cancelled");
    break;
  case EVD_COALESCE_LAST:
    /* Answered when the flight has stopped: see evd_xreq_flight_drain. */
    evd_xreq_waiter_hand_over (w);
    break;
  case EVD_COALESCE_CLOSED:
    break;  /* the flight's answer is on its way */
  }
}

/* The engine took the caller's completion: its hold on the flight goes. */
static void
evd_xreq_release (gpointer backend, EvdBackendCall *outer)
{
  EvdXreqWaiter *w = *evd_backend_call_data (outer);

  (void) backend;
  if (w == NULL)
    return;
  *evd_backend_call_data (outer) = NULL;
  g_clear_pointer (&w->stale_timer, event_free);
  g_clear_pointer (&w->stale, evd_rows_unref);
  evd_coalesce_entry_unref (w->entry);  /* w is in the call's room: nothing to free */
}

const EvdBackendClass evd_xreq_class = {
  .kind = "xreq",
  .start = evd_xreq_start,
  .cancel = evd_xreq_cancel,
  .release = evd_xreq_release,
  .close = evd_xreq_close,
};

/* ---- Metrics. ---- */

typedef struct {
  const char *name, *help;
  gsize offset;             /* in EvdXreqStats or EvdCacheStats */
} EvdXreqFamily;

static void
evd_xreq_collect_cache (EvdXreq *const *xs, const char *const *names, guint n, GString *out)
{
  static const EvdXreqFamily families[] = {
    { "evdal_lookup_cache_hits_total", "Calls answered from the lookup's result cache.",
      G_STRUCT_OFFSET (EvdCacheStats, hits) },
    { "evdal_lookup_cache_misses_total", "Calls the result cache could not answer.",
      G_STRUCT_OFFSET (EvdCacheStats, misses) },
    { "evdal_lookup_cache_stale_total", "Calls answered with expired rows because the refresh "
      "failed (stale_if_error_ms).", G_STRUCT_OFFSET (EvdCacheStats, stale) },
    { "evdal_lookup_cache_evictions_total", "Entries evicted to stay within cache_max_bytes.",
      G_STRUCT_OFFSET (EvdCacheStats, evictions) },
  };

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    evd_metrics_family (out, families[f].name, "counter", families[f].help);
    for (guint i = 0; i < n; i++) {
      EvdCacheStats s;
      if (xs[i]->cache == NULL)
        continue;
      evd_cache_stats (xs[i]->cache, &s);
      evd_metrics_sample (out, families[f].name,
                          (double) G_STRUCT_MEMBER (guint64, &s, families[f].offset),
                          "lookup", names[i], NULL);
    }
  }
  evd_metrics_family (out, "evdal_lookup_cache_bytes", "gauge",
                      "Bytes (encoded tables) held by the lookup's result cache.");
  for (guint i = 0; i < n; i++) {
    EvdCacheStats s;
    if (xs[i]->cache == NULL)
      continue;
    evd_cache_stats (xs[i]->cache, &s);
    evd_metrics_sample (out, "evdal_lookup_cache_bytes", (double) s.bytes, "lookup", names[i],
                        NULL);
  }
  evd_metrics_family (out, "evdal_lookup_cache_entries", "gauge",
                      "Entries held by the lookup's result cache.");
  for (guint i = 0; i < n; i++) {
    EvdCacheStats s;
    if (xs[i]->cache == NULL)
      continue;
    evd_cache_stats (xs[i]->cache, &s);
    evd_metrics_sample (out, "evdal_lookup_cache_entries", (double) s.entries, "lookup",
                        names[i], NULL);
  }
  evd_metrics_family (out, "evdal_cache_bytes", "gauge",
                      "Bytes held by every result cache of the process ([server] "
                      "cache_max_bytes bounds it).");
  evd_metrics_sample (out, "evdal_cache_bytes",
                      (double) __atomic_load_n (&evd_cache_budget_process ()->bytes,
                                                __ATOMIC_RELAXED), NULL);
}

void
evd_xreq_collect (EvdXreq *const *xs, const char *const *names, guint n, GString *out)
{
  static const EvdXreqFamily families[] = {
    { "evdal_lookup_coalesced_total", "Calls that joined an identical call in flight "
      "(coalesce).", G_STRUCT_OFFSET (EvdXreqStats, coalesced) },
    { "evdal_lookup_backend_calls_total", "Attempts sent to the backend by lookups with "
      "coalescing, a cache, hedges, retries or a breaker.",
      G_STRUCT_OFFSET (EvdXreqStats, backend_calls) },
    { "evdal_lookup_hedges_sent_total", "Hedged attempts sent.",
      G_STRUCT_OFFSET (EvdXreqStats, hedges_sent) },
    { "evdal_lookup_hedges_won_total", "Hedged attempts that answered first.",
      G_STRUCT_OFFSET (EvdXreqStats, hedges_won) },
    { "evdal_lookup_retries_total", "Retries sent.", G_STRUCT_OFFSET (EvdXreqStats, retries) },
    { "evdal_lookup_budget_denials_total", "Retries and hedges the retry budget refused.",
      G_STRUCT_OFFSET (EvdXreqStats, budget_denials) },
    { "evdal_lookup_breaker_rejections_total", "Attempts the circuit breaker refused.",
      G_STRUCT_OFFSET (EvdXreqStats, breaker_rejections) },
  };

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    evd_metrics_family (out, families[f].name, "counter", families[f].help);
    for (guint i = 0; i < n; i++) {
      EvdXreqStats s;
      evd_xreq_stats (xs[i], &s);
      evd_metrics_sample (out, families[f].name,
                          (double) G_STRUCT_MEMBER (guint64, &s, families[f].offset),
                          "lookup", names[i], NULL);
    }
  }
  evd_xreq_collect_cache (xs, names, n, out);
}

/* evd_breaker: the circuit breaker of one database or upstream (see evd_breaker.h). */
#include "evd_breaker.h"

/* The window slides in this many steps: a failure leaves it at most window_ms / 10 late,
 * and the state stays a few dozen bytes however many calls go through. */
#define EVD_BREAKER_BUCKETS 10

typedef struct {
  gint64 slot;              /* which window_ms / BUCKETS period it counts; -1: unused */
  guint calls, failures;
} EvdBreakerBucket;

struct _EvdBreaker {
  char *name;
  EvdBreakerConfig config;
  GMutex lock;
  EvdBreakerState state;
  gint64 opened_us;         /* when it last opened */
  int probes_out;           /* half-open: probes let through and not yet ended */
  int probes_sent;          /* half-open: probes let through since it became half-open */
  int probes_ok;
  EvdBreakerBucket buckets[EVD_BREAKER_BUCKETS];
  guint64 transitions[EVD_BREAKER_N_STATES];
};

gboolean
evd_breaker_config_read (EvdConfig *cfg, const char *group, EvdBreakerConfig *out)
{
  g_autofree char *on = evd_config_string (cfg, group, "breaker", "off");
  gboolean enabled = FALSE;

  if (g_strcmp0 (on, "on") == 0 || g_strcmp0 (on, "true") == 0)
    enabled = TRUE;
  else if (g_strcmp0 (on, "off") != 0 && g_strcmp0 (on, "false") != 0)
    evd_config_problem (cfg, group, "breaker", "\"%s\" is not on or off", on);
  out->min_calls = (int) evd_config_int (cfg, group, "breaker_min_calls", 20, 1, 1000000);
  out->window_ms = evd_config_int (cfg, group, "breaker_window_ms", 10000, 10, 3600000);
  out->open_ms = evd_config_int (cfg, group, "breaker_open_ms", 5000, 1, 3600000);
  out->probes = (int) evd_config_int (cfg, group, "breaker_probes", 3, 1, 1000);
  out->failure_ratio = 0.5;
  if (evd_config_has_key (cfg, group, "breaker_failure_ratio")) {
    g_autofree char *text = evd_config_string (cfg, group, "breaker_failure_ratio", "0.5");
    char *end = NULL;
    double v = g_ascii_strtod (text, &end);

    if (end == text || *end != '\0' || !(v > 0.0 && v <= 1.0))
      evd_config_problem (cfg, group, "breaker_failure_ratio",
                          "\"%s\" is not a number in (0, 1]", text);
    else
      out->failure_ratio = v;
  }
  return enabled;
}

EvdBreaker *
evd_breaker_new (const char *name, const EvdBreakerConfig *config)
{
  EvdBreaker *b = g_new0 (EvdBreaker, 1);

  b->name = g_strdup (name);
  b->config = *config;
  g_mutex_init (&b->lock);
  for (guint i = 0; i < EVD_BREAKER_BUCKETS; i++)
    b->buckets[i].slot = -1;
  return b;
}

void
evd_breaker_free (EvdBreaker *b)
{
  if (b == NULL)
    return;
  g_mutex_clear (&b->lock);
  g_free (b->name);
  g_free (b);
}

const char *
evd_breaker_name (EvdBreaker *b)
{
  return b->name;
}

const char *
evd_breaker_state_name (EvdBreakerState state)
{
  static const char *const names[] = { "closed", "open", "half_open" };

  return state < EVD_BREAKER_N_STATES ? names[state] : "?";
}

static gint64
evd_breaker_bucket_us (EvdBreaker *b)
{
  return MAX (b->config.window_ms * 1000 / EVD_BREAKER_BUCKETS, 1);
}

/* The window's totals as of now. */
static void
evd_breaker_window (EvdBreaker *b, gint64 now_us, guint *calls, guint *failures)
{
  gint64 current = now_us / evd_breaker_bucket_us (b);

  *calls = *failures = 0;
  for (guint i = 0; i < EVD_BREAKER_BUCKETS; i++) {
    const EvdBreakerBucket *k = &b->buckets[i];
    if (k->slot >= 0 && k->slot > current - EVD_BREAKER_BUCKETS) {
      *calls += k->calls;
      *failures += k->failures;
    }
  }
}

static void
evd_breaker_count (EvdBreaker *b, gint64 now_us, gboolean failed)
{
  gint64 slot = now_us / evd_breaker_bucket_us (b);
  EvdBreakerBucket *k = &b->buckets[slot % EVD_BREAKER_BUCKETS];

  if (k->slot != slot)
    *k = (EvdBreakerBucket) { slot, 0, 0 };
  k->calls++;
  k->failures += failed;
}

static void
evd_breaker_forget (EvdBreaker *b)
{
  for (guint i = 0; i < EVD_BREAKER_BUCKETS; i++)
    b->buckets[i] = (EvdBreakerBucket) { -1, 0, 0 };
}

/* Under the lock; the caller logs `why` after unlocking. */
static void
evd_breaker_move (EvdBreaker *b, EvdBreakerState to, gint64 now_us)
{
  b->state = to;
  b->transitions[to]++;
  if (to == EVD_BREAKER_OPEN)
    b->opened_us = now_us;
  if (to == EVD_BREAKER_HALF_OPEN)
    b->probes_out = b->probes_sent = b->probes_ok = 0;
  if (to == EVD_BREAKER_CLOSED)
    evd_breaker_forget (b);
}

static void
evd_breaker_log (EvdBreaker *b, EvdBreakerState from, EvdBreakerState to, const char *why)
{
  if (from != to)
    g_message ("breaker %s: %s -> %s (%s)", b->name, evd_breaker_state_name (from),
               evd_breaker_state_name (to), why);
}

/* Open for open_ms already: half-open now. Under the lock. */
static gboolean
evd_breaker_maybe_half_open (EvdBreaker *b, gint64 now_us)
{
  if (b->state != EVD_BREAKER_OPEN || now_us - b->opened_us < b->config.open_ms * 1000)
    return FALSE;
  evd_breaker_move (b, EVD_BREAKER_HALF_OPEN, now_us);
  return TRUE;
}

EvdBreakerVerdict
evd_breaker_ask (EvdBreaker *b, gint64 now_us, guint64 *round)
{
  EvdBreakerVerdict v = EVD_BREAKER_DENY;
  gboolean moved;

  g_mutex_lock (&b->lock);
  moved = evd_breaker_maybe_half_open (b, now_us);
  if (b->state == EVD_BREAKER_CLOSED) {
    v = EVD_BREAKER_ALLOW;
  } else if (b->state == EVD_BREAKER_HALF_OPEN && b->probes_sent < b->config.probes) {
    b->probes_sent++;
    b->probes_out++;
    v = EVD_BREAKER_PROBE;
  }
  if (round != NULL)
    *round = b->transitions[EVD_BREAKER_HALF_OPEN];
  g_mutex_unlock (&b->lock);
  if (moved)
    evd_breaker_log (b, EVD_BREAKER_OPEN, EVD_BREAKER_HALF_OPEN, "open_ms passed: probing");
  return v;
}

void
evd_breaker_record (EvdBreaker *b, EvdBreakerVerdict verdict, guint64 round,
                    EvdBreakerOutcome outcome, gint64 now_us)
{
  EvdBreakerState from, to;
  char why[128] = "";

  g_mutex_lock (&b->lock);
  from = b->state;
  if (verdict == EVD_BREAKER_ALLOW && b->state == EVD_BREAKER_CLOSED &&
      outcome != EVD_BREAKER_NEUTRAL) {
    guint calls, failures;

    evd_breaker_count (b, now_us, outcome == EVD_BREAKER_FAILURE);
    evd_breaker_window (b, now_us, &calls, &failures);
    if (outcome == EVD_BREAKER_FAILURE && calls >= (guint) b->config.min_calls &&
        failures >= b->config.failure_ratio * calls) {
      g_snprintf (why, sizeof why, "%u of %u calls failed in %" G_GINT64_FORMAT " ms",
                  failures, calls, b->config.window_ms);
      evd_breaker_move (b, EVD_BREAKER_OPEN, now_us);
    }
  } else if (verdict == EVD_BREAKER_PROBE && b->state == EVD_BREAKER_HALF_OPEN &&
             round == b->transitions[EVD_BREAKER_HALF_OPEN]) {
    b->probes_out--;
    if (outcome == EVD_BREAKER_NEUTRAL) {
      b->probes_sent--;  /* its place goes to the next call */
    } else if (outcome == EVD_BREAKER_FAILURE) {
      g_snprintf (why, sizeof why, "a probe failed");
      evd_breaker_move (b, EVD_BREAKER_OPEN, now_us);
    } else if (++b->probes_ok == b->config.probes) {
      g_snprintf (why, sizeof why, "%d probes succeeded", b->config.probes);
      evd_breaker_move (b, EVD_BREAKER_CLOSED, now_us);
    }
  }
  /* Anything else ended after the state changed under it (a call let through while closed
   * that ends while open, a probe of an earlier half-open round): it says nothing about the
   * new state. */
  to = b->state;
  g_mutex_unlock (&b->lock);
  evd_breaker_log (b, from, to, why);
}

EvdBreakerState
evd_breaker_state (EvdBreaker *b, gint64 now_us)
{
  EvdBreakerState s;
  gboolean moved;

  g_mutex_lock (&b->lock);
  moved = evd_breaker_maybe_half_open (b, now_us);
  s = b->state;
  g_mutex_unlock (&b->lock);
  if (moved)
    evd_breaker_log (b, EVD_BREAKER_OPEN, EVD_BREAKER_HALF_OPEN, "open_ms passed: probing");
  return s;
}

guint64
evd_breaker_transitions (EvdBreaker *b, EvdBreakerState state)
{
  guint64 n;

  g_mutex_lock (&b->lock);
  n = b->transitions[state];
  g_mutex_unlock (&b->lock);
  return n;
}

/* evd_backend_delay: a lookup that waits, then answers [slept_ms]: for demos, tests and
 * benchmarks of the fan-out itself. It waits on a timer of the request's loop, never in a
 * sleeping thread, which is the whole point of an evented server.
 *
 *   [lookup nap]
 *   backend = delay
 *   delay_ms = 100      # default; a call's int param delay_ms overrides
 *   tail_ms = 0         # with tail_every: every tail_every-th call of the lookup waits this
 *   tail_every = 0      # long instead (a slow tail you control: 50 -> 2% of calls)
 */
#include <event2/event.h>

#include "evd_backend.h"

/* An hour: a delay is a test tool, and a longer one is a typo. */
#define EVD_DELAY_MAX_MS 3600000

typedef struct {
  gint64 default_ms;
  gint64 tail_ms, tail_every;
  gint64 calls;             /* atomic */
} EvdBackendDelay;

typedef struct {
  struct event *timer;
  gint64 ms;
} EvdBackendDelayCall;

static gpointer
evd_backend_delay_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  (void) shared;
  EvdBackendDelay *d = g_new0 (EvdBackendDelay, 1);

  d->default_ms = evd_config_int (cfg, spec->group, "delay_ms", 100, 0, EVD_DELAY_MAX_MS);
  d->tail_ms = evd_config_int (cfg, spec->group, "tail_ms", 0, 0, EVD_DELAY_MAX_MS);
  d->tail_every = evd_config_int (cfg, spec->group, "tail_every", 0, 0, 1000000000);
  evd_lookup_spec_add_param (spec, "delay_ms", EVD_PARAM_INT, FALSE);
  return d;
}

static void
evd_backend_delay_call_free (EvdBackendCall *call)
{
  EvdBackendDelayCall *dc = *evd_backend_call_data (call);

  *evd_backend_call_data (call) = NULL;
  event_free (dc->timer);
  g_free (dc);
}

static void
evd_backend_delay_on_timer (evutil_socket_t fd, short what, void *arg)
{
  EvdBackendCall *call = arg;
  EvdBackendDelayCall *dc = *evd_backend_call_data (call);
  static const char *const columns[] = { "slept_ms" };
  EvdRows *rows = evd_rows_new (1, columns);

  (void) fd;
  (void) what;
  evd_rows_add_int (rows, dc->ms);
  evd_backend_delay_call_free (call);
  evd_backend_call_return (call, rows);
}

static void
evd_backend_delay_start (gpointer backend, EvdBackendCall *call)
{
  EvdBackendDelay *d = backend;
  EvdBackendDelayCall *dc = g_new0 (EvdBackendDelayCall, 1);
  const EvdValue *v = evd_backend_call_param (call, "delay_ms");
  struct timeval tv;

  dc->ms = v && v->kind == EVD_VALUE_INT ? v->i : d->default_ms;
  if (d->tail_every > 0 &&
      __atomic_add_fetch (&d->calls, 1, __ATOMIC_RELAXED) % d->tail_every == 0)
    dc->ms = d->tail_ms;
  if (dc->ms < 0 || dc->ms > EVD_DELAY_MAX_MS) {
    gint64 ms = dc->ms;

    g_free (dc);
    evd_backend_call_fail (call, EVD_ERROR_KIND_BAD_PARAMS,
                           "param delay_ms: %" G_GINT64_FORMAT " is outside 0..%d", ms,
                           EVD_DELAY_MAX_MS);
    return;
  }
  tv.tv_sec = dc->ms / 1000;
  tv.tv_usec = (dc->ms % 1000) * 1000;
  dc->timer = evtimer_new (evd_loop_base (evd_backend_call_loop (call)), evd_backend_delay_on_timer, call);
  *evd_backend_call_data (call) = dc;
  evtimer_add (dc->timer, &tv);
}

static void
evd_backend_delay_cancel (gpointer backend, EvdBackendCall *call)
{
  (void) backend;
  if (*evd_backend_call_data (call) == NULL)
    return;  /* already completed */
  evd_backend_delay_call_free (call);
  evd_backend_call_fail (call, EVD_ERROR_KIND_CANCELLED, "cancelled");
}

const EvdBackendClass evd_backend_delay_class = {
  .kind = "delay",
  .open = evd_backend_delay_open,
  .start = evd_backend_delay_start,
  .cancel = evd_backend_delay_cancel,
  .close = g_free,
};

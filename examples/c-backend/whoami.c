/* whoami: an example backend kind that answers who is asking, after a pause on the loop. */
#include <event2/event.h>
#include "evd_backend.h"

/* [lookup me]  backend = whoami  pause_ms = 5 */
typedef struct { gint64 pause_ms; } Whoami;

static gpointer whoami_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec) {
  Whoami *w = g_new0 (Whoami, 1);
  (void) shared;                      /* no setup(): nothing shared between lookups */
  w->pause_ms = evd_config_int (cfg, spec->group, "pause_ms", 0, 0, 10000);
  return w;                           /* declares no params: calls that give one get BAD_PARAMS */
}
static void whoami_answer (evutil_socket_t fd, short what, void *arg) {
  EvdBackendCall *call = arg;
  const EvdRequestContext *ctx = evd_backend_call_context (call);
  static const char *const cols[] = { "request_id", "principal" };
  EvdRows *t = evd_rows_new (2, cols);
  (void) fd, (void) what;
  evd_rows_add_text (t, ctx->request_id, -1);
  evd_rows_add_text (t, ctx->principal ? ctx->principal : "anonymous", -1);
  g_clear_pointer (evd_backend_call_data (call), event_free);
  evd_backend_call_return (call, t);  /* exactly once; the rows are handed over */
}
static void whoami_start (gpointer backend, EvdBackendCall *call) {
  Whoami *w = backend;
  struct timeval tv = { w->pause_ms / 1000, (w->pause_ms % 1000) * 1000 };
  struct event *ev = evtimer_new (evd_loop_base (evd_backend_call_loop (call)), whoami_answer, call);
  *evd_backend_call_data (call) = ev;
  evtimer_add (ev, &tv);              /* the loop waits; no thread sleeps */
}
static void whoami_cancel (gpointer backend, EvdBackendCall *call) {
  (void) backend;
  if (*evd_backend_call_data (call) == NULL) return;  /* already answered */
  g_clear_pointer (evd_backend_call_data (call), event_free);
  evd_backend_call_fail (call, EVD_ERROR_KIND_CANCELLED, "cancelled");  /* still completes */
}
const EvdBackendClass whoami_class = {
  .kind = "whoami", .open = whoami_open, .start = whoami_start,
  .cancel = whoami_cancel, .close = g_free,  /* setup, teardown, release, collect: none */
};

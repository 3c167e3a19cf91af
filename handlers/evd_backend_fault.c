/* evd_backend_fault: a backend that misbehaves on purpose, so that frontends (and evdal's own
 * tests) can see how failures surface: the fan-out engine must survive every one of these.
 *
 *   [lookup broken]
 *   backend = fault
 *   mode = fail        # fail | hang | double | late | thread | context | stall
 *   delay_ms = 10      # for double, late and thread; a call's int param delay_ms overrides
 *   required_param = user_id   # optional: an int param every call must give
 *   fail_first = 0     # the first N calls of the lookup fail with BACKEND, whatever the mode
 *   fail_while_exists = /path  # calls fail with BACKEND while this file exists (a test's
 *                      # switch: an upstream that goes down and comes back)
 *   retryable = false  # those failures (and mode fail's) say they may be retried
 *
 * fail:   every call fails with BACKEND.
 * ok:     answers after delay_ms with [answer = "ok", call = N], N counting the lookup's
 *         calls from 1: what a test counts backend executions by.
 * hang:   never answers until cancelled (its deadline passes, or the request ends).
 * double: answers after delay_ms, then answers again (the second must be ignored).
 * late:   ignores cancel, and answers after delay_ms even when cancelled long before.
 * thread: answers from a thread of its own after delay_ms (a worker pool's path).
 * stall:  blocks the loop for delay_ms inside start(), as a badly written backend would,
 *         then answers: what stall_warn_ms and max_queue_ms are there to catch.
 * context: answers at once with the request context it was handed (request_id, principal,
 *         trace, ms left to the deadline, attributes as "k=v;...", and the traceparent and
 *         tracestate an upstream of the call would get), to show what reaches a
 *         backend.
 * Every cancel is logged at info level with the request id: what a test can look for.
 */
#include <event2/event.h>
#include <string.h>

#include "evd_backend.h"

typedef enum {
  FAULT_FAIL, FAULT_HANG, FAULT_DOUBLE, FAULT_LATE, FAULT_THREAD, FAULT_CONTEXT, FAULT_STALL,
  FAULT_OK
} EvdBackendFaultMode;

static const char *const evd_fault_modes[] = {
  "fail", "hang", "double", "late", "thread", "context", "stall", "ok"
};

typedef struct {
  EvdBackendFaultMode mode;
  gint64 delay_ms;
  gint64 fail_first;
  char *fail_while_exists;  /* NULL: none */
  gboolean retryable;
  gint64 calls;             /* atomic: calls started, for fail_first and mode ok */
} EvdBackendFault;

typedef struct {
  EvdBackendCall *call;
  EvdBackendFaultMode mode;
  gint64 delay_ms;
  gint64 n;                 /* which call of the lookup */
  struct event *timer;
} EvdBackendFaultCall;

static gpointer
evd_backend_fault_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  (void) shared;
  g_autofree char *mode = evd_config_string (cfg, spec->group, "mode", "fail");
  EvdBackendFault *f = g_new0 (EvdBackendFault, 1);
  guint i;

  for (i = 0; i < G_N_ELEMENTS (evd_fault_modes); i++)
    if (strcmp (mode, evd_fault_modes[i]) == 0)
      break;
  if (i == G_N_ELEMENTS (evd_fault_modes)) {
    evd_config_problem (cfg, spec->group, "mode", "\"%s\" is not fail, hang, double, late, "
                        "thread, context, stall or ok", mode);
    g_free (f);
    return NULL;
  }
  f->mode = (EvdBackendFaultMode) i;
  f->delay_ms = evd_config_int (cfg, spec->group, "delay_ms", 10, 0, 60000);
  f->fail_first = evd_config_int (cfg, spec->group, "fail_first", 0, 0, G_MAXINT64);
  f->retryable = evd_config_bool (cfg, spec->group, "retryable", FALSE);
  if (evd_config_has_key (cfg, spec->group, "fail_while_exists"))
    f->fail_while_exists = evd_config_string (cfg, spec->group, "fail_while_exists", "");
  evd_lookup_spec_add_param (spec, "delay_ms", EVD_PARAM_INT, FALSE);
  if (evd_config_has_key (cfg, spec->group, "required_param")) {
    g_autofree char *name = evd_config_require (cfg, spec->group, "required_param");
    if (name != NULL)
      evd_lookup_spec_add_param (spec, name, EVD_PARAM_INT, TRUE);
  }
  return f;
}

static EvdRows *
evd_backend_fault_table (const char *what)
{
  static const char *const columns[] = { "answer" };
  EvdRows *t = evd_rows_new (1, columns);

  evd_rows_add_text (t, what, -1);
  return t;
}

static void
evd_backend_fault_on_timer (evutil_socket_t fd, short what, void *arg)
{
  EvdBackendFaultCall *fc = arg;
  EvdBackendCall *call = fc->call;

  (void) fd;
  (void) what;
  *evd_backend_call_data (call) = NULL;
  event_free (fc->timer);
  if (fc->mode == FAULT_DOUBLE) {
    evd_backend_call_return (call, evd_backend_fault_table ("first"));
    evd_backend_call_fail (call, EVD_ERROR_KIND_BACKEND, "second answer");
  } else if (fc->mode == FAULT_OK) {
    static const char *const columns[] = { "answer", "call" };
    EvdRows *t = evd_rows_new (2, columns);

    evd_rows_add_text (t, "ok", -1);
    evd_rows_add_int (t, fc->n);
    evd_backend_call_return (call, t);
  } else {
    evd_backend_call_return (call, evd_backend_fault_table (fc->mode == FAULT_LATE ? "late" : "ok"));
  }
  g_free (fc);
}

static EvdRows *
evd_backend_fault_context_table (EvdBackendCall *call)
{
  const EvdRequestContext *ctx = evd_backend_call_context (call);
  static const char *const columns[] = {
    "request_id", "principal", "trace", "deadline_left_ms", "attributes", "traceparent",
    "tracestate"
  };
  char traceparent[EVD_TRACEPARENT_LEN + 1];
  EvdRows *t = evd_rows_new (G_N_ELEMENTS (columns), columns);
  g_autoptr (GString) attrs = g_string_new (NULL);
  g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (ctx->attributes),
                                        (GCompareFunc) strcmp);

  for (GList *k = keys; k != NULL; k = k->next)
    g_string_append_printf (attrs, "%s=%s;", (char *) k->data,
                            (char *) g_hash_table_lookup (ctx->attributes, k->data));
  evd_rows_add_text (t, ctx->request_id, -1);
  if (ctx->principal != NULL)
    evd_rows_add_text (t, ctx->principal, -1);
  else
    evd_rows_add_null (t);
  evd_rows_add_int (t, ctx->trace);
  evd_rows_add_int (t, (ctx->deadline_us - g_get_monotonic_time ()) / 1000);
  evd_rows_add_text (t, attrs->str, (gssize) attrs->len);
  /* what an upstream of this call would be sent (evd_backend.h, "Trace context out") */
  evd_backend_call_traceparent (call, traceparent);
  evd_rows_add_text (t, traceparent, -1);
  if (evd_backend_call_tracestate (call) != NULL)
    evd_rows_add_text (t, evd_backend_call_tracestate (call), -1);
  else
    evd_rows_add_null (t);
  return t;
}

static gpointer
evd_backend_fault_thread (gpointer data)
{
  EvdBackendFaultCall *fc = data;

  g_usleep ((gulong) fc->delay_ms * 1000);
  evd_backend_call_return (fc->call, evd_backend_fault_table ("from a thread"));
  g_free (fc);
  return NULL;
}

static void
evd_backend_fault_start (gpointer backend, EvdBackendCall *call)
{
  EvdBackendFault *f = backend;
  EvdBackendFaultCall *fc = g_new0 (EvdBackendFaultCall, 1);
  const EvdValue *v = evd_backend_call_param (call, "delay_ms");
  struct timeval tv;

  fc->call = call;
  fc->mode = f->mode;
  fc->delay_ms = v && v->kind == EVD_VALUE_INT ? CLAMP (v->i, 0, 60000) : f->delay_ms;
  fc->n = __atomic_add_fetch (&f->calls, 1, __ATOMIC_RELAXED);
  if (f->mode == FAULT_FAIL || fc->n <= f->fail_first ||
      (f->fail_while_exists != NULL && g_file_test (f->fail_while_exists, G_FILE_TEST_EXISTS))) {
    g_free (fc);
    evd_backend_call_fail_full (call, f->retryable ? EVD_BACKEND_FAIL_RETRYABLE : 0,
                                EVD_ERROR_KIND_BACKEND, "injected failure");
    return;
  }
  switch (f->mode) {
  case FAULT_HANG:
    *evd_backend_call_data (call) = fc;  /* waits for cancel */
    return;
  case FAULT_CONTEXT:
    g_free (fc);
    evd_backend_call_return (call, evd_backend_fault_context_table (call));
    return;
  case FAULT_STALL:
    g_usleep ((gulong) fc->delay_ms * 1000);  /* on the loop thread: the whole point */
    g_free (fc);
    evd_backend_call_return (call, evd_backend_fault_table ("stalled"));
    return;
  case FAULT_THREAD:
    g_thread_unref (g_thread_new ("evdal-fault", evd_backend_fault_thread, fc));
    return;
  default:
    tv.tv_sec = fc->delay_ms / 1000;
    tv.tv_usec = (fc->delay_ms % 1000) * 1000;
    fc->timer = evtimer_new (evd_loop_base (evd_backend_call_loop (call)), evd_backend_fault_on_timer,
                             fc);
    *evd_backend_call_data (call) = fc;
    evtimer_add (fc->timer, &tv);
  }
}

static void
evd_backend_fault_cancel (gpointer backend, EvdBackendCall *call)
{
  EvdBackendFault *f = backend;
  EvdBackendFaultCall *fc = *evd_backend_call_data (call);

  g_info ("[%s] fault backend: call cancelled", evd_backend_call_context (call)->request_id);
  if (fc == NULL || f->mode == FAULT_LATE)
    return;  /* answered already, or (late) will answer when its timer fires */
  *evd_backend_call_data (call) = NULL;
  if (fc->timer != NULL)
    event_free (fc->timer);
  g_free (fc);
  evd_backend_call_fail (call, EVD_ERROR_KIND_CANCELLED, "cancelled");
}

static void
evd_backend_fault_close (gpointer backend)
{
  EvdBackendFault *f = backend;

  g_free (f->fail_while_exists);
  g_free (f);
}

const EvdBackendClass evd_backend_fault_class = {
  .kind = "fault",
  .open = evd_backend_fault_open,
  .start = evd_backend_fault_start,
  .cancel = evd_backend_fault_cancel,
  .close = evd_backend_fault_close,
};

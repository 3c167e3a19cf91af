/* evd_engine: fan-out, deadlines, cancellation and merge of one fetch (see evd_engine.h). */
#include "evd_engine.h"

#include <event2/event.h>
#include <stdarg.h>
#include <string.h>

#include "evd_cache.h"
#include "evd_log.h"
#include "evd_response.h"
#include "evdal_data_access.h"

/* Bytes of a client's request id or call key quoted in a refusal's log line (the line as a
 * whole is cut by evd_log too): enough to find the request, never megabytes. */
#define EVD_ENGINE_LOG_NAME_MAX 128

/* What an Overloaded reply suggests: long enough for a burst to pass, short enough that a
 * frontend retrying once still answers its own user in time. */
#define EVD_ENGINE_RETRY_AFTER_MS 50

struct _EvdEngine {
  gatomicrefcount refs;
  EvdConfig *cfg;
  const EvdServerConfig *sc;  /* in cfg */
  EvdLookupSet *lookups;
  EvdEngineCounters *counters;
  /* fetch's Overloaded replies, encoded once: one says max_queue_ms, one max_inflight */
  EvdRpcCanned *shed_queue, *shed_inflight;
  GHashTable *no_attributes;  /* the context's attributes of every fetch that sends none */
};

typedef struct _EvdFetch EvdFetch;
typedef struct _EvdSlot EvdSlot;

/* A backend's answer on its way to the request's loop. */
typedef struct {
  EvdBackendCall *call;
  EvdRows *rows;
  evdalLookupError *error;
  guint flags;                /* EvdBackendFailFlags of an error */
} EvdCompletion;

/* A run of one backend. A slot's lives inside its slot, so inside the fetch's block, and
 * holds a reference on the fetch: the memory stays until the backend lets go of it too. One
 * made by a layer between the engine and the backends (evd_backend_call_new_attempt) is an
 * allocation of its own, owned by that layer, and holds a reference on the fetch of the call
 * it derives from (if any), so that its context outlives it. */
struct _EvdBackendCall {
  guint refs;                 /* the slot's (or owner's) and the backend's */
  EvdSlot *slot;              /* NULL once the slot stopped waiting for it, or no slot's */
  EvdFetch *fetch;            /* a ref: the context must outlive every backend call; NULL for
                                 a call made without the engine (evd_backend_call_new) */
  EvdLoop *loop;
  const EvdRequestContext *ctx;
  const EvdBackendClass *klass;
  gpointer backend;
  EvdLookup *lookup;          /* a slot's: whose bulkhead place it holds; else NULL */
  const EvdParam *params;     /* in the request, which the fetch holds */
  guint n_params;
  gint64 deadline_us;
  gpointer data;
  gboolean completed;
  guint marks;                /* EvdBackendMark, for the span */
  guint retries;
  gint64 retry_after_us;      /* what the backend was told to wait before a retry; 0: none */
  EvdBackendCallDone done;    /* not a slot's: who receives the completion */
  gpointer done_data;
  /* The first completion travels in here, so that a backend's thread (a SQLite worker)
   * allocates nothing that the loop must free: glibc makes a free from another thread
   * take that thread's arena lock. Set by whichever thread completes; a buggy second
   * completion gets memory of its own. */
  gint first_taken;           /* atomic */
  EvdCompletion first;
  /* tracing: the call's span id (its slot's), and what the backend said of its upstream */
  guint8 span_id[8];
  const char *trace_peer;     /* server.address, or NULL */
  int trace_http_status;      /* 0 when none */
  union {                     /* evd_backend_call_room: zeroed with the rest of the call */
    guint8 bytes[EVD_BACKEND_CALL_ROOM];
    gint64 i;
    double d;
    gpointer p;
  } room;
};

/* One execution of one lookup; the calls it serves are those planned onto it. */
struct _EvdSlot {
  EvdFetch *fetch;
  EvdLookup *lookup;
  const EvdParam *params;     /* the first call's params, in the request */
  guint n_params;
  const char *critical_key;   /* the first of its calls that is critical, or NULL */
  gint64 deadline_us;
  EvdBackendCall *bcall;      /* &call while the backend has it, else NULL */
  gboolean queued;            /* waiting for a place in the lookup's bulkhead */
  gint64 start_us, end_us;
  gboolean done;
  guint8 span_id[8];          /* its span's id, made when it is planned */
  EvdRows *rows;              /* outcome: exactly one of these */
  evdalLookupError *error;
  guint marks, retries;       /* what the backend call said it did (EvdBackendMark) */
  EvdBackendCall call;
};

/* What became of one call of the request. */
typedef struct {
  EvdSlot *slot;              /* the slot that runs it, or NULL: */
  evdalLookupError *early;    /* why it was refused before running */
} EvdCallPlan;

/* A fetch is one allocation: this struct, then its slots (at most one per call), then a
 * plan per call. Every slot has the same deadline unless lookups or calls set shorter ones,
 * so one timer, due at the earliest deadline of the slots still running, serves them all. */
struct _EvdFetch {
  guint refs;                 /* 1 until answered, +1 per backend call not completed */
  EvdEngine *engine;
  EvdCall *rpc;               /* NULL once answered */
  EvdLoop *loop;
  EvdRequestContext ctx;
  EvdFetchRequest *request;   /* ref: the calls' keys and params live in it */
  EvdSlot *slots;
  guint n_slots;
  guint pending;              /* slots not done */
  EvdCallPlan *plans;         /* by the request's call index */
  struct event *timer;        /* made when the first slot starts */
  gint64 timer_due_us;        /* when it is due; 0 when not armed */
  char id[32];                /* the request id evdal made, when the client sent none */
};

static void evd_fetch_finish (EvdFetch *f, const char *failed_key, evdalLookupError *failed);
static void evd_slot_finish (EvdSlot *slot, EvdRows *rows, evdalLookupError *error);

/* The IDL's ErrorKind of evdal's own EvdErrorKind: the same numbers, checked here, the one
 * place where the one becomes the other. */
static evdalErrorKind
evd_engine_error_kind (EvdErrorKind kind)
{
  G_STATIC_ASSERT ((int) EVD_ERROR_KIND_UNKNOWN_LOOKUP == (int) EVDAL_ERROR_KIND_UNKNOWN_LOOKUP);
  G_STATIC_ASSERT ((int) EVD_ERROR_KIND_BAD_PARAMS == (int) EVDAL_ERROR_KIND_BAD_PARAMS);
  G_STATIC_ASSERT ((int) EVD_ERROR_KIND_TIMEOUT == (int) EVDAL_ERROR_KIND_TIMEOUT);
  G_STATIC_ASSERT ((int) EVD_ERROR_KIND_BACKEND == (int) EVDAL_ERROR_KIND_BACKEND);
  G_STATIC_ASSERT ((int) EVD_ERROR_KIND_OVERLOADED == (int) EVDAL_ERROR_KIND_OVERLOADED);
  G_STATIC_ASSERT ((int) EVD_ERROR_KIND_CANCELLED == (int) EVDAL_ERROR_KIND_CANCELLED);
  G_STATIC_ASSERT (EVD_ERROR_KIND_N == EVD_ERROR_KIND_CANCELLED + 1);
  /* A backend's kind out of range is its bug; the caller still learns the call failed. */
  if (kind <= EVD_ERROR_KIND_NONE || kind >= EVD_ERROR_KIND_N)
    return EVDAL_ERROR_KIND_BACKEND;
  return (evdalErrorKind) kind;
}

/* A LookupError to answer with. */
static evdalLookupError *
evd_engine_error_new (EvdErrorKind kind, const char *format, ...) G_GNUC_PRINTF (2, 3);

static evdalLookupError *
evd_engine_error_new (EvdErrorKind kind, const char *format, ...)
{
  evdalLookupError *e = g_object_new (EVDAL_TYPE_LOOKUP_ERROR, NULL);
  va_list ap;

  va_start (ap, format);
  e->kind = evd_engine_error_kind (kind);
  e->__isset_kind = TRUE;
  e->message = g_strdup_vprintf (format, ap);
  e->__isset_message = TRUE;
  va_end (ap);
  return e;
}

/* ---- Fetch life. ---- */

static EvdFetch *
evd_fetch_new (guint n_calls)
{
  gsize plans_at = sizeof (EvdFetch) + n_calls * sizeof (EvdSlot);
  EvdFetch *f;

  /* Each part starts where the one before ends, aligned as it needs. */
  G_STATIC_ASSERT (sizeof (EvdFetch) % G_ALIGNOF (EvdSlot) == 0);
  G_STATIC_ASSERT (sizeof (EvdSlot) % G_ALIGNOF (EvdCallPlan) == 0);
  f = g_malloc0 (plans_at + n_calls * sizeof (EvdCallPlan));
  f->slots = (EvdSlot *) (f + 1);
  f->plans = (EvdCallPlan *) ((char *) f + plans_at);
  return f;
}

static void
evd_fetch_unref (EvdFetch *f)
{
  if (--f->refs > 0)
    return;
  evd_engine_unref (f->engine);
  for (guint i = 0; i < f->n_slots; i++) {
    g_clear_pointer (&f->slots[i].rows, evd_rows_unref);
    g_clear_object (&f->slots[i].error);
  }
  for (guint i = 0; i < f->request->n_calls; i++)
    g_clear_object (&f->plans[i].early);
  g_clear_pointer (&f->timer, event_free);
  evd_request_unref (f->request);
  g_hash_table_unref (f->ctx.attributes);
  g_free (f);
}

/* ---- Backend calls. ---- */

/* The last reference gives back the fetch's, which holds the call's memory (a slot's), or
 * frees the call (an attempt's). On the call's loop. */
void
evd_backend_call_unref (EvdBackendCall *b)
{
  EvdFetch *f = b->fetch;

  g_assert (evd_loop_is_current (b->loop));
  if (--b->refs > 0)
    return;
  if (b->slot == NULL && b->done != NULL)
    g_free (b);  /* not inside a slot */
  if (f != NULL)
    evd_fetch_unref (f);
}

static void
evd_backend_call_on_backend_done (gpointer data)
{
  evd_backend_call_unref (data);  /* the backend's reference */
}

/* On the request's loop: the backend's (first) completion. */
static void
evd_backend_call_complete_here (gpointer data)
{
  EvdCompletion *c = data;
  EvdBackendCall *b = c->call;

  /* Everything below (the slot, the fetch, the bulkhead's place) belongs to the request's
   * loop; a completion anywhere else is a hand-off bug in evd_backend_call_complete. */
  g_assert (evd_loop_is_current (b->loop));
  if (!b->completed) {
    b->completed = TRUE;
    if (b->fetch != NULL) {
      if (b->done != NULL)  /* an attempt: never more attempts than calls, for the metric */
        g_atomic_int_add (&b->fetch->engine->counters->attempts, -1);
      g_atomic_int_add (&b->fetch->engine->counters->outstanding, -1);
    }
    if (b->klass->release != NULL)
      b->klass->release (b->backend, b);
    if (b->lookup != NULL)
      evd_lookup_release (b->lookup);
    if (b->done != NULL) {
      b->done (b, c->rows, c->error ? (EvdErrorKind) c->error->kind : EVD_ERROR_KIND_NONE,
               c->error ? c->error->message : NULL, c->flags, b->done_data);
    } else if (b->slot != NULL) {
      b->slot->marks = b->marks;
      b->slot->retries = b->retries;
      evd_slot_finish (b->slot, c->rows, c->error);
    }
    /* The backend's reference goes one loop turn later: a buggy backend that completes again
     * at once (in the same callback, or posting twice from its thread) then finds the call
     * alive and already completed, and is ignored. */
    evd_loop_post (b->loop, evd_backend_call_on_backend_done, b);
  }
  g_clear_pointer (&c->rows, evd_rows_unref);
  g_clear_object (&c->error);
  if (c != &c->call->first)
    g_free (c);
}

static void
evd_backend_call_complete (EvdBackendCall *b, EvdRows *rows, evdalLookupError *error, guint flags)
{
  EvdCompletion *c = g_atomic_int_compare_and_exchange (&b->first_taken, FALSE, TRUE)
                     ? &b->first : g_new (EvdCompletion, 1);

  *c = (EvdCompletion) { b, rows, error, flags };
  if (evd_loop_is_current (b->loop))
    evd_backend_call_complete_here (c);
  else
    evd_loop_post (b->loop, evd_backend_call_complete_here, c);
}

void
evd_backend_call_return (EvdBackendCall *call, EvdRows *rows)
{
  evd_backend_call_complete (call, rows, NULL, 0);
}

void
evd_backend_call_fail (EvdBackendCall *call, EvdErrorKind kind, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  evd_backend_call_complete (call, NULL, evd_engine_error_new (kind, "%s", message), 0);
}

void
evd_backend_call_fail_full (EvdBackendCall *call, guint flags, EvdErrorKind kind,
                            const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  evd_backend_call_complete (call, NULL, evd_engine_error_new (kind, "%s", message), flags);
}

void
evd_backend_call_fail_retryable (EvdBackendCall *call, EvdErrorKind kind,
                                 const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  evd_backend_call_complete (call, NULL, evd_engine_error_new (kind, "%s", message),
                      EVD_BACKEND_FAIL_RETRYABLE);
}

gpointer
evd_backend_call_room (EvdBackendCall *call, gsize size)
{
  return size <= sizeof call->room ? call->room.bytes : NULL;
}

void
evd_backend_call_mark (EvdBackendCall *call, guint marks, guint retries)
{
  call->marks |= marks;
  call->retries = MAX (call->retries, retries);
}

void
evd_backend_call_retry_after (EvdBackendCall *call, gint64 delay_us)
{
  call->retry_after_us = MAX (delay_us, 0);
}

gint64
evd_backend_call_retry_after_us (EvdBackendCall *call)
{
  return call->retry_after_us;
}

guint
evd_backend_call_marks (EvdBackendCall *call, guint *retries)
{
  if (retries != NULL)
    *retries = call->retries;
  return call->marks;
}

EvdBackendCall *
evd_backend_call_new (EvdLoop *loop, const EvdRequestContext *ctx, const EvdParam *params,
                      guint n_params, gint64 deadline_us, const EvdBackendClass *klass,
                      gpointer backend, EvdBackendCallDone done, gpointer done_data)
{
  /* Every field is set below: g_new0's calloc would skip malloc's per-thread cache. */
  EvdBackendCall *b = g_new (EvdBackendCall, 1);

  g_return_val_if_fail (done != NULL, NULL);
  *b = (EvdBackendCall) {
    .refs = 1, .loop = loop, .ctx = ctx, .klass = klass, .backend = backend,
    .params = params, .n_params = n_params, .deadline_us = deadline_us,
    .done = done, .done_data = done_data,
  };
  return b;
}

EvdBackendCall *
evd_backend_call_new_attempt (EvdBackendCall *from, const EvdBackendClass *klass,
                              gpointer backend, gint64 deadline_us, EvdBackendCallDone done,
                              gpointer done_data)
{
  EvdBackendCall *b = evd_backend_call_new (from->loop, from->ctx, from->params,
                                            from->n_params, deadline_us, klass, backend, done,
                                            done_data);

  b->fetch = from->fetch;
  if (b->fetch != NULL)
    b->fetch->refs++;
  /* The attempt is the caller's call to the upstream: a traceparent it sends names the
   * caller's span as the parent. */
  memcpy (b->span_id, from->span_id, sizeof b->span_id);
  return b;
}

void
evd_backend_call_start (EvdBackendCall *call)
{
  g_assert (evd_loop_is_current (call->loop));
  call->refs++;  /* the backend's, given back one loop turn after its completion */
  if (call->fetch != NULL) {
    g_atomic_int_inc (&call->fetch->engine->counters->outstanding);
    g_atomic_int_inc (&call->fetch->engine->counters->attempts);
  }
  call->klass->start (call->backend, call);
}

void
evd_backend_call_cancel (EvdBackendCall *call)
{
  g_assert (evd_loop_is_current (call->loop));
  if (!call->completed && call->refs > 1)
    call->klass->cancel (call->backend, call);
}

gboolean
evd_backend_call_completed (EvdBackendCall *call)
{
  return call->completed;
}


const EvdRequestContext *
evd_backend_call_context (EvdBackendCall *call)
{
  return call->ctx;
}

const EvdValue *
evd_backend_call_param (EvdBackendCall *call, const char *name)
{
  return evd_value_find_param (call->params, call->n_params, name);
}

const EvdParam *
evd_backend_call_params (EvdBackendCall *call, guint *n_params)
{
  *n_params = call->n_params;
  return call->params;
}

EvdLoop *
evd_backend_call_loop (EvdBackendCall *call)
{
  return call->loop;
}

gint64
evd_backend_call_deadline_us (EvdBackendCall *call)
{
  return call->deadline_us;
}

void
evd_backend_call_extend_deadline (EvdBackendCall *call, gint64 deadline_us)
{
  call->deadline_us = MAX (call->deadline_us, deadline_us);
}

gpointer *
evd_backend_call_data (EvdBackendCall *call)
{
  return &call->data;
}

void
evd_backend_call_traceparent (EvdBackendCall *call, char *out)
{
  const EvdTraceContext *t = &call->fetch->ctx.tracing;

  evd_traceparent_format (t->trace_id, call->span_id,
                          t->sampled ? EVD_TRACE_FLAG_SAMPLED : 0, out);
}

const char *
evd_backend_call_tracestate (EvdBackendCall *call)
{
  return call->fetch->ctx.tracing.tracestate;
}

gboolean
evd_backend_call_critical (EvdBackendCall *call)
{
  return call->slot != NULL && call->slot->critical_key != NULL;
}

gboolean
evd_backend_call_sampled (EvdBackendCall *call)
{
  return call->fetch->ctx.tracing.sampled;
}

void
evd_backend_call_trace_peer (EvdBackendCall *call, const char *server_address)
{
  call->trace_peer = server_address;
}

void
evd_backend_call_trace_get (EvdBackendCall *call, const char **server_address, int *status)
{
  *server_address = call->trace_peer;
  *status = call->trace_http_status;
}

void
evd_backend_call_trace_http_status (EvdBackendCall *call, int status)
{
  call->trace_http_status = status;
}

/* ---- Slots. ---- */

/* Stops whatever the slot is waiting for; the slot is done or about to be. */
static void
evd_slot_stop (EvdSlot *slot)
{
  EvdBackendCall *b = slot->bcall;

  if (slot->queued && evd_lookup_withdraw (slot->lookup, slot)) {
    /* Withdrawn before it got a place: the queue's reference goes. The fetch's answer still
     * holds one, so this never frees the fetch under our feet. */
    slot->queued = FALSE;
    evd_fetch_unref (slot->fetch);
  }
  if (b == NULL)
    return;
  slot->bcall = NULL;
  b->slot = NULL;
  if (!b->completed)
    b->klass->cancel (b->backend, b);
  evd_backend_call_unref (b);  /* the slot's reference */
}

static void
evd_slot_finish (EvdSlot *slot, EvdRows *rows, evdalLookupError *error)
{
  EvdFetch *f = slot->fetch;

  if (slot->done)
    return;
  slot->done = TRUE;
  slot->end_us = g_get_monotonic_time ();
  /* Ended before it was launched (a critical call ended the fetch inside its own start()):
   * it took no time, rather than all of the monotonic clock. */
  if (slot->start_us == 0)
    slot->start_us = slot->end_us;
  slot->rows = rows ? evd_rows_ref (rows) : NULL;
  slot->error = error ? g_object_ref (error) : NULL;
  if (slot->rows == NULL && slot->error == NULL)
    slot->error = evd_engine_error_new (EVD_ERROR_KIND_BACKEND, "backend returned nothing");
  evd_metrics_lookup_record (evd_lookup_stats (slot->lookup), slot->error ? slot->error->kind : 0,
                           slot->end_us - slot->start_us);
  evd_slot_stop (slot);
  f->pending--;
  if (f->rpc == NULL)
    return;
  if (slot->error != NULL) {
    evd_log_event (G_LOG_LEVEL_DEBUG, f->ctx.request_id, evd_lookup_spec (slot->lookup)->name,
                   NULL, "%s (%s): %s", evd_lookup_spec (slot->lookup)->name,
                   toString_ErrorKind (slot->error->kind), slot->error->message);
    if (slot->critical_key != NULL) {
      /* Named after a call that asked for it: an identical non-critical call sharing the
       * slot may come first in the request. */
      evd_fetch_finish (f, slot->critical_key, slot->error);
      return;
    }
  }
  if (f->pending == 0)
    evd_fetch_finish (f, NULL, NULL);
}

static void
evd_slot_time_out (EvdSlot *slot)
{
  g_autoptr (evdalLookupError) e = NULL;

  e = evd_engine_error_new (EVD_ERROR_KIND_TIMEOUT, "lookup %s timed out after %" G_GINT64_FORMAT
                     " ms%s", evd_lookup_spec (slot->lookup)->name,
                     (slot->deadline_us - slot->fetch->ctx.start_us) / 1000,
                     slot->queued ? " waiting for its turn (max_concurrent)" : "");
  evd_slot_finish (slot, NULL, e);
}

static void evd_fetch_on_deadline (evutil_socket_t fd, short what, void *arg);

/* Makes the fetch's timer due at `due_us` unless it is due sooner already. */
static void
evd_fetch_arm (EvdFetch *f, gint64 due_us)
{
  gint64 left;
  struct timeval tv;

  if (f->timer_due_us != 0 && f->timer_due_us <= due_us)
    return;
  if (f->timer == NULL)
    f->timer = evtimer_new (evd_loop_base (f->loop), evd_fetch_on_deadline, f);
  left = MAX (due_us - g_get_monotonic_time (), 0);
  tv.tv_sec = left / G_USEC_PER_SEC;
  tv.tv_usec = left % G_USEC_PER_SEC;
  evtimer_add (f->timer, &tv);  /* a pending timer moves */
  f->timer_due_us = due_us;
}

/* Times out every slot whose deadline has come, and waits for the next one. libevent may
 * fire a little early (it counts from the time it cached for the loop pass in which the
 * timer was set): a slot not yet due is then waited for again. */
static void
evd_fetch_on_deadline (evutil_socket_t fd, short what, void *arg)
{
  EvdFetch *f = arg;
  gint64 now = g_get_monotonic_time (), next = G_MAXINT64;

  (void) fd;
  (void) what;
  f->timer_due_us = 0;
  f->refs++;  /* a critical call's timeout ends the fetch */
  for (guint i = 0; i < f->n_slots; i++) {
    EvdSlot *s = &f->slots[i];

    if (s->done)
      continue;
    if (s->deadline_us <= now)
      evd_slot_time_out (s);
    else
      next = MIN (next, s->deadline_us);
  }
  if (f->rpc != NULL && next != G_MAXINT64)
    evd_fetch_arm (f, next);
  evd_fetch_unref (f);
}

static void
evd_slot_start (EvdSlot *slot)
{
  EvdFetch *f = slot->fetch;
  EvdBackendCall *b = &slot->call;
  const EvdBackendClass *k = evd_lookup_class (slot->lookup);

  *b = (EvdBackendCall) {
    .refs = 2, .slot = slot, .fetch = f, .loop = f->loop, .ctx = &f->ctx, .klass = k,
    .backend = evd_lookup_backend (slot->lookup), .lookup = slot->lookup,
    .params = slot->params, .n_params = slot->n_params, .deadline_us = slot->deadline_us,
  };
  memcpy (b->span_id, slot->span_id, sizeof b->span_id);
  f->refs++;
  slot->bcall = b;
  g_atomic_int_inc (&f->engine->counters->outstanding);
  k->start (evd_lookup_backend (slot->lookup), b);
}

/* Posted by the bulkhead when a place freed up for a queued slot. */
static void
evd_slot_on_turn (gpointer data)
{
  EvdSlot *slot = data;
  EvdFetch *f = slot->fetch;

  slot->queued = FALSE;
  if (slot->done) {
    /* It gave up (timeout, cancel) after the place was handed over: pass the place on. */
    evd_lookup_release (slot->lookup);
  } else {
    evd_slot_start (slot);
  }
  evd_fetch_unref (f);  /* the queue's reference */
}

static void
evd_slot_launch (EvdSlot *slot)
{
  EvdFetch *f = slot->fetch;

  evd_fetch_arm (f, slot->deadline_us);
  slot->start_us = g_get_monotonic_time ();
  switch (evd_lookup_admit (slot->lookup, f->loop, evd_slot_on_turn, slot)) {
  case EVD_ADMIT_RUN:
    evd_slot_start (slot);
    break;
  case EVD_ADMIT_QUEUED:
    slot->queued = TRUE;
    f->refs++;  /* the slot must outlive its place in the queue */
    break;
  case EVD_ADMIT_REJECTED: {
    g_autoptr (evdalLookupError) e = evd_engine_error_new (
      EVD_ERROR_KIND_OVERLOADED, "lookup %s is at max_concurrent and its queue is full",
      evd_lookup_spec (slot->lookup)->name);
    evd_slot_finish (slot, NULL, e);
    break;
  }
  }
}

/* ---- Answering. ---- */

/* What a fetch's success reply is written from: one entry per call, borrowing from the
 * fetch (its slots, its early errors), used before evd_fetch_reply_success returns. */
typedef struct {
  EvdFetch *fetch;
  EvdResponseResult *results; /* one per call */
  guint n_results;
  GArray *spans;              /* EvdResponseSpan, when traced: one per slot or early error */
  gsize limit;                /* the whole reply's bytes at most (evd_call_reply_limit) */
  guint *n_cut;               /* out: calls failed because their rows did not fit */
} EvdFetchReply;

/* A traced request's span, kept in r->spans (sized up front, so it never moves while results
 * point into it); NULL when the request is not traced. */
static const EvdResponseSpan *
evd_fetch_add_span (EvdFetch *f, EvdFetchReply *r, gint64 start_us, gint64 end_us,
                    const char *backend, guint marks, guint retries)
{
  EvdResponseSpan span;

  if (!f->ctx.trace)
    return NULL;
  span.start_us = MAX (start_us - f->ctx.start_us, 0);
  span.end_us = MAX (end_us - f->ctx.start_us, span.start_us);
  span.backend = backend;
  span.marks = marks;
  span.retries = retries;
  g_array_append_val (r->spans, span);
  return &g_array_index (r->spans, EvdResponseSpan, r->spans->len - 1);
}

static void
evd_fetch_write_reply (EvdWriter *w, gconstpointer data)
{
  const EvdFetchReply *r = data;
  const EvdFetch *f = r->fetch;

  if (r->limit != G_MAXSIZE)
    *r->n_cut = evd_response_fit (w->proto, r->limit > w->out->len ? r->limit - w->out->len : 0,
                                  f->ctx.request_id, r->results, r->n_results);
  evd_response_write (w, f->ctx.request_id, r->results, r->n_results,
                      MAX (g_get_monotonic_time () - f->ctx.start_us, 1));
}

/* Answers with every call's result: written straight into the reply (evd_response), no
 * GObject made. */
static void
evd_fetch_reply_success (EvdFetch *f, EvdCall *rpc)
{
  guint n = f->request->n_calls;
  g_autofree EvdResponseResult *results = g_new0 (EvdResponseResult, n);
  /* A slot's span, shared by the calls it serves: made when the first of them is. */
  g_autofree const EvdResponseSpan **slot_spans = f->ctx.trace ? g_new0 (const EvdResponseSpan *,
                                                                         f->n_slots) : NULL;
  guint n_cut = 0;
  EvdFetchReply r = {
    f, results, n, g_array_sized_new (FALSE, FALSE, sizeof (EvdResponseSpan), f->ctx.trace ? n : 0),
    evd_call_reply_limit (rpc), &n_cut,
  };
  gint64 now = g_get_monotonic_time ();

  for (guint i = 0; i < n; i++) {
    const EvdSlot *s = f->plans[i].slot;
    const evdalLookupError *e = s != NULL ? s->error : f->plans[i].early;

    results[i].key = f->request->calls[i].key;
    results[i].error_kind = e ? e->kind : 0;
    results[i].error_message = e ? e->message : NULL;
    if (s == NULL) {
      results[i].span = evd_fetch_add_span (f, &r, f->ctx.start_us, f->ctx.start_us, "none", 0, 0);
      continue;
    }
    results[i].rows = s->rows;
    if (f->ctx.trace) {
      guint at = (guint) (s - f->slots);
      if (slot_spans[at] == NULL)
        slot_spans[at] = evd_fetch_add_span (f, &r, s->start_us, s->done ? s->end_us : now,
                                             evd_lookup_spec (s->lookup)->backend_name,
                                             s->marks, s->retries);
      results[i].span = slot_spans[at];
    }
  }
  evd_call_reply_write (rpc, evd_fetch_write_reply, &r);
  g_array_unref (r.spans);
  /* Only a call with an owner has a limit, and the call is freed when its owner sends it,
   * after this pass: it is still there. */
  if (n_cut > 0)
    evd_call_log_refusal (rpc, "reply too large: %u of %u calls failed to keep it within %"
                          G_GSIZE_FORMAT " bytes", n_cut, n, r.limit);
}

/* A critical call failed: the declared LookupFailed, through c_glib (a rare path). */
static void
evd_fetch_reply_failed (EvdCall *rpc, const char *failed_key, evdalLookupError *failed)
{
  evdalDataAccessFetchResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);

  r->failed = g_object_new (EVDAL_TYPE_LOOKUP_FAILED, NULL);
  r->failed->call = g_strdup (failed_key);
  g_object_unref (r->failed->error);
  r->failed->error = g_object_ref (failed);
  r->failed->__isset_call = r->failed->__isset_error = TRUE;
  r->__isset_failed = TRUE;
  evd_call_reply (rpc, THRIFT_STRUCT (r));
}

/* The lookup a call of the request names (NULL if none). */
static const char *
evd_fetch_key_lookup (EvdFetch *f, const char *key)
{
  const EvdFetchCall *call = evd_request_call (f->request, key);

  return call != NULL ? call->lookup : NULL;
}

/* Metrics of an ending fetch: its outcome and time, and every call answered with an error. */
static void
evd_fetch_count (EvdFetch *f, evdalLookupError *failed, gboolean cancelled)
{
  EvdMetrics *m = f->engine->counters->metrics;

  if (m == NULL)
    return;
  if (cancelled) {
    evd_metrics_request (m, EVD_METHOD_FETCH, EVD_OUTCOME_CANCELLED);
    return;
  }
  evd_metrics_request (m, EVD_METHOD_FETCH, failed ? EVD_OUTCOME_FAILED : EVD_OUTCOME_OK);
  evd_metrics_fetch_latency (m, g_get_monotonic_time () - f->ctx.start_us);
  if (failed != NULL) {
    evd_metrics_call_error (m, failed->kind);
    return;
  }
  for (guint i = 0; i < f->request->n_calls; i++) {
    const EvdCallPlan *p = &f->plans[i];
    const evdalLookupError *e = p->slot != NULL ? p->slot->error : p->early;
    if (e != NULL)
      evd_metrics_call_error (m, e->kind);
  }
}

static int
evd_engine_span_order (gconstpointer a, gconstpointer b)
{
  const EvdTraceSpan *x = a, *y = b;

  if (x->start_us != y->start_us)
    return x->start_us < y->start_us ? -1 : 1;
  return g_strcmp0 (x->key, y->key);
}

/* A traced fetch leaves its spans for /traces, once every slot has ended. */
static void
evd_fetch_keep_trace (EvdFetch *f, const char *failed_key, gboolean cancelled)
{
  gint64 now = g_get_monotonic_time ();
  EvdTrace *t = evd_trace_new (f->ctx.request_id, f->ctx.principal,
                               g_get_real_time () - (now - f->ctx.start_us));

  g_autofree char *key = evd_trace_cut (failed_key);

  t->duration_us = now - f->ctx.start_us;
  evd_traceparent_hex (f->ctx.tracing.trace_id, sizeof f->ctx.tracing.trace_id, t->trace_id);
  t->outcome = cancelled ? g_strdup ("cancelled: the client went away")
             : failed_key ? g_strdup_printf ("failed: critical call %s", key)
                          : g_strdup ("ok");
  for (guint i = 0; i < f->request->n_calls; i++) {
    const EvdFetchCall *call = &f->request->calls[i];
    const EvdSlot *s = f->plans[i].slot;
    const evdalLookupError *e = f->plans[i].early;

    if (s == NULL) {
      evd_trace_add_span (t, call->key, call->lookup, "none", 0, 0, e->kind, e->message);
      continue;
    }
    evd_trace_add_span (t, call->key, evd_lookup_spec (s->lookup)->name,
                        evd_lookup_spec (s->lookup)->backend_name,
                        s->start_us - f->ctx.start_us, s->end_us - f->ctx.start_us,
                        s->error ? s->error->kind : 0, s->error ? s->error->message : NULL);
    if (s->marks != 0) {
      const char *words[8];
      char retried[16];
      guint n = evd_backend_marks_words (s->marks, s->retries, words, retried);
      g_autofree char *joined = NULL;

      words[n] = NULL;
      joined = g_strjoinv (" ", (char **) words);
      evd_trace_span_set_marks (t, joined);
    }
  }
  g_array_sort (t->spans, evd_engine_span_order);
  evd_trace_store_add (f->engine->counters->traces, t);
}

/* ---- Span export (evd_otlp): sampled fetches only. ---- */

/* The OpenTelemetry db.system of a backend kind, NULL for those that are no database. */
static const char *
evd_fetch_db_system (const char *kind)
{
  if (strcmp (kind, "sqlite") == 0 || strcmp (kind, "redis") == 0)
    return kind;
  if (strcmp (kind, "pg") == 0 || strcmp (kind, "postgres") == 0 ||
      strcmp (kind, "postgresql") == 0)
    return "postgresql";
  return NULL;
}

/* CLIENT for a call that leaves the process (a database, an upstream the backend named),
 * INTERNAL for backends that answer from memory or a timer (static, delay, fault). */
static EvdOtlpKind
evd_fetch_span_kind (const char *kind, const EvdBackendCall *b, guint marks)
{
  if (marks & EVD_MARK_CACHE_HIT)
    return EVD_OTLP_KIND_INTERNAL;  /* answered from memory: nothing left the process */
  if (evd_fetch_db_system (kind) != NULL || b->trace_peer != NULL || b->trace_http_status != 0 ||
      strcmp (kind, "http") == 0 || strcmp (kind, "thrift") == 0)
    return EVD_OTLP_KIND_CLIENT;
  return EVD_OTLP_KIND_INTERNAL;
}

/* One slot's span, `wall0` being the real time of the fetch's start. */
static void
evd_fetch_export_slot (EvdFetch *f, GString *out, const EvdSlot *s, gint64 wall0)
{
  const EvdLookupSpec *spec = evd_lookup_spec (s->lookup);
  const char *instance = strchr (spec->backend_name, ':');
  /* The backend's own kind, from "kind:instance": the lookup's class may be the layer
   * between requests (evd_xreq) in front of it. */
  g_autofree char *kind = instance != NULL
                          ? g_strndup (spec->backend_name, (gsize) (instance - spec->backend_name))
                          : g_strdup (spec->backend_name);
  const char *db = evd_fetch_db_system (kind);
  g_autofree char *name = g_strconcat ("lookup ", spec->name, NULL);
  g_autofree char *error = evd_trace_cut (s->error != NULL ? s->error->message : NULL);
  gint64 start = MAX (s->start_us, f->ctx.start_us);
  EvdOtlpSpan span = {
    f->ctx.tracing.trace_id, s->span_id, f->ctx.tracing.span_id, NULL, name,
    evd_fetch_span_kind (kind, &s->call, s->marks), wall0 + (start - f->ctx.start_us),
    wall0 + (MAX (s->end_us, start) - f->ctx.start_us),
  };

  evd_otlp_span_begin (out, &span);
  evd_otlp_attr_string (out, "evdal.lookup", spec->name);
  evd_otlp_attr_string (out, "evdal.backend", spec->backend_name);
  if (db != NULL) {
    evd_otlp_attr_string (out, "db.system", db);
    if (instance != NULL)
      evd_otlp_attr_string (out, "db.namespace", instance + 1);
  }
  if (s->call.trace_peer != NULL)
    evd_otlp_attr_string (out, "server.address", s->call.trace_peer);
  if (s->call.trace_http_status != 0)
    evd_otlp_attr_int (out, "http.response.status_code", s->call.trace_http_status);
  if (s->rows != NULL)
    evd_otlp_attr_int (out, "evdal.rows", evd_rows_n_rows (s->rows));
  if (s->marks != 0) {
    const char *words[8];
    char retried[16];
    guint n = evd_backend_marks_words (s->marks, s->retries, words, retried);
    g_autofree char *joined = NULL;

    words[n] = NULL;
    joined = g_strjoinv (" ", (char **) words);
    evd_otlp_attr_string (out, "evdal.marks", joined);
  }
  if (s->error != NULL) {
    const char *k = toString_ErrorKind (s->error->kind);  /* "EVDAL_ERROR_KIND_TIMEOUT" */
    evd_otlp_attr_string (out, "evdal.error_kind", g_str_has_prefix (k, "EVDAL_ERROR_KIND_")
                                                   ? k + strlen ("EVDAL_ERROR_KIND_") : k);
  }
  evd_otlp_span_end (out, error);
}

/* The fetch's SERVER span and one span per slot, to the exporter's queue. */
static void
evd_fetch_export (EvdFetch *f, const char *failed_key, evdalLookupError *failed,
                  gboolean cancelled)
{
  const EvdTraceContext *t = &f->ctx.tracing;
  gint64 now = g_get_monotonic_time ();
  gint64 wall0 = g_get_real_time () - (now - f->ctx.start_us);
  GString *out = g_string_sized_new (768 + 512 * f->n_slots);
  /* A span waits in the exporter's queue, bounded in spans, not bytes: the client's strings
   * in it are cut as the trace store cuts them (a 2 MiB request id stayed whole). */
  g_autofree char *error_whole = cancelled ? g_strdup ("cancelled: the client went away")
                               : failed_key != NULL ? g_strdup_printf ("critical call %s: %s",
                                                                       failed_key, failed->message)
                               : NULL;
  g_autofree char *error = evd_trace_cut (error_whole);
  g_autofree char *request_id = evd_trace_cut (f->ctx.request_id);
  g_autofree char *principal = evd_trace_cut (f->ctx.principal);
  EvdOtlpSpan span = {
    t->trace_id, t->span_id, t->remote ? t->parent_id : NULL, t->tracestate,
    "DataAccess/fetch", EVD_OTLP_KIND_SERVER, wall0, wall0 + (now - f->ctx.start_us),
  };

  evd_otlp_span_begin (out, &span);
  evd_otlp_attr_string (out, "rpc.system", "apache_thrift");
  evd_otlp_attr_string (out, "rpc.service", "DataAccess");
  evd_otlp_attr_string (out, "rpc.method", "fetch");
  evd_otlp_attr_string (out, "evdal.request_id", request_id);
  if (principal != NULL)
    evd_otlp_attr_string (out, "evdal.principal", principal);
  evd_otlp_attr_string (out, "evdal.outcome", cancelled ? "cancelled"
                                              : failed_key ? "failed" : "ok");
  evd_otlp_span_end (out, error);
  for (guint i = 0; i < f->n_slots; i++)
    evd_fetch_export_slot (f, out, &f->slots[i], wall0);
  evd_otlp_submit (f->engine->counters->otlp, out, 1 + f->n_slots);
}

/* The one place a fetch ends: answer (unless the client left), stop every slot still going. */
static void
evd_fetch_finish (EvdFetch *f, const char *failed_key, evdalLookupError *failed)
{
  EvdCall *rpc = f->rpc;

  EvdEngineCounters *counters = f->engine->counters;
  gboolean cancelled;

  if (rpc == NULL)
    return;
  f->rpc = NULL;
  cancelled = evd_call_is_cancelled (rpc);
  g_atomic_int_add (&counters->inflight, -1);
  if (failed_key != NULL && !cancelled)
    evd_log_event (G_LOG_LEVEL_MESSAGE, f->ctx.request_id, evd_fetch_key_lookup (f, failed_key),
                   evd_call_peer (rpc), "fetch failed: critical call %s: %s", failed_key,
                   failed->message);
  evd_fetch_count (f, failed, cancelled);
  if (failed_key != NULL)
    evd_fetch_reply_failed (rpc, failed_key, failed);
  else
    evd_fetch_reply_success (f, rpc);
  for (guint i = 0; i < f->n_slots; i++) {
    EvdSlot *s = &f->slots[i];
    g_autoptr (evdalLookupError) e = NULL;

    if (s->done)
      continue;
    e = evd_engine_error_new (EVD_ERROR_KIND_CANCELLED, "cancelled: the request ended");
    evd_slot_finish (s, NULL, e);
  }
  if (f->timer != NULL)
    event_del (f->timer);
  f->timer_due_us = 0;
  if (f->ctx.trace)
    evd_fetch_keep_trace (f, failed_key, cancelled);
  /* An unsampled fetch pays one test here, and nothing else for export. */
  if (f->ctx.tracing.sampled && evd_otlp_exporting (counters->otlp))
    evd_fetch_export (f, failed_key, failed, cancelled);
  evd_fetch_unref (f);  /* the answer's reference */
}

/* The client went away: stop everything; the answer goes nowhere. */
static void
evd_fetch_on_rpc_cancel (EvdCall *call, gpointer data)
{
  EvdFetch *f = data;
  g_autoptr (evdalLookupError) e = evd_engine_error_new (EVD_ERROR_KIND_CANCELLED,
                                                  "the client went away");

  (void) call;
  evd_log_event (G_LOG_LEVEL_DEBUG, f->ctx.request_id, NULL, evd_call_peer (call),
                 "client went away; cancelling");
  evd_fetch_finish (f, "(client gone)", e);
}

/* ---- Admission and validation. ---- */

static void
evd_engine_invalid (EvdEngine *engine, EvdCall *rpc, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

static void
evd_engine_invalid (EvdEngine *engine, EvdCall *rpc, const char *format, ...)
{
  evdalDataAccessFetchResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
  evdalInvalidRequest *x = g_object_new (EVDAL_TYPE_INVALID_REQUEST, NULL);
  va_list ap;

  va_start (ap, format);
  x->message = g_strdup_vprintf (format, ap);
  x->__isset_message = TRUE;
  va_end (ap);
  r->invalid = x;
  r->__isset_invalid = TRUE;
  evd_metrics_request (engine->counters->metrics, EVD_METHOD_FETCH, EVD_OUTCOME_INVALID);
  evd_call_reply (rpc, THRIFT_STRUCT (r));
}

static evdalOverloaded *
evd_engine_overloaded_new (char *message)
{
  evdalOverloaded *x = g_object_new (EVDAL_TYPE_OVERLOADED, NULL);

  x->message = message;
  x->retry_after_ms = EVD_ENGINE_RETRY_AFTER_MS;
  x->__isset_message = x->__isset_retry_after_ms = TRUE;
  return x;
}


/* Whether text is UTF-8, U+0000 included: GLib's validator stops at a NUL and calls it
 * invalid, so the pieces between NULs are validated. */
static gboolean
evd_engine_utf8_valid (const char *data, gsize len)
{
  const char *end = data + len, *nul;

  while ((nul = memchr (data, 0, (gsize) (end - data))) != NULL) {
    if (!g_utf8_validate_len (data, (gsize) (nul - data), NULL))
      return FALSE;
    data = nul + 1;
  }
  return g_utf8_validate_len (data, (gsize) (end - data), NULL);
}
/* Checks a call's params against its lookup's declaration; NULL when they are fine. */
static evdalLookupError *
evd_engine_check_params (EvdLookup *l, const EvdFetchCall *call)
{
  const EvdLookupSpec *spec = evd_lookup_spec (l);
  static const EvdValueKind wanted[] = {
    [EVD_PARAM_INT] = EVD_VALUE_INT, [EVD_PARAM_REAL] = EVD_VALUE_REAL,
    [EVD_PARAM_TEXT] = EVD_VALUE_TEXT, [EVD_PARAM_BLOB] = EVD_VALUE_BLOB,
  };

  for (guint i = 0; i < call->n_params; i++) {
    const char *name = call->params[i].name;
    const EvdValue *v = &call->params[i].value;
    const EvdParamSpec *p = evd_lookup_param (l, name);

    if (p == NULL) {
      g_autofree char *names = evd_lookup_param_names (l);
      return evd_engine_error_new (EVD_ERROR_KIND_BAD_PARAMS, "param %s: lookup %s does not take "
                            "it (it takes: %s)", name, spec->name, names);
    }
    if (v->kind == EVD_VALUE_TEXT && !evd_engine_utf8_valid (v->data, v->len))
      return evd_engine_error_new (EVD_ERROR_KIND_BAD_PARAMS, "param %s: text is not valid UTF-8",
                            name);
    if (v->kind == EVD_VALUE_INVALID ||
        (p->type != EVD_PARAM_ANY && v->kind != EVD_VALUE_NULL && v->kind != wanted[p->type]) ||
        (p->type != EVD_PARAM_ANY && v->kind == EVD_VALUE_NULL && p->required))
      return evd_engine_error_new (EVD_ERROR_KIND_BAD_PARAMS, "param %s: expected %s, got %s",
                            name, p->type == EVD_PARAM_ANY ? "a value"
                            : evd_value_kind_name (wanted[p->type]), evd_value_kind_name (v->kind));
  }
  for (guint i = 0; i < spec->params->len; i++) {
    const EvdParamSpec *p = &g_array_index (spec->params, EvdParamSpec, i);
    if (p->required && evd_value_find_param (call->params, call->n_params, p->name) == NULL)
      return evd_engine_error_new (EVD_ERROR_KIND_BAD_PARAMS, "param %s: required by lookup %s",
                            p->name, spec->name);
  }
  return NULL;
}

static gboolean
evd_engine_same_value (const EvdValue *a, const EvdValue *b)
{
  if (a->kind != b->kind)
    return FALSE;
  switch (a->kind) {
  case EVD_VALUE_INT: return a->i == b->i;
  case EVD_VALUE_REAL: return memcmp (&a->r, &b->r, sizeof a->r) == 0;  /* bits: NaN, -0.0 */
  case EVD_VALUE_TEXT:
  case EVD_VALUE_BLOB: return a->len == b->len && memcmp (a->data, b->data, a->len) == 0;
  default: return TRUE;
  }
}

/* The slot already planned for the same lookup, time budget and params, if any: calls that
 * name it run once and share its result. The budget counts: one run serving two budgets would
 * let the shorter one's TIMEOUT answer for the longer (LookupCall in the IDL tells frontends).
 * Params have distinct names (evd_request), so equal counts and every one of ours found equal
 * in theirs means the same set, in any order. A fetch has at most max_calls slots: comparing
 * with each costs less than building and hashing a key per call. */
static EvdSlot *
evd_engine_find_slot (EvdFetch *f, EvdLookup *l, gint64 deadline_us, const EvdFetchCall *call)
{
  for (guint i = 0; i < f->n_slots; i++) {
    EvdSlot *s = &f->slots[i];
    gboolean same = s->lookup == l && s->deadline_us == deadline_us &&
                    s->n_params == call->n_params;

    for (guint k = 0; same && k < call->n_params; k++) {
      const EvdValue *theirs = evd_value_find_param (s->params, s->n_params, call->params[k].name);
      same = theirs != NULL && evd_engine_same_value (theirs, &call->params[k].value);
    }
    if (same)
      return s;
  }
  return NULL;
}

static gint64
evd_engine_call_deadline (EvdFetch *f, EvdLookup *l, const EvdFetchCall *call)
{
  gint64 deadline = f->ctx.deadline_us;

  if (evd_lookup_timeout_ms (l) > 0)
    deadline = MIN (deadline, f->ctx.start_us + evd_lookup_timeout_ms (l) * (gint64) 1000);
  if (call->has_timeout)
    deadline = MIN (deadline, f->ctx.start_us + call->timeout_ms * (gint64) 1000);
  return deadline;
}

/* Resolves one call to a slot (new or shared), or to an early error. */
static evdalLookupError *
evd_engine_plan_call (EvdFetch *f, const EvdFetchCall *call)
{
  EvdLookup *l = evd_lookup_set_find (f->engine->lookups, call->lookup);
  evdalLookupError *e;
  EvdSlot *slot;
  gint64 deadline;

  if (l == NULL)
    return evd_engine_error_new (EVD_ERROR_KIND_UNKNOWN_LOOKUP, "no lookup named \"%s\"",
                          call->lookup);
  if (call->has_timeout && call->timeout_ms <= 0)
    return evd_engine_error_new (EVD_ERROR_KIND_BAD_PARAMS, "timeout_ms must be positive, got %d",
                          call->timeout_ms);
  e = evd_engine_check_params (l, call);
  if (e != NULL)
    return e;
  deadline = evd_engine_call_deadline (f, l, call);
  slot = evd_engine_find_slot (f, l, deadline, call);
  if (slot == NULL) {
    slot = &f->slots[f->n_slots++];  /* zeroed, and never more than one per call */
    slot->fetch = f;
    slot->lookup = l;
    slot->params = call->params;
    slot->n_params = call->n_params;
    slot->deadline_us = deadline;
    evd_traceparent_random_id (slot->span_id, sizeof slot->span_id);  /* no lock: per thread */
  }
  f->plans[call - f->request->calls].slot = slot;
  if (call->critical && slot->critical_key == NULL)
    slot->critical_key = call->key;
  return NULL;
}

/* Plans every call. Returns the key of a critical call refused up front, if any. */
static const char *
evd_engine_plan (EvdFetch *f, evdalLookupError **critical_error)
{
  const char *critical_key = NULL;

  for (guint i = 0; i < f->request->n_calls; i++) {
    const EvdFetchCall *call = &f->request->calls[i];
    evdalLookupError *e = evd_engine_plan_call (f, call);

    if (e == NULL)
      continue;
    f->plans[i].early = e;
    /* What a broken or hostile client sends at will: rate-limited, per loop. */
    evd_call_log_refusal (f->rpc, "[%.*s%s] call %.*s%s refused: %s",
                          EVD_ENGINE_LOG_NAME_MAX, f->ctx.request_id,
                          strlen (f->ctx.request_id) > EVD_ENGINE_LOG_NAME_MAX ? "\xe2\x80\xa6" : "",
                          EVD_ENGINE_LOG_NAME_MAX, call->key,
                          strlen (call->key) > EVD_ENGINE_LOG_NAME_MAX ? "\xe2\x80\xa6" : "",
                          e->message);
    if (call->critical && critical_key == NULL) {
      critical_key = call->key;
      *critical_error = e;
    }
  }
  return critical_key;
}

/* ---- Trace context in (evd_traceparent). ---- */

static gboolean
evd_engine_is_trace_attribute (const char *key)
{
  return strcmp (key, "traceparent") == 0 || strcmp (key, "tracestate") == 0;
}

static const char *
evd_engine_attribute (const EvdFetchRequest *req, const char *key)
{
  for (guint i = 0; i < req->n_attributes; i++)
    if (strcmp (req->attributes[i].key, key) == 0)
      return req->attributes[i].value;
  return NULL;
}

/* The caller's trace context, from RequestContext fields 6/7 or else the attributes of the
 * same names; an invalid one is counted, logged (rate-limited: the client controls it) and
 * replaced by a trace of our own, never an error. */
static void
evd_engine_make_tracing (EvdEngine *engine, EvdFetch *f, const EvdFetchRequest *req)
{
  EvdOtlp *otlp = engine->counters->otlp;
  const char *tp = req->traceparent, *ts = req->tracestate;

  if (tp == NULL && req->n_attributes > 0)
    tp = evd_engine_attribute (req, "traceparent");
  if (ts == NULL && req->n_attributes > 0)
    ts = evd_engine_attribute (req, "tracestate");
  if (!evd_traceparent_context (&f->ctx.tracing, tp, ts, evd_otlp_sample_ratio (otlp))) {
    evd_otlp_count_invalid (otlp);
    evd_call_log_refusal (f->rpc, "[%s] invalid trace context ignored: traceparent \"%.80s\", "
                          "tracestate \"%.80s\"", f->ctx.request_id, tp ? tp : "",
                          ts ? ts : "");
  }
}

static void
evd_engine_make_context (EvdEngine *engine, EvdFetch *f, const EvdFetchRequest *req,
                         gint64 start)
{
  int deadline_ms = req->has_deadline ? req->deadline_ms : engine->sc->deadline_ms;

  f->ctx.start_us = start;
  f->ctx.deadline_us = start + deadline_ms * (gint64) 1000;
  f->ctx.trace = req->trace;
  f->ctx.principal = req->principal;  /* the request outlives the fetch's context */
  if (req->request_id != NULL && *req->request_id != '\0') {
    f->ctx.request_id = req->request_id;
  } else {
    g_snprintf (f->id, sizeof f->id, "%s-%012" G_GINT64_MODIFIER "x",
                engine->counters->id_prefix,
                (guint64) __atomic_fetch_add (&engine->counters->next_id, 1, __ATOMIC_RELAXED));
    f->ctx.request_id = f->id;
  }
  evd_engine_make_tracing (engine, f, req);
  if (req->n_attributes == 0) {
    f->ctx.attributes = g_hash_table_ref (engine->no_attributes);
    return;
  }
  f->ctx.attributes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  for (guint i = 0; i < req->n_attributes; i++)
    if (!evd_engine_is_trace_attribute (req->attributes[i].key))  /* never forwarded */
      g_hash_table_insert (f->ctx.attributes, g_strdup (req->attributes[i].key),
                           g_strdup (req->attributes[i].value));
}

static void evd_engine_refuse (EvdEngine *engine, EvdCall *rpc, const EvdRpcCanned *reply);

/* Refuses what must not start at all; TRUE when the fetch may go on. */
static gboolean
evd_engine_admit (EvdEngine *engine, EvdCall *rpc, const EvdFetchRequest *request)
{
  guint n = request->n_calls;

  if (n == 0) {
    evd_engine_invalid (engine, rpc, "no calls: FetchRequest.calls is empty");
    return FALSE;
  }
  if (n > (guint) engine->sc->max_calls) {
    evd_engine_invalid (engine, rpc, "%u calls, more than max_calls (%d)", n, engine->sc->max_calls);
    return FALSE;
  }
  if (request->has_deadline && request->deadline_ms <= 0) {
    evd_engine_invalid (engine, rpc, "context.deadline_ms must be positive, got %d",
                        request->deadline_ms);
    return FALSE;
  }
  /* Checked again after decoding: the shed check before it (evd_engine_busy) is advisory,
   * and this increment is what actually bounds the count. */
  if (evd_engine_lagging (engine, evd_call_loop (rpc))) {
    evd_engine_refuse (engine, rpc, engine->shed_queue);
    return FALSE;
  }
  if (g_atomic_int_add (&engine->counters->inflight, 1) >= engine->sc->max_inflight) {
    g_atomic_int_add (&engine->counters->inflight, -1);
    evd_engine_refuse (engine, rpc, engine->shed_inflight);
    return FALSE;
  }
  return TRUE;
}

gboolean
evd_engine_lagging (EvdEngine *engine, EvdLoop *loop)
{
  return engine->sc->max_queue_ms > 0 &&
         evd_loop_lag_us (loop) > engine->sc->max_queue_ms * (gint64) 1000;
}

gboolean
evd_engine_busy (EvdEngine *engine, EvdLoop *loop)
{
  return evd_engine_lagging (engine, loop) ||
         g_atomic_int_get (&engine->counters->inflight) >= engine->sc->max_inflight;
}

/* Refusals are the one reply that must cost next to nothing (see evd_rpc_shed): the same
 * canned bytes every time, the figures themselves (lag, fetches in flight) being in the
 * metrics, not in the message. */
static void
evd_engine_refuse (EvdEngine *engine, EvdCall *rpc, const EvdRpcCanned *reply)
{
  evd_metrics_request (engine->counters->metrics, EVD_METHOD_FETCH, EVD_OUTCOME_OVERLOADED);
  evd_call_reply_canned (rpc, reply);
}

void
evd_engine_shed (EvdEngine *engine, EvdCall *rpc)
{
  evd_engine_refuse (engine, rpc, evd_engine_lagging (engine, evd_call_loop (rpc))
                                  ? engine->shed_queue : engine->shed_inflight);
}

/* The Overloaded reply that says `message` (consumed), canned. */
static EvdRpcCanned *
evd_engine_shed_reply_new (char *message)
{
  g_autoptr (evdalDataAccessFetchResult) r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT,
                                                           NULL);
  g_autoptr (GError) error = NULL;
  EvdRpcCanned *canned;

  r->overloaded = evd_engine_overloaded_new (message);
  r->__isset_overloaded = TRUE;
  canned = evd_rpc_canned_new (THRIFT_STRUCT (r), &error);
  if (canned == NULL)
    g_error ("the Overloaded reply does not encode: %s", error->message);  /* a bug: abort */
  return canned;
}

void
evd_engine_fetch (EvdEngine *engine, EvdCall *rpc, EvdFetchRequest *request)
{
  EvdFetch *f;
  evdalLookupError *critical_error = NULL;
  const char *critical_key;

  if (!evd_engine_admit (engine, rpc, request))
    return;
  f = evd_fetch_new (request->n_calls);
  f->refs = 2;  /* the answer's, and this function's while it starts the slots */
  f->engine = evd_engine_ref (engine);
  f->rpc = rpc;
  f->loop = evd_call_loop (rpc);
  f->request = evd_request_ref (request);
  evd_engine_make_context (engine, f, request, evd_call_read_us (rpc));
  evd_call_on_cancel (rpc, evd_fetch_on_rpc_cancel, f);
  critical_key = evd_engine_plan (f, &critical_error);
  f->pending = f->n_slots;
  if (critical_key != NULL) {
    evd_fetch_finish (f, critical_key, critical_error);
  } else if (f->pending == 0) {
    evd_fetch_finish (f, NULL, NULL);
  } else {
    /* A slot may finish the whole fetch while later ones start (a critical failure): those
     * are then already done, cancelled by the finish. */
    for (guint i = 0; i < f->n_slots; i++) {
      EvdSlot *s = &f->slots[i];
      if (!s->done)
        evd_slot_launch (s);
    }
  }
  evd_fetch_unref (f);
}

/* ---- The engine. ---- */

void
evd_engine_counters_init (EvdEngineCounters *counters)
{
  memset (counters, 0, sizeof *counters);
  g_snprintf (counters->id_prefix, sizeof counters->id_prefix, "%08x", g_random_int ());
}

EvdEngine *
evd_engine_new (EvdConfig *cfg, EvdEngineCounters *counters)
{
  EvdEngine *e = g_new0 (EvdEngine, 1);

  g_atomic_ref_count_init (&e->refs);
  e->cfg = evd_config_ref (cfg);
  e->sc = evd_config_server (cfg);
  e->counters = counters;
  e->shed_queue = evd_engine_shed_reply_new (
    g_strdup_printf ("requests wait longer than max_queue_ms (%d ms) before they are read",
                     e->sc->max_queue_ms));
  e->shed_inflight = evd_engine_shed_reply_new (
    g_strdup_printf ("max_inflight (%d) fetches in flight", e->sc->max_inflight));
  e->no_attributes = g_hash_table_new (g_str_hash, g_str_equal);
  e->lookups = evd_lookup_set_new (cfg);
  return e;
}

EvdEngine *
evd_engine_ref (EvdEngine *engine)
{
  g_atomic_ref_count_inc (&engine->refs);
  return engine;
}

void
evd_engine_unref (EvdEngine *engine)
{
  if (engine == NULL || !g_atomic_ref_count_dec (&engine->refs))
    return;
  evd_lookup_set_free (engine->lookups);
  evd_rpc_canned_free (engine->shed_queue);
  evd_rpc_canned_free (engine->shed_inflight);
  g_hash_table_unref (engine->no_attributes);
  evd_config_unref (engine->cfg);
  g_free (engine);
}

EvdLookupSet *
evd_engine_lookups (EvdEngine *engine)
{
  return engine->lookups;
}

void
evd_engine_activate (EvdEngine *engine)
{
  /* Loops read it while a reload sets it: atomic. */
  __atomic_store_n (&evd_cache_budget_process ()->max_bytes, engine->sc->cache_max_bytes,
                    __ATOMIC_RELAXED);
  /* The lookups' series join /metrics (for good) here, not when the generation is built: a
   * reload that is refused is built too, and its lookups never serve. Before any loop sees
   * the generation (evd_data_access_commit publishes it after this). */
  for (guint i = 0; i < evd_lookup_set_size (engine->lookups); i++) {
    EvdLookup *l = evd_lookup_set_nth (engine->lookups, i);
    evd_lookup_set_stats (l, evd_metrics_lookup (engine->counters->metrics,
                                                 evd_lookup_spec (l)->name));
  }
}

void
evd_engine_attach (EvdEngine *engine, EvdLoop *loop)
{
  evd_lookup_set_attach (engine->lookups, loop);
}

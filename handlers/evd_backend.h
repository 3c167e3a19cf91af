/* evd_backend: the interface every kind of lookup implements (delay, static, sqlite, and a
 * user's own C module), and the handle of one call in flight.
 *
 * A backend kind is an EvdBackendClass: a name, open/start/cancel/close, and optional hooks for
 * state shared by its lookups and for metrics. open() reads the lookup's own [lookup NAME]
 * keys (reporting problems through evd_config_problem, which names the file, line and key)
 * and declares the params the lookup takes; the engine reads the keys common to every lookup
 * (backend, timeout_ms, max_concurrent, max_queue, description) itself.
 *
 * The life of a call. The engine checks the params against the lookup's declaration, then
 * calls start() on the request's loop with an EvdBackendCall. The backend completes the call
 * exactly once with evd_backend_call_return() or evd_backend_call_fail(), from any thread: at
 * once inside start(), later on the loop (a timer, a socket), or from a worker thread; the
 * engine always receives the completion on the request's loop. If the call's time runs out or
 * its request ends first, the engine calls cancel() on the loop: the backend should stop the
 * work (free a timer, interrupt a query) and must still complete the call, with any outcome
 * (it is ignored). The call handle stays valid until the backend has completed it. A second
 * completion made at once (in the same callback, or posted right after the first from the
 * backend's thread) is ignored; one made later is a bug the engine cannot catch.
 *
 * Request state (request id, principal, deadline, trace, attributes) reaches a backend only
 * through evd_backend_call_context(): never through globals or thread-locals, so one thread
 * can interleave many requests safely.
 */
#pragma once

#include <glib.h>
#include <gmodule.h>

#include "evd_config.h"
#include "evd_loop.h"
#include "evd_value.h"
#include "evd_rows.h"
#include "evd_traceparent.h"

G_BEGIN_DECLS

/* The request-scoped state every lookup of a fetch sees. Immutable while the request runs,
 * so worker threads may read it. */
typedef struct {
  const char *request_id;
  const char *principal;    /* NULL when the caller gave none */
  gint64 start_us;          /* monotonic time the request was read */
  gint64 deadline_us;       /* monotonic time the whole fetch must answer by */
  gboolean trace;
  GHashTable *attributes;   /* char * -> char *, never NULL; without traceparent/tracestate */
  EvdTraceContext tracing;  /* W3C trace context: the caller's (fields 6/7, or attributes) or
                               a new trace; see evd_backend_call_traceparent for context out */
} EvdRequestContext;

/* What a param must be. */
typedef enum {
  EVD_PARAM_ANY,            /* any Value (SQL binds them all) */
  EVD_PARAM_INT,
  EVD_PARAM_REAL,
  EVD_PARAM_TEXT,
  EVD_PARAM_BLOB,
} EvdParamType;

typedef struct {
  char *name;
  EvdParamType type;
  gboolean required;
} EvdParamSpec;

/* What open() learns and declares about a lookup; the engine keeps it. */
typedef struct {
  char *name;               /* the lookup's name, "nap" for [lookup nap] */
  char *group;              /* its config group, "lookup nap" */
  char *backend_name;       /* "kind:instance", shown in lookups() and spans */
  GArray *params;           /* EvdParamSpec, filled by open() */
} EvdLookupSpec;

void evd_lookup_spec_add_param (EvdLookupSpec *spec, const char *name, EvdParamType type,
                                gboolean required);

typedef struct _EvdBackendCall EvdBackendCall;

typedef struct {
  const char *kind;
  /* Optional: reads what all lookups of this kind share (SQLite's [database NAME] pools),
   * once at start-up, before any open(); the result is handed to open(). */
  gpointer (*setup) (EvdConfig *cfg);
  void (*teardown) (gpointer shared);
  /* Optional: called on each IO loop's thread when the lookups of this config start serving
   * there (start-up, and each reload that makes a new generation), before any call of theirs
   * on that loop: a backend with connections per loop (evd_loop_local) opens them now, not
   * at the first call. `shared` is what setup() made. */
  void (*attach) (gpointer shared, EvdLoop *loop);
  gpointer (*open) (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec);
  void (*start) (gpointer backend, EvdBackendCall *call);
  void (*cancel) (gpointer backend, EvdBackendCall *call);
  /* Optional: the engine has taken the call's completion (on the loop); per-call state that a
   * worker thread shared may be freed now, since cancel() can no longer be called. */
  void (*release) (gpointer backend, EvdBackendCall *call);
  void (*close) (gpointer backend);
  /* Optional: writes the metrics of what setup() made (evd_metrics' text format helpers),
   * whole families; called when /metrics is scraped, from the admin thread. */
  void (*collect) (gpointer shared, GString *out);
  /* Optional: lines for /health about what setup() made ("database shop: 4/8 connections
   * up"), from the admin thread. */
  void (*health) (gpointer shared, GString *out);
} EvdBackendClass;

/* The kinds known (built in, then those modules registered), by name; NULL when unknown. */
const EvdBackendClass *evd_backend_find (const char *kind);
/* The kinds known, NULL-terminated. */
const EvdBackendClass *const *evd_backend_all (void);
/* The names of all kinds, for messages: "delay, static". Free with g_free. */
char *evd_backend_kinds (void);

/* ---- Sections shared by lookups: [database NAME] and [upstream NAME]. ----
 * A lookup names one (`database = NAME`, `upstream = NAME`) instead of saying `backend =`;
 * the section's own `backend =` then says which kind serves it (a database is sqlite and an
 * upstream http when it does not say). Each kind's setup() reads the sections that are its. */

/* The backend kind of a section group ("database shop"). Free with g_free. */
char *evd_backend_section_kind (EvdConfig *cfg, const char *group);
/* The groups of `section` ("database", "upstream") whose kind is `kind`, in file order.
 * Free with g_strfreev. */
char **evd_backend_sections (EvdConfig *cfg, const char *section, const char *kind);
/* A section's line for /health (the health hook), the same for every kind:
 * "database shop: 8/8 connections up", with " (unavailable)" when none of them is. */
void evd_backend_health_line (GString *out, const char *section, const char *name, int up,
                              int total);

/* ---- Backend modules: `[server] modules = a.so, b.so` ----
 * A module is a shared object built against the installed headers (`pkg-config evdal`) that
 * ends with EVDAL_BACKEND_MODULE (init): evdal loads it at start-up, before reading any lookup,
 * refuses it when it was built against another EVDAL_BACKEND_API_VERSION, and calls init(),
 * which registers the module's classes with evd_backend_register(). The functions a module
 * calls are evdal's own (the binary exports them), so it links nothing of evdal. */

/* The version of the backend interface: bumped whenever a change to these headers (a type's
 * layout, a function's signature or contract) would break a module built before it.
 *   1  the first installed interface
 *   2  EvdBackendClass.health: the class of a module built against 1 ends before it, so
 *      evdal would read a hook past the module's static struct */
#define EVDAL_BACKEND_API_VERSION 2

/* Adds a kind; the class (static in the module) must live as long as the process. FALSE with
 * an error when its kind is empty or already known, or a required hook (open, start, cancel,
 * close) is missing. From a module's init() only, at start-up, on the main thread. */
gboolean evd_backend_register (const EvdBackendClass *klass, GError **error);

/* A module's entry point: registers its classes, or returns FALSE with an error. */
typedef gboolean (*EvdBackendModuleInit) (GError **error);

/* The two symbols every module exports: the interface version it was built against, read
 * before anything of the module runs, and its entry point. */
#define EVDAL_BACKEND_MODULE(init) \
  G_MODULE_EXPORT extern const guint evdal_backend_module_api_version; \
  G_MODULE_EXPORT const guint evdal_backend_module_api_version = EVDAL_BACKEND_API_VERSION; \
  G_MODULE_EXPORT gboolean evdal_backend_module_init (GError **error); \
  G_MODULE_EXPORT gboolean evdal_backend_module_init (GError **error) { return (init) (error); }

/* ---- The call handle, for backends. ---- */

const EvdRequestContext *evd_backend_call_context (EvdBackendCall *call);
/* A param of the call, as checked against the spec; NULL when the call did not give it. */
const EvdValue *evd_backend_call_param (EvdBackendCall *call, const char *name);
/* All of them (distinct names). Valid until the call is completed. */
const EvdParam *evd_backend_call_params (EvdBackendCall *call, guint *n_params);
/* The loop the request lives on: timers and sockets of the call belong there. */
EvdLoop *evd_backend_call_loop (EvdBackendCall *call);
/* Monotonic time by which this call must be answered. */
gint64 evd_backend_call_deadline_us (EvdBackendCall *call);
/* Whether a failure of this call fails its fetch: a call of the fetch asked for it (critical),
 * and the call is the fetch's own, not a run shared with other callers (coalescing, retries,
 * hedges: those are never critical). A backend that forwards calls (a Thrift upstream) says
 * so to its remote, which can then fail fast too. On the call's loop. */
gboolean evd_backend_call_critical (EvdBackendCall *call);
/* A slot for the backend's own per-call state. */
gpointer *evd_backend_call_data (EvdBackendCall *call);
/* Room inside the call for the backend's own per-call state, zeroed, aligned for any scalar or
 * pointer, alive as long as the call: NULL when `size` is more than EVD_BACKEND_CALL_ROOM
 * (allocate it then). A backend that fits in it allocates and frees nothing per call (the
 * SQLite backend's job: issue 20). On the call's loop, in start(). */
#define EVD_BACKEND_CALL_ROOM 96
gpointer evd_backend_call_room (EvdBackendCall *call, gsize size);

/* Completes with rows (the reference is consumed). Any thread. */
void evd_backend_call_return (EvdBackendCall *call, EvdRows *rows);
/* Completes with an error. Any thread. The error is final: not retried, and (kind BACKEND or
 * TIMEOUT) counted as a failure by the breaker of the lookup's database/upstream. */
void evd_backend_call_fail (EvdBackendCall *call, EvdErrorKind kind, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

/* ---- Trace context out (W3C Trace Context, docs/ARCHITECTURE.md "Distributed tracing"). ----
 * Every call has a span of its own (a CLIENT span, or INTERNAL for backends that talk to no
 * one), child of the fetch's SERVER span. A backend that calls an upstream passes the trace
 * on: an HTTP upstream gets the header `traceparent: <evd_backend_call_traceparent>` and, when
 * evd_backend_call_tracestate is not NULL, `tracestate: <it>`; a Thrift upstream gets both in
 * its RequestContext (fields 6 and 7). The attributes named traceparent and tracestate are
 * never in the context's attributes, so a backend that forwards attributes does not send
 * the caller's stale ones. Any thread holding the call, before completing it. */

/* "00-<trace id>-<this call's span id>-<01 if sampled, else 00>" into `out`
 * (EVD_TRACEPARENT_LEN + 1 bytes, NUL-terminated). */
void evd_backend_call_traceparent (EvdBackendCall *call, char *out);
/* The caller's tracestate (valid by the W3C rules) to send along, or NULL. */
const char *evd_backend_call_tracestate (EvdBackendCall *call);
/* Whether the call's trace is sampled: the flag its traceparent carries on, so that the
 * upstream exports its own spans for it. It is set whether or not this evdal exports (it
 * samples [tracing] sample_ratio of the fetches that come without a decision, 1 in 100 by
 * default). Context that costs the upstream something (a PostgreSQL statement sent with a
 * comment, a Thrift upstream's call sent alone so that its span is the remote's parent) is
 * worth sending only then. */
gboolean evd_backend_call_sampled (EvdBackendCall *call);
/* What the exported span should say about the upstream: its address (server.address; the
 * string must outlive the fetch, e.g. the backend's config) and, for HTTP, the response's
 * status (http.response.status_code). Either makes the call's span a CLIENT span. */
void evd_backend_call_trace_peer (EvdBackendCall *call, const char *server_address);
void evd_backend_call_trace_http_status (EvdBackendCall *call, int status);
/* What a call said of its upstream, for a layer that answers its callers from its own
 * attempts (evd_xreq copies it onto each caller's call). */
void evd_backend_call_trace_get (EvdBackendCall *call, const char **server_address,
                                 int *status);
/* What a failure says beyond its kind, for the layer between the engine and the backends
 * (evd_xreq: retries, hedges, breakers). A backend says so when it knows; when it says
 * nothing (evd_backend_call_fail) the error is neither retried nor excused. */
typedef enum {
  /* The call may be made again as it is and succeed: the request did not reach the backend,
   * or the backend said it could not serve it now. A lost or refused connection, a
   * PostgreSQL connection lost before the query was answered, HTTP 502/503/504 (and 429 with
   * a Retry-After that ends before the call's deadline), Redis LOADING or BUSY. Never an SQL
   * error, a 4xx, a reply that does not parse. A lookup with `retries = N` retries these
   * only (within its database's/upstream's retry budget). */
  EVD_BACKEND_FAIL_RETRYABLE = 1 << 0,
  /* The caller's fault (HTTP 4xx other than 429): the backend is healthy, so the breaker
   * does not count it as a failure. */
  EVD_BACKEND_FAIL_CLIENT = 1 << 1,
} EvdBackendFailFlags;

/* Completes with an error and what the backend knows about it (EvdBackendFailFlags). */
void evd_backend_call_fail_full (EvdBackendCall *call, guint flags, EvdErrorKind kind,
                                 const char *format, ...) G_GNUC_PRINTF (4, 5);
/* The same with EVD_BACKEND_FAIL_RETRYABLE: what a network backend calls for a lost or
 * refused connection, HTTP 502/503/504, Redis LOADING/BUSY. */
void evd_backend_call_fail_retryable (EvdBackendCall *call, EvdErrorKind kind,
                                      const char *format, ...) G_GNUC_PRINTF (3, 4);
/* The backend was told when to come back (HTTP Retry-After on a 429 or 503): a retry of
 * this failure waits at least `delay_us` from now, and is not made when that is past the
 * call's deadline. Before completing the call; 0 (the default) says nothing. */
void evd_backend_call_retry_after (EvdBackendCall *call, gint64 delay_us);
gint64 evd_backend_call_retry_after_us (EvdBackendCall *call);

/* ---- For layers between the engine and a backend (evd_xreq). ----
 *
 * Such a layer is itself a backend class (the engine starts and cancels its calls as any
 * other's) that runs calls of its own on the real backend: attempts. An attempt is made from
 * the engine's call it serves and shares its loop, context and params; it keeps the request
 * behind `from` (and with it the engine generation and its lookups) alive until it is freed,
 * so it may outlive `from`'s completion (a hedge's loser being cancelled). All of it on the
 * call's loop. evd_backend_call_start() hands the attempt to `klass`; `done` then runs exactly
 * once, on the loop, with the backend's completion (rows, or an error kind and message,
 * borrowed for the time of the callback; `flags` EvdBackendFailFlags);
 * evd_backend_call_cancel() asks the backend to stop (done still runs);
 * evd_backend_call_unref() gives up the owner's reference, the call being freed once the
 * backend's completion was taken too. */
typedef void (*EvdBackendCallDone) (EvdBackendCall *call, EvdRows *rows, EvdErrorKind kind,
                                    const char *message, guint flags, gpointer data);

EvdBackendCall *evd_backend_call_new_attempt (EvdBackendCall *from, const EvdBackendClass *klass,
                                              gpointer backend, gint64 deadline_us,
                                              EvdBackendCallDone done, gpointer data);
/* A call with no request behind it (unit tests): `ctx` and `params` must outlive it. */
EvdBackendCall *evd_backend_call_new (EvdLoop *loop, const EvdRequestContext *ctx,
                                      const EvdParam *params, guint n_params,
                                      gint64 deadline_us, const EvdBackendClass *klass,
                                      gpointer backend, EvdBackendCallDone done, gpointer data);
void evd_backend_call_start (EvdBackendCall *call);
void evd_backend_call_cancel (EvdBackendCall *call);
gboolean evd_backend_call_completed (EvdBackendCall *call);
void evd_backend_call_unref (EvdBackendCall *call);
/* A call shared by later callers (coalescing) runs to the latest of their deadlines; a
 * backend that reads the deadline after start() sees the latest. On the call's loop. */
void evd_backend_call_extend_deadline (EvdBackendCall *call, gint64 deadline_us);

/* What the span of a call says happened to it besides its outcome: the words of
 * Span.marks in the IDL. Set before completing; the engine copies them into the span. */
typedef enum {
  EVD_MARK_COALESCED = 1 << 0,    /* "coalesced": served by an identical call in flight */
  EVD_MARK_CACHE_HIT = 1 << 1,    /* "cache_hit": answered from the lookup's result cache */
  EVD_MARK_STALE = 1 << 2,        /* "stale": expired rows, since the refresh failed */
  EVD_MARK_HEDGED = 1 << 3,       /* "hedged": a second attempt went out */
  EVD_MARK_RETRIED = 1 << 4,      /* "retried:N": N retries went out */
  EVD_MARK_BREAKER_OPEN = 1 << 5, /* "breaker_open": the circuit breaker refused a call */
} EvdBackendMark;

/* Adds marks (EvdBackendMark) and the number of retries to the call's span. */
void evd_backend_call_mark (EvdBackendCall *call, guint marks, guint retries);
/* The marks so far (and the retries, when `retries` is not NULL). */
guint evd_backend_call_marks (EvdBackendCall *call, guint *retries);
/* The marks as Span.marks words into `out` (at most 6); returns how many. "retried:N" is
 * written into `retried_buf` (16 bytes). */
guint evd_backend_marks_words (guint marks, guint retries, const char **out, char *retried_buf);


G_END_DECLS

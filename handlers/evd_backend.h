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

#include "evd_config.h"
#include "evd_loop.h"
#include "evd_value.h"
#include "evd_rows.h"

G_BEGIN_DECLS

/* The request-scoped state every lookup of a fetch sees. Immutable while the request runs,
 * so worker threads may read it. */
typedef struct {
  const char *request_id;
  const char *principal;    /* NULL when the caller gave none */
  gint64 start_us;          /* monotonic time the request was read */
  gint64 deadline_us;       /* monotonic time the whole fetch must answer by */
  gboolean trace;
  GHashTable *attributes;   /* char * -> char *, never NULL */
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
} EvdBackendClass;

/* The kinds built in, by name; NULL when unknown. */
const EvdBackendClass *evd_backend_find (const char *kind);
/* The kinds built in, NULL-terminated. */
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
/* A slot for the backend's own per-call state. */
gpointer *evd_backend_call_data (EvdBackendCall *call);

/* Completes with rows (the reference is consumed). Any thread. */
void evd_backend_call_return (EvdBackendCall *call, EvdRows *rows);
/* Completes with an error. Any thread. */
void evd_backend_call_fail (EvdBackendCall *call, EvdErrorKind kind, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

G_END_DECLS

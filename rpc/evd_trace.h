/* evd_trace: the traced requests kept for /traces (the slowest and the most recent ones), and
 * their rendering as an HTML page with an SVG waterfall, or as JSON for other tools.
 *
 * A fetch whose context asks for a trace returns its spans to the caller (LookupResult.span)
 * and, when it ends, leaves an EvdTrace here: request id, principal, when it started, how
 * long it took, how it ended, and one span per call (key, lookup, backend, start, end, error).
 * The store keeps the `keep` most recent and the `keep` slowest; a trace in both lists is
 * shared. Adding takes the store's lock once per traced request; untraced requests never
 * touch it. A page takes the lock only to take a reference to each trace, and renders after.
 *
 * What a trace keeps is bounded, since clients choose its strings: each string (request id,
 * principal, keys, lookups, errors) at most EVD_TRACE_TEXT_MAX bytes, cut at a character and
 * marked "...[cut: N bytes]"; at most EVD_TRACE_SPANS_MAX spans, the rest counted. So the
 * store holds at most 2 x keep traces of bounded size, and a page is bounded too.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  char *key;                 /* the call's key in the request */
  char *lookup;
  char *backend;             /* "kind:instance", "none" for a call refused before running */
  gint64 start_us;           /* since the request was read */
  gint64 end_us;
  int error_kind;            /* 0: rows; else the IDL's ErrorKind */
  char *error;               /* its message, NULL on success */
  char *marks;               /* Span.marks joined by spaces ("coalesced hedged"), or NULL */
} EvdTraceSpan;

/* Bytes of a client's string a trace keeps (a UUID or a URL fits; 2 MiB ids do not). */
#define EVD_TRACE_TEXT_MAX 256
/* Spans a trace keeps (a fetch has at most max_calls calls). */
#define EVD_TRACE_SPANS_MAX 128

typedef struct {
  gint ref;                  /* atomic: the store's lists and pages being rendered */
  guint spans_cut;           /* spans past EVD_TRACE_SPANS_MAX, not kept */
  char *request_id;
  char *principal;           /* may be NULL */
  gint64 wall_us;            /* real time the request was read */
  gint64 duration_us;
  char *outcome;             /* "ok", "failed: critical call KEY", "cancelled" */
  char trace_id[33];         /* W3C trace id in hex, "" when unknown: find it elsewhere */
  GArray *spans;             /* EvdTraceSpan, in start order */
} EvdTrace;

EvdTrace *evd_trace_new (const char *request_id, const char *principal, gint64 wall_us);
void evd_trace_add_span (EvdTrace *t, const char *key, const char *lookup, const char *backend,
                         gint64 start_us, gint64 end_us, int error_kind, const char *error);
EvdTrace *evd_trace_ref (EvdTrace *t);
/* Drops a reference (the trace is freed with the last). */
/* The marks of the span added last (Span.marks joined by spaces); NULL or "": none. */
void evd_trace_span_set_marks (EvdTrace *t, const char *marks);
void evd_trace_free (EvdTrace *t);
/* A copy of s cut to EVD_TRACE_TEXT_MAX bytes and marked so, or NULL for NULL. */
char *evd_trace_cut (const char *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdTrace, evd_trace_free)

typedef struct _EvdTraceStore EvdTraceStore;

EvdTraceStore *evd_trace_store_new (guint keep);
void evd_trace_store_free (EvdTraceStore *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdTraceStore, evd_trace_store_free)

/* Takes the caller's reference. Any thread; NULL store: the trace is freed. */
void evd_trace_store_add (EvdTraceStore *store, EvdTrace *trace);
guint64 evd_trace_store_count (EvdTraceStore *store);

/* The /traces page: both lists, each trace a waterfall. */
void evd_trace_store_html (EvdTraceStore *store, GString *out);
/* {"slowest": [...], "recent": [...]}, each trace with its spans. */
void evd_trace_store_json (EvdTraceStore *store, GString *out);

/* JSON string literal of `s` (UTF-8 kept, controls escaped; bytes that are not UTF-8 become
 * U+FFFD). Shared with the admin's other JSON pages. */
void evd_json_string (GString *out, const char *s);

G_END_DECLS

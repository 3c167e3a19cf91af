/* evd_traceparent: W3C Trace Context (https://www.w3.org/TR/trace-context/) values read and
 * written, trace and span ids made, and the TraceIdRatioBased sampling decision. GLib only.
 *
 * A fetch joins the trace of its caller when the caller sends a valid `traceparent`
 * (RequestContext field 6, or the attribute of that name); anything invalid is ignored and the
 * fetch starts a trace of its own, as the W3C rules ask. The rules kept here, each with a test
 * in tests/unit/test_traceparent.c:
 * - "VV-TTTT...(32)-PPPP...(16)-FF", lowercase hex only; version ff is invalid; version 00 is
 *   exactly 55 characters; a later version is read as far as version 00 goes (at least 55
 *   characters, and a '-' after the flags when longer);
 * - an all-zero trace id or parent id is invalid;
 * - only the sampled flag (01) is carried on: the others are not defined by version 00.
 * - tracestate: at most 32 comma-separated list members (empty ones allowed), each key=value
 *   with the grammar's keys (simple or tenant@system) and values (printable ASCII but ',' and
 *   '=', no trailing space), no key twice, at most EVD_TRACESTATE_MAX characters in all.
 *
 * Ids come from a generator per thread (splitmix64, seeded once per thread), so making them
 * costs a few instructions and no lock: a loop thread makes its fetches' ids alone.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* "00-" + 32 + "-" + 16 + "-" + 2 */
#define EVD_TRACEPARENT_LEN 55
/* What evdal accepts and passes on of a tracestate: the W3C's 512 characters that every
 * vendor must propagate. A longer one is ignored, not cut (a cut member would lie). */
#define EVD_TRACESTATE_MAX 512
/* The W3C's limit on list members. */
#define EVD_TRACESTATE_MAX_MEMBERS 32

#define EVD_TRACE_FLAG_SAMPLED 0x01

typedef struct {
  guint8 trace_id[16];
  guint8 span_id[8];         /* the caller's span: our server span's parent */
  guint8 flags;              /* EVD_TRACE_FLAG_SAMPLED or 0 */
} EvdTraceparent;

/* The trace context of one fetch, as backends see it (EvdRequestContext.tracing). */
typedef struct {
  guint8 trace_id[16];
  guint8 span_id[8];         /* the fetch's own (SERVER) span */
  guint8 parent_id[8];       /* the caller's span; all zero when no valid context came */
  gboolean remote;           /* a valid traceparent came in */
  gboolean sampled;          /* its spans are exported; downstream gets flag 01 */
  const char *tracestate;    /* the incoming one when valid, else NULL */
} EvdTraceContext;

/* Parses a traceparent value. FALSE (and `out` untouched) when it breaks a rule above. */
gboolean evd_traceparent_parse (const char *value, EvdTraceparent *out);
/* Whether a tracestate value is valid (NULL is not). */
gboolean evd_traceparent_tracestate_valid (const char *value);

/* "00-<trace>-<span>-<flags>" into out (EVD_TRACEPARENT_LEN + 1 bytes, NUL-terminated). */
void evd_traceparent_format (const guint8 trace_id[16], const guint8 span_id[8], guint8 flags,
                             char *out);
/* Lowercase hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void evd_traceparent_hex (const guint8 *id, gsize n, char *out);

/* A random id of n bytes, never all zero. This thread's generator; no lock. */
void evd_traceparent_random_id (guint8 *id, gsize n);
/* OpenTelemetry's TraceIdRatioBased: the trace id's last 8 bytes, read as a 63-bit number
 * (top bit cleared), below ratio * 2^63. 0 samples nothing, 1 everything; the same trace id
 * gets the same answer everywhere with the same ratio. */
gboolean evd_traceparent_ratio_sampled (const guint8 trace_id[16], double ratio);

/* Fills a fetch's context from what its caller sent (either may be NULL). Returns FALSE when
 * a value was sent but is invalid (the caller counts and logs it); the context is then a new
 * trace of our own, sampled by `ratio`, as it is when nothing came. */
gboolean evd_traceparent_context (EvdTraceContext *ctx, const char *traceparent,
                                  const char *tracestate, double ratio);

G_END_DECLS

/* evd_request: a fetch's arguments in plain C, decoded by hand from the binary or compact
 * encoding of DataAccess.fetch's args struct.
 *
 * c_glib decodes a FetchRequest into a GObject per struct and per Value and a GHashTable per
 * map, about twenty objects for a page of seven calls, and the teardown of those objects was
 * the largest single cost of a fetch on the IO loop (docs/BENCHMARKS.md). Here a request is
 * a struct, three arrays (calls, params, attributes) and one string chunk.
 *
 * It decodes what c_glib's generated code would, with the same meaning: a field whose wire
 * type is not the declared one is skipped; in a map a key given twice keeps its last value;
 * a Value union counts the distinct fields it carries (two make it EVD_VALUE_INVALID, which
 * the engine answers BAD_PARAMS). Text values keep their length, NUL bytes included (c_glib
 * reads a string up to its first NUL, so "ab\0cd" bound as "ab"). The other strings are names
 * used as C strings (call keys, lookups, param names, attributes, request id, principal): one
 * holding a NUL byte makes the request fail to decode, saying which, rather than be read up to
 * the NUL (keys "k\0one" and "k\0two" became one call). Unlike c_glib, an empty string stays
 * "" (c_glib gives NULL). tests/unit/test_request.c decodes random requests both ways and compares.
 *
 * The message has been walked by evd_wire's scanner before (every length and depth checked
 * against the bytes present), but the decoder checks every read again, and fails cleanly on
 * anything short or malformed, so that it is safe on its own (tests/fuzz/fuzz_wire.c).
 */
#pragma once

#include "evd_value.h"
#include "evd_wire.h"

G_BEGIN_DECLS

typedef struct {
  const char *key;          /* the call's name in the request's calls map */
  const char *lookup;       /* "" when not given */
  const EvdParam *params;   /* distinct names */
  guint n_params;
  gboolean has_timeout;
  gint32 timeout_ms;
  gboolean critical;
  guint first_param;        /* private: where its params start while decoding */
} EvdFetchCall;

typedef struct {
  const char *key, *value;
} EvdAttribute;

typedef struct _EvdFetchRequest EvdFetchRequest;
struct _EvdFetchRequest {
  gint refs;                /* atomic */
  /* RequestContext; the optional strings are NULL when not given */
  const char *request_id;
  const char *principal;
  gboolean has_deadline;
  gint32 deadline_ms;
  gboolean trace;
  const char *traceparent;  /* W3C trace context fields 6 and 7, as sent (evd_traceparent */
  const char *tracestate;   /* parses them), or EVD_REQUEST_NUL_TEXT: they held a NUL byte */
  const EvdAttribute *attributes;  /* distinct keys */
  guint n_attributes;
  const EvdFetchCall *calls;       /* distinct keys */
  guint n_calls;
  /* private */
  GStringChunk *strings;
  GArray *call_store, *param_store, *attr_store;  /* NULL until their map is read */
};

GQuark evd_request_error_quark (void);

/* What a trace context field holding a NUL byte decodes to: invalid by every W3C rule, so the
 * engine ignores and counts it, as it does any invalid value (never an error). */
#define EVD_REQUEST_NUL_TEXT "(holds a NUL byte)"


/* Decodes DataAccess.fetch's args struct (body[0..len), the message's body). NULL with an
 * error naming what is malformed. */
EvdFetchRequest *evd_request_decode (EvdProto proto, const guint8 *body, gsize len,
                                     GError **error);
EvdFetchRequest *evd_request_ref (EvdFetchRequest *request);
void evd_request_unref (EvdFetchRequest *request);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdFetchRequest, evd_request_unref)

/* The call named `key`, or NULL. */
const EvdFetchCall *evd_request_call (const EvdFetchRequest *request, const char *key);

G_END_DECLS

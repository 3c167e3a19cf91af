/* evd_request: DataAccess.fetch's args decoded by hand into plain C (see evd_request.h). */
#include "evd_request.h"

#include <string.h>

#include "evd_reader.h"

G_DEFINE_QUARK (evd-request-error-quark, evd_request_error)

/* ---- Decoding a FetchRequest. ---- */

typedef struct {
  EvdReader r;
  EvdFetchRequest *req;
} EvdDecoder;

/* A name of the request (call key, lookup, param name, attribute, request id, principal),
 * kept in its chunk. Names are C strings everywhere past here (map keys compared with strcmp,
 * log lines, SQL param names), so one holding a NUL byte is refused with `why`: read up to
 * the NUL, as c_glib does, "k\0one" and "k\0two" were one call "k" and a call vanished. */
static const char *
evd_decoder_string (EvdDecoder *d, const char *why)
{
  const guint8 *data;
  guint32 len;

  if (!evd_reader_binary (&d->r, &data, &len))
    return "";
  if (memchr (data, 0, len) != NULL) {
    evd_reader_fail (&d->r, why);
    return "";
  }
  return g_string_chunk_insert_len (d->req->strings, (const char *) data, len);
}

#define EVD_NUL_IN(what) what " holds a NUL byte (U+0000); only text and blob values may"

/* A trace context value (traceparent, tracestate). An invalid one is ignored, never an error
 * (W3C Trace Context), so one holding a NUL is not refused like a name: it becomes
 * EVD_REQUEST_NUL_TEXT, which no trace context rule accepts, rather than be read up to the
 * NUL (a valid prefix would pass for what the client did not send). */
static const char *
evd_decoder_trace_text (EvdDecoder *d)
{
  const guint8 *data;
  guint32 len;

  if (!evd_reader_binary (&d->r, &data, &len))
    return "";
  if (memchr (data, 0, len) != NULL)
    return EVD_REQUEST_NUL_TEXT;
  return g_string_chunk_insert_len (d->req->strings, (const char *) data, len);
}

static gint
evd_request_cmp_param (gconstpointer a, gconstpointer b, gpointer unused)
{
  (void) unused;
  return strcmp (((const EvdParam *) a)->name, ((const EvdParam *) b)->name);
}

static gint
evd_request_cmp_call (gconstpointer a, gconstpointer b, gpointer unused)
{
  (void) unused;
  return strcmp (((const EvdFetchCall *) a)->key, ((const EvdFetchCall *) b)->key);
}

static gint
evd_request_cmp_attr (gconstpointer a, gconstpointer b, gpointer unused)
{
  (void) unused;
  return strcmp (((const EvdAttribute *) a)->key, ((const EvdAttribute *) b)->key);
}

/* A map's entries arr[start..) with a key given twice keep its last value, as a hash table
 * filled in wire order does. A stable sort by key, then the last of each run of equal keys:
 * O(n log n), so a map of a million copies of one key costs no quadratic time. The order
 * left is the keys' (a map has none). */
static void
evd_request_dedupe (GArray *arr, guint start, GCompareDataFunc cmp)
{
  guint n = arr->len - start, esize = g_array_get_element_size (arr), kept = 0;
  guint8 *base;

  if (n < 2)
    return;
  base = (guint8 *) arr->data + (gsize) start * esize;
  g_qsort_with_data (base, (gint) n, esize, cmp, NULL);
  for (guint i = 0; i < n; i++) {
    if (i + 1 < n && cmp (base + (gsize) i * esize, base + (gsize) (i + 1) * esize, NULL) == 0)
      continue;  /* a later one has the same key */
    if (kept != i)
      memcpy (base + (gsize) kept * esize, base + (gsize) i * esize, esize);
    kept++;
  }
  g_array_set_size (arr, start + kept);
}

/* The entries of a map of n that the bytes left can hold: each takes 2 bytes at least (a
 * string key's length and a struct's stop, or a string value's length, in compact), so a
 * size the bytes cannot back does not size an allocation. The decoder still reads n, and
 * fails where the bytes run out. */
static guint
evd_decoder_room (const EvdDecoder *d, guint32 n)
{
  return (guint) MIN ((gsize) n, (gsize) (d->r.end - d->r.p) / 2);
}

/* A map<string, value_ttype>'s size. A map of other types is read past and counts as empty,
 * as c_glib's generated code makes of a field it cannot use. */
static guint32
evd_decoder_map (EvdDecoder *d, guint8 value_ttype)
{
  EvdReader *r = &d->r;
  guint8 kt = 0, vt = 0;
  guint32 n = evd_reader_map (r, &kt, &vt);

  if (n == 0 || (kt == EVD_WIRE_T_STRING && vt == value_ttype))
    return n;
  for (guint32 i = 0; i < n && !r->bad; i++) {
    evd_reader_skip (r, kt);
    evd_reader_skip (r, vt);
  }
  return 0;
}

/* Value: a union; which fields came decides its kind (c_glib sets one isset per field). */
static void
evd_decoder_value (EvdDecoder *d, EvdValue *v)
{
  EvdReader *r = &d->r;
  guint seen = 0, fields = 0;
  gint16 saved, id;
  guint8 t;

  memset (v, 0, sizeof *v);
  v->kind = EVD_VALUE_INVALID;
  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_BOOL) {
      evd_reader_bool (r);
      v->kind = EVD_VALUE_NULL;
    } else if (id == 2 && t == EVD_WIRE_T_I64) {
      v->i = evd_reader_i64 (r);
      v->kind = EVD_VALUE_INT;
    } else if (id == 3 && t == EVD_WIRE_T_DOUBLE) {
      v->r = evd_reader_double (r);
      v->kind = EVD_VALUE_REAL;
    } else if ((id == 4 || id == 5) && t == EVD_WIRE_T_STRING) {
      const guint8 *data;
      guint32 len;

      if (!evd_reader_binary (r, &data, &len))
        break;
      v->data = g_string_chunk_insert_len (d->req->strings, (const char *) data, len);
      v->len = len;  /* text with its length: a NUL inside is part of it */
      v->kind = id == 4 ? EVD_VALUE_TEXT : EVD_VALUE_BLOB;
    } else {
      evd_reader_skip (r, t);
      continue;
    }
    if ((seen & (1u << id)) == 0)
      fields++;
    seen |= 1u << id;
  }
  evd_reader_leave (r, saved);
  if (fields != 1)
    v->kind = EVD_VALUE_INVALID;
}

static void
evd_decoder_params (EvdDecoder *d, EvdFetchCall *call)
{
  EvdReader *r = &d->r;
  GArray *params = d->req->param_store;
  guint32 n = evd_decoder_map (d, EVD_WIRE_T_STRUCT);

  call->first_param = params->len;
  for (guint32 i = 0; i < n && !r->bad; i++) {
    EvdParam p;

    p.name = evd_decoder_string (d, EVD_NUL_IN ("a param name"));
    evd_decoder_value (d, &p.value);
    g_array_append_val (params, p);
  }
  evd_request_dedupe (params, call->first_param, evd_request_cmp_param);
  call->n_params = params->len - call->first_param;
}

/* LookupCall { 1: string lookup, 2: optional map<string, Value> params,
 * 3: optional i32 timeout_ms, 4: optional bool critical } */
static void
evd_decoder_call (EvdDecoder *d, EvdFetchCall *call)
{
  EvdReader *r = &d->r;
  gint16 saved, id;
  guint8 t;

  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_STRING) {
      call->lookup = evd_decoder_string (d, EVD_NUL_IN ("a lookup name"));
    } else if (id == 2 && t == EVD_WIRE_T_MAP) {
      /* A second params field replaces the first, as in c_glib: this call's params are the
       * last ones in the store. */
      if (call->n_params > 0)
        g_array_set_size (d->req->param_store, call->first_param);
      call->n_params = 0;
      evd_decoder_params (d, call);
    } else if (id == 3 && t == EVD_WIRE_T_I32) {
      call->timeout_ms = evd_reader_i32 (r);
      call->has_timeout = TRUE;
    } else if (id == 4 && t == EVD_WIRE_T_BOOL) {
      call->critical = evd_reader_bool (r);
    } else {
      evd_reader_skip (r, t);
    }
  }
  evd_reader_leave (r, saved);
}

static void
evd_decoder_calls (EvdDecoder *d)
{
  EvdReader *r = &d->r;
  GArray *calls = d->req->call_store;
  guint32 n = evd_decoder_map (d, EVD_WIRE_T_STRUCT);

  if (r->bad)
    return;
  if (calls == NULL) {
    guint room = evd_decoder_room (d, n);

    /* Sized from the map's count before any call is read, so they are not regrown one by
     * one; the params get room for one per call, the common shape (a lookup by its key).
     * A request without calls allocates neither. */
    calls = d->req->call_store = g_array_sized_new (FALSE, FALSE, sizeof (EvdFetchCall), room);
    d->req->param_store = g_array_sized_new (FALSE, FALSE, sizeof (EvdParam), room);
  }
  g_array_set_size (calls, 0);  /* a second calls field replaces the first */
  for (guint32 i = 0; i < n && !r->bad; i++) {
    EvdFetchCall call = { .lookup = "" };

    call.key = evd_decoder_string (d, EVD_NUL_IN ("a call key"));
    evd_decoder_call (d, &call);
    g_array_append_val (calls, call);
  }
  evd_request_dedupe (calls, 0, evd_request_cmp_call);
}

static void
evd_decoder_attributes (EvdDecoder *d)
{
  EvdReader *r = &d->r;
  GArray *attrs = d->req->attr_store;
  guint32 n = evd_decoder_map (d, EVD_WIRE_T_STRING);

  if (r->bad)
    return;
  if (attrs == NULL)
    attrs = d->req->attr_store = g_array_sized_new (FALSE, FALSE, sizeof (EvdAttribute),
                                                    evd_decoder_room (d, n));
  g_array_set_size (attrs, 0);
  for (guint32 i = 0; i < n && !r->bad; i++) {
    EvdAttribute a;

    a.key = evd_decoder_string (d, EVD_NUL_IN ("an attribute key"));
    a.value = evd_decoder_string (d, EVD_NUL_IN ("an attribute value"));
    g_array_append_val (attrs, a);
  }
  evd_request_dedupe (attrs, 0, evd_request_cmp_attr);
}

/* RequestContext { 1: request_id, 2: principal, 3: i32 deadline_ms, 4: bool trace,
 * 5: map<string, string> attributes, 6: traceparent, 7: tracestate }, all optional. */
static void
evd_decoder_context (EvdDecoder *d)
{
  EvdReader *r = &d->r;
  EvdFetchRequest *req = d->req;
  gint16 saved, id;
  guint8 t;

  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_STRING)
      req->request_id = evd_decoder_string (d, EVD_NUL_IN ("the request id"));
    else if (id == 2 && t == EVD_WIRE_T_STRING)
      req->principal = evd_decoder_string (d, EVD_NUL_IN ("the principal"));
    else if (id == 3 && t == EVD_WIRE_T_I32)
      req->deadline_ms = evd_reader_i32 (r), req->has_deadline = TRUE;
    else if (id == 4 && t == EVD_WIRE_T_BOOL)
      req->trace = evd_reader_bool (r);
    else if (id == 5 && t == EVD_WIRE_T_MAP)
      evd_decoder_attributes (d);
    else if (id == 6 && t == EVD_WIRE_T_STRING)
      req->traceparent = evd_decoder_trace_text (d);
    else if (id == 7 && t == EVD_WIRE_T_STRING)
      req->tracestate = evd_decoder_trace_text (d);
    else
      evd_reader_skip (r, t);
  }
  evd_reader_leave (r, saved);
}

/* FetchRequest { 1: optional RequestContext context, 2: map<string, LookupCall> calls } */
static void
evd_decoder_request (EvdDecoder *d)
{
  EvdReader *r = &d->r;
  gint16 saved, id;
  guint8 t;

  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_STRUCT)
      evd_decoder_context (d);
    else if (id == 2 && t == EVD_WIRE_T_MAP)
      evd_decoder_calls (d);
    else
      evd_reader_skip (r, t);
  }
  evd_reader_leave (r, saved);
}

EvdFetchRequest *
evd_request_decode (EvdProto proto, const guint8 *body, gsize len, GError **error)
{
  g_autoptr (EvdFetchRequest) req = g_new0 (EvdFetchRequest, 1);
  EvdDecoder d = { .r = { .p = body, .end = body + len, .proto = proto }, .req = req };
  gint16 saved, id;
  guint8 t;

  req->refs = 1;
  /* Every string of the request fits in one block: no more bytes than the body, plus NULs. */
  req->strings = g_string_chunk_new (MIN (2 * len + 64, 1 << 20));
  /* The arrays are made where their map's size is read (evd_decoder_calls and
   * evd_decoder_attributes), sized for it. */
  /* DataAccess_fetch_args { 1: FetchRequest request } */
  if (evd_reader_enter (&d.r, &saved)) {
    while (evd_reader_field (&d.r, &t, &id)) {
      if (id == 1 && t == EVD_WIRE_T_STRUCT)
        evd_decoder_request (&d);
      else
        evd_reader_skip (&d.r, t);
    }
    evd_reader_leave (&d.r, saved);
  }
  if (d.r.bad != NULL) {
    g_set_error_literal (error, evd_request_error_quark (), 0, d.r.bad);
    return NULL;
  }
  /* The arrays are complete: point the calls at their params. */
  if (req->call_store != NULL) {
    for (guint i = 0; i < req->call_store->len; i++) {
      EvdFetchCall *c = &g_array_index (req->call_store, EvdFetchCall, i);
      c->params = c->n_params ? &g_array_index (req->param_store, EvdParam, c->first_param)
                              : NULL;
    }
    req->calls = (const EvdFetchCall *) req->call_store->data;
    req->n_calls = req->call_store->len;
  }
  if (req->attr_store != NULL) {
    req->attributes = (const EvdAttribute *) req->attr_store->data;
    req->n_attributes = req->attr_store->len;
  }
  return g_steal_pointer (&req);
}

EvdFetchRequest *
evd_request_ref (EvdFetchRequest *request)
{
  g_atomic_int_inc (&request->refs);
  return request;
}

void
evd_request_unref (EvdFetchRequest *request)
{
  if (request == NULL || !g_atomic_int_dec_and_test (&request->refs))
    return;
  g_string_chunk_free (request->strings);
  g_clear_pointer (&request->call_store, g_array_unref);
  g_clear_pointer (&request->param_store, g_array_unref);
  g_clear_pointer (&request->attr_store, g_array_unref);
  g_free (request);
}

const EvdFetchCall *
evd_request_call (const EvdFetchRequest *request, const char *key)
{
  for (guint i = 0; i < request->n_calls; i++)
    if (strcmp (request->calls[i].key, key) == 0)
      return &request->calls[i];
  return NULL;
}

/* Unit tests of evd_request: fetch args decoded by hand mean what c_glib decodes from the same
 * bytes, in both protocols; malformed and truncated input fails cleanly. */
#include <string.h>

#include "evd_request.h"
#include "evd_thrift.h"
#include "evd_transport.h"
#include "evd_writer.h"

#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

static const EvdProto protos[] = { EVD_PROTO_BINARY, EVD_PROTO_COMPACT };

static GByteArray *
encode_args (EvdProto proto, evdalDataAccessFetchArgs *args)
{
  g_autoptr (ThriftTransport) t = THRIFT_TRANSPORT (evd_transport_new ());
  g_autoptr (ThriftProtocol) p = g_object_new (
    proto == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL : THRIFT_TYPE_BINARY_PROTOCOL,
    "transport", t, NULL);
  GByteArray *out = g_byte_array_new ();

  evd_transport_set_output (EVD_TRANSPORT (t), out);
  g_assert_cmpint (thrift_struct_write (THRIFT_STRUCT (args), p, NULL), >, 0);
  evd_transport_set_output (EVD_TRANSPORT (t), NULL);
  return out;
}

static evdalValue *
random_value (GRand *rand)
{
  evdalValue *v = g_object_new (EVDAL_TYPE_VALUE, NULL);

  switch (g_rand_int_range (rand, 0, 5)) {
  case 0:
    v->null_value = TRUE;
    v->__isset_null_value = TRUE;
    break;
  case 1:
    v->int_value = (gint64) g_rand_int (rand) << g_rand_int_range (rand, 0, 32);
    if (g_rand_boolean (rand))
      v->int_value = -v->int_value;
    v->__isset_int_value = TRUE;
    break;
  case 2:
    v->real_value = g_rand_double_range (rand, -1e9, 1e9);
    v->__isset_real_value = TRUE;
    break;
  case 3:
    v->text_value = g_strdup_printf ("t\xc3\xa9xt %u", g_rand_int (rand));
    v->__isset_text_value = TRUE;
    break;
  default:
    if (v->blob_value == NULL)
      v->blob_value = g_byte_array_new ();
    for (int i = g_rand_int_range (rand, 1, 40); i > 0; i--) {
      guint8 b = (guint8) g_rand_int (rand);
      g_byte_array_append (v->blob_value, &b, 1);
    }
    v->__isset_blob_value = TRUE;
  }
  return v;
}

static evdalDataAccessFetchArgs *
random_args (GRand *rand)
{
  evdalDataAccessFetchArgs *args = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_ARGS, NULL);
  evdalFetchRequest *req = args->request;
  evdalRequestContext *c = req->context;

  args->__isset_request = TRUE;
  if (g_rand_boolean (rand)) {
    req->__isset_context = TRUE;
    if ((c->__isset_request_id = g_rand_boolean (rand)))
      c->request_id = g_strdup_printf ("req-%u", g_rand_int (rand));
    if ((c->__isset_principal = g_rand_boolean (rand)))
      c->principal = g_strdup ("alice");
    if ((c->__isset_deadline_ms = g_rand_boolean (rand)))
      c->deadline_ms = g_rand_int_range (rand, -5, 5000);
    if ((c->__isset_trace = g_rand_boolean (rand)))
      c->trace = g_rand_boolean (rand);
    if ((c->__isset_attributes = g_rand_boolean (rand)))
      for (int i = g_rand_int_range (rand, 0, 20); i > 0; i--)
        g_hash_table_insert (c->attributes, g_strdup_printf ("a%d", i),
                             g_strdup_printf ("v%u", g_rand_int (rand)));
    if ((c->__isset_traceparent = g_rand_boolean (rand)))
      c->traceparent = g_strdup_printf ("00-%032x-%016x-0%d", g_rand_int (rand),
                                        g_rand_int (rand), g_rand_int_range (rand, 0, 2));
    if ((c->__isset_tracestate = g_rand_boolean (rand)))
      c->tracestate = g_rand_boolean (rand) ? g_strdup_printf ("vendor=%u", g_rand_int (rand))
                                            : g_strdup ("");
  }
  req->__isset_calls = TRUE;
  for (int i = g_rand_int_range (rand, 0, 30); i > 0; i--) {
    evdalLookupCall *call = g_object_new (EVDAL_TYPE_LOOKUP_CALL, NULL);

    call->lookup = g_strdup_printf ("lookup%d", g_rand_int_range (rand, 0, 4));
    call->__isset_lookup = TRUE;
    if ((call->__isset_params = g_rand_boolean (rand)))
      for (int k = g_rand_int_range (rand, 0, 18); k > 0; k--)
        g_hash_table_insert (call->params, g_strdup_printf ("p%d", k), random_value (rand));
    if ((call->__isset_timeout_ms = g_rand_boolean (rand)))
      call->timeout_ms = g_rand_int_range (rand, -10, 1000);
    if ((call->__isset_critical = g_rand_boolean (rand)))
      call->critical = g_rand_boolean (rand);
    g_hash_table_insert (req->calls, g_strdup_printf ("call%d", i), call);
  }
  return args;
}

static void
assert_same_value (const EvdValue *ours, evdalValue *theirs)
{
  if (theirs->__isset_null_value) {
    g_assert_cmpint (ours->kind, ==, EVD_VALUE_NULL);
  } else if (theirs->__isset_int_value) {
    g_assert_cmpint (ours->kind, ==, EVD_VALUE_INT);
    g_assert_cmpint (ours->i, ==, theirs->int_value);
  } else if (theirs->__isset_real_value) {
    g_assert_cmpint (ours->kind, ==, EVD_VALUE_REAL);
    g_assert_cmpmem (&ours->r, 8, &theirs->real_value, 8);
  } else if (theirs->__isset_text_value) {
    g_assert_cmpint (ours->kind, ==, EVD_VALUE_TEXT);
    g_assert_cmpstr (ours->data, ==, theirs->text_value);
    g_assert_cmpuint (ours->len, ==, strlen (theirs->text_value));
  } else {
    g_assert_cmpint (ours->kind, ==, EVD_VALUE_BLOB);
    g_assert_cmpmem (ours->data, ours->len, theirs->blob_value->data, theirs->blob_value->len);
  }
}

/* Random requests, written by c_glib, read back by both decoders: the same request. */
static void
test_decodes_what_c_glib_decodes (void)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (20261125);

  for (int round = 0; round < 300; round++) {
    g_autoptr (evdalDataAccessFetchArgs) args = random_args (rand);
    evdalFetchRequest *want = args->request;
    evdalRequestContext *c = want->context;

    for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
      g_autoptr (GByteArray) bytes = encode_args (protos[i], args);
      g_autoptr (GError) error = NULL;
      g_autoptr (EvdFetchRequest) got = evd_request_decode (protos[i], bytes->data, bytes->len,
                                                            &error);
      GHashTableIter it;
      gpointer key, value;

      g_assert_no_error (error);
      g_assert_nonnull (got);
      g_assert_cmpstr (got->request_id, ==, want->__isset_context && c->__isset_request_id
                                            ? c->request_id : NULL);
      g_assert_cmpstr (got->principal, ==, want->__isset_context && c->__isset_principal
                                           ? c->principal : NULL);
      g_assert_cmpint (got->has_deadline, ==, want->__isset_context && c->__isset_deadline_ms);
      if (got->has_deadline)
        g_assert_cmpint (got->deadline_ms, ==, c->deadline_ms);
      g_assert_cmpint (got->trace, ==, want->__isset_context && c->__isset_trace && c->trace);
      g_assert_cmpstr (got->traceparent, ==, want->__isset_context && c->__isset_traceparent
                                             ? c->traceparent : NULL);
      /* An empty string stays "" here; c_glib keeps its "" too (it was set, not read). */
      g_assert_cmpstr (got->tracestate, ==, want->__isset_context && c->__isset_tracestate
                                            ? c->tracestate : NULL);
      g_assert_cmpuint (got->n_attributes, ==, want->__isset_context && c->__isset_attributes
                                               ? g_hash_table_size (c->attributes) : 0);
      for (guint a = 0; a < got->n_attributes; a++)
        g_assert_cmpstr (got->attributes[a].value, ==,
                         g_hash_table_lookup (c->attributes, got->attributes[a].key));
      g_assert_cmpuint (got->n_calls, ==, g_hash_table_size (want->calls));
      g_hash_table_iter_init (&it, want->calls);
      while (g_hash_table_iter_next (&it, &key, &value)) {
        evdalLookupCall *wc = value;
        const EvdFetchCall *gc = evd_request_call (got, key);

        g_assert_nonnull (gc);
        g_assert_cmpstr (gc->lookup, ==, wc->lookup);
        g_assert_cmpint (gc->has_timeout, ==, wc->__isset_timeout_ms);
        if (gc->has_timeout)
          g_assert_cmpint (gc->timeout_ms, ==, wc->timeout_ms);
        g_assert_cmpint (gc->critical, ==, wc->__isset_critical && wc->critical);
        g_assert_cmpuint (gc->n_params, ==, wc->__isset_params ? g_hash_table_size (wc->params)
                                                               : 0);
        for (guint k = 0; k < gc->n_params; k++) {
          evdalValue *wv = g_hash_table_lookup (wc->params, gc->params[k].name);
          g_assert_nonnull (wv);
          assert_same_value (&gc->params[k].value, wv);
        }
      }
    }
  }
}

/* Every prefix of a real request is short: an error, never a crash nor a read past it
 * (ASan watches); and a lie about a length fails the same way. */
static void
test_truncated_input_fails_cleanly (void)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (7);
  g_autoptr (evdalDataAccessFetchArgs) args = random_args (rand);

  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    g_autoptr (GByteArray) bytes = encode_args (protos[i], args);

    for (guint len = 0; len < bytes->len; len++) {
      g_autofree guint8 *copy = g_memdup2 (bytes->data, len);  /* exactly len bytes */
      g_autoptr (GError) error = NULL;
      EvdFetchRequest *got = evd_request_decode (protos[i], copy, len, &error);

      g_assert_null (got);
      g_assert_nonnull (error);
    }
  }
}

/* Starts fetch's args { 1: FetchRequest { ... } } in `out`; the caller writes the request's
 * fields, then end_fetch_request closes both structs. */
static void
begin_fetch_request (EvdWriter *w, GByteArray *out, EvdProto proto)
{
  evd_writer_init (w, out, proto);
  evd_writer_struct_begin (w);                          /* args */
  evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 1);
  evd_writer_struct_begin (w);                          /* FetchRequest */
}

static void
end_fetch_request (EvdWriter *w)
{
  evd_writer_struct_end (w);
  evd_writer_struct_end (w);
}

/* What c_glib's hash tables and issets make of odd but well-formed input: a union with two
 * fields is malformed, a key given twice keeps its last value, a field of another type is
 * skipped. Written with evd_writer, since c_glib cannot write duplicates. */
static void
test_odd_input_means_what_c_glib_makes_of_it (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    g_autoptr (GByteArray) bytes = g_byte_array_new ();
    g_autoptr (GError) error = NULL;
    g_autoptr (EvdFetchRequest) got = NULL;
    const EvdFetchCall *call;
    EvdWriter w;

    begin_fetch_request (&w, bytes, protos[i]);
    evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
    evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 3);
    for (int k = 0; k < 3; k++) {
      evd_writer_string (&w, k < 2 ? "dup" : "other");
      evd_writer_struct_begin (&w);                     /* LookupCall */
      evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 1);
      evd_writer_string (&w, k == 0 ? "first" : "second");
      evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 3);  /* timeout_ms as a string: skipped */
      evd_writer_string (&w, "100");
      evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
      evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 3);
      evd_writer_string (&w, "x");
      evd_writer_struct_begin (&w);                     /* Value with two fields */
      evd_writer_field_begin (&w, EVD_WIRE_T_I64, 2);
      evd_writer_i64 (&w, 1);
      evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 4);
      evd_writer_string (&w, "one");
      evd_writer_struct_end (&w);
      evd_writer_string (&w, "y");
      evd_writer_struct_begin (&w);
      evd_writer_field_begin (&w, EVD_WIRE_T_I64, 2);
      evd_writer_i64 (&w, 1);
      evd_writer_struct_end (&w);
      evd_writer_string (&w, "y");                      /* y again: the last one counts */
      evd_writer_struct_begin (&w);
      evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 4);
      evd_writer_binary (&w, "two\0hidden", 10);
      evd_writer_struct_end (&w);
      evd_writer_struct_end (&w);
    }
    end_fetch_request (&w);

    got = evd_request_decode (protos[i], bytes->data, bytes->len, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (got->n_calls, ==, 2);
    call = evd_request_call (got, "dup");
    g_assert_cmpstr (call->lookup, ==, "second");
    g_assert_false (call->has_timeout);
    g_assert_cmpuint (call->n_params, ==, 2);
    g_assert_cmpint (evd_value_find_param (call->params, call->n_params, "x")->kind, ==,
                     EVD_VALUE_INVALID);
    g_assert_cmpint (evd_value_find_param (call->params, call->n_params, "y")->kind, ==,
                     EVD_VALUE_TEXT);
    g_assert_cmpstr (evd_value_find_param (call->params, call->n_params, "y")->data, ==, "two");
    g_assert_cmpstr (evd_request_call (got, "other")->lookup, ==, "second");
  }
}

/* A trace context field holding a NUL byte is not read up to the NUL (a valid traceparent
 * before it would pass for what the client did not send) and does not fail the request
 * (invalid trace context is ignored): it decodes to EVD_REQUEST_NUL_TEXT. */
static void
test_nul_in_trace_context_is_invalid_not_an_error (void)
{
  static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\0junk";

  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    g_autoptr (GByteArray) bytes = g_byte_array_new ();
    g_autoptr (GError) error = NULL;
    g_autoptr (EvdFetchRequest) got = NULL;
    EvdWriter w;

    begin_fetch_request (&w, bytes, protos[i]);
    evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
    evd_writer_struct_begin (&w);                       /* RequestContext */
    evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 6);
    evd_writer_binary (&w, tp, sizeof tp - 1);
    evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 7);
    evd_writer_binary (&w, "k=v\0", 4);
    evd_writer_struct_end (&w);
    end_fetch_request (&w);
    got = evd_request_decode (protos[i], bytes->data, bytes->len, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (got->traceparent, ==, EVD_REQUEST_NUL_TEXT);
    g_assert_cmpstr (got->tracestate, ==, EVD_REQUEST_NUL_TEXT);
  }
}

/* A call { lookup: "l<k>", params: { p: <k> } } keyed "c<k>". */
static void
write_call (EvdWriter *w, int k)
{
  g_autofree char *key = g_strdup_printf ("c%d", k);
  g_autofree char *lookup = g_strdup_printf ("l%d", k);

  evd_writer_string (w, key);
  evd_writer_struct_begin (w);
  evd_writer_field_begin (w, EVD_WIRE_T_STRING, 1);
  evd_writer_string (w, lookup);
  evd_writer_field_begin (w, EVD_WIRE_T_MAP, 2);
  evd_writer_map_begin (w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 1);
  evd_writer_string (w, "p");
  evd_writer_struct_begin (w);
  evd_writer_field_begin (w, EVD_WIRE_T_I64, 2);
  evd_writer_i64 (w, k);
  evd_writer_struct_end (w);
  evd_writer_struct_end (w);
}

/* The arrays are sized from the first calls map's count: a second calls field (which
 * replaces the first, as in c_glib) with more calls and params grows them and reads right;
 * a request without calls or attributes has none. */
static void
test_second_calls_field_outgrows_the_first (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    g_autoptr (GByteArray) bytes = g_byte_array_new ();
    g_autoptr (GByteArray) empty = g_byte_array_new ();
    g_autoptr (GError) error = NULL;
    g_autoptr (EvdFetchRequest) got = NULL;
    g_autoptr (EvdFetchRequest) none = NULL;
    EvdWriter w;

    begin_fetch_request (&w, bytes, protos[i]);
    evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
    evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 1);
    write_call (&w, 100);
    evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
    evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 40);
    for (int k = 0; k < 40; k++)
      write_call (&w, k);
    end_fetch_request (&w);

    got = evd_request_decode (protos[i], bytes->data, bytes->len, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (got->n_calls, ==, 40);
    g_assert_null (evd_request_call (got, "c100"));
    for (int k = 0; k < 40; k++) {
      g_autofree char *key = g_strdup_printf ("c%d", k);
      g_autofree char *lookup = g_strdup_printf ("l%d", k);
      const EvdFetchCall *call = evd_request_call (got, key);

      g_assert_nonnull (call);
      g_assert_cmpstr (call->lookup, ==, lookup);
      g_assert_cmpuint (call->n_params, ==, 1);
      g_assert_cmpstr (call->params[0].name, ==, "p");
      g_assert_cmpint (call->params[0].value.i, ==, k);
    }
    g_assert_cmpuint (got->n_attributes, ==, 0);

    begin_fetch_request (&w, empty, protos[i]);  /* without calls */
    end_fetch_request (&w);
    none = evd_request_decode (protos[i], empty->data, empty->len, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (none->n_calls, ==, 0);
    g_assert_cmpuint (none->n_attributes, ==, 0);
    g_assert_null (evd_request_call (none, "c0"));
  }
}

/* A map's count sizes the arrays before its entries are read, so a count the bytes cannot
 * back (2^31 - 1 calls or attributes in a few bytes) must neither allocate for it nor crash:
 * the request fails as short. */
static void
test_map_size_beyond_the_bytes_fails_cleanly (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    for (int attrs = 0; attrs < 2; attrs++) {
      g_autoptr (GByteArray) bytes = g_byte_array_new ();
      g_autoptr (GError) error = NULL;
      EvdFetchRequest *got;
      EvdWriter w;

      begin_fetch_request (&w, bytes, protos[i]);
      if (attrs) {
        evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
        evd_writer_struct_begin (&w);                   /* RequestContext */
        evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 5);
        evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRING, G_MAXINT32);
        evd_writer_string (&w, "k");
        evd_writer_string (&w, "v");
      } else {
        evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
        evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, G_MAXINT32);
        write_call (&w, 1);
      }
      end_fetch_request (&w);

      got = evd_request_decode (protos[i], bytes->data, bytes->len, &error);
      g_assert_null (got);
      g_assert_nonnull (error);
    }
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/request/decodes-what-c_glib-decodes", test_decodes_what_c_glib_decodes);
  g_test_add_func ("/request/truncated-input-fails-cleanly", test_truncated_input_fails_cleanly);
  g_test_add_func ("/request/nul-in-trace-context-is-invalid-not-an-error",
                   test_nul_in_trace_context_is_invalid_not_an_error);
  g_test_add_func ("/request/odd-input-means-what-c_glib-makes-of-it",
                   test_odd_input_means_what_c_glib_makes_of_it);
  g_test_add_func ("/request/second-calls-field-outgrows-the-first",
                   test_second_calls_field_outgrows_the_first);
  g_test_add_func ("/request/map-size-beyond-the-bytes-fails-cleanly",
                   test_map_size_beyond_the_bytes_fails_cleanly);
  return g_test_run ();
}

/* test_fetch_reply: evd_fetch_reply (the Thrift upstream's decoder of a remote fetch's reply)
 * against the path it replaced: c_glib's generated decoder, then the copy into EvdRows that
 * the backend made. Thousands of random replies in both protocols, each passed through the
 * scanner first as the backend does, must decode the same both ways; then the cases a random
 * reply rarely makes (rows before columns, text with a NUL byte, a reply that is cut). */
#include <string.h>
#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "evd_fetch_reply.h"
#include "evd_thrift.h"
#include "evd_transport.h"
#include "evd_wire.h"
#include "evd_writer.h"

#define N_SLOTS 6

/* ---- The reference: c_glib, and the backend's conversion as it was. ---- */

static EvdRows *
ref_rows (evdalTable *t)
{
  g_autofree const char **cols = g_new0 (const char *, t->columns->len + 1);
  EvdRows *rows;

  for (guint i = 0; i < t->columns->len; i++)
    cols[i] = t->columns->pdata[i] ? t->columns->pdata[i] : "";
  rows = evd_rows_new (t->columns->len, cols);
  for (guint r = 0; r < t->rows->len; r++) {
    GPtrArray *row = t->rows->pdata[r];

    if (row->len != t->columns->len) {
      evd_rows_unref (rows);
      return NULL;
    }
    for (guint c = 0; c < row->len; c++) {
      evdalValue *v = row->pdata[c];

      if (v->__isset_int_value)
        evd_rows_add_int (rows, v->int_value);
      else if (v->__isset_real_value)
        evd_rows_add_real (rows, v->real_value);
      else if (v->__isset_text_value)
        evd_rows_add_text (rows, v->text_value ? v->text_value : "", -1);
      else if (v->__isset_blob_value)
        evd_rows_add_blob (rows, v->blob_value->data, v->blob_value->len);
      else
        evd_rows_add_null (rows);
    }
  }
  return rows;
}

/* What the c_glib path made of the reply, in the new decoder's terms; FALSE when c_glib could
 * not decode it. */
static gboolean
ref_decode (const guint8 *body, gsize len, EvdProto proto, EvdFetchReply *out)
{
  EvdTransport *transport = evd_transport_new ();
  g_autoptr (ThriftProtocol) protocol =
    g_object_new (proto == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL
                                             : THRIFT_TYPE_BINARY_PROTOCOL,
                  "transport", transport, NULL);
  g_autoptr (evdalDataAccessFetchResult) r =
    g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
  g_autoptr (GError) error = NULL;
  gboolean ok;

  memset (out, 0, sizeof *out);
  evd_transport_set_input (transport, body, len);
  ok = thrift_struct_read (THRIFT_STRUCT (r), protocol, &error) >= 0;
  if (proto == EVD_PROTO_COMPACT)
    g_queue_clear (&THRIFT_COMPACT_PROTOCOL (protocol)->_last_field);
  g_object_unref (transport);  /* the protocol holds its own reference */
  if (!ok)
    return FALSE;
  out->n_calls = N_SLOTS;
  out->calls = g_new0 (EvdFetchReplyCall, N_SLOTS);
  if (r->__isset_overloaded) {
    out->outcome = EVD_FETCH_REPLY_OVERLOADED;
    out->message = g_strdup (r->overloaded->message ? r->overloaded->message : "");
    out->retry_after_ms = r->overloaded->retry_after_ms;
    return TRUE;
  }
  if (r->__isset_invalid) {
    out->outcome = EVD_FETCH_REPLY_INVALID;
    out->message = g_strdup (r->invalid->message ? r->invalid->message : "");
    return TRUE;
  }
  if (r->__isset_failed) {
    out->outcome = EVD_FETCH_REPLY_FAILED;
    out->failed_call = g_strdup (r->failed->call ? r->failed->call : "");
    out->message = g_strdup (r->failed->__isset_error && r->failed->error->message
                             ? r->failed->error->message : "");
    out->failed_kind = r->failed->__isset_error ? (EvdErrorKind) r->failed->error->kind
                                                : EVD_ERROR_KIND_NONE;
    if (out->failed_kind < EVD_ERROR_KIND_UNKNOWN_LOOKUP ||
        out->failed_kind > EVD_ERROR_KIND_CANCELLED)
      out->failed_kind = EVD_ERROR_KIND_BACKEND;
    return TRUE;
  }
  if (!r->__isset_success) {
    out->outcome = EVD_FETCH_REPLY_NONE;
    return TRUE;
  }
  out->outcome = EVD_FETCH_REPLY_SUCCESS;
  for (guint i = 0; i < N_SLOTS; i++) {
    char key[16];
    evdalLookupResult *res;
    EvdFetchReplyCall *call = &out->calls[i];

    g_snprintf (key, sizeof key, "%u", i);
    res = r->success->results ? g_hash_table_lookup (r->success->results, key) : NULL;
    if (res == NULL || (!res->__isset_table && !res->__isset_error))
      continue;
    if (res->__isset_error) {
      int kind = res->error->kind;

      if (kind < EVD_ERROR_KIND_UNKNOWN_LOOKUP || kind > EVD_ERROR_KIND_CANCELLED)
        kind = EVD_ERROR_KIND_BACKEND;
      call->kind = kind;
      call->message = g_strdup (res->error->message ? res->error->message : "");
      continue;
    }
    call->rows = ref_rows (res->table);
    if (call->rows == NULL)
      call->message = g_strdup ("a row of the wrong width");
  }
  return TRUE;
}

static void
assert_rows_equal (const EvdRows *a, const EvdRows *b)
{
  g_assert_cmpuint (evd_rows_n_columns (a), ==, evd_rows_n_columns (b));
  for (guint c = 0; c < evd_rows_n_columns (a); c++)
    g_assert_cmpstr (evd_rows_column (a, c), ==, evd_rows_column (b, c));
  g_assert_cmpuint (evd_rows_n_rows (a), ==, evd_rows_n_rows (b));
  for (guint r = 0; r < evd_rows_n_rows (a); r++)
    for (guint c = 0; c < evd_rows_n_columns (a); c++) {
      const EvdCell *x = evd_rows_cell (a, r, c), *y = evd_rows_cell (b, r, c);

      g_assert_cmpint (x->kind, ==, y->kind);
      if (x->kind == EVD_VALUE_INT)
        g_assert_cmpint (x->v.i, ==, y->v.i);
      else if (x->kind == EVD_VALUE_REAL)
        g_assert_true (memcmp (&x->v.r, &y->v.r, sizeof (double)) == 0);
      else if (x->kind == EVD_VALUE_TEXT || x->kind == EVD_VALUE_BLOB) {
        g_assert_cmpuint (x->len, ==, y->len);
        g_assert_true (memcmp (evd_rows_cell_data (a, x), evd_rows_cell_data (b, y), x->len)
                       == 0);
      }
    }
}

static void
assert_replies_equal (const EvdFetchReply *a, const EvdFetchReply *b)
{
  g_assert_cmpint (a->outcome, ==, b->outcome);
  if (a->outcome != EVD_FETCH_REPLY_SUCCESS) {
    if (a->outcome != EVD_FETCH_REPLY_NONE)
      g_assert_cmpstr (a->message, ==, b->message);
    if (a->outcome == EVD_FETCH_REPLY_OVERLOADED)
      g_assert_cmpint (a->retry_after_ms, ==, b->retry_after_ms);
    if (a->outcome == EVD_FETCH_REPLY_FAILED) {
      guint slot = G_MAXUINT;

      g_assert_cmpstr (a->failed_call, ==, b->failed_call);
      g_assert_cmpint (a->failed_kind, ==, b->failed_kind);
      for (guint i = 0; i < N_SLOTS; i++) {
        char key[16];

        g_snprintf (key, sizeof key, "%u", i);
        if (strcmp (key, a->failed_call) == 0)
          slot = i;
      }
      g_assert_cmpuint (b->failed_slot, ==, slot);
    }
    return;
  }
  for (guint i = 0; i < N_SLOTS; i++) {
    const EvdFetchReplyCall *x = &a->calls[i], *y = &b->calls[i];

    g_assert_cmpint (x->kind, ==, y->kind);
    g_assert_cmpstr (x->message, ==, y->message);
    g_assert_true ((x->rows == NULL) == (y->rows == NULL));
    if (x->rows != NULL)
      assert_rows_equal (x->rows, y->rows);
  }
}

/* ---- Random replies, written field by field. ---- */

static void
write_text (GRand *rand, EvdWriter *w)
{
  char buf[24];
  guint n = g_rand_int_range (rand, 0, sizeof buf);

  for (guint i = 0; i < n; i++)
    buf[i] = (char) g_rand_int_range (rand, 'a', 'z' + 1);
  evd_writer_binary (w, buf, n);
}

static void
write_value (GRand *rand, EvdWriter *w)
{
  /* Mostly one field, as writers send a union; sometimes two, none, or an unknown one. */
  guint fields = g_rand_int_range (rand, 0, 10) < 8 ? 1 : g_rand_int_range (rand, 0, 3);
  guint used = 0;

  evd_writer_struct_begin (w);
  for (guint f = 0; f < fields; f++) {
    guint id = g_rand_int_range (rand, 1, 7);

    if (used & (1u << id))
      continue;
    used |= 1u << id;
    switch (id) {
    case 1:
      evd_writer_field_bool (w, 1, TRUE);
      break;
    case 2:
      evd_writer_field_begin (w, EVD_WIRE_T_I64, 2);
      evd_writer_i64 (w, (gint64) g_rand_int (rand) << 31 ^ g_rand_int (rand));
      break;
    case 3:
      evd_writer_field_begin (w, EVD_WIRE_T_DOUBLE, 3);
      evd_writer_double (w, g_rand_double_range (rand, -1e9, 1e9));
      break;
    case 4:
    case 5:
      evd_writer_field_begin (w, EVD_WIRE_T_STRING, (gint16) id);
      write_text (rand, w);
      break;
    default:
      evd_writer_field_begin (w, EVD_WIRE_T_I32, 9);  /* a field this IDL does not have */
      evd_writer_i32 (w, 7);
    }
  }
  evd_writer_struct_end (w);
}

static void
write_table (GRand *rand, EvdWriter *w)
{
  guint cols = g_rand_int_range (rand, 0, 5), rows = g_rand_int_range (rand, 0, 5);
  gboolean rows_first = g_rand_int_range (rand, 0, 6) == 0;
  gboolean columns = g_rand_int_range (rand, 0, 12) != 0;

  evd_writer_struct_begin (w);
  for (guint part = 0; part < 2; part++) {
    if ((part == 0) != rows_first) {
      if (!columns)
        continue;
      evd_writer_field_begin (w, EVD_WIRE_T_LIST, 1);
      evd_writer_list_begin (w, EVD_WIRE_T_STRING, cols);
      for (guint c = 0; c < cols; c++)
        write_text (rand, w);
    } else {
      evd_writer_field_begin (w, EVD_WIRE_T_LIST, 2);
      evd_writer_list_begin (w, EVD_WIRE_T_LIST, rows);
      for (guint r = 0; r < rows; r++) {
        /* Now and then a row of the wrong width. */
        guint width = (columns ? cols : 0) + (g_rand_int_range (rand, 0, 25) == 0 ? 1 : 0);

        evd_writer_list_begin (w, EVD_WIRE_T_STRUCT, width);
        for (guint c = 0; c < width; c++)
          write_value (rand, w);
      }
    }
  }
  evd_writer_struct_end (w);
}

static void
write_error (GRand *rand, EvdWriter *w)
{
  evd_writer_struct_begin (w);
  evd_writer_field_begin (w, EVD_WIRE_T_I32, 1);
  evd_writer_i32 (w, g_rand_int_range (rand, -1, 9));
  if (g_rand_boolean (rand)) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 2);
    write_text (rand, w);
  }
  evd_writer_struct_end (w);
}

static void
write_result (GRand *rand, EvdWriter *w)
{
  guint shape = g_rand_int_range (rand, 0, 10);

  evd_writer_struct_begin (w);
  if (shape < 7 || shape == 8) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 1);
    write_table (rand, w);
  }
  if (shape == 7 || shape == 8) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 2);
    write_error (rand, w);
  }
  if (g_rand_int_range (rand, 0, 4) == 0) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 3);  /* a span */
    evd_writer_struct_begin (w);
    evd_writer_field_begin (w, EVD_WIRE_T_I64, 1);
    evd_writer_i64 (w, 5);
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 3);
    evd_writer_string (w, "sqlite:main");
    evd_writer_struct_end (w);
  }
  evd_writer_struct_end (w);
}

static void
write_exception (GRand *rand, EvdWriter *w, gint16 id)
{
  evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, id);
  evd_writer_struct_begin (w);
  if (id == 2) {  /* LookupFailed { call, error }: the call a slot's key, or not */
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 1);
    if (g_rand_boolean (rand)) {
      char key[16];

      g_snprintf (key, sizeof key, "%d", g_rand_int_range (rand, 0, N_SLOTS + 2));
      evd_writer_string (w, key);
    } else {
      write_text (rand, w);
    }
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 2);
    write_error (rand, w);
  } else {
    if (g_rand_int_range (rand, 0, 4) != 0) {
      evd_writer_field_begin (w, EVD_WIRE_T_STRING, 1);
      write_text (rand, w);
    }
    if (id == 3) {
      evd_writer_field_begin (w, EVD_WIRE_T_I32, 2);
      evd_writer_i32 (w, g_rand_int_range (rand, 0, 5000));
    }
  }
  evd_writer_struct_end (w);
}

/* A whole reply message: "fetch", REPLY, then the result struct. */
static GByteArray *
write_reply (GRand *rand, EvdProto proto)
{
  GByteArray *out = g_byte_array_new ();
  guint shape = g_rand_int_range (rand, 0, 20);
  EvdWriter w;

  evd_writer_init (&w, out, proto);
  evd_writer_message_begin (&w, "fetch", EVD_MSG_REPLY, 1);
  evd_writer_struct_begin (&w);
  if (shape < 16 || shape == 19) {  /* 19: results and Overloaded both */
    guint n = g_rand_int_range (rand, 0, N_SLOTS + 3);

    evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 0);
    evd_writer_struct_begin (&w);
    evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 1);
    evd_writer_string (&w, "req-1");
    evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
    evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, n);
    for (guint i = 0; i < n; i++) {
      static const char *const odd[] = { "x", "01", "99", "", "-1", "4294967296" };
      guint k = g_rand_int_range (rand, 0, N_SLOTS + 2);

      /* A slot's key (sometimes one sent twice), or a key that names none. */
      if (k < N_SLOTS) {
        char key[16];

        g_snprintf (key, sizeof key, "%u", k);
        evd_writer_string (&w, key);
      } else {
        evd_writer_string (&w, odd[g_rand_int_range (rand, 0, G_N_ELEMENTS (odd))]);
      }
      write_result (rand, &w);
    }
    evd_writer_field_begin (&w, EVD_WIRE_T_I64, 3);
    evd_writer_i64 (&w, 1234);
    evd_writer_struct_end (&w);
  }
  if (shape == 16 || shape == 19)
    write_exception (rand, &w, 3);
  else if (shape == 17)
    write_exception (rand, &w, 1);
  else if (shape == 18)
    write_exception (rand, &w, 2);
  evd_writer_struct_end (&w);
  return out;
}

/* The scanner's verdict and the body's offset, as the backend checks a reply first. */
static gboolean
scan (EvdProto proto, const guint8 *msg, gsize len, gsize *body)
{
  EvdWireScanner s;

  evd_wire_scanner_init (&s, proto, len, EVD_WIRE_MAX_DEPTH);
  s.schema_for = evd_wire_schema_result;
  if (evd_wire_scanner_frame (&s, msg, len) != EVD_WIRE_OK)
    return FALSE;
  *body = s.body_offset;
  return TRUE;
}

static void
test_random_against_c_glib (gconstpointer data)
{
  EvdProto proto = GPOINTER_TO_INT (data);
  g_autoptr (GRand) rand = g_rand_new_with_seed (20261204 + proto);
  guint compared = 0, successes = 0, tables = 0, wrong_width = 0;

  for (guint i = 0; i < 3000; i++) {
    g_autoptr (GByteArray) msg = write_reply (rand, proto);
    EvdFetchReply want, got;
    const char *why = NULL;
    gsize body;

    g_assert_true (scan (proto, msg->data, msg->len, &body));
    g_assert_true (ref_decode (msg->data + body, msg->len - body, proto, &want));
    g_assert_true (evd_fetch_reply_decode (msg->data + body, msg->len - body, proto, N_SLOTS,
                                           &got, &why));
    g_assert_null (why);
    assert_replies_equal (&want, &got);
    compared++;
    successes += got.outcome == EVD_FETCH_REPLY_SUCCESS;
    for (guint s = 0; s < N_SLOTS; s++) {
      tables += got.calls[s].rows != NULL;
      wrong_width += got.calls[s].message != NULL && got.calls[s].kind == EVD_ERROR_KIND_NONE;
    }
    evd_fetch_reply_clear (&want);
    evd_fetch_reply_clear (&got);
  }
  /* The generator reached what it is there to reach. */
  g_assert_cmpuint (compared, ==, 3000);
  g_assert_cmpuint (successes, >, 2000);
  g_assert_cmpuint (tables, >, 3000);
  g_assert_cmpuint (wrong_width, >, 50);
}

/* A reply's calls, written in full: a table with its rows before its columns, a text with a
 * NUL byte (kept whole here; c_glib cut it), an error, a slot with no result. */
static void
test_cases (gconstpointer data)
{
  EvdProto proto = GPOINTER_TO_INT (data);
  g_autoptr (GByteArray) msg = g_byte_array_new ();
  EvdFetchReply got;
  const char *why = NULL;
  const EvdCell *cell;
  gsize body;
  EvdWriter w;

  evd_writer_init (&w, msg, proto);
  evd_writer_message_begin (&w, "fetch", EVD_MSG_REPLY, 1);
  evd_writer_struct_begin (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 0);
  evd_writer_struct_begin (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
  evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 2);
  evd_writer_string (&w, "1");
  evd_writer_struct_begin (&w);                          /* LookupResult */
  evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
  evd_writer_struct_begin (&w);                          /* Table: rows, then columns */
  evd_writer_field_begin (&w, EVD_WIRE_T_LIST, 2);
  evd_writer_list_begin (&w, EVD_WIRE_T_LIST, 1);
  evd_writer_list_begin (&w, EVD_WIRE_T_STRUCT, 2);
  evd_writer_struct_begin (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 4);
  evd_writer_binary (&w, "a\0b", 3);
  evd_writer_struct_end (&w);
  evd_writer_struct_begin (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_I64, 2);
  evd_writer_i64 (&w, -5);
  evd_writer_struct_end (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_LIST, 1);
  evd_writer_list_begin (&w, EVD_WIRE_T_STRING, 2);
  evd_writer_string (&w, "t");
  evd_writer_string (&w, "n");
  evd_writer_struct_end (&w);                            /* Table */
  evd_writer_struct_end (&w);                            /* LookupResult */
  evd_writer_string (&w, "2");
  evd_writer_struct_begin (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 2);
  evd_writer_struct_begin (&w);
  evd_writer_field_begin (&w, EVD_WIRE_T_I32, 1);
  evd_writer_i32 (&w, EVD_ERROR_KIND_TIMEOUT);
  evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 2);
  evd_writer_string (&w, "too slow");
  evd_writer_struct_end (&w);
  evd_writer_struct_end (&w);
  evd_writer_struct_end (&w);                            /* FetchResponse */
  evd_writer_struct_end (&w);                            /* fetch_result */

  g_assert_true (scan (proto, msg->data, msg->len, &body));
  g_assert_true (evd_fetch_reply_decode (msg->data + body, msg->len - body, proto, 3, &got,
                                         &why));
  g_assert_cmpint (got.outcome, ==, EVD_FETCH_REPLY_SUCCESS);
  g_assert_null (got.calls[0].rows);
  g_assert_null (got.calls[0].message);
  g_assert_nonnull (got.calls[1].rows);
  g_assert_cmpstr (evd_rows_column (got.calls[1].rows, 0), ==, "t");
  g_assert_cmpuint (evd_rows_n_rows (got.calls[1].rows), ==, 1);
  cell = evd_rows_cell (got.calls[1].rows, 0, 0);
  g_assert_cmpint (cell->kind, ==, EVD_VALUE_TEXT);
  g_assert_cmpuint (cell->len, ==, 3);
  g_assert_true (memcmp (evd_rows_cell_data (got.calls[1].rows, cell), "a\0b", 3) == 0);
  g_assert_cmpint (evd_rows_cell (got.calls[1].rows, 0, 1)->v.i, ==, -5);
  g_assert_cmpint (got.calls[2].kind, ==, EVD_ERROR_KIND_TIMEOUT);
  g_assert_cmpstr (got.calls[2].message, ==, "too slow");
  evd_fetch_reply_clear (&got);

  /* Cut anywhere, it does not decode, and nothing leaks (ASan's run of this test). */
  for (gsize cut = body; cut < msg->len; cut++) {
    why = NULL;
    g_assert_false (evd_fetch_reply_decode (msg->data + body, cut - body, proto, 3, &got,
                                            &why));
    g_assert_nonnull (why);
  }
}

/* TApplicationException's message, by hand; an exception without one, or cut, too. */
static void
test_app_exception (gconstpointer data)
{
  EvdProto proto = GPOINTER_TO_INT (data);

  for (guint with_message = 0; with_message < 2; with_message++) {
    g_autoptr (GByteArray) msg = g_byte_array_new ();
    g_autofree char *message = NULL;
    const char *why = NULL;
    EvdWireScanner s;
    EvdWriter w;

    evd_writer_init (&w, msg, proto);
    evd_writer_message_begin (&w, "fetch", EVD_MSG_EXCEPTION, 1);
    evd_writer_struct_begin (&w);
    if (with_message) {
      evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 1);
      evd_writer_string (&w, "remote on fire");
    }
    evd_writer_field_begin (&w, EVD_WIRE_T_I32, 2);
    evd_writer_i32 (&w, 6);
    evd_writer_struct_end (&w);
    evd_wire_scanner_init (&s, proto, msg->len, EVD_WIRE_MAX_DEPTH);
    g_assert_cmpint (evd_wire_scanner_frame (&s, msg->data, msg->len), ==, EVD_WIRE_OK);
    g_assert_true (evd_fetch_reply_app_exception (msg->data + s.body_offset,
                                                  msg->len - s.body_offset, proto, &message,
                                                  &why));
    g_assert_cmpstr (message, ==, with_message ? "remote on fire" : NULL);
    g_clear_pointer (&message, g_free);
    g_assert_false (evd_fetch_reply_app_exception (msg->data + s.body_offset,
                                                   msg->len - s.body_offset - 1, proto,
                                                   &message, &why));
    g_assert_nonnull (why);
    g_assert_null (message);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/fetch-reply/random-against-c_glib/binary",
                        GINT_TO_POINTER (EVD_PROTO_BINARY), test_random_against_c_glib);
  g_test_add_data_func ("/fetch-reply/random-against-c_glib/compact",
                        GINT_TO_POINTER (EVD_PROTO_COMPACT), test_random_against_c_glib);
  g_test_add_data_func ("/fetch-reply/cases/binary", GINT_TO_POINTER (EVD_PROTO_BINARY),
                        test_cases);
  g_test_add_data_func ("/fetch-reply/cases/compact", GINT_TO_POINTER (EVD_PROTO_COMPACT),
                        test_cases);
  g_test_add_data_func ("/fetch-reply/app-exception/binary", GINT_TO_POINTER (EVD_PROTO_BINARY),
                        test_app_exception);
  g_test_add_data_func ("/fetch-reply/app-exception/compact",
                        GINT_TO_POINTER (EVD_PROTO_COMPACT), test_app_exception);
  return g_test_run ();
}

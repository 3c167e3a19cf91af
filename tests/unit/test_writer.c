/* Unit tests of evd_writer, evd_rows and evd_response: the hand-written encoder writes what
 * c_glib's TBinaryProtocol and TCompactProtocol write, byte for byte, token by token and for
 * whole fetch replies, and c_glib decodes a hand-written reply into the same response. */
#include <math.h>
#include <string.h>

#include "evd_backend.h"
#include "evd_response.h"
#include "evd_thrift.h"
#include "evd_transport.h"
#include "evd_writer.h"

#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

static const EvdProto protos[] = { EVD_PROTO_BINARY, EVD_PROTO_COMPACT };

static const char *
proto_name (EvdProto proto)
{
  return proto == EVD_PROTO_BINARY ? "binary" : "compact";
}

/* A c_glib protocol writing into `out`. */
typedef struct {
  ThriftTransport *t;
  ThriftProtocol *p;
} Glib;

static Glib
glib_new (EvdProto proto, GByteArray *out)
{
  Glib g;

  g.t = THRIFT_TRANSPORT (evd_transport_new ());
  g.p = g_object_new (proto == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL
                                                 : THRIFT_TYPE_BINARY_PROTOCOL,
                      "transport", g.t, NULL);
  evd_transport_set_output (EVD_TRANSPORT (g.t), out);
  return g;
}

static void
glib_free (Glib *g)
{
  evd_transport_set_output (EVD_TRANSPORT (g->t), NULL);
  g_object_unref (g->p);
  g_object_unref (g->t);
}

/* What c_glib writes for a whole struct. */
static GByteArray *
glib_write (EvdProto proto, gpointer thrift_struct)
{
  GByteArray *out = g_byte_array_new ();
  Glib g = glib_new (proto, out);

  g_assert_cmpint (thrift_struct_write (THRIFT_STRUCT (thrift_struct), g.p, NULL), >, 0);
  glib_free (&g);
  return out;
}

static void
assert_same_bytes (const char *what, EvdProto proto, GByteArray *ours, GByteArray *theirs)
{
  if (ours->len != theirs->len || memcmp (ours->data, theirs->data, ours->len) != 0) {
    g_autofree char *a = g_strdup_printf ("%s (%s): evd_writer wrote %u bytes, c_glib %u",
                                          what, proto_name (proto), ours->len, theirs->len);
    g_test_message ("%s", a);
  }
  g_assert_cmpmem (ours->data, ours->len, theirs->data, theirs->len);
}

/* ---- Tokens. ---- */

static const gint32 i32s[] = { 0, 1, -1, 63, -64, 64, 127, 128, 300, -300, G_MAXINT32, G_MININT32 };
static const gint64 i64s[] = { 0, 1, -1, 1LL << 35, -(1LL << 35), 1234567890123LL, G_MAXINT64,
                               G_MININT64 };
static const double doubles[] = { 0.0, -0.0, 1.5, -2.25, 1e300, 5e-324, 3.141592653589793 };
static guint8 bytes[] = { 'a', 0, 'b' };
static const char *const strings[] = { "", "a", "fetch", "DataAccess:fetch", "h\xc3\xa9llo \xe2\x82\xac" };

/* One struct with every kind of field, nested structs, the field ids that test compact's
 * short and long forms (0 first, deltas of 1, 15 and 16, a smaller id after a larger one),
 * and lists and maps on both sides of compact's short size. */
static void
write_tokens_glib (ThriftProtocol *p, gint32 seqid)
{
  g_assert_cmpint (thrift_protocol_write_message_begin (p, "fetch", T_REPLY, seqid, NULL), >, 0);
  thrift_protocol_write_struct_begin (p, "S", NULL);
  thrift_protocol_write_field_begin (p, "f", T_STRUCT, 0, NULL);
  thrift_protocol_write_struct_begin (p, "T", NULL);
  for (guint i = 0; i < G_N_ELEMENTS (i32s); i++) {
    thrift_protocol_write_field_begin (p, "f", T_I32, (gint16) (1 + i), NULL);
    thrift_protocol_write_i32 (p, i32s[i], NULL);
    thrift_protocol_write_field_end (p, NULL);
  }
  thrift_protocol_write_field_begin (p, "f", T_BOOL, 28, NULL);  /* delta 16 */
  thrift_protocol_write_bool (p, TRUE, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_BOOL, 29, NULL);
  thrift_protocol_write_bool (p, FALSE, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_LIST, 44, NULL);  /* delta 15 */
  thrift_protocol_write_list_begin (p, T_I64, G_N_ELEMENTS (i64s), NULL);
  for (guint i = 0; i < G_N_ELEMENTS (i64s); i++)
    thrift_protocol_write_i64 (p, i64s[i], NULL);
  thrift_protocol_write_list_end (p, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_LIST, 3, NULL);   /* backwards */
  thrift_protocol_write_list_begin (p, T_DOUBLE, G_N_ELEMENTS (doubles), NULL);
  for (guint i = 0; i < G_N_ELEMENTS (doubles); i++)
    thrift_protocol_write_double (p, doubles[i], NULL);
  thrift_protocol_write_list_end (p, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_LIST, 4, NULL);
  thrift_protocol_write_list_begin (p, T_STRING, 15, NULL);      /* compact's long size */
  for (guint i = 0; i < 15; i++)
    thrift_protocol_write_string (p, strings[i % G_N_ELEMENTS (strings)], NULL);
  thrift_protocol_write_list_end (p, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_MAP, 5, NULL);
  thrift_protocol_write_map_begin (p, T_STRING, T_STRUCT, 0, NULL);
  thrift_protocol_write_map_end (p, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_MAP, 6, NULL);
  thrift_protocol_write_map_begin (p, T_STRING, T_STRUCT, 300, NULL);
  for (guint i = 0; i < 300; i++) {
    g_autofree char *key = g_strdup_printf ("k%u", i);
    thrift_protocol_write_string (p, key, NULL);
    thrift_protocol_write_struct_begin (p, "V", NULL);
    thrift_protocol_write_field_begin (p, "b", T_STRING, 5, NULL);
    thrift_protocol_write_binary (p, bytes, i % 4, NULL);
    thrift_protocol_write_field_end (p, NULL);
    thrift_protocol_write_field_stop (p, NULL);
    thrift_protocol_write_struct_end (p, NULL);
  }
  thrift_protocol_write_map_end (p, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "f", T_STRING, 7, NULL);
  thrift_protocol_write_string (p, NULL, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_stop (p, NULL);
  thrift_protocol_write_struct_end (p, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_begin (p, "g", T_BOOL, 1, NULL);  /* after the nested struct */
  thrift_protocol_write_bool (p, TRUE, NULL);
  thrift_protocol_write_field_end (p, NULL);
  thrift_protocol_write_field_stop (p, NULL);
  thrift_protocol_write_struct_end (p, NULL);
  thrift_protocol_write_message_end (p, NULL);
}

static void
write_tokens_ours (EvdWriter *w, gint32 seqid)
{
  evd_writer_message_begin (w, "fetch", EVD_MSG_REPLY, seqid);
  evd_writer_struct_begin (w);
  evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 0);
  evd_writer_struct_begin (w);
  for (guint i = 0; i < G_N_ELEMENTS (i32s); i++) {
    evd_writer_field_begin (w, EVD_WIRE_T_I32, (gint16) (1 + i));
    evd_writer_i32 (w, i32s[i]);
  }
  evd_writer_field_bool (w, 28, TRUE);
  evd_writer_field_bool (w, 29, FALSE);
  evd_writer_field_begin (w, EVD_WIRE_T_LIST, 44);
  evd_writer_list_begin (w, EVD_WIRE_T_I64, G_N_ELEMENTS (i64s));
  for (guint i = 0; i < G_N_ELEMENTS (i64s); i++)
    evd_writer_i64 (w, i64s[i]);
  evd_writer_field_begin (w, EVD_WIRE_T_LIST, 3);
  evd_writer_list_begin (w, EVD_WIRE_T_DOUBLE, G_N_ELEMENTS (doubles));
  for (guint i = 0; i < G_N_ELEMENTS (doubles); i++)
    evd_writer_double (w, doubles[i]);
  evd_writer_field_begin (w, EVD_WIRE_T_LIST, 4);
  evd_writer_list_begin (w, EVD_WIRE_T_STRING, 15);
  for (guint i = 0; i < 15; i++)
    evd_writer_string (w, strings[i % G_N_ELEMENTS (strings)]);
  evd_writer_field_begin (w, EVD_WIRE_T_MAP, 5);
  evd_writer_map_begin (w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 0);
  evd_writer_field_begin (w, EVD_WIRE_T_MAP, 6);
  evd_writer_map_begin (w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 300);
  for (guint i = 0; i < 300; i++) {
    g_autofree char *key = g_strdup_printf ("k%u", i);
    evd_writer_string (w, key);
    evd_writer_struct_begin (w);
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 5);
    evd_writer_binary (w, bytes, i % 4);
    evd_writer_struct_end (w);
  }
  evd_writer_field_begin (w, EVD_WIRE_T_STRING, 7);
  evd_writer_string (w, NULL);
  evd_writer_struct_end (w);
  evd_writer_field_bool (w, 1, TRUE);
  evd_writer_struct_end (w);
}

static void
test_tokens_match_c_glib (void)
{
  static const gint32 seqids[] = { 0, 1, 127, 128, -1, G_MAXINT32, G_MININT32 };

  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    for (guint k = 0; k < G_N_ELEMENTS (seqids); k++) {
      g_autoptr (GByteArray) ours = g_byte_array_new ();
      g_autoptr (GByteArray) theirs = g_byte_array_new ();
      Glib g = glib_new (protos[i], theirs);
      EvdWriter w;

      write_tokens_glib (g.p, seqids[k]);
      glib_free (&g);
      evd_writer_init (&w, ours, protos[i]);
      write_tokens_ours (&w, seqids[k]);
      g_assert_cmpuint (w.depth, ==, 0);
      assert_same_bytes ("tokens", protos[i], ours, theirs);
    }
  }
}

/* ---- Rows and replies. ---- */

static evdalValue *
glib_value (EvdValueKind kind, gint64 i, double r, const char *text, gsize len)
{
  evdalValue *v = g_object_new (EVDAL_TYPE_VALUE, NULL);

  switch (kind) {
  case EVD_VALUE_INT:
    v->int_value = i;
    v->__isset_int_value = TRUE;
    break;
  case EVD_VALUE_REAL:
    v->real_value = r;
    v->__isset_real_value = TRUE;
    break;
  case EVD_VALUE_TEXT:
    v->text_value = g_strdup (text);
    v->__isset_text_value = TRUE;
    break;
  case EVD_VALUE_BLOB:
    if (v->blob_value == NULL)
      v->blob_value = g_byte_array_new ();
    g_byte_array_append (v->blob_value, (const guint8 *) text, (guint) len);
    v->__isset_blob_value = TRUE;
    break;
  default:
    v->null_value = TRUE;
    v->__isset_null_value = TRUE;
  }
  return v;
}

/* The same table built both ways: n_rows rows of (id int, name text, score real, photo blob,
 * note null-or-text), with negative, large and unicode values; ours made with these hints
 * (evd_rows_new_sized). */
static void
make_table_sized (guint n_rows, guint cells_hint, gsize arena_hint, const EvdRows *like,
                  EvdRows **ours, evdalTable **theirs)
{
  static const char *const columns[] = { "id", "name", "score", "photo", "note" };
  evdalTable *t = g_object_new (EVDAL_TYPE_TABLE, NULL);

  /* With `like`, the names are copied from a table that has them (evd_rows_new_like). */
  *ours = like ? evd_rows_new_like (like, cells_hint, arena_hint)
               : evd_rows_new_sized (G_N_ELEMENTS (columns), columns, cells_hint, arena_hint);
  for (guint i = 0; i < G_N_ELEMENTS (columns); i++)
    g_ptr_array_add (t->columns, g_strdup (columns[i]));
  t->__isset_columns = t->__isset_rows = TRUE;
  for (guint r = 0; r < n_rows; r++) {
    GPtrArray *row = g_ptr_array_new_with_free_func (g_object_unref);
    gint64 id = (r % 2 ? -1 : 1) * ((gint64) r << (r % 40));
    double score = r * 0.25 - 3.0;
    g_autofree char *name = g_strdup_printf ("user %u \xc3\xa9", r);
    const char blob[] = { 0, 1, (char) 0xff, 'x' };

    g_ptr_array_add (row, glib_value (EVD_VALUE_INT, id, 0, NULL, 0));
    evd_rows_add_int (*ours, id);
    g_ptr_array_add (row, glib_value (EVD_VALUE_TEXT, 0, 0, name, 0));
    evd_rows_add_text (*ours, name, -1);
    g_ptr_array_add (row, glib_value (EVD_VALUE_REAL, 0, score, NULL, 0));
    evd_rows_add_real (*ours, score);
    g_ptr_array_add (row, glib_value (EVD_VALUE_BLOB, 0, 0, blob, r % 5));
    evd_rows_add_blob (*ours, blob, r % 5);
    if (r % 3 == 0) {
      g_ptr_array_add (row, glib_value (EVD_VALUE_NULL, 0, 0, NULL, 0));
      evd_rows_add_null (*ours);
    } else {
      g_ptr_array_add (row, glib_value (EVD_VALUE_TEXT, 0, 0, "", 0));
      evd_rows_add_text (*ours, "", 0);
    }
    g_ptr_array_add (t->rows, row);
  }
  *theirs = t;
}

static void
make_table (guint n_rows, EvdRows **ours, evdalTable **theirs)
{
  make_table_sized (n_rows, 0, 0, NULL, ours, theirs);
}

static void
test_rows_match_c_glib_table (void)
{
  static const guint sizes[] = { 0, 1, 14, 15, 200 };

  for (guint s = 0; s < G_N_ELEMENTS (sizes); s++) {
    g_autoptr (EvdRows) rows = NULL;
    g_autoptr (evdalTable) table = NULL;

    make_table (sizes[s], &rows, &table);
    g_assert_cmpuint (evd_rows_n_rows (rows), ==, sizes[s]);
    for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
      g_autoptr (GByteArray) ours = g_byte_array_new ();
      g_autoptr (GByteArray) theirs = glib_write (protos[i], table);
      EvdWriter w;

      evd_writer_init (&w, ours, protos[i]);
      evd_response_write_rows (&w, rows);
      assert_same_bytes ("table", protos[i], ours, theirs);
    }
  }
}

/* The table encoder writes every token itself (evd_response_write_rows): the long forms of
 * what the sample tables never reach must match c_glib too. 16 and 15 columns (the compact
 * list header's size leaves its nibble past 14), ints at both ends of i64 (10-byte compact
 * varints), -0.0 and an infinity, texts and blobs of 0, 127, 128 and 300 bytes (1- and 2-byte
 * length varints), text holding a NUL, 0, 1 and 20 rows, written after bytes already in the
 * array and followed by more tokens. */
static void
test_wide_table_matches_c_glib (void)
{
  static const guint widths[] = { 15, 16 };
  static const guint heights[] = { 0, 1, 20 };
  static const gint64 ints[] = { G_MININT64, G_MAXINT64, 0, -1, 1, 63, -64, 64, G_MININT32 };
  static const double reals[] = { -0.0, 1e308, -1.5 };
  static const gsize lens[] = { 0, 127, 128, 300 };
  char big[320];  /* texts of up to 300 bytes from big + 6, and a NUL past them */

  for (guint i = 0; i < sizeof big; i++)
    big[i] = (char) ('a' + i % 26);
  big[5] = '\0';
  big[sizeof big - 1] = '\0';
  for (guint wi = 0; wi < G_N_ELEMENTS (widths); wi++) {
    for (guint hi = 0; hi < G_N_ELEMENTS (heights); hi++) {
      guint n_columns = widths[wi], n_rows = heights[hi], k = 0;
      g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
      g_autoptr (EvdRows) rows = NULL;
      g_autoptr (evdalTable) table = g_object_new (EVDAL_TYPE_TABLE, NULL);

      for (guint c = 0; c < n_columns; c++) {
        g_ptr_array_add (names, c == 3 ? g_strnfill (200, 'n') : g_strdup_printf ("col%u", c));
        g_ptr_array_add (table->columns, g_strdup (names->pdata[c]));
      }
      rows = evd_rows_new (n_columns, (const char *const *) names->pdata);
      table->__isset_columns = table->__isset_rows = TRUE;
      for (guint r = 0; r < n_rows; r++) {
        GPtrArray *row = g_ptr_array_new_with_free_func (g_object_unref);

        for (guint c = 0; c < n_columns; c++, k++) {
          gsize len = lens[k % G_N_ELEMENTS (lens)];

          switch (k % 5) {
          case 0:
            g_ptr_array_add (row, glib_value (EVD_VALUE_INT, ints[k % G_N_ELEMENTS (ints)], 0,
                                              NULL, 0));
            evd_rows_add_int (rows, ints[k % G_N_ELEMENTS (ints)]);
            break;
          case 1:
            g_ptr_array_add (row, glib_value (EVD_VALUE_REAL, 0,
                                              reals[k % G_N_ELEMENTS (reals)], NULL, 0));
            evd_rows_add_real (rows, reals[k % G_N_ELEMENTS (reals)]);
            break;
          case 2: {
            /* c_glib's text is a C string: the NUL at 5 is kept only by blobs. */
            g_autofree char *text = g_strndup (big + 6, len);

            g_ptr_array_add (row, glib_value (EVD_VALUE_TEXT, 0, 0, text, 0));
            evd_rows_add_text (rows, text, -1);
            break;
          }
          case 3:
            g_ptr_array_add (row, glib_value (EVD_VALUE_BLOB, 0, 0, big, len));
            evd_rows_add_blob (rows, big, len);
            break;
          default:
            g_ptr_array_add (row, glib_value (EVD_VALUE_NULL, 0, 0, NULL, 0));
            evd_rows_add_null (rows);
          }
        }
        g_ptr_array_add (table->rows, row);
      }
      for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
        g_autoptr (GByteArray) ours = g_byte_array_new ();
        g_autoptr (GByteArray) theirs = glib_write (protos[i], table);
        EvdWriter w;

        g_byte_array_append (ours, (const guint8 *) "xyz", 3);
        evd_writer_init (&w, ours, protos[i]);
        evd_response_write_rows (&w, rows);
        evd_writer_i32 (&w, 7);
        g_assert_cmpuint (ours->len, ==, 3 + theirs->len + (protos[i] == EVD_PROTO_BINARY ? 4 : 1));
        g_assert_cmpmem (ours->data, 3, "xyz", 3);
        g_byte_array_remove_range (ours, 0, 3);
        g_byte_array_set_size (ours, theirs->len);
        assert_same_bytes ("wide table", protos[i], ours, theirs);
      }
    }
  }
}

/* The writer moves the array's length itself within room it asked GLib for: bytes that were
 * in the array before it started, and bytes others append between its calls (even past the
 * room it knows of), must stay where they are, and its own must follow them. */
static void
test_appends_around_the_writer (void)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  static const guint8 head[] = { 1, 2, 3 };
  guint8 filler[1000];
  EvdWriter w;

  memset (filler, 0xab, sizeof filler);
  g_byte_array_append (out, head, sizeof head);
  evd_writer_init (&w, out, EVD_PROTO_BINARY);
  evd_writer_i32 (&w, 0x01020304);
  g_byte_array_append (out, filler, 10);            /* within the writer's room */
  evd_writer_i32 (&w, 0x05060708);
  g_byte_array_append (out, filler, sizeof filler); /* far past it */
  evd_writer_i64 (&w, 0x1112131415161718);
  for (guint i = 0; i < 500; i++)                  /* many small writes: the room grows */
    evd_writer_i32 (&w, (gint32) i);

  g_assert_cmpuint (out->len, ==, 3 + 4 + 10 + 4 + sizeof filler + 8 + 500 * 4);
  g_assert_cmpmem (out->data, 3, head, 3);
  g_assert_cmpmem (out->data + 3, 4, "\x01\x02\x03\x04", 4);
  g_assert_cmpmem (out->data + 7, 10, filler, 10);
  g_assert_cmpmem (out->data + 17, 4, "\x05\x06\x07\x08", 4);
  g_assert_cmpmem (out->data + 21, sizeof filler, filler, sizeof filler);
  g_assert_cmpmem (out->data + 21 + sizeof filler, 8, "\x11\x12\x13\x14\x15\x16\x17\x18", 8);
  for (guint i = 0; i < 500; i++) {
    guint32 v = GUINT32_TO_BE (i);
    g_assert_cmpmem (out->data + 29 + sizeof filler + 4 * i, 4, &v, 4);
  }
}

static GByteArray *
rows_bytes (const EvdRows *rows, EvdProto proto)
{
  GByteArray *out = g_byte_array_new ();
  EvdWriter w;

  evd_writer_init (&w, out, proto);
  evd_response_write_rows (&w, rows);
  return out;
}

/* A table made in one block from hints holds and writes exactly what one made without them
 * does, whether the hints were too small (its cells, its arena or both grow out of the block
 * into their own allocations, which must carry over what the block held), exact, too large,
 * or absurd (cut at EVD_ROWS_BLOCK_MAX), and whether its names were given or copied from
 * another table (evd_rows_new_like). ASan checks the block's bounds and what is freed. */
static void
test_rows_hints_change_nothing (void)
{
  static const guint sizes[] = { 0, 1, 14, 15, 200, 3000 };

  for (guint s = 0; s < G_N_ELEMENTS (sizes); s++) {
    g_autoptr (EvdRows) plain = NULL;
    g_autoptr (evdalTable) table = NULL;
    guint cells;
    gsize arena;

    make_table (sizes[s], &plain, &table);
    evd_rows_size (plain, &cells, &arena);
    g_assert_cmpuint (cells, ==, 5 * (sizes[s] + 1));
    {
      const struct { guint cells; gsize arena; } hints[] = {
        { 1, 1 }, { cells - 1, arena - 1 }, { cells, 1 }, { 1, arena }, { cells, arena },
        { cells * 3, arena * 3 }, { G_MAXUINT, G_MAXSIZE },
      };

      for (guint h = 0; h < 2 * G_N_ELEMENTS (hints); h++) {
        g_autoptr (EvdRows) hinted = NULL;
        g_autoptr (evdalTable) unused = NULL;
        guint hinted_cells;
        gsize hinted_arena;

        /* odd h: the names copied from the plain table, as a SQLite worker makes them */
        make_table_sized (sizes[s], hints[h / 2].cells, hints[h / 2].arena, h % 2 ? plain : NULL,
                          &hinted, &unused);
        evd_rows_size (hinted, &hinted_cells, &hinted_arena);
        g_assert_cmpuint (hinted_cells, ==, cells);
        g_assert_cmpuint (hinted_arena, ==, arena);
        g_assert_cmpuint (evd_rows_n_rows (hinted), ==, sizes[s]);
        g_assert_cmpstr (evd_rows_column (hinted, 4), ==, "note");
        for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
          g_autoptr (GByteArray) want = rows_bytes (plain, protos[i]);
          g_autoptr (GByteArray) got = rows_bytes (hinted, protos[i]);

          assert_same_bytes ("hinted table", protos[i], got, want);
        }
      }
    }
  }
}

/* A fetch reply c_glib would write for one result: rows or an error, traced or not. */
static evdalDataAccessFetchResult *
glib_reply (const char *request_id, const char *key, evdalTable *table, evdalErrorKind kind,
            const char *message, const EvdResponseSpan *span, gint64 server_us)
{
  evdalDataAccessFetchResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
  evdalLookupResult *lr = g_object_new (EVDAL_TYPE_LOOKUP_RESULT, NULL);

  if (table != NULL) {
    g_object_unref (lr->table);
    lr->table = g_object_ref (table);
    lr->__isset_table = TRUE;
  } else {
    lr->error->kind = kind;
    lr->error->message = g_strdup (message);
    lr->error->__isset_kind = lr->error->__isset_message = TRUE;
    lr->__isset_error = TRUE;
  }
  if (span != NULL) {
    lr->span->start_us = span->start_us;
    lr->span->end_us = span->end_us;
    lr->span->backend = g_strdup (span->backend);
    lr->span->__isset_start_us = lr->span->__isset_end_us = lr->span->__isset_backend = TRUE;
    if (span->marks != 0) {
      const char *words[8];
      char retried[16];
      guint n = evd_backend_marks_words (span->marks, span->retries, words, retried);

      for (guint i = 0; i < n; i++)
        g_ptr_array_add (lr->span->marks, g_strdup (words[i]));
      lr->span->__isset_marks = TRUE;
    }
    lr->__isset_span = TRUE;
  }
  g_hash_table_insert (r->success->results, g_strdup (key), lr);
  r->success->request_id = g_strdup (request_id);
  r->success->server_us = server_us;
  r->success->__isset_request_id = r->success->__isset_results = TRUE;
  r->success->__isset_server_us = TRUE;
  r->__isset_success = TRUE;
  return r;
}

static void
test_one_result_reply_matches_c_glib (void)
{
  EvdResponseSpan plain = { 12, 3456789, "sqlite:main", 0, 0 };
  /* Span.marks: every word at once, and one alone. */
  EvdResponseSpan marked = { 12, 3456789, "sqlite:main", EVD_MARK_COALESCED | EVD_MARK_CACHE_HIT
                             | EVD_MARK_STALE | EVD_MARK_HEDGED | EVD_MARK_RETRIED
                             | EVD_MARK_BREAKER_OPEN, 2 };
  EvdResponseSpan one_mark = { 0, 1, "sqlite:main", EVD_MARK_COALESCED, 0 };
  g_autoptr (EvdRows) rows = NULL;
  g_autoptr (evdalTable) table = NULL;

  make_table (20, &rows, &table);
  for (guint c = 0; c < 8; c++) {
    gboolean with_rows = c % 2 == 0, traced = c >= 2;
    EvdResponseSpan span = c >= 6 ? one_mark : c >= 4 ? marked : plain;
    EvdResponseResult res = {
      .key = "recent_orders",
      .rows = with_rows ? rows : NULL,
      .error_kind = EVDAL_ERROR_KIND_TIMEOUT,
      .error_message = "lookup recent_orders timed out after 300 ms",
      .span = traced ? &span : NULL,
    };
    g_autoptr (evdalDataAccessFetchResult) want = glib_reply (
      "req-\xc3\xa9-1", res.key, with_rows ? table : NULL, res.error_kind, res.error_message,
      res.span, 987654321);

    for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
      g_autoptr (GByteArray) ours = g_byte_array_new ();
      g_autoptr (GByteArray) theirs = glib_write (protos[i], want);
      EvdWriter w;

      evd_writer_init (&w, ours, protos[i]);
      evd_response_write (&w, "req-\xc3\xa9-1", &res, 1, 987654321);
      assert_same_bytes (with_rows ? "reply with rows" : "reply with an error", protos[i], ours,
                         theirs);
    }
  }
}

/* Several results: c_glib orders a map by its hash table, so the bytes differ in order only;
 * decoding ours with c_glib must give every result back. */
static void
test_many_results_decode_with_c_glib (void)
{
  EvdResponseSpan span = { 5, 50, "delay", EVD_MARK_HEDGED | EVD_MARK_RETRIED, 1 };
  g_autoptr (EvdRows) rows = NULL;
  g_autoptr (evdalTable) table = NULL;
  EvdResponseResult res[40];
  char keys[40][16];

  make_table (3, &rows, &table);
  for (guint k = 0; k < G_N_ELEMENTS (res); k++) {
    g_snprintf (keys[k], sizeof keys[k], "call%u", k);
    res[k] = (EvdResponseResult) {
      .key = keys[k],
      .rows = k % 3 ? rows : NULL,
      .error_kind = EVDAL_ERROR_KIND_BACKEND,
      .error_message = "boom",
      .span = &span,
    };
  }
  for (guint i = 0; i < G_N_ELEMENTS (protos); i++) {
    g_autoptr (GByteArray) ours = g_byte_array_new ();
    g_autoptr (ThriftTransport) t = THRIFT_TRANSPORT (evd_transport_new ());
    g_autoptr (ThriftProtocol) p = g_object_new (
      protos[i] == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL : THRIFT_TYPE_BINARY_PROTOCOL,
      "transport", t, NULL);
    g_autoptr (evdalDataAccessFetchResult) got = g_object_new (
      EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
    g_autoptr (GError) error = NULL;
    EvdWriter w;

    evd_writer_init (&w, ours, protos[i]);
    evd_response_write (&w, "r", res, G_N_ELEMENTS (res), 77);
    evd_transport_set_input (EVD_TRANSPORT (t), ours->data, ours->len);
    g_assert_cmpint (thrift_struct_read (THRIFT_STRUCT (got), p, &error), ==, (gint32) ours->len);
    g_assert_no_error (error);
    g_assert_true (got->__isset_success);
    g_assert_cmpstr (got->success->request_id, ==, "r");
    g_assert_cmpint (got->success->server_us, ==, 77);
    g_assert_cmpuint (g_hash_table_size (got->success->results), ==, G_N_ELEMENTS (res));
    for (guint k = 0; k < G_N_ELEMENTS (res); k++) {
      evdalLookupResult *lr = g_hash_table_lookup (got->success->results, keys[k]);

      g_assert_nonnull (lr);
      g_assert_true (lr->__isset_span);
      g_assert_cmpint (lr->span->end_us, ==, 50);
      g_assert_cmpstr (lr->span->backend, ==, "delay");
      g_assert_true (lr->span->__isset_marks);
      g_assert_cmpuint (lr->span->marks->len, ==, 2);
      g_assert_cmpstr (g_ptr_array_index (lr->span->marks, 0), ==, "hedged");
      g_assert_cmpstr (g_ptr_array_index (lr->span->marks, 1), ==, "retried:1");
      if (res[k].rows != NULL) {
        g_assert_true (lr->__isset_table && !lr->__isset_error);
        g_assert_cmpuint (lr->table->rows->len, ==, 3);
        g_assert_cmpstr (g_ptr_array_index (lr->table->columns, 1), ==, "name");
      } else {
        g_assert_true (lr->__isset_error && !lr->__isset_table);
        g_assert_cmpint (lr->error->kind, ==, EVDAL_ERROR_KIND_BACKEND);
        g_assert_cmpstr (lr->error->message, ==, "boom");
      }
    }
  }
}

/* Text is kept whole, NUL bytes included (c_glib's evdalValue, a C string, would stop at the
 * first), and cells read back as written. */
static void
test_rows_keep_what_they_are_given (void)
{
  static const char *const columns[] = { "a", "b" };
  g_autoptr (EvdRows) rows = evd_rows_new (2, columns);
  const EvdCell *c;

  evd_rows_add_text (rows, "x\0y", 3);
  evd_rows_add_real (rows, -0.5);
  evd_rows_add_null (rows);   /* a row not yet complete is not counted */
  g_assert_cmpuint (evd_rows_n_rows (rows), ==, 1);
  evd_rows_add_int (rows, G_MININT64);
  g_assert_cmpuint (evd_rows_n_rows (rows), ==, 2);
  g_assert_cmpstr (evd_rows_column (rows, 1), ==, "b");
  c = evd_rows_cell (rows, 0, 0);
  g_assert_cmpint (c->kind, ==, EVD_VALUE_TEXT);
  g_assert_cmpmem (evd_rows_cell_data (rows, c), c->len, "x\0y", 3);
  g_assert_cmpfloat (evd_rows_cell (rows, 0, 1)->v.r, ==, -0.5);
  g_assert_cmpint (evd_rows_cell (rows, 1, 0)->kind, ==, EVD_VALUE_NULL);
  g_assert_cmpint (evd_rows_cell (rows, 1, 1)->v.i, ==, G_MININT64);
  g_assert_true (evd_rows_ref (rows) == rows);
  evd_rows_unref (rows);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/writer/tokens-match-c_glib", test_tokens_match_c_glib);
  g_test_add_func ("/writer/rows-match-c_glib-table", test_rows_match_c_glib_table);
  g_test_add_func ("/writer/wide-table-matches-c_glib", test_wide_table_matches_c_glib);
  g_test_add_func ("/writer/one-result-reply-matches-c_glib",
                   test_one_result_reply_matches_c_glib);
  g_test_add_func ("/writer/many-results-decode-with-c_glib",
                   test_many_results_decode_with_c_glib);
  g_test_add_func ("/writer/rows-keep-what-they-are-given", test_rows_keep_what_they_are_given);
  g_test_add_func ("/writer/rows-hints-change-nothing", test_rows_hints_change_nothing);
  g_test_add_func ("/writer/appends-around-the-writer", test_appends_around_the_writer);
  return g_test_run ();
}

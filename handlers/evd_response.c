/* evd_response: the fetch reply written by hand (see evd_response.h). */
#include "evd_response.h"

#include "evd_backend.h"
#include <string.h>

/* A table is most of a reply's bytes: ~200 cells on a sqlite7 page, each a Value struct of
 * three or four tokens. Written token by token through the writer, each with its call, its
 * protocol test and its room check, it cost ~100 instructions a cell (docs/BENCHMARKS.md,
 * issue 20); here the whole table is written straight into room reserved once for its
 * largest possible size, the protocol chosen once per table. The bytes are the writer's, token
 * for token (tests/unit/test_writer.c checks them against c_glib).
 *
 * Value is a union: exactly one field, 1 null_value (bool, always true here), 2 int_value,
 * 3 real_value, 4 text_value, 5 blob_value. In the compact protocol each Value is a struct of
 * its own, so its one field's id is a delta from 0 and rides in the field's type byte. */

/* The most bytes a table takes in either protocol: a cell at most 12 beside its bytes (an
 * i64 Value: binary 3 + 8 + stop, compact 1 + a 10-byte varint + stop), a column name
 * 5 beside its bytes, a list header at most 6 (compact: a byte and a 5-byte varint), the two
 * fields' headers 3 each and the stop. The arena holds every name, text and blob (and a NUL
 * per text), so it bounds their bytes. */
static gsize
evd_response_rows_bound (const EvdRows *rows)
{
  guint cells;
  gsize arena;

  evd_rows_size (rows, &cells, &arena);
  return (gsize) cells * 12 + arena + (gsize) (evd_rows_n_rows (rows) + 2) * 6 + 16;
}

static inline guint8 *
evd_response_be32 (guint8 *p, guint32 v)
{
  v = GUINT32_TO_BE (v);
  memcpy (p, &v, 4);
  return p + 4;
}

static inline guint8 *
evd_response_be64 (guint8 *p, guint64 v)
{
  v = GUINT64_TO_BE (v);
  memcpy (p, &v, 8);
  return p + 8;
}

static inline guint8 *
evd_response_varint (guint8 *p, guint64 v)
{
  while (v >= 0x80) {
    *p++ = (guint8) (v | 0x80);
    v >>= 7;
  }
  *p++ = (guint8) v;
  return p;
}

static inline guint8 *
evd_response_bytes (guint8 *p, const void *data, gsize len)
{
  memcpy (p, data, len);
  return p + len;
}

static guint8 *
evd_response_binary_rows (guint8 *p, const EvdRows *rows)
{
  guint n_columns = evd_rows_n_columns (rows), n_rows = evd_rows_n_rows (rows), n_cells;
  const EvdCell *c = evd_rows_cells (rows, &n_cells);

  *p++ = EVD_WIRE_T_LIST;           /* 1: list<string> columns */
  *p++ = 0;
  *p++ = 1;
  *p++ = EVD_WIRE_T_STRING;
  p = evd_response_be32 (p, n_columns);
  for (guint i = 0; i < n_columns; i++, c++)
    p = evd_response_bytes (evd_response_be32 (p, c->len), evd_rows_cell_data (rows, c), c->len);
  *p++ = EVD_WIRE_T_LIST;           /* 2: list<list<Value>> rows */
  *p++ = 0;
  *p++ = 2;
  *p++ = EVD_WIRE_T_LIST;
  p = evd_response_be32 (p, n_rows);
  for (guint r = 0; r < n_rows; r++) {
    *p++ = EVD_WIRE_T_STRUCT;
    p = evd_response_be32 (p, n_columns);
    for (guint i = 0; i < n_columns; i++, c++) {
      guint64 bits;

      switch (c->kind) {
      case EVD_VALUE_INT:
        p[0] = EVD_WIRE_T_I64, p[1] = 0, p[2] = 2;
        p = evd_response_be64 (p + 3, (guint64) c->v.i);
        break;
      case EVD_VALUE_REAL:
        memcpy (&bits, &c->v.r, 8);
        p[0] = EVD_WIRE_T_DOUBLE, p[1] = 0, p[2] = 3;
        p = evd_response_be64 (p + 3, bits);
        break;
      case EVD_VALUE_TEXT:
      case EVD_VALUE_BLOB:
        p[0] = EVD_WIRE_T_STRING, p[1] = 0, p[2] = c->kind == EVD_VALUE_TEXT ? 4 : 5;
        p = evd_response_be32 (p + 3, c->len);
        p = evd_response_bytes (p, evd_rows_cell_data (rows, c), c->len);
        break;
      default:
        p[0] = EVD_WIRE_T_BOOL, p[1] = 0, p[2] = 1, p[3] = 1;
        p += 4;
      }
      *p++ = 0;                     /* the Value's stop */
    }
  }
  *p++ = 0;                         /* the Table's stop */
  return p;
}

/* A compact list header: the size in the high nibble up to 14, else 0xf and a varint. */
static inline guint8 *
evd_response_compact_list (guint8 *p, guint8 ctype, guint32 size)
{
  if (size <= 14) {
    *p++ = (guint8) ((size << 4) | ctype);
    return p;
  }
  *p++ = (guint8) (0xf0 | ctype);
  return evd_response_varint (p, size);
}

/* The compact protocol's type codes used here (its own, not the binary protocol's). */
enum {
  EVD_RESPONSE_CT_TRUE = 1,
  EVD_RESPONSE_CT_I64 = 6,
  EVD_RESPONSE_CT_DOUBLE = 7,
  EVD_RESPONSE_CT_BINARY = 8,
  EVD_RESPONSE_CT_LIST = 9,
  EVD_RESPONSE_CT_STRUCT = 12,
};

static guint8 *
evd_response_compact_rows (guint8 *p, const EvdRows *rows)
{
  guint n_columns = evd_rows_n_columns (rows), n_rows = evd_rows_n_rows (rows), n_cells;
  const EvdCell *c = evd_rows_cells (rows, &n_cells);

  *p++ = (1 << 4) | EVD_RESPONSE_CT_LIST;  /* 1: columns (field delta 1) */
  p = evd_response_compact_list (p, EVD_RESPONSE_CT_BINARY, n_columns);
  for (guint i = 0; i < n_columns; i++, c++)
    p = evd_response_bytes (evd_response_varint (p, c->len), evd_rows_cell_data (rows, c),
                            c->len);
  *p++ = (1 << 4) | EVD_RESPONSE_CT_LIST;  /* 2: rows (field delta 1) */
  p = evd_response_compact_list (p, EVD_RESPONSE_CT_LIST, n_rows);
  for (guint r = 0; r < n_rows; r++) {
    p = evd_response_compact_list (p, EVD_RESPONSE_CT_STRUCT, n_columns);
    for (guint i = 0; i < n_columns; i++, c++) {
      guint64 bits;

      switch (c->kind) {
      case EVD_VALUE_INT:
        *p++ = (2 << 4) | EVD_RESPONSE_CT_I64;
        p = evd_response_varint (p, ((guint64) c->v.i << 1) ^ (guint64) (c->v.i >> 63));
        break;
      case EVD_VALUE_REAL:
        memcpy (&bits, &c->v.r, 8);
        bits = GUINT64_TO_LE (bits);  /* compact writes doubles little-endian */
        *p++ = (3 << 4) | EVD_RESPONSE_CT_DOUBLE;
        p = evd_response_bytes (p, &bits, 8);
        break;
      case EVD_VALUE_TEXT:
      case EVD_VALUE_BLOB:
        *p++ = (guint8) (((c->kind == EVD_VALUE_TEXT ? 4 : 5) << 4) | EVD_RESPONSE_CT_BINARY);
        p = evd_response_varint (p, c->len);
        p = evd_response_bytes (p, evd_rows_cell_data (rows, c), c->len);
        break;
      default:
        *p++ = (1 << 4) | EVD_RESPONSE_CT_TRUE;  /* a bool field holds its value in its type */
      }
      *p++ = 0;
    }
  }
  *p++ = 0;
  return p;
}

void
evd_response_write_rows (EvdWriter *w, const EvdRows *rows)
{
  guint8 *p = evd_writer_room (w, evd_response_rows_bound (rows));

  evd_writer_commit (w, w->proto == EVD_PROTO_BINARY ? evd_response_binary_rows (p, rows)
                                                     : evd_response_compact_rows (p, rows));
}

/* LookupResult { 1: optional Table table, 2: optional LookupError error,
 * 3: optional Span span }; LookupError { 1: ErrorKind kind, 2: string message };
 * Span { 1: i64 start_us, 2: i64 end_us, 3: string backend, 4: optional list<string>
 * marks }. */
static void
evd_response_write_result (EvdWriter *w, const EvdResponseResult *r)
{
  evd_writer_struct_begin (w);
  if (r->rows != NULL) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 1);
    evd_response_write_rows (w, r->rows);
  } else {
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 2);
    evd_writer_struct_begin (w);
    evd_writer_field_begin (w, EVD_WIRE_T_I32, 1);
    evd_writer_i32 (w, (gint32) r->error_kind);
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 2);
    evd_writer_string (w, r->error_message);
    evd_writer_struct_end (w);
  }
  if (r->span != NULL) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 3);
    evd_writer_struct_begin (w);
    evd_writer_field_begin (w, EVD_WIRE_T_I64, 1);
    evd_writer_i64 (w, r->span->start_us);
    evd_writer_field_begin (w, EVD_WIRE_T_I64, 2);
    evd_writer_i64 (w, r->span->end_us);
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 3);
    evd_writer_string (w, r->span->backend);
    if (r->span->marks != 0) {
      const char *words[8];
      char retried[16];
      guint n = evd_backend_marks_words (r->span->marks, r->span->retries, words, retried);

      evd_writer_field_begin (w, EVD_WIRE_T_LIST, 4);
      evd_writer_list_begin (w, EVD_WIRE_T_STRING, n);
      for (guint i = 0; i < n; i++)
        evd_writer_string (w, words[i]);
    }
    evd_writer_struct_end (w);
  }
  evd_writer_struct_end (w);
}

void
evd_response_write (EvdWriter *w, const char *request_id, const EvdResponseResult *results,
                    guint n_results, gint64 server_us)
{
  evd_writer_struct_begin (w);               /* DataAccess_fetch_result */
  evd_writer_field_begin (w, EVD_WIRE_T_STRUCT, 0);
  evd_writer_struct_begin (w);               /* FetchResponse */
  evd_writer_field_begin (w, EVD_WIRE_T_STRING, 1);
  evd_writer_string (w, request_id);
  evd_writer_field_begin (w, EVD_WIRE_T_MAP, 2);
  evd_writer_map_begin (w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, n_results);
  for (guint i = 0; i < n_results; i++) {
    evd_writer_string (w, results[i].key);
    evd_response_write_result (w, &results[i]);
  }
  evd_writer_field_begin (w, EVD_WIRE_T_I64, 3);
  evd_writer_i64 (w, server_us);
  evd_writer_struct_end (w);
  evd_writer_struct_end (w);
}

/* Bytes one result (its key and its LookupResult) takes, written into a scratch array: the
 * compact protocol's field ids are relative within a struct, so a result's size does not
 * depend on what precedes it. */
static gsize
evd_response_result_size (EvdProto proto, const EvdResponseResult *r)
{
  g_autoptr (GByteArray) scratch = g_byte_array_new ();
  EvdWriter w;

  evd_writer_init (&w, scratch, proto);
  evd_writer_string (&w, r->key);
  evd_response_write_result (&w, r);
  return scratch->len;
}

/* A cheap upper bound of a span's size: its field and two i64s take at most 25 bytes, the
 * backend's name 7 beside its bytes, the marks' list 8 and each mark 4 beside its bytes, and
 * the stop one. */
static gsize
evd_response_span_bound (const EvdResponseSpan *span)
{
  gsize bound = 40 + strlen (span->backend);

  if (span->marks != 0) {
    const char *words[8];
    char retried[16];
    guint n = evd_backend_marks_words (span->marks, span->retries, words, retried);

    bound += 8;
    for (guint i = 0; i < n; i++)
      bound += 4 + strlen (words[i]);
  }
  return bound;
}

/* A cheap upper bound of a result's size: a value is at most 17 bytes beside its text; a
 * traced result's span counts too (a long backend name is no slack a table has). */
static gsize
evd_response_result_bound (const EvdResponseResult *r)
{
  guint cells = 0;
  gsize arena = 0;

  if (r->rows != NULL)
    evd_rows_size (r->rows, &cells, &arena);
  return strlen (r->key) + 64 + (gsize) cells * 24 + arena +
         (r->error_message ? strlen (r->error_message) : 0) +
         (r->span != NULL ? evd_response_span_bound (r->span) : 0);
}

guint
evd_response_fit (EvdProto proto, gsize room, const char *request_id,
                  EvdResponseResult *results, guint n_results)
{
  gsize fixed = strlen (request_id) + 64, bound = fixed, total;
  g_autofree gsize *rows_size = NULL, *error_size = NULL;
  guint n_cut = 0;

  for (guint i = 0; i < n_results; i++)
    bound += evd_response_result_bound (&results[i]);
  if (bound <= room)
    return 0;  /* the usual case: nothing measured twice */
  /* Measured exactly: every call with rows counted as its error first, then given its rows in
   * request order while they fit. */
  rows_size = g_new0 (gsize, n_results);
  error_size = g_new0 (gsize, n_results);
  total = fixed;
  for (guint i = 0; i < n_results; i++) {
    EvdResponseResult *r = &results[i];
    EvdResponseResult as_error = *r;

    if (r->rows == NULL) {
      total += evd_response_result_size (proto, r);
      continue;
    }
    rows_size[i] = evd_response_result_size (proto, r);
    as_error.rows = NULL;
    as_error.error_kind = EVDAL_ERROR_KIND_BACKEND;
    as_error.error_message = EVD_RESPONSE_TOO_LARGE;
    error_size[i] = evd_response_result_size (proto, &as_error);
    total += error_size[i];
  }
  for (guint i = 0; i < n_results; i++) {
    EvdResponseResult *r = &results[i];

    if (r->rows == NULL)
      continue;
    if (total - error_size[i] + rows_size[i] <= room) {
      total += rows_size[i] - error_size[i];
      continue;
    }
    r->rows = NULL;
    r->error_kind = EVDAL_ERROR_KIND_BACKEND;
    r->error_message = EVD_RESPONSE_TOO_LARGE;
    n_cut++;
  }
  return n_cut;
}

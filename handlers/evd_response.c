/* evd_response: the fetch reply written by hand (see evd_response.h). */
#include "evd_response.h"

#include "evd_backend.h"
#include <string.h>

/* Value is a union: exactly one field, 1 null_value (bool, always true here), 2 int_value,
 * 3 real_value, 4 text_value, 5 blob_value. */
static void
evd_response_write_value (const EvdRows *rows, const EvdCell *c, EvdWriter *w)
{
  evd_writer_struct_begin (w);
  switch (c->kind) {
  case EVD_VALUE_INT:
    evd_writer_field_begin (w, EVD_WIRE_T_I64, 2);
    evd_writer_i64 (w, c->v.i);
    break;
  case EVD_VALUE_REAL:
    evd_writer_field_begin (w, EVD_WIRE_T_DOUBLE, 3);
    evd_writer_double (w, c->v.r);
    break;
  case EVD_VALUE_TEXT:
  case EVD_VALUE_BLOB:
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, c->kind == EVD_VALUE_TEXT ? 4 : 5);
    evd_writer_binary (w, evd_rows_cell_data (rows, c), c->len);
    break;
  default:
    evd_writer_field_bool (w, 1, TRUE);
  }
  evd_writer_struct_end (w);
}

void
evd_response_write_rows (EvdWriter *w, const EvdRows *rows)
{
  guint n_columns = evd_rows_n_columns (rows), n_rows = evd_rows_n_rows (rows), n_cells;
  const EvdCell *c = evd_rows_cells (rows, &n_cells);

  evd_writer_struct_begin (w);
  evd_writer_field_begin (w, EVD_WIRE_T_LIST, 1);
  evd_writer_list_begin (w, EVD_WIRE_T_STRING, n_columns);
  for (guint i = 0; i < n_columns; i++, c++)
    evd_writer_binary (w, evd_rows_cell_data (rows, c), c->len);
  evd_writer_field_begin (w, EVD_WIRE_T_LIST, 2);
  evd_writer_list_begin (w, EVD_WIRE_T_LIST, n_rows);
  for (guint r = 0; r < n_rows; r++) {
    evd_writer_list_begin (w, EVD_WIRE_T_STRUCT, n_columns);
    for (guint i = 0; i < n_columns; i++, c++)
      evd_response_write_value (rows, c, w);
  }
  evd_writer_struct_end (w);
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

/* A cheap upper bound of a result's size: a value is at most 17 bytes beside its text. */
static gsize
evd_response_result_bound (const EvdResponseResult *r)
{
  guint cells = 0;
  gsize arena = 0;

  if (r->rows != NULL)
    evd_rows_size (r->rows, &cells, &arena);
  return strlen (r->key) + 64 + (gsize) cells * 24 + arena +
         (r->error_message ? strlen (r->error_message) : 0);
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

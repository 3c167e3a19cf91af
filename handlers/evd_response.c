/* evd_response: the fetch reply written by hand (see evd_response.h). */
#include "evd_response.h"

#include "evd_backend.h"

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
    evd_rows_write (r->rows, w);
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

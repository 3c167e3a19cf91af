/* evd_response: a fetch's successful reply, written with evd_writer from plain C.
 *
 * The engine hands over what each call of the fetch ended with (its rows or its error, and
 * its span when the request is traced) and gets the DataAccess.fetch result struct written:
 * { 0: FetchResponse success }, the response being { 1: request_id, 2: results, 3: server_us }.
 * What c_glib's generated writer would write for the same response, byte for byte, except
 * for the order of the results map, which c_glib takes from its hash table and evdal from
 * the order given (both are a Thrift map: clients do not see an order).
 * tests/unit/test_writer.c checks both.
 *
 * The declared exceptions (a critical call failed, invalid request, overloaded) are rare and
 * still go through c_glib.
 */
#pragma once

#include "evd_rows.h"
#include "evd_thrift.h"
#include "evd_writer.h"

G_BEGIN_DECLS

typedef struct {
  gint64 start_us, end_us;  /* from the start of the request */
  const char *backend;
  guint marks;              /* EvdBackendMark: Span.marks, written when not 0 */
  guint retries;            /* for "retried:N" */
} EvdResponseSpan;

typedef struct {
  const char *key;                /* the call's name in the request */
  const EvdRows *rows;            /* the outcome: rows, or when NULL the error below */
  evdalErrorKind error_kind;
  const char *error_message;
  const EvdResponseSpan *span;    /* NULL: not traced */
} EvdResponseResult;

/* Writes the rows as the IDL's Table struct: { 1: list<string> columns,
 * 2: list<list<Value>> rows }. */
void evd_response_write_rows (EvdWriter *w, const EvdRows *rows);

/* The error of a call whose rows do not fit in its reply. */
#define EVD_RESPONSE_TOO_LARGE \
  "reply too large: this call's rows do not fit in the reply (max_reply_bytes, or the " \
  "connection's unsent replies at max_output_bytes)"

/* Makes the results fit in `room` bytes (the reply's bound less what precedes the result
 * struct): the calls whose rows would take the reply past it, in request order, become BACKEND
 * errors (EVD_RESPONSE_TOO_LARGE); the others keep their rows. Measures only when a cheap
 * bound says the rows may not fit. Returns how many calls were failed. Errors alone are never
 * cut, so a reply is at most `room` plus its error entries. */
guint evd_response_fit (EvdProto proto, gsize room, const char *request_id,
                        EvdResponseResult *results, guint n_results);

void evd_response_write (EvdWriter *w, const char *request_id, const EvdResponseResult *results,
                         guint n_results, gint64 server_us);

G_END_DECLS

/* evd_fetch_reply: see evd_fetch_reply.h. The IDL's shapes, as read here:
 *
 *   fetch_result { 0: FetchResponse success, 1: InvalidRequest invalid, 2: LookupFailed failed,
 *                  3: Overloaded overloaded }
 *   FetchResponse { 1: string request_id, 2: map<string, LookupResult> results, 3: i64 }
 *   LookupResult { 1: Table table, 2: LookupError error, 3: Span span }
 *   Table { 1: list<string> columns, 2: list<list<Value>> rows }
 *   Value (union) { 1: bool null, 2: i64, 3: double, 4: string text, 5: binary blob }
 *
 * As c_glib's generated code reads them: a field of an unexpected type is skipped, a field
 * sent twice is the last one, fields come in any order (a table's rows may come before its
 * columns: they are read again once the columns are known).
 */
#include "evd_fetch_reply.h"

#include <string.h>

#include "evd_reader.h"

/* A string field's bytes as a NUL-terminated copy, cut at a NUL as c_glib's char * is. */
static char *
evd_fetch_reply_string (EvdReader *r)
{
  const guint8 *data;
  guint32 len;

  if (!evd_reader_binary (r, &data, &len))
    return g_strdup ("");
  return g_strndup ((const char *) data, len);
}

/* A list's count when its elements are `elem`; otherwise it is skipped and counts as empty,
 * as c_glib's decoder treats a container it cannot use. */
static guint32
evd_fetch_reply_list (EvdReader *r, guint8 elem)
{
  guint8 t = 0;
  guint32 n = evd_reader_list (r, &t);

  if (n == 0 || t == elem)
    return n;
  for (guint32 i = 0; i < n && !r->bad; i++)
    evd_reader_skip (r, t);
  return 0;
}

/* One Value into the row. Of several fields sent, the first of int, real, text, blob wins
 * (the order the c_glib path tested them in); none of them is NULL. */
static void
evd_fetch_reply_value (EvdReader *r, EvdRows *rows)
{
  gint16 saved, id;
  guint8 t;
  gboolean has_int = FALSE, has_real = FALSE, has_text = FALSE, has_blob = FALSE;
  gint64 i = 0;
  double d = 0;
  const guint8 *text = NULL, *blob = NULL;
  guint32 text_len = 0, blob_len = 0;

  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 2 && t == EVD_WIRE_T_I64) {
      i = evd_reader_i64 (r);
      has_int = TRUE;
    } else if (id == 3 && t == EVD_WIRE_T_DOUBLE) {
      d = evd_reader_double (r);
      has_real = TRUE;
    } else if (id == 4 && t == EVD_WIRE_T_STRING) {
      has_text = evd_reader_binary (r, &text, &text_len);
    } else if (id == 5 && t == EVD_WIRE_T_STRING) {
      has_blob = evd_reader_binary (r, &blob, &blob_len);
    } else {
      evd_reader_skip (r, t);
    }
  }
  evd_reader_leave (r, saved);
  if (has_int)
    evd_rows_add_int (rows, i);
  else if (has_real)
    evd_rows_add_real (rows, d);
  else if (has_text)
    evd_rows_add_text (rows, (const char *) text, text_len);
  else if (has_blob)
    evd_rows_add_blob (rows, blob, blob_len);
  else
    evd_rows_add_null (rows);
}

/* Table.rows into `rows`; FALSE (with *why) when a row is not as wide as the columns. */
static gboolean
evd_fetch_reply_rows (EvdReader *r, EvdRows *rows, const char **why)
{
  guint32 n = evd_fetch_reply_list (r, EVD_WIRE_T_LIST);
  guint width = evd_rows_n_columns (rows);

  for (guint32 i = 0; i < n && !r->bad; i++) {
    guint32 cells = evd_fetch_reply_list (r, EVD_WIRE_T_STRUCT);

    if (cells != width) {
      *why = "a row of the wrong width";
      return FALSE;
    }
    for (guint32 c = 0; c < cells && !r->bad; c++)
      evd_fetch_reply_value (r, rows);
  }
  return TRUE;
}

/* The table of these column names (NULL-terminated array), no rows yet. */
static EvdRows *
evd_fetch_reply_new_rows (GPtrArray *columns)
{
  g_ptr_array_add (columns, NULL);
  return evd_rows_new (columns->len - 1, (const char *const *) columns->pdata);
}

/* A Table: its rows, or NULL with *why when they are unusable. Writers send the columns
 * first, and the rows are then read straight into the table; rows that come first are read
 * again once the columns are known. */
static EvdRows *
evd_fetch_reply_table (EvdReader *r, const char **why)
{
  g_autoptr (GPtrArray) columns = g_ptr_array_new_with_free_func (g_free);
  EvdReader rows_at = { 0 };
  gboolean has_columns = FALSE, rows_later = FALSE, usable = TRUE;
  g_autoptr (EvdRows) rows = NULL;
  gint16 saved, id;
  guint8 t;

  if (!evd_reader_enter (r, &saved))
    return NULL;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_LIST && !has_columns) {
      guint32 n = evd_fetch_reply_list (r, EVD_WIRE_T_STRING);

      for (guint32 i = 0; i < n && !r->bad; i++)
        g_ptr_array_add (columns, evd_fetch_reply_string (r));
      has_columns = TRUE;
    } else if (id == 2 && t == EVD_WIRE_T_LIST && has_columns && !rows_later) {
      EvdReader at = *r;

      g_clear_pointer (&rows, evd_rows_unref);
      rows = evd_fetch_reply_new_rows (columns);
      g_ptr_array_remove_index (columns, columns->len - 1);
      usable = evd_fetch_reply_rows (r, rows, why);
      if (!usable && !r->bad) {  /* a row of the wrong width: the rest is skipped */
        *r = at;
        evd_reader_skip (r, t);
      }
    } else if (id == 2 && t == EVD_WIRE_T_LIST) {
      rows_at = *r;
      rows_later = TRUE;
      evd_reader_skip (r, t);
    } else {
      /* Another field, or one sent twice (undefined by the IDL: the first one counts). */
      evd_reader_skip (r, t);
    }
  }
  evd_reader_leave (r, saved);
  if (r->bad || !usable)
    return NULL;
  if (rows_later) {
    g_clear_pointer (&rows, evd_rows_unref);
    rows = evd_fetch_reply_new_rows (columns);
    if (!evd_fetch_reply_rows (&rows_at, rows, why))
      return NULL;
    if (rows_at.bad != NULL) {
      evd_reader_fail (r, rows_at.bad);
      return NULL;
    }
  }
  if (rows == NULL)
    rows = evd_fetch_reply_new_rows (columns);
  return g_steal_pointer (&rows);
}

/* LookupError { 1: ErrorKind kind, 2: string message } */
static void
evd_fetch_reply_error (EvdReader *r, EvdFetchReplyCall *call)
{
  gint16 saved, id;
  guint8 t;
  gint32 kind = 0;

  g_clear_pointer (&call->message, g_free);
  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_I32)
      kind = evd_reader_i32 (r);
    else if (id == 2 && t == EVD_WIRE_T_STRING) {
      g_free (call->message);
      call->message = evd_fetch_reply_string (r);
    } else
      evd_reader_skip (r, t);
  }
  evd_reader_leave (r, saved);
  if (kind < EVD_ERROR_KIND_UNKNOWN_LOOKUP || kind > EVD_ERROR_KIND_CANCELLED)
    kind = EVD_ERROR_KIND_BACKEND;
  call->kind = (EvdErrorKind) kind;
  if (call->message == NULL)
    call->message = g_strdup ("");
}

static void
evd_fetch_reply_call_clear (EvdFetchReplyCall *call)
{
  g_clear_pointer (&call->rows, evd_rows_unref);
  g_clear_pointer (&call->message, g_free);
  call->kind = EVD_ERROR_KIND_NONE;
}

/* LookupResult into `call`: an error wins over a table, as the c_glib path tested them. */
static void
evd_fetch_reply_result (EvdReader *r, EvdFetchReplyCall *call)
{
  EvdFetchReplyCall err = { 0 };
  g_autoptr (EvdRows) rows = NULL;
  const char *why = NULL;
  gboolean has_table = FALSE, has_error = FALSE;
  gint16 saved, id;
  guint8 t;

  evd_fetch_reply_call_clear (call);  /* a key sent twice: the last one */
  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_STRUCT) {
      g_clear_pointer (&rows, evd_rows_unref);
      why = NULL;
      rows = evd_fetch_reply_table (r, &why);
      has_table = TRUE;
    } else if (id == 2 && t == EVD_WIRE_T_STRUCT) {
      evd_fetch_reply_error (r, &err);
      has_error = TRUE;
    } else {
      evd_reader_skip (r, t);
    }
  }
  evd_reader_leave (r, saved);
  if (has_error) {
    call->kind = err.kind;
    call->message = g_steal_pointer (&err.message);
  } else if (rows != NULL) {
    call->rows = g_steal_pointer (&rows);
  } else if (has_table) {
    call->message = g_strdup (why != NULL ? why : "a table that does not decode");
  }
  g_free (err.message);
}

/* The slot a result key names: "0".."n-1" as the backend wrote them, else G_MAXUINT. */
static guint
evd_fetch_reply_slot (const guint8 *key, guint32 len, guint n_calls)
{
  guint64 slot = 0;

  if (len == 0 || len > 10 || (len > 1 && key[0] == '0'))
    return G_MAXUINT;
  for (guint32 i = 0; i < len; i++) {
    if (key[i] < '0' || key[i] > '9')
      return G_MAXUINT;
    slot = slot * 10 + (key[i] - '0');
  }
  return slot < n_calls ? (guint) slot : G_MAXUINT;
}

/* FetchResponse: only its results matter here. */
static void
evd_fetch_reply_success (EvdReader *r, EvdFetchReply *reply)
{
  gint16 saved, id;
  guint8 t;

  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    guint8 kt = 0, vt = 0;
    guint32 n;

    if (id != 2 || t != EVD_WIRE_T_MAP) {
      evd_reader_skip (r, t);
      continue;
    }
    /* A results field sent twice: the last one, whole. */
    for (guint i = 0; i < reply->n_calls; i++)
      evd_fetch_reply_call_clear (&reply->calls[i]);
    n = evd_reader_map (r, &kt, &vt);
    for (guint32 i = 0; i < n && !r->bad; i++) {
      const guint8 *key;
      guint32 len;
      guint slot;

      if (kt != EVD_WIRE_T_STRING || vt != EVD_WIRE_T_STRUCT) {
        evd_reader_skip (r, kt);
        evd_reader_skip (r, vt);
        continue;
      }
      if (!evd_reader_binary (r, &key, &len))
        break;
      slot = evd_fetch_reply_slot (key, len, reply->n_calls);
      if (slot == G_MAXUINT)
        evd_reader_skip (r, vt);
      else
        evd_fetch_reply_result (r, &reply->calls[slot]);
    }
  }
  evd_reader_leave (r, saved);
}

/* An exception's fields: `message` (and Overloaded's retry_after_ms, LookupFailed's call and
 * its error's message). */
static void
evd_fetch_reply_exception (EvdReader *r, EvdFetchReply *reply, EvdFetchReplyOutcome outcome)
{
  gint16 saved, id;
  guint8 t;

  g_clear_pointer (&reply->message, g_free);
  g_clear_pointer (&reply->failed_call, g_free);
  reply->failed_kind = EVD_ERROR_KIND_BACKEND;
  if (!evd_reader_enter (r, &saved))
    return;
  while (evd_reader_field (r, &t, &id)) {
    if (outcome == EVD_FETCH_REPLY_FAILED && id == 1 && t == EVD_WIRE_T_STRING) {
      g_free (reply->failed_call);
      reply->failed_call = evd_fetch_reply_string (r);
    } else if (outcome == EVD_FETCH_REPLY_FAILED && id == 2 && t == EVD_WIRE_T_STRUCT) {
      EvdFetchReplyCall err = { 0 };

      evd_fetch_reply_error (r, &err);
      g_free (reply->message);
      reply->message = g_steal_pointer (&err.message);
      reply->failed_kind = err.kind;
    } else if (outcome != EVD_FETCH_REPLY_FAILED && id == 1 && t == EVD_WIRE_T_STRING) {
      g_free (reply->message);
      reply->message = evd_fetch_reply_string (r);
    } else if (outcome == EVD_FETCH_REPLY_OVERLOADED && id == 2 && t == EVD_WIRE_T_I32) {
      reply->retry_after_ms = evd_reader_i32 (r);
    } else {
      evd_reader_skip (r, t);
    }
  }
  evd_reader_leave (r, saved);
  if (reply->message == NULL)
    reply->message = g_strdup ("");
  if (reply->failed_call == NULL)
    reply->failed_call = g_strdup ("");
}

gboolean
evd_fetch_reply_decode (const guint8 *body, gsize len, EvdProto proto, guint n_calls,
                        EvdFetchReply *reply, const char **why)
{
  EvdReader r = { .p = body, .end = body + len, .proto = proto };
  gboolean seen[EVD_FETCH_REPLY_NONE] = { FALSE };
  /* Each exception read into its own reply; which one counts is decided at the end. */
  EvdFetchReply exc[EVD_FETCH_REPLY_NONE] = { { 0 } };
  gint16 id;
  guint8 t;

  memset (reply, 0, sizeof *reply);
  reply->n_calls = n_calls;
  reply->calls = g_new0 (EvdFetchReplyCall, n_calls);
  while (evd_reader_field (&r, &t, &id)) {
    EvdFetchReplyOutcome o = id == 0 ? EVD_FETCH_REPLY_SUCCESS
                           : id == 1 ? EVD_FETCH_REPLY_INVALID
                           : id == 2 ? EVD_FETCH_REPLY_FAILED
                           : id == 3 ? EVD_FETCH_REPLY_OVERLOADED : EVD_FETCH_REPLY_NONE;

    if (o == EVD_FETCH_REPLY_NONE || t != EVD_WIRE_T_STRUCT) {
      evd_reader_skip (&r, t);
      continue;
    }
    seen[o] = TRUE;
    if (o == EVD_FETCH_REPLY_SUCCESS)
      evd_fetch_reply_success (&r, reply);
    else
      evd_fetch_reply_exception (&r, &exc[o], o);
  }
  /* The c_glib path's order: Overloaded, then InvalidRequest, then the results. */
  reply->outcome = seen[EVD_FETCH_REPLY_OVERLOADED] ? EVD_FETCH_REPLY_OVERLOADED
                 : seen[EVD_FETCH_REPLY_INVALID] ? EVD_FETCH_REPLY_INVALID
                 : seen[EVD_FETCH_REPLY_FAILED] ? EVD_FETCH_REPLY_FAILED
                 : seen[EVD_FETCH_REPLY_SUCCESS] ? EVD_FETCH_REPLY_SUCCESS
                                                 : EVD_FETCH_REPLY_NONE;
  if (reply->outcome != EVD_FETCH_REPLY_SUCCESS && reply->outcome != EVD_FETCH_REPLY_NONE) {
    EvdFetchReply *e = &exc[reply->outcome];

    reply->message = g_steal_pointer (&e->message);
    reply->failed_call = g_steal_pointer (&e->failed_call);
    reply->failed_kind = e->failed_kind;
    reply->retry_after_ms = e->retry_after_ms;
  }
  reply->failed_slot = reply->failed_call != NULL
    ? evd_fetch_reply_slot ((const guint8 *) reply->failed_call, strlen (reply->failed_call),
                            n_calls)
    : G_MAXUINT;
  for (guint i = 0; i < EVD_FETCH_REPLY_NONE; i++) {
    g_free (exc[i].message);
    g_free (exc[i].failed_call);
  }
  if (r.bad == NULL && r.p != r.end)
    evd_reader_fail (&r, "bytes after the result");
  if (r.bad != NULL) {
    *why = r.bad;
    evd_fetch_reply_clear (reply);
    return FALSE;
  }
  return TRUE;
}

void
evd_fetch_reply_clear (EvdFetchReply *reply)
{
  for (guint i = 0; i < reply->n_calls; i++)
    evd_fetch_reply_call_clear (&reply->calls[i]);
  g_clear_pointer (&reply->calls, g_free);
  g_clear_pointer (&reply->message, g_free);
  g_clear_pointer (&reply->failed_call, g_free);
  reply->n_calls = 0;
}

gboolean
evd_fetch_reply_app_exception (const guint8 *body, gsize len, EvdProto proto, char **message,
                               const char **why)
{
  EvdReader r = { .p = body, .end = body + len, .proto = proto };
  g_autofree char *text = NULL;
  gint16 id;
  guint8 t;

  while (evd_reader_field (&r, &t, &id)) {
    if (id == 1 && t == EVD_WIRE_T_STRING) {
      g_free (text);
      text = evd_fetch_reply_string (&r);
    } else {
      evd_reader_skip (&r, t);
    }
  }
  if (r.bad == NULL && r.p != r.end)
    evd_reader_fail (&r, "bytes after the exception");
  if (r.bad != NULL) {
    *why = r.bad;
    return FALSE;
  }
  *message = g_steal_pointer (&text);
  return TRUE;
}

/* evd_cli_json: evdal-cli's --json output (see evd_cli_json.h). */
#include "evd_cli_json.h"

#include <math.h>
#include <string.h>

#include "evd_cli_conn.h"
#include "evd_cli_value.h"

void
evd_cli_json_string (GString *out, const char *s)
{
  g_autofree char *valid = NULL;

  if (s == NULL)
    s = "";
  /* JSON text is UTF-8; a byte that is not would make the whole document unreadable. */
  if (!g_utf8_validate (s, -1, NULL))
    s = valid = g_utf8_make_valid (s, -1);
  g_string_append_c (out, '"');
  for (const unsigned char *p = (const unsigned char *) s; *p != '\0'; p++) {
    switch (*p) {
    case '"': g_string_append (out, "\\\""); break;
    case '\\': g_string_append (out, "\\\\"); break;
    case '\n': g_string_append (out, "\\n"); break;
    case '\r': g_string_append (out, "\\r"); break;
    case '\t': g_string_append (out, "\\t"); break;
    case '\b': g_string_append (out, "\\b"); break;
    case '\f': g_string_append (out, "\\f"); break;
    default:
      if (*p < 0x20)
        g_string_append_printf (out, "\\u%04x", *p);
      else
        g_string_append_c (out, (char) *p);  /* ASCII, or a byte of a UTF-8 sequence */
    }
  }
  g_string_append_c (out, '"');
}

static void
evd_cli_json_key (GString *out, gboolean first, const char *key)
{
  if (!first)
    g_string_append (out, ", ");
  evd_cli_json_string (out, key);
  g_string_append (out, ": ");
}

static void
evd_cli_json_strings (GString *out, const GPtrArray *strings)
{
  g_string_append_c (out, '[');
  for (guint i = 0; strings != NULL && i < strings->len; i++) {
    if (i > 0)
      g_string_append (out, ", ");
    evd_cli_json_string (out, strings->pdata[i]);
  }
  g_string_append_c (out, ']');
}

void
evd_cli_json_value (GString *out, const evdalValue *v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (v->__isset_int_value) {
    g_string_append_printf (out, "%" G_GINT64_FORMAT, v->int_value);
  } else if (v->__isset_real_value && isfinite (v->real_value)) {
    evd_cli_value_format_real (v->real_value, buf);
    g_string_append (out, buf);
  } else if (v->__isset_text_value) {
    evd_cli_json_string (out, v->text_value);
  } else if (v->__isset_blob_value) {
    g_autofree char *hex = v->blob_value ? evd_cli_value_hex (v->blob_value->data,
                                                              v->blob_value->len)
                                         : g_strdup ("");
    g_string_append_printf (out, "{\"hex\": \"%s\"}", hex);
  } else {
    g_string_append (out, "null");  /* NULL, and what JSON cannot say (NaN, infinities) */
  }
}

void
evd_cli_json_ping (GString *out, const char *pong, double ms)
{
  g_string_append (out, "{\"ping\": ");
  evd_cli_json_string (out, pong);
  g_string_append_printf (out, ", \"ms\": %.3f}\n", ms);
}

void
evd_cli_json_lookups (GString *out, GPtrArray *infos)
{
  g_string_append (out, "{\"lookups\": [");
  for (guint i = 0; i < infos->len; i++) {
    const evdalLookupInfo *info = infos->pdata[i];

    g_string_append (out, i ? ", {" : "{");
    evd_cli_json_key (out, TRUE, "name");
    evd_cli_json_string (out, info->name);
    evd_cli_json_key (out, FALSE, "backend");
    evd_cli_json_string (out, info->backend);
    evd_cli_json_key (out, FALSE, "params");
    evd_cli_json_strings (out, info->params);
    evd_cli_json_key (out, FALSE, "timeout_ms");
    g_string_append_printf (out, "%d", info->timeout_ms);
    evd_cli_json_key (out, FALSE, "description");
    evd_cli_json_string (out, info->description);
    g_string_append_c (out, '}');
  }
  g_string_append (out, "]}\n");
}

static void
evd_cli_json_error (GString *out, const evdalLookupError *e)
{
  g_string_append (out, "{\"kind\": ");
  evd_cli_json_string (out, evd_cli_conn_error_kind_name (e->kind));
  evd_cli_json_key (out, FALSE, "message");
  evd_cli_json_string (out, e->message);
  g_string_append_c (out, '}');
}

static void
evd_cli_json_table (GString *out, const evdalTable *t)
{
  evd_cli_json_key (out, FALSE, "columns");
  evd_cli_json_strings (out, t->columns);
  evd_cli_json_key (out, FALSE, "rows");
  g_string_append_c (out, '[');
  for (guint r = 0; t->rows != NULL && r < t->rows->len; r++) {
    const GPtrArray *row = t->rows->pdata[r];

    g_string_append (out, r ? ", [" : "[");
    for (guint c = 0; c < row->len; c++) {
      if (c > 0)
        g_string_append (out, ", ");
      evd_cli_json_value (out, row->pdata[c]);
    }
    g_string_append_c (out, ']');
  }
  g_string_append_c (out, ']');
}

/* One call's result; FALSE when it is not a success. */
static gboolean
evd_cli_json_result (GString *out, const char *lookup, const evdalLookupResult *res)
{
  gboolean ok = res != NULL && res->__isset_table && !res->__isset_error;

  g_string_append (out, "{\"lookup\": ");
  evd_cli_json_string (out, lookup);
  if (res == NULL) {
    g_string_append (out, ", \"error\": {\"kind\": null, \"message\": "
                          "\"the server returned no result for this call\"}");
  } else if (res->__isset_error) {
    evd_cli_json_key (out, FALSE, "error");
    evd_cli_json_error (out, res->error);
  } else if (res->__isset_table) {
    evd_cli_json_table (out, res->table);
  }
  if (res != NULL && res->__isset_span) {
    g_string_append_printf (out, ", \"span\": {\"start_us\": %" G_GINT64_FORMAT
                            ", \"end_us\": %" G_GINT64_FORMAT ", \"backend\": ",
                            res->span->start_us, res->span->end_us);
    evd_cli_json_string (out, res->span->backend);
    if (res->span->__isset_marks && res->span->marks != NULL) {
      g_string_append (out, ", \"marks\": [");
      for (guint m = 0; m < res->span->marks->len; m++) {
        if (m > 0)
          g_string_append (out, ", ");
        evd_cli_json_string (out, res->span->marks->pdata[m]);
      }
      g_string_append_c (out, ']');
    }
    g_string_append_c (out, '}');
  }
  g_string_append_c (out, '}');
  return ok;
}

guint
evd_cli_json_response (GString *out, const EvdCliRequest *r, const evdalFetchResponse *resp)
{
  g_autoptr (GString) results = g_string_new (NULL);
  guint failed = 0;

  for (guint i = 0; i < r->keys->len; i++) {
    const char *key = r->keys->pdata[i];

    evd_cli_json_key (results, i == 0, key);
    if (!evd_cli_json_result (results, evd_cli_request_lookup (r, key),
                              g_hash_table_lookup (resp->results, key)))
      failed++;
  }
  g_string_append (out, "{\"request_id\": ");
  evd_cli_json_string (out, resp->request_id);
  if (evd_cli_request_trace_id (r) != NULL)
    g_string_append_printf (out, ", \"trace_id\": \"%.32s\"", evd_cli_request_trace_id (r));
  g_string_append_printf (out, ", \"server_us\": %" G_GINT64_FORMAT ", \"ok\": %s, "
                          "\"results\": {%s}}\n", resp->server_us,
                          failed == 0 ? "true" : "false", results->str);
  return failed;
}

void
evd_cli_json_exception (GString *out, const EvdCliRequest *r,
                        const evdalInvalidRequest *invalid, const evdalLookupFailed *failed,
                        const evdalOverloaded *overloaded)
{
  g_string_append (out, "{\"exception\": {\"type\": ");
  if (failed != NULL) {
    g_string_append (out, "\"LookupFailed\", \"call\": ");
    evd_cli_json_string (out, failed->call);
    evd_cli_json_key (out, FALSE, "lookup");
    if (failed->call && evd_cli_request_lookup (r, failed->call))
      evd_cli_json_string (out, evd_cli_request_lookup (r, failed->call));
    else
      g_string_append (out, "null");
    evd_cli_json_key (out, FALSE, "error");
    evd_cli_json_error (out, failed->error);
  } else if (overloaded != NULL) {
    g_string_append (out, "\"Overloaded\", \"message\": ");
    evd_cli_json_string (out, overloaded->message);
    g_string_append_printf (out, ", \"retry_after_ms\": %d", overloaded->retry_after_ms);
  } else {
    g_string_append (out, "\"InvalidRequest\", \"message\": ");
    evd_cli_json_string (out, invalid ? invalid->message : NULL);
  }
  g_string_append (out, "}}\n");
}

void
evd_cli_json_application_error (GString *out, int code, const char *message)
{
  g_string_append (out, "{\"exception\": {\"type\": \"TApplicationException\", \"kind\": ");
  evd_cli_json_string (out, evd_cli_conn_application_error_name (code));
  evd_cli_json_key (out, FALSE, "message");
  evd_cli_json_string (out, message);
  g_string_append (out, "}}\n");
}

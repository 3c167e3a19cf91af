/* evd_cli_request: the FetchRequest of evdal-cli's command line (see evd_cli_request.h). */
#include "evd_cli_request.h"

#include <string.h>

#include "evd_cli_value.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalLookupCall, g_object_unref)

EvdCliRequest *
evd_cli_request_new (void)
{
  EvdCliRequest *r = g_new0 (EvdCliRequest, 1);

  r->request = g_object_new (EVDAL_TYPE_FETCH_REQUEST, NULL);
  r->request->__isset_calls = TRUE;
  r->keys = g_ptr_array_new_with_free_func (g_free);
  return r;
}

void
evd_cli_request_free (EvdCliRequest *r)
{
  if (r == NULL)
    return;
  g_object_unref (r->request);
  g_ptr_array_unref (r->keys);
  g_free (r);
}

/* "NAME[:TYPE]=VALUE" into the call's params. */
static gboolean
evd_cli_request_param (evdalLookupCall *call, const char *assignment, GError **error)
{
  const char *eq = strchr (assignment, '=');
  g_autofree char *name = NULL;
  char *colon;
  evdalValue *v;

  if (eq == NULL || eq == assignment) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "\"%s\" is not NAME=VALUE", assignment);
    return FALSE;
  }
  name = g_strndup (assignment, (gsize) (eq - assignment));
  colon = strchr (name, ':');
  if (colon != NULL)
    *colon = '\0';
  if (*name == '\0') {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "\"%s\": no param name",
                 assignment);
    return FALSE;
  }
  if (g_hash_table_contains (call->params, name)) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "param %s is given twice in the call of %s", name, call->lookup);
    return FALSE;
  }
  v = evd_cli_value_parse (colon ? colon + 1 : NULL, eq + 1, error);
  if (v == NULL) {
    g_prefix_error (error, "param %s: ", name);
    return FALSE;
  }
  g_hash_table_insert (call->params, g_steal_pointer (&name), v);
  call->__isset_params = TRUE;
  return TRUE;
}

static char *
evd_cli_request_free_key (const EvdCliRequest *r, const char *lookup)
{
  if (!g_hash_table_contains (r->request->calls, lookup))
    return g_strdup (lookup);
  for (guint n = 2;; n++) {
    char *key = g_strdup_printf ("%s#%u", lookup, n);
    if (!g_hash_table_contains (r->request->calls, key))
      return key;
    g_free (key);
  }
}

gboolean
evd_cli_request_add (EvdCliRequest *r, const char *key, const char *lookup,
                     const char *const *params, GError **error)
{
  g_autoptr (evdalLookupCall) call = g_object_new (EVDAL_TYPE_LOOKUP_CALL, NULL);
  g_autofree char *k = NULL;

  if (lookup == NULL || *lookup == '\0') {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "a call names no lookup");
    return FALSE;
  }
  if (key != NULL && *key == '\0') {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "the call of %s has an empty key", lookup);
    return FALSE;
  }
  if (key != NULL && g_hash_table_contains (r->request->calls, key)) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "two calls have the key \"%s\"; results are keyed, so keys must differ", key);
    return FALSE;
  }
  call->lookup = g_strdup (lookup);
  call->__isset_lookup = TRUE;
  for (guint i = 0; params != NULL && params[i] != NULL; i++)
    if (!evd_cli_request_param (call, params[i], error))
      return FALSE;
  k = key != NULL ? g_strdup (key) : evd_cli_request_free_key (r, lookup);
  g_ptr_array_add (r->keys, g_strdup (k));
  g_hash_table_insert (r->request->calls, g_steal_pointer (&k), g_steal_pointer (&call));
  return TRUE;
}

/* Splits at the commas that are not escaped, and unescapes "\," and "\\". */
static GPtrArray *
evd_cli_request_split_params (const char *text)
{
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  GString *cur = g_string_new (NULL);

  for (const char *p = text;; p++) {
    if (*p == '\\' && (p[1] == ',' || p[1] == '\\')) {
      g_string_append_c (cur, *++p);
    } else if (*p == ',' || *p == '\0') {
      g_ptr_array_add (out, g_string_free (cur, FALSE));
      if (*p == '\0')
        break;
      cur = g_string_new (NULL);
    } else {
      g_string_append_c (cur, *p);
    }
  }
  g_ptr_array_add (out, NULL);
  return out;
}

gboolean
evd_cli_request_add_spec (EvdCliRequest *r, const char *spec, GError **error)
{
  const char *colon = strchr (spec, ':');
  g_autofree char *head = colon ? g_strndup (spec, (gsize) (colon - spec)) : g_strdup (spec);
  g_autoptr (GPtrArray) params = NULL;
  char *eq = strchr (head, '=');
  const char *lookup = head, *key = NULL;

  if (eq != NULL) {
    *eq = '\0';
    key = head;
    lookup = eq + 1;
  }
  if (colon != NULL) {
    params = evd_cli_request_split_params (colon + 1);
    /* "LOOKUP:" with nothing after it has no params, not one empty one. */
    if (params->len == 2 && *(char *) params->pdata[0] == '\0')
      g_ptr_array_remove_index (params, 0);
  }
  if (!evd_cli_request_add (r, key, lookup,
                            params ? (const char *const *) params->pdata : NULL, error)) {
    g_prefix_error (error, "--call %s: ", spec);
    return FALSE;
  }
  return TRUE;
}

gboolean
evd_cli_request_set_critical (EvdCliRequest *r, const char *keys, GError **error)
{
  g_auto (GStrv) list = NULL;

  if (keys == NULL) {
    for (guint i = 0; i < r->keys->len; i++) {
      evdalLookupCall *c = g_hash_table_lookup (r->request->calls, r->keys->pdata[i]);
      c->critical = c->__isset_critical = TRUE;
    }
    return TRUE;
  }
  list = g_strsplit (keys, ",", -1);
  for (guint i = 0; list[i] != NULL; i++) {
    evdalLookupCall *c = g_hash_table_lookup (r->request->calls, list[i]);
    if (c == NULL) {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--critical: no call has the key \"%s\"", list[i]);
      return FALSE;
    }
    c->critical = c->__isset_critical = TRUE;
  }
  return TRUE;
}

void
evd_cli_request_set_call_timeout (EvdCliRequest *r, int timeout_ms)
{
  for (guint i = 0; i < r->keys->len; i++) {
    evdalLookupCall *c = g_hash_table_lookup (r->request->calls, r->keys->pdata[i]);
    c->timeout_ms = timeout_ms;
    c->__isset_timeout_ms = TRUE;
  }
}

const char *
evd_cli_request_lookup (const EvdCliRequest *r, const char *key)
{
  evdalLookupCall *c = g_hash_table_lookup (r->request->calls, key);

  return c ? c->lookup : NULL;
}

const char *
evd_cli_request_trace_id (const EvdCliRequest *r)
{
  const evdalRequestContext *ctx = r->request->__isset_context ? r->request->context : NULL;
  const char *tp = NULL;

  if (ctx != NULL && ctx->__isset_traceparent)
    tp = ctx->traceparent;
  else if (ctx != NULL && ctx->__isset_attributes)
    tp = g_hash_table_lookup (ctx->attributes, "traceparent");
  /* "VV-<32 hex>-...": anything else carries no trace id worth showing (and a caller's
   * --attr traceparent may hold quotes or backslashes, which the JSON prints as they are) */
  if (tp == NULL || strlen (tp) < 36 || tp[2] != '-' || tp[35] != '-')
    return NULL;
  for (int i = 3; i < 35; i++)
    if (!g_ascii_isxdigit (tp[i]))
      return NULL;
  return tp + 3;
}

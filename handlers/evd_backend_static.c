/* evd_backend_static: a table written in the config, answered from memory: feature flags,
 * settings, anything that changes with a deploy rather than with data.
 *
 *   [lookup feature_flags]
 *   backend = static
 *   columns = flag, enabled
 *   row.1 = new_checkout, 1
 *   row.2 = "dark mode, beta", 0
 *
 * Rows are the keys starting with "row", in file order. Values are comma-separated: an
 * integer is an int, a decimal number a real, `null` a NULL, and anything else text (put it
 * in double quotes to keep commas or surrounding blanks; \" and \\ escape inside quotes).
 * The table is built once and shared by every call (its reference count is atomic and
 * nothing writes to it), so a static lookup costs no allocation per call.
 */
#include <stdlib.h>
#include <string.h>

#include "evd_backend.h"

typedef struct {
  EvdRows *rows;            /* one table, shared by every call */
} EvdBackendStatic;

/* Reads one quoted field starting after its opening quote; *p ends past the closing one. */
static gboolean
evd_backend_static_quoted (const char **p, GString *out)
{
  for (const char *c = *p; *c != '\0'; c++) {
    if (*c == '\\' && (c[1] == '"' || c[1] == '\\')) {
      g_string_append_c (out, *++c);
    } else if (*c == '"') {
      *p = c + 1;
      return TRUE;
    } else {
      g_string_append_c (out, *c);
    }
  }
  return FALSE;
}

/* Splits a comma-separated line. `quoted` tells, per field, whether it was in quotes.
 * NULL on a malformed line, *why saying what is wrong with it (for the config problem). */
static GPtrArray *
evd_backend_static_split (const char *line, GPtrArray **quoted, const char **why)
{
  g_autoptr (GPtrArray) fields = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) flags = g_ptr_array_new ();
  const char *p = line;

  for (;;) {
    GString *field = g_string_new (NULL);
    gboolean is_quoted;

    while (*p == ' ' || *p == '\t')
      p++;
    is_quoted = *p == '"';
    if (is_quoted) {
      p++;
      if (!evd_backend_static_quoted (&p, field)) {
        g_string_free (field, TRUE);
        *why = "unterminated quote";
        return NULL;
      }
      while (*p == ' ' || *p == '\t')
        p++;
    } else {
      while (*p != ',' && *p != '\0')
        g_string_append_c (field, *p++);
      g_strchomp (field->str);
    }
    g_ptr_array_add (fields, g_string_free (field, FALSE));
    g_ptr_array_add (flags, GINT_TO_POINTER (is_quoted));
    if (*p == '\0')
      break;
    if (*p != ',') {
      *why = "text after a closing quote";
      return NULL;
    }
    p++;
  }
  *quoted = g_steal_pointer (&flags);
  return g_steal_pointer (&fields);
}

/* A quoted field is text; unquoted, null, an integer, a real, or else text. */
static void
evd_backend_static_add_value (EvdRows *t, const char *text, gboolean quoted)
{
  char *end;
  gint64 i;
  double d;

  if (quoted) {
    evd_rows_add_text (t, text, -1);
    return;
  }
  if (strcmp (text, "null") == 0) {
    evd_rows_add_null (t);
    return;
  }
  i = g_ascii_strtoll (text, &end, 10);
  if (*text != '\0' && *end == '\0') {
    evd_rows_add_int (t, i);
    return;
  }
  d = g_ascii_strtod (text, &end);
  if (*text != '\0' && *end == '\0')
    evd_rows_add_real (t, d);
  else
    evd_rows_add_text (t, text, -1);
}

static gboolean
evd_backend_static_add_row (EvdConfig *cfg, const char *group, const char *key, EvdRows *t)
{
  g_autofree char *line = evd_config_string (cfg, group, key, "");
  g_autoptr (GPtrArray) quoted = NULL;
  const char *why = NULL;
  g_autoptr (GPtrArray) fields = evd_backend_static_split (line, &quoted, &why);

  if (fields == NULL) {
    evd_config_problem (cfg, group, key, "%s", why);
    return FALSE;
  }
  if (fields->len != evd_rows_n_columns (t)) {
    evd_config_problem (cfg, group, key, "%u values for %u columns", fields->len,
                        evd_rows_n_columns (t));
    return FALSE;
  }
  for (guint i = 0; i < fields->len; i++)
    evd_backend_static_add_value (t, fields->pdata[i], GPOINTER_TO_INT (quoted->pdata[i]));
  return TRUE;
}

static gpointer
evd_backend_static_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  (void) shared;
  g_autofree char *columns = evd_config_require (cfg, spec->group, "columns");
  g_autoptr (GPtrArray) quoted = NULL;
  const char *why = NULL;
  g_autoptr (GPtrArray) names = columns ? evd_backend_static_split (columns, &quoted, &why) : NULL;
  /* Read (marked used) even when the columns are wrong: the rows are then not also
   * reported as unknown keys, which would hide the one real problem among false ones. Only
   * the rows: any other key nobody reads is a typo, reported by evd_config_check. */
  g_auto (GStrv) keys = evd_config_keys_with_prefix (cfg, spec->group, "row");
  EvdBackendStatic *s;
  gboolean ok = TRUE;

  if (names == NULL) {
    if (columns != NULL)
      evd_config_problem (cfg, spec->group, "columns", "%s", why);
    return NULL;
  }
  s = g_new0 (EvdBackendStatic, 1);
  s->rows = evd_rows_new (names->len, (const char *const *) names->pdata);
  for (guint i = 0; keys[i] != NULL; i++)
    ok &= evd_backend_static_add_row (cfg, spec->group, keys[i], s->rows);
  if (!ok) {
    evd_rows_unref (s->rows);
    g_free (s);
    return NULL;
  }
  return s;
}

static void
evd_backend_static_start (gpointer backend, EvdBackendCall *call)
{
  EvdBackendStatic *s = backend;

  evd_backend_call_return (call, evd_rows_ref (s->rows));
}

static void
evd_backend_static_cancel (gpointer backend, EvdBackendCall *call)
{
  (void) backend;
  (void) call;  /* answered inside start(): nothing can be in flight */
}

static void
evd_backend_static_close (gpointer backend)
{
  EvdBackendStatic *s = backend;

  evd_rows_unref (s->rows);
  g_free (s);
}

const EvdBackendClass evd_backend_static_class = {
  .kind = "static",
  .open = evd_backend_static_open,
  .start = evd_backend_static_start,
  .cancel = evd_backend_static_cancel,
  .close = evd_backend_static_close,
};

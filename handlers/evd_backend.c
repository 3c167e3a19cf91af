/* evd_backend: the registry of built-in backend kinds and helpers to build results. */
#include "evd_backend.h"

#include <gio/gio.h>
#include <string.h>

extern const EvdBackendClass evd_backend_delay_class;
extern const EvdBackendClass evd_backend_static_class;
extern const EvdBackendClass evd_backend_fault_class;

/* Adding a backend kind: write its class in its own file, then list it here. */
extern const EvdBackendClass evd_backend_sqlite_class;
extern const EvdBackendClass evd_backend_postgresql_class;
extern const EvdBackendClass evd_backend_thrift_class;
extern const EvdBackendClass evd_backend_redis_class;
extern const EvdBackendClass evd_backend_http_class;  /* HTTP/JSON upstreams (issue 16) */

static const EvdBackendClass *const evd_backend_classes[] = {
  &evd_backend_delay_class,
  &evd_backend_static_class,
  &evd_backend_fault_class,
  &evd_backend_sqlite_class,
  &evd_backend_postgresql_class,
  &evd_backend_thrift_class,
  &evd_backend_redis_class,
  &evd_backend_http_class,
  NULL,
};

/* Every kind known, NULL-terminated: the built-ins, then what modules registered. NULL until
 * a module registers one; written at start-up only, before any other thread reads it. */
static GPtrArray *evd_backend_registered;

const EvdBackendClass *const *
evd_backend_all (void)
{
  if (evd_backend_registered != NULL)
    return (const EvdBackendClass *const *) evd_backend_registered->pdata;
  return evd_backend_classes;
}

const EvdBackendClass *
evd_backend_find (const char *kind)
{
  const EvdBackendClass *const *all = evd_backend_all ();

  for (guint i = 0; all[i] != NULL; i++)
    if (strcmp (all[i]->kind, kind) == 0)
      return all[i];
  return NULL;
}

gboolean
evd_backend_register (const EvdBackendClass *klass, GError **error)
{
  if (klass->kind == NULL || *klass->kind == '\0' || klass->open == NULL ||
      klass->start == NULL || klass->cancel == NULL || klass->close == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "backend class \"%s\" needs "
                 "a kind and open, start, cancel and close", klass->kind ? klass->kind : "");
    return FALSE;
  }
  if (evd_backend_find (klass->kind) != NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "backend kind \"%s\" is already known",
                 klass->kind);
    return FALSE;
  }
  if (evd_backend_registered == NULL) {
    evd_backend_registered = g_ptr_array_new ();
    for (guint i = 0; evd_backend_classes[i] != NULL; i++)
      g_ptr_array_add (evd_backend_registered, (gpointer) evd_backend_classes[i]);
    g_ptr_array_add (evd_backend_registered, NULL);
  }
  /* Before the NULL that ends the list. */
  g_ptr_array_insert (evd_backend_registered, (gint) evd_backend_registered->len - 1,
                      (gpointer) klass);
  return TRUE;
}

char *
evd_backend_kinds (void)
{
  const EvdBackendClass *const *all = evd_backend_all ();
  GString *s = g_string_new (NULL);

  for (guint i = 0; all[i] != NULL; i++)
    g_string_append_printf (s, "%s%s", i ? ", " : "", all[i]->kind);
  return g_string_free (s, FALSE);
}

/* ---- Sections a lookup names: [database NAME], [upstream NAME]. ---- */

/* The backend of a section that does not say: a database is SQLite, an upstream HTTP. */
static const char *
evd_backend_section_fallback (const char *section)
{
  return strcmp (section, "upstream") == 0 ? "http" : "sqlite";
}

/* ---- Marks. ---- */

guint
evd_backend_marks_words (guint marks, guint retries, const char **out, char *retried_buf)
{
  guint n = 0;

  if (marks & EVD_MARK_COALESCED)
    out[n++] = "coalesced";
  if (marks & EVD_MARK_CACHE_HIT)
    out[n++] = "cache_hit";
  if (marks & EVD_MARK_STALE)
    out[n++] = "stale";
  if (marks & EVD_MARK_HEDGED)
    out[n++] = "hedged";
  if (marks & EVD_MARK_RETRIED) {
    g_snprintf (retried_buf, 16, "retried:%u", retries);
    out[n++] = retried_buf;
  }
  if (marks & EVD_MARK_BREAKER_OPEN)
    out[n++] = "breaker_open";
  return n;
}
char *
evd_backend_section_kind (EvdConfig *cfg, const char *group)
{
  g_autofree char *section = g_strndup (group, strcspn (group, " "));

  return evd_config_string (cfg, group, "backend", evd_backend_section_fallback (section));
}

char **
evd_backend_sections (EvdConfig *cfg, const char *section, const char *kind)
{
  g_auto (GStrv) groups = evd_config_groups_of_kind (cfg, section);
  GPtrArray *mine = g_ptr_array_new ();

  for (guint i = 0; groups[i] != NULL; i++) {
    g_autofree char *k = evd_backend_section_kind (cfg, groups[i]);

    if (strcmp (k, kind) == 0)
      g_ptr_array_add (mine, g_strdup (groups[i]));
  }
  g_ptr_array_add (mine, NULL);
  return (char **) g_ptr_array_free (mine, FALSE);
}


void
evd_backend_health_line (GString *out, const char *section, const char *name, int up, int total)
{
  g_string_append_printf (out, "%s %s: %d/%d connections up%s\n", section, name, up, total,
                          up == 0 && total > 0 ? " (unavailable)" : "");
}

/* evd_backend: the registry of built-in backend kinds and helpers to build results. */
#include "evd_backend.h"

#include <string.h>

extern const EvdBackendClass evd_backend_delay_class;
extern const EvdBackendClass evd_backend_static_class;
extern const EvdBackendClass evd_backend_fault_class;

/* Adding a backend kind: write its class in its own file, then list it here. */
extern const EvdBackendClass evd_backend_sqlite_class;
extern const EvdBackendClass evd_backend_thrift_class;
extern const EvdBackendClass evd_backend_redis_class;
extern const EvdBackendClass evd_backend_http_class;  /* HTTP/JSON upstreams (issue 16) */

static const EvdBackendClass *const evd_backend_classes[] = {
  &evd_backend_delay_class,
  &evd_backend_static_class,
  &evd_backend_fault_class,
  &evd_backend_sqlite_class,
  &evd_backend_thrift_class,
  &evd_backend_redis_class,
  &evd_backend_http_class,
  NULL,
};

const EvdBackendClass *const *
evd_backend_all (void)
{
  return evd_backend_classes;
}

const EvdBackendClass *
evd_backend_find (const char *kind)
{
  for (guint i = 0; evd_backend_classes[i] != NULL; i++)
    if (strcmp (evd_backend_classes[i]->kind, kind) == 0)
      return evd_backend_classes[i];
  return NULL;
}

char *
evd_backend_kinds (void)
{
  GString *s = g_string_new (NULL);

  for (guint i = 0; evd_backend_classes[i] != NULL; i++)
    g_string_append_printf (s, "%s%s", i ? ", " : "", evd_backend_classes[i]->kind);
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


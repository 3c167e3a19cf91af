/* evd_backend: the registry of built-in backend kinds and helpers to build results. */
#include "evd_backend.h"

#include <string.h>

extern const EvdBackendClass evd_backend_delay_class;
extern const EvdBackendClass evd_backend_static_class;
extern const EvdBackendClass evd_backend_fault_class;

/* Adding a backend kind: write its class in its own file, then list it here. */
extern const EvdBackendClass evd_backend_sqlite_class;
extern const EvdBackendClass evd_backend_postgresql_class;

static const EvdBackendClass *const evd_backend_classes[] = {
  &evd_backend_delay_class,
  &evd_backend_static_class,
  &evd_backend_fault_class,
  &evd_backend_sqlite_class,
  &evd_backend_postgresql_class,
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

/* ---- Params. ---- */

const char *
evd_value_kind_name (EvdValueKind kind)
{
  switch (kind) {
  case EVD_VALUE_NULL: return "null";
  case EVD_VALUE_INT: return "int";
  case EVD_VALUE_REAL: return "real";
  case EVD_VALUE_TEXT: return "text";
  case EVD_VALUE_BLOB: return "blob";
  default: return "malformed (not exactly one field set)";
  }
}

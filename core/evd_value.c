/* evd_value: the shared vocabulary's few functions (see evd_value.h). */
#include "evd_value.h"

#include <string.h>

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

const EvdValue *
evd_value_find_param (const EvdParam *params, guint n_params, const char *name)
{
  for (guint i = 0; i < n_params; i++)
    if (strcmp (params[i].name, name) == 0)
      return &params[i].value;
  return NULL;
}

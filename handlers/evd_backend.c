/* evd_backend: the registry of built-in backend kinds and helpers to build results. */
#include "evd_backend.h"

#include <string.h>

extern const EvdBackendClass evd_backend_delay_class;
extern const EvdBackendClass evd_backend_static_class;
extern const EvdBackendClass evd_backend_fault_class;

/* Adding a backend kind: write its class in its own file, then list it here. */
extern const EvdBackendClass evd_backend_sqlite_class;

static const EvdBackendClass *const evd_backend_classes[] = {
  &evd_backend_delay_class,
  &evd_backend_static_class,
  &evd_backend_fault_class,
  &evd_backend_sqlite_class,
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

/* ---- Tables and values. ---- */

evdalTable *
evd_table_new (const char *const *columns)
{
  evdalTable *t = g_object_new (EVDAL_TYPE_TABLE, NULL);

  for (guint i = 0; columns[i] != NULL; i++)
    g_ptr_array_add (t->columns, g_strdup (columns[i]));
  t->__isset_columns = TRUE;
  t->__isset_rows = TRUE;
  return t;
}

void
evd_table_add_row (evdalTable *table, evdalValue **values)
{
  GPtrArray *row = g_ptr_array_new_full (table->columns->len, g_object_unref);

  for (guint i = 0; i < table->columns->len; i++)
    g_ptr_array_add (row, values[i]);
  g_ptr_array_add (table->rows, row);
}

evdalValue *
evd_value_new_int (gint64 v)
{
  evdalValue *x = g_object_new (EVDAL_TYPE_VALUE, NULL);

  x->int_value = v;
  x->__isset_int_value = TRUE;
  return x;
}

evdalValue *
evd_value_new_real (double v)
{
  evdalValue *x = g_object_new (EVDAL_TYPE_VALUE, NULL);

  x->real_value = v;
  x->__isset_real_value = TRUE;
  return x;
}

evdalValue *
evd_value_new_text (const char *v)
{
  evdalValue *x = g_object_new (EVDAL_TYPE_VALUE, NULL);

  x->text_value = g_strdup (v);
  x->__isset_text_value = TRUE;
  return x;
}

evdalValue *
evd_value_new_blob (const guint8 *data, gsize len)
{
  evdalValue *x = g_object_new (EVDAL_TYPE_VALUE, NULL);

  if (x->blob_value == NULL)
    x->blob_value = g_byte_array_new ();
  g_byte_array_append (x->blob_value, data, (guint) len);
  x->__isset_blob_value = TRUE;
  return x;
}

evdalValue *
evd_value_new_null (void)
{
  evdalValue *x = g_object_new (EVDAL_TYPE_VALUE, NULL);

  x->null_value = TRUE;
  x->__isset_null_value = TRUE;
  return x;
}

EvdValueKind
evd_value_kind (const evdalValue *v)
{
  int n = v->__isset_null_value + v->__isset_int_value + v->__isset_real_value +
          v->__isset_text_value + v->__isset_blob_value;

  if (n != 1)
    return EVD_VALUE_INVALID;
  if (v->__isset_null_value)
    return EVD_VALUE_NULL;
  if (v->__isset_int_value)
    return EVD_VALUE_INT;
  if (v->__isset_real_value)
    return EVD_VALUE_REAL;
  return v->__isset_text_value ? EVD_VALUE_TEXT : EVD_VALUE_BLOB;
}

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

evdalValue *
evd_value_copy (const evdalValue *v)
{
  switch (evd_value_kind (v)) {
  case EVD_VALUE_INT: return evd_value_new_int (v->int_value);
  case EVD_VALUE_REAL: return evd_value_new_real (v->real_value);
  case EVD_VALUE_TEXT: return evd_value_new_text (v->text_value);
  case EVD_VALUE_BLOB: return evd_value_new_blob (v->blob_value->data, v->blob_value->len);
  default: return evd_value_new_null ();
  }
}

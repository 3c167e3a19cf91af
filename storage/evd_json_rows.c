/* evd_json_rows: JSON (json-glib's parser) to EvdRows, as evd_json_rows.h describes.
 *
 * Two passes over an array of objects: the first collects the columns (every key, first-seen
 * order), the second fills each row by looking each column up in the object, so a key missing
 * from an object is a null and the key order inside an object does not matter.
 */
#include "evd_json_rows.h"

#include <json-glib/json-glib.h>
#include <string.h>

G_DEFINE_QUARK (evd-json-rows-error-quark, evd_json_rows_error)

static const char *const evd_json_rows_value_column[] = { "value" };

gboolean
evd_json_rows_path_valid (const char *path)
{
  g_auto (GStrv) keys = NULL;

  if (path == NULL || path[0] == '\0')
    return TRUE;
  keys = g_strsplit (path, ".", -1);
  for (guint i = 0; keys[i] != NULL; i++)
    if (keys[i][0] == '\0')
      return FALSE;
  return TRUE;
}

/* One cell from one JSON value. */
static void
evd_json_rows_add_cell (EvdRows *rows, JsonNode *node)
{
  if (node == NULL || JSON_NODE_HOLDS_NULL (node)) {
    evd_rows_add_null (rows);
  } else if (JSON_NODE_HOLDS_VALUE (node)) {
    GType t = json_node_get_value_type (node);

    if (t == G_TYPE_INT64)
      evd_rows_add_int (rows, json_node_get_int (node));
    else if (t == G_TYPE_BOOLEAN)
      evd_rows_add_int (rows, json_node_get_boolean (node) ? 1 : 0);
    else if (t == G_TYPE_DOUBLE)
      evd_rows_add_real (rows, json_node_get_double (node));
    else {
      const char *s = json_node_get_string (node);
      const char *end;

      /* json-glib checks the document's UTF-8, but stay safe: rows hold valid text only. */
      if (g_utf8_validate (s, -1, &end)) {
        evd_rows_add_text (rows, s, -1);
      } else {
        g_autofree char *valid = g_utf8_make_valid (s, -1);
        evd_rows_add_text (rows, valid, -1);
      }
    }
  } else {
    g_autofree char *text = json_to_string (node, FALSE);
    evd_rows_add_text (rows, text, -1);
  }
}

static gboolean
evd_json_rows_all_objects (JsonArray *a)
{
  guint n = json_array_get_length (a);

  for (guint i = 0; i < n; i++)
    if (!JSON_NODE_HOLDS_OBJECT (json_array_get_element (a, i)))
      return FALSE;
  return n > 0;
}

/* Adds the object's keys not seen yet, in its order. */
static void
evd_json_rows_collect_keys (JsonObject *o, GHashTable *seen, GPtrArray *columns)
{
  JsonObjectIter it;
  const char *key;

  json_object_iter_init_ordered (&it, o);
  while (json_object_iter_next_ordered (&it, &key, NULL))
    if (g_hash_table_add (seen, (gpointer) key))
      g_ptr_array_add (columns, (gpointer) key);
}

static void
evd_json_rows_add_object (EvdRows *rows, JsonObject *o, GPtrArray *columns)
{
  for (guint c = 0; c < columns->len; c++)
    evd_json_rows_add_cell (rows, json_object_get_member (o, columns->pdata[c]));
}

/* Objects (one array of them, or a single one) as rows; hints sized from the body length. */
static EvdRows *
evd_json_rows_of_objects (JsonObject *const *objects, guint n, gsize len)
{
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GPtrArray) columns = g_ptr_array_new ();
  EvdRows *rows;

  for (guint i = 0; i < n; i++)
    evd_json_rows_collect_keys (objects[i], seen, columns);
  rows = evd_rows_new_sized (columns->len, (const char *const *) columns->pdata,
                             (n + 1) * columns->len, len);
  for (guint i = 0; i < n; i++)
    evd_json_rows_add_object (rows, objects[i], columns);
  return rows;
}

static EvdRows *
evd_json_rows_of_array (JsonArray *a, gsize len)
{
  guint n = json_array_get_length (a);
  EvdRows *rows;

  if (n == 0)
    return evd_rows_new (1, evd_json_rows_value_column);
  if (evd_json_rows_all_objects (a)) {
    g_autofree JsonObject **objects = g_new (JsonObject *, n);

    for (guint i = 0; i < n; i++)
      objects[i] = json_array_get_object_element (a, i);
    return evd_json_rows_of_objects (objects, n, len);
  }
  rows = evd_rows_new_sized (1, evd_json_rows_value_column, n + 1, len);
  for (guint i = 0; i < n; i++)
    evd_json_rows_add_cell (rows, json_array_get_element (a, i));
  return rows;
}

static EvdRows *
evd_json_rows_of_node (JsonNode *node, gsize len)
{
  EvdRows *rows;

  switch (JSON_NODE_TYPE (node)) {
  case JSON_NODE_ARRAY:
    return evd_json_rows_of_array (json_node_get_array (node), len);
  case JSON_NODE_OBJECT: {
    JsonObject *o = json_node_get_object (node);
    return evd_json_rows_of_objects (&o, 1, len);
  }
  case JSON_NODE_NULL:
    return evd_rows_new (1, evd_json_rows_value_column);
  default:
    rows = evd_rows_new (1, evd_json_rows_value_column);
    evd_json_rows_add_cell (rows, node);
    return rows;
  }
}

/* Follows the dotted path from the root; NULL with an error naming the key at fault. */
static JsonNode *
evd_json_rows_find (JsonNode *root, const char *path, GError **error)
{
  g_auto (GStrv) keys = NULL;
  JsonNode *node = root;
  g_autoptr (GString) walked = g_string_new (NULL);

  if (path == NULL || path[0] == '\0')
    return root;
  keys = g_strsplit (path, ".", -1);
  for (guint i = 0; keys[i] != NULL; i++) {
    if (!JSON_NODE_HOLDS_OBJECT (node)) {
      if (walked->len == 0)
        g_set_error (error, EVD_JSON_ROWS_ERROR, EVD_JSON_ROWS_ERROR_PATH,
                     "rows path \"%s\": the response is not an object", path);
      else
        g_set_error (error, EVD_JSON_ROWS_ERROR, EVD_JSON_ROWS_ERROR_PATH,
                     "rows path \"%s\": \"%s\" is not an object", path, walked->str);
      return NULL;
    }
    node = json_object_get_member (json_node_get_object (node), keys[i]);
    g_string_append_printf (walked, "%s%s", i ? "." : "", keys[i]);
    if (node == NULL) {
      g_set_error (error, EVD_JSON_ROWS_ERROR, EVD_JSON_ROWS_ERROR_PATH,
                   "rows path \"%s\": no \"%s\" in the response", path, walked->str);
      return NULL;
    }
  }
  return node;
}

EvdRows *
evd_json_rows_parse (const char *json, gsize len, const char *path, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) local = NULL;
  JsonNode *node;

  if (len > G_MAXSSIZE || !json_parser_load_from_data (parser, json, (gssize) len, &local)) {
    g_set_error (error, EVD_JSON_ROWS_ERROR, EVD_JSON_ROWS_ERROR_SYNTAX, "not JSON: %s",
                 local ? local->message : "too long");
    return NULL;
  }
  node = json_parser_get_root (parser);
  if (node == NULL) {
    g_set_error_literal (error, EVD_JSON_ROWS_ERROR, EVD_JSON_ROWS_ERROR_SYNTAX,
                         "not JSON: the body is empty");
    return NULL;
  }
  node = evd_json_rows_find (node, path, error);
  return node != NULL ? evd_json_rows_of_node (node, len) : NULL;
}

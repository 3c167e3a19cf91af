/* evd_json_rows: JSON to EvdRows, as evd_json_rows.h describes.
 *
 * Two readers give the same rows. The fast one reads the document into a flat token array
 * (storage/evd_json_tape.c: no allocation for a small answer) and builds the rows from it; it
 * declines whatever is not plain JSON (malformed, deep, an integer beyond int64, a key with
 * an escape, more than EVD_JSON_ROWS_FAST_COLUMNS columns, a missing rows path, ...) and the
 * document then goes to json-glib's parser, the reference: its tree, its messages. So every
 * document that is not plain JSON gets exactly the answer it always had, and for plain JSON
 * tests/unit/test_json_rows checks that both give the same rows over thousands of documents.
 *
 * json-glib's tree, for an array of objects: two passes, the first collects the columns (every
 * key, first-seen order), the second fills each row by looking each column up in the object,
 * so a key missing from an object is a null and the key order inside an object does not
 * matter. The fast path does the same over the tape; a key that repeats inside one object
 * keeps its first place and its last value, as json-glib's objects do.
 */
#include "evd_json_rows.h"
#include "evd_json_tape.h"
#include "evd_quark.h"

#include <json-glib/json-glib.h>
#include <string.h>

EVD_DEFINE_QUARK (evd-json-rows-error-quark, evd_json_rows_error)

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
evd_json_rows_parse_glib (const char *json, gsize len, const char *path, GError **error)
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

/* ---- The fast path, over a token tape. ---- */

/* Columns the fast path finds a key among by comparing it with each: a wider table goes to
 * json-glib (its hash tables), so that no document costs columns x keys comparisons. */
#define EVD_JSON_ROWS_FAST_COLUMNS 64

typedef struct {
  const char *json;
  EvdJsonTape tape;
  GString *scratch;         /* an escaped string's text; NULL until one comes */
} EvdJsonRowsFast;

/* A cell from token i; FALSE for what json-glib should judge (an escape it treats apart). */
static gboolean
evd_json_rows_fast_cell (EvdJsonRowsFast *f, EvdRows *rows, guint i)
{
  const EvdJsonTapeToken *t = &f->tape.tokens[i];

  switch (t->type) {
  case EVD_JSON_TAPE_NULL:
    evd_rows_add_null (rows);
    return TRUE;
  case EVD_JSON_TAPE_FALSE:
  case EVD_JSON_TAPE_TRUE:
    evd_rows_add_int (rows, t->type == EVD_JSON_TAPE_TRUE);
    return TRUE;
  case EVD_JSON_TAPE_INT:
    evd_rows_add_int (rows, t->v.i);
    return TRUE;
  case EVD_JSON_TAPE_REAL:
    evd_rows_add_real (rows, t->v.r);
    return TRUE;
  case EVD_JSON_TAPE_STRING:
    if (!t->escaped) {
      evd_rows_add_text (rows, f->json + t->start, t->len);   /* UTF-8, checked by the tape */
      return TRUE;
    }
    if (f->scratch == NULL)
      f->scratch = g_string_sized_new (t->len);
    g_string_truncate (f->scratch, 0);
    if (!evd_json_tape_unescape (f->json, t, f->scratch))
      return FALSE;
    evd_rows_add_text (rows, f->scratch->str, (gssize) f->scratch->len);
    return TRUE;
  default: {
    /* A nested value: its JSON text as json-glib writes it (the reference's number format,
     * escapes and key order), from json-glib itself. Rare in rows, so its cost is. */
    g_autoptr (JsonParser) parser = json_parser_new_immutable ();

    if (!json_parser_load_from_data (parser, f->json + t->start, t->len, NULL) ||
        json_parser_get_root (parser) == NULL)
      return FALSE;
    evd_json_rows_add_cell (rows, json_parser_get_root (parser));
    return TRUE;
  }
  }
}

/* The token at `path` (keys joined by dots), or -1 when it is missing, when an object on the
 * way has an escaped key, or the way crosses a non-object: json-glib then says what is wrong.
 * A key that repeats: its last value, as json-glib's objects keep. */
static gint
evd_json_rows_fast_find (const EvdJsonRowsFast *f, const char *path)
{
  const EvdJsonTapeToken *tokens = f->tape.tokens;
  const char *key = path;
  guint node = 0;

  if (path == NULL || path[0] == '\0')
    return 0;
  while (key != NULL) {
    const char *dot = strchr (key, '.');
    gsize klen = dot != NULL ? (gsize) (dot - key) : strlen (key);
    gint found = -1;
    guint i = node + 1;

    if (tokens[node].type != EVD_JSON_TAPE_OBJECT)
      return -1;
    for (guint m = 0; m < tokens[node].n; m++) {
      if (tokens[i].escaped)
        return -1;
      if (tokens[i].len == klen && memcmp (f->json + tokens[i].start, key, klen) == 0)
        found = (gint) i + 1;
      i = evd_json_tape_next (&f->tape, i + 1);
    }
    if (found < 0)
      return -1;
    node = (guint) found;
    key = dot != NULL ? dot + 1 : NULL;
  }
  return (gint) node;
}

/* The column of the key token k among `keys` (tokens of the first key of each column), added
 * when new; -1 past EVD_JSON_ROWS_FAST_COLUMNS or for an escaped key. */
static gint
evd_json_rows_fast_column (const EvdJsonRowsFast *f, guint k, guint *keys, guint *n_keys)
{
  const EvdJsonTapeToken *tokens = f->tape.tokens, *t = &tokens[k];

  if (t->escaped)
    return -1;
  for (guint c = 0; c < *n_keys; c++)
    if (tokens[keys[c]].len == t->len &&
        memcmp (f->json + tokens[keys[c]].start, f->json + t->start, t->len) == 0)
      return (gint) c;
  if (*n_keys == EVD_JSON_ROWS_FAST_COLUMNS)
    return -1;
  keys[*n_keys] = k;
  return (gint) (*n_keys)++;
}

/* Objects as rows: `objects` holds the n objects' token indices. NULL: json-glib's call. */
static EvdRows *
evd_json_rows_fast_objects (EvdJsonRowsFast *f, const guint *objects, guint n, gsize len)
{
  const EvdJsonTapeToken *tokens = f->tape.tokens;
  guint keys[EVD_JSON_ROWS_FAST_COLUMNS], n_keys = 0;
  gint slot[EVD_JSON_ROWS_FAST_COLUMNS];
  const char *names[EVD_JSON_ROWS_FAST_COLUMNS];
  g_autofree char *name_text = NULL;
  gsize name_bytes = 0;
  g_autoptr (EvdRows) rows = NULL;

  /* The columns: every key, first-seen order; each key token keeps its column in its `n`
   * (unused for a string), so that the rows below need not search again. */
  for (guint o = 0; o < n; o++) {
    guint i = objects[o] + 1;

    for (guint m = 0; m < tokens[objects[o]].n; m++) {
      gint c = evd_json_rows_fast_column (f, i, keys, &n_keys);

      if (c < 0)
        return NULL;
      f->tape.tokens[i].n = (guint32) c;
      i = evd_json_tape_next (&f->tape, i + 1);
    }
  }
  for (guint c = 0; c < n_keys; c++)
    name_bytes += tokens[keys[c]].len + 1;
  name_text = g_malloc (name_bytes + 1);
  name_bytes = 0;
  for (guint c = 0; c < n_keys; c++) {
    names[c] = name_text + name_bytes;
    memcpy (name_text + name_bytes, f->json + tokens[keys[c]].start, tokens[keys[c]].len);
    name_bytes += tokens[keys[c]].len;
    name_text[name_bytes++] = '\0';
  }
  rows = evd_rows_new_sized (n_keys, names, (n + 1) * n_keys, len);

  /* The rows: each object's values by column (a key's last value wins), nulls for the rest. */
  for (guint o = 0; o < n; o++) {
    guint i = objects[o] + 1;

    for (guint c = 0; c < n_keys; c++)
      slot[c] = -1;
    for (guint m = 0; m < tokens[objects[o]].n; m++) {
      slot[tokens[i].n] = (gint) i + 1;
      i = evd_json_tape_next (&f->tape, i + 1);
    }
    for (guint c = 0; c < n_keys; c++) {
      if (slot[c] < 0)
        evd_rows_add_null (rows);
      else if (!evd_json_rows_fast_cell (f, rows, (guint) slot[c]))
        return NULL;
    }
  }
  return g_steal_pointer (&rows);
}

/* The rows of the value at token `node`, as evd_json_rows_of_node makes them from a tree. */
static EvdRows *
evd_json_rows_fast_node (EvdJsonRowsFast *f, guint node, gsize len)
{
  const EvdJsonTapeToken *t = &f->tape.tokens[node];
  g_autoptr (EvdRows) rows = NULL;

  if (t->type == EVD_JSON_TAPE_OBJECT)
    return evd_json_rows_fast_objects (f, &node, 1, len);
  if (t->type == EVD_JSON_TAPE_NULL || (t->type == EVD_JSON_TAPE_ARRAY && t->n == 0))
    return evd_rows_new (1, evd_json_rows_value_column);
  if (t->type == EVD_JSON_TAPE_ARRAY) {
    g_autofree guint *elements = g_new (guint, t->n);
    gboolean all_objects = TRUE;
    guint i = node + 1;

    for (guint e = 0; e < t->n; e++) {
      elements[e] = i;
      all_objects &= f->tape.tokens[i].type == EVD_JSON_TAPE_OBJECT;
      i = evd_json_tape_next (&f->tape, i);
    }
    if (all_objects)
      return evd_json_rows_fast_objects (f, elements, t->n, len);
    rows = evd_rows_new_sized (1, evd_json_rows_value_column, t->n + 1, len);
    for (guint e = 0; e < t->n; e++)
      if (!evd_json_rows_fast_cell (f, rows, elements[e]))
        return NULL;
    return g_steal_pointer (&rows);
  }
  rows = evd_rows_new (1, evd_json_rows_value_column);
  return evd_json_rows_fast_cell (f, rows, node) ? g_steal_pointer (&rows) : NULL;
}

EvdRows *
evd_json_rows_parse_tape (const char *json, gsize len, const char *path)
{
  EvdJsonRowsFast f = { .json = json };
  EvdRows *rows = NULL;
  gint node;

  evd_json_tape_init (&f.tape);
  if (evd_json_tape_parse (&f.tape, json, len) &&
      (node = evd_json_rows_fast_find (&f, path)) >= 0)
    rows = evd_json_rows_fast_node (&f, (guint) node, len);
  evd_json_tape_clear (&f.tape);
  if (f.scratch != NULL)
    g_string_free (f.scratch, TRUE);
  return rows;
}

EvdRows *
evd_json_rows_parse (const char *json, gsize len, const char *path, GError **error)
{
  EvdRows *rows = evd_json_rows_parse_tape (json, len, path);

  return rows != NULL ? rows : evd_json_rows_parse_glib (json, len, path, error);
}

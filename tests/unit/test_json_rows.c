/* test_json_rows: JSON to rows (storage/evd_json_rows.c), each shape the README promises: an
 * array of objects with the union of keys in first-seen order and nulls for missing keys, an
 * array of scalars, one object, a scalar, null and empty arrays, every cell type, nested
 * values as JSON text, the rows path, and the errors (not JSON, absent path, path through a
 * non-object). */
#include <string.h>

#include "evd_json_rows.h"

/* The table as one line: "cols|cell,cell|cell,cell", cells as i:1 r:1.5 t:abc n */
static char *
dump (const EvdRows *rows)
{
  GString *s = g_string_new (NULL);

  for (guint c = 0; c < evd_rows_n_columns (rows); c++)
    g_string_append_printf (s, "%s%s", c ? "," : "", evd_rows_column (rows, c));
  for (guint r = 0; r < evd_rows_n_rows (rows); r++) {
    g_string_append_c (s, '|');
    for (guint c = 0; c < evd_rows_n_columns (rows); c++) {
      const EvdCell *cell = evd_rows_cell (rows, r, c);

      if (c)
        g_string_append_c (s, ',');
      switch (cell->kind) {
      case EVD_VALUE_NULL: g_string_append (s, "n"); break;
      case EVD_VALUE_INT: g_string_append_printf (s, "i:%" G_GINT64_FORMAT, cell->v.i); break;
      case EVD_VALUE_REAL: g_string_append_printf (s, "r:%g", cell->v.r); break;
      case EVD_VALUE_TEXT:
        g_string_append_printf (s, "t:%s", (const char *) evd_rows_cell_data (rows, cell));
        break;
      default: g_string_append (s, "?"); break;
      }
    }
  }
  return g_string_free (s, FALSE);
}

static void
check (const char *json, const char *path, const char *expected)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdRows) rows = evd_json_rows_parse (json, strlen (json), path, &error);
  g_autofree char *got = NULL;

  g_assert_no_error (error);
  got = dump (rows);
  g_assert_cmpstr (got, ==, expected);
}

static void
check_error (const char *json, const char *path, int code, const char *in_message)
{
  g_autoptr (GError) error = NULL;
  EvdRows *rows = evd_json_rows_parse (json, strlen (json), path, &error);

  g_assert_null (rows);
  g_assert_error (error, EVD_JSON_ROWS_ERROR, code);
  g_assert_nonnull (strstr (error->message, in_message));
}

static void
test_array_of_objects (void)
{
  /* Union of keys, first-seen order; missing keys are null whatever the order inside. */
  check ("[{\"id\":1,\"name\":\"a\"},{\"name\":\"b\",\"price\":2.5},{\"id\":3}]", NULL,
         "id,name,price|i:1,t:a,n|n,t:b,r:2.5|i:3,n,n");
}

static void
test_array_of_scalars (void)
{
  check ("[1, 2.5, \"x\", true, false, null]", NULL, "value|i:1|r:2.5|t:x|i:1|i:0|n");
  /* Objects mixed with scalars: one column `value`, the objects as JSON text. */
  check ("[{\"a\":1}, 2]", NULL, "value|t:{\"a\":1}|i:2");
}

static void
test_object_is_one_row (void)
{
  check ("{\"b\":1,\"a\":\"x\",\"c\":null}", NULL, "b,a,c|i:1,t:x,n");
}

static void
test_scalars_null_and_empty (void)
{
  check ("42", NULL, "value|i:42");
  check ("\"hi\"", NULL, "value|t:hi");
  check ("null", NULL, "value");
  check ("[]", NULL, "value");
  check ("{}", NULL, "");
}

static void
test_cell_types (void)
{
  check ("{\"i\":-9007199254740993,\"r\":1e3,\"f\":0.1,\"t\":true,\"u\":\"\\u00e9\\n\"}", NULL,
         "i,r,f,t,u|i:-9007199254740993,r:1000,r:0.1,i:1,t:\xc3\xa9\n");
}

static void
test_nested_values_are_json_text (void)
{
  check ("[{\"id\":1,\"tags\":[\"a\",\"b\"],\"meta\":{\"k\":[1,{\"x\":null}]}}]", NULL,
         "id,tags,meta|i:1,t:[\"a\",\"b\"],t:{\"k\":[1,{\"x\":null}]}");
}

static void
test_rows_path (void)
{
  const char *doc = "{\"data\":{\"total\":2,\"items\":[{\"id\":7},{\"id\":8}]},\"ok\":true}";

  check (doc, "data.items", "id|i:7|i:8");
  check (doc, "data", "total,items|i:2,t:[{\"id\":7},{\"id\":8}]");
  check (doc, "data.total", "value|i:2");
  check (doc, "", "data,ok|t:{\"total\":2,\"items\":[{\"id\":7},{\"id\":8}]},i:1");
}

static void
test_errors_name_the_cause (void)
{
  const char *doc = "{\"data\":{\"items\":[1]},\"list\":[1]}";

  check_error (doc, "data.rows", EVD_JSON_ROWS_ERROR_PATH, "no \"data.rows\" in the response");
  check_error (doc, "list.items", EVD_JSON_ROWS_ERROR_PATH, "\"list\" is not an object");
  check_error ("[1]", "data", EVD_JSON_ROWS_ERROR_PATH, "the response is not an object");
  check_error ("{\"a\": 1", NULL, EVD_JSON_ROWS_ERROR_SYNTAX, "not JSON");
  check_error ("<html>oops</html>", "data", EVD_JSON_ROWS_ERROR_SYNTAX, "not JSON");
  check_error ("", NULL, EVD_JSON_ROWS_ERROR_SYNTAX, "not JSON");
}

static void
test_path_syntax (void)
{
  g_assert_true (evd_json_rows_path_valid (NULL));
  g_assert_true (evd_json_rows_path_valid (""));
  g_assert_true (evd_json_rows_path_valid ("data.items"));
  g_assert_false (evd_json_rows_path_valid ("data..items"));
  g_assert_false (evd_json_rows_path_valid (".data"));
  g_assert_false (evd_json_rows_path_valid ("data."));
}

static void
test_many_rows (void)
{
  GString *json = g_string_new ("[");
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdRows) rows = NULL;

  for (int i = 0; i < 5000; i++)
    g_string_append_printf (json, "%s{\"n\":%d,\"s\":\"row %d\"}", i ? "," : "", i, i);
  g_string_append_c (json, ']');
  rows = evd_json_rows_parse (json->str, json->len, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (evd_rows_n_rows (rows), ==, 5000);
  g_assert_cmpint (evd_rows_cell (rows, 4999, 0)->v.i, ==, 4999);
  g_assert_cmpstr ((const char *) evd_rows_cell_data (rows, evd_rows_cell (rows, 4999, 1)), ==,
                   "row 4999");
  g_string_free (json, TRUE);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/json-rows/array-of-objects", test_array_of_objects);
  g_test_add_func ("/json-rows/array-of-scalars", test_array_of_scalars);
  g_test_add_func ("/json-rows/object-is-one-row", test_object_is_one_row);
  g_test_add_func ("/json-rows/scalars-null-and-empty", test_scalars_null_and_empty);
  g_test_add_func ("/json-rows/cell-types", test_cell_types);
  g_test_add_func ("/json-rows/nested-values-are-json-text", test_nested_values_are_json_text);
  g_test_add_func ("/json-rows/rows-path", test_rows_path);
  g_test_add_func ("/json-rows/errors-name-the-cause", test_errors_name_the_cause);
  g_test_add_func ("/json-rows/path-syntax", test_path_syntax);
  g_test_add_func ("/json-rows/many-rows", test_many_rows);
  return g_test_run ();
}

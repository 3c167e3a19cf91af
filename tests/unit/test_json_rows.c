/* test_json_rows: JSON to rows (storage/evd_json_rows.c), each shape the README promises: an
 * array of objects with the union of keys in first-seen order and nulls for missing keys, an
 * array of scalars, one object, a scalar, null and empty arrays, every cell type, nested
 * values as JSON text, the rows path, and the errors (not JSON, absent path, path through a
 * non-object). Then the fast path (storage/evd_json_tape.c) against json-glib's tree, the
 * reference: the same rows, cell for cell and bit for bit, over thousands of generated plain
 * documents, and the same answer (rows or error message) for documents at JSON's edges. */
#include <math.h>
#include <string.h>

#include "evd_json_rows.h"
#include "evd_json_tape.h"

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


/* ---- The fast path against json-glib's tree. ---- */

/* NULL when both tables are the same (columns, cells, kinds, values: reals bit for bit, text
 * byte for byte), else what differs. */
static char *
rows_diff (const EvdRows *a, const EvdRows *b)
{
  guint na, nb;
  const EvdCell *ca = evd_rows_cells (a, &na), *cb = evd_rows_cells (b, &nb);

  if (evd_rows_n_columns (a) != evd_rows_n_columns (b))
    return g_strdup_printf ("%u columns against %u", evd_rows_n_columns (a),
                            evd_rows_n_columns (b));
  if (na != nb)
    return g_strdup_printf ("%u cells against %u", na, nb);
  for (guint i = 0; i < na; i++) {
    if (ca[i].kind != cb[i].kind)
      return g_strdup_printf ("cell %u: kind %d against %d", i, ca[i].kind, cb[i].kind);
    switch (ca[i].kind) {
    case EVD_VALUE_INT:
      if (ca[i].v.i != cb[i].v.i)
        return g_strdup_printf ("cell %u: %" G_GINT64_FORMAT " against %" G_GINT64_FORMAT, i,
                                ca[i].v.i, cb[i].v.i);
      break;
    case EVD_VALUE_REAL:
      if (memcmp (&ca[i].v.r, &cb[i].v.r, sizeof (double)) != 0)
        return g_strdup_printf ("cell %u: %.17g against %.17g", i, ca[i].v.r, cb[i].v.r);
      break;
    case EVD_VALUE_TEXT:
    case EVD_VALUE_BLOB:
      if (ca[i].len != cb[i].len ||
          memcmp (evd_rows_cell_data (a, &ca[i]), evd_rows_cell_data (b, &cb[i]), ca[i].len))
        return g_strdup_printf ("cell %u: \"%s\" against \"%s\"", i,
                                (const char *) evd_rows_cell_data (a, &ca[i]),
                                (const char *) evd_rows_cell_data (b, &cb[i]));
      break;
    default:
      break;
    }
  }
  return NULL;
}

/* evd_json_rows_parse() and json-glib alone give the same answer for `json` at `path`:
 * both the same rows, or both an error with the same code and message. Returns whether the
 * fast path answered (rather than leaving the document to json-glib). */
static gboolean
same_as_glib (const char *json, gsize len, const char *path)
{
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;
  g_autoptr (EvdRows) tape = evd_json_rows_parse_tape (json, len, path);
  g_autoptr (EvdRows) got = evd_json_rows_parse (json, len, path, &e1);
  g_autoptr (EvdRows) want = evd_json_rows_parse_glib (json, len, path, &e2);
  g_autofree char *diff = NULL;

  if (want == NULL) {
    if (got != NULL || tape != NULL)
      g_error ("json-glib refuses (%s) what the fast path reads: %.*s (path %s)", e2->message,
               (int) len, json, path);
    g_assert_error (e1, e2->domain, e2->code);
    g_assert_cmpstr (e1->message, ==, e2->message);
    return FALSE;
  }
  g_assert_no_error (e1);
  if ((diff = rows_diff (got, want)) != NULL)
    g_error ("%s: %.*s (path %s)", diff, (int) len, json, path);
  return tape != NULL;
}

static void
gen_ws (GRand *r, GString *out)
{
  static const char *const ws[] = { "", "", "", " ", "\n", "\t", "\r\n", "  " };

  g_string_append (out, ws[g_rand_int_range (r, 0, G_N_ELEMENTS (ws))]);
}

static void
gen_string (GRand *r, GString *out, gboolean key)
{
  static const char *const keys[] = {
    "id", "name", "price_cents", "tags", "a", "b", "x y", "\xc3\xbc" "n" "\xc3\xaf" "c" "\xc3\xb6" "de",
    "data", "items",
  };
  static const char *const pieces[] = {
    "a", "Kettle", " ", "0", "\\n", "\\t", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\r",
    "\\u00e9", "\\u20AC", "\\ud83d\\ude00", "\\u0041", "\xc3\xa9", "\xe2\x82\xac",
    "\xf0\x9f\x98\x80", "'", "{", "]", ",", ":", "\\u001f", "\x7f",
  };

  g_string_append_c (out, '"');
  if (key) {
    g_string_append (out, keys[g_rand_int_range (r, 0, G_N_ELEMENTS (keys))]);
  } else {
    for (int n = g_rand_int_range (r, 0, 6); n > 0; n--)
      g_string_append (out, pieces[g_rand_int_range (r, 0, G_N_ELEMENTS (pieces))]);
  }
  g_string_append_c (out, '"');
}

static void
gen_number (GRand *r, GString *out)
{
  static const char *const fixed[] = {
    "0", "-0", "1", "-1", "9223372036854775807", "-9223372036854775807", "0.0", "-0.0",
    "1.5", "0.1", "1e5", "1E5", "1e+5", "1e-5", "2.5E-3", "-12.75e2", "1e308", "5e-324",
    "123456789012345678", "0.30000000000000004", "1.7976931348623157e308", "1e0", "10",
  };

  switch (g_rand_int_range (r, 0, 4)) {
  case 0:
    g_string_append (out, fixed[g_rand_int_range (r, 0, G_N_ELEMENTS (fixed))]);
    break;
  case 1:
    g_string_append_printf (out, "%" G_GINT64_FORMAT,
                            (gint64) (g_rand_int (r) | (guint64) g_rand_int (r) << 31) *
                            (g_rand_boolean (r) ? -1 : 1));
    break;
  case 2:
    g_string_append_printf (out, "%d", g_rand_int_range (r, -1000, 1000));
    break;
  default: {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    double d = g_rand_double_range (r, -1e6, 1e6) * pow (10, g_rand_int_range (r, -20, 20));

    g_ascii_formatd (buf, sizeof buf, g_rand_boolean (r) ? "%.17g" : "%.6e", d);
    g_string_append (out, buf);
    if (strpbrk (buf, ".eE") == NULL)
      g_string_append (out, ".5");
  }
  }
}

static void gen_value (GRand *r, GString *out, int depth);

static void
gen_object (GRand *r, GString *out, int depth)
{
  g_string_append_c (out, '{');
  for (int n = g_rand_int_range (r, 0, 5), i = 0; i < n; i++) {
    if (i)
      g_string_append_c (out, ',');
    gen_ws (r, out);
    gen_string (r, out, TRUE);
    gen_ws (r, out);
    g_string_append_c (out, ':');
    gen_ws (r, out);
    gen_value (r, out, depth + 1);
    gen_ws (r, out);
  }
  g_string_append_c (out, '}');
}

static void
gen_value (GRand *r, GString *out, int depth)
{
  int kind = g_rand_int_range (r, 0, depth > 3 ? 6 : 9);

  switch (kind) {
  case 0: g_string_append (out, "null"); break;
  case 1: g_string_append (out, g_rand_boolean (r) ? "true" : "false"); break;
  case 2: case 3: gen_number (r, out); break;
  case 4: case 5: gen_string (r, out, FALSE); break;
  case 6: case 7:
    gen_object (r, out, depth);
    break;
  default:
    g_string_append_c (out, '[');
    for (int n = g_rand_int_range (r, 0, 5), i = 0; i < n; i++) {
      if (i)
        g_string_append_c (out, ',');
      gen_ws (r, out);
      /* Often an array of objects: the rows shape. */
      if (g_rand_int_range (r, 0, 3) > 0)
        gen_object (r, out, depth + 1);
      else
        gen_value (r, out, depth + 1);
      gen_ws (r, out);
    }
    g_string_append_c (out, ']');
  }
}

static void
test_fast_path_same_as_json_glib (void)
{
  static const char *const paths[] = { NULL, "data", "data.items", "items", "a.b", "id" };
  g_autoptr (GRand) r = g_rand_new_with_seed (20261203);
  g_autoptr (GString) doc = g_string_new (NULL);
  guint fast = 0, compared = 0;

  for (int d = 0; d < 4000; d++) {
    g_string_truncate (doc, 0);
    gen_ws (r, doc);
    if (d % 2 == 0) {
      /* An answer shaped like a service's: {"data":{"items":[...]}, ...} */
      g_string_append (doc, "{\"user_id\":1,\"data\":{\"items\":[");
      for (int n = g_rand_int_range (r, 0, 8), i = 0; i < n; i++) {
        if (i)
          g_string_append_c (doc, ',');
        gen_object (r, doc, 2);
      }
      g_string_append (doc, "]}}");
    } else {
      gen_value (r, doc, 0);
    }
    gen_ws (r, doc);
    for (guint p = 0; p < G_N_ELEMENTS (paths); p++) {
      fast += same_as_glib (doc->str, doc->len, paths[p]);
      compared++;
    }
  }
  /* The fast path must have answered most of them, or this compared nothing. */
  g_assert_cmpuint (fast, >, compared / 3);
  g_test_message ("%u of %u answered by the fast path", fast, compared);
}

static void
test_fast_path_at_json_edges (void)
{
  static const char *const docs[] = {
    "", " ", "{", "}", "[", "[1,]", "{\"a\":1,}", "[01]", "[1.]", "[.5]", "[-]", "[1e]",
    "[+1]", "[\"\\x\"]", "[\"\\u12\"]", "[\"a\nb\"]", "[\"\\u0000\"]", "[\"a\\u0000b\"]",
    "[\"\\ud800\"]", "[\"\\udc00\"]", "[\"\\ud83d\\ude00\"]",
    "[9223372036854775807]", "[9223372036854775808]", "[-9223372036854775808]",
    "[99999999999999999999999]", "[1e999]", "[-1e999]", "[true false]", "nul", "[nan]",
    "[NaN]", "[Infinity]", "// c\n[1]", "/* c */ [1]", "[1] x", "[1]\n", "\xef\xbb\xbf[1]",
    "[\"\xff\"]", "[\"\xc3\"]", "[\"\xed\xa0\x80\"]", "{\"\":1}", "[{\"\":1}]",
    "[{\"a\":1},2]", "[[1,2],{\"a\":[3]}]", "{\"a\":1,\"a\":2}", "[{\"a\":1,\"b\":2,\"a\":3}]",
    "[{\"a\":1},{\"b\":2,\"a\":{\"x\":1,\"x\":2}}]", "'a'", "[\"\\u00e9\"]", "{\"data\":5}",
    "[{}]", "{}", "[{},{}]", "[[]]", "[{\"a\\u0062\":1,\"ab\":2}]", "{\"d\\u0061ta\":[1]}",
    "[1.0]", "[1.10]", "[-0]", "[0e0]", "[\"\\/\"]", "[\"\t\"]", "[\"\x7f\"]", "\"\"",
    "[1,2", "{\"a\"}", "{\"a\":}", "{1:2}", "[\"a\" \"b\"]", "[null,]", "true", "false",
    "{\"data\":{\"items\":[{\"id\":1}]}}  \r\n",
    /* Numbers: exponent forms, signed zeros, the int64 boundaries, underflow and overflow to
     * infinity, what RFC 8259 forbids (leading zeros, hex, a bare sign or point). */
    "[1e05]", "[1.5e+10]", "[-0e0]", "[-0.0e-0]", "[0.1e1]", "[1e-400]", "[4.9e-324]",
    "[2.2250738585072011e-308]", "[1.7976931348623159e308]", "[123456789012345678901234567890.5]",
    "[9223372036854775807.0]", "[-9223372036854775807]", "[-9223372036854775809]",
    "[18446744073709551615]", "[18446744073709551616]", "[1e+]", "[1e-]", "[-01]", "[00]",
    "[0x10]", "[1.5.5]", "[--1]", "[- 1]", "[1E5,1e5,1E+5]", "-0", "1.5", "  7  ",
    "[0.000000000000000000000000000000000000000000000000000000000000001]",
    /* Strings: escapes at the edges of Unicode, escapes cut short, a NUL, noncharacters. */
    "[\"\\uD83D\\uDE00\"]", "[\"\\udbff\\udfff\"]", "[\"\\ud800\\udc00\"]",
    "[\"\\uFFFF\\uFFFE\\u0001\\u007f\\u0080\\u07ff\\u0800\"]", "[\"\\u00\"]", "[\"\\u",
    "[\"\\", "[\"abc", "\"", "[\"\\ude00\"]", "[\"a\\ud83d\"]", "[\"\"]",
    "{\"a\":\"\\u0000\"}", "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
    /* UTF-8: overlong forms, beyond U+10FFFF, encoded surrogates, a cut sequence, a raw
     * noncharacter, the last code point. */
    "[\"\xc0\xaf\"]", "[\"\xe0\x80\xaf\"]", "[\"\xf4\x8f\xbf\xbf\"]", "[\"\xf4\x90\x80\x80\"]",
    "[\"\xf5\x80\x80\x80\"]", "[\"\xef\xbf\xbe\"]", "[\"\xf8\x88\x80\x80\x80\"]",
    "[\"\xe2\x82\"]", "[\"\xe2\x82\\n\"]", "{\"\xc3\xbc\":1}", "{\"\xff\":1}",
    /* Whitespace JSON does not have (form feed, vertical tab, NBSP), and every kind it has. */
    "\f[1]", "\v[1]", "[1\f]", "\xc2\xa0[1]", "[1]\r", "\r\n[\r\n1\r\n]\r\n",
    "\t{\t\"a\"\t:\t1\t}\t",
    /* Duplicate keys: first place, last value, along a rows path too. */
    "{\"a\":1,\"a\":null}", "{\"data\":1,\"data\":{\"items\":[{\"id\":1}]}}",
    "{\"data\":{\"items\":[{\"id\":1}]},\"data\":2}",
    "[{\"a\":1},{\"a\":2,\"a\":3,\"b\":4,\"b\":5}]", "{\"a.b\":1}", "{\" \":1}",
    /* Literals, nested empties, mixed shapes. */
    "[tru]", "[nulll]", "[True]", "[true,false,null]", "[{\"a\":[]},{\"a\":{}}]",
    "[[],{}]", "{\"a\":{\"b\":[1,{\"c\":\"\\u00e9\"}]}}", "[{\"a\":1}{\"a\":2}]",
    "{\"a\":1 \"b\":2}", "{\"a\" 1}", "[1,,2]", "[,1]", "{,}",
    /* Not here, for LeakSanitizer: json-glib 1.6 leaks nodes on two documents one after the
     * other (it answers with the first) and on a high surrogate followed by another escape
     * than a low one ("\ud800\u0041"); the fast path leaves both to it, as before. */
  };
  static const char *const paths[] = { NULL, "data", "data.items", "a", "a.b" };
  g_autoptr (GString) deep = g_string_new (NULL);

  for (guint d = 0; d < G_N_ELEMENTS (docs); d++)
    for (guint p = 0; p < G_N_ELEMENTS (paths); p++)
      same_as_glib (docs[d], strlen (docs[d]), paths[p]);
  /* Nesting around the tape's depth limit, and a table wider than its column limit. */
  for (int depth = EVD_JSON_TAPE_MAX_DEPTH - 2; depth <= EVD_JSON_TAPE_MAX_DEPTH + 2; depth++) {
    g_string_truncate (deep, 0);
    for (int i = 0; i < depth; i++)
      g_string_append_c (deep, '[');
    for (int i = 0; i < depth; i++)
      g_string_append_c (deep, ']');
    same_as_glib (deep->str, deep->len, NULL);
  }
  g_string_assign (deep, "[{");
  for (int i = 0; i < 100; i++)
    g_string_append_printf (deep, "%s\"k%d\":%d", i ? "," : "", i, i);
  g_string_append (deep, "}]");
  same_as_glib (deep->str, deep->len, NULL);
  /* The tape outgrows its inline room. */
  g_string_assign (deep, "[");
  for (int i = 0; i < 3 * EVD_JSON_TAPE_INLINE; i++)
    g_string_append_printf (deep, "%s{\"i\":%d,\"s\":\"\\u00e9%d\"}", i ? "," : "", i, i);
  g_string_append (deep, "]");
  g_assert_true (same_as_glib (deep->str, deep->len, NULL));
}

/* Every prefix of documents that hold each kind of token, each prefix in a buffer of exactly
 * its length (no NUL after it), so that a read past the end of the input is one AddressSanitizer
 * sees: the same answer as json-glib's (an error, for all but a few) and no read beyond. */
static void
test_fast_path_on_truncated_documents (void)
{
  static const char *const docs[] = {
    ("{\"data\":{\"items\":[{\"id\":-12,\"r\":1.5e-3,\"s\":\"a\\u00e9\\ud83d\\ude00\\n\xc3\xa9\","
     "\"t\":true,\"f\":false,\"n\":null,\"o\":{\"k\":[1,2]}},{\"id\":0}]}}"),  /* one document */
    " [ 1 , -0.5E+2 , \"x\\\"y\" , [ ] , { } , nul , 9223372036854775807 ] ",
    "\"\\u0041\\/\xf0\x9f\x98\x80\"",
  };

  for (guint d = 0; d < G_N_ELEMENTS (docs); d++)
    for (gsize len = 1; len <= strlen (docs[d]); len++) {
      g_autofree char *buf = g_memdup2 (docs[d], len);

      same_as_glib (buf, len, NULL);
      same_as_glib (buf, len, "data.items");
    }
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
  g_test_add_func ("/json-rows/fast-path-same-as-json-glib", test_fast_path_same_as_json_glib);
  g_test_add_func ("/json-rows/fast-path-at-json-edges", test_fast_path_at_json_edges);
  g_test_add_func ("/json-rows/fast-path-on-truncated-documents",
                   test_fast_path_on_truncated_documents);
  return g_test_run ();
}

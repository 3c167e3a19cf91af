/* test_http_text: what evdal writes into an HTTP request from a client's values
 * (storage/evd_http_text.c): templates refused with the offset at fault, values percent-encoded
 * so that they stay in their path segment or query value (separators, dot segments, NUL,
 * non-ASCII), each value type's text (reals as the shortest decimal that reads back the same),
 * null and missing params, header values that cannot split a line, form encoding. */
#include <math.h>
#include <string.h>

#include "evd_http_text.h"

static EvdValue
text (const char *s)
{
  return (EvdValue) { .kind = EVD_VALUE_TEXT, .data = s, .len = (guint32) strlen (s) };
}

/* The expansion of `tmpl` with params a and b. */
static char *
expand (const char *tmpl, EvdValue a, EvdValue b)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdHttpTextTemplate) t = evd_http_text_template_new (tmpl, &error);
  EvdParam params[] = { { "a", a }, { "b", b } };
  GString *out = g_string_new (NULL);
  const char *missing = NULL;

  g_assert_no_error (error);
  g_assert_true (evd_http_text_template_expand (t, params, 2, out, &missing));
  return g_string_free (out, FALSE);
}

static void
check (const char *tmpl, EvdValue a, EvdValue b, const char *expected)
{
  g_autofree char *got = expand (tmpl, a, b);

  g_assert_cmpstr (got, ==, expected);
}

static void
test_values_stay_in_their_segment_and_value (void)
{
  const char *t = "/u/{a}/x?q={b}&n=1";

  check (t, text ("plain"), text ("plain"), "/u/plain/x?q=plain&n=1");
  check (t, text ("a/b?c=d&e f#g"), text ("x&q=2#h ?"),
         "/u/a%2Fb%3Fc%3Dd%26e%20f%23g/x?q=x%26q%3D2%23h%20%3F&n=1");
  /* dot segments: '.' encoded in the path, kept in the query */
  check (t, text (".."), text ("1.5"), "/u/%2E%2E/x?q=1.5&n=1");
  check (t, text ("."), text (".."), "/u/%2E/x?q=..&n=1");
  /* CR, LF, '%', non-ASCII */
  check (t, text ("\r\nX: y"), text ("100%"), "/u/%0D%0AX%3A%20y/x?q=100%25&n=1");
  check (t, text ("Zo\xc3\xab"), text ("\xe6\xb8\xa1"), "/u/Zo%C3%AB/x?q=%E6%B8%A1&n=1");
  check (t, text (""), text (""), "/u//x?q=&n=1");
  check (t, text ("-_~"), text ("-_~."), "/u/-_~/x?q=-_~.&n=1");
}

static void
test_value_texts (void)
{
  const char *t = "/{a}?b={b}";
  EvdValue blob = { .kind = EVD_VALUE_BLOB, .data = "\x00\xff/", .len = 3 };
  EvdValue nul_text = { .kind = EVD_VALUE_TEXT, .data = "a\0b", .len = 3 };
  struct {
    double r;
    const char *text;
  } reals[] = {
    { 0.1, "0.1" }, { 1.5, "1.5" }, { 3.0, "3" }, { -2.5, "-2.5" }, { 1e300, "1e+300" },
    { 1.0 / 3, "0.3333333333333333" }, { 5e-324, "5e-324" }, { 123456789.125, "123456789.125" },
    { INFINITY, "inf" }, { -INFINITY, "-inf" }, { NAN, "nan" },
  };

  check (t, (EvdValue) { .kind = EVD_VALUE_INT, .i = G_MININT64 }, (EvdValue) {
           .kind = EVD_VALUE_INT, .i = 42 }, "/-9223372036854775808?b=42");
  check (t, blob, nul_text, "/%00%FF%2F?b=a%00b");
  for (guint i = 0; i < G_N_ELEMENTS (reals); i++) {
    g_autoptr (GString) s = g_string_new (NULL);
    EvdValue v = { .kind = EVD_VALUE_REAL, .r = reals[i].r };

    g_assert_true (evd_http_text_value (s, &v));
    g_assert_cmpstr (s->str, ==, reals[i].text);
    if (isfinite (reals[i].r))
      g_assert_cmpfloat (g_ascii_strtod (s->str, NULL), ==, reals[i].r);
  }
}

static void
test_null_or_missing_param_is_named (void)
{
  g_autoptr (EvdHttpTextTemplate) t = evd_http_text_template_new ("/{a}/{b}", NULL);
  EvdParam null_b[] = { { "a", text ("x") }, { "b", { .kind = EVD_VALUE_NULL } } };
  EvdParam only_a[] = { { "a", text ("x") } };
  g_autoptr (GString) out = g_string_new (NULL);
  const char *missing = NULL;

  g_assert_false (evd_http_text_template_expand (t, null_b, 2, out, &missing));
  g_assert_cmpstr (missing, ==, "b");
  missing = NULL;
  g_assert_false (evd_http_text_template_expand (t, only_a, 1, out, &missing));
  g_assert_cmpstr (missing, ==, "b");
}

static void
test_params_distinct_in_order (void)
{
  g_autoptr (EvdHttpTextTemplate) t =
    evd_http_text_template_new ("/{user_id}/x/{kind}?u={user_id}&l={limit}", NULL);

  g_assert_cmpuint (evd_http_text_template_n_params (t), ==, 3);
  g_assert_cmpstr (evd_http_text_template_param (t, 0), ==, "user_id");
  g_assert_cmpstr (evd_http_text_template_param (t, 1), ==, "kind");
  g_assert_cmpstr (evd_http_text_template_param (t, 2), ==, "limit");
}

static void
test_bad_templates_name_the_offset (void)
{
  struct {
    const char *tmpl, *message;
  } bad[] = {
    { "users/{a}", "must start with '/'" },
    { "/x y", "at offset 2, ' ' (0x20) is not URL text" },
    { "/x#frag", "at offset 2, '#'" },
    { "/x}", "at offset 2, '}'" },
    { "/x/{a", "at offset 3, expected {name}" },
    { "/x/{}", "at offset 3, expected {name}" },
    { "/x/{1a}", "at offset 3, expected {name}" },
    { "/x/{a b}", "at offset 3, expected {name}" },
    { "/x%2", "at offset 2, '%'" },
    { "/x%zz", "at offset 2, '%'" },
    { "/caf\xc3\xa9", "at offset 4, '?' (0xc3)" },
    { "/x\r\n", "at offset 2, '?' (0x0d)" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GError) error = NULL;

    g_assert_null (evd_http_text_template_new (bad[i].tmpl, &error));
    g_assert_error (error, EVD_HTTP_TEXT_ERROR, EVD_HTTP_TEXT_ERROR_TEMPLATE);
    if (strstr (error->message, bad[i].message) == NULL)
      g_error ("template %u: \"%s\" lacks \"%s\"", i, error->message, bad[i].message);
  }
  /* what is allowed: sub-delims, ':', '@', '%XX', several '?' */
  {
    g_autoptr (EvdHttpTextTemplate) ok =
      evd_http_text_template_new ("/a:b@c!$'()*+,;=/%2F?x=1&y=a?b", NULL);
    g_autoptr (EvdHttpTextTemplate) root = evd_http_text_template_new ("/", NULL);

    g_assert_nonnull (ok);
    g_assert_nonnull (root);
  }
}

static void
test_header_values_cannot_split_a_line (void)
{
  g_autofree char *plain = evd_http_text_header ("X-Request-Id", "abc-123_x.y:z/w");
  g_autofree char *crlf = evd_http_text_header ("X-Principal", "a\r\nX-Evil: 1");
  g_autofree char *other = evd_http_text_header ("X-Principal", "Zo\xc3\xab 100%\t\x7f");

  g_assert_cmpstr (plain, ==, "X-Request-Id: abc-123_x.y:z/w");
  g_assert_cmpstr (crlf, ==, "X-Principal: a%0D%0AX-Evil:%201");
  g_assert_cmpstr (other, ==, "X-Principal: Zo%C3%AB%20100%25%09%7F");
}

static void
test_form_encoding (void)
{
  const char *keys[] = { "tenant", "evil\r\nk", "a=b&c", NULL };
  const char *values[] = { "acme", "v\nw", "1 2", NULL };
  g_autoptr (GString) out = g_string_new (NULL);

  evd_http_text_form (out, keys, values);
  g_assert_cmpstr (out->str, ==, "tenant=acme&evil%0D%0Ak=v%0Aw&a%3Db%26c=1%202");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/http-text/values-stay-in-their-segment-and-value",
                   test_values_stay_in_their_segment_and_value);
  g_test_add_func ("/http-text/value-texts", test_value_texts);
  g_test_add_func ("/http-text/null-or-missing-param-is-named",
                   test_null_or_missing_param_is_named);
  g_test_add_func ("/http-text/params-distinct-in-order", test_params_distinct_in_order);
  g_test_add_func ("/http-text/bad-templates-name-the-offset",
                   test_bad_templates_name_the_offset);
  g_test_add_func ("/http-text/header-values-cannot-split-a-line",
                   test_header_values_cannot_split_a_line);
  g_test_add_func ("/http-text/form-encoding", test_form_encoding);
  return g_test_run ();
}

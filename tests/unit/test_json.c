/* test_json: core/evd_json, the one JSON string writer (traces, /lookups, evdal-cli --json). */
#include "evd_json.h"

static char *
json (const char *s)
{
  GString *out = g_string_new (NULL);

  evd_json_string (out, s);
  return g_string_free (out, FALSE);
}

static void
check (const char *in, const char *want)
{
  g_autofree char *got = json (in);

  g_assert_cmpstr (got, ==, want);
}

static void
test_plain_and_escaped (void)
{
  check ("", "\"\"");
  check (NULL, "\"\"");
  check ("plain text", "\"plain text\"");
  check ("q\"b\\s/", "\"q\\\"b\\\\s/\"");
  check ("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
  check ("\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\"");  /* DEL is not a JSON control */
}

static void
test_utf8_passes_and_bad_bytes_are_replaced (void)
{
  check ("東京 😀 naïve", "\"東京 😀 naïve\"");
  /* A lone continuation byte, a truncated sequence, an overlong '/': one U+FFFD per byte. */
  check ("a\x80z", "\"a\\ufffdz\"");
  check ("\xe6\x9d", "\"\\ufffd\\ufffd\"");
  check ("\xc0\xaf", "\"\\ufffd\\ufffd\"");
  check ("ok\xff" "東", "\"ok\\ufffd東\"");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/json/plain-and-escaped", test_plain_and_escaped);
  g_test_add_func ("/json/utf8-and-bad-bytes", test_utf8_passes_and_bad_bytes_are_replaced);
  return g_test_run ();
}

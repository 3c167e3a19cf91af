/* evd_json: JSON strings (see evd_json.h). */
#include "evd_json.h"

/* The escape of a byte below 0x20, '"' or '\', or NULL when it passes as it is. */
static const char *
evd_json_short_escape (guchar c)
{
  switch (c) {
  case '"': return "\\\"";
  case '\\': return "\\\\";
  case '\n': return "\\n";
  case '\r': return "\\r";
  case '\t': return "\\t";
  case '\b': return "\\b";
  case '\f': return "\\f";
  default: return NULL;
  }
}

void
evd_json_string (GString *out, const char *s)
{
  const char *run;

  if (s == NULL)
    s = "";
  g_string_append_c (out, '"');
  run = s;
  while (*s != '\0') {
    guchar c = (guchar) *s;
    const char *esc = evd_json_short_escape (c);

    if (c >= 0x20 && esc == NULL && c < 0x80) {  /* plain ASCII: part of the current run */
      s++;
      continue;
    }
    if (c >= 0x80) {
      gunichar u = g_utf8_get_char_validated (s, -1);
      if (u != (gunichar) -1 && u != (gunichar) -2) {  /* a whole, valid UTF-8 character */
        s = g_utf8_next_char (s);
        continue;
      }
    }
    g_string_append_len (out, run, s - run);
    if (esc != NULL)
      g_string_append (out, esc);
    else if (c < 0x20)
      g_string_append_printf (out, "\\u%04x", c);
    else
      g_string_append (out, "\\ufffd");           /* a byte that is not valid UTF-8 */
    run = ++s;
  }
  g_string_append_len (out, run, s - run);
  g_string_append_c (out, '"');
}

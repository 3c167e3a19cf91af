/* evd_cli_value: evdal Values as a person types and reads them (see evd_cli_value.h). */
#include "evd_cli_value.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static gboolean
evd_cli_value_is_digits (const char *s, const char **end)
{
  const char *p = s;

  while (g_ascii_isdigit (*p))
    p++;
  *end = p;
  return p > s;
}

/* [+-]digits: what SQL and every language read as an integer. */
static gboolean
evd_cli_value_looks_int (const char *s)
{
  const char *end;

  if (*s == '+' || *s == '-')
    s++;
  return evd_cli_value_is_digits (s, &end) && *end == '\0';
}

/* [+-](digits[.digits] | .digits)[e[+-]digits]: a decimal literal. Checked by hand because
 * strtod also takes "nan", "inf" and hex floats, which nobody means as a number here. */
static gboolean
evd_cli_value_looks_real (const char *s)
{
  const char *end;
  gboolean mantissa;

  if (*s == '+' || *s == '-')
    s++;
  mantissa = evd_cli_value_is_digits (s, &end);
  s = end;
  if (*s == '.') {
    mantissa = evd_cli_value_is_digits (s + 1, &end) || mantissa;
    s = end;
  }
  if (!mantissa)
    return FALSE;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-')
      s++;
    if (!evd_cli_value_is_digits (s, &end))
      return FALSE;
    s = end;
  }
  return *s == '\0';
}

static gboolean
evd_cli_value_parse_int (const char *text, gint64 *out, GError **error)
{
  char *end;

  if (!evd_cli_value_looks_int (text)) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "\"%s\" is not an integer",
                 text);
    return FALSE;
  }
  errno = 0;
  *out = g_ascii_strtoll (text, &end, 10);
  if (errno == ERANGE) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "%s does not fit a 64-bit integer", text);
    return FALSE;
  }
  return TRUE;
}

static gboolean
evd_cli_value_parse_real (const char *text, double *out, GError **error)
{
  char *end;

  /* Here strtod's own syntax is fine ("1e3", "-.5"); only the whole text must be used. */
  *out = g_ascii_strtod (text, &end);
  if (*text == '\0' || *end != '\0' || g_ascii_isspace (*text)) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "\"%s\" is not a number", text);
    return FALSE;
  }
  if (!isfinite (*out)) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "%s is not a finite number", text);
    return FALSE;
  }
  return TRUE;
}

static GByteArray *
evd_cli_value_parse_hex (const char *text, GError **error)
{
  g_autoptr (GByteArray) bytes = g_byte_array_new ();
  gsize len = strlen (text);
  const char *p = text;

  /* The x'...' form is how blobs are shown; taking it back lets output be pasted as input. */
  if (len >= 3 && (text[0] == 'x' || text[0] == 'X') && text[1] == '\'' && text[len - 1] == '\'') {
    p = text + 2;
    len -= 3;
  }
  if (len % 2 != 0) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "blob \"%s\": an odd number of hex digits", text);
    return NULL;
  }
  for (gsize i = 0; i < len; i += 2) {
    int hi = g_ascii_xdigit_value (p[i]), lo = g_ascii_xdigit_value (p[i + 1]);
    guint8 byte;

    if (hi < 0 || lo < 0) {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "blob \"%s\": not hex digits", text);
      return NULL;
    }
    byte = (guint8) (hi << 4 | lo);
    g_byte_array_append (bytes, &byte, 1);
  }
  return g_steal_pointer (&bytes);
}

static const char *
evd_cli_value_guess (const char *text)
{
  gsize len = strlen (text);

  if (g_ascii_strcasecmp (text, "null") == 0)
    return "null";
  if (evd_cli_value_looks_int (text))
    return "int";
  if (evd_cli_value_looks_real (text))
    return "real";
  if (len >= 3 && (text[0] == 'x' || text[0] == 'X') && text[1] == '\'' && text[len - 1] == '\'')
    return "blob";
  return "text";
}

evdalValue *
evd_cli_value_parse (const char *type, const char *text, GError **error)
{
  g_autoptr (evdalValue) v = g_object_new (EVDAL_TYPE_VALUE, NULL);

  if (type == NULL)
    type = evd_cli_value_guess (text);
  if (strcmp (type, "int") == 0) {
    if (!evd_cli_value_parse_int (text, &v->int_value, error))
      return NULL;
    v->__isset_int_value = TRUE;
  } else if (strcmp (type, "real") == 0) {
    if (!evd_cli_value_parse_real (text, &v->real_value, error))
      return NULL;
    v->__isset_real_value = TRUE;
  } else if (strcmp (type, "text") == 0) {
    if (!g_utf8_validate (text, -1, NULL)) {
      /* The IDL's text is UTF-8; a server would reject or mangle anything else. */
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "text is not UTF-8 (give bytes as a blob: NAME:blob=HEX)");
      return NULL;
    }
    v->text_value = g_strdup (text);
    v->__isset_text_value = TRUE;
  } else if (strcmp (type, "blob") == 0) {
    GByteArray *bytes = evd_cli_value_parse_hex (text, error);
    if (bytes == NULL)
      return NULL;
    /* c_glib's Value owns its blob_value; it may or may not have made one already. */
    if (v->blob_value != NULL)
      g_byte_array_unref (v->blob_value);
    v->blob_value = bytes;
    v->__isset_blob_value = TRUE;
  } else if (strcmp (type, "null") == 0) {
    if (*text != '\0' && g_ascii_strcasecmp (text, "null") != 0) {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "a null takes no value, not \"%s\"", text);
      return NULL;
    }
    v->null_value = TRUE;  /* the IDL: "The boolean's value is ignored; set it to true." */
    v->__isset_null_value = TRUE;
  } else {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "unknown type \"%s\" (int, real, text, blob or null)", type);
    return NULL;
  }
  return g_steal_pointer (&v);
}

void
evd_cli_value_format_real (double d, char buf[G_ASCII_DTOSTR_BUF_SIZE])
{
  static const char *const formats[] = { "%.15g", "%.16g", "%.17g" };

  if (isnan (d)) {
    g_strlcpy (buf, "NaN", G_ASCII_DTOSTR_BUF_SIZE);
    return;
  }
  if (isinf (d)) {
    g_strlcpy (buf, d < 0 ? "-Inf" : "Inf", G_ASCII_DTOSTR_BUF_SIZE);
    return;
  }
  /* 15 digits read well (0.1, not 0.10000000000000001); 17 always read back exactly. */
  for (guint i = 0; i < G_N_ELEMENTS (formats); i++) {
    g_ascii_formatd (buf, G_ASCII_DTOSTR_BUF_SIZE, formats[i], d);
    if (g_ascii_strtod (buf, NULL) == d)
      break;
  }
  if (strpbrk (buf, ".eE") == NULL)
    g_strlcat (buf, ".0", G_ASCII_DTOSTR_BUF_SIZE);
}

char *
evd_cli_value_hex (const guint8 *data, gsize len)
{
  static const char digits[] = "0123456789abcdef";
  char *out = g_malloc (2 * len + 1);

  for (gsize i = 0; i < len; i++) {
    out[2 * i] = digits[data[i] >> 4];
    out[2 * i + 1] = digits[data[i] & 0x0f];
  }
  out[2 * len] = '\0';
  return out;
}

/* One piece of text between NULs (see below), made visible into out. */
static void
evd_cli_value_visible_piece (GString *out, const char *text, gssize len)
{
  g_autofree char *valid = g_utf8_make_valid (text, len);

  for (const char *p = valid; *p != '\0'; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);

    if (!g_unichar_iscntrl (c)) {
      g_string_append_len (out, p, g_utf8_next_char (p) - p);
      continue;
    }
    switch (c) {
    case '\n': g_string_append (out, "\\n"); break;
    case '\t': g_string_append (out, "\\t"); break;
    case '\r': g_string_append (out, "\\r"); break;
    default:
      if (c < 0x80)
        g_string_append_printf (out, "\\x%02x", c);
      else
        g_string_append_printf (out, "\\u%04x", c);
    }
  }
}

char *
evd_cli_value_visible (const char *text)
{
  GString *out = g_string_sized_new (strlen (text));
  const char *nul;

  /* A U+0000 the reply carried comes as C0 80 (evd_cli_conn): shown as \x00, like the other
   * control characters; the text goes on after it. */
  while ((nul = strstr (text, EVD_CLI_VALUE_NUL)) != NULL) {
    evd_cli_value_visible_piece (out, text, nul - text);
    g_string_append (out, "\\x00");
    text = nul + 2;
  }
  evd_cli_value_visible_piece (out, text, -1);
  return g_string_free (out, FALSE);
}

char *
evd_cli_value_display (const evdalValue *v, gboolean *numeric)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  *numeric = FALSE;
  if (v->__isset_null_value)
    return g_strdup ("NULL");
  if (v->__isset_int_value) {
    *numeric = TRUE;
    return g_strdup_printf ("%" G_GINT64_FORMAT, v->int_value);
  }
  if (v->__isset_real_value) {
    *numeric = TRUE;
    evd_cli_value_format_real (v->real_value, buf);
    return g_strdup (buf);
  }
  if (v->__isset_text_value)
    return evd_cli_value_visible (v->text_value ? v->text_value : "");
  if (v->__isset_blob_value && v->blob_value != NULL) {
    g_autofree char *hex = evd_cli_value_hex (v->blob_value->data, v->blob_value->len);
    return g_strdup_printf ("x'%s'", hex);
  }
  if (v->__isset_blob_value)
    return g_strdup ("x''");
  /* The IDL says exactly one field is set; a server that breaks that is shown, not hidden. */
  return g_strdup ("(no value)");
}

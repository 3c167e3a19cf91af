/* evd_http_text: URL templates, header values and form encoding (see evd_http_text.h).
 *
 * '.' is encoded in a path segment (not in a query), so that a value "." or ".." never forms a
 * dot segment that a client, proxy or server would resolve; evd_http also sends the path as
 * built (CURLOPT_PATH_AS_IS).
 */
#include "evd_http_text.h"
#include "evd_quark.h"

#include <math.h>
#include <string.h>

EVD_DEFINE_QUARK (evd-http-text-error-quark, evd_http_text_error)

/* What a value may keep as it is, besides letters and digits. */
#define EVD_HTTP_TEXT_KEEP_PATH "-_~"
#define EVD_HTTP_TEXT_KEEP_QUERY "-_~."

typedef enum {
  EVD_HTTP_TEXT_LITERAL,
  EVD_HTTP_TEXT_PATH_PARAM,
  EVD_HTTP_TEXT_QUERY_PARAM,
} EvdHttpTextPieceKind;

typedef struct {
  EvdHttpTextPieceKind kind;
  char *text;               /* the literal, or the param's name */
} EvdHttpTextPiece;

struct _EvdHttpTextTemplate {
  GArray *pieces;           /* EvdHttpTextPiece */
  GPtrArray *params;        /* distinct names, borrowed from the pieces */
};

static const char evd_http_text_hex[] = "0123456789ABCDEF";

/* ---- Encoding. ---- */

void
evd_http_text_encode (GString *out, const char *s, gsize len, const char *keep)
{
  for (gsize i = 0; i < len; i++) {
    guchar c = (guchar) s[i];

    if (g_ascii_isalnum (c) || (c != '\0' && strchr (keep, c) != NULL)) {
      g_string_append_c (out, (char) c);
    } else {
      g_string_append_c (out, '%');
      g_string_append_c (out, evd_http_text_hex[c >> 4]);
      g_string_append_c (out, evd_http_text_hex[c & 15]);
    }
  }
}

void
evd_http_text_header_append (GString *out, const char *name, const char *value)
{
  g_string_append (out, name);
  g_string_append (out, ": ");
  for (const guchar *p = (const guchar *) value; *p != '\0'; p++) {
    if (*p > 0x20 && *p < 0x7f && *p != '%') {
      g_string_append_c (out, (char) *p);
    } else {
      g_string_append_c (out, '%');
      g_string_append_c (out, evd_http_text_hex[*p >> 4]);
      g_string_append_c (out, evd_http_text_hex[*p & 15]);
    }
  }
}

char *
evd_http_text_header (const char *name, const char *value)
{
  GString *h = g_string_new (NULL);

  evd_http_text_header_append (h, name, value);
  return g_string_free (h, FALSE);
}

void
evd_http_text_form (GString *out, const char *const *keys, const char *const *values)
{
  for (guint i = 0; keys[i] != NULL; i++) {
    if (i > 0)
      g_string_append_c (out, '&');
    evd_http_text_encode (out, keys[i], strlen (keys[i]), EVD_HTTP_TEXT_KEEP_QUERY);
    g_string_append_c (out, '=');
    evd_http_text_encode (out, values[i], strlen (values[i]), EVD_HTTP_TEXT_KEEP_QUERY);
  }
}

/* The shortest decimal that reads back as the same double (0.1, not 0.10000000000000001). */
static void
evd_http_text_real (GString *out, double r)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (!isfinite (r)) {
    g_string_append (out, isnan (r) ? "nan" : r > 0 ? "inf" : "-inf");
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    char format[8];

    g_snprintf (format, sizeof format, "%%.%dg", prec);
    g_ascii_formatd (buf, sizeof buf, format, r);   /* '.' whatever the locale */
    if (g_ascii_strtod (buf, NULL) == r)
      break;
  }
  g_string_append (out, buf);
}

gboolean
evd_http_text_value (GString *out, const EvdValue *v)
{
  switch (v->kind) {
  case EVD_VALUE_INT: {
    /* In decimal, without printf: a URL is built per call. */
    char digits[24], *d = digits + sizeof digits;
    guint64 u = v->i < 0 ? -(guint64) v->i : (guint64) v->i;

    do
      *--d = (char) ('0' + u % 10);
    while ((u /= 10) != 0);
    if (v->i < 0)
      *--d = '-';
    g_string_append_len (out, d, digits + sizeof digits - d);
    return TRUE;
  }
  case EVD_VALUE_REAL:
    evd_http_text_real (out, v->r);
    return TRUE;
  case EVD_VALUE_TEXT:
  case EVD_VALUE_BLOB:
    g_string_append_len (out, v->data, v->len);
    return TRUE;
  default:
    return FALSE;
  }
}

/* ---- Templates. ---- */

static gboolean
evd_http_text_url_char (guchar c)
{
  return g_ascii_isalnum (c) || (c != '\0' && strchr ("-._~!$&'()*+,;=:@/?%", c) != NULL);
}

static gboolean
evd_http_text_param_name (const char *s, gsize len)
{
  if (len == 0 || !(g_ascii_isalpha (s[0]) || s[0] == '_'))
    return FALSE;
  for (gsize i = 1; i < len; i++)
    if (!(g_ascii_isalnum (s[i]) || s[i] == '_'))
      return FALSE;
  return TRUE;
}

static void
evd_http_text_add_piece (EvdHttpTextTemplate *t, EvdHttpTextPieceKind kind, const char *s,
                         gsize len)
{
  EvdHttpTextPiece p = { kind, g_strndup (s, len) };

  if (len == 0) {
    g_free (p.text);
    return;
  }
  g_array_append_val (t->pieces, p);
}

/* Checks one character of literal text at `p`; FALSE with an error naming it. */
static gboolean
evd_http_text_check_literal (const char *text, const char *p, GError **error)
{
  if (evd_http_text_url_char ((guchar) *p) &&
      (*p != '%' || (g_ascii_isxdigit (p[1]) && g_ascii_isxdigit (p[2]))))
    return TRUE;
  g_set_error (error, EVD_HTTP_TEXT_ERROR, EVD_HTTP_TEXT_ERROR_TEMPLATE,
               "\"%s\": at offset %d, '%c' (0x%02x) is not URL text (no space, '#', '}' or "
               "non-ASCII; '%%' only as %%XX)", text, (int) (p - text),
               g_ascii_isprint (*p) ? *p : '?', (guchar) *p);
  return FALSE;
}

static gboolean
evd_http_text_parse (EvdHttpTextTemplate *t, const char *text, GError **error)
{
  gboolean query = FALSE;
  const char *lit = text;

  if (text[0] != '/') {
    g_set_error (error, EVD_HTTP_TEXT_ERROR, EVD_HTTP_TEXT_ERROR_TEMPLATE,
                 "\"%s\": must start with '/' (it follows the upstream's base_url)", text);
    return FALSE;
  }
  for (const char *p = text; *p != '\0'; p++) {
    if (*p == '{') {
      const char *end = strchr (p, '}');

      if (end == NULL || !evd_http_text_param_name (p + 1, (gsize) (end - p - 1))) {
        g_set_error (error, EVD_HTTP_TEXT_ERROR, EVD_HTTP_TEXT_ERROR_TEMPLATE,
                     "\"%s\": at offset %d, expected {name} with a name of letters, digits "
                     "and '_'", text, (int) (p - text));
        return FALSE;
      }
      evd_http_text_add_piece (t, EVD_HTTP_TEXT_LITERAL, lit, (gsize) (p - lit));
      evd_http_text_add_piece (t, query ? EVD_HTTP_TEXT_QUERY_PARAM : EVD_HTTP_TEXT_PATH_PARAM,
                               p + 1, (gsize) (end - p - 1));
      p = end;
      lit = end + 1;
      continue;
    }
    if (!evd_http_text_check_literal (text, p, error))
      return FALSE;
    if (*p == '?')
      query = TRUE;
  }
  evd_http_text_add_piece (t, EVD_HTTP_TEXT_LITERAL, lit, strlen (lit));
  return TRUE;
}

void
evd_http_text_template_free (EvdHttpTextTemplate *t)
{
  if (t == NULL)
    return;
  for (guint i = 0; i < t->pieces->len; i++)
    g_free (g_array_index (t->pieces, EvdHttpTextPiece, i).text);
  g_array_unref (t->pieces);
  g_ptr_array_unref (t->params);
  g_free (t);
}

EvdHttpTextTemplate *
evd_http_text_template_new (const char *text, GError **error)
{
  g_autoptr (EvdHttpTextTemplate) t = g_new0 (EvdHttpTextTemplate, 1);

  t->pieces = g_array_new (FALSE, FALSE, sizeof (EvdHttpTextPiece));
  t->params = g_ptr_array_new ();
  if (!evd_http_text_parse (t, text, error))
    return NULL;
  for (guint i = 0; i < t->pieces->len; i++) {
    EvdHttpTextPiece *p = &g_array_index (t->pieces, EvdHttpTextPiece, i);
    gboolean seen = FALSE;

    for (guint k = 0; k < t->params->len && !seen; k++)
      seen = strcmp (t->params->pdata[k], p->text) == 0;
    if (p->kind != EVD_HTTP_TEXT_LITERAL && !seen)
      g_ptr_array_add (t->params, p->text);
  }
  return g_steal_pointer (&t);
}

guint
evd_http_text_template_n_params (const EvdHttpTextTemplate *t)
{
  return t->params->len;
}

const char *
evd_http_text_template_param (const EvdHttpTextTemplate *t, guint i)
{
  return t->params->pdata[i];
}

gboolean
evd_http_text_template_expand (const EvdHttpTextTemplate *t, const EvdParam *params,
                               guint n_params, GString *out, const char **missing)
{
  g_autoptr (GString) text = NULL;   /* made for the first value that may need encoding */

  for (guint i = 0; i < t->pieces->len; i++) {
    const EvdHttpTextPiece *p = &g_array_index (t->pieces, EvdHttpTextPiece, i);
    const EvdValue *v;

    if (p->kind == EVD_HTTP_TEXT_LITERAL) {
      g_string_append (out, p->text);
      continue;
    }
    v = evd_value_find_param (params, n_params, p->text);
    if (v != NULL && v->kind == EVD_VALUE_INT) {
      evd_http_text_value (out, v);   /* digits and '-': nothing to encode */
      continue;
    }
    if (text == NULL)
      text = g_string_new (NULL);
    g_string_truncate (text, 0);
    if (v == NULL || !evd_http_text_value (text, v)) {
      *missing = p->text;
      return FALSE;
    }
    evd_http_text_encode (out, text->str, text->len, p->kind == EVD_HTTP_TEXT_PATH_PARAM
                          ? EVD_HTTP_TEXT_KEEP_PATH : EVD_HTTP_TEXT_KEEP_QUERY);
  }
  return TRUE;
}

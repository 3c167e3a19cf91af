/* evd_json_tape: strict JSON to a flat token array (see evd_json_tape.h).
 *
 * One loop, no recursion: a stack of the open containers' token indices says what may come
 * after each value (a comma or the container's closing bracket). The grammar is RFC 8259's:
 * whitespace is space, tab, CR and LF; numbers are -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?;
 * strings hold no raw control character and only the eight escapes and \uXXXX.
 */
#include "evd_json_tape.h"

#include <math.h>
#include <string.h>

void
evd_json_tape_init (EvdJsonTape *tape)
{
  tape->tokens = tape->local;
  tape->n = 0;
  tape->cap = EVD_JSON_TAPE_INLINE;
}

void
evd_json_tape_clear (EvdJsonTape *tape)
{
  if (tape->tokens != tape->local)
    g_free (tape->tokens);
  evd_json_tape_init (tape);
}

/* A new token at the end; its index. Grows past the inline room by doubling. */
static guint
evd_json_tape_push (EvdJsonTape *tape, EvdJsonTapeType type, gsize start)
{
  EvdJsonTapeToken *t;

  if (tape->n == tape->cap) {
    guint cap = tape->cap * 2;

    if (tape->tokens == tape->local)
      tape->tokens = g_memdup2 (tape->local, sizeof tape->local);
    tape->tokens = g_renew (EvdJsonTapeToken, tape->tokens, cap);
    tape->cap = cap;
  }
  t = &tape->tokens[tape->n];
  t->type = (guint8) type;
  t->escaped = FALSE;
  t->start = (guint32) start;
  t->len = 0;
  t->n = 0;
  t->v.i = 0;
  return tape->n++;
}

static inline const char *
evd_json_tape_ws (const char *p, const char *end)
{
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    p++;
  return p;
}

static inline int
evd_json_tape_hex (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The bytes a string scan stops at: 1 for '"', '\\' and control characters, 2 for the bytes
 * of UTF-8 sequences (checked once per string); 0 for the rest, skipped in a tight loop. */
static const guint8 evd_json_tape_string_stop[256] = {
  [0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 2,
};

/* The string whose opening quote is at *pp: a STRING token; *pp ends past the closing quote.
 * Escapes are only checked for form here (evd_json_tape_unescape decodes them). */
static gboolean
evd_json_tape_string (EvdJsonTape *tape, const char *json, const char **pp, const char *end)
{
  const char *p = *pp + 1, *start = p;
  gboolean escaped = FALSE, ascii = TRUE;
  guint i;

  for (;;) {
    guchar c;

    while (p < end && evd_json_tape_string_stop[(guchar) *p] == 0)
      p++;
    if (p >= end)
      return FALSE;
    c = (guchar) *p;
    if (c == '"')
      break;
    if (c == '\\') {
      escaped = TRUE;
      if (++p >= end)
        return FALSE;
      if (*p == 'u') {
        if (end - p < 5)
          return FALSE;
        for (int k = 1; k <= 4; k++)
          if (evd_json_tape_hex (p[k]) < 0)
            return FALSE;
        p += 5;
      } else if (strchr ("\"\\/bfnrt", *p) != NULL && *p != '\0') {
        p++;
      } else {
        return FALSE;
      }
    } else if (c < 0x20) {
      return FALSE;
    } else {
      ascii &= c < 0x80;
      p++;
    }
  }
  if (!ascii && !g_utf8_validate_len (start, (gsize) (p - start), NULL))
    return FALSE;
  i = evd_json_tape_push (tape, EVD_JSON_TAPE_STRING, (gsize) (start - json));
  tape->tokens[i].len = (guint32) (p - start);
  tape->tokens[i].escaped = (guint8) escaped;
  *pp = p + 1;
  return TRUE;
}

/* The number starting at *pp: an INT (within int64) or a REAL (finite). */
static gboolean
evd_json_tape_number (EvdJsonTape *tape, const char *json, const char **pp, const char *end)
{
  const char *p = *pp, *start = p;
  gboolean negative = FALSE, real = FALSE;
  guint64 magnitude = 0;
  guint i;

  if (*p == '-') {
    negative = TRUE;
    p++;
  }
  if (p >= end || *p < '0' || *p > '9')
    return FALSE;
  if (*p == '0') {
    p++;
  } else {
    while (p < end && *p >= '0' && *p <= '9') {
      guint d = (guint) (*p++ - '0');

      /* Beyond int64 (INT64_MIN too, for simplicity): json-glib's call. */
      if (magnitude > ((guint64) G_MAXINT64 - d) / 10)
        return FALSE;
      magnitude = magnitude * 10 + d;
    }
  }
  if (p < end && *p == '.') {
    real = TRUE;
    if (++p >= end || *p < '0' || *p > '9')
      return FALSE;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    real = TRUE;
    if (++p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || *p < '0' || *p > '9')
      return FALSE;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (real) {
    char buf[64];
    gsize n = (gsize) (p - start);
    double r;

    if (n >= sizeof buf)
      return FALSE;
    memcpy (buf, start, n);
    buf[n] = '\0';
    r = g_ascii_strtod (buf, NULL);
    if (!isfinite (r))
      return FALSE;
    i = evd_json_tape_push (tape, EVD_JSON_TAPE_REAL, (gsize) (start - json));
    tape->tokens[i].v.r = r;
  } else {
    i = evd_json_tape_push (tape, EVD_JSON_TAPE_INT, (gsize) (start - json));
    tape->tokens[i].v.i = negative ? -(gint64) magnitude : (gint64) magnitude;
  }
  tape->tokens[i].len = (guint32) (p - start);
  *pp = p;
  return TRUE;
}

static gboolean
evd_json_tape_literal (EvdJsonTape *tape, const char *json, const char **pp, const char *end)
{
  static const struct {
    const char *word;
    guint len;
    EvdJsonTapeType type;
  } words[] = {
    { "null", 4, EVD_JSON_TAPE_NULL },
    { "true", 4, EVD_JSON_TAPE_TRUE },
    { "false", 5, EVD_JSON_TAPE_FALSE },
  };

  for (guint w = 0; w < G_N_ELEMENTS (words); w++) {
    if ((gsize) (end - *pp) >= words[w].len && memcmp (*pp, words[w].word, words[w].len) == 0) {
      guint i = evd_json_tape_push (tape, words[w].type, (gsize) (*pp - json));

      tape->tokens[i].len = words[w].len;
      *pp += words[w].len;
      return TRUE;
    }
  }
  return FALSE;
}

/* An object's key and its colon, at p (after '{' or ','); the position of its value. */
static const char *
evd_json_tape_key (EvdJsonTape *tape, const char *json, const char *p, const char *end)
{
  if (p >= end || *p != '"' || !evd_json_tape_string (tape, json, &p, end))
    return NULL;
  /* An empty key is json-glib's call (its objects treat it apart). */
  if (tape->tokens[tape->n - 1].len == 0)
    return NULL;
  p = evd_json_tape_ws (p, end);
  if (p >= end || *p != ':')
    return NULL;
  return evd_json_tape_ws (p + 1, end);
}

gboolean
evd_json_tape_parse (EvdJsonTape *tape, const char *json, gsize len)
{
  const char *p = json, *end = json + len;
  guint open[EVD_JSON_TAPE_MAX_DEPTH];   /* the open containers' token indices */
  guint depth = 0;

  tape->n = 0;
  if (len > G_MAXUINT32)
    return FALSE;
  p = evd_json_tape_ws (p, end);
  for (;;) {
    gboolean closed = FALSE;

    /* A value at p. */
    if (p >= end)
      return FALSE;
    if (*p == '{' || *p == '[') {
      gboolean object = *p == '{';
      guint i = evd_json_tape_push (tape, object ? EVD_JSON_TAPE_OBJECT : EVD_JSON_TAPE_ARRAY,
                                    (gsize) (p - json));

      if (depth == EVD_JSON_TAPE_MAX_DEPTH)
        return FALSE;
      open[depth++] = i;
      p = evd_json_tape_ws (p + 1, end);
      if (p < end && *p == (object ? '}' : ']')) {
        closed = TRUE;          /* empty: closed below, as after a last value */
      } else {
        if (object && (p = evd_json_tape_key (tape, json, p, end)) == NULL)
          return FALSE;
        continue;
      }
    } else if (*p == '"') {
      if (!evd_json_tape_string (tape, json, &p, end))
        return FALSE;
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
      if (!evd_json_tape_number (tape, json, &p, end))
        return FALSE;
    } else if (!evd_json_tape_literal (tape, json, &p, end)) {
      return FALSE;
    }

    /* After a value (or at the closing bracket of an empty container): a comma and the next
     * member or element, or closing brackets, or the end of the text. */
    for (;;) {
      EvdJsonTapeToken *top;

      if (!closed) {
        p = evd_json_tape_ws (p, end);
        if (depth == 0)
          return p == end;
        tape->tokens[open[depth - 1]].n++;
      }
      top = &tape->tokens[open[depth - 1]];
      if (!closed && p < end && *p == ',') {
        p = evd_json_tape_ws (p + 1, end);
        if (top->type == EVD_JSON_TAPE_OBJECT && (p = evd_json_tape_key (tape, json, p, end)) == NULL)
          return FALSE;
        break;
      }
      if (p >= end || *p != (top->type == EVD_JSON_TAPE_OBJECT ? '}' : ']'))
        return FALSE;
      p++;
      top->len = (guint32) ((gsize) (p - json) - top->start);
      top->v.end = tape->n;
      depth--;
      closed = FALSE;
    }
  }
}

/* Appends code point `u` as UTF-8. */
static void
evd_json_tape_append_unichar (GString *out, gunichar u)
{
  char buf[6];

  g_string_append_len (out, buf, g_unichar_to_utf8 (u, buf));
}

gboolean
evd_json_tape_unescape (const char *json, const EvdJsonTapeToken *t, GString *out)
{
  const char *p = json + t->start, *end = p + t->len;

  while (p < end) {
    const char *bs = memchr (p, '\\', (gsize) (end - p));
    gunichar u;

    if (bs == NULL) {
      g_string_append_len (out, p, end - p);
      break;
    }
    g_string_append_len (out, p, bs - p);
    p = bs + 1;
    switch (*p++) {
    case 'b': g_string_append_c (out, '\b'); continue;
    case 'f': g_string_append_c (out, '\f'); continue;
    case 'n': g_string_append_c (out, '\n'); continue;
    case 'r': g_string_append_c (out, '\r'); continue;
    case 't': g_string_append_c (out, '\t'); continue;
    case 'u': break;
    default: g_string_append_c (out, p[-1]); continue;   /* " \ / */
    }
    /* \uXXXX, its form checked by the parser. */
    u = 0;
    for (int k = 0; k < 4; k++)
      u = u << 4 | (gunichar) evd_json_tape_hex (*p++);
    if (u >= 0xdc00 && u <= 0xdfff)
      return FALSE;               /* a low surrogate alone */
    if (u >= 0xd800 && u <= 0xdbff) {
      gunichar lo = 0;

      if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return FALSE;             /* a high surrogate alone */
      for (int k = 2; k < 6; k++)
        lo = lo << 4 | (gunichar) evd_json_tape_hex (p[k]);
      if (lo < 0xdc00 || lo > 0xdfff)
        return FALSE;
      p += 6;
      u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (u == 0)
      return FALSE;               /* a NUL: json-glib's strings end there */
    evd_json_tape_append_unichar (out, u);
  }
  return TRUE;
}

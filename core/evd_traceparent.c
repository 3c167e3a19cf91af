/* evd_traceparent: W3C Trace Context parsing, ids and sampling (see evd_traceparent.h). */
#include "evd_traceparent.h"

#include <string.h>

/* A lowercase hex digit's value, or -1 (uppercase is invalid in trace context). */
static int
evd_traceparent_nibble (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* n bytes from 2n lowercase hex digits; FALSE on anything else. */
static gboolean
evd_traceparent_unhex (const char *s, guint8 *out, gsize n)
{
  for (gsize i = 0; i < n; i++) {
    int hi = evd_traceparent_nibble (s[2 * i]), lo;

    if (hi < 0 || (lo = evd_traceparent_nibble (s[2 * i + 1])) < 0)
      return FALSE;
    out[i] = (guint8) (hi << 4 | lo);
  }
  return TRUE;
}

static gboolean
evd_traceparent_all_zero (const guint8 *id, gsize n)
{
  for (gsize i = 0; i < n; i++)
    if (id[i] != 0)
      return FALSE;
  return TRUE;
}

gboolean
evd_traceparent_parse (const char *value, EvdTraceparent *out)
{
  EvdTraceparent tp;
  guint8 version;
  gsize len;

  if (value == NULL)
    return FALSE;
  len = strlen (value);
  if (len < EVD_TRACEPARENT_LEN || !evd_traceparent_unhex (value, &version, 1) ||
      version == 0xff)
    return FALSE;
  /* Version 00 is exactly its 55 characters; a later one may carry more after a '-'. */
  if (version == 0 ? len != EVD_TRACEPARENT_LEN
                   : len > EVD_TRACEPARENT_LEN && value[EVD_TRACEPARENT_LEN] != '-')
    return FALSE;
  if (value[2] != '-' || value[35] != '-' || value[52] != '-' ||
      !evd_traceparent_unhex (value + 3, tp.trace_id, 16) ||
      !evd_traceparent_unhex (value + 36, tp.span_id, 8) ||
      !evd_traceparent_unhex (value + 53, &tp.flags, 1))
    return FALSE;
  if (evd_traceparent_all_zero (tp.trace_id, 16) || evd_traceparent_all_zero (tp.span_id, 8))
    return FALSE;
  tp.flags &= EVD_TRACE_FLAG_SAMPLED;
  *out = tp;
  return TRUE;
}

/* ---- tracestate ---- */

static gboolean
evd_tracestate_key_char (char c)
{
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '*' || c == '/';
}

/* key = simple-key / tenant-id "@" system-id (the W3C grammar, level 1). */
static gboolean
evd_tracestate_key_valid (const char *k, gsize len)
{
  const char *at = memchr (k, '@', len);

  if (len == 0)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (k + i != at && !evd_tracestate_key_char (k[i]))
      return FALSE;
  if (at == NULL)  /* simple-key: lcalpha 0*255(...) */
    return len <= 256 && k[0] >= 'a' && k[0] <= 'z';
  {
    gsize tenant = (gsize) (at - k), system = len - tenant - 1;

    /* tenant-id: (lcalpha / DIGIT) 0*240(...); system-id: lcalpha 0*13(...) */
    return tenant >= 1 && tenant <= 241 && system >= 1 && system <= 14 &&
           at[1] >= 'a' && at[1] <= 'z' && k[0] != '_' && k[0] != '-' && k[0] != '*' &&
           k[0] != '/';
  }
}

/* value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E */
static gboolean
evd_tracestate_value_valid (const char *v, gsize len)
{
  if (len == 0 || len > 256 || v[len - 1] == ' ')
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=')
      return FALSE;
  return TRUE;
}

gboolean
evd_traceparent_tracestate_valid (const char *value)
{
  g_auto (GStrv) members = NULL;
  g_autoptr (GPtrArray) keys = NULL;
  guint n = 0;

  if (value == NULL || strlen (value) > EVD_TRACESTATE_MAX)
    return FALSE;
  members = g_strsplit (value, ",", -1);
  keys = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; members[i] != NULL; i++) {
    const char *m = members[i], *eq;
    gsize len;

    while (*m == ' ' || *m == '\t')  /* optional white space around a member */
      m++;
    len = strlen (m);
    while (len > 0 && (m[len - 1] == ' ' || m[len - 1] == '\t'))
      len--;
    if (len == 0)
      continue;  /* empty members are allowed, and do not count */
    eq = memchr (m, '=', len);
    if (eq == NULL || ++n > EVD_TRACESTATE_MAX_MEMBERS ||
        !evd_tracestate_key_valid (m, (gsize) (eq - m)) ||
        !evd_tracestate_value_valid (eq + 1, len - (gsize) (eq - m) - 1))
      return FALSE;
    for (guint k = 0; k < keys->len; k++)
      if (strlen (keys->pdata[k]) == (gsize) (eq - m) && memcmp (keys->pdata[k], m, eq - m) == 0)
        return FALSE;  /* a key twice */
    g_ptr_array_add (keys, g_strndup (m, eq - m));
  }
  return TRUE;
}

/* ---- Writing ---- */

void
evd_traceparent_hex (const guint8 *id, gsize n, char *out)
{
  static const char digits[] = "0123456789abcdef";

  for (gsize i = 0; i < n; i++) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 15];
  }
  out[2 * n] = '\0';
}

void
evd_traceparent_format (const guint8 trace_id[16], const guint8 span_id[8], guint8 flags,
                        char *out)
{
  memcpy (out, "00-", 3);
  evd_traceparent_hex (trace_id, 16, out + 3);
  out[35] = '-';
  evd_traceparent_hex (span_id, 8, out + 36);
  out[52] = '-';
  evd_traceparent_hex (&flags, 1, out + 53);
}

/* ---- Ids and sampling ---- */

/* splitmix64: one add and three multiply-xorshifts per 8 bytes, statistically good, and
 * per thread, so no loop waits for another to make an id. */
static __thread guint64 evd_traceparent_state;
static __thread gboolean evd_traceparent_seeded;

static guint64
evd_traceparent_next (void)
{
  guint64 z;

  if (G_UNLIKELY (!evd_traceparent_seeded)) {
    /* GLib's generator (a lock, once per thread) mixed with the thread's address, so two
     * threads seeded at once still differ. */
    evd_traceparent_state = ((guint64) g_random_int () << 32 | g_random_int ()) ^
                            (guint64) (guintptr) &evd_traceparent_state ^
                            (guint64) g_get_real_time ();
    evd_traceparent_seeded = TRUE;
  }
  z = (evd_traceparent_state += G_GUINT64_CONSTANT (0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void
evd_traceparent_random_id (guint8 *id, gsize n)
{
  do {
    for (gsize i = 0; i < n; i += 8) {
      guint64 r = evd_traceparent_next ();
      memcpy (id + i, &r, MIN (8, n - i));
    }
  } while (evd_traceparent_all_zero (id, n));
}

gboolean
evd_traceparent_ratio_sampled (const guint8 trace_id[16], double ratio)
{
  guint64 low = 0;

  if (ratio <= 0.0)
    return FALSE;
  if (ratio >= 1.0)
    return TRUE;
  for (int i = 8; i < 16; i++)
    low = low << 8 | trace_id[i];
  low &= G_GUINT64_CONSTANT (0x7fffffffffffffff);
  return (double) low < ratio * 9223372036854775808.0;  /* 2^63 */
}

gboolean
evd_traceparent_context (EvdTraceContext *ctx, const char *traceparent, const char *tracestate,
                         double ratio)
{
  EvdTraceparent tp;
  gboolean valid = TRUE;

  memset (ctx, 0, sizeof *ctx);
  evd_traceparent_random_id (ctx->span_id, 8);
  if (traceparent != NULL && evd_traceparent_parse (traceparent, &tp)) {
    memcpy (ctx->trace_id, tp.trace_id, 16);
    memcpy (ctx->parent_id, tp.span_id, 8);
    ctx->remote = TRUE;
    ctx->sampled = (tp.flags & EVD_TRACE_FLAG_SAMPLED) != 0;  /* parent-based */
    /* The tracestate belongs to that parent: without a valid traceparent it means nothing. */
    if (tracestate != NULL && *tracestate != '\0') {
      if (evd_traceparent_tracestate_valid (tracestate))
        ctx->tracestate = tracestate;
      else
        valid = FALSE;
    }
    return valid;
  }
  evd_traceparent_random_id (ctx->trace_id, 16);
  ctx->sampled = evd_traceparent_ratio_sampled (ctx->trace_id, ratio);
  return traceparent == NULL;
}

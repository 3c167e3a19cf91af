/* evd_trace: traced requests and their waterfall (see evd_trace.h). */
#include "evd_trace.h"

#include <string.h>

struct _EvdTraceStore {
  GMutex lock;               /* held to add, or to take references for a page: never to render */
  guint keep;
  guint64 count;             /* traces ever added */
  GPtrArray *recent;         /* EvdTrace * (a reference each), oldest first */
  GPtrArray *slowest;        /* EvdTrace * (a reference each), slowest first */
};

char *
evd_trace_cut (const char *s)
{
  gsize len, n;

  if (s == NULL)
    return NULL;
  len = strlen (s);
  if (len <= EVD_TRACE_TEXT_MAX)
    return g_strdup (s);
  /* Cut at a character's start, so the kept part stays UTF-8 if the whole was. */
  for (n = EVD_TRACE_TEXT_MAX; n > 0 && ((guchar) s[n] & 0xc0) == 0x80; n--)
    ;
  return g_strdup_printf ("%.*s\xe2\x80\xa6[cut: %" G_GSIZE_FORMAT " bytes]", (int) n, s, len);
}

EvdTrace *
evd_trace_new (const char *request_id, const char *principal, gint64 wall_us)
{
  EvdTrace *t = g_new0 (EvdTrace, 1);

  t->ref = 1;
  t->request_id = evd_trace_cut (request_id);
  t->principal = evd_trace_cut (principal);
  t->wall_us = wall_us;
  t->spans = g_array_new (FALSE, TRUE, sizeof (EvdTraceSpan));
  return t;
}

void
evd_trace_add_span (EvdTrace *t, const char *key, const char *lookup, const char *backend,
                    gint64 start_us, gint64 end_us, int error_kind, const char *error)
{
  EvdTraceSpan s = {
    evd_trace_cut (key), evd_trace_cut (lookup), evd_trace_cut (backend),
    MAX (start_us, 0), MAX (end_us, MAX (start_us, 0)), error_kind, evd_trace_cut (error), NULL,
  };

  if (t->spans->len >= EVD_TRACE_SPANS_MAX) {
    t->spans_cut++;
    g_free (s.key), g_free (s.lookup), g_free (s.backend), g_free (s.error);
    return;
  }
  g_array_append_val (t->spans, s);
}

EvdTrace *
evd_trace_ref (EvdTrace *t)
{
  g_atomic_int_inc (&t->ref);
  return t;
}

void
evd_trace_span_set_marks (EvdTrace *t, const char *marks)
{
  EvdTraceSpan *s;

  g_return_if_fail (t->spans->len > 0);
  /* Once the trace is full every span added is cut: the marks are the cut span's too. */
  if (t->spans->len >= EVD_TRACE_SPANS_MAX && t->spans_cut > 0)
    return;
  s = &g_array_index (t->spans, EvdTraceSpan, t->spans->len - 1);
  g_free (s->marks);
  s->marks = marks != NULL && *marks != '\0' ? g_strdup (marks) : NULL;
}

void
evd_trace_free (EvdTrace *t)
{
  if (t == NULL || !g_atomic_int_dec_and_test (&t->ref))
    return;
  for (guint i = 0; i < t->spans->len; i++) {
    EvdTraceSpan *s = &g_array_index (t->spans, EvdTraceSpan, i);
    g_free (s->key);
    g_free (s->lookup);
    g_free (s->backend);
    g_free (s->error);
    g_free (s->marks);
  }
  g_array_unref (t->spans);
  g_free (t->request_id);
  g_free (t->principal);
  g_free (t->outcome);
  g_free (t);
}

EvdTraceStore *
evd_trace_store_new (guint keep)
{
  EvdTraceStore *store = g_new0 (EvdTraceStore, 1);

  g_mutex_init (&store->lock);
  store->keep = MAX (keep, 1);
  store->recent = g_ptr_array_new_with_free_func ((GDestroyNotify) evd_trace_free);
  store->slowest = g_ptr_array_new_with_free_func ((GDestroyNotify) evd_trace_free);
  return store;
}

void
evd_trace_store_free (EvdTraceStore *store)
{
  if (store == NULL)
    return;
  g_ptr_array_unref (store->recent);
  g_ptr_array_unref (store->slowest);
  g_mutex_clear (&store->lock);
  g_free (store);
}

void
evd_trace_store_add (EvdTraceStore *store, EvdTrace *trace)
{
  guint pos;

  if (store == NULL) {
    evd_trace_free (trace);
    return;
  }
  g_mutex_lock (&store->lock);
  store->count++;
  g_ptr_array_add (store->recent, evd_trace_ref (trace));
  if (store->recent->len > store->keep)
    g_ptr_array_remove_index (store->recent, 0);
  /* Slowest first; a new trace goes after those as slow as it, so older ones stay. */
  for (pos = 0; pos < store->slowest->len; pos++)
    if (((EvdTrace *) store->slowest->pdata[pos])->duration_us < trace->duration_us)
      break;
  if (pos < store->keep) {
    g_ptr_array_insert (store->slowest, (gint) pos, evd_trace_ref (trace));
    if (store->slowest->len > store->keep)
      g_ptr_array_remove_index (store->slowest, store->slowest->len - 1);
  }
  g_mutex_unlock (&store->lock);
  evd_trace_free (trace);  /* the caller's reference: the lists hold theirs */
}

/* References to both lists' traces, taken under the lock, so that a page is rendered without
 * it: traced fetches add to the store from every IO loop and must never wait for a page. */
static void
evd_trace_store_snapshot (EvdTraceStore *store, GPtrArray **slowest, GPtrArray **recent,
                          guint64 *count)
{
  g_mutex_lock (&store->lock);
  *slowest = g_ptr_array_new_full (store->slowest->len, (GDestroyNotify) evd_trace_free);
  *recent = g_ptr_array_new_full (store->recent->len, (GDestroyNotify) evd_trace_free);
  for (guint i = 0; i < store->slowest->len; i++)
    g_ptr_array_add (*slowest, evd_trace_ref (store->slowest->pdata[i]));
  for (guint i = 0; i < store->recent->len; i++)
    g_ptr_array_add (*recent, evd_trace_ref (store->recent->pdata[i]));
  *count = store->count;
  g_mutex_unlock (&store->lock);
}

guint64
evd_trace_store_count (EvdTraceStore *store)
{
  guint64 n;

  g_mutex_lock (&store->lock);
  n = store->count;
  g_mutex_unlock (&store->lock);
  return n;
}

/* ---- JSON ---- */

void
evd_json_string (GString *out, const char *s)
{
  g_string_append_c (out, '"');
  while (*s != '\0') {
    gunichar c = g_utf8_get_char_validated (s, -1);

    if (c == (gunichar) -1 || c == (gunichar) -2) {
      g_string_append (out, "\\ufffd");
      s++;
      continue;
    }
    if (c == '"' || c == '\\')
      g_string_append_printf (out, "\\%c", (char) c);
    else if (c < 0x20)
      g_string_append_printf (out, "\\u%04x", c);
    else
      g_string_append_len (out, s, g_utf8_next_char (s) - s);
    s = g_utf8_next_char (s);
  }
  g_string_append_c (out, '"');
}

static void
evd_trace_json (const EvdTrace *t, GString *out)
{
  g_string_append (out, "{\"request_id\": ");
  evd_json_string (out, t->request_id);
  g_string_append (out, ", \"principal\": ");
  if (t->principal != NULL)
    evd_json_string (out, t->principal);
  else
    g_string_append (out, "null");
  g_string_append_printf (out, ", \"wall_us\": %" G_GINT64_FORMAT ", \"duration_us\": %"
                          G_GINT64_FORMAT ", \"spans_cut\": %u, \"outcome\": ", t->wall_us,
                          t->duration_us, t->spans_cut);
  evd_json_string (out, t->outcome ? t->outcome : "");
  g_string_append (out, ", \"trace_id\": ");
  evd_json_string (out, t->trace_id);
  g_string_append (out, ", \"spans\": [");
  for (guint i = 0; i < t->spans->len; i++) {
    const EvdTraceSpan *s = &g_array_index (t->spans, EvdTraceSpan, i);
    g_string_append (out, i ? ", {\"key\": " : "{\"key\": ");
    evd_json_string (out, s->key);
    g_string_append (out, ", \"lookup\": ");
    evd_json_string (out, s->lookup);
    g_string_append (out, ", \"backend\": ");
    evd_json_string (out, s->backend);
    g_string_append_printf (out, ", \"start_us\": %" G_GINT64_FORMAT ", \"end_us\": %"
                            G_GINT64_FORMAT ", \"error_kind\": %d, \"error\": ",
                            s->start_us, s->end_us, s->error_kind);
    if (s->error != NULL)
      evd_json_string (out, s->error);
    else
      g_string_append (out, "null");
    g_string_append (out, ", \"marks\": [");
    if (s->marks != NULL) {
      g_auto (GStrv) words = g_strsplit (s->marks, " ", -1);
      for (guint k = 0; words[k] != NULL; k++) {
        if (k > 0)
          g_string_append (out, ", ");
        evd_json_string (out, words[k]);
      }
    }
    g_string_append (out, "]}");
  }
  g_string_append (out, "]}");
}

static void
evd_trace_json_list (GPtrArray *list, gboolean reverse, GString *out)
{
  g_string_append_c (out, '[');
  for (guint i = 0; i < list->len; i++) {
    if (i > 0)
      g_string_append (out, ", ");
    evd_trace_json (list->pdata[reverse ? list->len - 1 - i : i], out);
  }
  g_string_append_c (out, ']');
}

void
evd_trace_store_json (EvdTraceStore *store, GString *out)
{
  g_autoptr (GPtrArray) slowest = NULL;
  g_autoptr (GPtrArray) recent = NULL;
  guint64 count;

  evd_trace_store_snapshot (store, &slowest, &recent, &count);
  g_string_append (out, "{\"slowest\": ");
  evd_trace_json_list (slowest, FALSE, out);
  g_string_append (out, ", \"recent\": ");
  evd_trace_json_list (recent, TRUE, out);
  g_string_append_printf (out, ", \"traced_total\": %" G_GUINT64_FORMAT "}\n", count);
}

/* ---- HTML + SVG ---- */

#define EVD_SVG_WIDTH 960
#define EVD_SVG_LABEL 260     /* the call names' column */
#define EVD_SVG_ROW 22
#define EVD_SVG_AXIS 24

static void
evd_html_text (GString *out, const char *s)
{
  g_autofree char *escaped = g_markup_escape_text (s ? s : "", -1);

  g_string_append (out, escaped);
}

static const char *
evd_trace_color (const EvdTraceSpan *s)
{
  switch (s->error_kind) {
  case 0: return "#2f7ed8";      /* rows */
  case 3: return "#e8a317";      /* TIMEOUT */
  case 6: return "#9aa0a6";      /* CANCELLED */
  default: return "#d93025";     /* every other error */
  }
}

static const char *
evd_trace_outcome (const EvdTraceSpan *s)
{
  static const char *const names[] = {
    "ok", "unknown_lookup", "bad_params", "timeout", "backend", "overloaded", "cancelled",
  };

  return s->error_kind >= 0 && s->error_kind < (int) G_N_ELEMENTS (names) ? names[s->error_kind]
                                                                          : "error";
}

/* A tick step of 1, 2 or 5 x 10^n microseconds giving at most 8 ticks. */
static gint64
evd_trace_tick (gint64 total_us)
{
  gint64 step = 1;

  for (;;) {
    for (int m = 0; m < 3; m++) {
      gint64 s = step * (m == 0 ? 1 : m == 1 ? 2 : 5);
      if (total_us / s <= 8)
        return s;
    }
    step *= 10;
  }
}

static void
evd_trace_svg (const EvdTrace *t, GString *out)
{
  gint64 total = MAX (t->duration_us, 1);
  double area = EVD_SVG_WIDTH - EVD_SVG_LABEL - 10;
  guint rows = t->spans->len;
  int height = EVD_SVG_AXIS + (int) rows * EVD_SVG_ROW + 4;
  gint64 tick;

  for (guint i = 0; i < rows; i++)
    total = MAX (total, g_array_index (t->spans, EvdTraceSpan, i).end_us);
  tick = evd_trace_tick (total);
  g_string_append_printf (out, "<svg class=\"waterfall\" xmlns=\"http://www.w3.org/2000/svg\" "
                          "width=\"%d\" height=\"%d\" data-total-us=\"%" G_GINT64_FORMAT "\">\n",
                          EVD_SVG_WIDTH, height, total);
  for (gint64 x = 0; x <= total; x += tick) {
    double px = EVD_SVG_LABEL + area * (double) x / (double) total;
    g_string_append_printf (out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                            "stroke=\"#e0e0e0\"/><text x=\"%.1f\" y=\"14\" class=\"tick\">%g ms"
                            "</text>\n", px, EVD_SVG_AXIS - 6, px, height, px, x / 1000.0);
  }
  for (guint i = 0; i < rows; i++) {
    const EvdTraceSpan *s = &g_array_index (t->spans, EvdTraceSpan, i);
    double x = EVD_SVG_LABEL + area * (double) s->start_us / (double) total;
    /* At least 3 px: a call that failed at once must still show, in its colour. */
    double w = MAX (area * (double) (s->end_us - s->start_us) / (double) total, 3.0);
    int y = EVD_SVG_AXIS + (int) i * EVD_SVG_ROW;

    g_string_append (out, "<text class=\"label\" x=\"4\" y=\"");
    g_string_append_printf (out, "%d\">", y + 15);
    evd_html_text (out, s->key);
    if (g_strcmp0 (s->key, s->lookup) != 0) {
      g_string_append (out, " (");
      evd_html_text (out, s->lookup);
      g_string_append (out, ")");
    }
    if (s->marks != NULL) {
      g_string_append (out, " [");
      evd_html_text (out, s->marks);
      g_string_append (out, "]");
    }
    g_string_append (out, "</text>\n<rect class=\"bar\" data-key=\"");
    evd_html_text (out, s->key);
    g_string_append_printf (out, "\" data-start-us=\"%" G_GINT64_FORMAT "\" data-end-us=\"%"
                            G_GINT64_FORMAT "\" data-outcome=\"%s\" x=\"%.1f\" y=\"%d\" "
                            "width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>",
                            s->start_us, s->end_us, evd_trace_outcome (s), x, y + 3, w,
                            EVD_SVG_ROW - 6, evd_trace_color (s));
    evd_html_text (out, s->key);
    g_string_append (out, " \xe2\x80\x94 ");
    evd_html_text (out, s->backend);
    g_string_append_printf (out, ", %.3f to %.3f ms (%.3f ms)", s->start_us / 1000.0,
                            s->end_us / 1000.0, (s->end_us - s->start_us) / 1000.0);
    if (s->marks != NULL) {
      g_string_append (out, " [");
      evd_html_text (out, s->marks);
      g_string_append (out, "]");
    }
    if (s->error != NULL) {
      g_string_append (out, ": ");
      evd_html_text (out, s->error);
    }
    g_string_append (out, "</title></rect>\n");
  }
  g_string_append (out, "</svg>\n");
}

static void
evd_trace_html (const EvdTrace *t, GString *out)
{
  g_autoptr (GDateTime) when = g_date_time_new_from_unix_utc (t->wall_us / G_USEC_PER_SEC);
  g_autofree char *stamp = when ? g_date_time_format (when, "%Y-%m-%d %H:%M:%S UTC") : NULL;

  g_string_append (out, "<section class=\"trace\" data-request-id=\"");
  evd_html_text (out, t->request_id);
  g_string_append (out, "\">\n<h3>");
  evd_html_text (out, t->request_id);
  g_string_append_printf (out, " <small>%.3f ms &middot; ", t->duration_us / 1000.0);
  evd_html_text (out, t->outcome);
  g_string_append (out, " &middot; ");
  evd_html_text (out, stamp);
  if (t->principal != NULL) {
    g_string_append (out, " &middot; principal ");
    evd_html_text (out, t->principal);
  }
  if (t->trace_id[0] != '\0')
    g_string_append_printf (out, " &middot; trace <code class=\"trace-id\">%s</code>",
                            t->trace_id);  /* hex: nothing to escape */
  g_string_append (out, "</small></h3>\n");
  if (t->spans_cut > 0)
    g_string_append_printf (out, "<p class=\"cut\">%u more calls not kept (a trace keeps %d)"
                            "</p>\n", t->spans_cut, EVD_TRACE_SPANS_MAX);
  evd_trace_svg (t, out);
  g_string_append (out, "</section>\n");
}

static void
evd_trace_html_list (GPtrArray *list, gboolean reverse, const char *id, const char *title,
                     GString *out)
{
  g_string_append_printf (out, "<h2 id=\"%s\">%s</h2>\n", id, title);
  if (list->len == 0)
    g_string_append (out, "<p class=\"empty\">No traced request yet: set "
                          "<code>RequestContext.trace = true</code> on a fetch.</p>\n");
  for (guint i = 0; i < list->len; i++)
    evd_trace_html (list->pdata[reverse ? list->len - 1 - i : i], out);
}

void
evd_trace_store_html (EvdTraceStore *store, GString *out)
{
  g_autoptr (GPtrArray) slowest = NULL;
  g_autoptr (GPtrArray) recent = NULL;
  guint64 count;

  g_string_append (out,
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>evdal traces</title>\n<style>\n"
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#202124}\n"
    "h3{font-size:1em;margin:1.2em 0 .3em}small{color:#5f6368;font-weight:normal}\n"
    "svg text{font:12px monospace;fill:#202124}svg text.tick{fill:#5f6368;font-size:10px}\n"
    "rect.bar:hover{opacity:.75}\n"
    "</style></head><body>\n<h1>evdal traces</h1>\n"
    "<p>Requests sent with <code>trace = true</code>: one bar per call, from when it started "
    "to when it ended, in ms since the request was read. Blue: rows; amber: timeout; red: "
    "error; grey: cancelled.</p>\n");
  evd_trace_store_snapshot (store, &slowest, &recent, &count);
  g_string_append_printf (out, "<p>%" G_GUINT64_FORMAT " traced requests since start.</p>\n",
                          count);
  evd_trace_html_list (slowest, FALSE, "slowest", "Slowest", out);
  evd_trace_html_list (recent, TRUE, "recent", "Most recent", out);
  g_string_append (out, "</body></html>\n");
}

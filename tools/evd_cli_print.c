/* evd_cli_print: evdal-cli's text output (see evd_cli_print.h). */
#include "evd_cli_print.h"

#include <string.h>

#include "evd_cli_conn.h"
#include "evd_cli_value.h"

/* The pieces of a frame: corners and joints of the top, middle and bottom rules, then the
 * horizontal and vertical lines. */
typedef struct {
  const char *top[3], *mid[3], *bottom[3], *h, *v, *bar;
} EvdCliFrame;

static const EvdCliFrame evd_cli_box = {
  { "┌", "┬", "┐" }, { "├", "┼", "┤" }, { "└", "┴", "┘" }, "─", "│", "█",
};
static const EvdCliFrame evd_cli_ascii = {
  { "+", "+", "+" }, { "+", "+", "+" }, { "+", "+", "+" }, "-", "|", "#",
};

/* A grid of display-ready cells: the header row first, then the data rows. */
typedef struct {
  guint ncols;
  GPtrArray *cells;            /* char *, row-major */
  gboolean *right;             /* per column: numbers, aligned to the right */
} EvdCliGrid;

/* Columns a terminal gives the text: East Asian wide characters take two, combining marks
 * none. The text is valid UTF-8 without control characters (evd_cli_value_visible). */
static gsize
evd_cli_print_width (const char *s)
{
  gsize w = 0;

  for (; *s != '\0'; s = g_utf8_next_char (s)) {
    gunichar c = g_utf8_get_char (s);
    if (!g_unichar_iszerowidth (c))
      w += g_unichar_iswide (c) ? 2 : 1;
  }
  return w;
}

static void
evd_cli_print_repeat (GString *out, const char *piece, gsize n)
{
  while (n-- > 0)
    g_string_append (out, piece);
}

static void
evd_cli_print_rule (GString *out, const EvdCliFrame *f, const char *const joints[3],
                    const gsize *widths, guint ncols)
{
  g_string_append (out, joints[0]);
  for (guint c = 0; c < ncols; c++) {
    evd_cli_print_repeat (out, f->h, widths[c] + 2);
    g_string_append (out, c + 1 < ncols ? joints[1] : joints[2]);
  }
  g_string_append_c (out, '\n');
}

static void
evd_cli_print_row (GString *out, const EvdCliFrame *f, const EvdCliGrid *g, guint row,
                   const gsize *widths)
{
  g_string_append (out, f->v);
  for (guint c = 0; c < g->ncols; c++) {
    const char *cell = g->cells->pdata[row * g->ncols + c];
    gsize pad = widths[c] - evd_cli_print_width (cell);
    /* Headers are centred, as sqlite3 -box and psql do; values go left, numbers right. */
    gsize before = row == 0 ? pad / 2 : g->right[c] ? pad : 0;

    g_string_append_c (out, ' ');
    evd_cli_print_repeat (out, " ", before);
    g_string_append (out, cell);
    evd_cli_print_repeat (out, " ", pad - before);
    g_string_append_c (out, ' ');
    g_string_append (out, f->v);
  }
  g_string_append_c (out, '\n');
}

static void
evd_cli_print_grid (GString *out, const EvdCliGrid *g, gboolean ascii)
{
  const EvdCliFrame *f = ascii ? &evd_cli_ascii : &evd_cli_box;
  guint nrows = g->ncols ? g->cells->len / g->ncols : 0;
  g_autofree gsize *widths = g_new0 (gsize, g->ncols ? g->ncols : 1);

  if (g->ncols == 0)
    return;
  for (guint i = 0; i < g->cells->len; i++)
    widths[i % g->ncols] = MAX (widths[i % g->ncols], evd_cli_print_width (g->cells->pdata[i]));
  evd_cli_print_rule (out, f, f->top, widths, g->ncols);
  evd_cli_print_row (out, f, g, 0, widths);
  evd_cli_print_rule (out, f, f->mid, widths, g->ncols);
  for (guint r = 1; r < nrows; r++)
    evd_cli_print_row (out, f, g, r, widths);
  evd_cli_print_rule (out, f, f->bottom, widths, g->ncols);
}

static void
evd_cli_print_rows_footer (GString *out, guint n)
{
  g_string_append_printf (out, "(%u row%s)\n", n, n == 1 ? "" : "s");
}

void
evd_cli_print_table (GString *out, const evdalTable *t, gboolean ascii)
{
  EvdCliGrid g = { 0 };
  g_autofree gboolean *seen_text = NULL;
  guint nrows = t->rows ? t->rows->len : 0;

  /* The IDL promises one value per column; a row that has more still shows them all. */
  g.ncols = t->columns ? t->columns->len : 0;
  for (guint r = 0; r < nrows; r++)
    g.ncols = MAX (g.ncols, ((GPtrArray *) t->rows->pdata[r])->len);
  g.cells = g_ptr_array_new_with_free_func (g_free);
  g.right = g_new0 (gboolean, g.ncols + 1);
  seen_text = g_new0 (gboolean, g.ncols + 1);
  for (guint c = 0; c < g.ncols; c++)
    g_ptr_array_add (g.cells, c < t->columns->len
                     ? evd_cli_value_visible (t->columns->pdata[c]) : g_strdup ("?"));
  for (guint r = 0; r < nrows; r++) {
    GPtrArray *row = t->rows->pdata[r];
    for (guint c = 0; c < g.ncols; c++) {
      gboolean numeric = FALSE;
      const evdalValue *v = c < row->len ? row->pdata[c] : NULL;

      g_ptr_array_add (g.cells, v ? evd_cli_value_display (v, &numeric) : g_strdup (""));
      /* SQLite columns have no fixed type: a column is numeric when all its values are. */
      if (numeric)
        g.right[c] = TRUE;
      else if (v != NULL && !v->__isset_null_value)
        seen_text[c] = TRUE;
    }
  }
  for (guint c = 0; c < g.ncols; c++)
    g.right[c] = g.right[c] && !seen_text[c];
  evd_cli_print_grid (out, &g, ascii);
  evd_cli_print_rows_footer (out, nrows);
  g_ptr_array_unref (g.cells);
  g_free (g.right);
}

void
evd_cli_print_lookups (GString *out, GPtrArray *infos, gboolean ascii)
{
  static const char *const headers[] = { "name", "backend", "params", "timeout_ms",
                                         "description" };
  EvdCliGrid g = { G_N_ELEMENTS (headers), g_ptr_array_new_with_free_func (g_free), NULL };
  gboolean right[G_N_ELEMENTS (headers)] = { FALSE, FALSE, FALSE, TRUE, FALSE };

  g.right = right;
  for (guint c = 0; c < g.ncols; c++)
    g_ptr_array_add (g.cells, g_strdup (headers[c]));
  for (guint i = 0; i < infos->len; i++) {
    const evdalLookupInfo *info = infos->pdata[i];
    g_autoptr (GString) params = g_string_new (NULL);

    for (guint p = 0; info->params != NULL && p < info->params->len; p++)
      g_string_append_printf (params, "%s%s", p ? ", " : "", (char *) info->params->pdata[p]);
    g_ptr_array_add (g.cells, evd_cli_value_visible (info->name ? info->name : ""));
    g_ptr_array_add (g.cells, evd_cli_value_visible (info->backend ? info->backend : ""));
    g_ptr_array_add (g.cells, evd_cli_value_visible (params->str));
    g_ptr_array_add (g.cells, g_strdup_printf ("%d", info->timeout_ms));
    g_ptr_array_add (g.cells, evd_cli_value_visible (info->description ? info->description : ""));
  }
  evd_cli_print_grid (out, &g, ascii);
  evd_cli_print_rows_footer (out, infos->len);
  g_ptr_array_unref (g.cells);
}

/* "KEY" or "KEY (LOOKUP)" when the key does not say which lookup it called. */
static char *
evd_cli_print_heading (const EvdCliRequest *r, const char *key)
{
  const char *lookup = evd_cli_request_lookup (r, key);
  g_autofree char *heading = lookup == NULL || strcmp (lookup, key) == 0
                             ? g_strdup (key) : g_strdup_printf ("%s (%s)", key, lookup);

  return evd_cli_value_visible (heading);
}

guint
evd_cli_print_results (GString *out, const EvdCliRequest *r, const evdalFetchResponse *resp,
                       gboolean ascii)
{
  guint failed = 0;

  for (guint i = 0; i < r->keys->len; i++) {
    const char *key = r->keys->pdata[i];
    const evdalLookupResult *res = g_hash_table_lookup (resp->results, key);
    g_autofree char *heading = evd_cli_print_heading (r, key);

    if (i > 0)
      g_string_append_c (out, '\n');
    if (res == NULL) {
      /* The IDL promises one result per call; say so when a server does not keep it. */
      g_string_append_printf (out, "%s: ERROR: the server returned no result for this call\n",
                              heading);
      failed++;
    } else if (res->__isset_error) {
      g_autofree char *msg = evd_cli_value_visible (res->error->message ? res->error->message
                                                                         : "");
      g_string_append_printf (out, "%s: ERROR %s: %s\n", heading,
                              evd_cli_conn_error_kind_name (res->error->kind), msg);
      failed++;
    } else if (res->__isset_table) {
      g_string_append_printf (out, "%s:\n", heading);
      evd_cli_print_table (out, res->table, ascii);
    } else {
      g_string_append_printf (out, "%s: ERROR: the result has neither a table nor an error\n",
                              heading);
      failed++;
    }
  }
  return failed;
}

static double
evd_cli_print_ms (gint64 us)
{
  return (double) us / 1000.0;
}

void
evd_cli_print_waterfall (GString *out, const EvdCliRequest *r, const evdalFetchResponse *resp,
                         guint columns, gboolean ascii)
{
  const EvdCliFrame *f = ascii ? &evd_cli_ascii : &evd_cli_box;
  gsize wkey = strlen ("call"), wlookup = strlen ("lookup"), wbackend = strlen ("backend");
  gint64 total_us = MAX (resp->server_us, 1);
  guint spans = 0, bar_width;
  gsize prefix;
  g_autofree char *axis_end = NULL;
  g_autofree char *request_id = evd_cli_value_visible (resp->request_id ? resp->request_id
                                                                        : "?");
  /* Per call: its key, lookup and backend as tables show text (evd_cli_value_visible), so
   * that they are measured and printed as the terminal shows them. */
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; i < r->keys->len; i++) {
    const char *key = r->keys->pdata[i];
    const evdalLookupResult *res = g_hash_table_lookup (resp->results, key);
    const evdalSpan *s = res && res->__isset_span ? res->span : NULL;

    g_ptr_array_add (names, evd_cli_value_visible (key));
    g_ptr_array_add (names, evd_cli_value_visible (evd_cli_request_lookup (r, key)));
    g_ptr_array_add (names, evd_cli_value_visible (s == NULL ? "-" : s->backend ? s->backend
                                                                                : ""));
    wkey = MAX (wkey, evd_cli_print_width (names->pdata[3 * i]));
    wlookup = MAX (wlookup, evd_cli_print_width (names->pdata[3 * i + 1]));
    if (s != NULL) {
      spans++;
      wbackend = MAX (wbackend, evd_cli_print_width (names->pdata[3 * i + 2]));
      total_us = MAX (total_us, s->end_us);
    }
  }
  g_string_append_printf (out, "\ntrace of request %s: %u call%s, %.2f ms on the server",
                          request_id, r->keys->len,
                          r->keys->len == 1 ? "" : "s", evd_cli_print_ms (resp->server_us));
  if (evd_cli_request_trace_id (r) != NULL)
    g_string_append_printf (out, ", trace id %.32s", evd_cli_request_trace_id (r));
  g_string_append_c (out, '\n');
  if (spans == 0) {
    g_string_append (out, "(the server returned no spans)\n");
    return;
  }
  /* What precedes the bar (three padded names, two numbers, a '|'), and room after it for
   * the '|' and an error kind such as " UNKNOWN_LOOKUP". */
  prefix = wkey + wlookup + wbackend + 6 + 10 + 1 + 10 + 2 + 1;
  if (columns == 0)
    bar_width = EVD_CLI_PRINT_BAR_WIDTH;
  else
    bar_width = columns > prefix + 16 + 10 ? (guint) (columns - prefix - 16) : 10;
  axis_end = g_strdup_printf ("%.1f ms", evd_cli_print_ms (total_us));
  /* Keys and names are the caller's and the server's: padded by display width, by hand,
   * because printf pads by bytes. */
#define EVD_CLI_PAD(text, width)                                                  \
  G_STMT_START {                                                                  \
    g_string_append (out, (text));                                                \
    evd_cli_print_repeat (out, " ", (width) - evd_cli_print_width (text) + 2);    \
  } G_STMT_END
  EVD_CLI_PAD ("call", wkey);
  EVD_CLI_PAD ("lookup", wlookup);
  EVD_CLI_PAD ("backend", wbackend);
  g_string_append_printf (out, "%10s %10s  0 ms", "start ms", "dur ms");
  evd_cli_print_repeat (out, " ", bar_width + 2 > strlen (axis_end) + 4
                                  ? bar_width + 2 - strlen (axis_end) - 4 : 1);
  g_string_append_printf (out, "%s\n", axis_end);
  for (guint i = 0; i < r->keys->len; i++) {
    const char *key = r->keys->pdata[i];
    const evdalLookupResult *res = g_hash_table_lookup (resp->results, key);
    const evdalSpan *s = res && res->__isset_span ? res->span : NULL;
    guint from, to;

    EVD_CLI_PAD (names->pdata[3 * i], wkey);
    EVD_CLI_PAD (names->pdata[3 * i + 1], wlookup);
    EVD_CLI_PAD (names->pdata[3 * i + 2], wbackend);
    if (s == NULL) {
      g_string_append_printf (out, "%10s %10s\n", "-", "-");
      continue;
    }
    g_string_append_printf (out, "%10.2f %10.2f  %s", evd_cli_print_ms (s->start_us),
                            evd_cli_print_ms (s->end_us - s->start_us), f->v);
    /* Cells the span covers, at least one, so that even an instant call shows where it ran. */
    from = (guint) ((double) MAX (s->start_us, 0) * bar_width / (double) total_us);
    to = (guint) (((double) MAX (s->end_us, 0) * bar_width + (double) total_us - 1)
                  / (double) total_us);
    from = MIN (from, bar_width - 1);
    to = CLAMP (to, from + 1, bar_width);
    evd_cli_print_repeat (out, " ", from);
    evd_cli_print_repeat (out, f->bar, to - from);
    evd_cli_print_repeat (out, " ", bar_width - to);
    g_string_append (out, f->v);
    if (res->__isset_error)
      g_string_append_printf (out, " %s", evd_cli_conn_error_kind_name (res->error->kind));
    /* Span.marks: what happened besides the outcome (coalesced, cache_hit, hedged...). */
    for (guint m = 0; s->__isset_marks && s->marks != NULL && m < s->marks->len; m++) {
      g_autofree char *mark = evd_cli_value_visible (s->marks->pdata[m]);
      g_string_append_printf (out, " [%s]", mark);
    }
    g_string_append_c (out, '\n');
  }
#undef EVD_CLI_PAD
}

/* evd_rows: a lookup's rows in plain C (see evd_rows.h). */
#include "evd_rows.h"

#include <string.h>

struct _EvdRows {
  gatomicrefcount refs;
  guint n_columns;
  /* The column names come first (as text cells), then the rows' cells, row after row. */
  EvdCell *cells;
  guint n_cells, cells_cap;
  guint8 *arena;            /* bytes of every name, text and blob; texts end with a NUL */
  gsize arena_len, arena_cap;
  /* cells and arena start out in `block`, right after the struct (the cells, then the
   * arena); each moves to an allocation of its own when it outgrows its room there. */
  gboolean cells_apart, arena_apart;
  EvdCell block[];
};

/* Room made when the maker gave no hint: the column names and a row or so more. */
#define EVD_ROWS_DEFAULT_CELLS 16
#define EVD_ROWS_DEFAULT_ARENA 256

/* Storage (the cells or the arena) that outgrew its room, `used` bytes of it in use, moved to
 * `size` bytes: out of the block into an allocation of its own the first time, then by
 * reallocation. */
static gpointer
evd_rows_regrow (gpointer mem, gboolean *apart, gsize used, gsize size)
{
  if (*apart)
    return g_realloc (mem, size);
  *apart = TRUE;
  return memcpy (g_malloc (size), mem, used);
}

static EvdCell *
evd_rows_next_cell (EvdRows *r)
{
  if (r->n_cells == r->cells_cap) {
    guint cap = MAX (r->cells_cap * 2, 16);

    r->cells = evd_rows_regrow (r->cells, &r->cells_apart, r->n_cells * sizeof (EvdCell),
                                cap * sizeof (EvdCell));
    r->cells_cap = cap;
  }
  return &r->cells[r->n_cells++];
}

/* Copies len bytes (and a NUL when asked) into the arena; gives their offset. */
static gsize
evd_rows_keep (EvdRows *r, const void *data, gsize len, gboolean nul)
{
  gsize at = r->arena_len, need = at + len + (nul ? 1 : 0);

  if (need > r->arena_cap) {
    gsize cap = MAX (need, MAX (r->arena_cap * 2, 256));

    r->arena = evd_rows_regrow (r->arena, &r->arena_apart, at, cap);
    r->arena_cap = cap;
  }
  if (len > 0)
    memcpy (r->arena + at, data, len);
  if (nul)
    r->arena[at + len] = 0;
  r->arena_len = need;
  return at;
}

EvdRows *
evd_rows_new (guint n_columns, const char *const *columns)
{
  return evd_rows_new_sized (n_columns, columns, 0, 0);
}

/* A table with room for `cells` cells and `arena` bytes in its block, no cell yet. */
static EvdRows *
evd_rows_alloc (guint n_columns, gsize cells, gsize arena)
{
  gsize total;
  EvdRows *r;

  /* Past EVD_ROWS_BLOCK_MAX both shrink in proportion (each is cut to it first, so that the
   * product below cannot overflow). */
  cells = MIN (cells, EVD_ROWS_BLOCK_MAX / sizeof (EvdCell));
  arena = MIN (arena, EVD_ROWS_BLOCK_MAX);
  total = cells * sizeof (EvdCell) + arena;
  if (total > EVD_ROWS_BLOCK_MAX) {
    cells = cells * EVD_ROWS_BLOCK_MAX / total;
    arena = arena * EVD_ROWS_BLOCK_MAX / total;
  }

  r = g_malloc (sizeof (EvdRows) + cells * sizeof (EvdCell) + arena);
  *r = (EvdRows) { .n_columns = n_columns,
                   .cells = r->block, .cells_cap = (guint) cells,
                   .arena = (guint8 *) (r->block + cells), .arena_cap = arena };
  g_atomic_ref_count_init (&r->refs);
  return r;
}

EvdRows *
evd_rows_new_sized (guint n_columns, const char *const *columns, guint cells_hint,
                    gsize arena_hint)
{
  gsize cells = cells_hint, arena = arena_hint;
  EvdRows *r;

  if (cells == 0)
    cells = n_columns + EVD_ROWS_DEFAULT_CELLS;
  if (arena == 0) {
    arena = EVD_ROWS_DEFAULT_ARENA;
    for (guint i = 0; i < n_columns; i++)
      arena += strlen (columns[i]) + 1;
  }
  r = evd_rows_alloc (n_columns, cells, arena);
  for (guint i = 0; i < n_columns; i++)
    evd_rows_add_text (r, columns[i], -1);
  return r;
}

EvdRows *
evd_rows_new_like (const EvdRows *like, guint cells_hint, gsize arena_hint)
{
  guint n = like->n_columns;
  /* The names are the arena's first bytes, each text with its NUL, in column order. */
  gsize names = n > 0 ? like->cells[n - 1].v.off + like->cells[n - 1].len + 1 : 0;
  EvdRows *r = evd_rows_alloc (n, cells_hint ? cells_hint : n + EVD_ROWS_DEFAULT_CELLS,
                               arena_hint ? arena_hint : EVD_ROWS_DEFAULT_ARENA + names);

  if (r->cells_cap >= n && r->arena_cap >= names) {
    memcpy (r->cells, like->cells, n * sizeof (EvdCell));
    memcpy (r->arena, like->arena, names);
    r->n_cells = n;
    r->arena_len = names;
  } else {
    /* Hints smaller than the names themselves: added one by one, growing past the block. */
    for (guint i = 0; i < n; i++)
      evd_rows_add_text (r, (const char *) like->arena + like->cells[i].v.off,
                         like->cells[i].len);
  }
  return r;
}

void
evd_rows_size (const EvdRows *rows, guint *cells, gsize *arena_bytes)
{
  *cells = rows->n_cells;
  *arena_bytes = rows->arena_len;
}

EvdRows *
evd_rows_ref (EvdRows *rows)
{
  g_atomic_ref_count_inc (&rows->refs);
  return rows;
}

void
evd_rows_unref (EvdRows *rows)
{
  if (rows == NULL || !g_atomic_ref_count_dec (&rows->refs))
    return;
  if (rows->cells_apart)
    g_free (rows->cells);
  if (rows->arena_apart)
    g_free (rows->arena);
  g_free (rows);
}

void
evd_rows_add_null (EvdRows *rows)
{
  *evd_rows_next_cell (rows) = (EvdCell) { .kind = EVD_VALUE_NULL };
}

void
evd_rows_add_int (EvdRows *rows, gint64 v)
{
  *evd_rows_next_cell (rows) = (EvdCell) { .kind = EVD_VALUE_INT, .v.i = v };
}

void
evd_rows_add_real (EvdRows *rows, double v)
{
  *evd_rows_next_cell (rows) = (EvdCell) { .kind = EVD_VALUE_REAL, .v.r = v };
}

void
evd_rows_add_text (EvdRows *rows, const char *text, gssize len)
{
  gsize n = len < 0 ? strlen (text) : (gsize) len;
  gsize off = evd_rows_keep (rows, text, n, TRUE);

  *evd_rows_next_cell (rows) = (EvdCell) { .kind = EVD_VALUE_TEXT, .len = (guint32) n,
                                           .v.off = off };
}

void
evd_rows_add_blob (EvdRows *rows, const void *data, gsize len)
{
  gsize off = evd_rows_keep (rows, data, len, FALSE);

  *evd_rows_next_cell (rows) = (EvdCell) { .kind = EVD_VALUE_BLOB, .len = (guint32) len,
                                           .v.off = off };
}

guint
evd_rows_n_columns (const EvdRows *rows)
{
  return rows->n_columns;
}

const char *
evd_rows_column (const EvdRows *rows, guint col)
{
  g_return_val_if_fail (col < rows->n_columns, NULL);
  return (const char *) rows->arena + rows->cells[col].v.off;
}

guint
evd_rows_n_rows (const EvdRows *rows)
{
  return rows->n_columns ? (rows->n_cells - rows->n_columns) / rows->n_columns : 0;
}

const EvdCell *
evd_rows_cell (const EvdRows *rows, guint row, guint col)
{
  g_return_val_if_fail (row < evd_rows_n_rows (rows) && col < rows->n_columns, NULL);
  return &rows->cells[rows->n_columns * (row + 1) + col];
}

const EvdCell *
evd_rows_cells (const EvdRows *rows, guint *n_cells)
{
  *n_cells = rows->n_columns * (evd_rows_n_rows (rows) + 1);
  return rows->cells;
}

const guint8 *
evd_rows_cell_data (const EvdRows *rows, const EvdCell *cell)
{
  return rows->arena + cell->v.off;
}

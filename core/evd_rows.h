/* evd_rows: the rows a lookup returns, in plain C.
 *
 * A backend builds an EvdRows (on any thread: a SQLite worker fills one per statement) and
 * hands it to the engine; handlers/evd_response writes it into the fetch reply as the IDL's
 * Table. Cells are added in row order: after the column names, every n_columns cells make a
 * row. An EvdRows is immutable once handed over, and reference counted (atomically), so that
 * one table can answer several calls (the static backend shares one for all its calls).
 *
 * A table is one allocation when its maker knew roughly how big it would be
 * (evd_rows_new_sized: the struct, its cells and one arena for every column name, text and
 * blob in a single block), and grows its cells or arena apart only past that: no object per
 * value, and a table made on a worker thread and freed on an IO loop is one free (why that
 * matters: docs/BENCHMARKS.md).
 */
#pragma once

#include <glib.h>

#include "evd_value.h"

G_BEGIN_DECLS

typedef struct _EvdRows EvdRows;

/* The largest block evd_rows_new_sized() makes from its hints: a table past it (hundreds of
 * rows) grows apart like any vector, and its per-row cost dwarfs the few reallocations; a
 * block this size stays below glibc's mmap threshold, so it is never a system call. */
#define EVD_ROWS_BLOCK_MAX (64 * 1024)

/* A table with these column names and no rows yet. */
EvdRows *evd_rows_new (guint n_columns, const char *const *columns);
/* The same, in one allocation with room for `cells_hint` cells (the column names count as
 * cells) and `arena_hint` bytes of names, texts (each with a NUL) and blobs; 0 for either
 * gives the column names and a little more. A hint too small only costs a separate
 * allocation past it; hints are cut at EVD_ROWS_BLOCK_MAX bytes together, so that a huge
 * hint does not make a huge block for a small table. evd_rows_size() gives a table's hints. */
EvdRows *evd_rows_new_sized (guint n_columns, const char *const *columns, guint cells_hint,
                             gsize arena_hint);
/* A table with the column names of `like` (any table: its rows are not looked at) and no rows,
 * sized as evd_rows_new_sized() would: the names' cells and bytes are copied whole, so a maker
 * that keeps one table of a statement's names (a SQLite worker) neither asks for them nor
 * measures them again per table. */
EvdRows *evd_rows_new_like (const EvdRows *like, guint cells_hint, gsize arena_hint);
/* The hints that would have made `rows` in one block: its cells and arena bytes so far. */
void evd_rows_size (const EvdRows *rows, guint *cells, gsize *arena_bytes);
EvdRows *evd_rows_ref (EvdRows *rows);
void evd_rows_unref (EvdRows *rows);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdRows, evd_rows_unref)

/* Appending the next cell of the current row. */
void evd_rows_add_null (EvdRows *rows);
void evd_rows_add_int (EvdRows *rows, gint64 v);
void evd_rows_add_real (EvdRows *rows, double v);
/* Text must be valid UTF-8 (the caller checks what it did not make itself); len -1: up to
 * the NUL. Text is kept whole, NUL bytes included. */
void evd_rows_add_text (EvdRows *rows, const char *text, gssize len);
void evd_rows_add_blob (EvdRows *rows, const void *data, gsize len);

guint evd_rows_n_columns (const EvdRows *rows);
const char *evd_rows_column (const EvdRows *rows, guint col);
/* Complete rows only. */
guint evd_rows_n_rows (const EvdRows *rows);
const EvdCell *evd_rows_cell (const EvdRows *rows, guint row, guint col);
/* Every cell, the column names first (as text cells), then the rows' cells row after row,
 * complete rows only: for encoders that walk the table in one pass. */
const EvdCell *evd_rows_cells (const EvdRows *rows, guint *n_cells);
/* A text or blob cell's bytes (text is followed by a NUL, for convenience). */
const guint8 *evd_rows_cell_data (const EvdRows *rows, const EvdCell *cell);

G_END_DECLS

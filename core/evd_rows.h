/* evd_rows: the rows a lookup returns, in plain C, and their encoding as the IDL's Table.
 *
 * A backend builds an EvdRows (on any thread: a SQLite worker fills one per statement), hands
 * it to the engine, and the engine writes it into the fetch reply with evd_rows_write(). No
 * GObject is made per value: a table is one allocation when its maker knew roughly how big
 * it would be (evd_rows_new_sized: the struct, its cells and one arena for every column name,
 * text and blob in a single block), and grows its cells or arena apart only past that, where
 * c_glib's evdalTable made one GObject per value and one GPtrArray per row, each made and
 * freed through GLib's global locks that the IO loops and the SQLite workers then contended
 * for. One block matters doubly because a table made on a SQLite worker is freed on an IO
 * loop: glibc then frees each piece into the worker's arena under its lock.
 *
 * Cells are added in row order: after the column names, every n_columns cells make a row.
 * An EvdRows is immutable once handed over, and reference counted (atomically), so that one
 * table can answer several calls (the static backend shares one for all its calls).
 */
#pragma once

#include <glib.h>

#include "evd_writer.h"

G_BEGIN_DECLS

/* What a Value holds. */
typedef enum {
  EVD_VALUE_INVALID = -1,   /* no field or several fields set: a malformed union */
  EVD_VALUE_NULL,
  EVD_VALUE_INT,
  EVD_VALUE_REAL,
  EVD_VALUE_TEXT,
  EVD_VALUE_BLOB,
} EvdValueKind;

typedef struct {
  EvdValueKind kind;
  guint32 len;              /* text and blob: bytes */
  union {
    gint64 i;
    double r;
    gsize off;              /* text and blob: where the bytes start in the arena */
  } v;
} EvdCell;

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
/* A text or blob cell's bytes (text is followed by a NUL, for convenience). */
const guint8 *evd_rows_cell_data (const EvdRows *rows, const EvdCell *cell);

/* Writes the rows as the IDL's Table struct: { 1: list<string> columns,
 * 2: list<list<Value>> rows }. */
void evd_rows_write (const EvdRows *rows, EvdWriter *w);

G_END_DECLS

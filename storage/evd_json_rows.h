/* evd_json_rows: a JSON document (an HTTP service's answer) as a lookup's rows.
 *
 * The mapping is the one a user would guess (README, "HTTP upstreams"):
 *   - an array of objects: one row per object; the columns are the union of their keys in
 *     the order first seen; a key an object lacks is null in its row;
 *   - an array of anything else (scalars, or objects mixed with other values): one column
 *     `value`, one row per element;
 *   - an object: one row, one column per key;
 *   - a scalar: one row, one column `value`; null or an empty array: no rows (column `value`);
 *   - cells: integers are int, other numbers real, strings text, true/false int 1/0, null
 *     null, and a nested object or array its JSON text (compact).
 * `rows` picks the part of the document that holds the rows: object keys joined by dots
 * ("data.items"); NULL or "" is the whole document.
 */
#pragma once

#include "evd_rows.h"

G_BEGIN_DECLS

#define EVD_JSON_ROWS_ERROR (evd_json_rows_error_quark ())
GQuark evd_json_rows_error_quark (void);
typedef enum {
  EVD_JSON_ROWS_ERROR_SYNTAX,   /* the body is not JSON */
  EVD_JSON_ROWS_ERROR_PATH,     /* the rows path is absent, or crosses a non-object */
} EvdJsonRowsError;

/* Checks a rows path: keys separated by single dots, none empty. */
gboolean evd_json_rows_path_valid (const char *path);

/* The rows of `json[0..len)` at `path`, or NULL with an error naming the path's key that is
 * missing or the parser's complaint. */
EvdRows *evd_json_rows_parse (const char *json, gsize len, const char *path, GError **error);
/* The two readers evd_json_rows_parse() is made of (evd_json_rows.c), apart for the tests:
 * the fast path, whose NULL (no error) leaves the document to json-glib (not plain JSON, or
 * the path is not there), and json-glib's tree, the reference. */
EvdRows *evd_json_rows_parse_tape (const char *json, gsize len, const char *path);
EvdRows *evd_json_rows_parse_glib (const char *json, gsize len, const char *path,
                                   GError **error);

G_END_DECLS

/* evd_cli_print: evdal-cli's text output, for people: tables drawn like `sqlite3 -box` or
 * psql (a header, aligned columns, numbers to the right, NULL as NULL, blobs as x'..', a
 * "(N rows)" footer), every call's result under a heading with its key, and the --trace
 * waterfall of the calls' spans.
 *
 * Everything is appended to a GString, so the caller writes it out at once. `ascii` draws with
 * + - | and # instead of box-drawing characters, for terminals that are not UTF-8; values are
 * UTF-8 either way, as the IDL has them. */
#pragma once

#include <glib.h>

#include "evd_cli_request.h"
#include "evd_thrift.h"

G_BEGIN_DECLS

/* One table with its "(N rows)" footer. */
void evd_cli_print_table (GString *out, const evdalTable *t, gboolean ascii);
/* lookups(): a table of name, backend, params, timeout_ms, description. */
void evd_cli_print_lookups (GString *out, GPtrArray *infos, gboolean ascii);
/* Every call's result in the request's order: "KEY:" (with "(LOOKUP)" when the key is not the
 * lookup's name) and its table, or "KEY: ERROR KIND: message". Returns how many calls did not
 * succeed (an error result, or no result at all). */
guint evd_cli_print_results (GString *out, const EvdCliRequest *r,
                             const evdalFetchResponse *resp, gboolean ascii);
/* The waterfall: one line per call with its key, lookup, backend, start and duration in ms and
 * a bar on a time axis that spans the whole request, like an APM trace view. The axis fills a
 * terminal `columns` wide, or is EVD_CLI_PRINT_BAR_WIDTH columns when `columns` is 0 (output
 * to a pipe or file, where a fixed width keeps runs comparable). */
#define EVD_CLI_PRINT_BAR_WIDTH 50
void evd_cli_print_waterfall (GString *out, const EvdCliRequest *r,
                              const evdalFetchResponse *resp, guint columns, gboolean ascii);

G_END_DECLS

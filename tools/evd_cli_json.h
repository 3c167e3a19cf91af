/* evd_cli_json: evdal-cli's --json output: one JSON document per run, for scripts.
 *
 * Strings are written by core/evd_json, evdal's one JSON string writer (its rules: UTF-8
 * passed through, bytes that are not UTF-8 as U+FFFD, quotes, backslashes and control
 * characters escaped). Values map as: NULL null, int and
 * real numbers (a real always has a '.' or an exponent; NaN and infinities, which JSON cannot
 * say, become null), text a string, blob {"hex": "00ff"}.
 *
 *   ping     {"ping": "pong", "ms": 0.21}
 *   lookups  {"lookups": [{"name", "backend", "params", "timeout_ms", "description"}...]}
 *   fetch    {"request_id", "server_us", "ok", "results": {KEY: {"lookup", "columns", "rows"}
 *            or {"lookup", "error": {"kind", "message"}}, each with "span": {"start_us",
 *            "end_us", "backend"} when traced}}
 *   failure  {"exception": {"type": "LookupFailed"|"InvalidRequest"|"Overloaded"|
 *            "TApplicationException", "message", ...}} */
#pragma once

#include <glib.h>

#include "evd_cli_request.h"
#include "evd_thrift.h"

G_BEGIN_DECLS

void evd_cli_json_value (GString *out, const evdalValue *v);
void evd_cli_json_ping (GString *out, const char *pong, double ms);
void evd_cli_json_lookups (GString *out, GPtrArray *infos);
/* Returns how many calls did not succeed, as evd_cli_print_results() does. */
guint evd_cli_json_response (GString *out, const EvdCliRequest *r,
                             const evdalFetchResponse *resp);
/* A declared exception of fetch; exactly one of them is non-NULL. */
void evd_cli_json_exception (GString *out, const EvdCliRequest *r,
                             const evdalInvalidRequest *invalid, const evdalLookupFailed *failed,
                             const evdalOverloaded *overloaded);
/* A TApplicationException: its type code and message. */
void evd_cli_json_application_error (GString *out, int code, const char *message);

G_END_DECLS

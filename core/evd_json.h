/* evd_json: JSON strings, the one writer of them for /traces.json, /lookups and evdal-cli's
 * --json (documents small and write-only, so no JSON library: GLib only, like all of core/).
 *
 * The rules: the string is written between quotes; '"' and '\' are escaped, as are control
 * characters (\n \r \t \b \f by their short forms, the others as \u00XX); valid UTF-8 passes
 * through as it is; each byte that is not part of valid UTF-8 becomes \ufffd (U+FFFD), so that
 * the document stays valid JSON whatever a client sent.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* `s` (NULL: "") as a JSON string, quotes included. */
void evd_json_string (GString *out, const char *s);

G_END_DECLS

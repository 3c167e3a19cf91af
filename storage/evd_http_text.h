/* evd_http_text: what evdal writes into an HTTP request from what a client sent, such that
 * the client cannot choose another request than the configured one.
 *
 * - A GET template ("/users/{user_id}/recs?limit={limit}") is checked once: it starts with
 *   '/', its literal text is URL text (no space, control or non-ASCII byte, no '#', '%' only
 *   before two hex digits), each {name} is closed and named with letters, digits and '_'.
 *   Expanding it puts each param's text (an int in decimal, a real as the shortest decimal
 *   that reads back the same, text as is, a blob as its bytes) percent-encoded for where it
 *   stands: only letters, digits, '-', '_', '~' (and '.' in the query) go as they are, so a
 *   '/', '?', '&', '#', space or ".." stays inside its path segment or query value.
 * - A header value is percent-encoded beyond printable ASCII ('%' and space included): no CR,
 *   LF or NUL can reach a header line, and the receiver always percent-decodes.
 * - Key/value pairs are form-encoded ("k=v&k2=v2") with the query's rules.
 */
#pragma once

#include "evd_value.h"

G_BEGIN_DECLS

typedef struct _EvdHttpTextTemplate EvdHttpTextTemplate;

#define EVD_HTTP_TEXT_ERROR (evd_http_text_error_quark ())
GQuark evd_http_text_error_quark (void);
enum { EVD_HTTP_TEXT_ERROR_TEMPLATE };

/* NULL with an error saying what is wrong and at which offset. */
EvdHttpTextTemplate *evd_http_text_template_new (const char *text, GError **error);
void evd_http_text_template_free (EvdHttpTextTemplate *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdHttpTextTemplate, evd_http_text_template_free)

/* The params it names, distinct, in the order first named. */
guint evd_http_text_template_n_params (const EvdHttpTextTemplate *t);
const char *evd_http_text_template_param (const EvdHttpTextTemplate *t, guint i);

/* Appends the expansion to `out`. FALSE, with the param's name in *missing, when a param is
 * absent or null (`out` then holds a part of the expansion). */
gboolean evd_http_text_template_expand (const EvdHttpTextTemplate *t, const EvdParam *params,
                                        guint n_params, GString *out, const char **missing);

/* A value's text as the template puts it (before encoding); FALSE for null. */
gboolean evd_http_text_value (GString *out, const EvdValue *v);
/* Appends `s[0..len)` percent-encoded but for letters, digits and the characters of `keep`. */
void evd_http_text_encode (GString *out, const char *s, gsize len, const char *keep);
/* "Name: value" with the value encoded as a header value. Free with g_free. */
char *evd_http_text_header (const char *name, const char *value);
/* The same line appended to `out`. */
void evd_http_text_header_append (GString *out, const char *name, const char *value);
/* Appends "k=v&k2=v2" for NULL-terminated `keys` and their `values`. */
void evd_http_text_form (GString *out, const char *const *keys, const char *const *values);

G_END_DECLS

/* evd_cli_value: evdal Values (idl/evdal.thrift: union Value) as a person types and reads them,
 * for evdal-cli.
 *
 * Params are typed Values, not strings: a SQLite lookup binds them with their type, so
 * `user_id=42` must travel as an int, or `WHERE id = :user_id` matches nothing. Typed text
 * therefore guesses the type the way SQL literals read (42 int, 4.2 real, null, x'00ff' blob,
 * anything else text), and NAME:TYPE=VALUE says it outright when the guess is wrong
 * (`code:text=007`). */
#pragma once

#include <glib.h>

#include "evd_thrift.h"

G_BEGIN_DECLS

/* A Value from its text. `type` is NULL to guess, or one of int, real, text, blob (hex digits,
 * with or without x'...'), null (empty or "null" text). Fails with G_OPTION_ERROR_BAD_VALUE
 * when the text is not of that type, or an int literal does not fit 64 bits. */
evdalValue *evd_cli_value_parse (const char *type, const char *text, GError **error);

/* The Value as a table shows it: NULL, an integer, a real that reads back as the same double
 * (always with a '.' or an exponent, so 5.0 is not taken for an int), x'hex' for a blob, text through
 * evd_cli_value_visible(). *numeric says whether to align it to the right. */
char *evd_cli_value_display (const evdalValue *v, gboolean *numeric);

/* Text made safe for a terminal's table: bad UTF-8 replaced, control characters shown as
 * \n, \t, \r, \xNN or \uNNNN, so that a value never breaks a table's lines. */
char *evd_cli_value_visible (const char *text);
/* How a U+0000 inside a reply's string reaches the printers (evd_cli_conn reads strings so):
 * the two bytes C0 80, which valid UTF-8 never holds. */
#define EVD_CLI_VALUE_NUL "\xc0\x80"

/* The shortest decimal of `d` that reads back as `d`, in the C locale, into buf. Finite values
 * only make sense to JSON; NaN and infinities come out as "NaN", "Inf", "-Inf". */
void evd_cli_value_format_real (double d, char buf[G_ASCII_DTOSTR_BUF_SIZE]);

/* Lower-case hex of bytes, for blobs. */
char *evd_cli_value_hex (const guint8 *data, gsize len);

G_END_DECLS

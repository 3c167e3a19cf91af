/* evd_json_tape: a strict JSON reader that makes no object per value: one pass over the text
 * writes a flat array of tokens (a "tape"), strings and numbers pointing back into the text.
 * It is the fast path of evd_json_rows (an HTTP service's answer to rows): json-glib builds a
 * tree of GObjects, GLists and hash tables for the same document, which cost a fifth of an HTTP
 * lookup's CPU (docs/BENCHMARKS.md, http4).
 *
 * It reads RFC 8259 JSON only, and declines (FALSE) not only what is not JSON but also what a
 * full parser should judge: nesting deeper than EVD_JSON_TAPE_MAX_DEPTH, an integer outside
 * int64, a number longer than 63 characters or not finite, a string that is not valid UTF-8.
 * Its caller then hands the document to json-glib, which answers as it always did; so the tape
 * only ever has to be right about plain JSON (tests/unit/test_json_rows compares the two over
 * thousands of generated documents).
 *
 * The layout: a value is one token; an array's token is followed by its elements' tokens, an
 * object's by key, value, key, value... ; a container's `end` is the index just past its last
 * token, so a reader skips a whole value in one step. Tokens live in the tape's inline room
 * for a small document (no allocation) and on the heap past it.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Deeper documents are left to json-glib (recursion bounded by this many open containers). */
#define EVD_JSON_TAPE_MAX_DEPTH 64
/* Tokens held inside the tape itself: a few rows of a few columns (a 265-byte answer of five
 * three-key objects is 42 tokens). */
#define EVD_JSON_TAPE_INLINE 128

typedef enum {
  EVD_JSON_TAPE_NULL,
  EVD_JSON_TAPE_FALSE,
  EVD_JSON_TAPE_TRUE,
  EVD_JSON_TAPE_INT,
  EVD_JSON_TAPE_REAL,
  EVD_JSON_TAPE_STRING,
  EVD_JSON_TAPE_ARRAY,
  EVD_JSON_TAPE_OBJECT,
} EvdJsonTapeType;

typedef struct {
  guint8 type;              /* EvdJsonTapeType */
  guint8 escaped;           /* STRING: holds a backslash escape (evd_json_tape_unescape) */
  guint32 start;            /* offset in the text: a string's first byte after its quote, a
                             * container's bracket, a number's first character */
  guint32 len;              /* a string's bytes between its quotes; a container's whole text */
  guint32 n;                /* ARRAY: elements; OBJECT: members; STRING: free for the reader */
  union {
    gint64 i;               /* INT */
    double r;               /* REAL */
    guint32 end;            /* ARRAY, OBJECT: the index of the token after the last inside */
  } v;
} EvdJsonTapeToken;

typedef struct {
  EvdJsonTapeToken *tokens; /* `local` or the heap */
  guint n;
  guint cap;
  EvdJsonTapeToken local[EVD_JSON_TAPE_INLINE];
} EvdJsonTape;

/* Readies a tape (on the stack, say); evd_json_tape_clear() frees what it grew. */
void evd_json_tape_init (EvdJsonTape *tape);
void evd_json_tape_clear (EvdJsonTape *tape);

/* Reads `json[0..len)` into the tape (its previous tokens dropped); FALSE when the text is
 * not JSON or is JSON this reader declines (above). The root is token 0. */
gboolean evd_json_tape_parse (EvdJsonTape *tape, const char *json, gsize len);

/* The index of the token after `i`'s whole value. */
static inline guint
evd_json_tape_next (const EvdJsonTape *tape, guint i)
{
  const EvdJsonTapeToken *t = &tape->tokens[i];

  return t->type == EVD_JSON_TAPE_ARRAY || t->type == EVD_JSON_TAPE_OBJECT ? t->v.end : i + 1;
}

/* Appends an escaped string token's text, unescaped, to `out`; FALSE (out then holds part of
 * it) for the escapes a full parser should judge: \u0000 and a surrogate not in a pair. */
gboolean evd_json_tape_unescape (const char *json, const EvdJsonTapeToken *t, GString *out);

G_END_DECLS

/* evd_value: the vocabulary every layer shares: a value's kind, a param's value, a table
 * cell, and the kinds of error a call can end with.
 *
 * GLib only: storage/ clients, handlers/ backends and the wire codec all speak these types,
 * and none of them needs the generated Thrift code to do so. A value borrows its bytes (text
 * and blob point into a request or a table); nothing here allocates.
 */
#pragma once

#include <glib.h>

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

/* A param's value. Text and blob: `len` bytes at `data` (in the request), NULs included;
 * a NUL follows the last byte. */
typedef struct {
  EvdValueKind kind;
  gint64 i;
  double r;
  const char *data;         /* text, blob */
  guint32 len;
} EvdValue;

typedef struct {
  const char *name;
  EvdValue value;
} EvdParam;

/* A cell of a table (evd_rows): the bytes of text and blob live in the table's arena. */
typedef struct {
  EvdValueKind kind;
  guint32 len;              /* text and blob: bytes */
  union {
    gint64 i;
    double r;
    gsize off;              /* text and blob: where the bytes start in the arena */
  } v;
} EvdCell;

/* Why a call failed: the IDL's ErrorKind, value for value (the wire encoders convert with a
 * G_STATIC_ASSERT per value, so the two cannot drift apart). 0 is no error. */
typedef enum {
  EVD_ERROR_KIND_NONE = 0,
  EVD_ERROR_KIND_UNKNOWN_LOOKUP = 1,  /* no lookup of that name */
  EVD_ERROR_KIND_BAD_PARAMS = 2,      /* a param unknown, missing or of the wrong type */
  EVD_ERROR_KIND_TIMEOUT = 3,         /* the call's time budget ran out */
  EVD_ERROR_KIND_BACKEND = 4,         /* the backend failed */
  EVD_ERROR_KIND_OVERLOADED = 5,      /* the lookup's concurrency limit and queue are full */
  EVD_ERROR_KIND_CANCELLED = 6,       /* stopped because the request ended */
} EvdErrorKind;

/* How many EvdErrorKind values there are, NONE included (an array index per kind). */
#define EVD_ERROR_KIND_N 7

/* "int", "text"...: for messages. */
const char *evd_value_kind_name (EvdValueKind kind);
/* The param named `name`, or NULL. */
const EvdValue *evd_value_find_param (const EvdParam *params, guint n_params, const char *name);

G_END_DECLS

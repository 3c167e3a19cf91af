/* evd_fetch_reply: the reply to a remote `fetch` (DataAccess.fetch's result struct), decoded
 * straight from its bytes into one outcome per call, for the Thrift upstream backend.
 *
 * Why not c_glib: its generated decoder makes a GObject per Value, a GPtrArray per row and a
 * hash table of results, which the backend then copied into EvdRows. At the front of a two-tier
 * evdal that was a third of its CPU per page (GLib, GObject, malloc: docs/BENCHMARKS.md, "Beyond
 * one machine"). This reads each table into EvdRows as it goes, with evd_reader.
 *
 * The reply must have passed evd_wire's scanner with fetch's result schema first (lengths and
 * element types checked); the decoder still checks every read. It gives what the c_glib path
 * gave (tests/unit/test_fetch_reply compares them), with one difference kept on purpose: text
 * with a NUL byte comes back whole, as a direct fetch gives it, where c_glib cut it there.
 */
#pragma once

#include <glib.h>

#include "evd_rows.h"
#include "evd_value.h"
#include "evd_wire.h"

G_BEGIN_DECLS

/* What the reply says of one call, by its key "0", "1"... (the slot the backend gave it). */
typedef struct {
  EvdRows *rows;            /* its table, when it has a usable one */
  EvdErrorKind kind;        /* its error's kind when it failed (BACKEND for an unknown one);
                             * NONE otherwise */
  char *message;            /* its error's message when it failed; with kind NONE and no rows,
                             * why its table is unusable ("a row of the wrong width"); NULL
                             * when it has rows or no result at all */
} EvdFetchReplyCall;

typedef enum {
  EVD_FETCH_REPLY_SUCCESS,  /* a FetchResponse: see calls[] */
  EVD_FETCH_REPLY_OVERLOADED,
  EVD_FETCH_REPLY_INVALID,  /* InvalidRequest */
  EVD_FETCH_REPLY_FAILED,   /* LookupFailed (the remote had a critical call fail) */
  EVD_FETCH_REPLY_NONE,     /* none of these is set */
} EvdFetchReplyOutcome;

typedef struct {
  EvdFetchReplyOutcome outcome;
  char *message;            /* the exception's message ("" when it has none) */
  char *failed_call;        /* LookupFailed's call */
  guint failed_slot;        /* the slot it names ("0", "1"...), or G_MAXUINT */
  EvdErrorKind failed_kind; /* its error's kind (BACKEND for an unknown one, or none) */
  gint32 retry_after_ms;    /* Overloaded's */
  guint n_calls;
  EvdFetchReplyCall *calls; /* n_calls of them, by slot */
} EvdFetchReply;

/* Decodes the result struct in body[0..len) for n_calls slots into `reply`, which
 * evd_fetch_reply_clear() frees. FALSE, with a static reason, when it does not decode. */
gboolean evd_fetch_reply_decode (const guint8 *body, gsize len, EvdProto proto, guint n_calls,
                                 EvdFetchReply *reply, const char **why);
void evd_fetch_reply_clear (EvdFetchReply *reply);

/* An exception message's body, TApplicationException { 1: string message, 2: i32 type }: its
 * message (NULL when it has none; free with g_free). FALSE, with a static reason, when it does
 * not decode. By hand too: c_glib's ThriftApplicationException leaves 48 bytes of GObject
 * qdata behind each time one is freed (its finalizer leaks, as rpc/evd_rpc.c notes). */
gboolean evd_fetch_reply_app_exception (const guint8 *body, gsize len, EvdProto proto,
                                        char **message, const char **why);

G_END_DECLS

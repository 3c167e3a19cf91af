/* evd_rpc: Thrift RPC over evdal's own framing: decoding calls, running method handlers
 * asynchronously, encoding replies.
 *
 * A connection hands evd_rpc one validated message at a time (evd_wire has checked every
 * length and depth). evd_rpc_dispatch() decodes it with c_glib's generated code, finds the
 * method in the service's table (accepting multiplexed "Service:method" names) and calls its
 * handler with an EvdCall.
 *
 * The life of an EvdCall. The handler owns the duty to complete the call exactly once, with
 * evd_call_reply() (the method's generated *Result struct: success or a declared exception)
 * or evd_call_fail() (a TApplicationException). It may do so before returning, from a later
 * iteration of the call's loop, or from another thread (the completion then travels to the
 * loop with evd_loop_post). Completion encodes the reply in the request's protocol and
 * transport and gives it to the connection, which sends replies in request order. If the
 * connection goes away first, the call is cancelled: the cancel hook set with
 * evd_call_on_cancel() runs on the loop, and the handler must still complete the call (its
 * reply is then dropped); only then is the call freed. Oneway calls are completed the same
 * way and send nothing.
 */
#pragma once

#include "evd_loop.h"
#include "evd_metrics.h"
#include "evd_thrift.h"
#include "evd_wire.h"
#include "evd_writer.h"

G_BEGIN_DECLS

typedef struct _EvdCall EvdCall;
/* `args` is the method's decoded args: a c_glib *Args struct, or what its `decode` made. */
typedef void (*EvdMethodHandler) (EvdCall *call, gpointer args, gpointer service_data);
typedef void (*EvdCancelFunc) (EvdCall *call, gpointer data);
/* What the connection does with a finished call: runs on the call's loop. */
typedef void (*EvdCallDoneFunc) (EvdCall *call, gpointer owner);
/* The bytes the owner lets the call's reply take, asked on the call's loop when it completes. */
typedef gsize (*EvdCallLimitFunc) (gpointer owner);

typedef struct {
  const char *name;
  GType args_type;     /* generated *Args struct */
  EvdMethodHandler handler;
  /* Optional: answers a call the service refused before its args were decoded (see
   * EvdService.overloaded), with args NULL: typically a declared Overloaded exception. */
  EvdMethodHandler shed;
  /* Optional: decodes the args struct by hand instead of c_glib (args_type is then unused),
   * for the methods on every request's path; NULL with an error when it does not decode.
   * What it returns is freed with free_args. */
  gpointer (*decode) (EvdProto proto, const guint8 *body, gsize len, GError **error);
  GDestroyNotify free_args;
} EvdMethod;

typedef struct {
  const char *name;    /* for multiplexed clients, e.g. "DataAccess" */
  const EvdMethod *methods;
  guint n_methods;
  gpointer data;       /* handed to every handler */
  /* Work still under way that will post back to a loop (a worker thread's query), which the
   * loops must outlive. Shutdown waits for 0. NULL: never any. */
  guint (*pending) (gpointer data);
  /* The IDL's schema of each method's args, checked by the validation walk before c_glib
   * decodes (see evd_wire.h). NULL: no check. */
  EvdWireSchemaFn args_schema;
  /* Optional: asked for each call of a method with a `shed` handler, before its args are
   * decoded. TRUE sheds it: under overload, decoding what will be refused anyway is the work
   * that keeps the loop behind, so refusing must cost less than serving. */
  gboolean (*overloaded) (gpointer data, EvdLoop *loop);
  /* Optional: called on each IO loop's thread once it runs, before it serves a request: the
   * service may prepare what it keeps per loop (connections to its backends). */
  void (*loop_started) (gpointer data, EvdLoop *loop);
  /* Where TApplicationExceptions are counted (the handlers count their own outcomes); may be
   * NULL. */
  EvdMetrics *metrics;
} EvdService;

/* ---- For the connection. ---- */

/* From the message header alone (scan->header_ok, the body not walked yet): when the
 * service says it is overloaded and the method has a shed handler, a call that handler will
 * answer, its args never walked nor decoded; else NULL, and the message is to be read in full
 * and handed to evd_rpc_prepare(). Refusing must cost far less than serving, or shedding
 * cannot keep an overloaded server's throughput up. */
EvdCall *evd_rpc_shed (const EvdService *service, EvdLoop *loop, EvdWireFormat fmt,
                       const EvdWireScanner *scan);

/* Decodes the message data[0..scan->msg_len) and prepares its call. When !body_ok (the
 * scanner said BAD_BODY) only the header is used. Never fails: a message that does not decode
 * gives a call that will complete with PROTOCOL_ERROR, an unknown method one that will
 * complete with UNKNOWN_METHOD. Nothing runs until evd_call_start(). */
EvdCall *evd_rpc_prepare (const EvdService *service, EvdLoop *loop, EvdWireFormat fmt,
                          const EvdWireScanner *scan, const guint8 *data, gboolean body_ok);
/* Runs the call's handler (or completes it with its decoding error). `done` runs on the loop
 * when the call completes, possibly before this returns. */
void evd_call_start (EvdCall *call, EvdCallDoneFunc done, gpointer owner);

/* Bounds the call's reply (before evd_call_start): a handler that writes a large reply asks
 * evd_call_reply_limit() and fails what does not fit (a fetch fails those calls alone). */
void evd_call_set_reply_limit (EvdCall *call, EvdCallLimitFunc fn);
gboolean evd_call_is_done (EvdCall *call);
/* The encoded reply, framed when the request was; NULL for oneway calls. Owned by the call. */
GByteArray *evd_call_reply_bytes (EvdCall *call);
/* Cancels a call that is not done (the owner is going away); its done callback will not run,
 * and the call frees itself once its handler completes it. */
void evd_call_abandon (EvdCall *call);
/* Frees a done call. */
void evd_call_free (EvdCall *call);

/* ---- For method handlers. ---- */

/* Completes with the method's *Result struct (consumed: the call takes the reference). */
void evd_call_reply (EvdCall *call, ThriftStruct *result);
/* A result that never changes (a shed call's Overloaded), encoded once in each protocol by
 * c_glib itself, so that answering with it allocates and builds nothing. */
typedef struct _EvdRpcCanned EvdRpcCanned;
EvdRpcCanned *evd_rpc_canned_new (ThriftStruct *result, GError **error);
void evd_rpc_canned_free (EvdRpcCanned *canned);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdRpcCanned, evd_rpc_canned_free)
/* Completes with a canned *Result, byte for byte what evd_call_reply() of the struct it was
 * made from would send. On the call's loop only (the canned reply is not referenced). */
void evd_call_reply_canned (EvdCall *call, const EvdRpcCanned *canned);
/* Completes with a *Result struct written by `write` with evd_writer, in the call's protocol,
 * before this returns: for the replies on every request's path, which c_glib's GObjects make
 * costly (see evd_writer.h). On the call's loop only. */
typedef void (*EvdRpcWriteFunc) (EvdWriter *w, gconstpointer data);
void evd_call_reply_write (EvdCall *call, EvdRpcWriteFunc write, gconstpointer data);
/* Completes with a TApplicationException. */
void evd_call_fail (EvdCall *call, ThriftApplicationExceptionError kind, const char *message);
/* Runs `fn` on the call's loop if the call is cancelled before it completes. */
void evd_call_on_cancel (EvdCall *call, EvdCancelFunc fn, gpointer data);
gboolean evd_call_is_cancelled (EvdCall *call);
/* The bytes the whole encoded reply (header and frame included) may take; G_MAXSIZE: no
 * bound. On the call's loop only, when completing. */
gsize evd_call_reply_limit (EvdCall *call);
EvdLoop *evd_call_loop (EvdCall *call);
const char *evd_call_method (EvdCall *call);
/* Monotonic time (us) at which the whole request had been read. */
gint64 evd_call_read_us (EvdCall *call);
/* The peer, for log lines ("127.0.0.1:51234", "unix"). Valid during the call. */
const char *evd_call_peer (EvdCall *call);
void evd_call_set_peer (EvdCall *call, const char *peer);
/* Logs that (part of) a client's call was refused: a warning naming the call's peer, through
 * its loop's limiter for refusals (evd_log_limited), so a client cannot flood the log. On the
 * call's loop only. */
void evd_call_log_refusal (EvdCall *call, const char *format, ...) G_GNUC_PRINTF (2, 3);

/* ---- Encoding, exposed for tests and tools. ---- */

/* Appends one reply message (framed if fmt says so) carrying `result` to `out`. */
gboolean evd_rpc_encode (EvdLoop *loop, EvdWireFormat fmt, const char *name, guint8 type,
                         gint32 seqid, ThriftStruct *result, GByteArray *out, GError **error);

G_END_DECLS

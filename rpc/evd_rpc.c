/* evd_rpc: decoding calls, asynchronous completion, encoding replies (see evd_rpc.h). */
#include "evd_rpc.h"

#include <string.h>
#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "evd_log.h"
#include "evd_transport.h"

struct _EvdCall {
  EvdLoop *loop;
  const EvdMethod *method;
  gpointer service_data;
  gpointer args;               /* decoded; NULL when the call failed before its handler */
  char *name;                  /* method name without a service prefix, for the reply */
  gint32 seqid;
  guint8 type;                 /* EVD_MSG_CALL or EVD_MSG_ONEWAY */
  EvdWireFormat fmt;
  gint64 read_us;
  const char *peer;            /* borrowed from the connection */
  EvdMetrics *metrics;         /* the service's */

  /* a failure found while preparing, sent by evd_call_start */
  ThriftApplicationExceptionError early_kind;
  char *early_message;
  gboolean log_early;          /* a refusal nobody logged yet (the connection logs bad bodies) */

  EvdCallDoneFunc done;
  gpointer owner;
  EvdCallLimitFunc reply_limit; /* the owner's bound on this reply's bytes; NULL: none */
  EvdCancelFunc cancel_fn;
  gpointer cancel_data;
  GByteArray *reply;
  gboolean shed;               /* refused before decoding: the method's shed handler answers */
  gboolean completed;          /* the handler has completed it */
  gboolean abandoned;          /* the owner left; free on completion */
};

/* ---- The per-loop codec: one transport and a protocol of each kind, reused. ---- */

/* A reply buffer starts at the size of its method's recent replies on this loop, so that a
 * fetch reply of a few KiB is allocated once instead of growing from 256 bytes by 3 or 4
 * reallocations while its tables are written. The remembered size is the largest recent
 * reply: a larger one raises it at once, a smaller one lets it down by 1/16, so a method
 * whose replies vary keeps room for its recent largest. It is capped at
 * EVD_RPC_REPLY_HINT_MAX, so that one huge reply does not make every later one allocate as
 * much (a reply past it grows as before). A loop remembers EVD_RPC_REPLY_METHODS methods (a
 * service has a few; an unknown method's errors count as one, method NULL); others start at
 * EVD_RPC_REPLY_MIN. */
#define EVD_RPC_REPLY_MIN 256
#define EVD_RPC_REPLY_HINT_MAX (64 * 1024)
#define EVD_RPC_REPLY_METHODS 8

typedef struct {
  const EvdMethod *method;
  guint bytes;                 /* 0: the slot is free */
} EvdRpcReplySize;

typedef struct {
  EvdTransport *transport;
  ThriftProtocol *binary;
  ThriftProtocol *compact;
  /* Calls refused (unknown method or service, undecodable args, and the engine's refused
   * lookups): a client can send those at will, so their log lines are rate-limited, per loop. */
  EvdLogLimit refusals;
  EvdRpcReplySize reply_sizes[EVD_RPC_REPLY_METHODS];
} EvdRpcCodec;

static ThriftProtocol *
evd_rpc_new_protocol (EvdProto proto, EvdTransport *t)
{
  GType type = proto == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL
                                          : THRIFT_TYPE_BINARY_PROTOCOL;
  return g_object_new (type, "transport", t, NULL);
}

static void
evd_rpc_codec_free (gpointer data)
{
  EvdRpcCodec *c = data;

  g_object_unref (c->binary);
  g_object_unref (c->compact);
  g_object_unref (c->transport);
  g_free (c);
}

static EvdRpcCodec *
evd_rpc_codec_new (void)
{
  EvdRpcCodec *c = g_new0 (EvdRpcCodec, 1);

  c->transport = evd_transport_new ();
  c->binary = evd_rpc_new_protocol (EVD_PROTO_BINARY, c->transport);
  c->compact = evd_rpc_new_protocol (EVD_PROTO_COMPACT, c->transport);
  return c;
}

static EvdRpcCodec *
evd_rpc_codec (EvdLoop *loop)
{
  gpointer *slot = evd_loop_codec_slot (loop);

  if (*slot == NULL) {
    *slot = evd_rpc_codec_new ();
    evd_loop_set_codec_free (loop, evd_rpc_codec_free);
  }
  return *slot;
}

static ThriftProtocol *
evd_rpc_codec_protocol (EvdRpcCodec *c, EvdProto proto)
{
  return proto == EVD_PROTO_COMPACT ? c->compact : c->binary;
}

/* The compact protocol keeps a stack of field ids between calls; a decode that failed
 * half-way leaves it dirty, so the protocol is replaced rather than trusted. */
static void
evd_rpc_codec_reset (EvdRpcCodec *c, EvdProto proto)
{
  ThriftProtocol **p = proto == EVD_PROTO_COMPACT ? &c->compact : &c->binary;

  /* c_glib's compact protocol does not free that stack when it is finalized. */
  if (proto == EVD_PROTO_COMPACT)
    g_queue_clear (&THRIFT_COMPACT_PROTOCOL (*p)->_last_field);
  g_object_unref (*p);
  *p = evd_rpc_new_protocol (proto, c->transport);
}

/* ---- Encoding. ---- */

/* Writes a message's body (a result struct, an exception) with the protocol. */
typedef gboolean (*EvdRpcBodyWriter) (ThriftProtocol *p, gconstpointer body, GError **error);

static gboolean
evd_rpc_write_struct (ThriftProtocol *p, gconstpointer body, GError **error)
{
  return thrift_struct_write (THRIFT_STRUCT (body), p, error) >= 0;
}

/* A framed message starts with its length, patched in once the message is written. */
static guint
evd_rpc_frame_open (GByteArray *out, gboolean framed)
{
  guint start = out->len;

  if (framed)
    g_byte_array_set_size (out, start + 4);
  return start;
}

static void
evd_rpc_frame_close (GByteArray *out, gboolean framed, guint start)
{
  if (framed) {
    guint32 n = GUINT32_TO_BE (out->len - start - 4);
    memcpy (out->data + start, &n, 4);
  }
}

/* One message, framed when fmt says so, appended to out; out is left as it was on failure. */
static gboolean
evd_rpc_encode_with (EvdRpcCodec *c, EvdWireFormat fmt, const char *name, guint8 type,
                     gint32 seqid, EvdRpcBodyWriter write, gconstpointer body, GByteArray *out,
                     GError **error)
{
  ThriftProtocol *p = evd_rpc_codec_protocol (c, fmt.proto);
  guint start = evd_rpc_frame_open (out, fmt.framed);
  gboolean ok;

  evd_transport_set_output (c->transport, out);
  ok = thrift_protocol_write_message_begin (p, name, type, seqid, error) >= 0 &&
       write (p, body, error) &&
       thrift_protocol_write_message_end (p, error) >= 0;
  evd_transport_set_output (c->transport, NULL);
  if (!ok) {
    g_byte_array_set_size (out, start);
    evd_rpc_codec_reset (c, fmt.proto);
    return FALSE;
  }
  evd_rpc_frame_close (out, fmt.framed, start);
  return TRUE;
}

gboolean
evd_rpc_encode (EvdLoop *loop, EvdWireFormat fmt, const char *name, guint8 type, gint32 seqid,
                ThriftStruct *result, GByteArray *out, GError **error)
{
  EvdRpcCodec *own = NULL;
  gboolean ok;

  if (loop == NULL)
    own = evd_rpc_codec_new ();
  ok = evd_rpc_encode_with (own ? own : evd_rpc_codec (loop), fmt, name, type, seqid,
                            evd_rpc_write_struct, result, out, error);
  if (own != NULL)
    evd_rpc_codec_free (own);
  return ok;
}

/* ---- Canned replies: a result struct encoded once per protocol. ---- */

struct _EvdRpcCanned {
  GBytes *body[EVD_PROTO_COMPACT + 1];  /* indexed by EvdProto */
};

EvdRpcCanned *
evd_rpc_canned_new (ThriftStruct *result, GError **error)
{
  g_autoptr (EvdRpcCanned) canned = g_new0 (EvdRpcCanned, 1);
  EvdRpcCodec *c = evd_rpc_codec_new ();
  static const EvdProto protos[] = { EVD_PROTO_BINARY, EVD_PROTO_COMPACT };
  gboolean ok = TRUE;

  for (guint i = 0; ok && i < G_N_ELEMENTS (protos); i++) {
    GByteArray *out = g_byte_array_new ();

    evd_transport_set_output (c->transport, out);
    ok = thrift_struct_write (result, evd_rpc_codec_protocol (c, protos[i]), error) >= 0;
    evd_transport_set_output (c->transport, NULL);
    canned->body[protos[i]] = g_byte_array_free_to_bytes (out);
  }
  evd_rpc_codec_free (c);
  return ok ? g_steal_pointer (&canned) : NULL;
}

void
evd_rpc_canned_free (EvdRpcCanned *canned)
{
  if (canned == NULL)
    return;
  for (guint i = 0; i < G_N_ELEMENTS (canned->body); i++)
    g_clear_pointer (&canned->body[i], g_bytes_unref);
  g_free (canned);
}

/* The struct was written by c_glib when the canned reply was made: copying its bytes after
 * the message header gives exactly what writing it again would. */
static gboolean
evd_rpc_write_canned (ThriftProtocol *p, gconstpointer body, GError **error)
{
  gsize len;
  gconstpointer data = g_bytes_get_data ((GBytes *) body, &len);

  return thrift_transport_write (p->transport, (gpointer) data, (guint32) len, error);
}

/* ---- Preparing a call. ---- */

static void
evd_call_set_early_error (EvdCall *call, ThriftApplicationExceptionError kind, char *message)
{
  call->log_early = TRUE;
  call->early_kind = kind;
  g_free (call->early_message);
  call->early_message = message;
}

/* A message name is "method" or "Service:method", read as a C string (up to its first NUL).
 * Gives the method part; FALSE when the prefix names another service. The shed check and the
 * call's resolution both go through here, so they cannot disagree on what a name means. */
static gboolean
evd_rpc_split_name (const EvdService *service, const EvdWireScanner *scan, const char **method,
                    gsize *method_len)
{
  const char *name = (const char *) scan->name;
  gsize len = strnlen (name, scan->name_len);
  const char *colon = memchr (name, ':', len);

  *method = colon ? colon + 1 : name;
  *method_len = len - (gsize) (*method - name);
  return colon == NULL || ((gsize) (colon - name) == strlen (service->name) &&
                           memcmp (name, service->name, (gsize) (colon - name)) == 0);
}

static const EvdMethod *
evd_rpc_find_method (const EvdService *service, const char *name, gsize len)
{
  for (guint i = 0; i < service->n_methods; i++)
    if (strlen (service->methods[i].name) == len &&
        memcmp (service->methods[i].name, name, len) == 0)
      return &service->methods[i];
  return NULL;
}

/* The method a header names, without allocating: for the shed check of every message. */
static const EvdMethod *
evd_rpc_peek_method (const EvdService *service, const EvdWireScanner *scan)
{
  const char *method;
  gsize len;

  if (!evd_rpc_split_name (service, scan, &method, &len))
    return NULL;
  return evd_rpc_find_method (service, method, len);
}

/* Resolves the header's name; sets the call's name or its early error. */
static const EvdMethod *
evd_rpc_resolve (EvdCall *call, const EvdService *service, const EvdWireScanner *scan)
{
  const char *method;
  gsize len;
  gboolean ours = evd_rpc_split_name (service, scan, &method, &len);
  const EvdMethod *m;

  call->name = g_strndup (method, len);
  if (!ours) {
    evd_call_set_early_error (call, THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN_METHOD,
                              g_strdup_printf ("unknown service in \"%.*s\"",
                                               (int) scan->name_len, (const char *) scan->name));
    return NULL;
  }
  m = evd_rpc_find_method (service, method, len);
  if (m == NULL)
    evd_call_set_early_error (call, THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN_METHOD,
                              g_strdup_printf ("unknown method \"%s\"", call->name));
  return m;
}

static gpointer
evd_rpc_decode_args (EvdLoop *loop, EvdWireFormat fmt, const EvdMethod *m, const guint8 *body,
                     gsize len, GError **error)
{
  EvdRpcCodec *c = evd_rpc_codec (loop);
  g_autoptr (GObject) args = NULL;

  if (m->decode != NULL)
    return m->decode (fmt.proto, body, len, error);
  args = g_object_new (m->args_type, NULL);

  evd_transport_set_input (c->transport, body, len);
  if (thrift_struct_read (THRIFT_STRUCT (args), evd_rpc_codec_protocol (c, fmt.proto),
                          error) < 0) {
    evd_rpc_codec_reset (c, fmt.proto);
    return NULL;
  }
  return g_steal_pointer (&args);
}

/* A call with what its header says: method, name, seqid, type, or an early error. */
static EvdCall *
evd_rpc_call_new (const EvdService *service, EvdLoop *loop, EvdWireFormat fmt,
                  const EvdWireScanner *scan)
{
  EvdCall *call = g_new0 (EvdCall, 1);

  call->loop = loop;
  call->fmt = fmt;
  call->seqid = scan->seqid;
  call->type = scan->type;
  call->read_us = g_get_monotonic_time ();
  call->service_data = service->data;
  call->metrics = service->metrics;
  call->method = evd_rpc_resolve (call, service, scan);
  if (call->type != EVD_MSG_CALL && call->type != EVD_MSG_ONEWAY) {
    evd_call_set_early_error (call, THRIFT_APPLICATION_EXCEPTION_ERROR_INVALID_MESSAGE_TYPE,
                              g_strdup_printf ("message type %u is not a call", call->type));
    call->type = EVD_MSG_CALL;
    call->method = NULL;
  }
  return call;
}

EvdCall *
evd_rpc_shed (const EvdService *service, EvdLoop *loop, EvdWireFormat fmt,
              const EvdWireScanner *scan)
{
  const EvdMethod *m;
  EvdCall *call;

  if (service->overloaded == NULL || !service->overloaded (service->data, loop))
    return NULL;
  m = evd_rpc_peek_method (service, scan);
  if (m == NULL || m->shed == NULL || scan->type != EVD_MSG_CALL)
    return NULL;
  call = evd_rpc_call_new (service, loop, fmt, scan);
  call->shed = TRUE;
  return call;
}

EvdCall *
evd_rpc_prepare (const EvdService *service, EvdLoop *loop, EvdWireFormat fmt,
                 const EvdWireScanner *scan, const guint8 *data, gboolean body_ok)
{
  EvdCall *call = evd_rpc_call_new (service, loop, fmt, scan);
  g_autoptr (GError) error = NULL;

  if (call->method == NULL)
    return call;
  if (!body_ok) {
    evd_call_set_early_error (call, THRIFT_APPLICATION_EXCEPTION_ERROR_PROTOCOL_ERROR,
                              g_strdup (scan->reason));
    call->log_early = FALSE;  /* the connection logged the walk's verdict */
    return call;
  }
  call->args = evd_rpc_decode_args (loop, fmt, call->method, data + scan->body_offset,
                                    scan->msg_len - scan->body_offset, &error);
  if (call->args == NULL)
    evd_call_set_early_error (call, THRIFT_APPLICATION_EXCEPTION_ERROR_PROTOCOL_ERROR,
                              g_strdup_printf ("arguments of %s do not decode: %s", call->name,
                                               error->message));
  return call;
}

/* The TApplicationException kinds a call can be refused with before its handler runs. */
static const char *
evd_rpc_refusal_name (ThriftApplicationExceptionError kind)
{
  switch (kind) {
  case THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN_METHOD:
    return "UNKNOWN_METHOD";
  case THRIFT_APPLICATION_EXCEPTION_ERROR_INVALID_MESSAGE_TYPE:
    return "INVALID_MESSAGE_TYPE";
  case THRIFT_APPLICATION_EXCEPTION_ERROR_PROTOCOL_ERROR:
    return "PROTOCOL_ERROR";
  default:
    return "refused";
  }
}

void
evd_call_log_refusal (EvdCall *call, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  evd_log_limited (&evd_rpc_codec (call->loop)->refusals, evd_call_peer (call), "%s", message);
}

/* A refusal is logged once, here, where the peer is known (evd_call_start runs after the
 * connection set it); the message quotes the client's method name, cut short. */
static void
evd_rpc_log_refusal (EvdCall *call, const char *message)
{
  evd_call_log_refusal (call, "%s: %.200s", evd_rpc_refusal_name (call->early_kind),
                        message ? message : "no such method");
}

void
evd_call_start (EvdCall *call, EvdCallDoneFunc done, gpointer owner)
{
  call->done = done;
  call->owner = owner;
  if (call->shed) {
    call->method->shed (call, NULL, call->service_data);
    return;
  }
  if (call->args == NULL) {
    g_autofree char *message = g_steal_pointer (&call->early_message);

    if (call->log_early)
      evd_rpc_log_refusal (call, message);
    evd_call_fail (call, call->early_kind, message ? message : "no such method");
    return;
  }
  call->method->handler (call, call->args, call->service_data);
}

/* ---- Completion. ---- */

/* A completion: the method's result struct (or a canned one), or a TApplicationException's
 * kind and message. */
typedef struct {
  EvdCall *call;
  ThriftStruct *result;
  const EvdRpcCanned *canned;  /* instead of result: already encoded */
  EvdRpcWriteFunc write;       /* instead of result: writes it by hand */
  gconstpointer write_data;
  ThriftApplicationExceptionError kind;
  char *message;
} EvdCallCompletion;

/* TApplicationException is { 1: string message, 2: i32 type }. It is written here rather
 * than through c_glib's ThriftApplicationException, whose finalize leaks (it does not chain
 * up to GObject's), so that a client provoking errors cannot make the server grow. */
static gboolean
evd_rpc_write_app_exception (ThriftProtocol *p, ThriftApplicationExceptionError kind,
                             const char *message, GError **error)
{
  return thrift_protocol_write_struct_begin (p, "TApplicationException", error) >= 0 &&
         thrift_protocol_write_field_begin (p, "message", T_STRING, 1, error) >= 0 &&
         thrift_protocol_write_string (p, message, error) >= 0 &&
         thrift_protocol_write_field_end (p, error) >= 0 &&
         thrift_protocol_write_field_begin (p, "type", T_I32, 2, error) >= 0 &&
         thrift_protocol_write_i32 (p, (gint32) kind, error) >= 0 &&
         thrift_protocol_write_field_end (p, error) >= 0 &&
         thrift_protocol_write_field_stop (p, error) >= 0 &&
         thrift_protocol_write_struct_end (p, error) >= 0;
}

typedef struct {
  ThriftApplicationExceptionError kind;
  const char *message;
} EvdRpcAppException;

static gboolean
evd_rpc_write_app_exception_body (ThriftProtocol *p, gconstpointer body, GError **error)
{
  const EvdRpcAppException *x = body;

  return evd_rpc_write_app_exception (p, x->kind, x->message, error);
}

/* The whole message by hand: the header as c_glib's protocols write it, then the result. */
static void
evd_call_encode_written (EvdCall *call, EvdCallCompletion *c)
{
  EvdWriter w;
  guint start = evd_rpc_frame_open (call->reply, call->fmt.framed);

  evd_writer_init (&w, call->reply, call->fmt.proto);
  evd_writer_message_begin (&w, call->name, EVD_MSG_REPLY, call->seqid);
  c->write (&w, c->write_data);
  evd_rpc_frame_close (call->reply, call->fmt.framed, start);
}

/* The method's remembered reply size on this loop (a free slot is taken), or NULL when the
 * loop already remembers EVD_RPC_REPLY_METHODS others. */
static EvdRpcReplySize *
evd_rpc_reply_size (EvdRpcCodec *codec, const EvdMethod *method)
{
  for (guint i = 0; i < EVD_RPC_REPLY_METHODS; i++) {
    EvdRpcReplySize *s = &codec->reply_sizes[i];

    if (s->bytes == 0)
      s->method = method;
    if (s->method == method)
      return s;
  }
  return NULL;
}

static void
evd_call_encode_into (EvdRpcCodec *codec, EvdCall *call, EvdCallCompletion *c)
{
  EvdRpcAppException x = { c->kind, c->message };
  g_autoptr (GError) error = NULL;

  if (c->write != NULL) {
    evd_call_encode_written (call, c);
    return;
  } else if (c->canned != NULL) {
    if (evd_rpc_encode_with (codec, call->fmt, call->name, EVD_MSG_REPLY, call->seqid,
                             evd_rpc_write_canned, c->canned->body[call->fmt.proto],
                             call->reply, &error))
      return;
  } else if (c->result != NULL) {
    if (evd_rpc_encode_with (codec, call->fmt, call->name, EVD_MSG_REPLY, call->seqid,
                             evd_rpc_write_struct, c->result, call->reply, &error))
      return;
  } else {
    if (!evd_rpc_encode_with (codec, call->fmt, call->name, EVD_MSG_EXCEPTION, call->seqid,
                              evd_rpc_write_app_exception_body, &x, call->reply, &error))
      g_critical ("exception for %s does not encode: %s", call->name, error->message);
    return;
  }
  /* Our own result does not encode: a bug, but the client must still get an answer. */
  g_critical ("reply to %s does not encode: %s", call->name, error->message);
  x = (EvdRpcAppException) { THRIFT_APPLICATION_EXCEPTION_ERROR_INTERNAL_ERROR, error->message };
  evd_rpc_encode_with (codec, call->fmt, call->name, EVD_MSG_EXCEPTION, call->seqid,
                       evd_rpc_write_app_exception_body, &x, call->reply, NULL);
}

static void
evd_call_encode (EvdCall *call, EvdCallCompletion *c)
{
  EvdRpcCodec *codec = evd_rpc_codec (call->loop);
  EvdRpcReplySize *size = evd_rpc_reply_size (codec, call->method);

  call->reply = g_byte_array_sized_new (MAX (size ? size->bytes : 0, EVD_RPC_REPLY_MIN));
  evd_call_encode_into (codec, call, c);
  if (size != NULL)
    size->bytes = MIN (MAX (call->reply->len, size->bytes - size->bytes / 16),
                       EVD_RPC_REPLY_HINT_MAX);
}

/* On the loop: encode, then tell the owner (or just free, if the owner left). */
static void
evd_call_finish (EvdCallCompletion *c)
{
  EvdCall *call = c->call;

  if (call->completed) {
    g_critical ("call %s completed twice; the second completion is ignored", call->name);
  } else if (call->abandoned) {
    call->completed = TRUE;
    evd_call_free (call);
  } else {
    call->completed = TRUE;
    if (c->result == NULL && c->canned == NULL && c->write == NULL)
      evd_metrics_request (call->metrics, evd_metrics_method (call->method ? call->method->name : NULL),
                           EVD_OUTCOME_APP_ERROR);
    if (call->type != EVD_MSG_ONEWAY)
      evd_call_encode (call, c);
    call->done (call, call->owner);
  }
  g_clear_object (&c->result);
  g_free (c->message);
}

static void
evd_call_complete_here (gpointer data)
{
  evd_call_finish (data);
  g_free (data);
}

static void
evd_call_complete (EvdCall *call, ThriftStruct *result, ThriftApplicationExceptionError kind,
                   const char *message)
{
  EvdCallCompletion *c = g_new (EvdCallCompletion, 1);

  *c = (EvdCallCompletion) { call, result, NULL, NULL, NULL, kind, g_strdup (message) };
  if (evd_loop_is_current (call->loop))
    evd_call_complete_here (c);
  else
    evd_loop_post (call->loop, evd_call_complete_here, c);
}

void
evd_call_reply (EvdCall *call, ThriftStruct *result)
{
  evd_call_complete (call, result, 0, NULL);
}

void
evd_call_reply_canned (EvdCall *call, const EvdRpcCanned *canned)
{
  EvdCallCompletion c = { call, NULL, canned, NULL, NULL, 0, NULL };

  /* On the loop only, so the canned reply is used before this returns and need not be
   * referenced: what makes it cheaper than building a result is that nothing is allocated. */
  g_return_if_fail (evd_loop_is_current (call->loop));
  evd_call_finish (&c);
}

void
evd_call_reply_write (EvdCall *call, EvdRpcWriteFunc write, gconstpointer data)
{
  EvdCallCompletion c = { call, NULL, NULL, write, data, 0, NULL };

  /* On the loop only: what `write` reads belongs to the caller, used before this returns. */
  g_return_if_fail (evd_loop_is_current (call->loop));
  evd_call_finish (&c);
}

void
evd_call_fail (EvdCall *call, ThriftApplicationExceptionError kind, const char *message)
{
  evd_call_complete (call, NULL, kind, message);
}

/* ---- The owner's side. ---- */

void
evd_call_set_reply_limit (EvdCall *call, EvdCallLimitFunc fn)
{
  call->reply_limit = fn;
}

gsize
evd_call_reply_limit (EvdCall *call)
{
  if (call->reply_limit == NULL || call->abandoned)
    return G_MAXSIZE;
  return call->reply_limit (call->owner);
}

gboolean
evd_call_is_done (EvdCall *call)
{
  return call->completed;
}

GByteArray *
evd_call_reply_bytes (EvdCall *call)
{
  return call->reply;
}

void
evd_call_abandon (EvdCall *call)
{
  g_return_if_fail (!call->completed);
  call->abandoned = TRUE;
  call->peer = "(gone)";
  if (call->cancel_fn != NULL) {
    EvdCancelFunc fn = call->cancel_fn;
    call->cancel_fn = NULL;
    fn (call, call->cancel_data);
  }
}

void
evd_call_free (EvdCall *call)
{
  if (call == NULL)
    return;
  if (call->args != NULL) {
    if (call->method->free_args != NULL)
      call->method->free_args (call->args);
    else
      g_object_unref (call->args);
  }
  if (call->reply != NULL)
    g_byte_array_unref (call->reply);
  g_free (call->name);
  g_free (call->early_message);
  g_free (call);
}

/* ---- Accessors for handlers. ---- */

void
evd_call_on_cancel (EvdCall *call, EvdCancelFunc fn, gpointer data)
{
  call->cancel_fn = fn;
  call->cancel_data = data;
}

gboolean
evd_call_is_cancelled (EvdCall *call)
{
  return call->abandoned;
}

EvdLoop *
evd_call_loop (EvdCall *call)
{
  return call->loop;
}

const char *
evd_call_method (EvdCall *call)
{
  return call->name;
}

gint64
evd_call_read_us (EvdCall *call)
{
  return call->read_us;
}

const char *
evd_call_peer (EvdCall *call)
{
  return call->peer ? call->peer : "?";
}

void
evd_call_set_peer (EvdCall *call, const char *peer)
{
  call->peer = peer;
}

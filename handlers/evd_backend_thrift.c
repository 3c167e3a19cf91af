/* evd_backend_thrift: lookups answered by another evdal (a regional or team tier) over
 * Thrift. The calls of one local fetch to one upstream, started in the same loop pass, go out
 * together as one remote `fetch` (at most max_calls_per_fetch calls, each critical there when
 * its fetch's call is), written by evdal's own encoder, the reply validated against the IDL
 * like any input, then decoded by hand (evd_fetch_reply). A page of seven lookups is then one
 * request for the remote to read, run and answer, not seven: what a tier costs is mostly per
 * request (docs/SCALING.md).
 *
 *   [upstream regional]
 *   backend = thrift
 *   address = 127.0.0.1:9190      # host:port (a name is resolved without blocking the loop)
 *                                 # or a unix socket path
 *   connections = 2               # per IO loop; calls are multiplexed on them
 *   protocol = binary             # or compact; always framed
 *   max_frame_bytes = 16777216    # a longer reply breaks its connection (default: [server]'s)
 *   max_calls_per_fetch = 64      # calls of one local fetch per remote fetch (1: each alone)
 *
 *   [lookup r_user]
 *   upstream = regional
 *   remote_lookup = user          # the remote's lookup (default: this lookup's name)
 *   params = user_id              # forwarded under the same names; all required
 *
 * The caller's request id, principal, attributes and trace flag travel with the calls, and
 * each call's deadline as what is left of it (the call's timeout_ms; the remote fetch's
 * deadline is the latest of them); its W3C trace context too, with the call's span as the
 * remote's parent (RequestContext 6 and 7): the calls of a sampled fetch go one per remote
 * fetch, since a request has one parent. The remote answers a batch when its last call
 * ends, so a call batched with a slower one is answered with it: the local fetch, which waits
 * for its slowest call anyway, ends no later. Several remote fetches are in flight on a
 * connection at once and replies are matched by seqid, so a remote that answers out of order
 * works too. A remote that stops answering costs calls their deadline and never more than
 * `connections` sockets per IO loop. Errors keep their kind: the remote's result error as it is, Overloaded as
 * OVERLOADED (with its retry_after_ms in the message), anything else (InvalidRequest, a
 * TApplicationException, a malformed reply, a lost connection) BACKEND; those that concern
 * the whole remote fetch fail every call it carried.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "evd_backend.h"
#include "evd_connect.h"
#include "evd_dns.h"
#include "evd_fetch_reply.h"
#include "evd_loop_local.h"
#include "evd_metrics.h"
#include "evd_thrift.h"
#include "evd_transport.h"
#include "evd_wire.h"
#include "evd_writer.h"

/* Reconnecting: the first retry at once after a failure that follows a working connection,
 * then doubling from this, with jitter, up to the cap. */
#define EVD_THRIFT_BACKOFF_MIN_MS 100
#define EVD_THRIFT_BACKOFF_MAX_MS 2000
/* Connecting must not take longer than this (libevent has no connect timeout of its own). */
#define EVD_THRIFT_CONNECT_TIMEOUT_MS 2000
/* A reply's message header (version, name, seqid) is read in this many bytes or not at all. */
#define EVD_THRIFT_HEADER_MAX 256
/* A connection with more than this many bytes written and not yet taken by the remote gets no
 * more requests: a remote that stops reading (stopped, or stuck) would otherwise make evdal
 * hold every request sent to it meanwhile, long after their calls timed out. With every
 * connection that full, calls fail at once. One request always fits on a connection below it,
 * whatever its size. */
#define EVD_THRIFT_UNSENT_MAX (4 << 20)
/* The seqid of the one lookups() call made to check remote_lookup names. */
#define EVD_THRIFT_SEQID_LOOKUPS (-1)

typedef struct _EvdThriftPool EvdThriftPool;

typedef struct {
  /* The shared state's, and one per loop's pool: a pool is destroyed on its loop after the
   * generation that made it has gone, and its events may still run until then. */
  gatomicrefcount refs;
  char *name;               /* [upstream NAME] */
  char *host;               /* NULL for a unix socket */
  int port;
  char *unix_path;
  int connections;
  EvdProto proto;
  gint32 max_frame;
  guint max_batch;          /* max_calls_per_fetch */
  EvdLoopLocal *pools;      /* EvdThriftPool per IO loop */
  GPtrArray *remote_lookups;  /* names the lookups ask for, checked once against lookups() */
  gint checked;             /* atomic: lookups() was asked */
  /* metrics, atomics */
  gint conns_up;
  gint inflight;
  gint64 calls;
  gint64 fetches;
  gint64 failures;
  gint64 reconnects;
} EvdThriftUpstream;

typedef struct {
  GHashTable *upstreams;    /* name -> EvdThriftUpstream * */
} EvdThriftShared;

typedef struct {
  EvdThriftUpstream *up;
  char *remote;
  char **params;
} EvdThriftLookup;

typedef enum {
  EVD_THRIFT_DOWN,          /* waiting for its reconnect timer */
  EVD_THRIFT_CONNECTING,
  EVD_THRIFT_UP,
} EvdThriftState;

typedef struct {
  EvdThriftPool *pool;
  struct bufferevent *bev;
  EvdConnect *connect;      /* CONNECTING over TCP: the attempt under way; NULL otherwise */
  EvdThriftState state;
  GHashTable *pending;      /* seqid -> EvdThriftSent *, remote fetches not answered */
  guint32 next_seqid;        /* unsigned: it wraps after 2^32 calls (a signed one may not) */
  struct event *timer;      /* reconnect, or the connect timeout */
  int backoff_ms;
  gboolean worked;          /* a reply came on it since the last failure */
} EvdThriftConn;

struct _EvdThriftPool {
  EvdThriftUpstream *up;
  EvdLoop *loop;
  struct evdns_base *dns;   /* NULL for unix sockets and numeric hosts */
  EvdThriftConn *conns;     /* up->connections of them */
  guint next;               /* round robin */
  GQueue batch;             /* EvdThriftCall *: started in this loop pass, sent at its end */
  GQueue waiting;           /* EvdThriftCall *: to send once a connection is up */
  gboolean flush_queued;    /* evd_backend_thrift_flush is queued for this pass's end */
  gboolean freed;           /* pool_free ran with it queued: the flush frees the pool */
  gpointer *group;          /* up->max_batch of them, dispatch's scratch */
  char *last_error;         /* why the last connection failed, for "unavailable" */
  EvdTransport *transport;  /* c_glib reads validated replies from memory through these */
  ThriftProtocol *protocol;
};

typedef struct _EvdThriftSent EvdThriftSent;

/* A call in flight, in the room of its EvdBackendCall: in its pool's batch or waiting queue
 * (`queue`), or sent (`sent`), or neither once it is about to be completed. */
typedef struct {
  EvdBackendCall *call;
  EvdThriftLookup *lookup;
  EvdThriftPool *pool;
  GQueue *queue;            /* &pool->batch, &pool->waiting or NULL */
  GList link;               /* its place in `queue` */
  EvdThriftSent *sent;
  guint slot;               /* its key in the remote fetch: "0", "1"... */
} EvdThriftCall;

G_STATIC_ASSERT (sizeof (EvdThriftCall) <= EVD_BACKEND_CALL_ROOM);

/* A remote fetch in flight: in its connection's pending map until its reply comes or the
 * connection breaks (`conn` is NULL from then on, while its calls are being completed). A call
 * that leaves first (cancelled, timed out) clears its slot; the last one to leave takes the
 * remote fetch out of the map, and its reply, when it comes, is dropped. */
struct _EvdThriftSent {
  EvdThriftConn *conn;
  gint32 seqid;
  guint n;
  guint live;               /* slots not cleared */
  EvdThriftCall *calls[];
};

static void evd_backend_thrift_connect (EvdThriftConn *c);
static void evd_backend_thrift_upstream_unref (EvdThriftUpstream *up);

/* ---- Encoding: fetch({context, calls: {"0": LookupCall, "1": ...}}). ---- */

static void
evd_backend_thrift_write_value (EvdWriter *w, const EvdValue *v)
{
  evd_writer_struct_begin (w);
  switch (v->kind) {
  case EVD_VALUE_INT:
    evd_writer_field_begin (w, EVD_WIRE_T_I64, 2);
    evd_writer_i64 (w, v->i);
    break;
  case EVD_VALUE_REAL:
    evd_writer_field_begin (w, EVD_WIRE_T_DOUBLE, 3);
    evd_writer_double (w, v->r);
    break;
  case EVD_VALUE_TEXT:
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 4);
    evd_writer_binary (w, v->data, v->len);
    break;
  case EVD_VALUE_BLOB:
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 5);
    evd_writer_binary (w, v->data, v->len);
    break;
  default:
    evd_writer_field_bool (w, 1, TRUE);
  }
  evd_writer_struct_end (w);
}

/* What is left of a budget, in whole milliseconds the remote can be given (at least 1). */
static gint32
evd_backend_thrift_left_ms (gint64 deadline_us, gint64 now)
{
  return (gint32) CLAMP ((deadline_us - now) / 1000, 1, G_MAXINT32);
}

/* The calls of one local fetch share its context; `call` is the first of them and
 * `deadline_us` the latest of their deadlines. */
static void
evd_backend_thrift_write_context (EvdWriter *w, EvdBackendCall *call, gint64 deadline_us,
                                  gint64 now)
{
  const EvdRequestContext *ctx = evd_backend_call_context (call);
  char traceparent[EVD_TRACEPARENT_LEN + 1];
  GHashTableIter it;
  gpointer k, v;

  evd_writer_struct_begin (w);
  evd_writer_field_begin (w, EVD_WIRE_T_STRING, 1);
  evd_writer_string (w, ctx->request_id);
  if (ctx->principal != NULL) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 2);
    evd_writer_string (w, ctx->principal);
  }
  /* What is left of the latest budget: the remote must not work past it. Each call carries
   * its own as its timeout_ms. */
  evd_writer_field_begin (w, EVD_WIRE_T_I32, 3);
  evd_writer_i32 (w, evd_backend_thrift_left_ms (deadline_us, now));
  evd_writer_field_bool (w, 4, ctx->trace);
  evd_writer_field_begin (w, EVD_WIRE_T_MAP, 5);
  evd_writer_map_begin (w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRING,
                        g_hash_table_size (ctx->attributes));
  g_hash_table_iter_init (&it, ctx->attributes);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    evd_writer_string (w, k);
    evd_writer_string (w, v);
  }
  /* W3C trace context: the remote's spans are children of the call's span (a sampled fetch's
   * calls go one per remote fetch: a request has one parent; unsampled, the first call's). */
  evd_backend_call_traceparent (call, traceparent);
  evd_writer_field_begin (w, EVD_WIRE_T_STRING, 6);
  evd_writer_string (w, traceparent);
  if (evd_backend_call_tracestate (call) != NULL) {
    evd_writer_field_begin (w, EVD_WIRE_T_STRING, 7);
    evd_writer_string (w, evd_backend_call_tracestate (call));
  }
  evd_writer_struct_end (w);
}

/* A framed message: a 4-byte length to fill in, then the message from `w`. */
static GByteArray *
evd_backend_thrift_frame_begin (EvdWriter *w, EvdProto proto, gsize size_hint)
{
  static const guint8 no_length[4] = { 0 };
  GByteArray *out = g_byte_array_sized_new ((guint) size_hint);

  g_byte_array_append (out, no_length, 4);
  evd_writer_init (w, out, proto);
  return out;
}

static GByteArray *
evd_backend_thrift_frame_end (GByteArray *out)
{
  guint32 be = GUINT32_TO_BE (out->len - 4);

  memcpy (out->data, &be, 4);
  return out;
}

/* The key of slot i in the remote fetch's calls and results. */
static void
evd_backend_thrift_key (guint slot, char key[16])
{
  char digits[16];
  guint n = 0, i = 0;

  do
    digits[n++] = (char) ('0' + slot % 10);
  while ((slot /= 10) > 0);
  while (n > 0)
    key[i++] = digits[--n];
  key[i] = '\0';
}

/* The whole framed message for a remote fetch. */
static GByteArray *
evd_backend_thrift_encode (EvdThriftSent *s, EvdProto proto)
{
  gint64 now = g_get_monotonic_time ();
  gint64 deadline_us = 0;
  EvdWriter w;
  GByteArray *out = evd_backend_thrift_frame_begin (&w, proto, 128 + 64 * s->n);

  for (guint i = 0; i < s->n; i++)
    deadline_us = MAX (deadline_us, evd_backend_call_deadline_us (s->calls[i]->call));
  evd_writer_message_begin (&w, "fetch", EVD_MSG_CALL, s->seqid);
  evd_writer_struct_begin (&w);                          /* fetch_args */
  evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
  evd_writer_struct_begin (&w);                          /* FetchRequest */
  evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
  evd_backend_thrift_write_context (&w, s->calls[0]->call, deadline_us, now);
  evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
  evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, s->n);
  for (guint i = 0; i < s->n; i++) {
    EvdThriftCall *tc = s->calls[i];
    EvdThriftLookup *l = tc->lookup;
    char key[16];

    evd_backend_thrift_key (i, key);
    evd_writer_string (&w, key);
    evd_writer_struct_begin (&w);                        /* LookupCall */
    evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 1);
    evd_writer_string (&w, l->remote);
    evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
    evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT,
                          g_strv_length (l->params));
    for (guint p = 0; l->params[p] != NULL; p++) {
      evd_writer_string (&w, l->params[p]);
      evd_backend_thrift_write_value (&w, evd_backend_call_param (tc->call, l->params[p]));
    }
    /* This call's own budget: calls of one fetch may have different ones. */
    evd_writer_field_begin (&w, EVD_WIRE_T_I32, 3);
    evd_writer_i32 (&w, evd_backend_thrift_left_ms (evd_backend_call_deadline_us (tc->call),
                                                    now));
    /* A critical call's failure ends this fetch anyway: the remote may then end the remote
     * fetch at once (LookupFailed), not after the slowest call sent with it. */
    if (evd_backend_call_critical (tc->call))
      evd_writer_field_bool (&w, 4, TRUE);
    evd_writer_struct_end (&w);                          /* LookupCall */
  }
  evd_writer_struct_end (&w);                            /* FetchRequest */
  evd_writer_struct_end (&w);                            /* fetch_args */
  return evd_backend_thrift_frame_end (out);
}

/* lookups(): no args. */
static GByteArray *
evd_backend_thrift_encode_lookups (EvdProto proto)
{
  EvdWriter w;
  GByteArray *out = evd_backend_thrift_frame_begin (&w, proto, 32);

  evd_writer_message_begin (&w, "lookups", EVD_MSG_CALL, EVD_THRIFT_SEQID_LOOKUPS);
  evd_writer_struct_begin (&w);
  evd_writer_struct_end (&w);
  return evd_backend_thrift_frame_end (out);
}

/* ---- Reading a reply. ---- */

/* The remote's answer to the call in `slot`, as this call's completion. */
static void
evd_backend_thrift_complete (EvdThriftCall *tc, guint slot, EvdFetchReply *reply,
                             const char *upstream)
{
  EvdFetchReplyCall *res = &reply->calls[slot];

  switch (reply->outcome) {
  case EVD_FETCH_REPLY_OVERLOADED:
    evd_backend_call_fail (tc->call, EVD_ERROR_KIND_OVERLOADED,
                           "upstream %s overloaded (retry after %d ms): %s", upstream,
                           reply->retry_after_ms, reply->message);
    return;
  case EVD_FETCH_REPLY_INVALID:
    evd_backend_call_fail (tc->call, EVD_ERROR_KIND_BACKEND, "upstream %s refused the "
                           "request: %s", upstream, reply->message);
    return;
  case EVD_FETCH_REPLY_FAILED:
    /* A critical call failed at the remote: that call fails as it did there; the others
     * were stopped with it (their fetch is ending too: the call was critical here). */
    if (slot == reply->failed_slot)
      evd_backend_call_fail (tc->call, reply->failed_kind, "upstream %s: %s", upstream,
                             reply->message);
    else
      evd_backend_call_fail (tc->call, EVD_ERROR_KIND_BACKEND, "upstream %s ended the fetch: "
                             "call %s failed: %s", upstream, reply->failed_call,
                             reply->message);
    return;
  default:
    break;
  }
  if (res->rows != NULL)
    evd_backend_call_return (tc->call, g_steal_pointer (&res->rows));
  else if (res->kind != EVD_ERROR_KIND_NONE)
    evd_backend_call_fail (tc->call, res->kind, "upstream %s: %s", upstream, res->message);
  else if (res->message != NULL)
    evd_backend_call_fail (tc->call, EVD_ERROR_KIND_BACKEND, "upstream %s answered %s",
                           upstream, res->message);
  else
    evd_backend_call_fail (tc->call, EVD_ERROR_KIND_BACKEND,
                           "upstream %s answered without this call's result", upstream);
}

/* A call leaves the books of its queue or remote fetch: it is about to be completed. The last
 * call to leave a remote fetch still in its connection's map takes it out (its reply will be
 * dropped) and frees it. */
static void
evd_backend_thrift_forget (EvdThriftCall *tc)
{
  EvdThriftSent *s = tc->sent;

  if (tc->queue != NULL) {
    g_queue_unlink (tc->queue, &tc->link);
    tc->queue = NULL;
    return;
  }
  if (s == NULL)
    return;
  tc->sent = NULL;
  s->calls[tc->slot] = NULL;
  g_atomic_int_add (&tc->lookup->up->inflight, -1);
  if (--s->live == 0 && s->conn != NULL) {
    g_hash_table_remove (s->conn->pending, GINT_TO_POINTER (s->seqid));
    g_free (s);
  }
}

/* Takes a remote fetch out of its connection's map: its calls are about to be completed (each
 * leaves it with forget), then the caller frees it. */
static EvdThriftSent *
evd_backend_thrift_take (EvdThriftConn *c, gint32 seqid)
{
  EvdThriftSent *s = g_hash_table_lookup (c->pending, GINT_TO_POINTER (seqid));

  if (s != NULL) {
    g_hash_table_remove (c->pending, GINT_TO_POINTER (seqid));
    s->conn = NULL;
  }
  return s;
}

static void
evd_backend_thrift_fail (EvdThriftCall *tc, guint flags, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

static void
evd_backend_thrift_fail (EvdThriftCall *tc, guint flags, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  evd_backend_thrift_forget (tc);
  __atomic_add_fetch (&tc->lookup->up->failures, 1, __ATOMIC_RELAXED);
  evd_backend_call_fail_full (tc->call, flags, EVD_ERROR_KIND_BACKEND, "%s", message);
}

static void
evd_backend_thrift_fail_sent (EvdThriftSent *s, guint flags, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

/* Every call a remote fetch taken from its map still carries fails with the message, and it
 * is freed. One at a time, each cleared before it fails: a completion may end its local
 * fetch, which cancels (and clears) the others. */
static void
evd_backend_thrift_fail_sent (EvdThriftSent *s, guint flags, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  for (guint i = 0; i < s->n; i++)
    if (s->calls[i] != NULL)
      evd_backend_thrift_fail (s->calls[i], flags, "%s", message);
  g_free (s);
}

static void
evd_backend_thrift_check_lookups (EvdThriftPool *pool, evdalDataAccessLookupsResult *r)
{
  EvdThriftUpstream *up = pool->up;

  if (!r->__isset_success)
    return;
  for (guint i = 0; i < up->remote_lookups->len; i++) {
    const char *want = up->remote_lookups->pdata[i];
    gboolean found = FALSE;

    for (guint j = 0; j < r->success->len && !found; j++)
      found = g_strcmp0 (((evdalLookupInfo *) r->success->pdata[j])->name, want) == 0;
    if (!found)
      g_warning ("upstream %s has no lookup \"%s\" (a remote_lookup here names it)",
                 up->name, want);
  }
}

/* Decodes a validated reply message with c_glib; FALSE when it does not decode. */
static gboolean
evd_backend_thrift_decode (EvdThriftPool *pool, const guint8 *body, gsize len, ThriftStruct *into)
{
  g_autoptr (GError) error = NULL;

  evd_transport_set_input (pool->transport, body, len);
  if (thrift_struct_read (into, pool->protocol, &error) < 0) {
    /* The compact protocol keeps state across reads; a failed one is not trusted again. */
    g_object_unref (pool->protocol);
    pool->protocol = g_object_new (pool->up->proto == EVD_PROTO_COMPACT
                                   ? THRIFT_TYPE_COMPACT_PROTOCOL : THRIFT_TYPE_BINARY_PROTOCOL,
                                   "transport", pool->transport, NULL);
    return FALSE;
  }
  return TRUE;
}

/* Does the scanned reply name `method` (after a "Service:" prefix, as the scanner reads it)?
 * The scanner checked its element types against the result schema of the method it names,
 * so only then may it be decoded as that method's result. */
static gboolean
evd_backend_thrift_names (const EvdWireScanner *s, const char *method)
{
  const guint8 *colon = memchr (s->name, ':', s->name_len);
  const guint8 *name = colon != NULL ? colon + 1 : s->name;
  gsize len = s->name_len - (gsize) (name - s->name);

  return len == strlen (method) && memcmp (name, method, len) == 0;
}

/* One whole reply frame, payload[0..len). FALSE: the connection cannot go on. */
static gboolean
evd_backend_thrift_on_frame (EvdThriftConn *c, const guint8 *payload, gsize len)
{
  EvdThriftPool *pool = c->pool;
  EvdThriftSent *sent;
  EvdWireScanner s;
  EvdWireStatus st;
  const guint8 *body;

  evd_wire_scanner_init (&s, pool->up->proto, len, EVD_WIRE_MAX_DEPTH);
  s.schema_for = evd_wire_schema_result;
  st = evd_wire_scanner_frame (&s, payload, len);
  if (!s.header_ok)
    return FALSE;
  body = payload + s.body_offset;
  if (s.seqid == EVD_THRIFT_SEQID_LOOKUPS) {
    g_autoptr (evdalDataAccessLookupsResult) r =
      g_object_new (EVDAL_TYPE_DATA_ACCESS_LOOKUPS_RESULT, NULL);

    if (st == EVD_WIRE_OK && s.type == EVD_MSG_REPLY && evd_backend_thrift_names (&s, "lookups")
        && evd_backend_thrift_decode (pool, body, len - s.body_offset, THRIFT_STRUCT (r)))
      evd_backend_thrift_check_lookups (pool, r);
    return TRUE;
  }
  sent = evd_backend_thrift_take (c, s.seqid);
  if (sent == NULL)
    return TRUE;  /* its calls timed out or were cancelled: the late reply is dropped */
  if (st != EVD_WIRE_OK) {
    evd_backend_thrift_fail_sent (sent, 0, "upstream %s sent a malformed reply: %s",
                                  pool->up->name, s.reason ? s.reason : "bad message");
    return TRUE;  /* the frame said where it ends: the next one is fine */
  }
  if (s.type == EVD_MSG_EXCEPTION) {
    g_autofree char *message = NULL;
    const char *bad = NULL;

    if (evd_fetch_reply_app_exception (body, len - s.body_offset, pool->up->proto, &message,
                                       &bad))
      evd_backend_thrift_fail_sent (sent, 0, "upstream %s failed the call: %s", pool->up->name,
                                    message ? message : "TApplicationException");
    else
      evd_backend_thrift_fail_sent (sent, 0, "upstream %s sent an exception that does not "
                                    "decode", pool->up->name);
    return TRUE;
  }
  if (s.type == EVD_MSG_REPLY && !evd_backend_thrift_names (&s, "fetch")) {
    evd_backend_thrift_fail_sent (sent, 0, "upstream %s answered a fetch with a reply to "
                                  "another method", pool->up->name);
    return TRUE;
  }
  {
    EvdFetchReply r;
    const char *bad = NULL;

    if (s.type != EVD_MSG_REPLY ||
        !evd_fetch_reply_decode (body, len - s.body_offset, pool->up->proto, sent->n, &r,
                                 &bad)) {
      evd_backend_thrift_fail_sent (sent, 0, "upstream %s sent a reply that does not decode%s%s",
                                    pool->up->name, bad ? ": " : "", bad ? bad : "");
      return TRUE;
    }
    /* One at a time, each cleared first: a completion may end its local fetch, which cancels
     * (and clears) the others. The call a LookupFailed names goes first: its failure is the
     * one that ends the fetch. */
    for (guint k = 0; k <= sent->n; k++) {
      guint i = k == 0 ? r.failed_slot : k - 1;
      EvdThriftCall *tc = i < sent->n ? sent->calls[i] : NULL;

      if (tc == NULL)
        continue;
      evd_backend_thrift_forget (tc);
      evd_backend_thrift_complete (tc, i, &r, pool->up->name);
    }
    g_free (sent);
    evd_fetch_reply_clear (&r);
  }
  return TRUE;
}

/* ---- Connections. ---- */

/* One remote fetch on `c` for the n calls (taken from their queue). */
static void
evd_backend_thrift_send (EvdThriftConn *c, EvdThriftCall **calls, guint n)
{
  EvdThriftUpstream *up = c->pool->up;
  EvdThriftSent *s = g_malloc (sizeof *s + n * sizeof s->calls[0]);
  g_autoptr (GByteArray) msg = NULL;

  s->conn = c;
  s->n = s->live = n;
  do
    s->seqid = (gint32) (c->next_seqid++ & G_MAXINT32);
  while (s->seqid == EVD_THRIFT_SEQID_LOOKUPS ||
         g_hash_table_contains (c->pending, GINT_TO_POINTER (s->seqid)));
  for (guint i = 0; i < n; i++) {
    s->calls[i] = calls[i];
    calls[i]->sent = s;
    calls[i]->slot = i;
  }
  g_hash_table_insert (c->pending, GINT_TO_POINTER (s->seqid), s);
  g_atomic_int_add (&up->inflight, (gint) n);
  __atomic_add_fetch (&up->fetches, 1, __ATOMIC_RELAXED);
  msg = evd_backend_thrift_encode (s, up->proto);
  bufferevent_write (c->bev, msg->data, msg->len);
}

/* Bytes written on a connection that the remote has not taken yet (beyond the kernel's). */
static gsize
evd_backend_thrift_unsent (EvdThriftConn *c)
{
  return evbuffer_get_length (bufferevent_get_output (c->bev));
}

/* A connection that is up and whose remote is reading, round robin; NULL when none is. */
static EvdThriftConn *
evd_backend_thrift_pick (EvdThriftPool *pool)
{
  int n = pool->up->connections;

  for (int i = 0; i < n; i++) {
    EvdThriftConn *c = &pool->conns[(pool->next + i) % n];

    if (c->state == EVD_THRIFT_UP && evd_backend_thrift_unsent (c) <= EVD_THRIFT_UNSENT_MAX) {
      pool->next = (pool->next + i + 1) % n;
      return c;
    }
  }
  return NULL;
}

/* Whether a connection is in `state`. */
static gboolean
evd_backend_thrift_any (EvdThriftPool *pool, EvdThriftState state)
{
  for (int i = 0; i < pool->up->connections; i++)
    if (pool->conns[i].state == state)
      return TRUE;
  return FALSE;
}

static void
evd_backend_thrift_fail_unavailable (EvdThriftCall *tc, const char *why)
{
  evd_backend_thrift_fail (tc, EVD_BACKEND_FAIL_RETRYABLE, "upstream %s unavailable: %s",
                           tc->lookup->up->name, why ? why : "not connected");
}

/* Sends every call of `queue`: those of one local fetch (one request context) together, up to
 * max_batch per remote fetch, each remote fetch on the next connection that is up. With none
 * up the calls wait for one that is connecting, or fail when none is. */
static void
evd_backend_thrift_dispatch (EvdThriftPool *pool, GQueue *queue)
{
  EvdThriftCall **group = (EvdThriftCall **) pool->group;

  while (!g_queue_is_empty (queue)) {
    EvdThriftConn *c = evd_backend_thrift_pick (pool);
    EvdThriftCall *first = queue->head->data;
    const EvdRequestContext *ctx = evd_backend_call_context (first->call);
    /* A remote fetch has one trace parent: the calls of a sampled fetch go one per remote
     * fetch, so that each call's span is the parent of the remote's spans for it. Sampled
     * fetches are the few (sample_ratio); the rest share. */
    guint max = evd_backend_call_sampled (first->call) ? 1 : pool->up->max_batch;
    guint n = 0;

    if (c == NULL && evd_backend_thrift_any (pool, EVD_THRIFT_CONNECTING)) {
      if (queue == &pool->waiting)
        return;
      while (!g_queue_is_empty (queue)) {
        EvdThriftCall *tc = queue->head->data;

        g_queue_unlink (queue, &tc->link);
        g_queue_push_tail_link (&pool->waiting, &tc->link);
        tc->queue = &pool->waiting;
      }
      return;
    }
    if (c == NULL && evd_backend_thrift_any (pool, EVD_THRIFT_UP)) {
      /* Up, and none reading: each failure may end its fetch, which cancels (unlinks) its
       * other calls. Retryable, as for a lost connection: the remote may read again. */
      evd_backend_thrift_fail (first, EVD_BACKEND_FAIL_RETRYABLE, "upstream %s is not reading "
                               "its requests (over %d bytes unsent on each connection)",
                               pool->up->name, EVD_THRIFT_UNSENT_MAX);
      continue;
    }
    if (c == NULL) {
      /* Each failure may end its fetch, which cancels (unlinks) its other calls. */
      evd_backend_thrift_fail_unavailable (first, pool->last_error);
      continue;
    }
    /* The engine starts a fetch's calls one after the other, so they sit together in the
     * queue: a group is the run of calls of one context at its head, which keeps a flush
     * linear in the calls queued. A call of the fetch queued later (a retry, a hedge) goes in
     * a remote fetch of its own. */
    while (n < max && !g_queue_is_empty (queue)) {
      EvdThriftCall *tc = queue->head->data;

      if (evd_backend_call_context (tc->call) != ctx)
        break;
      g_queue_unlink (queue, &tc->link);
      tc->queue = NULL;
      group[n++] = tc;
    }
    evd_backend_thrift_send (c, group, n);
  }
}

static void evd_backend_thrift_pool_destroy (EvdThriftPool *pool);

/* At the end of the loop pass that started them: the calls of each local fetch go out. */
static void
evd_backend_thrift_flush (gpointer data)
{
  EvdThriftPool *pool = data;

  pool->flush_queued = FALSE;
  if (pool->freed) {
    evd_backend_thrift_pool_destroy (pool);
    return;
  }
  evd_backend_thrift_dispatch (pool, &pool->batch);
}

/* Every call the connection carried fails, and it reconnects after its backoff. */
static void
evd_backend_thrift_broken (EvdThriftConn *c, const char *why)
{
  EvdThriftPool *pool = c->pool;
  EvdThriftUpstream *up = pool->up;
  struct timeval tv;
  int delay_ms;

  if (c->state == EVD_THRIFT_UP)
    g_atomic_int_add (&up->conns_up, -1);
  g_free (pool->last_error);
  pool->last_error = g_strdup (why);
  g_clear_pointer (&c->connect, evd_connect_cancel);
  g_clear_pointer (&c->bev, bufferevent_free);
  c->state = EVD_THRIFT_DOWN;
  /* One remote fetch at a time from the map, never from a copy of it: a completion may end
   * its fetch, which cancels the fetch's other calls, on this connection too (a remote fetch
   * whose last call leaves goes from the map). Nothing joins the map while the connection
   * is down. */
  while (g_hash_table_size (c->pending) > 0) {
    GHashTableIter it;
    gpointer seqid;

    g_hash_table_iter_init (&it, c->pending);
    g_hash_table_iter_next (&it, &seqid, NULL);
    evd_backend_thrift_fail_sent (evd_backend_thrift_take (c, GPOINTER_TO_INT (seqid)),
                                  EVD_BACKEND_FAIL_RETRYABLE, "upstream %s: %s", up->name, why);
  }
  /* A connection that worked is retried at once: a restart of the remote is the usual cause.
   * Then exponential backoff with jitter, so that many loops do not reconnect in step. Being
   * connected is not working: a remote at its max_connections accepts and closes at once. */
  delay_ms = c->worked ? 0 : c->backoff_ms;
  c->backoff_ms = c->worked ? EVD_THRIFT_BACKOFF_MIN_MS
                            : MIN (c->backoff_ms * 2, EVD_THRIFT_BACKOFF_MAX_MS);
  c->worked = FALSE;
  delay_ms = delay_ms / 2 + g_random_int_range (0, delay_ms / 2 + 1);
  tv = (struct timeval) { delay_ms / 1000, (delay_ms % 1000) * 1000 };
  evtimer_add (c->timer, &tv);
  /* Calls waiting for a connection fail once none is left that may come up. */
  for (int i = 0; i < up->connections; i++)
    if (pool->conns[i].state != EVD_THRIFT_DOWN)
      return;
  while (!g_queue_is_empty (&pool->waiting))
    evd_backend_thrift_fail_unavailable (g_queue_peek_head (&pool->waiting), why);
}

/* A reply over max_frame_bytes cannot be read, nor anything after it: its connection breaks.
 * The calls it answers, when its message header has come, fail for good, as a reply that does
 * not parse: asked again, the remote would send it again and break the connection again, with
 * every other call on it (those fail as for any lost connection). */
static void
evd_backend_thrift_fail_too_long (EvdThriftConn *c, struct evbuffer *in, gint32 frame_len)
{
  EvdThriftUpstream *up = c->pool->up;
  gsize have = MIN (evbuffer_get_length (in), 4 + EVD_THRIFT_HEADER_MAX);
  EvdWireScanner s;
  EvdThriftSent *sent;

  evd_wire_scanner_init (&s, up->proto, (gsize) frame_len, EVD_WIRE_MAX_DEPTH);
  if (evd_wire_scanner_header (&s, evbuffer_pullup (in, (ev_ssize_t) have) + 4,
                               have - 4) != EVD_WIRE_OK)
    return;
  sent = evd_backend_thrift_take (c, s.seqid);
  if (sent != NULL)
    evd_backend_thrift_fail_sent (sent, 0, "upstream %s: a reply of %d bytes is over "
                                  "max_frame_bytes (%d)", up->name, frame_len, up->max_frame);
}

static void
evd_backend_thrift_on_read (struct bufferevent *bev, void *arg)
{
  EvdThriftConn *c = arg;
  struct evbuffer *in = bufferevent_get_input (bev);

  for (;;) {
    gsize have = evbuffer_get_length (in);
    guint8 head[4];
    gint32 frame_len;
    const char *reason = NULL;
    EvdWireStatus st;

    if (have < 4)
      return;
    evbuffer_copyout (in, head, 4);
    st = evd_wire_frame_length (head, 4, c->pool->up->max_frame, &frame_len, &reason);
    if (st != EVD_WIRE_OK) {
      g_autofree char *why = g_strdup_printf ("bad reply frame (%s)", reason);

      if (frame_len > c->pool->up->max_frame)
        evd_backend_thrift_fail_too_long (c, in, frame_len);
      evd_backend_thrift_broken (c, why);
      return;
    }
    if (have < (gsize) frame_len + 4)
      return;
    if (!evd_backend_thrift_on_frame (c, evbuffer_pullup (in, frame_len + 4) + 4,
                                      (gsize) frame_len)) {
      evd_backend_thrift_broken (c, "reply without a readable message header");
      return;
    }
    if (c->bev == NULL)
      return;
    c->worked = TRUE;
    evbuffer_drain (in, (gsize) frame_len + 4);
  }
}

static void
evd_backend_thrift_up (EvdThriftConn *c)
{
  EvdThriftUpstream *up = c->pool->up;

  evtimer_del (c->timer);
  c->state = EVD_THRIFT_UP;
  g_atomic_int_inc (&up->conns_up);
  if (g_atomic_int_compare_and_exchange (&up->checked, 0, 1)) {
    g_autoptr (GByteArray) msg = evd_backend_thrift_encode_lookups (up->proto);
    bufferevent_write (c->bev, msg->data, msg->len);
  }
  evd_backend_thrift_dispatch (c->pool, &c->pool->waiting);
}

/* A TCP connection made by evd_connect, every address of the name tried in turn: the
 * bufferevent takes its socket. */
static void
evd_backend_thrift_on_connect (gpointer data, evutil_socket_t fd, const GError *error)
{
  EvdThriftConn *c = data;

  c->connect = NULL;
  if (error != NULL) {
    evd_backend_thrift_broken (c, error->message);
    return;
  }
  bufferevent_setfd (c->bev, fd);         /* its events were enabled: they are watched now */
  evd_backend_thrift_up (c);
}

static void
evd_backend_thrift_on_event (struct bufferevent *bev, short what, void *arg)
{
  EvdThriftConn *c = arg;

  (void) bev;
  if (what & BEV_EVENT_CONNECTED) {       /* a unix socket's */
    evd_backend_thrift_up (c);
    return;
  }
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    g_autofree char *why = NULL;
    int err = EVUTIL_SOCKET_ERROR ();

    if (c->state == EVD_THRIFT_CONNECTING)
      why = g_strdup_printf ("cannot connect: %s", err ? g_strerror (err) : "refused");
    else
      why = g_strdup ((what & BEV_EVENT_EOF) ? "connection closed by the upstream"
                                             : "connection lost");
    evd_backend_thrift_broken (c, why);
  }
}

/* The reconnect timer, or the connect timeout while connecting to a unix socket (evd_connect
 * bounds a TCP attempt itself, and names each address that timed out). */
static void
evd_backend_thrift_on_timer (evutil_socket_t fd, short what, void *arg)
{
  EvdThriftConn *c = arg;

  (void) fd;
  (void) what;
  if (c->state == EVD_THRIFT_CONNECTING) {
    evd_backend_thrift_broken (c, "connect timed out");
    return;
  }
  __atomic_add_fetch (&c->pool->up->reconnects, 1, __ATOMIC_RELAXED);
  evd_backend_thrift_connect (c);
}

static void
evd_backend_thrift_connect (EvdThriftConn *c)
{
  EvdThriftPool *pool = c->pool;
  EvdThriftUpstream *up = pool->up;
  struct event_base *base = evd_loop_base (pool->loop);
  struct timeval tv = { EVD_THRIFT_CONNECT_TIMEOUT_MS / 1000,
                        (EVD_THRIFT_CONNECT_TIMEOUT_MS % 1000) * 1000 };
  int rc;

  c->bev = bufferevent_socket_new (base, -1, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb (c->bev, evd_backend_thrift_on_read, NULL, evd_backend_thrift_on_event, c);
  bufferevent_enable (c->bev, EV_READ | EV_WRITE);
  c->state = EVD_THRIFT_CONNECTING;
  if (up->unix_path != NULL) {
    struct sockaddr_un un = { .sun_family = AF_UNIX };

    evtimer_add (c->timer, &tv);
    g_strlcpy (un.sun_path, up->unix_path, sizeof un.sun_path);
    rc = bufferevent_socket_connect (c->bev, (struct sockaddr *) &un, sizeof un);
    if (rc < 0 && c->bev != NULL && c->state == EVD_THRIFT_CONNECTING)
      evd_backend_thrift_broken (c, g_strerror (errno));
    return;
  }
  /* evdns resolves names on the loop, without blocking; numeric hosts need no lookup. Each
   * address in turn, within EVD_THRIFT_CONNECT_TIMEOUT_MS for them all. */
  c->connect = evd_connect_start (base, pool->dns, up->host, up->port,
                                  EVD_THRIFT_CONNECT_TIMEOUT_MS, evd_backend_thrift_on_connect, c);
}

/* ---- Per loop. ---- */

static gpointer
evd_backend_thrift_pool_new (EvdLoop *loop, gpointer owner)
{
  EvdThriftUpstream *up = owner;
  EvdThriftPool *pool = g_new0 (EvdThriftPool, 1);

  g_atomic_ref_count_inc (&up->refs);
  pool->up = up;
  pool->loop = loop;
  g_queue_init (&pool->waiting);
  if (up->host != NULL)
    pool->dns = evd_dns_new (evd_loop_base (loop));
  pool->transport = evd_transport_new ();
  pool->protocol = g_object_new (up->proto == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL
                                                                : THRIFT_TYPE_BINARY_PROTOCOL,
                                 "transport", pool->transport, NULL);
  pool->conns = g_new0 (EvdThriftConn, up->connections);
  pool->group = g_new (gpointer, up->max_batch);
  for (int i = 0; i < up->connections; i++) {
    EvdThriftConn *c = &pool->conns[i];

    c->pool = pool;
    c->pending = g_hash_table_new (NULL, NULL);
    c->timer = evtimer_new (evd_loop_base (loop), evd_backend_thrift_on_timer, c);
    c->backoff_ms = EVD_THRIFT_BACKOFF_MIN_MS;
    c->next_seqid = 1;
    evd_backend_thrift_connect (c);
  }
  return pool;
}

/* On the pool's loop, once its generation is gone: no call is left on it. A flush still
 * queued for this pass (its calls cancelled since) frees the pool when it runs. */
static void
evd_backend_thrift_pool_free (gpointer data)
{
  EvdThriftPool *pool = data;

  if (pool->flush_queued)
    pool->freed = TRUE;
  else
    evd_backend_thrift_pool_destroy (pool);
}

static void
evd_backend_thrift_pool_destroy (EvdThriftPool *pool)
{
  for (int i = 0; i < pool->up->connections; i++) {
    EvdThriftConn *c = &pool->conns[i];

    if (c->state == EVD_THRIFT_UP)
      g_atomic_int_add (&pool->up->conns_up, -1);
    g_clear_pointer (&c->connect, evd_connect_cancel);
    g_clear_pointer (&c->bev, bufferevent_free);
    event_free (c->timer);
    g_hash_table_unref (c->pending);
  }
  /* With fail_requests: a lookup left by a cancelled attempt is answered (failed), and so
   * freed, on the loop's next pass (evd_connect.h). */
  evd_dns_free (pool->dns, TRUE);
  if (pool->up->proto == EVD_PROTO_COMPACT)
    g_queue_clear (&THRIFT_COMPACT_PROTOCOL (pool->protocol)->_last_field);
  g_object_unref (pool->protocol);
  g_object_unref (pool->transport);
  g_free (pool->last_error);
  g_free (pool->group);
  g_free (pool->conns);
  evd_backend_thrift_upstream_unref (pool->up);
  g_free (pool);
}

/* ---- [upstream NAME] ---- */

static void
evd_backend_thrift_upstream_unref (EvdThriftUpstream *up)
{
  if (!g_atomic_ref_count_dec (&up->refs))
    return;
  g_ptr_array_unref (up->remote_lookups);
  g_free (up->name);
  g_free (up->host);
  g_free (up->unix_path);
  g_free (up);
}

/* The config is gone: each loop's pool goes on its loop, later, and the last one frees `up`. */
static void
evd_backend_thrift_upstream_free (gpointer data)
{
  EvdThriftUpstream *up = data;

  g_clear_pointer (&up->pools, evd_loop_local_free);
  evd_backend_thrift_upstream_unref (up);
}

/* "host:port", "[v6]:port" or a unix socket path; FALSE with a message. */
static gboolean
evd_backend_thrift_parse_address (EvdThriftUpstream *up, const char *address, char **why)
{
  const char *colon;
  char *end = NULL;
  gint64 port;

  if (address[0] == '/' || g_str_has_prefix (address, "unix:")) {
    up->unix_path = g_strdup (address[0] == '/' ? address : address + 5);
    if (strlen (up->unix_path) >= sizeof ((struct sockaddr_un *) NULL)->sun_path) {
      *why = g_strdup ("the unix socket path is too long");
      return FALSE;
    }
    return TRUE;
  }
  colon = strrchr (address, ':');
  if (colon == NULL || colon == address) {
    *why = g_strdup ("expected host:port, [v6]:port or a unix socket path");
    return FALSE;
  }
  port = g_ascii_strtoll (colon + 1, &end, 10);
  if (end == colon + 1 || *end != '\0' || port < 1 || port > 65535) {
    *why = g_strdup_printf ("\"%s\" is not a port (1-65535)", colon + 1);
    return FALSE;
  }
  up->port = (int) port;
  if (address[0] == '[' && colon[-1] == ']')
    up->host = g_strndup (address + 1, (gsize) (colon - address - 2));
  else
    up->host = g_strndup (address, (gsize) (colon - address));
  return TRUE;
}

static void
evd_backend_thrift_open_upstream (EvdThriftShared *sh, EvdConfig *cfg, const char *group)
{
  g_autofree char *address = evd_config_require (cfg, group, "address");
  g_autofree char *protocol = evd_config_string (cfg, group, "protocol", "binary");
  g_autofree char *why = NULL;
  EvdThriftUpstream *up = g_new0 (EvdThriftUpstream, 1);

  g_atomic_ref_count_init (&up->refs);
  up->name = g_strdup (group + strlen ("upstream "));
  up->connections = (int) evd_config_int (cfg, group, "connections", 2, 1, 64);
  up->max_frame = (gint32) evd_config_int (cfg, group, "max_frame_bytes",
                                           evd_config_server (cfg)->max_frame_bytes, 64,
                                           1 << 30);
  /* 64 is evdal's default max_calls: a remote with its defaults takes a whole batch. */
  up->max_batch = (guint) evd_config_int (cfg, group, "max_calls_per_fetch", 64, 1, 100000);
  up->remote_lookups = g_ptr_array_new_with_free_func (g_free);
  if (strcmp (protocol, "binary") == 0)
    up->proto = EVD_PROTO_BINARY;
  else if (strcmp (protocol, "compact") == 0)
    up->proto = EVD_PROTO_COMPACT;
  else
    evd_config_problem (cfg, group, "protocol", "\"%s\": binary or compact", protocol);
  if (address != NULL && !evd_backend_thrift_parse_address (up, address, &why))
    evd_config_problem (cfg, group, "address", "\"%s\": %s", address, why);
  up->pools = evd_loop_local_new (evd_backend_thrift_pool_new, evd_backend_thrift_pool_free, up);
  g_hash_table_insert (sh->upstreams, up->name, up);
}

static gpointer
evd_backend_thrift_setup (EvdConfig *cfg)
{
  EvdThriftShared *sh = g_new0 (EvdThriftShared, 1);
  g_auto (GStrv) groups = evd_backend_sections (cfg, "upstream", "thrift");

  sh->upstreams = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                         evd_backend_thrift_upstream_free);
  for (guint i = 0; groups[i] != NULL; i++)
    evd_backend_thrift_open_upstream (sh, cfg, groups[i]);
  return sh;
}

static void
evd_backend_thrift_teardown (gpointer shared)
{
  EvdThriftShared *sh = shared;

  g_hash_table_unref (sh->upstreams);
  g_free (sh);
}

/* Connections open as soon as the config serves on a loop, not at the first call. */
static void
evd_backend_thrift_attach (gpointer shared, EvdLoop *loop)
{
  EvdThriftShared *sh = shared;
  GHashTableIter it;
  gpointer up;

  g_hash_table_iter_init (&it, sh->upstreams);
  while (g_hash_table_iter_next (&it, NULL, &up))
    if (((EvdThriftUpstream *) up)->host != NULL || ((EvdThriftUpstream *) up)->unix_path)
      evd_loop_local_get (((EvdThriftUpstream *) up)->pools, loop);
}

static void
evd_backend_thrift_collect (gpointer shared, GString *out)
{
  EvdThriftShared *sh = shared;
  static const char *const families[][3] = {
    { "evdal_upstream_connections_up", "gauge", "Connections to the upstream that are up." },
    { "evdal_upstream_connections_max", "gauge", "Connections allowed: per IO loop x loops "
      "serving." },
    { "evdal_upstream_inflight", "gauge", "Calls sent to the upstream and not answered." },
    { "evdal_upstream_calls_total", "counter", "Calls sent to the upstream." },
    { "evdal_upstream_fetches_total", "counter", "Remote fetches sent to the upstream, each "
      "with the calls of one local fetch (up to max_calls_per_fetch)." },
    { "evdal_upstream_failures_total", "counter", "Calls failed by the upstream's connection "
      "or malformed replies (not the remote's own per-call errors)." },
    { "evdal_upstream_reconnects_total", "counter", "Reconnection attempts." },
  };

  for (guint f = 0; f < G_N_ELEMENTS (families); f++) {
    GHashTableIter it;
    gpointer name, value;

    evd_metrics_family (out, families[f][0], families[f][1], families[f][2]);
    g_hash_table_iter_init (&it, sh->upstreams);
    while (g_hash_table_iter_next (&it, &name, &value)) {
      EvdThriftUpstream *up = value;
      guint pools = evd_loop_local_count (up->pools);
      double v;

      v = f == 0 ? g_atomic_int_get (&up->conns_up)
        : f == 1 ? (double) pools * up->connections
        : f == 2 ? g_atomic_int_get (&up->inflight)
        : f == 3 ? (double) __atomic_load_n (&up->calls, __ATOMIC_RELAXED)
        : f == 4 ? (double) __atomic_load_n (&up->fetches, __ATOMIC_RELAXED)
        : f == 5 ? (double) __atomic_load_n (&up->failures, __ATOMIC_RELAXED)
                 : (double) __atomic_load_n (&up->reconnects, __ATOMIC_RELAXED);
      evd_metrics_sample (out, families[f][0], v, "upstream", (const char *) name,
                          "backend", "thrift", NULL);
    }
  }
}

/* "upstream regional: 4/4 connections up" (" (unavailable)" with none up), for /health. */
static void
evd_backend_thrift_health (gpointer shared, GString *out)
{
  EvdThriftShared *sh = shared;
  GHashTableIter it;
  gpointer name, value;

  g_hash_table_iter_init (&it, sh->upstreams);
  while (g_hash_table_iter_next (&it, &name, &value)) {
    EvdThriftUpstream *up = value;

    evd_backend_health_line (out, "upstream", name, g_atomic_int_get (&up->conns_up),
                             (int) evd_loop_local_count (up->pools) * up->connections);
  }
}

/* ---- [lookup NAME] ---- */

static gpointer
evd_backend_thrift_lookup_open (gpointer shared, EvdConfig *cfg, EvdLookupSpec *spec)
{
  EvdThriftShared *sh = shared;
  g_autofree char *upstream = evd_config_require (cfg, spec->group, "upstream");
  g_autofree char *remote = evd_config_string (cfg, spec->group, "remote_lookup", spec->name);
  g_autofree char *params = evd_config_string (cfg, spec->group, "params", "");
  EvdThriftUpstream *up;
  EvdThriftLookup *l;

  if (upstream == NULL)
    return NULL;
  up = g_hash_table_lookup (sh->upstreams, upstream);
  if (up == NULL) {
    evd_config_problem (cfg, spec->group, "upstream", "no [upstream %s] is configured",
                        upstream);
    return NULL;
  }
  l = g_new0 (EvdThriftLookup, 1);
  l->up = up;
  l->remote = g_steal_pointer (&remote);
  l->params = g_strsplit_set (params, ", ", -1);
  /* "a, b" splits into "a", "", "b": keep the names. */
  {
    guint n = 0;

    for (guint i = 0; l->params[i] != NULL; i++) {
      if (*l->params[i] == '\0') {
        g_free (l->params[i]);
        continue;
      }
      l->params[n++] = l->params[i];
      evd_lookup_spec_add_param (spec, l->params[n - 1], EVD_PARAM_ANY, TRUE);
    }
    l->params[n] = NULL;
  }
  g_ptr_array_add (up->remote_lookups, g_strdup (l->remote));
  g_free (spec->backend_name);
  spec->backend_name = g_strdup_printf ("thrift:%s", up->name);
  return l;
}

static void
evd_backend_thrift_lookup_close (gpointer backend)
{
  EvdThriftLookup *l = backend;

  g_free (l->remote);
  g_strfreev (l->params);
  g_free (l);
}

/* ---- Calls. ---- */

/* The call joins this loop pass's batch, sent at the pass's end with the other calls of its
 * fetch; with no connection up or coming up it fails at once. */
static void
evd_backend_thrift_start (gpointer backend, EvdBackendCall *call)
{
  EvdThriftLookup *l = backend;
  EvdThriftUpstream *up = l->up;
  EvdThriftPool *pool = evd_loop_local_get (up->pools, evd_backend_call_loop (call));
  EvdThriftCall *tc = evd_backend_call_room (call, sizeof *tc);

  evd_backend_call_trace_peer (call, up->host != NULL ? up->host : up->unix_path);
  tc->call = call;
  tc->lookup = l;
  tc->pool = pool;
  tc->link.data = tc;
  *evd_backend_call_data (call) = tc;
  __atomic_add_fetch (&up->calls, 1, __ATOMIC_RELAXED);
  if (!evd_backend_thrift_any (pool, EVD_THRIFT_UP)
      && !evd_backend_thrift_any (pool, EVD_THRIFT_CONNECTING)) {
    evd_backend_thrift_fail_unavailable (tc, pool->last_error);
    return;
  }
  g_queue_push_tail_link (&pool->batch, &tc->link);
  tc->queue = &pool->batch;
  if (!pool->flush_queued) {
    pool->flush_queued = TRUE;
    evd_loop_at_pass_end (pool->loop, evd_backend_thrift_flush, pool);
  }
}

/* Timed out or no longer wanted: the call leaves its connection's books, so its reply, when
 * it comes, is dropped; the connection and the calls behind it go on. */
static void
evd_backend_thrift_cancel (gpointer backend, EvdBackendCall *call)
{
  EvdThriftCall *tc = *evd_backend_call_data (call);

  (void) backend;
  evd_backend_thrift_forget (tc);
  evd_backend_call_fail (call, EVD_ERROR_KIND_CANCELLED, "cancelled");
}

const EvdBackendClass evd_backend_thrift_class = {
  .kind = "thrift",
  .setup = evd_backend_thrift_setup,
  .teardown = evd_backend_thrift_teardown,
  .attach = evd_backend_thrift_attach,
  .open = evd_backend_thrift_lookup_open,
  .start = evd_backend_thrift_start,
  .cancel = evd_backend_thrift_cancel,
  .close = evd_backend_thrift_lookup_close,
  .collect = evd_backend_thrift_collect,
  .health = evd_backend_thrift_health,
};

/* evd_conn: a client connection from first byte to close (see evd_conn.h). */
#include "evd_conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Messages handled per read callback before the loop serves other connections: enough to
 * amortise the callback, few enough that a pipelining client cannot starve its neighbours. */
#define EVD_CONN_READ_BUDGET 16

/* Replies handed to one sendmsg() at most. */
#define EVD_CONN_SEND_BATCH 32

/* Draining, a connection that never sent a request may still be a client that connected just
 * before the listener closed and is about to send one: it gets this long to do so. Short,
 * because an idle pooled connection holds the shutdown for as long. */
#define EVD_CONN_DRAIN_FIRST_REQUEST_MS 250

typedef enum {
  EVD_CONN_OPEN,
  EVD_CONN_CLOSING,  /* answer what was read, read nothing more, then close */
  EVD_CONN_CLOSED,   /* socket gone; the struct is freed on the next loop turn */
} EvdConnState;

typedef enum {
  EVD_STEP_MESSAGE,  /* one message dispatched; look for the next */
  EVD_STEP_WAIT,     /* not enough bytes yet */
  EVD_STEP_STOP,     /* the connection is closing */
} EvdConnStep;

struct _EvdConn {
  EvdConnHost *host;
  GList *link;                  /* in host->conns */
  struct bufferevent *bev;
  struct event *timer;
  struct event *more;           /* read budget spent: resumes after the next poll (lazy) */
  char peer[80];
  EvdConnState state;
  gboolean read_paused;
  gboolean unflushed;           /* in host->unflushed: replies to send at the pass's end */
  GList unflushed_link;
  gboolean last_one;            /* draining: read one more request (or drain_bytes), close */
  gsize drain_bytes;            /* draining: input held when the drain began, all of it
                                 * sent before: its requests are answered before the close */
  gint64 drain_until_us;        /* draining, fresh: closed if no request began by then */
  guint64 n_requests;           /* requests read */

  gboolean detected;
  EvdWireFormat fmt;
  EvdWireScanner *scan;         /* an unframed message being received, else NULL */

  GQueue calls;                 /* EvdCall *, in request order */
  guint n_pending;              /* calls not yet completed */
  gint64 last_active_us;        /* last byte received or reply completed */
  gint64 partial_since_us;      /* first byte of the incomplete message, or 0 */
  gint64 timer_due_us;          /* when c->timer fires */

  /* The peer shut its sending side (or a request stayed incomplete past read_timeout_ms):
   * nothing more is read from the socket, the complete requests already read are answered,
   * then the connection closes, as the SIGTERM drain does. */
  gboolean eof;

  /* Reply bytes the connection holds: calls are started in order only while it holds less
   * than max_output_bytes, and a reply may take only what keeps it under max_output_bytes
   * plus max_reply_bytes (evd_conn_reply_room), so a client that reads nothing holds a
   * bounded amount however many requests it pipelined. */
  GList *unstarted;             /* first call in c->calls not started yet, or NULL */
  gsize held;                   /* bytes of completed replies still in c->calls */
  guint n_running;              /* calls started, not completed */
  gsize reply_est;              /* largest recent reply: a larger one sets it, others let it
                                 * down by 1/16 */

  /* Write progress, measured as bytes that left: those handed to the socket or the
   * bufferevent, less what waits in the bufferevent and in the kernel's send queue. */
  guint64 queued_bytes;
  guint64 delivered_seen;       /* delivered bytes when progress was last seen */
  gint64 write_since_us;        /* output waiting, no progress since; 0: nothing waits */
};

static void evd_conn_process (EvdConn *c);
static void evd_conn_on_more (evutil_socket_t fd, short what, void *arg);
static void evd_conn_drain_one (EvdConn *c);

/* Tells the host's owner, once, that a draining host has no connection left. */
static void
evd_conn_host_check_drained (EvdConnHost *host)
{
  if (host->draining && !host->drained && host->conns.length == 0) {
    host->drained = TRUE;
    if (host->on_drained != NULL)
      host->on_drained (host->on_drained_data);
  }
}

/* How often a connection's timer looks at it when nothing is due sooner. */
static gint64
evd_conn_timer_period_us (const EvdServerConfig *cfg)
{
  int ms = cfg->read_timeout_ms;

  if (cfg->idle_timeout_ms > 0 && cfg->idle_timeout_ms < ms)
    ms = cfg->idle_timeout_ms;
  return ms * (gint64) 1000;
}

/* ---- Closing. ---- */

static void
evd_conn_free (gpointer data)
{
  EvdConn *c = data;

  g_free (c->scan);
  g_free (c);
}

/* Most a close discards of what the client sent and evdal will never read. */
#define EVD_CONN_DISCARD_MAX (4 * 1024 * 1024)

/* Reads and drops what the client sent that evdal will not read (requests after the last one
 * a closing connection answers, the rest of a request cut by the read timeout): Linux closes a
 * socket that holds unread bytes with a reset rather than a FIN, discarding the replies still
 * in its send queue, so a client reading the last reply got part of it and a reset. */
static void
evd_conn_discard_unread (EvdConn *c)
{
  evutil_socket_t fd = bufferevent_getfd (c->bev);
  char buf[16384];
  gsize total = 0;
  ssize_t r;

  while (total < EVD_CONN_DISCARD_MAX &&
         (r = recv (fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
    total += (gsize) r;
}

static void
evd_conn_close (EvdConn *c, const char *why)
{
  EvdConnHost *host = c->host;
  EvdCall *call;

  if (c->state == EVD_CONN_CLOSED)
    return;
  c->state = EVD_CONN_CLOSED;
  if (why != NULL)
    evd_log_event (G_LOG_LEVEL_DEBUG, NULL, NULL, c->peer, "connection closed: %s", why);
  if (c->unflushed)
    g_queue_unlink (&host->unflushed, &c->unflushed_link);
  c->unflushed = FALSE;
  event_free (c->timer);
  g_clear_pointer (&c->more, event_free);
  evd_conn_discard_unread (c);
  bufferevent_free (c->bev);
  c->bev = NULL;
  g_atomic_int_add (host->n_connections, -1);
  /* Completed and unstarted calls are dropped; running ones are cancelled and free
   * themselves. */
  gboolean started = TRUE;
  GList *link;
  while ((link = g_queue_pop_head_link (&c->calls)) != NULL) {
    call = link->data;
    if (link == c->unstarted)
      started = FALSE;
    g_list_free_1 (link);
    if (!started || evd_call_is_done (call))
      evd_call_free (call);
    else
      evd_call_abandon (call);
  }
  c->unstarted = NULL;
  g_queue_delete_link (&host->conns, c->link);
  /* A callback of this connection may be running: free it once that has returned. */
  evd_loop_post (host->loop, evd_conn_free, c);
  evd_conn_host_check_drained (host);
}

/* A client broke the protocol: say why (rate-limited, the client controls the rate), close. */
static void
evd_conn_reject (EvdConn *c, const char *what, const char *why)
{
  evd_log_limited (&c->host->log_limit, c->peer, "%s: %s; closing the connection", what, why);
  evd_conn_close (c, NULL);
}

/* No call running, no reply waiting to be sent. */
static gboolean
evd_conn_idle (EvdConn *c)
{
  return g_queue_is_empty (&c->calls) &&
         evbuffer_get_length (bufferevent_get_output (c->bev)) == 0;
}

/* ---- Replies. ---- */

/* Reply bytes this connection holds: completed replies not sent yet, queued or in the
 * bufferevent. */
static gsize
evd_conn_held (EvdConn *c)
{
  return c->held + evbuffer_get_length (bufferevent_get_output (c->bev));
}

static gboolean
evd_conn_over_limits (EvdConn *c)
{
  const EvdServerConfig *cfg = c->host->config;

  return c->n_pending >= (guint) cfg->max_pipeline ||
         evd_conn_held (c) >= (gsize) cfg->max_output_bytes;
}

/* The bytes a reply completing now may take (EvdCallLimitFunc): max_reply_bytes, less what
 * would take the connection past max_output_bytes + max_reply_bytes. Calls start only while
 * the connection holds less than max_output_bytes, but those started together (a pipelined
 * burst) complete together: the ones whose replies would cross the bound fail their calls
 * as "reply too large" rather than grow the connection without end. */
static gsize
evd_conn_reply_room (gpointer owner)
{
  EvdConn *c = owner;
  const EvdServerConfig *cfg = c->host->config;
  gsize bound = (gsize) cfg->max_output_bytes + (gsize) cfg->max_reply_bytes;
  gsize held = evd_conn_held (c);

  return MIN ((gsize) cfg->max_reply_bytes, held < bound ? bound - held : 0);
}

static void evd_conn_on_call_done (EvdCall *call, gpointer owner);

/* Whether the next call may start: while the connection holds less than max_output_bytes of
 * replies, and, counting each running call as large as its recent replies, would still hold
 * less with this one. The estimate keeps pipelined multi-MiB replies of a client that reads
 * them from completing together and sharing the bound of evd_conn_reply_room (some of them
 * would be cut); small replies (pings, pages) all run at once as before. */
static gboolean
evd_conn_may_start (EvdConn *c)
{
  gsize max = (gsize) c->host->config->max_output_bytes;
  gsize held = evd_conn_held (c);

  return held < max && (c->n_running == 0 || held + (c->n_running + 1) * c->reply_est <= max);
}

/* Starts the calls read but held back, in order, while evd_conn_may_start says so. */
static void
evd_conn_start_more (EvdConn *c)
{
  while (c->unstarted != NULL && c->state != EVD_CONN_CLOSED && evd_conn_may_start (c)) {
    EvdCall *call = c->unstarted->data;

    c->unstarted = c->unstarted->next;
    c->n_running++;
    evd_call_start (call, evd_conn_on_call_done, c);
  }
}

/* Reading stopped for back-pressure starts again once the client caught up. */
static void
evd_conn_maybe_resume (EvdConn *c)
{
  if (c->state != EVD_CONN_OPEN || !c->read_paused || evd_conn_over_limits (c))
    return;
  c->read_paused = FALSE;
  if (!c->eof)
    bufferevent_enable (c->bev, EV_READ);
  /* After EOF the input left is handled (and the connection closed when it is done)
   * through the read callback too, though the socket is not read again. */
  if (evbuffer_get_length (bufferevent_get_input (c->bev)) > 0 || c->eof)
    bufferevent_trigger (c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void evd_conn_arm_timer_by (EvdConn *c, gint64 in_us);

/* Bytes that left: handed to the socket or the bufferevent, less those still waiting in the
 * bufferevent or the kernel's send queue (SIOCOUTQ: not yet acknowledged by the peer on TCP,
 * not yet read by it on a unix socket). With TLS the queue holds ciphertext, a little more
 * than the plaintext counted, which only ever delays seeing progress. */
static guint64
evd_conn_delivered (EvdConn *c)
{
  int outq = 0;
  guint64 waiting = evbuffer_get_length (bufferevent_get_output (c->bev));

  if (ioctl (bufferevent_getfd (c->bev), TIOCOUTQ, &outq) == 0 && outq > 0)
    waiting += (guint64) outq;
  return c->queued_bytes > waiting ? c->queued_bytes - waiting : 0;
}

/* Output began to wait in the bufferevent: the timer looks at its progress every half
 * write_timeout_ms. libevent's own write timeout counted writability events, which a kernel
 * send buffer of megabytes spaces out by seconds for a client reading 100 KB/s, and closed
 * such steady readers as if they read nothing. */
static void
evd_conn_watch_writes (EvdConn *c)
{
  if (c->write_since_us != 0 || c->state == EVD_CONN_CLOSED ||
      evbuffer_get_length (bufferevent_get_output (c->bev)) == 0)
    return;
  c->write_since_us = g_get_monotonic_time ();
  c->delivered_seen = evd_conn_delivered (c);
  evd_conn_arm_timer_by (c, c->host->config->write_timeout_ms * (gint64) 500);
}

/* Sends replies straight to the socket; what the socket does not take now (or an error,
 * which the bufferevent then meets and reports) goes to the bufferevent's output. */
static void
evd_conn_send (EvdConn *c, struct iovec *iov, EvdCall **calls, guint n)
{
  struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n };
  struct evbuffer *out = bufferevent_get_output (c->bev);
  ssize_t r = sendmsg (bufferevent_getfd (c->bev), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  gsize sent = r > 0 ? (gsize) r : 0;

  for (guint i = 0; i < n; i++) {
    gsize len = iov[i].iov_len;

    c->queued_bytes += len;
    if (sent < len)
      evbuffer_add (out, (const guint8 *) iov[i].iov_base + sent, len - sent);
    sent = sent > len ? sent - len : 0;
    evd_call_free (calls[i]);
  }
}

/* Sends every reply at the head of the queue that is ready: replies leave in request order.
 * On plain TCP, when nothing is queued in the bufferevent, they are written at once rather
 * than through it: a bufferevent write costs two epoll_ctl calls (enable, then disable
 * EV_WRITE) and a loop turn, which at one reply per write is as much as the write itself. */
static void
evd_conn_flush (EvdConn *c)
{
  struct evbuffer *out = bufferevent_get_output (c->bev);
  gboolean direct = c->host->tls == NULL && evbuffer_get_length (out) == 0;
  struct iovec iov[EVD_CONN_SEND_BATCH];
  EvdCall *batch[EVD_CONN_SEND_BATCH];
  guint n = 0;
  EvdCall *call;

  while ((call = g_queue_peek_head (&c->calls)) != NULL && evd_call_is_done (call)) {
    GByteArray *reply = evd_call_reply_bytes (call);

    g_queue_pop_head (&c->calls);
    c->held -= reply != NULL ? reply->len : 0;
    if (reply == NULL || reply->len == 0) {
      evd_call_free (call);
    } else if (!direct) {
      c->queued_bytes += reply->len;
      evbuffer_add (out, reply->data, reply->len);
      evd_call_free (call);
    } else {
      iov[n] = (struct iovec) { reply->data, reply->len };
      batch[n++] = call;
      if (n == EVD_CONN_SEND_BATCH) {
        evd_conn_send (c, iov, batch, n);
        n = 0;
        direct = evbuffer_get_length (out) == 0;
      }
    }
  }
  if (n > 0)
    evd_conn_send (c, iov, batch, n);
  evd_conn_watch_writes (c);
}

/* After replies were completed or sent: close a closing connection that is done, or read a
 * paused one again. */
static void
evd_conn_after_replies (EvdConn *c)
{
  evd_conn_start_more (c);
  if (c->state == EVD_CONN_CLOSING && evd_conn_idle (c))
    evd_conn_close (c, "closing after its last reply");
  else
    evd_conn_maybe_resume (c);
}

/* Sends the replies of every connection that completed some during this loop pass. */
static void
evd_conn_host_flush (gpointer data)
{
  EvdConnHost *host = data;
  GList *link;

  while ((link = g_queue_pop_head_link (&host->unflushed)) != NULL) {
    EvdConn *c = link->data;

    c->unflushed = FALSE;
    evd_conn_flush (c);
    evd_conn_after_replies (c);
  }
}

/* Replies are sent when the loop pass ends, not as each completes: the requests a read
 * brought in, the timers and the worker results of one pass then leave in one sendmsg() per
 * connection. Under overload, with a few requests per connection per pass, that is a third
 * fewer sendmsg() calls, which on loopback carry the receiver's TCP work too. */
static void
evd_conn_flush_later (EvdConn *c)
{
  EvdConnHost *host = c->host;

  if (c->unflushed || c->state == EVD_CONN_CLOSED)
    return;
  c->unflushed = TRUE;
  c->unflushed_link.data = c;
  if (g_queue_is_empty (&host->unflushed))
    evd_loop_at_pass_end (host->loop, evd_conn_host_flush, host);
  g_queue_push_tail_link (&host->unflushed, &c->unflushed_link);
}

static void
evd_conn_on_call_done (EvdCall *call, gpointer owner)
{
  EvdConn *c = owner;

  GByteArray *reply = evd_call_reply_bytes (call);
  gsize len = reply != NULL ? reply->len : 0;

  c->held += len;
  c->reply_est = MAX (len, c->reply_est - c->reply_est / 16);
  c->n_running--;
  c->n_pending--;
  c->last_active_us = g_get_monotonic_time ();
  evd_conn_flush_later (c);
}

/* ---- Requests. ---- */

/* The call of a message read in full; st says whether its body is well-formed. */
static EvdCall *
evd_conn_prepare (EvdConn *c, const EvdWireScanner *scan, const guint8 *data, EvdWireStatus st)
{
  if (st != EVD_WIRE_OK)
    evd_log_limited (&c->host->log_limit, c->peer, "malformed arguments of %.*s: %s",
                     (int) MIN (scan->name_len, 64), (const char *) scan->name, scan->reason);
  return evd_rpc_prepare (c->host->service, c->host->loop, c->fmt, scan, data,
                          st == EVD_WIRE_OK);
}

static void
evd_conn_dispatch (EvdConn *c, EvdCall *call)
{
  evd_call_set_peer (call, c->peer);
  evd_call_set_reply_limit (call, evd_conn_reply_room);
  g_queue_push_tail (&c->calls, call);
  c->n_pending++;
  c->n_requests++;
  if (c->unstarted == NULL)
    c->unstarted = c->calls.tail;
  evd_conn_start_more (c);
}

static EvdConnStep
evd_conn_detect (EvdConn *c, struct evbuffer *in)
{
  guint8 head[EVD_WIRE_DETECT_BYTES];
  gsize n = MIN (evbuffer_get_length (in), sizeof head);
  const char *reason = NULL;

  evbuffer_copyout (in, head, n);
  switch (evd_wire_detect (head, n, &c->fmt, &reason)) {
  case EVD_WIRE_OK:
    c->detected = TRUE;
    return EVD_STEP_MESSAGE;
  case EVD_WIRE_NEED_MORE:
    return EVD_STEP_WAIT;
  default:
    evd_conn_reject (c, "not a Thrift connection", reason);
    return EVD_STEP_STOP;
  }
}

static EvdConnStep
evd_conn_next_framed (EvdConn *c, struct evbuffer *in)
{
  const EvdServerConfig *cfg = c->host->config;
  EvdWireScanner scan;
  guint8 head[4];
  gint32 n = 0;
  const char *reason = NULL;
  guint8 *data;
  EvdWireStatus st;
  EvdCall *call;
  ev_ssize_t have = evbuffer_copyout (in, head, sizeof head);

  /* Checked before anything of the declared size is allocated or awaited. */
  st = evd_wire_frame_length (head, have > 0 ? (gsize) have : 0, cfg->max_frame_bytes, &n,
                              &reason);
  if (st == EVD_WIRE_NEED_MORE)
    return EVD_STEP_WAIT;
  if (st != EVD_WIRE_OK) {
    g_autofree char *why = g_strdup_printf ("%s (length %d, max_frame_bytes %d)", reason, n,
                                            cfg->max_frame_bytes);
    evd_conn_reject (c, "bad frame", why);
    return EVD_STEP_STOP;
  }
  if (evbuffer_get_length (in) < 4 + (gsize) n)
    return EVD_STEP_WAIT;
  data = evbuffer_pullup (in, 4 + (gssize) n) + 4;
  evd_wire_scanner_init (&scan, c->fmt.proto, (gsize) n, EVD_WIRE_MAX_DEPTH);
  scan.schema_for = c->host->service->args_schema;
  st = evd_wire_scanner_header (&scan, data, (gsize) n);
  if (st != EVD_WIRE_OK) {
    evd_conn_reject (c, "bad message header", st == EVD_WIRE_NEED_MORE
                     ? "the message header is longer than its frame" : scan.reason);
    return EVD_STEP_STOP;
  }
  /* The frame says where the message ends: a call to shed is refused on its header alone,
   * without walking its body. */
  call = evd_rpc_shed (c->host->service, c->host->loop, c->fmt, &scan);
  if (call == NULL) {
    /* BAD_BODY (the message overruns its frame, or leaves bytes in it) costs only this call:
     * the frame tells where the next message starts. */
    st = evd_wire_scanner_frame (&scan, data, (gsize) n);
    call = evd_conn_prepare (c, &scan, data, st);
  }
  evd_conn_dispatch (c, call);
  if (c->state != EVD_CONN_CLOSED)
    evbuffer_drain (in, 4 + (gsize) n);
  return EVD_STEP_MESSAGE;
}

static EvdConnStep
evd_conn_next_unframed (EvdConn *c, struct evbuffer *in)
{
  gsize len = evbuffer_get_length (in);
  EvdWireStatus st;
  guint8 *data;
  EvdCall *call;

  if (c->scan == NULL) {
    c->scan = g_new (EvdWireScanner, 1);
    evd_wire_scanner_init (c->scan, c->fmt.proto, (gsize) c->host->config->max_frame_bytes,
                           EVD_WIRE_MAX_DEPTH);
    c->scan->schema_for = c->host->service->args_schema;
  } else if (len < c->scan->need) {
    return EVD_STEP_WAIT;  /* the scanner knows nothing can finish with fewer bytes */
  }
  data = evbuffer_pullup (in, -1);
  st = evd_wire_scanner_feed (c->scan, data, len);
  if (st == EVD_WIRE_NEED_MORE)
    return EVD_STEP_WAIT;
  if (st == EVD_WIRE_BAD_HEADER) {
    evd_conn_reject (c, "bad message header", c->scan->reason);
    return EVD_STEP_STOP;
  }
  /* Unframed, the body had to be walked to find where the message ends; shedding still
   * saves decoding it. */
  call = st == EVD_WIRE_OK ? evd_rpc_shed (c->host->service, c->host->loop, c->fmt, c->scan)
                           : NULL;
  evd_conn_dispatch (c, call ? call : evd_conn_prepare (c, c->scan, data, st));
  if (c->state == EVD_CONN_CLOSED)
    return EVD_STEP_STOP;
  if (st == EVD_WIRE_BAD_BODY) {
    /* Without a frame there is no telling where the next message starts: answer, then close. */
    c->state = EVD_CONN_CLOSING;
    bufferevent_disable (c->bev, EV_READ);
    return EVD_STEP_STOP;
  }
  evbuffer_drain (in, c->scan->msg_len);
  g_clear_pointer (&c->scan, g_free);
  return EVD_STEP_MESSAGE;
}

static EvdConnStep
evd_conn_next (EvdConn *c, struct evbuffer *in)
{
  if (evbuffer_get_length (in) == 0)
    return EVD_STEP_WAIT;
  if (!c->detected) {
    EvdConnStep step = evd_conn_detect (c, in);
    if (step != EVD_STEP_MESSAGE)
      return step;
  }
  return c->fmt.framed ? evd_conn_next_framed (c, in) : evd_conn_next_unframed (c, in);
}

static void
evd_conn_process_input (EvdConn *c)
{
  struct evbuffer *in;

  for (guint budget = EVD_CONN_READ_BUDGET; budget > 0; budget--) {
    if (c->state != EVD_CONN_OPEN)
      return;
    in = bufferevent_get_input (c->bev);
    if (evd_conn_over_limits (c)) {
      /* The client is not reading its replies, or pipelines too much: stop reading it. While
       * evdal does not read, the client's request cannot be late: the clock starts anew. */
      c->read_paused = TRUE;
      c->partial_since_us = 0;
      bufferevent_disable (c->bev, EV_READ);
      return;
    }
    gsize before = evbuffer_get_length (in);
    switch (evd_conn_next (c, in)) {
    case EVD_STEP_MESSAGE:
      /* The read timeout is for the request under way: a whole one restarts it. */
      c->partial_since_us = 0;
      if (c->last_one && c->state == EVD_CONN_OPEN) {
        gsize taken = before - evbuffer_get_length (in);

        /* Draining: the requests evdal had read when the drain began, and one at least. */
        c->drain_bytes = c->drain_bytes > taken ? c->drain_bytes - taken : 0;
        if (c->drain_bytes == 0) {
          c->state = EVD_CONN_CLOSING;
          bufferevent_disable (c->bev, EV_READ);
        }
      }
      continue;
    case EVD_STEP_STOP:
      return;
    case EVD_STEP_WAIT:
      if (c->eof) {
        /* Nothing more will come: what was read in full is answered, a partial rest never. */
        c->state = EVD_CONN_CLOSING;
        c->partial_since_us = 0;
        return;
      }
      c->partial_since_us = evbuffer_get_length (in) == 0 ? 0
                            : c->partial_since_us ? c->partial_since_us
                                                  : g_get_monotonic_time ();
      return;
    }
  }
  /* Budget spent with messages left: come back after the other connections had their turn.
   * A zero timeout fires only after the loop's next poll, whose ready sockets run first; a
   * deferred bufferevent callback would run again in this same pass (libevent runs up to 32
   * of those per pass), letting one pipelining client take the loop for a whole 4 KiB read.
   * The socket is not read meanwhile: the rest waits in the kernel, where TCP's window holds
   * the client back, rather than piling up here faster than its turns take it. */
  if (c->state == EVD_CONN_OPEN) {
    static const struct timeval now = { 0, 0 };

    if (c->more == NULL)
      c->more = evtimer_new (evd_loop_base (c->host->loop), evd_conn_on_more, c);
    if (!c->eof)
      bufferevent_disable (c->bev, EV_READ);
    evtimer_add (c->more, &now);
  }
}

/* Handles what was read, as one watched turn of the loop; what it answered goes out at the
 * pass's end, with the rest. */
static void
evd_conn_process (EvdConn *c)
{
  evd_loop_watch_begin (c->host->loop, "reading requests from", c->peer);
  evd_conn_process_input (c);
  evd_conn_flush_later (c);
  evd_loop_watch_end (c->host->loop);
}

/* ---- Callbacks. ---- */

/* Nothing more is read from the socket; what the input holds is still handled. */
static void
evd_conn_stop_reading (EvdConn *c)
{
  c->eof = TRUE;
  bufferevent_disable (c->bev, EV_READ);
}

static void
evd_conn_on_read (struct bufferevent *bev, void *arg)
{
  EvdConn *c = arg;

  (void) bev;
  c->last_active_us = g_get_monotonic_time ();
  evd_conn_process (c);
}

/* The rest of what a connection sent, once the loop has polled the others. */
static void
evd_conn_on_more (evutil_socket_t fd, short what, void *arg)
{
  EvdConn *c = arg;

  (void) fd;
  (void) what;
  if (c->state != EVD_CONN_OPEN || c->read_paused)
    return;  /* paused for back-pressure: resuming reads and handles the input again */
  if (!c->eof)
    bufferevent_enable (c->bev, EV_READ);
  /* The replies that the other connections' turns of this pass made leave before this one
   * takes its turn, not at the pass's end after it. */
  evd_conn_host_flush (c->host);
  evd_conn_process (c);
}

static void
evd_conn_on_write (struct bufferevent *bev, void *arg)
{
  (void) bev;
  evd_conn_after_replies (arg);
}

static void
evd_conn_on_event (struct bufferevent *bev, short what, void *arg)
{
  EvdConn *c = arg;

  (void) bev;
  if (what & BEV_EVENT_CONNECTED) {
    /* The TLS handshake is done: unless a request has begun since, nothing is half-sent. */
    if (c->state != EVD_CONN_CLOSED &&
        evbuffer_get_length (bufferevent_get_input (c->bev)) == 0)
      c->partial_since_us = 0;
  } else if ((what & (BEV_EVENT_EOF | BEV_EVENT_READING)) == (BEV_EVENT_EOF | BEV_EVENT_READING) &&
      c->state != EVD_CONN_CLOSED) {
    /* The client shut its sending side (one-shot scripts, `nc -N`) or closed: the two look
     * the same until a reply is written, which a closed client answers with a reset. So the
     * requests it sent are answered as if it were there (the calls' deadlines bound how long
     * that takes), and the connection closes after the last reply. */
    evd_conn_stop_reading (c);
    evd_conn_process (c);
  } else if (what & BEV_EVENT_EOF)
    evd_conn_close (c, "closed by the peer");
  else if (what & BEV_EVENT_ERROR)
    evd_conn_close (c, g_strerror (EVUTIL_SOCKET_ERROR ()));
}

/* One timer per connection, re-armed lazily: reads only note the time, the timer checks. */
static void
evd_conn_arm_timer (EvdConn *c, gint64 in_us)
{
  struct timeval tv = { in_us / G_USEC_PER_SEC, in_us % G_USEC_PER_SEC };

  c->timer_due_us = g_get_monotonic_time () + in_us;
  evtimer_add (c->timer, &tv);
}

/* Makes the timer fire within in_us, keeping it if it is due sooner. */
static void
evd_conn_arm_timer_by (EvdConn *c, gint64 in_us)
{
  if (c->timer_due_us > g_get_monotonic_time () + in_us)
    evd_conn_arm_timer (c, in_us);
}

/* How long the client has left to make its waiting output move, in us; G_MAXINT64 when
 * nothing waits. Progress is any byte that left since the last look. */
static gint64
evd_conn_write_left (EvdConn *c, gint64 now)
{
  gint64 wt = c->host->config->write_timeout_ms * (gint64) 1000;
  guint64 delivered;

  if (evbuffer_get_length (bufferevent_get_output (c->bev)) == 0) {
    c->write_since_us = 0;
    return G_MAXINT64;
  }
  delivered = evd_conn_delivered (c);
  if (c->write_since_us == 0 || delivered != c->delivered_seen) {
    c->write_since_us = now;
    c->delivered_seen = delivered;
  }
  return c->write_since_us + wt - now;
}

/* A request stayed incomplete past read_timeout_ms: the complete requests before it are
 * answered, then the connection closes; the partial one is dropped. */
static void
evd_conn_read_timed_out (EvdConn *c)
{
  evd_log_limited (&c->host->log_limit, c->peer, "read timeout: a request stayed incomplete "
                   "too long; closing the connection after the replies due");
  evd_conn_stop_reading (c);
  c->partial_since_us = 0;
  c->state = EVD_CONN_CLOSING;
  evbuffer_drain (bufferevent_get_input (c->bev),
                  evbuffer_get_length (bufferevent_get_input (c->bev)));
  evd_conn_flush_later (c);
}

static void
evd_conn_on_timer (evutil_socket_t fd, short what, void *arg)
{
  EvdConn *c = arg;
  const EvdServerConfig *cfg = c->host->config;
  gint64 now = g_get_monotonic_time ();
  gint64 read_left = G_MAXINT64, idle_left = G_MAXINT64, write_left;
  gint64 period = evd_conn_timer_period_us (cfg);

  (void) fd;
  (void) what;
  c->timer_due_us = G_MAXINT64;
  write_left = evd_conn_write_left (c, now);
  if (write_left <= 0) {
    g_autofree char *why = g_strdup_printf ("no byte of its replies left for %d ms",
                                            cfg->write_timeout_ms);
    evd_conn_reject (c, "write timeout", why);
    return;
  }
  if (write_left != G_MAXINT64)
    period = MIN (period, MAX (cfg->write_timeout_ms * (gint64) 500, 1000));
  /* With TLS, part of a record is no input yet: the timer finds it, so a request stalled
   * half-way through a record is closed within two read timeouts. */
  if (c->partial_since_us == 0 && c->host->tls != NULL && c->state == EVD_CONN_OPEN &&
      !c->read_paused && evd_tls_has_partial (c->bev))
    c->partial_since_us = now;
  if (c->drain_until_us != 0 && c->n_requests == 0 && c->partial_since_us == 0 &&
      evbuffer_get_length (bufferevent_get_input (c->bev)) == 0) {
    if (now >= c->drain_until_us) {
      evd_conn_close (c, "server is shutting down");
      return;
    }
    read_left = c->drain_until_us - now;
  }
  if (c->partial_since_us != 0) {
    read_left = c->partial_since_us + cfg->read_timeout_ms * (gint64) 1000 - now;
    if (read_left <= 0) {
      evd_conn_read_timed_out (c);
      read_left = G_MAXINT64;
    }
  }
  if (cfg->idle_timeout_ms > 0 && evd_conn_idle (c)) {
    idle_left = c->last_active_us + cfg->idle_timeout_ms * (gint64) 1000 - now;
    if (idle_left <= 0) {
      evd_conn_close (c, "idle timeout");
      return;
    }
  }
  evd_conn_arm_timer (c, MIN (MIN (read_left, idle_left), MIN (write_left, period)));
}

/* ---- Birth. ---- */

void
evd_conn_format_addr (const struct sockaddr *addr, socklen_t len, char *out, gsize size)
{
  char host[INET6_ADDRSTRLEN] = "?";

  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *) addr;
    inet_ntop (AF_INET, &in->sin_addr, host, sizeof host);
    g_snprintf (out, size, "%s:%u", host, ntohs (in->sin_port));
  } else if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) addr;
    inet_ntop (AF_INET6, &in6->sin6_addr, host, sizeof host);
    g_snprintf (out, size, "[%s]:%u", host, ntohs (in6->sin6_port));
  } else if (addr->sa_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *) addr;
    gsize plen = len > offsetof (struct sockaddr_un, sun_path)
                 ? len - offsetof (struct sockaddr_un, sun_path) : 0;
    g_snprintf (out, size, "unix:%.*s", (int) strnlen (un->sun_path, plen), un->sun_path);
  } else {
    g_snprintf (out, size, "family-%d", addr->sa_family);
  }
}

/* Whether the client has sent bytes we have not handled: a request it sent before it could
 * know that the server is shutting down. */
static gboolean
evd_conn_has_input (EvdConn *c)
{
  char b;

  return evbuffer_get_length (bufferevent_get_input (c->bev)) > 0 ||
         recv (bufferevent_getfd (c->bev), &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

void
evd_conn_new (EvdConnHost *host, evutil_socket_t fd, const struct sockaddr *addr,
              socklen_t addr_len)
{
  EvdConn *c = g_new0 (EvdConn, 1);
  struct event_base *base = evd_loop_base (host->loop);
  const EvdServerConfig *cfg = host->config;
  int one = 1;

  c->host = host;
  evd_conn_format_addr (addr, addr_len, c->peer, sizeof c->peer);
  if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* replies are small */
  c->bev = host->tls ? evd_tls_accept (host->tls, base, fd)
                     : bufferevent_socket_new (base, fd, BEV_OPT_CLOSE_ON_FREE);
  c->timer = evtimer_new (base, evd_conn_on_timer, c);
  c->last_active_us = g_get_monotonic_time ();
  /* A TLS handshake is what a client begins first: until it is done (BEV_EVENT_CONNECTED),
   * read_timeout_ms bounds it as it bounds a half-sent request; idle_timeout_ms (0: none)
   * is no bound for a client that stalls half-way through its ClientHello. */
  if (host->tls != NULL)
    c->partial_since_us = c->last_active_us;
  bufferevent_setcb (c->bev, evd_conn_on_read, evd_conn_on_write, evd_conn_on_event, c);
  bufferevent_setwatermark (c->bev, EV_WRITE, (gsize) cfg->max_output_bytes / 2, 0);
  /* No libevent write timeout: the connection's timer measures bytes that left
   * (evd_conn_watch_writes). */
  g_queue_push_tail (&host->conns, c);
  c->link = host->conns.tail;
  bufferevent_enable (c->bev, EV_READ | EV_WRITE);
  evd_conn_arm_timer (c, evd_conn_timer_period_us (cfg));
  if (host->draining)
    evd_conn_drain_one (c);  /* accepted just before the listener closed */
  g_debug ("%s: connection accepted on loop %u", c->peer, evd_loop_index (host->loop));
}

/* ---- Shutdown. ---- */

/* Shutdown reaches an open connection. The requests already sent (all those evdal holds unread,
 * else the one the kernel holds or that has begun) are answered, then the connection closes;
 * so is the first request of a connection that has sent none yet, if it begins within
 * EVD_CONN_DRAIN_FIRST_REQUEST_MS: a restart under socket activation must lose nothing a
 * client sent. Anything else stops being read and closes once its replies are out. */
static void
evd_conn_drain_one (EvdConn *c)
{
  if (evd_conn_has_input (c)) {
    /* Every request in the input (held back by max_pipeline or max_output_bytes, or not
     * handled yet) was sent before the drain; the one the kernel holds may have been too. */
    c->last_one = TRUE;  /* the read timeout and the grace period bound the rest */
    c->drain_bytes = evbuffer_get_length (bufferevent_get_input (c->bev));
    return;
  }
  if (c->n_requests == 0) {
    c->last_one = TRUE;
    c->drain_until_us = g_get_monotonic_time () + EVD_CONN_DRAIN_FIRST_REQUEST_MS * 1000;
    evd_conn_arm_timer (c, EVD_CONN_DRAIN_FIRST_REQUEST_MS * 1000);
    return;
  }
  c->state = EVD_CONN_CLOSING;
  bufferevent_disable (c->bev, EV_READ);
  if (evd_conn_idle (c))
    evd_conn_close (c, "server is shutting down");
}

void
evd_conn_host_drain (EvdConnHost *host)
{
  GList *l = host->conns.head;

  host->draining = TRUE;
  while (l != NULL) {
    EvdConn *c = l->data;

    l = l->next;  /* closing removes c's link */
    if (c->state == EVD_CONN_OPEN)
      evd_conn_drain_one (c);
  }
  evd_conn_host_check_drained (host);
}

void
evd_conn_host_close_all (EvdConnHost *host)
{
  EvdConn *c;

  host->draining = TRUE;
  while ((c = g_queue_peek_head (&host->conns)) != NULL)
    evd_conn_close (c, "shutdown grace period is over");
}

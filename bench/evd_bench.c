/* evdal-bench: a load generator for evdal (or any DataAccess server), like redis-benchmark:
 * N connections over `--threads` libevent loops, each a closed loop (send, wait for the
 * reply, send again; --pipeline keeps several in flight), for a duration or a number of
 * requests, in any wire format, with a latency histogram of ~1% precision.
 *
 *   evdal-bench --port 9090 -c 64 -d 10 --call nap:delay_ms=20 --call user:user_id=42
 *   evdal-bench --random 1:100000 --call user:user_id=@random --call orders:user_id=@random
 *
 * The request is encoded once with evdal's own RPC layer; replies are framed, or found by
 * evdal's wire scanner when unframed, and classified by their result field without decoding
 * the whole result. The last line is machine-readable: RESULT {json}.
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <gio/gio.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "evd_bench_hist.h"
#include "evd_rpc.h"

#define EVD_BENCH_MAX_PIPELINE 1024
/* An int param given as --random NAME=LO:HI is encoded as this value, then patched in place
 * with a random one before each send (binary protocol: a fixed 8-byte big-endian field). */
#define EVD_BENCH_SENTINEL G_GINT64_CONSTANT (0x5eed5eed5eed5eed)

typedef struct {
  char *host;
  int port;
  char *unix_path;
  int connections;
  int threads;
  int idle;
  int pipeline;
  double duration;
  gint64 requests;
  double warmup;
  gboolean unframed;
  gboolean compact;
  char *method;
  char **calls;
  int deadline_ms;
  gboolean trace;
  gboolean json;
  char *label;
  char *random;
  double rate;                  /* open loop: requests per second offered, whatever the replies */
} EvdBenchOptions;

typedef struct {
  EvdBenchOptions o;
  EvdWireFormat fmt;
  GByteArray *request;
  struct sockaddr_storage addr;
  socklen_t addr_len;
  gint64 start_us, record_from_us, end_us;
  char *random_name;            /* --random: the param, its range, where it sits */
  gint64 random_lo, random_hi;
  GArray *random_at;            /* gsize offsets of the sentinel in `request` */
} EvdBench;

typedef struct _EvdBenchThread EvdBenchThread;

typedef struct {
  EvdBenchThread *t;
  struct bufferevent *bev;
  gint64 sent_at[EVD_BENCH_MAX_PIPELINE];
  guint head, tail;              /* ring of send times: replies come back in order */
  EvdWireScanner *scan;          /* an unframed reply being received */
  gboolean idle;
  gboolean open;                 /* connected, and not closed since */
} EvdBenchConn;

typedef enum { OUT_OK, OUT_DECLARED, OUT_OVERLOADED, OUT_APP_ERROR, OUT_N } EvdBenchOutcome;

struct _EvdBenchThread {
  EvdBench *b;
  struct event_base *base;
  GThread *thread;
  GPtrArray *conns;
  int n_busy, n_idle;
  gint64 quota;                  /* -n: requests this thread may still send (< 0: no limit) */
  gint64 pending_replies;
  EvdHist hist;
  EvdHist ok_hist;               /* answered with a result, not Overloaded or an error */
  guint64 outcomes[OUT_N];
  struct event *rate_timer;      /* --rate: sends what is due every millisecond */
  double rate_per_us;
  gint64 rate_start_us;
  guint64 rate_sent;
  guint64 rate_skipped;          /* due while every connection had its pipeline full */
  guint next_conn;
  guint64 conn_errors;
  struct event *stop_timer;
  GRand *rand;
};

/* ---- The request. ---- */

static evdalValue *
evd_bench_value (const char *text)
{
  char *end;
  if (strcmp (text, "@random") == 0) {
    evdalValue *r = g_object_new (EVDAL_TYPE_VALUE, NULL);
    r->int_value = EVD_BENCH_SENTINEL;
    r->__isset_int_value = TRUE;
    return r;
  }
  gint64 i = g_ascii_strtoll (text, &end, 10);
  double d;
  evdalValue *v = g_object_new (EVDAL_TYPE_VALUE, NULL);

  if (*text && *end == '\0') {
    v->int_value = i;
    v->__isset_int_value = TRUE;
  } else if (d = g_ascii_strtod (text, &end), *text && *end == '\0') {
    v->real_value = d;
    v->__isset_real_value = TRUE;
  } else if (strcmp (text, "null") == 0) {
    v->null_value = v->__isset_null_value = TRUE;
  } else {
    v->text_value = g_strdup (text);
    v->__isset_text_value = TRUE;
  }
  return v;
}

/* "[KEY=]LOOKUP[:p=v,q=w]" */
static gboolean
evd_bench_add_call (evdalFetchRequest *req, const char *spec, guint n, GError **error)
{
  g_auto (GStrv) head_params = g_strsplit (spec, ":", 2);
  const char *eq = strchr (head_params[0], '=');
  evdalLookupCall *c = g_object_new (EVDAL_TYPE_LOOKUP_CALL, NULL);
  char *key = eq ? g_strndup (head_params[0], (gsize) (eq - head_params[0]))
                 : g_strdup_printf ("c%u", n);

  c->lookup = g_strdup (eq ? eq + 1 : head_params[0]);
  c->__isset_lookup = TRUE;
  if (head_params[1] != NULL) {
    g_auto (GStrv) params = g_strsplit (head_params[1], ",", -1);
    for (guint i = 0; params[i] != NULL; i++) {
      const char *pe = strchr (params[i], '=');
      if (pe == NULL) {
        g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                     "--call %s: \"%s\" is not param=value", spec, params[i]);
        g_object_unref (c);
        g_free (key);
        return FALSE;
      }
      g_hash_table_insert (c->params, g_strndup (params[i], (gsize) (pe - params[i])),
                           evd_bench_value (pe + 1));
    }
    c->__isset_params = TRUE;
  }
  g_hash_table_insert (req->calls, key, c);
  return TRUE;
}

static ThriftStruct *
evd_bench_args (const EvdBenchOptions *o, GError **error)
{
  evdalDataAccessFetchArgs *args;

  if (strcmp (o->method, "ping") == 0)
    return g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_ARGS, NULL);
  if (strcmp (o->method, "lookups") == 0)
    return g_object_new (EVDAL_TYPE_DATA_ACCESS_LOOKUPS_ARGS, NULL);
  args = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_ARGS, NULL);
  for (guint i = 0; o->calls != NULL && o->calls[i] != NULL; i++)
    if (!evd_bench_add_call (args->request, o->calls[i], i + 1, error)) {
      g_object_unref (args);
      return NULL;
    }
  args->request->__isset_calls = TRUE;
  if (o->deadline_ms > 0 || o->trace) {
    args->request->context->deadline_ms = o->deadline_ms;
    args->request->context->__isset_deadline_ms = o->deadline_ms > 0;
    args->request->context->trace = o->trace;
    args->request->context->__isset_trace = o->trace;
    args->request->__isset_context = TRUE;
  }
  args->__isset_request = TRUE;
  return THRIFT_STRUCT (args);
}

/* ---- Replies. ---- */

/* The result struct's first field id: 0 is success, others are declared exceptions. */
static int
evd_bench_result_field (const EvdWireScanner *s, const guint8 *msg, gsize len)
{
  gsize b = s->body_offset;
  guint8 x;

  if (b + 3 > len)
    return -1;
  if (s->proto == EVD_PROTO_BINARY)
    return msg[b] == 0 ? -1 : (msg[b + 1] << 8) | msg[b + 2];
  x = msg[b];
  if ((x & 0x0f) == 0)
    return -1;
  if ((x >> 4) != 0)
    return x >> 4;
  return (msg[b + 1] & 0x7f) >> 1;  /* long form, small ids: one zigzag varint byte */
}

static EvdBenchOutcome
evd_bench_classify (const EvdWireScanner *s, const guint8 *msg, gsize len, const char *method)
{
  int field;

  if (s->type == EVD_MSG_EXCEPTION)
    return OUT_APP_ERROR;
  field = evd_bench_result_field (s, msg, len);
  if (field == 0)
    return OUT_OK;
  if (field == 3 && strcmp (method, "fetch") == 0)
    return OUT_OVERLOADED;
  return OUT_DECLARED;
}

static void evd_bench_send (EvdBenchConn *c);

static void
evd_bench_on_reply (EvdBenchConn *c, const EvdWireScanner *s, const guint8 *msg, gsize len)
{
  EvdBenchThread *t = c->t;
  gint64 now = g_get_monotonic_time ();
  gint64 sent = c->sent_at[c->tail++ % EVD_BENCH_MAX_PIPELINE];

  t->pending_replies--;
  if (now >= t->b->record_from_us && now <= t->b->end_us) {
    EvdBenchOutcome o = evd_bench_classify (s, msg, len, t->b->o.method);
    evd_hist_add (&t->hist, now - sent);
    if (o == OUT_OK)
      evd_hist_add (&t->ok_hist, now - sent);
    t->outcomes[o]++;
  }
  if (t->rate_timer != NULL) {
    if (now >= t->b->end_us && t->pending_replies == 0)
      event_base_loopexit (t->base, NULL);
    return;  /* open loop: the timer sends, replies do not */
  }
  if (now < t->b->end_us && t->quota != 0)
    evd_bench_send (c);
  else if (t->pending_replies == 0 && (t->quota == 0 || now >= t->b->end_us))
    event_base_loopexit (t->base, NULL);
}

/* Takes every whole reply out of the input; FALSE when the stream is broken. */
static gboolean
evd_bench_read_framed (EvdBenchConn *c, struct evbuffer *in)
{
  guint32 be;
  gsize n;
  EvdWireScanner s;
  guint8 *msg;

  while (evbuffer_get_length (in) >= 4) {
    evbuffer_copyout (in, &be, 4);
    n = GUINT32_FROM_BE (be);
    if (evbuffer_get_length (in) < 4 + n)
      return TRUE;
    msg = evbuffer_pullup (in, (gssize) (4 + n)) + 4;
    evd_wire_scanner_init (&s, c->t->b->fmt.proto, n, EVD_WIRE_MAX_DEPTH);
    if (evd_wire_scanner_feed (&s, msg, n) != EVD_WIRE_OK)
      return FALSE;
    evd_bench_on_reply (c, &s, msg, n);
    evbuffer_drain (in, 4 + n);
  }
  return TRUE;
}

static gboolean
evd_bench_read_unframed (EvdBenchConn *c, struct evbuffer *in)
{
  while (evbuffer_get_length (in) > 0) {
    gsize len = evbuffer_get_length (in);
    guint8 *data;
    EvdWireStatus st;

    if (c->scan == NULL) {
      c->scan = g_new (EvdWireScanner, 1);
      evd_wire_scanner_init (c->scan, c->t->b->fmt.proto, 1 << 26, EVD_WIRE_MAX_DEPTH);
    }
    data = evbuffer_pullup (in, -1);
    st = evd_wire_scanner_feed (c->scan, data, len);
    if (st == EVD_WIRE_NEED_MORE)
      return TRUE;
    if (st != EVD_WIRE_OK)
      return FALSE;
    evd_bench_on_reply (c, c->scan, data, c->scan->msg_len);
    evbuffer_drain (in, c->scan->msg_len);
    g_clear_pointer (&c->scan, g_free);
  }
  return TRUE;
}

static void
evd_bench_on_read (struct bufferevent *bev, void *arg)
{
  EvdBenchConn *c = arg;
  struct evbuffer *in = bufferevent_get_input (bev);
  gboolean ok = c->t->b->fmt.framed ? evd_bench_read_framed (c, in)
                                    : evd_bench_read_unframed (c, in);

  if (!ok) {
    g_printerr ("evdal-bench: a reply does not parse; stopping this connection\n");
    c->t->conn_errors++;
    bufferevent_disable (bev, EV_READ);
  }
}

/* ---- Connections. ---- */

/* Straight to the socket when nothing waits before it. Through the bufferevent, a request
 * costs two epoll_ctl calls (EV_WRITE on, then off) and a loop turn before its write: at one
 * connection that was more of the measured round trip than the server's own system calls.
 * What the socket does not take now (or an error, which the bufferevent then meets and
 * reports) goes to the bufferevent. */
static void
evd_bench_write (EvdBenchConn *c, const guint8 *data, gsize len)
{
  struct evbuffer *out = bufferevent_get_output (c->bev);
  ssize_t r = 0;

  if (c->open && evbuffer_get_length (out) == 0)
    r = send (bufferevent_getfd (c->bev), data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (r < 0)
    r = 0;
  if ((gsize) r < len)
    evbuffer_add (out, data + r, len - (gsize) r);
}

static void
evd_bench_send (EvdBenchConn *c)
{
  EvdBenchThread *t = c->t;
  EvdBench *b = t->b;

  if (t->quota > 0)
    t->quota--;
  c->sent_at[c->head++ % EVD_BENCH_MAX_PIPELINE] = g_get_monotonic_time ();
  t->pending_replies++;
  if (b->random_at->len == 0) {
    evd_bench_write (c, b->request->data, b->request->len);
    return;
  }
  {
    g_autofree guint8 *copy = g_memdup2 (b->request->data, b->request->len);
    guint64 v = GUINT64_TO_BE ((guint64) g_rand_int_range (t->rand, (gint32) b->random_lo,
                                                           (gint32) b->random_hi + 1));
    for (guint i = 0; i < b->random_at->len; i++)
      memcpy (copy + g_array_index (b->random_at, gsize, i), &v, 8);
    evd_bench_write (c, copy, b->request->len);
  }
}

static void
evd_bench_on_event (struct bufferevent *bev, short what, void *arg)
{
  EvdBenchConn *c = arg;
  int one = 1;

  if (what & BEV_EVENT_CONNECTED) {
    c->open = TRUE;
    if (c->t->b->addr.ss_family != AF_UNIX)
      setsockopt (bufferevent_getfd (bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int i = 0; !c->idle && c->t->rate_timer == NULL && i < c->t->b->o.pipeline &&
                    c->t->quota != 0; i++)
      evd_bench_send (c);
    return;
  }
  if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
    if (c->t->conn_errors++ == 0)
      g_printerr ("evdal-bench: connection %s: %s\n", (what & BEV_EVENT_EOF) ? "closed by the server"
                  : "failed", g_strerror (EVUTIL_SOCKET_ERROR ()));
    c->t->pending_replies -= (gint64) (c->head - c->tail);
    c->head = c->tail;
    c->open = FALSE;
    bufferevent_disable (bev, EV_READ | EV_WRITE);
  }
}

static void
evd_bench_connect (EvdBenchThread *t, gboolean idle)
{
  EvdBenchConn *c = g_new0 (EvdBenchConn, 1);

  c->t = t;
  c->idle = idle;
  c->bev = bufferevent_socket_new (t->base, -1, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb (c->bev, evd_bench_on_read, NULL, evd_bench_on_event, c);
  bufferevent_enable (c->bev, EV_READ | EV_WRITE);
  bufferevent_socket_connect (c->bev, (struct sockaddr *) &t->b->addr, (int) t->b->addr_len);
  g_ptr_array_add (t->conns, c);
}

static void
evd_bench_conn_free (gpointer data)
{
  EvdBenchConn *c = data;

  bufferevent_free (c->bev);
  g_free (c->scan);
  g_free (c);
}

static void
evd_bench_on_stop (evutil_socket_t fd, short what, void *arg)
{
  (void) fd;
  (void) what;
  event_base_loopexit (((EvdBenchThread *) arg)->base, NULL);
}

/* --rate: the requests due since the start go out now, each on the next connection with room
 * in its pipeline; latency counts from the send, so a slow server cannot slow the offer. */
static void
evd_bench_on_rate (evutil_socket_t fd, short what, void *arg)
{
  EvdBenchThread *t = arg;
  gint64 now = g_get_monotonic_time ();
  guint64 due;
  guint n_busy = t->conns->len - (guint) t->n_idle;

  (void) fd;
  (void) what;
  if (now >= t->b->end_us) {
    event_del (t->rate_timer);
    if (t->pending_replies == 0)
      event_base_loopexit (t->base, NULL);
    return;
  }
  due = (guint64) ((now - t->rate_start_us) * t->rate_per_us);
  while (t->rate_sent + t->rate_skipped < due) {
    gboolean sent = FALSE;
    for (guint tries = 0; tries < n_busy && !sent; tries++) {
      EvdBenchConn *c = t->conns->pdata[t->n_idle + t->next_conn++ % n_busy];
      if (c->head - c->tail < (guint) t->b->o.pipeline &&
          (bufferevent_get_enabled (c->bev) & EV_WRITE)) {
        evd_bench_send (c);
        sent = TRUE;
      }
    }
    if (sent)
      t->rate_sent++;
    else
      t->rate_skipped++;
  }
}

static gpointer
evd_bench_thread (gpointer data)
{
  EvdBenchThread *t = data;
  /* A hard stop, whatever the server does: the run is bounded. */
  gint64 left = t->b->end_us + 10 * G_USEC_PER_SEC - g_get_monotonic_time ();
  struct timeval tv = { left / G_USEC_PER_SEC, left % G_USEC_PER_SEC };

  for (int i = 0; i < t->n_idle; i++)
    evd_bench_connect (t, TRUE);
  for (int i = 0; i < t->n_busy; i++)
    evd_bench_connect (t, FALSE);
  t->stop_timer = evtimer_new (t->base, evd_bench_on_stop, t);
  evtimer_add (t->stop_timer, &tv);
  if (t->b->o.rate > 0) {
    struct timeval ms = { 0, 1000 };
    t->rate_per_us = t->b->o.rate / t->b->o.threads / 1e6;
    t->rate_start_us = g_get_monotonic_time ();
    t->rate_timer = event_new (t->base, -1, EV_PERSIST, evd_bench_on_rate, t);
    evtimer_add (t->rate_timer, &ms);
  }
  event_base_dispatch (t->base);
  return NULL;
}

/* ---- Set-up and report. ---- */

static gboolean
evd_bench_resolve (EvdBench *b, GError **error)
{
  struct addrinfo hints = { 0 }, *res = NULL;
  g_autofree char *port = g_strdup_printf ("%d", b->o.port);
  int rc;

  if (b->o.unix_path != NULL) {
    struct sockaddr_un *un = (struct sockaddr_un *) &b->addr;
    un->sun_family = AF_UNIX;
    g_strlcpy (un->sun_path, b->o.unix_path, sizeof un->sun_path);
    b->addr_len = sizeof *un;
    return TRUE;
  }
  hints.ai_socktype = SOCK_STREAM;
  rc = getaddrinfo (b->o.host, port, &hints, &res);
  if (rc != 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s", b->o.host, gai_strerror (rc));
    return FALSE;
  }
  memcpy (&b->addr, res->ai_addr, res->ai_addrlen);
  b->addr_len = res->ai_addrlen;
  freeaddrinfo (res);
  return TRUE;
}

static void
evd_bench_report (EvdBench *b, EvdBenchThread *threads, double seconds)
{
  EvdHist all = { 0 }, ok = { 0 };
  guint64 out[OUT_N] = { 0 }, conn_errors = 0, errors, skipped = 0, idle_open = 0;
  double rps;

  for (int i = 0; i < b->o.threads; i++) {
    evd_hist_merge (&all, &threads[i].hist);
    evd_hist_merge (&ok, &threads[i].ok_hist);
    skipped += threads[i].rate_skipped;
    for (int k = 0; k < OUT_N; k++)
      out[k] += threads[i].outcomes[k];
    conn_errors += threads[i].conn_errors;
    /* --idle: how many are still held at the end, so that a run whose server refused or
     * dropped them does not pass for one with them. */
    for (int k = 0; k < threads[i].n_idle; k++)
      idle_open += ((EvdBenchConn *) threads[i].conns->pdata[k])->open;
  }
  errors = out[OUT_DECLARED] + out[OUT_APP_ERROR] + conn_errors;
  rps = seconds > 0 ? all.total / seconds : 0;
  if (!b->o.json) {
    printf ("%s: %d connections (%d idle), %d threads, %s %s, pipeline %d\n",
            b->o.label ? b->o.label : b->o.method, b->o.connections, b->o.idle, b->o.threads,
            b->fmt.framed ? "framed" : "unframed", b->fmt.proto == EVD_PROTO_COMPACT ? "compact"
            : "binary", b->o.pipeline);
    if (b->random_at->len > 0)
      printf ("  %u params random in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT " per request\n",
              b->random_at->len, b->random_lo, b->random_hi);
    printf ("  %" G_GUINT64_FORMAT " requests in %.2f s: %.0f req/s\n", all.total, seconds, rps);
    if (b->o.idle > 0)
      printf ("  idle connections still open at the end: %" G_GUINT64_FORMAT " of %d\n",
              idle_open, b->o.idle);
    printf ("  ok %" G_GUINT64_FORMAT ", overloaded %" G_GUINT64_FORMAT ", declared exceptions %"
            G_GUINT64_FORMAT ", application errors %" G_GUINT64_FORMAT ", connection errors %"
            G_GUINT64_FORMAT "\n", out[OUT_OK], out[OUT_OVERLOADED], out[OUT_DECLARED],
            out[OUT_APP_ERROR], conn_errors);
    printf ("  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
            evd_hist_quantile (&all, 0.5) / 1e3, evd_hist_quantile (&all, 0.9) / 1e3,
            evd_hist_quantile (&all, 0.99) / 1e3, evd_hist_quantile (&all, 0.999) / 1e3,
            all.max_us / 1e3);
    if (b->o.rate > 0)
      printf ("  open loop at %.0f req/s offered: ok %.0f req/s, p99 of ok %.3f ms; %"
              G_GUINT64_FORMAT " not sent (every pipeline full)\n", b->o.rate,
              seconds > 0 ? ok.total / seconds : 0, evd_hist_quantile (&ok, 0.99) / 1e3, skipped);
    printf ("RESULT ");
  }
  printf ("{\"label\": \"%s\", \"connections\": %d, \"threads\": %d, \"requests\": %" G_GUINT64_FORMAT
          ", \"errors\": %" G_GUINT64_FORMAT ", \"overloaded\": %" G_GUINT64_FORMAT
          ", \"seconds\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f"
          ", \"p999_ms\": %.3f, \"max_ms\": %.3f, \"ok_rps\": %.1f, \"ok_p50_ms\": %.3f"
          ", \"ok_p99_ms\": %.3f, \"offered_rps\": %.1f, \"not_sent\": %" G_GUINT64_FORMAT
          ", \"idle\": %d, \"idle_open\": %" G_GUINT64_FORMAT "}\n",
          b->o.label ? b->o.label : b->o.method, b->o.connections, b->o.threads, all.total,
          errors, out[OUT_OVERLOADED], seconds, rps, evd_hist_quantile (&all, 0.5) / 1e3,
          evd_hist_quantile (&all, 0.9) / 1e3, evd_hist_quantile (&all, 0.99) / 1e3,
          evd_hist_quantile (&all, 0.999) / 1e3, all.max_us / 1e3,
          seconds > 0 ? ok.total / seconds : 0, evd_hist_quantile (&ok, 0.5) / 1e3,
          evd_hist_quantile (&ok, 0.99) / 1e3, b->o.rate, skipped, b->o.idle, idle_open);
}

static gboolean
evd_bench_parse (int *argc, char ***argv, EvdBenchOptions *o)
{
  GOptionEntry entries[] = {
    { "host", 'h', 0, G_OPTION_ARG_STRING, &o->host, "Server host (127.0.0.1)", "HOST" },
    { "port", 'p', 0, G_OPTION_ARG_INT, &o->port, "Server port (9090)", "PORT" },
    { "unix", 0, 0, G_OPTION_ARG_FILENAME, &o->unix_path, "Unix socket instead", "PATH" },
    { "connections", 'c', 0, G_OPTION_ARG_INT, &o->connections, "Busy connections (64)", "N" },
    { "idle", 0, 0, G_OPTION_ARG_INT, &o->idle, "Extra idle connections held open", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &o->threads, "Event loops (1)", "N" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &o->duration, "Seconds to measure (10)", "S" },
    { "requests", 'n', 0, G_OPTION_ARG_INT64, &o->requests, "Requests instead of a duration", "N" },
    { "warmup", 'w', 0, G_OPTION_ARG_DOUBLE, &o->warmup, "Seconds not measured first (1)", "S" },
    { "pipeline", 'P', 0, G_OPTION_ARG_INT, &o->pipeline, "Requests in flight per connection (1)", "N" },
    { "unframed", 0, 0, G_OPTION_ARG_NONE, &o->unframed, "Unframed (buffered) transport", NULL },
    { "compact", 0, 0, G_OPTION_ARG_NONE, &o->compact, "Compact protocol", NULL },
    { "method", 'm', 0, G_OPTION_ARG_STRING, &o->method, "fetch (default), ping or lookups", "M" },
    { "call", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->calls, "A call of the fetch: [KEY=]LOOKUP[:p=v,...]", "SPEC" },
    { "deadline-ms", 0, 0, G_OPTION_ARG_INT, &o->deadline_ms, "context.deadline_ms", "MS" },
    { "trace", 0, 0, G_OPTION_ARG_NONE, &o->trace, "context.trace = true", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &o->json, "Print only the JSON result", NULL },
    { "label", 'l', 0, G_OPTION_ARG_STRING, &o->label, "Name of the run in the result", "TEXT" },
    { "random", 'r', 0, G_OPTION_ARG_STRING, &o->random,
      "Params given as @random take a random int in LO..HI per request (binary only)", "LO:HI" },
    { "rate", 'R', 0, G_OPTION_ARG_DOUBLE, &o->rate,
      "Open loop: offer R requests/s whatever the replies (up to --pipeline per connection)",
      "R" },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- load generator for evdal");
  g_autoptr (GError) error = NULL;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, argc, argv, &error)) {
    g_printerr ("evdal-bench: %s\n", error->message);
    return FALSE;
  }
  /* String defaults after parsing: GOption would overwrite them without freeing. */
  if (o->host == NULL)
    o->host = g_strdup ("127.0.0.1");
  if (o->method == NULL)
    o->method = g_strdup ("fetch");
  if (o->connections < 1 || o->threads < 1 || o->pipeline < 1 ||
      o->pipeline > EVD_BENCH_MAX_PIPELINE || o->duration <= 0 || o->idle < 0) {
    g_printerr ("evdal-bench: connections, threads, duration must be positive; pipeline 1..%d\n",
                EVD_BENCH_MAX_PIPELINE);
    return FALSE;
  }
  if (strcmp (o->method, "fetch") == 0 && (o->calls == NULL || o->calls[0] == NULL)) {
    g_printerr ("evdal-bench: fetch needs at least one --call\n");
    return FALSE;
  }
  return TRUE;
}

int
main (int argc, char **argv)
{
  EvdBench b = { .o = { .port = 9090, .connections = 64, .threads = 1, .pipeline = 1,
                        .duration = 10, .requests = -1, .warmup = 1 } };
  g_autoptr (GError) error = NULL;
  g_autoptr (ThriftStruct) args = NULL;
  g_autofree EvdBenchThread *threads = NULL;
  struct rlimit rl;
  double seconds;
  guint64 done = 0;

  if (!evd_bench_parse (&argc, &argv, &b.o))
    return 2;
  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;  /* thousands of connections need as many descriptors */
    setrlimit (RLIMIT_NOFILE, &rl);
  }
  b.fmt = (EvdWireFormat) { !b.o.unframed, b.o.compact ? EVD_PROTO_COMPACT : EVD_PROTO_BINARY };
  if ((args = evd_bench_args (&b.o, &error)) == NULL || !evd_bench_resolve (&b, &error)) {
    g_printerr ("evdal-bench: %s\n", error->message);
    return 2;
  }
  b.request = g_byte_array_new ();
  evd_rpc_encode (NULL, b.fmt, b.o.method, EVD_MSG_CALL, 0, args, b.request, NULL);
  b.random_at = g_array_new (FALSE, FALSE, sizeof (gsize));
  if (b.o.random != NULL) {
    guint64 sentinel = GUINT64_TO_BE ((guint64) EVD_BENCH_SENTINEL);
    if (sscanf (b.o.random, "%" G_GINT64_FORMAT ":%" G_GINT64_FORMAT, &b.random_lo,
                &b.random_hi) != 2 || b.random_lo > b.random_hi || b.o.compact) {
      g_printerr ("evdal-bench: --random LO:HI, with the binary protocol\n");
      return 2;
    }
    for (gsize i = 0; i + 8 <= b.request->len; i++)
      if (memcmp (b.request->data + i, &sentinel, 8) == 0)
        g_array_append_val (b.random_at, i);
  }
  if (b.o.requests > 0)
    b.o.warmup = 0;  /* a request count measures every request */
  b.start_us = g_get_monotonic_time ();
  b.record_from_us = b.start_us + (gint64) (b.o.warmup * G_USEC_PER_SEC);
  b.end_us = b.o.requests > 0 ? G_MAXINT64 / 2
                              : b.record_from_us + (gint64) (b.o.duration * G_USEC_PER_SEC);
  if (b.o.requests > 0)
    b.o.duration = 3600;  /* the hard stop then comes an hour later */
  threads = g_new0 (EvdBenchThread, b.o.threads);
  for (int i = 0; i < b.o.threads; i++) {
    EvdBenchThread *t = &threads[i];
    t->b = &b;
    t->base = event_base_new ();
    t->conns = g_ptr_array_new_with_free_func (evd_bench_conn_free);
    t->n_busy = b.o.connections / b.o.threads + (i < b.o.connections % b.o.threads);
    t->n_idle = b.o.idle / b.o.threads + (i < b.o.idle % b.o.threads);
    t->rand = g_rand_new_with_seed ((guint32) i + 1);
    t->quota = b.o.requests > 0 ? b.o.requests / b.o.threads + (i < b.o.requests % b.o.threads) : -1;
    t->thread = g_thread_new ("bench", evd_bench_thread, t);
  }
  for (int i = 0; i < b.o.threads; i++) {
    g_thread_join (threads[i].thread);
    done += threads[i].hist.total;
  }
  seconds = b.o.requests > 0 ? (g_get_monotonic_time () - b.start_us) / 1e6
                             : MIN ((g_get_monotonic_time () - b.record_from_us) / 1e6, b.o.duration);
  evd_bench_report (&b, threads, seconds);
  for (int i = 0; i < b.o.threads; i++) {
    g_ptr_array_unref (threads[i].conns);
    event_free (threads[i].stop_timer);
    if (threads[i].rate_timer != NULL)
      event_free (threads[i].rate_timer);
    event_base_free (threads[i].base);
    g_rand_free (threads[i].rand);
  }
  g_array_unref (b.random_at);
  g_byte_array_unref (b.request);
  g_free (b.o.host);
  g_free (b.o.unix_path);
  g_free (b.o.method);
  g_free (b.o.label);
  g_free (b.o.random);
  g_strfreev (b.o.calls);
  return done > 0 ? 0 : 1;
}

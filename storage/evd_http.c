/* evd_http: libcurl's multi interface on a libevent base (see evd_http.h for the life of a
 * request).
 *
 * The shape is libcurl's own "hiperfifo" example: curl tells us which sockets to watch
 * (evd_http_on_curl_socket) and when to call it back (evd_http_on_curl_timer); a libevent event
 * per socket and one timer call curl_multi_socket_action(), after which finished transfers are
 * taken from curl_multi_info_read() and their `done` run. Nothing is ever done to the multi
 * handle from inside one of curl's callbacks (libcurl forbids adding or removing handles
 * there): they only (re)arm events. Completion and cancel run from libevent callbacks or from
 * the caller, outside curl, where curl_multi_remove_handle() is allowed.
 *
 * Connections are counted through curl's open/close socket callbacks: the only place that sees
 * every connection, idle kept-alive ones included.
 *
 * Plain http:// requests beyond max_connections wait here, in the client's own FIFO, rather
 * than inside curl: HTTP/1.1 carries one request per connection at a time (h2 is only offered
 * over TLS), and curl runs its whole connect step again (the URL parsed anew, the pool
 * searched) for a transfer it holds back each time a connection comes free, which cost an
 * eighth of evdal's CPU in bench/http4 with 32 requests per loop over 8 connections. A waiting
 * request holds no easy handle. https requests all go to curl at once: there a connection may
 * carry many (HTTP/2).
 */
#include "evd_http.h"
#include "evd_quark.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Easy handles kept for reuse (at least; max_connections if more): making one costs a few KiB
 * of zeroed memory and option defaults; a busy client reuses rather than remakes them. */
#define EVD_HTTP_SPARE_EASY 16

struct _EvdHttpClient {
  struct event_base *base;
  CURLM *multi;
  struct event *timer;          /* curl's one timeout */
  EvdHttpOptions options;
  char *ca_file;
  GQueue requests;              /* EvdHttpRequest, in flight (in curl or waiting) */
  GQueue waiting;               /* EvdHttpRequest (wait_link), plain http:// not in curl yet */
  guint plain_in_curl;          /* plain http:// requests in curl: at most max_connections */
  gboolean closing;             /* evd_http_client_free() under way: nothing goes to curl */
  GQueue sockets;               /* EvdHttpSocket, watched */
  gboolean premature;           /* in curl_multi_remove_handle of a transfer not done */
  CURL **spare;                 /* n_spare of max_spare */
  guint n_spare;
  guint max_spare;
};

struct _EvdHttpRequest {
  EvdHttpClient *client;
  CURL *easy;                   /* while in curl; NULL while waiting */
  char *url;                    /* while waiting */
  gboolean plain;               /* http://: counted in plain_in_curl while in curl */
  gboolean completed;           /* curl said CURLMSG_DONE */
  gint64 deadline_us;
  GList link;                   /* in client->requests */
  GList wait_link;              /* in client->waiting, while there */
  struct event deadline;        /* our own timer: curl does not time out queued transfers */
  struct curl_slist *headers;   /* one block (evd_http_headers) */
  GByteArray *body;
  gboolean too_big;
  gboolean refused;             /* curl_multi_add_handle() failed: the deadline timer, due at
                                 * once, says so */
  EvdHttpDone done;
  gpointer data;
  char errbuf[CURL_ERROR_SIZE];
};

/* A socket curl asked us to watch. ev watches `fd`, a dup() of curl's `curl_fd`, never curl's
 * own number: curl 7.88 sometimes closes a watched socket without its close callback and
 * without CURL_POLL_REMOVE first (a hedge's loser, cancelled mid-request; the REMOVE comes
 * after), and libevent would then epoll_ctl a number that another loop's library may already
 * have been given for a new socket. The dup is this loop's until evd_http_socket_disarm
 * closes it. Such a close is also counted when it is noticed (the REMOVE, curl's next socket
 * with that number, the client's end), or evdal_http_connections would drift up. */
typedef struct {
  EvdHttpClient *client;
  curl_socket_t curl_fd;        /* CURL_SOCKET_BAD: disarmed (curl closed it, or is done) */
  evutil_socket_t fd;           /* ours; -1 when disarmed */
  struct event ev;
  short kind;                   /* what ev waits for now; 0: not added */
  GList link;                   /* in client->sockets */
} EvdHttpSocket;

EVD_DEFINE_QUARK (evd-http-error-quark, evd_http_error)

static gpointer
evd_http_init_once (gpointer unused)
{
  (void) unused;
  curl_global_init (CURL_GLOBAL_DEFAULT);
  return NULL;
}

void
evd_http_global_init (void)
{
  static GOnce once = G_ONCE_INIT;

  g_once (&once, evd_http_init_once, NULL);
}

gboolean
evd_http_async_dns (void)
{
  evd_http_global_init ();
  return (curl_version_info (CURLVERSION_NOW)->features & CURL_VERSION_ASYNCHDNS) != 0;
}

/* ---- Counting connections (curl's socket open/close hooks). ---- */

static void evd_http_socket_disarm_number (EvdHttpClient *c, curl_socket_t fd,
                                           gboolean opened);

static curl_socket_t
evd_http_on_open_socket (void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
  EvdHttpClient *c = clientp;
  curl_socket_t fd;

  (void) purpose;
  fd = socket (addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
  if (fd < 0)
    return CURL_SOCKET_BAD;
  /* A watch still on this number is on a socket curl closed without saying so. */
  evd_http_socket_disarm_number (c, fd, TRUE);
  if (c->options.stats != NULL) {
    g_atomic_int_inc (&c->options.stats->connections);
    __atomic_add_fetch (&c->options.stats->connects, 1, __ATOMIC_RELAXED);
  }
  return fd;
}

/* curl closes its sockets through here (when it does not, see EvdHttpSocket): the watch's
 * dup goes too, or the connection would stay open until curl's REMOVE. */
static int
evd_http_on_close_socket (void *clientp, curl_socket_t fd)
{
  EvdHttpClient *c = clientp;

  evd_http_socket_disarm_number (c, fd, FALSE);
  if (c->options.stats != NULL)
    g_atomic_int_add (&c->options.stats->connections, -1);
  return close (fd);
}

/* ---- Finishing a request. ---- */

/* An easy handle back to the spares (kept with the client's options; what pointed into its
 * request goes), or freed when there are enough. */
static void
evd_http_easy_release (EvdHttpClient *c, CURL *easy)
{
  if (c->n_spare < c->max_spare) {
    curl_easy_setopt (easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt (easy, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt (easy, CURLOPT_PRIVATE, NULL);
    c->spare[c->n_spare++] = easy;
  } else {
    curl_easy_cleanup (easy);
  }
}

/* Takes the request out of curl (or out of the waiting queue), its easy handle back to the
 * spares. Outside curl's callbacks only. */
static void
evd_http_request_detach (EvdHttpRequest *req)
{
  EvdHttpClient *c = req->client;

  if (req->easy == NULL) {
    if (req->wait_link.data != NULL)
      g_queue_unlink (&c->waiting, &req->wait_link);
    req->wait_link.data = NULL;
    return;
  }
  /* Only a transfer taken out before it is done has seen curl close its socket silently. */
  c->premature = !req->completed;
  curl_multi_remove_handle (c->multi, req->easy);
  c->premature = FALSE;
  if (req->plain)
    c->plain_in_curl--;
  evd_http_easy_release (c, req->easy);
  req->easy = NULL;
}

static void
evd_http_request_free (EvdHttpRequest *req)
{
  EvdHttpClient *c = req->client;

  evd_http_request_detach (req);
  event_del (&req->deadline);
  g_queue_unlink (&c->requests, &req->link);
  g_free (req->url);
  g_free (req->headers);
  g_byte_array_unref (req->body);
  if (c->options.stats != NULL)
    g_atomic_int_add (&c->options.stats->in_flight, -1);
  g_free (req);
}

/* Runs done (once) and frees the request; it has left curl already (evd_http_request_detach). */
static void
evd_http_request_finish (EvdHttpRequest *req, const EvdHttpResponse *response,
                         const GError *error)
{
  req->done (req, response, error, req->data);
  evd_http_request_free (req);
}

static EvdHttpError
evd_http_error_of (CURLcode rc)
{
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CERTPROBLEM:
    return EVD_HTTP_ERROR_CONNECT;
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
    return EVD_HTTP_ERROR_UNTRUSTED;
  case CURLE_OPERATION_TIMEDOUT:
    return EVD_HTTP_ERROR_TIMEOUT;
  case CURLE_FILESIZE_EXCEEDED:
    return EVD_HTTP_ERROR_TOO_BIG;
  default:
    return EVD_HTTP_ERROR_FAILED;
  }
}

gint64
evd_http_retry_after_parse (const char *value, gint64 now_unix)
{
  const char *p = value;
  gint64 s = 0;
  time_t date;

  while (*p == ' ' || *p == '\t')
    p++;
  if (g_ascii_isdigit (*p)) {
    for (; g_ascii_isdigit (*p); p++)
      s = MIN (s * 10 + (*p - '0'), G_MAXINT32);  /* past 68 years is as good as never */
    while (*p == ' ' || *p == '\t')
      p++;
    return *p == '\0' ? s : -1;
  }
  /* curl's own date parser reads the three formats RFC 9110 asks a recipient to accept. */
  date = curl_getdate (p, NULL);
  if (date == (time_t) -1)
    return -1;
  /* Capped as delay-seconds are: a date in the year 300000 is 9.4e12 s away, which in
   * microseconds (what a retry waits) overflows a gint64. */
  return CLAMP ((gint64) date - now_unix, 0, G_MAXINT32);
}

/* What the response says of when to come back: only a 429 or 503 means it. */
static gint64
evd_http_retry_after (EvdHttpRequest *req)
{
  struct curl_header *h = NULL;

  if (curl_easy_header (req->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
    return -1;
  return evd_http_retry_after_parse (h->value, (gint64) time (NULL));
}

/* A transfer curl finished, successfully or not. */
static void
evd_http_request_done (EvdHttpRequest *req, CURLcode rc)
{
  g_autoptr (GError) error = NULL;
  EvdHttpResponse response = { 0 };
  long version = 0, connects = 0;

  req->completed = TRUE;
  if (rc == CURLE_WRITE_ERROR && req->too_big)
    rc = CURLE_FILESIZE_EXCEEDED;
  if (rc != CURLE_OK) {
    EvdHttpError code = evd_http_error_of (rc);
    error = g_error_new (EVD_HTTP_ERROR, code, "%s",
                         code == EVD_HTTP_ERROR_TOO_BIG
                         ? "the response is longer than max_response_bytes"
                         : req->errbuf[0] ? req->errbuf : curl_easy_strerror (rc));
    evd_http_request_detach (req);
    evd_http_request_finish (req, NULL, error);
    return;
  }
  curl_easy_getinfo (req->easy, CURLINFO_RESPONSE_CODE, &response.status);
  curl_easy_getinfo (req->easy, CURLINFO_HTTP_VERSION, &version);
  curl_easy_getinfo (req->easy, CURLINFO_NUM_CONNECTS, &connects);
  response.retry_after_s = response.status == 429 || response.status == 503
                           ? evd_http_retry_after (req) : -1;
  /* Out of curl before done runs (all read from the easy handle by now): a request done
   * starts may take this one's place. */
  evd_http_request_detach (req);
  response.http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : 1;
  response.new_connection = connects > 0;
  g_byte_array_append (req->body, (const guint8 *) "", 1);  /* the NUL, not counted */
  response.body = (const char *) req->body->data;
  response.len = req->body->len - 1;
  evd_http_request_finish (req, &response, NULL);
}

static void evd_http_pump (EvdHttpClient *c);

/* Takes every finished transfer out of curl, one at a time: a done() may cancel another
 * request whose message is queued, and curl then drops that message. Then the requests
 * waiting for a connection take the ones freed. */
static void
evd_http_check_done (EvdHttpClient *c)
{
  CURLMsg *msg;
  int left;

  while ((msg = curl_multi_info_read (c->multi, &left)) != NULL) {
    EvdHttpRequest *req = NULL;
    CURLcode rc = msg->data.result;

    if (msg->msg != CURLMSG_DONE)
      continue;
    curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
    evd_http_request_done (req, rc);
  }
  evd_http_pump (c);
}

/* ---- Driving curl from libevent. ---- */

static void
evd_http_on_socket_event (evutil_socket_t fd, short what, void *arg)
{
  EvdHttpSocket *s = arg;
  EvdHttpClient *c = s->client;    /* s may be gone once curl has run */
  int flags = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
  int running;

  (void) fd;                       /* our dup: curl knows its socket by its own number */
  curl_multi_socket_action (c->multi, s->curl_fd, flags, &running);
  evd_http_check_done (c);
}

static void
evd_http_on_timer_event (evutil_socket_t fd, short what, void *arg)
{
  EvdHttpClient *c = arg;
  int running;

  (void) fd, (void) what;
  curl_multi_socket_action (c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  evd_http_check_done (c);
}

/* Stops watching: the event goes, then our dup of the socket. */
static void
evd_http_socket_disarm (EvdHttpSocket *s)
{
  if (s->kind != 0)
    event_del (&s->ev);
  s->kind = 0;
  if (s->fd >= 0 && s->fd != s->curl_fd)
    close (s->fd);
  s->fd = -1;
  s->curl_fd = CURL_SOCKET_BAD;
}

/* Whether curl has closed the socket `s` watches without its close callback: its number is
 * closed, or names another socket than our dup does. */
static gboolean
evd_http_socket_closed_silently (EvdHttpSocket *s)
{
  struct stat ours, curls;

  if (s->curl_fd == CURL_SOCKET_BAD || s->fd == s->curl_fd)
    return FALSE;                    /* disarmed by the close callback, or no dup to compare */
  return fstat (s->curl_fd, &curls) != 0 || fstat (s->fd, &ours) != 0 ||
         curls.st_ino != ours.st_ino || curls.st_dev != ours.st_dev;
}

/* A close curl made without its callback (see EvdHttpSocket) is counted here instead, so
 * that evdal_http_connections does not drift up with every such close. */
static void
evd_http_socket_count_silent_close (EvdHttpSocket *s)
{
  if (s->client->options.stats != NULL)
    g_atomic_int_add (&s->client->options.stats->connections, -1);
}

/* `fd` is a new socket of curl's: a watch still armed on that number is on a socket curl
 * closed without its callback. */
static void
evd_http_socket_disarm_number (EvdHttpClient *c, curl_socket_t fd, gboolean opened)
{
  for (GList *l = c->sockets.head; l != NULL; l = l->next) {
    EvdHttpSocket *s = l->data;

    if (s->curl_fd != fd)
      continue;
    if (opened)
      evd_http_socket_count_silent_close (s);
    evd_http_socket_disarm (s);
  }
}

static void
evd_http_socket_free (EvdHttpSocket *s)
{
  evd_http_socket_disarm (s);
  g_queue_unlink (&s->client->sockets, &s->link);
  g_free (s);
}

/* curl's socket callback: watch `fd` for `what`, or stop watching it. Only events change. */
static int
evd_http_on_curl_socket (CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
  EvdHttpClient *c = userp;
  EvdHttpSocket *s = socketp;
  short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
               ((what & CURL_POLL_OUT) ? EV_WRITE : 0);

  (void) easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      curl_multi_assign (c->multi, fd, NULL);
      if (c->premature && evd_http_socket_closed_silently (s))
        evd_http_socket_count_silent_close (s);
      evd_http_socket_free (s);
    }
    return 0;
  }
  if (s == NULL) {
    s = g_new0 (EvdHttpSocket, 1);
    s->client = c;
    s->curl_fd = CURL_SOCKET_BAD;
    s->fd = -1;
    s->link.data = s;
    g_queue_push_tail_link (&c->sockets, &s->link);
    curl_multi_assign (c->multi, fd, s);
  }
  /* New, or disarmed and now named for a new socket with the old number (curl keeps its
   * entry for a number it closed without a REMOVE). Without a descriptor to spare for the
   * dup, curl's own number is watched. */
  if (s->curl_fd != fd) {
    evd_http_socket_disarm (s);
    s->curl_fd = fd;
    s->fd = fcntl (fd, F_DUPFD_CLOEXEC, 0);
    if (s->fd < 0)
      s->fd = fd;
  }
  /* curl says what it wants after every step; the event changes only when that does. */
  if (s->kind == kind)
    return 0;
  if (s->kind != 0)
    event_del (&s->ev);
  event_assign (&s->ev, c->base, s->fd, kind, evd_http_on_socket_event, s);
  event_add (&s->ev, NULL);
  s->kind = kind;
  return 0;
}

/* curl's timer callback: call back in timeout_ms (0: at the next loop pass), or never (-1). */
static int
evd_http_on_curl_timer (CURLM *multi, long timeout_ms, void *userp)
{
  EvdHttpClient *c = userp;
  struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

  (void) multi;
  if (timeout_ms < 0)
    evtimer_del (c->timer);
  else
    evtimer_add (c->timer, &tv);
  return 0;
}

/* ---- The client. ---- */

EvdHttpClient *
evd_http_client_new (struct event_base *base, const EvdHttpOptions *options)
{
  EvdHttpClient *c = g_new0 (EvdHttpClient, 1);

  evd_http_global_init ();
  c->base = base;
  c->options = *options;
  c->ca_file = g_strdup (options->ca_file);
  c->options.ca_file = c->ca_file;
  c->options.max_connections = MAX (options->max_connections, 1);
  c->max_spare = MAX (EVD_HTTP_SPARE_EASY, c->options.max_connections);
  c->spare = g_new (CURL *, c->max_spare);
  c->multi = curl_multi_init ();
  g_assert (c->multi != NULL);  /* fails only when out of memory */
  c->timer = evtimer_new (base, evd_http_on_timer_event, c);
  curl_multi_setopt (c->multi, CURLMOPT_SOCKETFUNCTION, evd_http_on_curl_socket);
  curl_multi_setopt (c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt (c->multi, CURLMOPT_TIMERFUNCTION, evd_http_on_curl_timer);
  curl_multi_setopt (c->multi, CURLMOPT_TIMERDATA, c);
  /* The pool: at most this many connections per host, all kept alive when idle; https
   * requests beyond it wait in curl for a free connection (or share one, multiplexed, over
   * HTTP/2), plain http:// ones in the client (evd_http_pump). */
  curl_multi_setopt (c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) c->options.max_connections);
  curl_multi_setopt (c->multi, CURLMOPT_MAXCONNECTS, (long) c->options.max_connections);
  curl_multi_setopt (c->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
  return c;
}

void
evd_http_client_free (EvdHttpClient *client)
{
  g_autoptr (GError) error = NULL;
  GList *l;

  if (client == NULL)
    return;
  error = g_error_new_literal (EVD_HTTP_ERROR, EVD_HTTP_ERROR_CANCELLED,
                               "the HTTP client was closed");
  client->closing = TRUE;
  while ((l = g_queue_peek_head_link (&client->requests)) != NULL) {
    EvdHttpRequest *req = l->data;

    evd_http_request_detach (req);
    evd_http_request_finish (req, NULL, error);
  }
  /* Closes the kept-alive connections (through evd_http_on_close_socket). */
  curl_multi_cleanup (client->multi);
  while ((l = g_queue_peek_head_link (&client->sockets)) != NULL) {
    if (evd_http_socket_closed_silently (l->data))
      evd_http_socket_count_silent_close (l->data);
    evd_http_socket_free (l->data);
  }
  for (guint i = 0; i < client->n_spare; i++)
    curl_easy_cleanup (client->spare[i]);
  g_free (client->spare);
  event_free (client->timer);
  g_free (client->ca_file);
  g_free (client);
}

/* ---- Requests. ---- */

static size_t
evd_http_on_body (char *ptr, size_t size, size_t nmemb, void *userdata)
{
  EvdHttpRequest *req = userdata;
  gsize n = size * nmemb;

  if (req->body->len + n > req->client->options.max_response_bytes) {
    req->too_big = TRUE;
    return 0;  /* curl stops the transfer (CURLE_WRITE_ERROR) and closes the connection */
  }
  g_byte_array_append (req->body, (const guint8 *) ptr, n);
  return n;
}

/* The request's deadline (in curl or still waiting), or its refusal by curl. */
static void
evd_http_on_deadline (evutil_socket_t fd, short what, void *arg)
{
  EvdHttpRequest *req = arg;
  EvdHttpClient *c = req->client;
  g_autoptr (GError) error = NULL;

  (void) fd, (void) what;
  error = req->refused
    ? g_error_new_literal (EVD_HTTP_ERROR, EVD_HTTP_ERROR_INVALID, "libcurl refused the request")
    : g_error_new_literal (EVD_HTTP_ERROR, EVD_HTTP_ERROR_TIMEOUT,
                           "no response before the deadline");
  evd_http_request_detach (req);
  evd_http_request_finish (req, NULL, error);
  evd_http_pump (c);
}

/* The request's header list, in one block: curl's list nodes (a public struct, which curl only
 * reads and never frees), then the lines; g_free() frees it. curl_slist_append() would cost
 * two allocations a line. */
static gboolean
evd_http_headers (EvdHttpRequest *req, const char *const *headers, GError **error)
{
  struct curl_slist *nodes;
  gsize bytes = 0;
  guint n;
  char *text;

  for (n = 0; headers != NULL && headers[n] != NULL; n++) {
    if (strpbrk (headers[n], "\r\n") != NULL || strchr (headers[n], ':') == NULL) {
      g_set_error (error, EVD_HTTP_ERROR, EVD_HTTP_ERROR_INVALID,
                   "header %u is not one \"Name: value\" line", n);
      return FALSE;
    }
    bytes += strlen (headers[n]) + 1;
  }
  if (n == 0)
    return TRUE;
  nodes = g_malloc (n * sizeof *nodes + bytes);
  text = (char *) (nodes + n);
  for (guint i = 0; i < n; i++) {
    gsize len = strlen (headers[i]) + 1;

    memcpy (text, headers[i], len);
    nodes[i].data = text;
    nodes[i].next = i + 1 < n ? &nodes[i + 1] : NULL;
    text += len;
  }
  req->headers = nodes;
  return TRUE;
}

/* A new easy handle with the options every request of this client shares; a handle comes
 * back to the spares with them, so a reused one is only given the request's own. */
static CURL *
evd_http_easy_new (EvdHttpClient *c)
{
  CURL *e = curl_easy_init ();

  g_assert (e != NULL);  /* fails only when out of memory */
  curl_easy_setopt (e, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt (e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (e, CURLOPT_NOSIGNAL, 1L);       /* threads: no SIGALRM for timeouts */
  /* Cancelling a request whose name is being resolved would otherwise wait for the resolver
   * thread (curl joins it): quick exit leaves it to finish alone, and the loop goes on. */
  curl_easy_setopt (e, CURLOPT_QUICK_EXIT, 1L);
  curl_easy_setopt (e, CURLOPT_PATH_AS_IS, 1L);     /* send the path we built, never "squashed" */
  /* Upstreams are internal services, reached directly: an http_proxy in the environment must
   * not reroute them (and curl then skips reading the proxy variables on every request). */
  curl_easy_setopt (e, CURLOPT_PROXY, "");
  /* Likewise no_proxy: unset, curl would look up no_proxy and NO_PROXY in the environment on
   * every request (two getenv()s, each a walk of the whole environment). */
  curl_easy_setopt (e, CURLOPT_NOPROXY, "");
  curl_easy_setopt (e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt (e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt (e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (c->ca_file != NULL)
    curl_easy_setopt (e, CURLOPT_CAINFO, c->ca_file);
  curl_easy_setopt (e, CURLOPT_USERAGENT, "evdal");
  curl_easy_setopt (e, CURLOPT_WRITEFUNCTION, evd_http_on_body);
  /* A Content-Length over the cap fails before the body is read. */
  curl_easy_setopt (e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) c->options.max_response_bytes);
  curl_easy_setopt (e, CURLOPT_OPENSOCKETFUNCTION, evd_http_on_open_socket);
  curl_easy_setopt (e, CURLOPT_OPENSOCKETDATA, c);
  curl_easy_setopt (e, CURLOPT_CLOSESOCKETFUNCTION, evd_http_on_close_socket);
  curl_easy_setopt (e, CURLOPT_CLOSESOCKETDATA, c);
  return e;
}

static void
evd_http_setup_easy (EvdHttpRequest *req, CURL *e, const char *url, long timeout_ms)
{
  curl_easy_setopt (e, CURLOPT_URL, url);
  curl_easy_setopt (e, CURLOPT_PRIVATE, req);
  curl_easy_setopt (e, CURLOPT_ERRORBUFFER, req->errbuf);
  curl_easy_setopt (e, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt (e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt (e, CURLOPT_HTTPHEADER, req->headers);
  curl_easy_setopt (e, CURLOPT_WRITEDATA, req);
}

/* Gives the request to curl: an easy handle, its options, the multi handle. Outside curl's
 * callbacks. A refusal (out of memory) is reported by the request's timer, at once, never from
 * here: done must not run inside evd_http_get() or evd_http_request_cancel(). */
static void
evd_http_submit (EvdHttpRequest *req, const char *url)
{
  EvdHttpClient *c = req->client;
  gint64 left_us = req->deadline_us - g_get_monotonic_time ();
  CURL *e = c->n_spare > 0 ? c->spare[--c->n_spare] : evd_http_easy_new (c);

  /* Rounded up, at least 1 ms: curl must not give up before the deadline (our own timer fires
   * at it). */
  evd_http_setup_easy (req, e, url, (long) MAX ((left_us + 999) / 1000, 1));
  if (curl_multi_add_handle (c->multi, e) != CURLM_OK) {
    struct timeval now = { 0, 0 };

    evd_http_easy_release (c, e);
    req->refused = TRUE;
    event_del (&req->deadline);
    evtimer_add (&req->deadline, &now);
    return;
  }
  req->easy = e;
  if (req->plain)
    c->plain_in_curl++;
}

/* Hands waiting plain requests to curl, oldest first, while a connection is free for them.
 * Outside curl's callbacks (curl_multi_add_handle is not allowed inside them). */
static void
evd_http_pump (EvdHttpClient *c)
{
  GList *l;

  while (!c->closing && c->plain_in_curl < c->options.max_connections &&
         (l = g_queue_pop_head_link (&c->waiting)) != NULL) {
    EvdHttpRequest *req = l->data;
    g_autofree char *url = g_steal_pointer (&req->url);

    req->wait_link.data = NULL;
    evd_http_submit (req, url);
  }
}

EvdHttpRequest *
evd_http_get (EvdHttpClient *client, const char *url, const char *const *headers,
              gint64 deadline_us, EvdHttpDone done, gpointer data, GError **error)
{
  gint64 left_us = deadline_us - g_get_monotonic_time ();
  EvdHttpRequest *req;
  struct timeval tv;

  if (left_us <= 0) {
    g_set_error_literal (error, EVD_HTTP_ERROR, EVD_HTTP_ERROR_TIMEOUT,
                         "the deadline passed before the request started");
    return NULL;
  }
  req = g_new0 (EvdHttpRequest, 1);
  req->client = client;
  if (!evd_http_headers (req, headers, error)) {
    g_free (req);
    return NULL;
  }
  req->plain = g_ascii_strncasecmp (url, "http://", 7) == 0;
  req->deadline_us = deadline_us;
  req->body = g_byte_array_new ();
  req->done = done;
  req->data = data;
  req->link.data = req;
  evtimer_assign (&req->deadline, client->base, evd_http_on_deadline, req);
  tv = (struct timeval) { left_us / G_USEC_PER_SEC, left_us % G_USEC_PER_SEC };
  evtimer_add (&req->deadline, &tv);
  g_queue_push_tail_link (&client->requests, &req->link);
  if (client->options.stats != NULL) {
    g_atomic_int_inc (&client->options.stats->in_flight);
    __atomic_add_fetch (&client->options.stats->requests, 1, __ATOMIC_RELAXED);
  }
  if (!req->plain) {
    evd_http_submit (req, url);
    return req;
  }
  req->url = g_strdup (url);
  req->wait_link.data = req;
  g_queue_push_tail_link (&client->waiting, &req->wait_link);
  evd_http_pump (client);
  return req;
}

void
evd_http_request_cancel (EvdHttpRequest *req)
{
  EvdHttpClient *c = req->client;

  evd_http_request_free (req);
  evd_http_pump (c);
}

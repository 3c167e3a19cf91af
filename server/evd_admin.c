/* evd_admin: the admin HTTP endpoint (see evd_admin.h). */
#include "evd_admin.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evd_conn.h"
#include "evd_listener.h"

/* Admin connections open at once: scrapers, probes and a browser or two. Each idle one is
 * kept up to evhttp's 10 s timeout, and hundreds of them took every descriptor the Thrift
 * port needed; past this, a new one is shut down at once. */
#define EVD_ADMIN_MAX_CONNECTIONS 32
/* Descriptors kept for the Thrift port: an admin connection whose descriptor is this close to
 * RLIMIT_NOFILE (or a quarter of it, for tiny limits) is shut down too (descriptors are allocated lowest first, so a descriptor's
 * number is a lower bound of the count open). */
#define EVD_ADMIN_FD_RESERVE 64
/* A connection must send a whole request within this many seconds of connecting or of its
 * last request. evhttp's own timeout (the same) restarts with every byte read, so a client
 * sending a header byte every few seconds held its connection for ever, and 32 of them kept
 * /health from every load balancer probe. */
#define EVD_ADMIN_REQUEST_S 10

struct _EvdAdmin {
  struct evhttp *http;
  struct event_base *base;
  EvdListenerGuard *guard;
  EvdAdminPages pages;
  char *secret;
  char *address;
  gboolean draining;
  /* The admin connections' bufferevents, made by evd_admin_on_connection with a reference of
   * ours: evhttp has none of its own hooks for a connection's birth and death in libevent
   * 2.1, so a bufferevent whose callbacks evhttp cleared (it frees its connection) has ended. */
  GPtrArray *bevs;
  GArray *since_us;          /* gint64 per bev, same index: its connection or last request */
  struct event *sweep;
  EvdLogLimit log_limit;
};

/* Equal strings, in time that depends only on the length of what the client sent. */
static gboolean
evd_admin_secret_ok (const char *secret, const char *given)
{
  gsize n = strlen (given), m = strlen (secret);
  guint8 diff = n != m;

  for (gsize i = 0; i < n; i++)
    diff |= (guint8) given[i] ^ (guint8) secret[i < m ? i : 0];
  return diff == 0;
}

static gboolean
evd_admin_authorized (EvdAdmin *a, struct evhttp_request *req)
{
  const char *auth;

  if (a->secret == NULL)
    return TRUE;
  auth = evhttp_find_header (evhttp_request_get_input_headers (req), "Authorization");
  return auth != NULL && g_ascii_strncasecmp (auth, "Bearer ", 7) == 0 &&
         evd_admin_secret_ok (a->secret, auth + 7);
}

static void
evd_admin_send (struct evhttp_request *req, int code, const char *reason, const char *type,
                GString *body)
{
  struct evbuffer *buf = evbuffer_new ();
  struct evkeyvalq *headers = evhttp_request_get_output_headers (req);

  evhttp_add_header (headers, "Content-Type", type);
  evhttp_add_header (headers, "Cache-Control", "no-store");
  /* The pages are ours alone: no scripts, no framing, no sniffing. */
  evhttp_add_header (headers, "Content-Security-Policy", "default-src 'none'; style-src "
                     "'unsafe-inline'; img-src 'self'");
  evhttp_add_header (headers, "X-Content-Type-Options", "nosniff");
  evbuffer_add (buf, body->str, body->len);
  evhttp_send_reply (req, code, reason, buf);
  evbuffer_free (buf);
}

static void
evd_admin_text (struct evhttp_request *req, int code, const char *reason, const char *text)
{
  g_autoptr (GString) body = g_string_new (text);

  evd_admin_send (req, code, reason, "text/plain; charset=utf-8", body);
}

/* A whole request came: the connection's time for its next one starts now. */
static void
evd_admin_note_request (EvdAdmin *a, struct evhttp_request *req)
{
  struct evhttp_connection *evcon = evhttp_request_get_connection (req);
  struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent (evcon) : NULL;

  for (guint i = 0; bev != NULL && i < a->bevs->len; i++)
    if (a->bevs->pdata[i] == bev)
      g_array_index (a->since_us, gint64, i) = g_get_monotonic_time ();
}

static void
evd_admin_on_request (struct evhttp_request *req, void *arg)
{
  EvdAdmin *a = arg;
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri (req);
  const char *path = uri ? evhttp_uri_get_path (uri) : NULL;
  g_autoptr (GString) body = g_string_sized_new (4096);

  evd_admin_note_request (a, req);
  if (path == NULL || *path == '\0')
    path = "/";
  if (strcmp (path, "/health") == 0) {
    if (a->draining)
      evd_admin_text (req, 503, "Service Unavailable", "draining\n");
    else {
      g_string_assign (body, "ready\n");
      if (a->pages.health != NULL)
        a->pages.health (a->pages.health_data, body);
      evd_admin_send (req, 200, "OK", "text/plain; charset=utf-8", body);
    }
    return;
  }
  if (!evd_admin_authorized (a, req)) {
    evhttp_add_header (evhttp_request_get_output_headers (req), "WWW-Authenticate",
                       "Bearer realm=\"evdal admin\"");
    evd_admin_text (req, 401, "Unauthorized", "admin_secret_file is set: send "
                    "\"Authorization: Bearer SECRET\"\n");
    return;
  }
  if (strcmp (path, "/metrics") == 0) {
    g_autofree char *text = evd_metrics_render (a->pages.metrics);
    g_string_assign (body, text);
    evd_admin_send (req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
  } else if (strcmp (path, "/lookups") == 0 && a->pages.lookups_json != NULL) {
    a->pages.lookups_json (a->pages.lookups_data, body);
    evd_admin_send (req, 200, "OK", "application/json", body);
  } else if (strcmp (path, "/traces") == 0 && a->pages.traces != NULL) {
    evd_trace_store_html (a->pages.traces, body);
    evd_admin_send (req, 200, "OK", "text/html; charset=utf-8", body);
  } else if (strcmp (path, "/traces.json") == 0 && a->pages.traces != NULL) {
    evd_trace_store_json (a->pages.traces, body);
    evd_admin_send (req, 200, "OK", "application/json", body);
  } else if (strcmp (path, "/") == 0) {
    evd_admin_text (req, 200, "OK", "evdal admin: /health /metrics /lookups /traces "
                    "/traces.json\n");
  } else {
    evd_admin_text (req, 404, "Not Found", "not found: try /health /metrics /lookups "
                    "/traces\n");
  }
}

/* Whether evhttp still uses the bufferevent: it clears its callbacks when it frees the
 * connection (and closes the descriptor: the bufferevent does not own it). */
static gboolean
evd_admin_bev_live (struct bufferevent *bev)
{
  bufferevent_data_cb r = NULL, w = NULL;
  bufferevent_event_cb e = NULL;

  bufferevent_getcb (bev, &r, &w, &e, NULL);
  return r != NULL || w != NULL || e != NULL;
}

/* Lets go of the bufferevents of connections that ended, and shuts down those that took
 * longer than EVD_ADMIN_REQUEST_S to send a request (evhttp reads EOF and frees them). */
static void
evd_admin_sweep (EvdAdmin *a)
{
  gint64 now = g_get_monotonic_time ();

  for (guint i = a->bevs->len; i-- > 0;) {
    struct bufferevent *bev = a->bevs->pdata[i];

    if (!evd_admin_bev_live (bev)) {
      g_ptr_array_remove_index_fast (a->bevs, i);
      g_array_remove_index_fast (a->since_us, i);
      bufferevent_decref (bev);
    } else if (now - g_array_index (a->since_us, gint64, i) >
               EVD_ADMIN_REQUEST_S * G_USEC_PER_SEC && bufferevent_getfd (bev) >= 0) {
      evd_log_limited (&a->log_limit, NULL, "admin connection closed: no whole request "
                       "within " G_STRINGIFY (EVD_ADMIN_REQUEST_S) " s");
      shutdown (bufferevent_getfd (bev), SHUT_RDWR);
      g_array_index (a->since_us, gint64, i) = G_MAXINT64 / 2;  /* once: it is ending */
    }
  }
}

static void
evd_admin_on_sweep (evutil_socket_t fd, short what, void *arg)
{
  (void) fd;
  (void) what;
  evd_admin_sweep (arg);
}

typedef struct {
  EvdAdmin *admin;
  struct bufferevent *bev;
  gboolean over_cap;
} EvdAdminNew;

/* A new connection, one loop turn after evhttp set it up (its descriptor is known by then):
 * shut down when it is past the cap or would eat into the Thrift port's reserve. */
static void
evd_admin_on_new (evutil_socket_t unused, short what, void *arg)
{
  EvdAdminNew *n = arg;
  evutil_socket_t fd = bufferevent_getfd (n->bev);
  struct rlimit rl = { 0 };
  gboolean reserve = getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                     fd >= 0 && (rlim_t) fd + MIN (EVD_ADMIN_FD_RESERVE, rl.rlim_cur / 4) >=
                                rl.rlim_cur;

  (void) unused;
  (void) what;
  if (fd >= 0 && evd_admin_bev_live (n->bev) && (n->over_cap || reserve)) {
    evd_log_limited (&n->admin->log_limit, NULL, "admin connection refused: %s",
                     n->over_cap ? "already " G_STRINGIFY (EVD_ADMIN_MAX_CONNECTIONS)
                                   " admin connections open"
                                 : "descriptors near RLIMIT_NOFILE are kept for the Thrift port");
    shutdown (fd, SHUT_RDWR);  /* evhttp reads EOF and frees the connection */
  }
  bufferevent_decref (n->bev);
  g_free (n);
}

/* evhttp's hook for a new connection's bufferevent (EVHTTP set_bevcb). */
static struct bufferevent *
evd_admin_on_connection (struct event_base *base, void *arg)
{
  EvdAdmin *a = arg;
  /* Without BEV_OPT_CLOSE_ON_FREE: evhttp then closes the descriptor itself when it frees
   * the connection, though our reference keeps the bufferevent a little longer. */
  struct bufferevent *bev = bufferevent_socket_new (base, -1, 0);
  EvdAdminNew *n = g_new0 (EvdAdminNew, 1);
  static const struct timeval now = { 0, 0 };
  gint64 since = g_get_monotonic_time ();

  evd_admin_sweep (a);
  n->admin = a;
  n->bev = bev;
  n->over_cap = a->bevs->len >= EVD_ADMIN_MAX_CONNECTIONS;
  bufferevent_incref (bev);        /* the list's */
  bufferevent_incref (bev);        /* the check's, below */
  g_ptr_array_add (a->bevs, bev);
  g_array_append_val (a->since_us, since);
  event_base_once (base, -1, EV_TIMEOUT, evd_admin_on_new, n, &now);
  return bev;
}

EvdAdmin *
evd_admin_new (struct event_base *base, const char *address, gboolean reuse_port, int fd,
               const EvdAdminPages *pages, GError **error)
{
  struct evconnlistener *lev;
  static const struct timeval every = { 1, 0 };
  g_autoptr (EvdAdmin) a = g_new0 (EvdAdmin, 1);

  a->pages = *pages;
  a->secret = pages->secret && *pages->secret ? g_strdup (pages->secret) : NULL;
  a->pages.secret = NULL;
  if (fd < 0) {
    fd = evd_listener_bind (address, reuse_port, &a->address, error);
    if (fd < 0)
      return NULL;
  } else {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char buf[128];

    getsockname (fd, (struct sockaddr *) &ss, &len);
    evd_conn_format_addr ((struct sockaddr *) &ss, len, buf, sizeof buf);
    a->address = g_strdup (buf);
    evutil_make_socket_nonblocking (fd);
  }
  a->base = base;
  a->bevs = g_ptr_array_new ();
  a->since_us = g_array_new (FALSE, FALSE, sizeof (gint64));
  a->sweep = event_new (base, -1, EV_PERSIST, evd_admin_on_sweep, a);
  event_add (a->sweep, &every);
  a->http = evhttp_new (base);
  evhttp_set_bevcb (a->http, evd_admin_on_connection, a);
  /* A scraper or a browser, never a bulk client: small requests, short patience. */
  evhttp_set_allowed_methods (a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  evhttp_set_max_headers_size (a->http, 16384);
  evhttp_set_max_body_size (a->http, 1024);
  evhttp_set_timeout (a->http, EVD_ADMIN_REQUEST_S);
  evhttp_set_gencb (a->http, evd_admin_on_request, a);
  /* Our own listener, so that a failing accept pauses it (evd_listener_guard) instead of
   * spinning the main loop; evhttp takes it over. */
  lev = evconnlistener_new (base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                            -1, fd);
  if (lev == NULL || evhttp_bind_listener (a->http, lev) == NULL) {
    if (lev != NULL)
      evconnlistener_free (lev);
    else
      close (fd);
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "admin: cannot accept on %s",
                 a->address);
    return NULL;
  }
  a->guard = evd_listener_guard_new (base, lev, a->address);
  return g_steal_pointer (&a);
}

void
evd_admin_free (EvdAdmin *a)
{
  if (a == NULL)
    return;
  /* evhttp_free closes each open connection's descriptor before the bufferevent (which our
   * reference keeps) lets go of its events, and the events' last delete would then be an
   * epoll_ctl on a closed number. So those events go first, while the descriptors are open.
   * (A connection evhttp has already freed left its events on the closed number until the
   * sweep: libevent 2.1's evhttp gives no hook to remove them sooner. On the main loop, whose
   * epoll set holds none of the IO loops' sockets, such a delete only fails.) */
  for (guint i = 0; a->bevs != NULL && i < a->bevs->len; i++)
    if (evd_admin_bev_live (a->bevs->pdata[i]))
      bufferevent_disable (a->bevs->pdata[i], EV_READ | EV_WRITE);
  if (a->http != NULL)
    evhttp_free (a->http);  /* closes the socket too */
  evd_listener_guard_free (a->guard);
  if (a->sweep != NULL)
    event_free (a->sweep);
  if (a->bevs != NULL) {
    evd_admin_sweep (a);  /* every connection ended with evhttp */
    g_ptr_array_unref (a->bevs);
    g_array_unref (a->since_us);
  }
  if (a->secret != NULL)
    memset (a->secret, 0, strlen (a->secret));
  g_free (a->secret);
  g_free (a->address);
  g_free (a);
}

const char *
evd_admin_address (EvdAdmin *a)
{
  return a->address;
}

void
evd_admin_set_draining (EvdAdmin *a)
{
  if (a != NULL)
    a->draining = TRUE;
}

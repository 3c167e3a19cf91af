/* evd_admin: the admin HTTP endpoint (see evd_admin.h). */
#include "evd_admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <gio/gio.h>
#include <string.h>
#include <unistd.h>

#include "evd_conn.h"
#include "evd_listener.h"

struct _EvdAdmin {
  struct evhttp *http;
  EvdAdminPages pages;
  char *secret;
  char *address;
  gboolean draining;
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

static void
evd_admin_on_request (struct evhttp_request *req, void *arg)
{
  EvdAdmin *a = arg;
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri (req);
  const char *path = uri ? evhttp_uri_get_path (uri) : NULL;
  g_autoptr (GString) body = g_string_sized_new (4096);

  if (path == NULL || *path == '\0')
    path = "/";
  if (strcmp (path, "/health") == 0) {
    if (a->draining)
      evd_admin_text (req, 503, "Service Unavailable", "draining\n");
    else if (a->pages.health == NULL)
      evd_admin_text (req, 200, "OK", "ready\n");
    else {
      g_string_assign (body, "ready\n");
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

EvdAdmin *
evd_admin_new (struct event_base *base, const char *address, int fd,
               const EvdAdminPages *pages, GError **error)
{
  g_autoptr (EvdAdmin) a = g_new0 (EvdAdmin, 1);

  a->pages = *pages;
  a->secret = pages->secret && *pages->secret ? g_strdup (pages->secret) : NULL;
  a->pages.secret = NULL;
  if (fd < 0) {
    fd = evd_listener_bind (address, &a->address, error);
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
  a->http = evhttp_new (base);
  /* A scraper or a browser, never a bulk client: small requests, short patience. */
  evhttp_set_allowed_methods (a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  evhttp_set_max_headers_size (a->http, 16384);
  evhttp_set_max_body_size (a->http, 1024);
  evhttp_set_timeout (a->http, 10);
  evhttp_set_gencb (a->http, evd_admin_on_request, a);
  if (evhttp_accept_socket_with_handle (a->http, fd) == NULL) {
    close (fd);
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "admin: cannot accept on %s",
                 a->address);
    return NULL;
  }
  return g_steal_pointer (&a);
}

void
evd_admin_free (EvdAdmin *a)
{
  if (a == NULL)
    return;
  if (a->http != NULL)
    evhttp_free (a->http);  /* closes the socket too */
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

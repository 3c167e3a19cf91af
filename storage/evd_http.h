/* evd_http: an HTTP client for one event loop: libcurl's multi interface driven by a plain
 * libevent base, for any code that reads from HTTP services (the http backend's upstreams;
 * later, perhaps, a tracing exporter).
 *
 * A client is one curl multi handle on one event_base, used from that base's thread only. It
 * keeps up to `max_connections` connections per host alive and reuses them (HTTP/1.1
 * keep-alive, or HTTP/2 multiplexing when a TLS server offers h2 by ALPN); requests beyond
 * that wait for a connection, oldest first: plain http:// ones in the client itself (at most
 * max_connections of them in curl at once), https ones inside curl. Sockets are watched by libevent events, curl's
 * timers by one libevent timer (CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION), so the
 * loop never blocks: names are resolved by libcurl's threaded resolver (Debian 12's libcurl has
 * the AsynchDNS feature; evd_http_async_dns() says so at run time), connects, TLS and reads
 * are non-blocking.
 *
 * The life of a request. evd_http_get() starts a GET on the client's loop and returns its
 * handle, or NULL with an error when it cannot start (a bad URL or header, a deadline already
 * past). `done` then runs exactly once, on the loop, from a libevent callback (never inside
 * evd_http_get() and never inside a curl callback), with a response (any status) or an error:
 * a connection failure, the deadline (EVD_HTTP_ERROR_TIMEOUT, from a timer of the request's
 * own, whatever state curl holds it in), a body over `max_response_bytes`. The request is
 * freed when `done` returns. evd_http_request_cancel() stops a request whose `done` has not
 * run: it leaves curl at once (its connection is closed if a transfer was under way) and
 * `done` is never called. done may start and cancel other requests of the same client; it
 * must not free the client. A request that libcurl sends again by itself, on a new
 * connection, because the kept-alive one it chose was found closed before any answer came,
 * is still the one request: done runs once, and evd_xreq counts no retry.
 */
#pragma once

#include <glib.h>

struct event_base;

G_BEGIN_DECLS

/* Counters of one or several clients (all loops' clients of one upstream share one), updated
 * with atomic adds on the loops, read from any thread. The caller owns it; it must outlive
 * every client that counts into it. */
typedef struct {
  gint connections;         /* sockets open now (connections, kept-alive ones included) */
  gint in_flight;           /* requests started and not done */
  guint64 connects;         /* connections opened since the start */
  guint64 requests;         /* requests started */
} EvdHttpStats;

typedef struct {
  guint max_connections;    /* per host, and kept alive per client; >= 1 */
  gsize max_response_bytes; /* a longer body fails the request (EVD_HTTP_ERROR_TOO_BIG) */
  const char *ca_file;      /* PEM bundle that verifies https servers; NULL: the system's */
  EvdHttpStats *stats;      /* NULL, or counters to add to */
} EvdHttpOptions;

typedef struct {
  long status;              /* 200, 404, ... */
  const char *body;         /* NUL-terminated, for convenience; may hold NULs itself */
  gsize len;
  int http_version;         /* 1 (HTTP/1.x) or 2 */
  gboolean new_connection;  /* the request opened a connection rather than reusing one */
  gint64 retry_after_s;     /* Retry-After (RFC 9110 10.2.3) in seconds from now, 0 for a
                               date already past; -1 when absent or unreadable */
} EvdHttpResponse;

typedef struct _EvdHttpClient EvdHttpClient;
typedef struct _EvdHttpRequest EvdHttpRequest;

/* Exactly one of `response` and `error` is set; both are valid only during the call. */
typedef void (*EvdHttpDone) (EvdHttpRequest *req, const EvdHttpResponse *response,
                             const GError *error, gpointer data);

#define EVD_HTTP_ERROR (evd_http_error_quark ())
GQuark evd_http_error_quark (void);
typedef enum {
  EVD_HTTP_ERROR_INVALID,    /* a URL or header evd_http_get() refuses */
  EVD_HTTP_ERROR_CONNECT,    /* name resolution, connect or TLS handshake */
  EVD_HTTP_ERROR_TIMEOUT,    /* the deadline passed */
  EVD_HTTP_ERROR_TOO_BIG,    /* the body outgrew max_response_bytes */
  EVD_HTTP_ERROR_FAILED,     /* the transfer failed after connecting (reset, bad response) */
  EVD_HTTP_ERROR_CANCELLED,  /* the client was freed first */
  EVD_HTTP_ERROR_UNTRUSTED,  /* the server's certificate did not verify (or the CA file could
                                not be read): every attempt fails the same way */
} EvdHttpError;

/* libcurl's one-time set-up; any thread, idempotent. evd_http_client_new() calls it too, but
 * a program should call it from its main thread before it starts threads. */
void evd_http_global_init (void);
/* Whether this libcurl resolves names off the calling thread (feature AsynchDNS): without it
 * a host name in a URL would block the loop, so callers accept only IP literals then. */
gboolean evd_http_async_dns (void);

/* A Retry-After value, delay-seconds ("120") or an HTTP date ("Fri, 31 Dec 1999 23:59:59
 * GMT"), as seconds after `now_unix` (a date already past gives 0, either form at most
 * G_MAXINT32); -1 when it is neither. Any thread. */
gint64 evd_http_retry_after_parse (const char *value, gint64 now_unix);

/* On the base's thread, as every other function below (but the global ones). */
EvdHttpClient *evd_http_client_new (struct event_base *base, const EvdHttpOptions *options);
/* Fails the requests still in flight with EVD_HTTP_ERROR_CANCELLED, closes the connections. */
void evd_http_client_free (EvdHttpClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdHttpClient, evd_http_client_free)

/* Starts `GET url`. `headers` is NULL or a NULL-terminated array of "Name: value" lines, which
 * must hold no CR, LF or NUL (refused: a header line cannot be split); `deadline_us` is
 * monotonic time (g_get_monotonic_time). Returns the request, or NULL with an error. */
EvdHttpRequest *evd_http_get (EvdHttpClient *client, const char *url,
                              const char *const *headers, gint64 deadline_us,
                              EvdHttpDone done, gpointer data, GError **error);
/* Stops a request whose done has not run; done will not run. */
void evd_http_request_cancel (EvdHttpRequest *req);

G_END_DECLS

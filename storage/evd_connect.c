/* evd_connect: see evd_connect.h. One attempt is a small state machine on its loop:
 *
 *   start --numeric--> CONNECTING(address i) --writable, SO_ERROR 0--> done (fd)
 *     |                   ^        |
 *     +--evdns answers----+        +--refused/error/its share of the time--> address i+1
 *                                  +--no address left, or the time is up--> done (error)
 *
 * One event serves each step in turn (the resolution's timer, the socket being connected, the
 * deferred report of a failure found inside evd_connect_start). */
#include "evd_connect.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evd_quark.h"

EVD_DEFINE_QUARK (evd-connect-error-quark, evd_connect_error)

/* A lookup in flight. It outlives its attempt when that is cancelled or times out first
 * (`attempt` NULL then), since evdns calls back exactly once whatever happens. */
typedef struct {
  EvdConnect *attempt;
  gboolean in_call;         /* inside evdns_getaddrinfo, which may answer at once */
  gboolean answered;        /* it did: */
  int result;
  struct evutil_addrinfo *res;
} EvdConnectResolve;

struct _EvdConnect {
  struct event_base *base;
  char *host;
  int port;
  gint64 deadline_us;       /* G_MAXINT64: none */
  EvdConnectDone done;
  gpointer data;
  gboolean starting;        /* inside evd_connect_start: an end is reported from the loop */
  EvdConnectResolve *resolve;
  struct event *ev;
  struct evutil_addrinfo *addrs;
  struct evutil_addrinfo *cur;  /* the address being connected to */
  evutil_socket_t fd;
  GString *tried;           /* "127.0.0.2:6379 refused, ..." */
  GError *error;            /* the end found inside evd_connect_start, reported from the loop */
};

static void evd_connect_next (EvdConnect *a);

static void
evd_connect_free (EvdConnect *a)
{
  if (a->ev != NULL)
    event_free (a->ev);
  if (a->fd >= 0)
    evutil_closesocket (a->fd);
  if (a->addrs != NULL)
    evutil_freeaddrinfo (a->addrs);
  g_string_free (a->tried, TRUE);
  g_clear_error (&a->error);
  g_free (a->host);
  g_free (a);
}

/* Replaces the attempt's event (NULL: none). */
static void
evd_connect_watch (EvdConnect *a, evutil_socket_t fd, short what, event_callback_fn cb)
{
  if (a->ev != NULL)
    event_free (a->ev);
  a->ev = cb != NULL ? event_new (a->base, fd, what, cb, a) : NULL;
}

/* The attempt's end: it is freed first, so that `done` may do anything, a new attempt
 * included. */
static void
evd_connect_finish (EvdConnect *a, evutil_socket_t fd, GError *error)
{
  g_autoptr (GError) owned = error;
  EvdConnectDone done = a->done;
  gpointer data = a->data;

  if (fd == a->fd)
    a->fd = -1;
  evd_connect_free (a);
  done (data, fd, owned);
}

static void
evd_connect_on_failed (evutil_socket_t fd, short what, void *arg)
{
  EvdConnect *a = arg;

  (void) fd, (void) what;
  evd_connect_finish (a, -1, g_steal_pointer (&a->error));
}

/* A failure: reported now from a loop callback, or from the loop's next pass when found
 * inside evd_connect_start (whose caller has no handle yet). */
static void
evd_connect_fail (EvdConnect *a, GError *error)
{
  if (!a->starting) {
    evd_connect_finish (a, -1, error);
    return;
  }
  a->error = error;
  evd_connect_watch (a, -1, 0, evd_connect_on_failed);
  event_active (a->ev, EV_TIMEOUT, 1);
}

/* ---- Connecting, address by address. ---- */

static void
evd_connect_note (EvdConnect *a, const char *why)
{
  char buf[INET6_ADDRSTRLEN];
  const struct sockaddr *sa = a->cur->ai_addr;
  const void *in = sa->sa_family == AF_INET
                   ? (const void *) &((const struct sockaddr_in *) sa)->sin_addr
                   : (const void *) &((const struct sockaddr_in6 *) sa)->sin6_addr;

  if (evutil_inet_ntop (sa->sa_family, in, buf, sizeof buf) == NULL)
    g_strlcpy (buf, "?", sizeof buf);
  g_string_append_printf (a->tried, sa->sa_family == AF_INET6 ? "%s[%s]:%d %s" : "%s%s:%d %s",
                          a->tried->len > 0 ? ", " : "", buf, a->port, why);
}

static const char *
evd_connect_why (int err)
{
  return err == ECONNREFUSED ? "refused" : err == ETIMEDOUT ? "timed out" : g_strerror (err);
}

/* The address being tried failed: its socket is closed, the next one goes. */
static void
evd_connect_failed (EvdConnect *a, const char *why)
{
  evd_connect_note (a, why);
  evutil_closesocket (a->fd);
  a->fd = -1;
  evd_connect_next (a);
}

static void
evd_connect_on_writable (evutil_socket_t fd, short what, void *arg)
{
  EvdConnect *a = arg;
  int err = 0;
  socklen_t len = sizeof err;

  if (what & EV_TIMEOUT) {
    evd_connect_failed (a, "timed out");
    return;
  }
  if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err != 0) {
    evd_connect_failed (a, evd_connect_why (err));
    return;
  }
  evd_connect_finish (a, fd, NULL);
}

/* The addresses not tried yet, the one in a->cur included. */
static guint
evd_connect_left (EvdConnect *a)
{
  guint n = 0;

  for (struct evutil_addrinfo *ai = a->cur; ai != NULL; ai = ai->ai_next)
    n += ai->ai_family == AF_INET || ai->ai_family == AF_INET6;
  return n;
}

/* Connects to the next address, or reports every one tried. A connect() that fails at once
 * (refused on loopback, no route) moves on at once, without the loop. */
static void
evd_connect_next (EvdConnect *a)
{
  g_autofree char *where = NULL;

  for (a->cur = a->cur ? a->cur->ai_next : a->addrs; a->cur != NULL; a->cur = a->cur->ai_next) {
    struct evutil_addrinfo *ai = a->cur;
    gint64 left_us = a->deadline_us - g_get_monotonic_time ();

    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    if (left_us <= 0)
      break;
    a->fd = socket (ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (a->fd < 0) {
      evd_connect_note (a, evd_connect_why (errno));
      continue;
    }
    if (connect (a->fd, ai->ai_addr, (socklen_t) ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
      /* Connected at once too: the socket is writable, and the loop hands it over. */
      evd_connect_watch (a, a->fd, EV_WRITE, evd_connect_on_writable);
      if (a->deadline_us == G_MAXINT64) {
        event_add (a->ev, NULL);
      } else {
        gint64 share_us = left_us / evd_connect_left (a);
        struct timeval tv = { share_us / G_USEC_PER_SEC, share_us % G_USEC_PER_SEC };

        event_add (a->ev, &tv);
      }
      return;
    }
    evd_connect_note (a, evd_connect_why (errno));
    evutil_closesocket (a->fd);
    a->fd = -1;
  }
  if (a->cur != NULL)                     /* stopped by the deadline */
    g_string_append (a->tried, a->tried->len > 0 ? ", then the time was up" : "timed out");
  else if (a->tried->len == 0)
    g_string_append (a->tried, "no address");
  /* An IPv6 literal in brackets, as in the addresses tried: "::1:6379" names another address
   * (::0.1.99.121), and no port. */
  where = strchr (a->host, ':') != NULL ? g_strdup_printf ("[%s]:%d", a->host, a->port)
                                        : g_strdup_printf ("%s:%d", a->host, a->port);
  evd_connect_fail (a, g_error_new (EVD_CONNECT_ERROR, EVD_CONNECT_ERROR_CONNECT,
                                    "cannot connect to %s: %s", where, a->tried->str));
}

/* ---- Resolving. ---- */

static void
evd_connect_resolved (EvdConnect *a, int result, struct evutil_addrinfo *res)
{
  if (result != 0) {
    if (res != NULL)
      evutil_freeaddrinfo (res);
    evd_connect_fail (a, g_error_new (EVD_CONNECT_ERROR, EVD_CONNECT_ERROR_RESOLVE,
                                      "cannot resolve %s: %s", a->host,
                                      evutil_gai_strerror (result)));
    return;
  }
  a->addrs = res;
  a->cur = NULL;
  evd_connect_next (a);
}

static void
evd_connect_on_resolved (int result, struct evutil_addrinfo *res, void *arg)
{
  EvdConnectResolve *r = arg;
  EvdConnect *a = r->attempt;

  if (r->in_call) {                       /* answered inside evdns_getaddrinfo */
    r->answered = TRUE, r->result = result, r->res = res;
    return;
  }
  g_free (r);
  if (a == NULL) {                        /* the attempt went first */
    if (res != NULL)
      evutil_freeaddrinfo (res);
    return;
  }
  a->resolve = NULL;
  evd_connect_resolved (a, result, res);
}

/* The time ran out while the name was being resolved: the lookup is left to finish alone. */
static void
evd_connect_on_resolve_timeout (evutil_socket_t fd, short what, void *arg)
{
  EvdConnect *a = arg;

  (void) fd, (void) what;
  a->resolve->attempt = NULL;
  a->resolve = NULL;
  evd_connect_fail (a, g_error_new (EVD_CONNECT_ERROR, EVD_CONNECT_ERROR_RESOLVE,
                                    "cannot resolve %s: timed out", a->host));
}

static void
evd_connect_resolve (EvdConnect *a, struct evdns_base *dns, const char *port,
                     const struct evutil_addrinfo *hints)
{
  EvdConnectResolve *r = g_new0 (EvdConnectResolve, 1);

  r->attempt = a;
  r->in_call = TRUE;
  (void) evdns_getaddrinfo (dns, a->host, port, hints, evd_connect_on_resolved, r);
  r->in_call = FALSE;
  if (r->answered) {                      /* a hosts entry, or an error found at once */
    int result = r->result;
    struct evutil_addrinfo *res = r->res;

    g_free (r);
    evd_connect_resolved (a, result, res);
    return;
  }
  a->resolve = r;                         /* evd_connect_on_resolved goes on */
  if (a->deadline_us != G_MAXINT64) {
    gint64 left_us = MAX (a->deadline_us - g_get_monotonic_time (), 0);
    struct timeval tv = { left_us / G_USEC_PER_SEC, left_us % G_USEC_PER_SEC };

    evd_connect_watch (a, -1, 0, evd_connect_on_resolve_timeout);
    event_add (a->ev, &tv);
  }
}

EvdConnect *
evd_connect_start (struct event_base *base, struct evdns_base *dns, const char *host, int port,
                   guint timeout_ms, EvdConnectDone done, gpointer data)
{
  EvdConnect *a;
  struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                   .ai_protocol = IPPROTO_TCP,
                                   .ai_flags = EVUTIL_AI_NUMERICHOST };
  struct evutil_addrinfo *res = NULL;
  char portbuf[16];

  g_return_val_if_fail (port > 0 && port <= 65535, NULL);
  a = g_new0 (EvdConnect, 1);
  a->base = base;
  a->host = g_strdup (host);
  a->port = port;
  a->deadline_us = timeout_ms > 0 ? g_get_monotonic_time () + timeout_ms * (gint64) 1000
                                  : G_MAXINT64;
  a->done = done;
  a->data = data;
  a->fd = -1;
  a->tried = g_string_new (NULL);
  a->starting = TRUE;
  g_snprintf (portbuf, sizeof portbuf, "%d", port);
  /* A numeric host needs no resolver; getaddrinfo with AI_NUMERICHOST never blocks. */
  if (evutil_getaddrinfo (host, portbuf, &hints, &res) == 0) {
    evd_connect_resolved (a, 0, res);
  } else if (dns == NULL) {
    evd_connect_resolved (a, EVUTIL_EAI_FAIL, NULL);
  } else {
    hints.ai_flags = 0;
    evd_connect_resolve (a, dns, portbuf, &hints);
  }
  a->starting = FALSE;
  return a;
}

void
evd_connect_cancel (EvdConnect *a)
{
  if (a == NULL)
    return;
  if (a->resolve != NULL)
    a->resolve->attempt = NULL;           /* its callback frees it */
  evd_connect_free (a);
}

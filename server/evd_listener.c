/* evd_listener: listen address parsing, binding and accepting (see evd_listener.h). */
#include "evd_listener.h"

#include <errno.h>
#include <event2/listener.h>
#include <gio/gio.h>
#include <netdb.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "evd_conn.h"

/* Pending connections the kernel may queue: bursts of thousands of connects (a frontend fleet
 * restarting) must not be refused while the loop is busy. The kernel caps it at somaxconn. */
#define EVD_LISTEN_BACKLOG 4096
/* How long accepting pauses after a failure such as EMFILE. */
#define EVD_ACCEPT_PAUSE_MS 100

/* Accept failures logged per listener: one line, then at most one per
 * EVD_ACCEPT_WARN_EVERY_S with the count of failures since. */
#define EVD_ACCEPT_WARN_EVERY_S 10

struct _EvdListenerGuard {
  struct evconnlistener *lev;
  struct event *resume;
  char *address;
  gint64 warned_us;      /* last warning, monotonic; 0: never */
  guint64 failures;      /* since the last warning */
};

/* The guards, found from their listener: libevent gives an error callback the accept
 * callback's user data, which for the admin's listener is evhttp's. Main loop only. */
static GSList *evd_listener_guards;

struct _EvdListener {
  struct evconnlistener *lev;
  EvdListenerGuard *guard;
  char *address;
  char *unix_path;       /* a socket file we created, removed on free */
  EvdAcceptFunc accept_fn;
  gpointer data;
};

static void
evd_listener_on_accept (struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *addr,
                        int len, void *arg)
{
  EvdListener *l = arg;

  (void) lev;
  l->accept_fn (fd, addr, len, l->data);
}

static void
evd_listener_on_resume (evutil_socket_t fd, short what, void *arg)
{
  EvdListenerGuard *g = arg;

  (void) fd;
  (void) what;
  evconnlistener_enable (g->lev);
}

/* accept() failed (EMFILE, ENFILE, ENOBUFS...): the pending connection stays in the backlog,
 * so a level-triggered listener would fail again at once, spinning its loop and logging at
 * that rate; it pauses instead, and says so at most every EVD_ACCEPT_WARN_EVERY_S. */
static void
evd_listener_on_error (struct evconnlistener *lev, void *arg)
{
  EvdListenerGuard *g = NULL;
  struct timeval tv = { 0, EVD_ACCEPT_PAUSE_MS * 1000 };
  int err = EVUTIL_SOCKET_ERROR ();
  gint64 now = g_get_monotonic_time ();

  (void) arg;
  for (GSList *i = evd_listener_guards; i != NULL && g == NULL; i = i->next)
    if (((EvdListenerGuard *) i->data)->lev == lev)
      g = i->data;
  g_return_if_fail (g != NULL);
  g->failures++;
  if (g->warned_us == 0 || now - g->warned_us >= EVD_ACCEPT_WARN_EVERY_S * G_USEC_PER_SEC) {
    g_warning ("accept on %s failed: %s; pausing accepts for %d ms at a time (%"
               G_GUINT64_FORMAT " failures since the last such line)", g->address,
               g_strerror (err), EVD_ACCEPT_PAUSE_MS, g->failures);
    g->warned_us = now;
    g->failures = 0;
  }
  evconnlistener_disable (lev);
  evtimer_add (g->resume, &tv);
}

EvdListenerGuard *
evd_listener_guard_new (struct event_base *base, struct evconnlistener *lev,
                        const char *address)
{
  EvdListenerGuard *g = g_new0 (EvdListenerGuard, 1);

  g->lev = lev;
  g->address = g_strdup (address);
  g->resume = evtimer_new (base, evd_listener_on_resume, g);
  evd_listener_guards = g_slist_prepend (evd_listener_guards, g);
  evconnlistener_set_error_cb (lev, evd_listener_on_error);
  return g;
}

void
evd_listener_guard_free (EvdListenerGuard *g)
{
  if (g == NULL)
    return;
  evd_listener_guards = g_slist_remove (evd_listener_guards, g);
  event_free (g->resume);
  g_free (g->address);
  g_free (g);
}

static gboolean
evd_listener_parse_inet (const char *address, struct sockaddr_storage *ss, socklen_t *len,
                         GError **error)
{
  g_autofree char *host = NULL;
  const char *port;
  struct addrinfo hints = { 0 }, *res = NULL;
  int rc;

  if (address[0] == '[') {
    const char *end = strchr (address, ']');
    if (end == NULL || end[1] != ':') {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "\"%s\": expected [ipv6]:port", address);
      return FALSE;
    }
    host = g_strndup (address + 1, (gsize) (end - address - 1));
    port = end + 2;
  } else {
    const char *colon = strrchr (address, ':');
    if (colon == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "\"%s\": expected host:port, [ipv6]:port or a unix socket path", address);
      return FALSE;
    }
    host = g_strndup (address, (gsize) (colon - address));
    port = colon + 1;
  }
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  rc = getaddrinfo (*host ? host : NULL, port, &hints, &res);
  if (rc != 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"%s\": %s", address,
                 gai_strerror (rc));
    return FALSE;
  }
  memcpy (ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo (res);
  return TRUE;
}

/* A socket file left by a previous run would make bind fail; anything else at that path is
 * not ours to remove. */
static gboolean
evd_listener_clear_unix_path (const char *path, GError **error)
{
  struct stat st;

  if (lstat (path, &st) != 0)
    return TRUE;
  if (!S_ISSOCK (st.st_mode)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "%s exists and is not a socket", path);
    return FALSE;
  }
  unlink (path);
  return TRUE;
}

static gboolean
evd_listener_parse (const char *address, struct sockaddr_storage *ss, socklen_t *len,
                    char **unix_path, GError **error)
{
  const char *path = g_str_has_prefix (address, "unix:") ? address + 5
                     : address[0] == '/' ? address : NULL;
  struct sockaddr_un *un = (struct sockaddr_un *) ss;

  if (path == NULL)
    return evd_listener_parse_inet (address, ss, len, error);
  if (strlen (path) >= sizeof un->sun_path) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "unix socket path \"%s\" is too long", path);
    return FALSE;
  }
  if (!evd_listener_clear_unix_path (path, error))
    return FALSE;
  memset (un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  strcpy (un->sun_path, path);
  *len = sizeof *un;
  *unix_path = g_strdup (path);
  return TRUE;
}

static EvdListener *
evd_listener_wrap (struct evconnlistener *lev, struct event_base *base,
                   EvdAcceptFunc accept_fn, gpointer data)
{
  EvdListener *l = g_new0 (EvdListener, 1);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char buf[128];

  l->lev = lev;
  l->accept_fn = accept_fn;
  l->data = data;
  getsockname (evconnlistener_get_fd (lev), (struct sockaddr *) &ss, &len);
  evd_conn_format_addr ((struct sockaddr *) &ss, len, buf, sizeof buf);
  l->address = g_strdup (buf);
  evconnlistener_set_cb (lev, evd_listener_on_accept, l);
  l->guard = evd_listener_guard_new (base, lev, l->address);
  return l;
}

EvdListener *
evd_listener_new (struct event_base *base, const char *address, gboolean reuse_port,
                  EvdAcceptFunc accept_fn, gpointer data, GError **error)
{
  struct sockaddr_storage ss;
  socklen_t len = 0;
  g_autofree char *unix_path = NULL;
  struct evconnlistener *lev;
  EvdListener *l;

  if (!evd_listener_parse (address, &ss, &len, &unix_path, error))
    return NULL;
  lev = evconnlistener_new_bind (base, NULL, NULL,
                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                 LEV_OPT_REUSEABLE | LEV_OPT_DISABLED |
                                 (reuse_port ? LEV_OPT_REUSEABLE_PORT : 0),
                                 EVD_LISTEN_BACKLOG, (struct sockaddr *) &ss, (int) len);
  if (lev == NULL) {
    int err = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "cannot listen on %s: %s",
                 address, g_strerror (err));
    return NULL;
  }
  l = evd_listener_wrap (lev, base, accept_fn, data);
  l->unix_path = g_steal_pointer (&unix_path);
  evconnlistener_enable (lev);
  return l;
}

EvdListener *
evd_listener_new_from_fd (struct event_base *base, evutil_socket_t fd, EvdAcceptFunc accept_fn,
                          gpointer data, GError **error)
{
  struct evconnlistener *lev;
  EvdListener *l;

  evutil_make_socket_nonblocking (fd);
  lev = evconnlistener_new (base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_DISABLED, -1, fd);
  if (lev == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot accept on descriptor %d", fd);
    return NULL;
  }
  l = evd_listener_wrap (lev, base, accept_fn, data);
  evconnlistener_enable (lev);
  return l;
}

evutil_socket_t
evd_listener_bind (const char *address, gboolean reuse_port, char **bound, GError **error)
{
  struct sockaddr_storage ss;
  socklen_t len = 0;
  g_autofree char *unix_path = NULL;
  evutil_socket_t fd;
  int err;
  char buf[128];

  if (!evd_listener_parse (address, &ss, &len, &unix_path, error))
    return -1;
  fd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0 && (evutil_make_listen_socket_reuseable (fd) < 0 ||
                  (reuse_port && evutil_make_listen_socket_reuseable_port (fd) < 0) ||
                  bind (fd, (struct sockaddr *) &ss, len) < 0 ||
                  listen (fd, EVD_LISTEN_BACKLOG) < 0)) {
    err = errno;
    close (fd);
    errno = err;
    fd = -1;
  }
  if (fd < 0) {
    err = errno;
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "cannot listen on %s: %s",
                 address, g_strerror (err));
    return -1;
  }
  len = sizeof ss;
  getsockname (fd, (struct sockaddr *) &ss, &len);
  evd_conn_format_addr ((struct sockaddr *) &ss, len, buf, sizeof buf);
  *bound = g_strdup (buf);
  return fd;
}

const char *
evd_listener_address (EvdListener *l)
{
  return l->address;
}

guint
evd_listener_close_draining (EvdListener *l)
{
  evutil_socket_t lfd;
  guint taken = 0;

  if (l == NULL)
    return 0;
  lfd = evconnlistener_get_fd (l->lev);
  evconnlistener_disable (l->lev);
  for (;;) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4 (lfd, (struct sockaddr *) &ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      break;  /* EAGAIN: the backlog is empty; anything else: nothing more to take */
    }
    l->accept_fn (fd, (struct sockaddr *) &ss, (int) len, l->data);
    taken++;
  }
  evd_listener_free (l);
  return taken;
}

void
evd_listener_free (EvdListener *l)
{
  if (l == NULL)
    return;
  evconnlistener_free (l->lev);
  evd_listener_guard_free (l->guard);
  if (l->unix_path != NULL)
    unlink (l->unix_path);
  g_free (l->unix_path);
  g_free (l->address);
  g_free (l);
}

/* evd_listener: the listening socket: parses `listen =` addresses, binds, accepts.
 *
 * Addresses are "host:port" (IPv4 or a name), "[v6addr]:port", or a unix socket path
 * ("/run/evdal.sock" or "unix:/run/evdal.sock"). Port 0 binds an ephemeral port;
 * evd_listener_address() gives the address really bound. Accepting runs on the loop the
 * listener was made on; every accepted socket goes to the accept function, which hands it to
 * an IO loop. Failing accepts (out of descriptors) pause accepting briefly instead of spinning.
 */
#pragma once

#include <event2/event.h>
#include <event2/listener.h>
#include <glib.h>
#include <sys/socket.h>

G_BEGIN_DECLS

typedef struct _EvdListener EvdListener;
typedef void (*EvdAcceptFunc) (evutil_socket_t fd, struct sockaddr *addr, int addr_len,
                               gpointer data);

/* `reuse_port` sets SO_REUSEPORT, so that a new evdal can bind the same address while this one
 * drains (a rolling restart); the kernel spreads new connections over both. */
EvdListener *evd_listener_new (struct event_base *base, const char *address, gboolean reuse_port,
                               EvdAcceptFunc accept_fn, gpointer data, GError **error);
/* Makes a listener from a socket that is already listening (inherited, e.g. systemd). */
EvdListener *evd_listener_new_from_fd (struct event_base *base, evutil_socket_t fd,
                                       EvdAcceptFunc accept_fn, gpointer data, GError **error);
/* A listening socket on `address` for another acceptor (the admin's evhttp); `bound` gets
 * the address really bound. -1 on failure. */
evutil_socket_t evd_listener_bind (const char *address, gboolean reuse_port, char **bound,
                                   GError **error);
const char *evd_listener_address (EvdListener *l);

/* What makes a listener pause rather than spin when accept() fails (out of descriptors: the
 * connection stays pending, and a level-triggered listener would fail again at once), and
 * rate-limits the warning. Every EvdListener has one; the admin's evhttp listener gets its
 * own. On the main loop; free it after the listener. */
typedef struct _EvdListenerGuard EvdListenerGuard;
EvdListenerGuard *evd_listener_guard_new (struct event_base *base, struct evconnlistener *lev,
                                          const char *address);
void evd_listener_guard_free (EvdListenerGuard *g);
/* Stops accepting and closes the socket (removing a unix socket file it created). */
void evd_listener_free (EvdListener *l);
/* The same, after accepting (and handing to the accept function) every connection already
 * queued in the socket's backlog: Linux resets the queued connections of a listener that
 * closes, and those clients did nothing wrong. Returns how many were taken. */
guint evd_listener_close_draining (EvdListener *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdListener, evd_listener_free)

G_END_DECLS

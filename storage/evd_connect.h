/* evd_connect: a TCP connection to host:port made on a loop without blocking it, trying every
 * address the name has in turn, as the client libraries users know do (hiredis's own connect,
 * libpq, curl). libevent 2.1's bufferevent_socket_connect_hostname resolves the name and then
 * connects to its first address only, so a name listing an address nobody serves first
 * (`localhost` as ::1 with a server on 127.0.0.1 only) never connected. The Redis client and the
 * Thrift upstream backend connect through this and make their bufferevent on the socket it
 * hands over. */
#pragma once

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <glib.h>

G_BEGIN_DECLS

#define EVD_CONNECT_ERROR (evd_connect_error_quark ())
GQuark evd_connect_error_quark (void);

typedef enum {
  EVD_CONNECT_ERROR_RESOLVE,    /* the name has no address (or the resolver timed out) */
  EVD_CONNECT_ERROR_CONNECT,    /* no address took the connection; the message names each */
} EvdConnectError;

typedef struct _EvdConnect EvdConnect;

/* Exactly one of: `fd` >= 0 (connected; non-blocking, close-on-exec, now the callback's to
 * close) and `error` NULL, or `fd` -1 and `error`. The attempt is over when it runs (its
 * handle is already freed). */
typedef void (*EvdConnectDone) (gpointer data, evutil_socket_t fd, const GError *error);

/* The life of an attempt. It starts here: a numeric host is used as it is, a name is resolved
 * with evdns_getaddrinfo on `dns` (its hosts entries, then DNS; `dns` may be NULL for a numeric
 * host). Then each address in the resolver's order: a non-blocking socket, connect(), wait
 * until writable, SO_ERROR; on refusal, any other error, or when the address's share of what
 * is left of `timeout_ms` runs out (what is left, divided by the addresses not yet tried), the
 * next one. `done` runs exactly once, on `base`'s thread from one of its callbacks, never
 * inside this function; with every address refused its message is
 * "cannot connect to HOST:PORT: 127.0.0.2:6379 refused, [::1]:6379 refused".
 * `timeout_ms` bounds the whole attempt, resolution included (0: none; each address waits
 * for the kernel to give up).
 *
 * evd_connect_cancel ends it at any time before `done` ran: `done` never runs, the socket is
 * closed. A lookup still in flight is left to finish on its own and is freed when evdns answers
 * (or fails it, when `dns` is freed with evd_dns_free (dns, TRUE): the owners of a resolver with
 * attempts on it free it so). It is not cancelled with evdns_getaddrinfo_cancel: libevent 2.1
 * answers a cancelled lookup later, from a deferred callback that locks the evdns_base, which
 * the caller may have freed by then. */
EvdConnect *evd_connect_start (struct event_base *base, struct evdns_base *dns, const char *host,
                               int port, guint timeout_ms, EvdConnectDone done, gpointer data);
void evd_connect_cancel (EvdConnect *attempt);

G_END_DECLS

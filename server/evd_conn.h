/* evd_conn: one client connection: its socket, the wire format it speaks, the requests it has
 * in flight, and the replies it is owed, in order.
 *
 * A connection lives on one loop and is touched by that loop's thread only. Bytes arrive in a
 * bufferevent; the first ones fix the wire format (evd_wire_detect); each whole message is
 * validated (evd_wire) and becomes an EvdCall queued in arrival order. Calls complete in any
 * order, their replies leave in request order. Limits keep one client from hurting others:
 * a bounded number of messages per read callback, no reading while too many calls are in
 * flight or too many reply bytes are unsent, a read timeout for half-sent requests and an
 * idle timeout. Framing errors close the connection with a log line naming the peer.
 *
 * An EvdConnHost is what the connections of one loop share: the service, the limits, the
 * process-wide connection counter, and the list used to drain them at shutdown.
 */
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include "evd_config.h"
#include "evd_log.h"
#include "evd_loop.h"
#include "evd_rpc.h"
#include "evd_tls.h"

G_BEGIN_DECLS

typedef struct _EvdConn EvdConn;

typedef struct {
  EvdLoop *loop;
  const EvdService *service;
  const EvdServerConfig *config;
  struct timeval write_timeout;  /* config->write_timeout_ms, as libevent wants it */
  EvdTls *tls;                   /* NULL: plain TCP */
  gint *n_connections;       /* all loops' connections, atomic */
  GQueue conns;              /* this loop's connections (EvdConn *) */
  GQueue unflushed;          /* connections with replies to send when this loop pass ends */
  gboolean draining;
  gboolean drained;          /* on_drained has run */
  EvdLogLimit log_limit;
  /* Called (on the loop) when a draining host has no connection left. */
  EvdLoopFunc on_drained;
  gpointer on_drained_data;
} EvdConnHost;

/* Takes over an accepted socket (on the host's loop). The caller has already counted it in
 * *host->n_connections; the connection uncounts it when it closes. */
void evd_conn_new (EvdConnHost *host, evutil_socket_t fd, const struct sockaddr *addr,
                   socklen_t addr_len);

/* Shutdown, step one: read no new requests, close idle connections now and the others once
 * their replies are out. host->on_drained runs when the last one closes. */
void evd_conn_host_drain (EvdConnHost *host);
/* Shutdown, step two (the grace period is over): close every connection now, cancelling
 * what is still in flight. */
void evd_conn_host_close_all (EvdConnHost *host);

/* Formats a socket address as "127.0.0.1:9090", "[::1]:9090" or "unix:/path". */
void evd_conn_format_addr (const struct sockaddr *addr, socklen_t len, char *out, gsize size);

G_END_DECLS

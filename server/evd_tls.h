/* evd_tls: optional TLS on the Thrift port (OpenSSL, through libevent's bufferevent_openssl).
 *
 *   [server]
 *   tls_cert = /etc/evdal/server.pem       # certificate chain (PEM)
 *   tls_key = /etc/evdal/server.key        # its private key (PEM)
 *   tls_client_ca = /etc/evdal/clients.pem # optional: require client certificates (mutual TLS)
 *
 * One SSL_CTX for the process, built at start-up: a missing or mismatched file stops start-up
 * with its name and OpenSSL's reason. Each accepted connection gets its own SSL object and
 * a bufferevent that decrypts, so everything above (detection, framing, replies) is unchanged.
 */
#pragma once

#include <event2/bufferevent.h>

#include "evd_config.h"

G_BEGIN_DECLS

typedef struct _EvdTls EvdTls;

/* NULL without error when TLS is not configured. Problems go into cfg (evd_config_check). */
EvdTls *evd_tls_new (EvdConfig *cfg);
void evd_tls_free (EvdTls *tls);

/* A bufferevent that accepts a TLS session on `fd` (and closes it when freed). */
struct bufferevent *evd_tls_accept (EvdTls *tls, struct event_base *base, evutil_socket_t fd);

/* Whether the session holds bytes read from the socket that do not decrypt yet: part of a
 * record, which a client that stalls half-way through a request leaves there. */
gboolean evd_tls_has_partial (struct bufferevent *bev);

G_END_DECLS

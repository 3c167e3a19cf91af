/* evd_tls: TLS contexts and accepting TLS sessions (see evd_tls.h). */
#include "evd_tls.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct _EvdTls {
  SSL_CTX *ctx;
};

static const char *
evd_tls_reason (void)
{
  unsigned long e = ERR_get_error ();
  const char *r = e ? ERR_reason_error_string (e) : NULL;

  ERR_clear_error ();
  return r ? r : "unknown OpenSSL error";
}

static gboolean
evd_tls_load (EvdConfig *cfg, SSL_CTX *ctx, const char *cert, const char *key, const char *ca)
{
  if (SSL_CTX_use_certificate_chain_file (ctx, cert) != 1) {
    evd_config_problem (cfg, "server", "tls_cert", "%s: %s", cert, evd_tls_reason ());
    return FALSE;
  }
  if (SSL_CTX_use_PrivateKey_file (ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key (ctx) != 1) {
    evd_config_problem (cfg, "server", "tls_key", "%s: %s", key, evd_tls_reason ());
    return FALSE;
  }
  if (ca != NULL) {
    if (SSL_CTX_load_verify_locations (ctx, ca, NULL) != 1) {
      evd_config_problem (cfg, "server", "tls_client_ca", "%s: %s", ca, evd_tls_reason ());
      return FALSE;
    }
    SSL_CTX_set_verify (ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  return TRUE;
}

EvdTls *
evd_tls_new (EvdConfig *cfg)
{
  g_autofree char *cert = evd_config_string (cfg, "server", "tls_cert", NULL);
  g_autofree char *key = evd_config_string (cfg, "server", "tls_key", NULL);
  g_autofree char *ca = evd_config_string (cfg, "server", "tls_client_ca", NULL);
  g_autofree char *cert_path = NULL, *key_path = NULL, *ca_path = NULL;
  EvdTls *tls;

  if (cert == NULL && key == NULL && ca == NULL)
    return NULL;
  if (cert == NULL || key == NULL) {
    evd_config_problem (cfg, "server", cert ? "tls_key" : "tls_cert",
                        "TLS needs both tls_cert and tls_key");
    return NULL;
  }
  cert_path = evd_config_resolve_path (cfg, cert);
  key_path = evd_config_resolve_path (cfg, key);
  ca_path = ca ? evd_config_resolve_path (cfg, ca) : NULL;
  tls = g_new0 (EvdTls, 1);
  tls->ctx = SSL_CTX_new (TLS_server_method ());
  SSL_CTX_set_min_proto_version (tls->ctx, TLS1_2_VERSION);
  if (!evd_tls_load (cfg, tls->ctx, cert_path, key_path, ca_path)) {
    evd_tls_free (tls);
    return NULL;
  }
  return tls;
}

void
evd_tls_free (EvdTls *tls)
{
  if (tls == NULL)
    return;
  SSL_CTX_free (tls->ctx);
  g_free (tls);
}

gboolean
evd_tls_has_partial (struct bufferevent *bev)
{
  SSL *ssl = bufferevent_openssl_get_ssl (bev);

  return ssl != NULL && SSL_has_pending (ssl) == 1;
}

struct bufferevent *
evd_tls_accept (EvdTls *tls, struct event_base *base, evutil_socket_t fd)
{
  SSL *ssl = SSL_new (tls->ctx);

  return bufferevent_openssl_socket_new (base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
}

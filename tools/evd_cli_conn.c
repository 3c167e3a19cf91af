/* evd_cli_conn: evdal-cli's connection and the exit codes of failures (see evd_cli_conn.h). */
#include "evd_cli_conn.h"

#include <signal.h>
#include <string.h>
#include <sys/time.h>

#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>
#include <thrift/c_glib/protocol/thrift_multiplexed_protocol.h>
#include <thrift/c_glib/transport/thrift_buffered_transport.h>
#include <thrift/c_glib/transport/thrift_framed_transport.h>
#include <thrift/c_glib/transport/thrift_socket.h>

/* After the budget, the timer fires this often, until the blocked call gives up. */
#define EVD_CLI_CONN_REFIRE_US 20000

struct _EvdCliConn {
  ThriftTransport *socket;
  ThriftTransport *transport;    /* framed or buffered, over socket */
  ThriftProtocol *protocol;      /* binary or compact, over transport */
  ThriftProtocol *mux;           /* TMultiplexedProtocol over protocol, or NULL */
  evdalDataAccessIf *client;
  int timeout_ms;
  gboolean armed;
};

static volatile sig_atomic_t evd_cli_conn_expired;

G_DEFINE_QUARK (evd-cli-conn-error-quark, evd_cli_conn_error)

static void
evd_cli_conn_on_alarm (int sig)
{
  (void) sig;
  evd_cli_conn_expired = 1;
}

static void
evd_cli_conn_arm (EvdCliConn *c)
{
  struct sigaction sa;
  struct itimerval it = { { 0, EVD_CLI_CONN_REFIRE_US },
                          { c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000 } };

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = evd_cli_conn_on_alarm;
  sigemptyset (&sa.sa_mask);
  sa.sa_flags = 0;  /* no SA_RESTART: the blocked connect or recv must fail with EINTR */
  sigaction (SIGALRM, &sa, NULL);
  evd_cli_conn_expired = 0;
  setitimer (ITIMER_REAL, &it, NULL);
  c->armed = TRUE;
}

static void
evd_cli_conn_disarm (EvdCliConn *c)
{
  struct itimerval off = { { 0, 0 }, { 0, 0 } };

  if (!c->armed)
    return;
  setitimer (ITIMER_REAL, &off, NULL);
  signal (SIGALRM, SIG_IGN);  /* one already on its way must not kill the process */
  c->armed = FALSE;
}

/* After a failure: if the budget ran out meanwhile, that is the reason, whatever the system
 * call that was interrupted made c_glib say. */
static gboolean
evd_cli_conn_failed (EvdCliConn *c, GError **error, const char *what)
{
  if (evd_cli_conn_expired && (error == NULL || *error == NULL ||
                               (*error)->domain == THRIFT_TRANSPORT_ERROR ||
                               (*error)->domain == THRIFT_PROTOCOL_ERROR)) {
    g_clear_error (error);
    g_set_error (error, EVD_CLI_CONN_ERROR, EVD_CLI_CONN_ERROR_TIMEOUT,
                 "%s: no answer within %d ms (--timeout-ms)", what, c->timeout_ms);
  } else if (error != NULL && *error == NULL) {
    /* c_glib sometimes fails without saying why. */
    g_set_error (error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE,
                 "%s: the connection failed", what);
  } else if (error != NULL && ((*error)->domain == THRIFT_TRANSPORT_ERROR ||
             (*error)->domain == THRIFT_PROTOCOL_ERROR)) {
    /* c_glib's messages say what broke, not during what ("Recived an oversized frame,"); a
     * failed read is mostly the peer hanging up, which c_glib words "... - Success". */
    if ((*error)->domain == THRIFT_TRANSPORT_ERROR &&
        (*error)->code == THRIFT_TRANSPORT_ERROR_RECEIVE)
      g_prefix_error (error, "%s: no valid reply, the connection closed or failed: ", what);
    else
      g_prefix_error (error, "%s: no valid reply: ", what);
  }
  return FALSE;
}

/* A call returned: the budget ends here, before anything is printed, since a write to a slow
 * pipe must not be cut short by the timer. */
static gboolean
evd_cli_conn_done (EvdCliConn *c, gboolean ok, GError **error, const char *what)
{
  evd_cli_conn_disarm (c);
  return ok || evd_cli_conn_failed (c, error, what);
}

EvdCliConn *
evd_cli_conn_open (const EvdCliConnOptions *o, GError **error)
{
  g_autoptr (EvdCliConn) c = g_new0 (EvdCliConn, 1);
  g_autofree char *where = o->unix_path ? g_strdup (o->unix_path)
                                        : g_strdup_printf ("%s:%d", o->host, o->port);

  if (o->unix_path == NULL && strchr (o->host, ':') != NULL) {
    g_set_error (error, EVD_CLI_CONN_ERROR, EVD_CLI_CONN_ERROR_ADDRESS,
                 "%s: c_glib 0.17's ThriftSocket speaks IPv4 only (or use --unix)", o->host);
    return NULL;
  }
  if (o->unix_path != NULL)
    c->socket = g_object_new (THRIFT_TYPE_SOCKET, "path", o->unix_path, NULL);
  else
    c->socket = g_object_new (THRIFT_TYPE_SOCKET, "hostname", o->host, "port", (guint) o->port,
                              NULL);
  /* Transports, protocols and the client keep plain pointers to what they wrap (c_glib takes
   * no references), so this struct owns every layer and frees them top down. */
  c->transport = g_object_new (o->buffered ? THRIFT_TYPE_BUFFERED_TRANSPORT
                                           : THRIFT_TYPE_FRAMED_TRANSPORT,
                               "transport", c->socket, NULL);
  c->protocol = g_object_new (o->compact ? THRIFT_TYPE_COMPACT_PROTOCOL
                                         : THRIFT_TYPE_BINARY_PROTOCOL,
                              "transport", c->transport, NULL);
  if (o->service != NULL)
    /* "protocol" is a plain pointer that the decorator of c_glib 0.17 neither references
     * nor releases (newer sources unref it in dispose: check before upgrading). */
    c->mux = g_object_new (THRIFT_TYPE_MULTIPLEXED_PROTOCOL, "transport", c->transport,
                           "protocol", c->protocol, "service-name", o->service, NULL);
  c->client = g_object_new (EVDAL_TYPE_DATA_ACCESS_CLIENT,
                            "input_protocol", c->mux ? c->mux : c->protocol,
                            "output_protocol", c->mux ? c->mux : c->protocol, NULL);
  c->timeout_ms = o->timeout_ms;
  if (c->timeout_ms > 0)
    evd_cli_conn_arm (c);
  if (!thrift_transport_open (c->transport, error)) {
    if (evd_cli_conn_expired) {
      g_clear_error (error);
      g_set_error (error, EVD_CLI_CONN_ERROR, EVD_CLI_CONN_ERROR_TIMEOUT,
                   "no connection within %d ms (--timeout-ms)", c->timeout_ms);
    }
    g_prefix_error (error, "cannot connect to %s: ", where);
    return NULL;
  }
  return g_steal_pointer (&c);
}

void
evd_cli_conn_close (EvdCliConn *c)
{
  if (c == NULL)
    return;
  evd_cli_conn_disarm (c);
  if (c->transport != NULL && thrift_transport_is_open (c->transport))
    thrift_transport_close (c->transport, NULL);
  g_clear_object (&c->client);
  g_clear_object (&c->mux);
  g_clear_object (&c->protocol);
  g_clear_object (&c->transport);
  g_clear_object (&c->socket);
  g_free (c);
}

gboolean
evd_cli_conn_ping (EvdCliConn *c, char **pong, GError **error)
{
  gboolean ok = evdal_data_access_if_ping (c->client, pong, error);

  return evd_cli_conn_done (c, ok, error, "ping");
}

gboolean
evd_cli_conn_lookups (EvdCliConn *c, GPtrArray *infos, GError **error)
{
  gboolean ok = evdal_data_access_if_lookups (c->client, &infos, error);

  return evd_cli_conn_done (c, ok, error, "lookups");
}

gboolean
evd_cli_conn_fetch (EvdCliConn *c, const evdalFetchRequest *request,
                    evdalFetchResponse *response, evdalInvalidRequest **invalid,
                    evdalLookupFailed **failed, evdalOverloaded **overloaded, GError **error)
{
  gboolean ok = evdal_data_access_if_fetch (c->client, &response, request, invalid, failed,
                                            overloaded, error);

  if (!ok && (*invalid != NULL || *failed != NULL || *overloaded != NULL)) {
    evd_cli_conn_disarm (c);
    return FALSE;  /* an answer, not a failure to get one */
  }
  return evd_cli_conn_done (c, ok, error, "fetch");
}

EvdCliExit
evd_cli_conn_exit_code (const GError *error)
{
  if (error->domain == EVDAL_INVALID_REQUEST_ERROR || error->domain == EVDAL_LOOKUP_FAILED_ERROR ||
      error->domain == EVDAL_OVERLOADED_ERROR)
    return EVD_CLI_EXIT_EXCEPTION;
  /* The generated client uses this domain both for a TApplicationException the server sent
   * (its message then starts so) and for a reply it finds wrong itself (wrong method name,
   * not a reply): the latter is a garbled stream, a transport matter. */
  if (error->domain == THRIFT_APPLICATION_EXCEPTION_ERROR &&
      g_str_has_prefix (error->message, "application error: "))
    return EVD_CLI_EXIT_APPLICATION;
  return EVD_CLI_EXIT_TRANSPORT;
}

const char *
evd_cli_conn_application_error_name (int code)
{
  static const char *const names[] = {
    "UNKNOWN", "UNKNOWN_METHOD", "INVALID_MESSAGE_TYPE", "WRONG_METHOD_NAME", "BAD_SEQUENCE_ID",
    "MISSING_RESULT", "INTERNAL_ERROR", "PROTOCOL_ERROR", "INVALID_TRANSFORM", "INVALID_PROTOCOL",
    "UNSUPPORTED_CLIENT_TYPE",
  };

  return code >= 0 && (gsize) code < G_N_ELEMENTS (names) ? names[code] : "UNKNOWN";
}

const char *
evd_cli_conn_error_kind_name (int kind)
{
  static const char *const names[] = {
    NULL, "UNKNOWN_LOOKUP", "BAD_PARAMS", "TIMEOUT", "BACKEND", "OVERLOADED", "CANCELLED",
  };
  /* A newer server may send a kind this client was not built with; show it, do not hide it. */
  static char other[24];

  if (kind > 0 && (gsize) kind < G_N_ELEMENTS (names))
    return names[kind];
  g_snprintf (other, sizeof other, "KIND_%d", kind);
  return other;
}

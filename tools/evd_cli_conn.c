/* evd_cli_conn: evdal-cli's connection and the exit codes of failures (see evd_cli_conn.h). */
#include "evd_cli_conn.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>
#include <thrift/c_glib/protocol/thrift_multiplexed_protocol.h>
#include <thrift/c_glib/transport/thrift_buffered_transport.h>
#include <thrift/c_glib/transport/thrift_framed_transport.h>
#include <thrift/c_glib/transport/thrift_socket.h>

#include "evd_transport.h"
#include "evd_wire.h"

/* After the budget, the timer fires this often, until the blocked call gives up. */
#define EVD_CLI_CONN_REFIRE_US 20000
/* The longest reply read. It grows as bytes arrive, never to a declared length at once. */
#define EVD_CLI_CONN_REPLY_MAX (1 << 30)
#define EVD_CLI_CONN_READ_CHUNK (64 * 1024)

/* Requests go out through c_glib's client, transports and socket. Replies do not come back
 * through them: c_glib's readers trust the bytes (its skip recurses without limit, so a reply
 * with an unknown field nested 100,000 lists deep overflowed the stack), so a reply is read
 * from the socket here, walked with the server's bounded validation (evd_wire: lengths
 * against the bytes present, nesting at most EVD_WIRE_MAX_DEPTH), and only then decoded by
 * c_glib from memory (EvdTransport). */
struct _EvdCliConn {
  ThriftTransport *socket;
  ThriftTransport *transport;    /* framed or buffered, over socket */
  ThriftProtocol *protocol;      /* binary or compact, over transport */
  ThriftProtocol *mux;           /* TMultiplexedProtocol over protocol, or NULL */
  evdalDataAccessIf *client;
  EvdTransport *reply_in;        /* the validated reply, in memory */
  ThriftProtocol *reply_protocol; /* over reply_in: the client's input protocol */
  GByteArray *reply;
  gboolean framed, compact;
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

/* ---- Strings with NUL bytes. ----
 *
 * c_glib decodes a string into a C string and drops its length, so a text value holding
 * U+0000 was printed cut at it. The reply protocol reads strings as binaries and writes each
 * NUL as the two bytes C0 80 (the "modified UTF-8" of Java's DataInput): never valid UTF-8,
 * so never in a text the server sent (it sends text as UTF-8), and evd_cli_value_visible and
 * the JSON writer show it as an escaped U+0000. */
static gint32
evd_cli_conn_read_string (ThriftProtocol *p, gchar **str, GError **error)
{
  gpointer buf = NULL;
  guint32 len = 0, nuls = 0;
  gint32 r = thrift_protocol_read_binary (p, &buf, &len, error);
  const guint8 *in = buf;
  char *out;

  if (r < 0)
    return r;
  for (guint32 i = 0; i < len; i++)
    nuls += in[i] == 0;
  *str = out = g_malloc ((gsize) len + nuls + 1);
  for (guint32 i = 0; i < len; i++) {
    if (in[i] == 0) {
      *out++ = (char) 0xc0;
      *out++ = (char) 0x80;
    } else {
      *out++ = (char) in[i];
    }
  }
  *out = '\0';
  g_free (buf);
  return r;
}

static void
evd_cli_conn_protocol_class_init (gpointer klass, gpointer data)
{
  (void) data;
  THRIFT_PROTOCOL_CLASS (klass)->read_string = evd_cli_conn_read_string;
}

/* c_glib's binary or compact protocol, reading strings as above. */
static GType
evd_cli_conn_protocol_type (gboolean compact)
{
  static GType types[2];

  if (types[compact] == 0) {
    GType parent = compact ? THRIFT_TYPE_COMPACT_PROTOCOL : THRIFT_TYPE_BINARY_PROTOCOL;
    GTypeQuery q;

    g_type_query (parent, &q);
    types[compact] = g_type_register_static_simple (
      parent, compact ? "EvdCliCompactProtocol" : "EvdCliBinaryProtocol", q.class_size,
      evd_cli_conn_protocol_class_init, q.instance_size, NULL, 0);
  }
  return types[compact];
}

/* Reads up to n bytes (at least one) into c->reply, growing it; FALSE on EOF or an error. */
static gboolean
evd_cli_conn_read_some (EvdCliConn *c, gsize n, GError **error)
{
  int fd = THRIFT_SOCKET (c->socket)->sd;
  guint old = c->reply->len;
  ssize_t r;

  g_byte_array_set_size (c->reply, old + (guint) n);
  do
    r = recv (fd, c->reply->data + old, n, 0);
  while (r < 0 && errno == EINTR && !evd_cli_conn_expired);
  g_byte_array_set_size (c->reply, old + (guint) MAX (r, 0));
  if (r > 0)
    return TRUE;
  g_set_error (error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE, "%s",
               r == 0 ? "the server closed the connection" : g_strerror (errno));
  return FALSE;
}

static gboolean
evd_cli_conn_read_exactly (EvdCliConn *c, gsize n, GError **error)
{
  gsize want = c->reply->len + n;

  while (c->reply->len < want)
    if (!evd_cli_conn_read_some (c, MIN (want - c->reply->len, 1 << 20), error))
      return FALSE;
  return TRUE;
}

static gboolean
evd_cli_conn_bad_reply (const EvdWireScanner *scan, EvdWireStatus st, GError **error)
{
  g_set_error (error, THRIFT_PROTOCOL_ERROR, THRIFT_PROTOCOL_ERROR_INVALID_DATA,
               "the reply is malformed: %s", st == EVD_WIRE_NEED_MORE
               ? "it ends before its message does" : scan->reason);
  return FALSE;
}

/* Reads one reply message and validates it; on success the client's input protocol reads it
 * from memory. */
static gboolean
evd_cli_conn_receive (EvdCliConn *c, GError **error)
{
  EvdProto proto = c->compact ? EVD_PROTO_COMPACT : EVD_PROTO_BINARY;
  EvdWireScanner scan;
  EvdWireStatus st;
  const guint8 *msg;

  g_byte_array_set_size (c->reply, 0);
  if (c->framed) {
    gint32 n = 0;
    const char *reason = NULL;

    if (!evd_cli_conn_read_exactly (c, 4, error))
      return FALSE;
    st = evd_wire_frame_length (c->reply->data, 4, EVD_CLI_CONN_REPLY_MAX, &n, &reason);
    if (st != EVD_WIRE_OK) {
      g_set_error (error, THRIFT_PROTOCOL_ERROR, THRIFT_PROTOCOL_ERROR_INVALID_DATA,
                   "the reply's frame is wrong: %s (length %d)", reason, n);
      return FALSE;
    }
    if (!evd_cli_conn_read_exactly (c, (gsize) n, error))
      return FALSE;
    msg = c->reply->data + 4;
    evd_wire_scanner_init (&scan, proto, (gsize) n, EVD_WIRE_MAX_DEPTH);
    scan.schema_for = evd_wire_schema_result;
    st = evd_wire_scanner_header (&scan, msg, (gsize) n);
    if (st == EVD_WIRE_OK)
      st = evd_wire_scanner_frame (&scan, msg, (gsize) n);
    if (st != EVD_WIRE_OK)
      return evd_cli_conn_bad_reply (&scan, st, error);
  } else {
    evd_wire_scanner_init (&scan, proto, EVD_CLI_CONN_REPLY_MAX, EVD_WIRE_MAX_DEPTH);
    scan.schema_for = evd_wire_schema_result;
    do {
      if (!evd_cli_conn_read_some (c, EVD_CLI_CONN_READ_CHUNK, error))
        return FALSE;
      st = evd_wire_scanner_feed (&scan, c->reply->data, c->reply->len);
    } while (st == EVD_WIRE_NEED_MORE);
    if (st != EVD_WIRE_OK)
      return evd_cli_conn_bad_reply (&scan, st, error);
    msg = c->reply->data;
  }
  evd_transport_set_input (c->reply_in, msg, scan.msg_len);
  return TRUE;
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
  c->framed = !o->buffered;
  c->compact = o->compact;
  c->reply = g_byte_array_new ();
  c->reply_in = evd_transport_new ();
  c->reply_protocol = g_object_new (evd_cli_conn_protocol_type (o->compact),
                                    "transport", c->reply_in, NULL);
  c->client = g_object_new (EVDAL_TYPE_DATA_ACCESS_CLIENT,
                            "input_protocol", c->reply_protocol,
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
  g_clear_object (&c->reply_protocol);
  g_clear_object (&c->reply_in);
  g_clear_pointer (&c->reply, g_byte_array_unref);
  g_clear_object (&c->mux);
  g_clear_object (&c->protocol);
  g_clear_object (&c->transport);
  g_clear_object (&c->socket);
  g_free (c);
}

gboolean
evd_cli_conn_ping (EvdCliConn *c, char **pong, GError **error)
{
  gboolean ok = evdal_data_access_client_send_ping (c->client, error) &&
                evd_cli_conn_receive (c, error) &&
                evdal_data_access_client_recv_ping (c->client, pong, error);

  return evd_cli_conn_done (c, ok, error, "ping");
}

gboolean
evd_cli_conn_lookups (EvdCliConn *c, GPtrArray *infos, GError **error)
{
  gboolean ok = evdal_data_access_client_send_lookups (c->client, error) &&
                evd_cli_conn_receive (c, error) &&
                evdal_data_access_client_recv_lookups (c->client, &infos, error);

  return evd_cli_conn_done (c, ok, error, "lookups");
}

gboolean
evd_cli_conn_fetch (EvdCliConn *c, const evdalFetchRequest *request,
                    evdalFetchResponse *response, evdalInvalidRequest **invalid,
                    evdalLookupFailed **failed, evdalOverloaded **overloaded, GError **error)
{
  gboolean ok = evdal_data_access_client_send_fetch (c->client, request, error) &&
                evd_cli_conn_receive (c, error) &&
                evdal_data_access_client_recv_fetch (c->client, &response, invalid, failed,
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

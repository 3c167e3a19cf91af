/* evd_cli_conn: evdal-cli's connection: the generated c_glib client on a ThriftSocket (TCP or
 * unix path), framed or buffered, binary or compact, optionally multiplexed, with one time
 * budget over connecting and the whole call; and what each way of failing means as an exit
 * code.
 *
 * c_glib 0.17's ThriftSocket has no timeouts at all (a blocking connect and recv), so the
 * budget is a SIGALRM interval timer without SA_RESTART: when it fires, the blocking system
 * call fails with EINTR and c_glib reports a transport error, which is then told apart as a
 * timeout. The timer keeps firing every few milliseconds after the budget, so a signal that
 * lands between two system calls cannot let the next one block forever. evdal-cli has one
 * thread, so the signal always interrupts the call that waits. */
#pragma once

#include <glib.h>

#include "evd_thrift.h"

G_BEGIN_DECLS

/* The exit codes of evdal-cli, which scripts rely on: never renumber them. */
typedef enum {
  EVD_CLI_EXIT_OK = 0,           /* every call succeeded */
  EVD_CLI_EXIT_CALL_ERROR = 1,   /* some call came back with an error result */
  EVD_CLI_EXIT_USAGE = 2,        /* the command line is wrong */
  EVD_CLI_EXIT_TRANSPORT = 3,    /* no connection, a broken or garbled reply, or the timeout */
  EVD_CLI_EXIT_EXCEPTION = 4,    /* the server raised a declared exception of the IDL */
  EVD_CLI_EXIT_APPLICATION = 5,  /* the server answered with a TApplicationException */
} EvdCliExit;

#define EVD_CLI_CONN_ERROR (evd_cli_conn_error_quark ())
GQuark evd_cli_conn_error_quark (void);

typedef enum {
  EVD_CLI_CONN_ERROR_TIMEOUT,    /* the budget ran out */
  EVD_CLI_CONN_ERROR_ADDRESS,    /* the options name no usable address */
} EvdCliConnError;

typedef struct {
  const char *host;              /* an IPv4 address or name: c_glib 0.17's socket is IPv4-only */
  int port;
  const char *unix_path;         /* instead of host and port when set */
  gboolean buffered;             /* unframed; default framed */
  gboolean compact;              /* compact protocol; default binary */
  const char *service;           /* TMultiplexedProtocol's service name, or NULL */
  int timeout_ms;                /* the budget of connecting and the call; 0 = none */
} EvdCliConnOptions;

typedef struct _EvdCliConn EvdCliConn;

/* Connects. The budget starts here and ends when the first call returns: evdal-cli makes one
 * call per connection. */
EvdCliConn *evd_cli_conn_open (const EvdCliConnOptions *o, GError **error);
void evd_cli_conn_close (EvdCliConn *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdCliConn, evd_cli_conn_close)

/* The IDL's three methods. A transport failure after the budget ran out is turned into
 * EVD_CLI_CONN_ERROR_TIMEOUT; other errors keep c_glib's domains. fetch's declared exceptions
 * come back in their out arguments (and as an error of their generated domain). */
gboolean evd_cli_conn_ping (EvdCliConn *c, char **pong, GError **error);
gboolean evd_cli_conn_lookups (EvdCliConn *c, GPtrArray *infos, GError **error);
gboolean evd_cli_conn_fetch (EvdCliConn *c, const evdalFetchRequest *request,
                             evdalFetchResponse *response, evdalInvalidRequest **invalid,
                             evdalLookupFailed **failed, evdalOverloaded **overloaded,
                             GError **error);

/* The exit code an error of the calls above stands for. */
EvdCliExit evd_cli_conn_exit_code (const GError *error);
/* The TApplicationException's type as the Thrift spec names it ("UNKNOWN_METHOD"...). */
const char *evd_cli_conn_application_error_name (int code);
/* The IDL's ErrorKind as it names it ("TIMEOUT"...), or its number for one it does not know. */
const char *evd_cli_conn_error_kind_name (int kind);

G_END_DECLS

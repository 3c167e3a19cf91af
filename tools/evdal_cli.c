/* evdal-cli: the command-line client of evdal, a database shell for its lookups.
 *
 *   evdal-cli [OPTIONS] ping
 *   evdal-cli [OPTIONS] lookups
 *   evdal-cli [OPTIONS] fetch LOOKUP [NAME=VALUE ...]
 *   evdal-cli [OPTIONS] fetch --call [KEY=]LOOKUP[:NAME=VALUE,...] [--call ...]
 *
 *   evdal-cli fetch user user_id=42
 *   evdal-cli --compact fetch --call u=user:user_id=42 --call recent_orders:user_id=42 --trace
 *
 * It speaks through the c_glib client generated from idl/evdal.thrift, over ThriftSocket (TCP
 * or a unix socket), framed (default) or buffered, binary (default) or compact, multiplexed
 * with --service; the server detects all of them. Tables print like `sqlite3 -box`; --json
 * prints one JSON document instead (evd_cli_json.h has its shape); --trace asks the server
 * for spans and prints a waterfall of the calls after the results.
 *
 * Params are typed Values, guessed from their text as SQL literals read (42 int, 4.2 real,
 * null, x'00ff' blob, anything else text) or forced with NAME:TYPE=VALUE.
 *
 * Exit codes, for scripts (also in --help; evd_cli_conn.h names them):
 *   0  every call succeeded
 *   1  some call came back with an error result (a non-critical call failed)
 *   2  usage: the command line is wrong
 *   3  cannot connect, the connection broke or a reply did not parse, or --timeout-ms ran out
 *   4  the server raised a declared exception: LookupFailed (a critical call failed),
 *      InvalidRequest, Overloaded
 *   5  the server answered with a TApplicationException (e.g. an unknown --service)
 * Messages go to stderr; stdout has only results (with --json, also the exception of 4 and 5).
 *
 * Modules: evd_cli_conn (connection, time budget, exit codes), evd_cli_request (the calls of
 * the command line), evd_cli_value (typed values in and out), evd_cli_print (tables and the
 * waterfall), evd_cli_json (--json).
 */
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "evd_cli_conn.h"
#include "evd_cli_json.h"
#include "evd_cli_print.h"
#include "evd_cli_request.h"
#include "evd_cli_value.h"
#include "evd_thrift.h"

#define EVD_CLI_DEFAULT_TIMEOUT_MS 10000
/* With --deadline-ms the server may legitimately take that long: wait this much longer. */
#define EVD_CLI_DEADLINE_GRACE_MS 2000

G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalInvalidRequest, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalLookupFailed, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalOverloaded, g_object_unref)

typedef struct {
  char *host;
  int port;
  char *unix_path;
  gboolean framed, buffered, binary, compact;
  char *service;
  int timeout_ms;              /* -1 when not given */
  gboolean json, ascii;
  /* fetch */
  char **calls;
  gboolean critical_all;
  GPtrArray *critical_keys;    /* --critical=KEYS, char * */
  int deadline_ms;             /* -1 when not given */
  int call_timeout_ms;         /* -1 when not given */
  char *request_id;
  char *principal;
  char **attrs;
  gboolean trace;
} EvdCliOptions;

static const char evd_cli_summary[] =
  "Commands:\n"
  "  ping                               liveness check; prints pong\n"
  "  lookups                            the lookups the server has, as a table\n"
  "  fetch LOOKUP [NAME=VALUE ...]      one call, its params as NAME=VALUE\n"
  "  fetch --call SPEC [--call SPEC]    several calls at once, each SPEC being\n"
  "                                     [KEY=]LOOKUP[:NAME=VALUE,...] (\\, for a comma)\n"
  "\n"
  "Values are typed as SQL literals read: 42 int, 4.2 real, null, x'00ff' blob,\n"
  "anything else text. NAME:TYPE=VALUE forces int, real, text, blob (hex) or null.";

static const char evd_cli_description[] =
  "Exit codes:\n"
  "  0  every call succeeded\n"
  "  1  some call came back with an error result (a non-critical call failed)\n"
  "  2  usage error\n"
  "  3  cannot connect, transport or protocol error, or --timeout-ms ran out\n"
  "  4  the server raised LookupFailed (a critical call failed), InvalidRequest or\n"
  "     Overloaded\n"
  "  5  the server answered with a TApplicationException\n"
  "Messages go to stderr.\n";

static gboolean
evd_cli_on_critical (const char *name, const char *value, gpointer data, GError **error)
{
  EvdCliOptions *o = data;

  (void) name;
  (void) error;
  if (value == NULL)
    o->critical_all = TRUE;
  else
    g_ptr_array_add (o->critical_keys, g_strdup (value));
  return TRUE;
}

static gboolean
evd_cli_parse (int *argc, char ***argv, EvdCliOptions *o, GError **error)
{
  GOptionEntry entries[] = {
    { "host", 'H', 0, G_OPTION_ARG_STRING, &o->host, "Server host, IPv4 (127.0.0.1)", "HOST" },
    { "port", 'p', 0, G_OPTION_ARG_INT, &o->port, "Server port (9090)", "PORT" },
    { "unix", 0, 0, G_OPTION_ARG_FILENAME, &o->unix_path, "Unix socket path instead of host:port",
      "PATH" },
    { "framed", 0, 0, G_OPTION_ARG_NONE, &o->framed, "Framed transport (default)", NULL },
    { "buffered", 0, 0, G_OPTION_ARG_NONE, &o->buffered, "Buffered (unframed) transport", NULL },
    { "binary", 0, 0, G_OPTION_ARG_NONE, &o->binary, "Binary protocol (default)", NULL },
    { "compact", 0, 0, G_OPTION_ARG_NONE, &o->compact, "Compact protocol", NULL },
    { "service", 0, 0, G_OPTION_ARG_STRING, &o->service,
      "Multiplexed protocol with this service name (evdal's is DataAccess)", "NAME" },
    { "timeout-ms", 't', 0, G_OPTION_ARG_INT, &o->timeout_ms,
      "Give up after MS, connecting included (10000, or --deadline-ms + 2000 if longer; "
      "0 = never)", "MS" },
    { "json", 'j', 0, G_OPTION_ARG_NONE, &o->json, "Print one JSON document", NULL },
    { "ascii", 0, 0, G_OPTION_ARG_NONE, &o->ascii, "Draw tables with ASCII only", NULL },
    { "call", 'c', 0, G_OPTION_ARG_STRING_ARRAY, &o->calls,
      "fetch: a call, [KEY=]LOOKUP[:NAME=VALUE,...]; repeat for more", "SPEC" },
    { "critical", 0, G_OPTION_FLAG_OPTIONAL_ARG, G_OPTION_ARG_CALLBACK, evd_cli_on_critical,
      "fetch: mark every call critical, or only KEY,KEY...", "[KEYS]" },
    { "deadline-ms", 0, 0, G_OPTION_ARG_INT, &o->deadline_ms,
      "fetch: the request's time budget (context.deadline_ms)", "MS" },
    { "call-timeout-ms", 0, 0, G_OPTION_ARG_INT, &o->call_timeout_ms,
      "fetch: every call's time budget (LookupCall.timeout_ms)", "MS" },
    { "request-id", 0, 0, G_OPTION_ARG_STRING, &o->request_id, "fetch: context.request_id",
      "ID" },
    { "principal", 0, 0, G_OPTION_ARG_STRING, &o->principal, "fetch: context.principal", "NAME" },
    { "attr", 'a', 0, G_OPTION_ARG_STRING_ARRAY, &o->attrs,
      "fetch: a context attribute; repeat for more", "KEY=VALUE" },
    { "trace", 0, 0, G_OPTION_ARG_NONE, &o->trace,
      "fetch: ask for spans (context.trace) and print a waterfall", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("COMMAND [ARGS...]");
  GOptionGroup *group = g_option_group_new ("evdal-cli", "evdal-cli", "evdal-cli options", o,
                                            NULL);

  g_option_group_add_entries (group, entries);
  g_option_context_set_main_group (ctx, group);
  g_option_context_set_summary (ctx, evd_cli_summary);
  g_option_context_set_description (ctx, evd_cli_description);
  if (!g_option_context_parse (ctx, argc, argv, error))
    return FALSE;
  if (o->host == NULL)
    o->host = g_strdup ("127.0.0.1");  /* after parsing: GOption would not free a default */
  if ((o->framed && o->buffered) || (o->binary && o->compact)) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "choose one of --framed and --buffered, and of --binary and --compact");
    return FALSE;
  }
  if (o->port < 1 || o->port > 65535) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--port %d: not 1..65535",
                 o->port);
    return FALSE;
  }
  if (o->timeout_ms < -1 || o->deadline_ms == 0 || o->deadline_ms < -1 ||
      o->call_timeout_ms == 0 || o->call_timeout_ms < -1) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "--deadline-ms and --call-timeout-ms must be positive, --timeout-ms not "
                 "negative");
    return FALSE;
  }
  return TRUE;
}

/* fetch's options given to another command are a mistake worth saying, not ignoring. */
static gboolean
evd_cli_check_no_fetch_options (const EvdCliOptions *o, const char *command, GError **error)
{
  if (o->calls != NULL || o->critical_all || o->critical_keys->len > 0 || o->deadline_ms > 0 ||
      o->call_timeout_ms > 0 || o->request_id != NULL || o->principal != NULL ||
      o->attrs != NULL || o->trace) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "%s takes none of fetch's options (--call, --critical, --deadline-ms, "
                 "--call-timeout-ms, --request-id, --principal, --attr, --trace)", command);
    return FALSE;
  }
  return TRUE;
}

/* "00-<32 hex>-<16 hex>-01": a new trace, sampled. */
static char *
evd_cli_new_traceparent (void)
{
  GString *s = g_string_new ("00-");

  for (int i = 0; i < 4; i++)
    g_string_append_printf (s, "%08x", g_random_int () | (i == 3));  /* never all zero */
  g_string_append_printf (s, "-%08x%08x-01", g_random_int (), g_random_int () | 1);
  return g_string_free (s, FALSE);
}

static gboolean
evd_cli_build_request (const EvdCliOptions *o, int argc, char **argv, EvdCliRequest *r,
                       GError **error)
{
  evdalRequestContext *ctx = r->request->context;

  if (argc > 2 && !evd_cli_request_add (r, NULL, argv[2], (const char *const *) argv + 3, error))
    return FALSE;
  for (guint i = 0; o->calls != NULL && o->calls[i] != NULL; i++)
    if (!evd_cli_request_add_spec (r, o->calls[i], error))
      return FALSE;
  if (r->keys->len == 0) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "fetch needs a call: fetch LOOKUP [NAME=VALUE ...], or --call SPEC");
    return FALSE;
  }
  if (o->critical_all && !evd_cli_request_set_critical (r, NULL, error))
    return FALSE;
  for (guint i = 0; i < o->critical_keys->len; i++)
    if (!evd_cli_request_set_critical (r, o->critical_keys->pdata[i], error))
      return FALSE;
  if (o->call_timeout_ms > 0)
    evd_cli_request_set_call_timeout (r, o->call_timeout_ms);
  for (guint i = 0; o->attrs != NULL && o->attrs[i] != NULL; i++) {
    const char *eq = strchr (o->attrs[i], '=');
    if (eq == NULL || eq == o->attrs[i]) {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--attr %s: not KEY=VALUE", o->attrs[i]);
      return FALSE;
    }
    g_hash_table_insert (ctx->attributes, g_strndup (o->attrs[i], (gsize) (eq - o->attrs[i])),
                         g_strdup (eq + 1));
    ctx->__isset_attributes = TRUE;
  }
  if (o->request_id != NULL) {
    ctx->request_id = g_strdup (o->request_id);
    ctx->__isset_request_id = TRUE;
  }
  if (o->principal != NULL) {
    ctx->principal = g_strdup (o->principal);
    ctx->__isset_principal = TRUE;
  }
  if (o->deadline_ms > 0) {
    ctx->deadline_ms = o->deadline_ms;
    ctx->__isset_deadline_ms = TRUE;
  }
  if (o->trace) {
    ctx->trace = ctx->__isset_trace = TRUE;
    /* A trace of our own, sampled, so that the person who asked for it finds the same
     * request in their tracing system under the id the waterfall shows. */
    if (!ctx->__isset_attributes || !g_hash_table_contains (ctx->attributes, "traceparent")) {
      ctx->traceparent = evd_cli_new_traceparent ();
      ctx->__isset_traceparent = TRUE;
    }
  }
  r->request->__isset_context = ctx->__isset_attributes || ctx->__isset_request_id ||
                                ctx->__isset_principal || ctx->__isset_deadline_ms ||
                                ctx->__isset_trace;
  return TRUE;
}

static void
evd_cli_write (GString *out)
{
  fwrite (out->str, 1, out->len, stdout);
  fflush (stdout);
}

/* A failed call: the message on stderr, and for the server's exceptions under --json also a
 * document on stdout, so that a script reading stdout learns what happened. */
static EvdCliExit
evd_cli_report_error (const EvdCliOptions *o, const GError *error)
{
  EvdCliExit code = evd_cli_conn_exit_code (error);

  if (code == EVD_CLI_EXIT_APPLICATION) {
    const char *msg = error->message + strlen ("application error: ");
    g_printerr ("evdal-cli: the server answered with a TApplicationException %s: %s\n",
                evd_cli_conn_application_error_name (error->code), msg);
    if (o->json) {
      g_autoptr (GString) out = g_string_new (NULL);
      evd_cli_json_application_error (out, error->code, msg);
      evd_cli_write (out);
    }
  } else {
    g_printerr ("evdal-cli: %s\n", error->message);
  }
  return code;
}

static int
evd_cli_ping (const EvdCliOptions *o, EvdCliConn *c)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) out = g_string_new (NULL);
  g_autofree char *pong = NULL;
  gint64 t0 = g_get_monotonic_time ();

  if (!evd_cli_conn_ping (c, &pong, &error))
    return evd_cli_report_error (o, error);
  if (o->json)
    evd_cli_json_ping (out, pong, (double) (g_get_monotonic_time () - t0) / 1000.0);
  else
    g_string_append_printf (out, "%s\n", pong ? pong : "");
  evd_cli_write (out);
  return EVD_CLI_EXIT_OK;
}

static int
evd_cli_lookups (const EvdCliOptions *o, EvdCliConn *c)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) out = g_string_new (NULL);
  g_autoptr (GPtrArray) infos = g_ptr_array_new_with_free_func (g_object_unref);

  if (!evd_cli_conn_lookups (c, infos, &error))
    return evd_cli_report_error (o, error);
  if (o->json)
    evd_cli_json_lookups (out, infos);
  else
    evd_cli_print_lookups (out, infos, o->ascii);
  evd_cli_write (out);
  return EVD_CLI_EXIT_OK;
}

static void
evd_cli_report_exception (const EvdCliOptions *o, const EvdCliRequest *r,
                          const evdalInvalidRequest *invalid, const evdalLookupFailed *failed,
                          const evdalOverloaded *overloaded)
{
  /* The server's text, which may hold what the caller typed, shown as results show it. */
  if (failed != NULL) {
    const char *lookup = failed->call ? evd_cli_request_lookup (r, failed->call) : NULL;
    g_autofree char *call = evd_cli_value_visible (failed->call ? failed->call : "?");
    g_autofree char *name = evd_cli_value_visible (lookup ? lookup : "?");
    g_autofree char *msg = evd_cli_value_visible (failed->error->message ? failed->error->message
                                                                          : "");
    g_printerr ("evdal-cli: LookupFailed: the critical call %s (lookup %s) failed: %s: %s\n",
                call, name, evd_cli_conn_error_kind_name (failed->error->kind), msg);
  } else if (overloaded != NULL) {
    g_autofree char *msg = evd_cli_value_visible (overloaded->message ? overloaded->message : "");
    g_printerr ("evdal-cli: Overloaded: %s; retry after %d ms\n", msg,
                overloaded->retry_after_ms);
  } else {
    g_autofree char *msg = evd_cli_value_visible (invalid->message ? invalid->message : "");
    g_printerr ("evdal-cli: InvalidRequest: %s\n", msg);
  }
  if (o->json) {
    g_autoptr (GString) out = g_string_new (NULL);
    evd_cli_json_exception (out, r, invalid, failed, overloaded);
    evd_cli_write (out);
  }
}

static guint
evd_cli_terminal_columns (void)
{
  struct winsize ws;

  if (isatty (STDOUT_FILENO) && ioctl (STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  return 0;
}

static int
evd_cli_fetch (const EvdCliOptions *o, EvdCliConn *c, const EvdCliRequest *r)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) out = g_string_new (NULL);
  g_autoptr (evdalFetchResponse) resp = g_object_new (EVDAL_TYPE_FETCH_RESPONSE, NULL);
  g_autoptr (evdalInvalidRequest) invalid = NULL;
  g_autoptr (evdalLookupFailed) failed = NULL;
  g_autoptr (evdalOverloaded) overloaded = NULL;
  guint errors;

  if (!evd_cli_conn_fetch (c, r->request, resp, &invalid, &failed, &overloaded, &error)) {
    if (invalid == NULL && failed == NULL && overloaded == NULL)
      return evd_cli_report_error (o, error);
    evd_cli_report_exception (o, r, invalid, failed, overloaded);
    return EVD_CLI_EXIT_EXCEPTION;
  }
  if (o->json) {
    errors = evd_cli_json_response (out, r, resp);
  } else {
    errors = evd_cli_print_results (out, r, resp, o->ascii);
    if (o->trace)
      evd_cli_print_waterfall (out, r, resp, evd_cli_terminal_columns (), o->ascii);
  }
  evd_cli_write (out);
  if (errors > 0)
    g_printerr ("evdal-cli: %u of %u call%s failed\n", errors, r->keys->len,
                r->keys->len == 1 ? "" : "s");
  return errors > 0 ? EVD_CLI_EXIT_CALL_ERROR : EVD_CLI_EXIT_OK;
}

static void
evd_cli_options_clear (EvdCliOptions *o)
{
  g_free (o->host);
  g_free (o->unix_path);
  g_free (o->service);
  g_strfreev (o->calls);
  g_ptr_array_unref (o->critical_keys);
  g_free (o->request_id);
  g_free (o->principal);
  g_strfreev (o->attrs);
}

static int
evd_cli_usage_error (const GError *error)
{
  g_printerr ("evdal-cli: %s\nTry 'evdal-cli --help'.\n", error->message);
  return EVD_CLI_EXIT_USAGE;
}

static int
evd_cli_run (EvdCliOptions *o, int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdCliRequest) request = NULL;
  g_autoptr (EvdCliConn) conn = NULL;
  const char *command = argc > 1 ? argv[1] : NULL;
  EvdCliConnOptions co = { o->host, o->port, o->unix_path, o->buffered, o->compact, o->service,
                           o->timeout_ms };

  if (command == NULL) {
    g_set_error (&error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "no command: ping, lookups or fetch");
    return evd_cli_usage_error (error);
  }
  if (strcmp (command, "fetch") == 0) {
    request = evd_cli_request_new ();
    if (!evd_cli_build_request (o, argc, argv, request, &error))
      return evd_cli_usage_error (error);
  } else if (strcmp (command, "ping") != 0 && strcmp (command, "lookups") != 0) {
    g_set_error (&error, G_OPTION_ERROR, G_OPTION_ERROR_UNKNOWN_OPTION,
                 "unknown command \"%s\": ping, lookups or fetch", command);
    return evd_cli_usage_error (error);
  } else if (argc > 2) {
    g_set_error (&error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                 "%s takes no arguments, but got \"%s\"", command, argv[2]);
    return evd_cli_usage_error (error);
  } else if (!evd_cli_check_no_fetch_options (o, command, &error)) {
    return evd_cli_usage_error (error);
  }
  if (co.timeout_ms < 0)
    co.timeout_ms = (int) CLAMP ((gint64) o->deadline_ms + EVD_CLI_DEADLINE_GRACE_MS,
                                 EVD_CLI_DEFAULT_TIMEOUT_MS, G_MAXINT);
  conn = evd_cli_conn_open (&co, &error);
  if (conn == NULL) {
    g_printerr ("evdal-cli: %s\n", error->message);
    return error->domain == EVD_CLI_CONN_ERROR && error->code == EVD_CLI_CONN_ERROR_ADDRESS
           ? EVD_CLI_EXIT_USAGE : EVD_CLI_EXIT_TRANSPORT;
  }
  if (strcmp (command, "ping") == 0)
    return evd_cli_ping (o, conn);
  if (strcmp (command, "lookups") == 0)
    return evd_cli_lookups (o, conn);
  return evd_cli_fetch (o, conn, request);
}

int
main (int argc, char **argv)
{
  EvdCliOptions o = { .port = 9090, .timeout_ms = -1, .deadline_ms = -1,
                      .call_timeout_ms = -1 };
  g_autoptr (GError) error = NULL;
  int code;

  /* Only the character set: numbers print with '.', whatever LC_NUMERIC says. */
  setlocale (LC_CTYPE, "");
  /* A server that closes the connection must give exit code 3, not kill us with SIGPIPE. */
  signal (SIGPIPE, SIG_IGN);
  o.critical_keys = g_ptr_array_new_with_free_func (g_free);
  if (!evd_cli_parse (&argc, &argv, &o, &error)) {
    evd_cli_options_clear (&o);
    return evd_cli_usage_error (error);
  }
  /* Box-drawing characters only where the terminal's character set has them. */
  if (!g_get_charset (NULL))
    o.ascii = TRUE;
  code = evd_cli_run (&o, argc, argv);
  evd_cli_options_clear (&o);
  return code;
}

/* evd_main: the evdal command line: options, configuration, start and exit code. */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>

#include "evd_config.h"
#include "evd_log.h"
#include "evd_server.h"
#include "evd_service.h"

typedef struct {
  char *config;
  char *listen;
  gboolean check_config;
  gboolean version;
  gboolean verbose;
} EvdOptions;

static void
evd_options_clear (EvdOptions *o)
{
  g_clear_pointer (&o->config, g_free);
  g_clear_pointer (&o->listen, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (EvdOptions, evd_options_clear)

static gboolean
evd_main_parse (int *argc, char ***argv, EvdOptions *o)
{
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &o->config, "Configuration file", "FILE" },
    { "listen", 'l', 0, G_OPTION_ARG_STRING, &o->listen,
      "Listen on ADDR (host:port, [v6]:port or a unix socket path), overriding the config",
      "ADDR" },
    { "check-config", 0, 0, G_OPTION_ARG_NONE, &o->check_config,
      "Check the configuration, print every problem and exit", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &o->verbose, "Log debug messages too", NULL },
    { "version", 'V', 0, G_OPTION_ARG_NONE, &o->version, "Print the version and exit", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- evented Thrift data-access server");
  g_autoptr (GError) error = NULL;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_description (ctx,
    "evdal serves the DataAccess Thrift service (idl/evdal.thrift): one fetch runs many\n"
    "lookups at once and merges their replies. See the README and deploy/evdal.conf.");
  if (!g_option_context_parse (ctx, argc, argv, &error)) {
    g_printerr ("evdal: %s\n", error->message);
    return FALSE;
  }
  if (o->config == NULL && !o->version) {
    g_printerr ("evdal: --config FILE is required (try --help)\n");
    return FALSE;
  }
  return TRUE;
}

/* A server with max_connections sockets needs as many descriptors: take what the hard limit
 * allows rather than failing at the soft limit's 1024. */
static void
evd_main_raise_fd_limit (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit (RLIMIT_NOFILE, &rl);
  }
}

int
main (int argc, char **argv)
{
  g_auto (EvdOptions) o = { 0 };
  g_autoptr (EvdConfig) cfg = NULL;
  g_autoptr (EvdDataAccess) service = NULL;
  g_autoptr (EvdServer) server = NULL;
  g_autoptr (GError) error = NULL;

  if (!evd_main_parse (&argc, &argv, &o))
    return 2;
  if (o.version) {
    printf ("evdal %s\n", EVDAL_VERSION);
    return 0;
  }
  evd_log_init (o.verbose);
  cfg = evd_config_load (o.config, &error);
  if (cfg == NULL) {
    g_printerr ("evdal: %s\n", error->message);
    return 1;
  }
  if (o.listen != NULL)
    evd_config_override_listen (cfg, o.listen);
  service = evd_data_access_new (cfg);
  if (!evd_config_check (cfg, &error)) {
    g_printerr ("%s\n", error->message);
    return 1;
  }
  if (o.check_config) {
    printf ("%s: OK\n", o.config);
    return 0;
  }
  signal (SIGPIPE, SIG_IGN);
  evd_main_raise_fd_limit ();
  server = evd_server_new (cfg, evd_data_access_service (service), &error);
  if (server == NULL) {
    g_printerr ("evdal: %s\n", error->message);
    return 1;
  }
  return evd_server_run (server);
}

/* evd_main: the evdal command line: options, configuration, start and exit code. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "evd_config.h"
#include "evd_log.h"
#include "evd_server.h"
#include "evd_data_access.h"
#include "evd_modules.h"
#include "evd_systemd.h"

/* Traced requests /traces keeps: the slowest this many, and the most recent this many. */
#define EVD_MAIN_TRACES_KEPT 20

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

/* A reload runs in two steps (evd_data_access_prepare/commit): the next generation is built
 * on a thread of its own, since opening SQLite pools can wait busy_timeout_ms (up to ten
 * minutes) for a writer's lock, and the main loop (health checks, signals, the watchdog)
 * must not wait with it; the main loop then makes it current. One reload at a time: a SIGHUP
 * during one runs another after it, from the file as it is then. */
typedef struct {
  EvdOptions *options;
  EvdConfig *running;        /* the config the server started with */
  EvdDataAccess *service;
  EvdMetrics *metrics;
  EvdOtlp *otlp;             /* [tracing] as started */
  char *tls_keys;            /* tls_cert, tls_key and tls_client_ca as started */
  EvdServer *server;
  GThread *thread;           /* the reload being built, or NULL; joined on the main thread */
  gboolean again;            /* SIGHUP while building: reload again after */
  /* Set by the thread when done (read on the main thread after the join) */
  EvdConfig *cfg;
  EvdEngine *next;
  GError *error;
  EvdOtlp *tracing;          /* the reload's [tracing], read so that its keys are checked */
  gboolean tls_changed;
} EvdReload;

/* The TLS keys, to tell whether a reload changed them (the listener's context is made once,
 * at start). */
static char *
evd_main_tls_keys (EvdConfig *cfg)
{
  g_autofree char *cert = evd_config_string (cfg, "server", "tls_cert", "");
  g_autofree char *key = evd_config_string (cfg, "server", "tls_key", "");
  g_autofree char *ca = evd_config_string (cfg, "server", "tls_client_ca", "");

  return g_strjoin ("\n", cert, key, ca, NULL);
}

/* [server] keys are read once, at start; say so when a reload changes them. */
static void
evd_main_warn_restart_keys (const EvdServerConfig *a, const EvdServerConfig *b)
{
  if (g_strcmp0 (a->listen, b->listen) != 0 || a->io_threads != b->io_threads ||
      a->busy_poll_us != b->busy_poll_us || a->max_connections != b->max_connections ||
      a->max_frame_bytes != b->max_frame_bytes || a->idle_timeout_ms != b->idle_timeout_ms ||
      a->read_timeout_ms != b->read_timeout_ms || a->write_timeout_ms != b->write_timeout_ms ||
      a->max_pipeline != b->max_pipeline || a->max_output_bytes != b->max_output_bytes ||
      a->max_reply_bytes != b->max_reply_bytes ||
      a->shutdown_timeout_ms != b->shutdown_timeout_ms || a->drain_ms != b->drain_ms ||
      a->reuse_port != b->reuse_port || a->stall_warn_ms != b->stall_warn_ms ||
      g_strcmp0 (a->admin_listen, b->admin_listen) != 0 ||
      g_strcmp0 (a->admin_secret, b->admin_secret) != 0)
    g_warning ("reload: [server] listen, admin, io_threads, busy_poll_us, reuse_port, drain_ms, "
               "stall_warn_ms and connection limits changed; they take effect at the next "
               "restart (deadline_ms, max_calls, max_inflight and log_level apply now)");
}

/* [tracing] is read once, at start (the exporter thread and its queue are made then): its
 * keys are checked on a reload, and a change is reported. */
static void
evd_main_warn_tracing_keys (const EvdOtlpConfig *a, const EvdOtlpConfig *b)
{
  if (g_strcmp0 (a->otlp_endpoint, b->otlp_endpoint) != 0 || a->sample_ratio != b->sample_ratio ||
      g_strcmp0 (a->service_name, b->service_name) != 0 ||
      a->batch_max_spans != b->batch_max_spans || a->batch_max_age_ms != b->batch_max_age_ms ||
      a->queue_max_spans != b->queue_max_spans || a->export_timeout_ms != b->export_timeout_ms)
    g_warning ("reload: [tracing] changed; it takes effect at the next restart");
}

/* On the reload's thread: reads the file and builds its lookups. */
static void evd_main_reload_done (gpointer data);

static gpointer
evd_main_reload_build (gpointer data)
{
  EvdReload *r = data;
  g_autofree char *tls_keys = NULL;

  r->cfg = evd_config_load (r->options->config, &r->error);
  if (r->cfg != NULL && r->options->listen != NULL)
    evd_config_override_listen (r->cfg, r->options->listen);
  if (r->cfg != NULL) {
    /* Modules load at start-up only: this reads the key and warns when it changed. */
    evd_modules_load (r->cfg);
    r->tracing = evd_otlp_new (r->cfg, NULL);  /* reads [tracing], so its keys are checked */
    /* Reads and checks the TLS keys, which are otherwise unknown keys of the new file. */
    evd_tls_free (evd_tls_new (r->cfg));
    tls_keys = evd_main_tls_keys (r->cfg);
    r->tls_changed = strcmp (tls_keys, r->tls_keys) != 0;
    r->next = evd_data_access_prepare (r->service, r->cfg, &r->error);
  }
  evd_server_post_main (r->server, evd_main_reload_done, r);
  return NULL;
}

static void evd_main_reload (gpointer data);

/* On the main loop, once the thread has built (or failed to build) the next lookups. */
static void
evd_main_reload_done (gpointer data)
{
  EvdReload *r = data;
  g_autoptr (EvdConfig) cfg = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdOtlp) tracing = NULL;
  g_autofree char *summary = NULL;

  if (r->thread == NULL)
    return;  /* at exit, evd_main_reload_clear took it */
  g_thread_join (g_steal_pointer (&r->thread));
  cfg = g_steal_pointer (&r->cfg);
  error = g_steal_pointer (&r->error);
  tracing = g_steal_pointer (&r->tracing);
  if (r->next == NULL) {
    g_auto (GStrv) lines = g_strsplit (error->message, "\n", -1);

    if (cfg == NULL)  /* an unreadable file; evd_data_access_prepare counts the others */
      evd_metrics_reload (r->metrics, FALSE);
    for (guint i = 0; lines[i] != NULL; i++)
      g_warning ("reload refused: %s", lines[i]);
    g_warning ("reload refused: the configuration in use is kept");
  } else {
    evd_data_access_commit (r->service, g_steal_pointer (&r->next), &summary);
    evd_main_warn_restart_keys (evd_config_server (r->running), evd_config_server (cfg));
    evd_main_warn_tracing_keys (evd_otlp_config (r->otlp), evd_otlp_config (tracing));
    if (r->tls_changed)
      g_warning ("reload: [server] tls_cert, tls_key or tls_client_ca changed; they take effect "
                 "at the next restart");
    evd_log_set_level (evd_config_server (cfg)->log_level);
    g_message ("reloaded %s: %s", r->options->config, summary);
  }
  /* A SIGHUP that came during this reload is dropped once a SIGTERM came too. */
  if (evd_server_reloaded (r->server) && r->again) {
    r->again = FALSE;
    evd_main_reload (r);
  }
}

/* SIGHUP: the lookups of the file as it is now, or, if it has problems, the old ones kept. */
static void
evd_main_reload (gpointer data)
{
  EvdReload *r = data;

  if (r->thread != NULL) {
    g_message ("SIGHUP: a reload is under way; reloading again after it");
    r->again = TRUE;
    return;
  }
  g_message ("SIGHUP: reloading %s", r->options->config);
  r->thread = g_thread_new ("evdal-reload", evd_main_reload_build, r);
}

/* At exit: a reload still being built is waited for (it ends within busy_timeout_ms) and
 * dropped. */
static void
evd_main_reload_clear (EvdReload *r)
{
  if (r->thread != NULL)
    g_thread_join (g_steal_pointer (&r->thread));
  g_clear_pointer (&r->next, evd_engine_unref);
  g_clear_pointer (&r->cfg, evd_config_unref);
  g_clear_pointer (&r->tracing, evd_otlp_free);
  g_clear_error (&r->error);
  g_clear_pointer (&r->tls_keys, g_free);
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

static void
evd_main_lookups_json (gpointer data, GString *out)
{
  evd_data_access_lookups_json (data, out);
}

static void
evd_main_health (gpointer data, GString *out)
{
  evd_data_access_health (data, out);
}

/* The admin endpoint, when admin_listen is set or systemd passed an "admin" socket. */
static gboolean
evd_main_start_admin (EvdServer *server, EvdConfig *cfg, EvdDataAccess *service,
                      EvdMetrics *metrics, EvdTraceStore *traces, int fd, GError **error)
{
  const EvdServerConfig *sc = evd_config_server (cfg);
  EvdAdminPages pages = {
    metrics, traces, evd_main_lookups_json, service, sc->admin_secret, evd_main_health, service,
  };
  EvdAdmin *admin;

  if (fd < 0 && *sc->admin_listen == '\0')
    return TRUE;
  admin = evd_admin_new (evd_server_main_base (server), sc->admin_listen, sc->reuse_port, fd,
                         &pages, error);
  if (admin == NULL)
    return FALSE;
  g_message ("admin on http://%s/ (/health /metrics /lookups /traces)%s",
             evd_admin_address (admin), sc->admin_secret ? "; secret required" : "");
  evd_server_set_admin (server, admin);
  return TRUE;
}

int
main (int argc, char **argv)
{
  g_auto (EvdOptions) o = { 0 };
  /* Declared first so that they are freed last: the service and server count into them. */
  g_autoptr (EvdMetrics) metrics = evd_metrics_new ();
  g_autoptr (EvdTraceStore) traces = evd_trace_store_new (EVD_MAIN_TRACES_KEPT);
  g_autoptr (EvdConfig) cfg = NULL;
  /* Freed after the server and the service: the IO loops' last fetches submit their spans,
   * then the exporter flushes them (within export_timeout_ms). */
  g_autoptr (EvdOtlp) otlp = NULL;
  g_autoptr (EvdDataAccess) service = NULL;
  g_autoptr (EvdServer) server = NULL;
  g_autoptr (GError) error = NULL;
  EvdTls *tls;
  EvdReload reload;
  EvdSystemdSockets sockets;
  int rc;

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
  evd_log_set_level (evd_config_server (cfg)->log_level);
  evd_modules_load (cfg);  /* before the lookups: they may name a module's kinds */
  service = evd_data_access_new (cfg, metrics, traces);
  otlp = evd_otlp_new (cfg, metrics);
  evd_data_access_set_otlp (service, otlp);
  tls = evd_tls_new (cfg);
  if (!evd_config_check (cfg, &error)) {
    g_printerr ("%s\n", error->message);
    evd_tls_free (tls);
    return 1;
  }
  if (o.check_config) {
    printf ("%s: OK\n", o.config);
    evd_tls_free (tls);
    return 0;
  }
  signal (SIGPIPE, SIG_IGN);
  /* Before any IO loop runs: the loops read whether it exports without a lock. */
  evd_otlp_start (otlp);
  evd_main_raise_fd_limit ();
  if (!evd_systemd_sockets (&sockets, &error)) {
    g_printerr ("evdal: %s\n", error->message);
    evd_tls_free (tls);
    return 1;
  }
  if (sockets.thrift >= 0)
    g_message ("serving the socket systemd passed (descriptor %d), not listen=", sockets.thrift);
  server = evd_server_new (cfg, evd_data_access_service (service), g_steal_pointer (&tls),
                           sockets.thrift, &error);
  if (server == NULL ||
      !evd_main_start_admin (server, cfg, service, metrics, traces, sockets.admin, &error)) {
    g_printerr ("evdal: %s\n", error->message);
    return 1;
  }
  reload = (EvdReload) { .options = &o, .running = cfg, .service = service, .metrics = metrics,
                         .otlp = otlp, .server = server, .tls_keys = evd_main_tls_keys (cfg) };
  evd_server_set_reload (server, evd_main_reload, &reload);
  rc = evd_server_run (server);
  evd_main_reload_clear (&reload);
  return rc;
}

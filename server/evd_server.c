/* evd_server: main loop, IO loops, accepting and shutdown (see evd_server.h). */
#include "evd_server.h"

#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "evd_conn.h"
#include "evd_listener.h"
#include "evd_systemd.h"

struct _EvdServer {
  EvdConfig *cfg;
  const EvdServerConfig *sc;
  const EvdService *service;

  EvdLoop *main;
  EvdListener *listener;
  EvdTls *tls;
  struct event *on_sigterm;
  struct event *on_sigint;
  struct event *on_sighup;
  EvdReloadFunc reload;
  gpointer reload_data;
  struct event *drain_timer;   /* SIGTERM with drain_ms: when the listener closes */
  struct event *grace_timer;
  struct event *settle_timer;  /* polls the service's pending work once the loops drained */
  EvdLogLimit accept_limit;

  guint n_loops;
  EvdLoop **loops;
  EvdConnHost *hosts;
  guint next_loop;
  guint n_drained;

  gint n_connections;    /* atomic: shared with every loop's connections */
  guint64 accepted;      /* main loop only, like the admin that reads them */
  guint64 refused;
  EvdAdmin *admin;
  EvdSystemdWatchdog *watchdog;
  gboolean stopping;
  gboolean grace_over;
};

/* ---- Accepting. ---- */

typedef struct {
  EvdConnHost *host;
  evutil_socket_t fd;
  struct sockaddr_storage addr;
  socklen_t addr_len;
} EvdHandover;

static void
evd_server_on_handover (gpointer data)
{
  EvdHandover *h = data;

  evd_conn_new (h->host, h->fd, (struct sockaddr *) &h->addr, h->addr_len);
  g_free (h);
}

static void
evd_server_on_accept (evutil_socket_t fd, struct sockaddr *addr, int addr_len, gpointer data)
{
  EvdServer *s = data;
  EvdHandover *h;

  /* Counted here, uncounted by the connection when it closes on its loop. */
  if (g_atomic_int_add (&s->n_connections, 1) >= s->sc->max_connections) {
    char peer[80];
    g_atomic_int_add (&s->n_connections, -1);
    s->refused++;
    evd_conn_format_addr (addr, (socklen_t) addr_len, peer, sizeof peer);
    evutil_closesocket (fd);
    evd_log_limited (&s->accept_limit, peer, "refused: max_connections (%d) reached",
                     s->sc->max_connections);
    return;
  }
  s->accepted++;
  h = g_new (EvdHandover, 1);
  h->host = &s->hosts[s->next_loop++ % s->n_loops];
  h->fd = fd;
  memcpy (&h->addr, addr, MIN ((gsize) addr_len, sizeof h->addr));
  h->addr_len = (socklen_t) addr_len;
  evd_loop_post (h->host->loop, evd_server_on_handover, h);
}

/* ---- Shutdown. ---- */

static guint
evd_server_pending (EvdServer *s)
{
  return s->service->pending ? s->service->pending (s->service->data) : 0;
}

/* Every connection is closed; backends may still be finishing cancelled work (a worker's
 * query) that will post back to a loop, so the loops wait for it, within the grace period. */
static void
evd_server_on_settle (evutil_socket_t fd, short what, void *arg)
{
  EvdServer *s = arg;
  struct timeval tv = { 0, 10000 };
  guint pending = evd_server_pending (s);

  (void) fd;
  (void) what;
  if (pending == 0) {
    evd_loop_quit (s->main);
  } else if (s->grace_over) {
    /* Their threads would post to freed loops and use freed backends: nothing can be freed
     * safely, and every connection is already closed, so the process ends here. */
    g_warning ("shutdown: %u backend calls still running after the grace period; exiting "
               "without waiting for them", pending);
    fflush (stderr);
    _exit (0);
  } else {
    evtimer_add (s->settle_timer, &tv);
  }
}

static void
evd_server_on_loop_drained_main (gpointer data)
{
  EvdServer *s = data;

  if (++s->n_drained < s->n_loops)
    return;
  s->settle_timer = evtimer_new (evd_loop_base (s->main), evd_server_on_settle, s);
  evd_server_on_settle (-1, 0, s);
}

/* Runs on an IO loop: its last connection has closed. */
static void
evd_server_on_host_drained (gpointer data)
{
  EvdServer *s = data;

  evd_loop_post (s->main, evd_server_on_loop_drained_main, s);
}

static void
evd_server_drain_host (gpointer data)
{
  evd_conn_host_drain (data);
}

static void
evd_server_close_host (gpointer data)
{
  evd_conn_host_close_all (data);
}

static void
evd_server_on_grace_over (evutil_socket_t fd, short what, void *arg)
{
  EvdServer *s = arg;

  (void) fd;
  (void) what;
  g_message ("shutdown: grace period of %d ms is over; closing the remaining connections",
             s->sc->shutdown_timeout_ms);
  s->grace_over = TRUE;
  for (guint i = 0; i < s->n_loops; i++)
    evd_loop_post (s->loops[i], evd_server_close_host, &s->hosts[i]);
}

/* The drain proper: no new connections (those already queued in the backlog are taken
 * first), requests read are answered, idle connections close between requests, and the
 * grace period bounds the rest. */
static void
evd_server_begin_drain (evutil_socket_t fd, short what, void *arg)
{
  EvdServer *s = arg;
  struct timeval tv = { s->sc->shutdown_timeout_ms / 1000,
                        (s->sc->shutdown_timeout_ms % 1000) * 1000 };
  guint queued;

  (void) fd;
  (void) what;
  queued = evd_listener_close_draining (g_steal_pointer (&s->listener));
  g_message ("shutdown: listener closed (%u queued connections taken first); finishing "
             "requests in flight", queued);
  s->grace_timer = evtimer_new (evd_loop_base (s->main), evd_server_on_grace_over, s);
  evtimer_add (s->grace_timer, &tv);
  for (guint i = 0; i < s->n_loops; i++)
    evd_loop_post (s->loops[i], evd_server_drain_host, &s->hosts[i]);
}

/* SIGTERM: /health says draining at once, so that load balancers stop sending new
 * connections; for drain_ms evdal still serves everything, including new connections that
 * were routed before the balancer noticed; then the drain proper. */
static void
evd_server_on_signal (evutil_socket_t sig, short what, void *arg)
{
  EvdServer *s = arg;
  struct timeval drain = { s->sc->drain_ms / 1000, (s->sc->drain_ms % 1000) * 1000 };

  (void) what;
  if (s->stopping) {
    g_warning ("second %s: exiting at once", strsignal ((int) sig));
    _exit (1);
  }
  s->stopping = TRUE;
  evd_systemd_notify ("STOPPING=1\nSTATUS=Draining: finishing requests in flight (%d ms at "
                      "most)", s->sc->drain_ms + s->sc->shutdown_timeout_ms);
  evd_admin_set_draining (s->admin);
  if (s->sc->drain_ms > 0) {
    g_message ("%s: shutting down; health says draining, still serving for %d ms",
               strsignal ((int) sig), s->sc->drain_ms);
    s->drain_timer = evtimer_new (evd_loop_base (s->main), evd_server_begin_drain, s);
    evtimer_add (s->drain_timer, &drain);
    return;
  }
  g_message ("%s: shutting down; no new connections, finishing requests in flight",
             strsignal ((int) sig));
  evd_server_begin_drain (-1, 0, s);
}

static void
evd_server_on_sighup (evutil_socket_t sig, short what, void *arg)
{
  EvdServer *s = arg;

  (void) sig;
  (void) what;
  if (s->stopping || s->reload == NULL)
    return;
  evd_systemd_notify ("RELOADING=1\nSTATUS=Reloading the configuration");
  s->reload (s->reload_data);
}

void
evd_server_post_main (EvdServer *s, EvdLoopFunc fn, gpointer data)
{
  evd_loop_post (s->main, fn, data);
}

gboolean
evd_server_reloaded (EvdServer *s)
{
  /* A reload that ends during the drain: systemd was told STOPPING=1, and the listener may
   * be closed (s->listener NULL) already. */
  if (s->stopping)
    return FALSE;
  evd_systemd_notify ("READY=1\nSTATUS=Serving on %s", evd_listener_address (s->listener));
  return TRUE;
}

void
evd_server_set_reload (EvdServer *s, EvdReloadFunc fn, gpointer data)
{
  s->reload = fn;
  s->reload_data = data;
}

/* ---- Life. ---- */

static gboolean
evd_server_make_loops (EvdServer *s, GError **error)
{
  s->n_loops = s->sc->io_threads > 0 ? (guint) s->sc->io_threads : g_get_num_processors ();
  s->loops = g_new0 (EvdLoop *, s->n_loops);
  s->hosts = g_new0 (EvdConnHost, s->n_loops);
  for (guint i = 0; i < s->n_loops; i++) {
    EvdConnHost *h = &s->hosts[i];

    s->loops[i] = evd_loop_new (i + 1, error);
    if (s->loops[i] == NULL)
      return FALSE;
    evd_loop_set_busy_poll (s->loops[i], s->sc->busy_poll_us);
    h->loop = s->loops[i];
    h->service = s->service;
    h->config = s->sc;
    h->tls = s->tls;
    h->write_timeout.tv_sec = s->sc->write_timeout_ms / 1000;
    h->write_timeout.tv_usec = (s->sc->write_timeout_ms % 1000) * 1000;
    h->n_connections = &s->n_connections;
    g_queue_init (&h->conns);
    g_queue_init (&h->unflushed);
    h->on_drained = evd_server_on_host_drained;
    h->on_drained_data = s;
  }
  return TRUE;
}

/* Gauges of the server for /metrics (on the main loop, like accepting). */
static void
evd_server_collect (GString *out, gpointer data)
{
  EvdServer *s = data;

  evd_metrics_family (out, "evdal_connections", "gauge", "Client connections open.");
  evd_metrics_sample (out, "evdal_connections", g_atomic_int_get (&s->n_connections), NULL);
  evd_metrics_family (out, "evdal_connections_accepted_total", "counter",
                      "Connections accepted.");
  evd_metrics_sample (out, "evdal_connections_accepted_total", (double) s->accepted, NULL);
  evd_metrics_family (out, "evdal_connections_refused_total", "counter",
                      "Connections closed at once: max_connections was reached.");
  evd_metrics_sample (out, "evdal_connections_refused_total", (double) s->refused, NULL);
  evd_metrics_family (out, "evdal_loop_lag_seconds", "gauge",
                      "How late each IO loop's 10 ms heartbeat runs: the wait before a "
                      "request is read.");
  for (guint i = 0; i < s->n_loops; i++) {
    char id[16];
    g_snprintf (id, sizeof id, "%u", evd_loop_index (s->loops[i]));
    evd_metrics_sample (out, "evdal_loop_lag_seconds", evd_loop_lag_us (s->loops[i]) / 1e6,
                        "loop", id, NULL);
  }
  evd_metrics_family (out, "evdal_io_loops", "gauge", "IO loops (threads serving connections).");
  evd_metrics_sample (out, "evdal_io_loops", s->n_loops, NULL);
}

EvdServer *
evd_server_new (EvdConfig *cfg, const EvdService *service, EvdTls *tls, int listen_fd,
                GError **error)
{
  g_autoptr (EvdServer) s = g_new0 (EvdServer, 1);
  static gsize threads_ready;

  if (g_once_init_enter (&threads_ready)) {
    /* Before any event base: bases made after this lock themselves for event_active(). */
    evthread_use_pthreads ();
    g_once_init_leave (&threads_ready, 1);
  }
  s->cfg = cfg;
  s->sc = evd_config_server (cfg);
  s->service = service;
  s->tls = tls;
  s->main = evd_loop_new (0, error);
  if (s->main == NULL || !evd_server_make_loops (s, error))
    return NULL;
  if (listen_fd >= 0)
    s->listener = evd_listener_new_from_fd (evd_loop_base (s->main), listen_fd,
                                            evd_server_on_accept, s, error);
  else
    s->listener = evd_listener_new (evd_loop_base (s->main), s->sc->listen, s->sc->reuse_port,
                                    evd_server_on_accept, s, error);
  if (s->listener == NULL)
    return NULL;
  evd_metrics_add_collector (service->metrics, evd_server_collect, s);
  s->on_sigterm = evsignal_new (evd_loop_base (s->main), SIGTERM, evd_server_on_signal, s);
  s->on_sigint = evsignal_new (evd_loop_base (s->main), SIGINT, evd_server_on_signal, s);
  s->on_sighup = evsignal_new (evd_loop_base (s->main), SIGHUP, evd_server_on_sighup, s);
  evsignal_add (s->on_sigterm, NULL);
  evsignal_add (s->on_sigint, NULL);
  evsignal_add (s->on_sighup, NULL);
  return g_steal_pointer (&s);
}

/* The first task a loop runs, before any connection is handed to it (they are posted after). */
static void
evd_server_on_loop_started (gpointer data)
{
  EvdConnHost *h = data;

  h->service->loop_started (h->service->data, h->loop);
}

int
evd_server_run (EvdServer *s)
{
  g_autoptr (GError) error = NULL;
  gboolean unix_socket;

  for (guint i = 0; i < s->n_loops; i++) {
    evd_loop_watch (s->loops[i], s->sc->stall_warn_ms);
    if (s->service->loop_started != NULL)
      evd_loop_post (s->loops[i], evd_server_on_loop_started, &s->hosts[i]);
    if (!evd_loop_start (s->loops[i], &error)) {
      g_critical ("cannot start IO loop %u: %s", i, error->message);
      return 1;
    }
  }
  unix_socket = g_str_has_prefix (evd_listener_address (s->listener), "unix:");
  g_message ("listening on %s (%u IO loops, %s, evdal %s)", evd_listener_address (s->listener),
             s->n_loops, s->tls ? (unix_socket ? "TLS over a unix socket" : "TLS")
                                : (unix_socket ? "plain unix socket" : "plain TCP"),
             EVDAL_VERSION);
  s->watchdog = evd_systemd_watchdog_new (evd_loop_base (s->main), s->loops, s->n_loops);
  evd_systemd_notify ("READY=1\nSTATUS=Serving on %s", evd_listener_address (s->listener));
  evd_loop_run_here (s->main);
  g_message ("shut down cleanly");
  return 0;
}

void
evd_server_free (EvdServer *s)
{
  if (s == NULL)
    return;
  evd_metrics_remove_collector (s->service->metrics, evd_server_collect, s);
  g_clear_pointer (&s->watchdog, evd_systemd_watchdog_free);
  g_clear_pointer (&s->admin, evd_admin_free);
  g_clear_pointer (&s->listener, evd_listener_free);
  for (guint i = 0; s->loops != NULL && i < s->n_loops; i++) {
    if (s->loops[i] == NULL)
      continue;
    evd_loop_quit (s->loops[i]);
    evd_loop_free (s->loops[i]);
  }
  g_free (s->loops);
  g_free (s->hosts);
  evd_tls_free (s->tls);
  g_clear_pointer (&s->on_sigterm, event_free);
  g_clear_pointer (&s->on_sigint, event_free);
  g_clear_pointer (&s->on_sighup, event_free);
  g_clear_pointer (&s->drain_timer, event_free);
  g_clear_pointer (&s->grace_timer, event_free);
  g_clear_pointer (&s->settle_timer, event_free);
  g_clear_pointer (&s->main, evd_loop_free);
  g_free (s);
}

void
evd_server_set_admin (EvdServer *s, EvdAdmin *admin)
{
  g_clear_pointer (&s->admin, evd_admin_free);
  s->admin = admin;
}

struct event_base *
evd_server_main_base (EvdServer *s)
{
  return evd_loop_base (s->main);
}

const char *
evd_server_address (EvdServer *s)
{
  return evd_listener_address (s->listener);
}

guint
evd_server_n_loops (EvdServer *s)
{
  return s->n_loops;
}

EvdLoop *
evd_server_loop (EvdServer *s, guint i)
{
  return s->loops[i];
}

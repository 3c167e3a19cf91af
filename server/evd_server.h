/* evd_server: the running server: the main loop (signals, accepting), the IO loops and what
 * ties them together, from start to a clean exit.
 *
 * The main thread runs a loop of its own that accepts connections and hands each to an IO
 * loop in turn (evd_loop_post); IO loops run on their own threads and own their connections
 * entirely. SIGTERM or SIGINT starts the shutdown: stop accepting, let every IO loop drain
 * (each request already read gets its reply), and after shutdown_timeout_ms close what is
 * left; a second signal exits at once. SIGHUP calls the reload function, on the main thread;
 * connections are not touched.
 */
#pragma once

#include "evd_admin.h"
#include "evd_config.h"
#include "evd_rpc.h"
#include "evd_tls.h"

G_BEGIN_DECLS

typedef struct _EvdServer EvdServer;

/* Binds the listener (or accepts on `listen_fd`, a listening socket systemd passed, when it
 * is not -1) and makes the loops; nothing runs yet. `cfg` and `service` must outlive the
 * server; it takes `tls` (NULL: plain TCP). Under systemd it notifies READY, RELOADING and
 * STOPPING, and pings the watchdog while every IO loop runs (evd_systemd). */
EvdServer *evd_server_new (EvdConfig *cfg, const EvdService *service, EvdTls *tls,
                           int listen_fd, GError **error);
/* Runs until shut down; returns the process exit code. */
int evd_server_run (EvdServer *server);
void evd_server_free (EvdServer *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdServer, evd_server_free)

/* What SIGHUP does (on the main thread): reload the configuration. */
typedef void (*EvdReloadFunc) (gpointer data);
void evd_server_set_reload (EvdServer *server, EvdReloadFunc fn, gpointer data);
/* The reload function finished (it may run on after returning): tells systemd READY again,
 * unless a SIGTERM came meanwhile; FALSE then (the server is stopping: no more reloads). */
gboolean evd_server_reloaded (EvdServer *server);
/* Runs fn on the main loop (any thread): how work done elsewhere comes back. */
void evd_server_post_main (EvdServer *server, EvdLoopFunc fn, gpointer data);

/* The admin endpoint runs on the main loop; the server takes it, tells it when draining
 * starts, and frees it. */
struct event_base *evd_server_main_base (EvdServer *server);
void evd_server_set_admin (EvdServer *server, EvdAdmin *admin);

const char *evd_server_address (EvdServer *server);
guint evd_server_n_loops (EvdServer *server);
EvdLoop *evd_server_loop (EvdServer *server, guint i);

G_END_DECLS

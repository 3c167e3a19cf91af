/* evd_systemd: what a Type=notify service tells systemd, the sockets systemd passes, and the
 * watchdog (libsystemd's sd-daemon).
 *
 * Everything here does nothing when not run by systemd (no NOTIFY_SOCKET, no LISTEN_FDS, no
 * WATCHDOG_USEC), so the same binary runs from a shell, a test or a unit.
 *
 * The watchdog is pinged from the main loop, but only while every IO loop is alive: each
 * loop's heartbeat (evd_loop) must have fired within the last half watchdog period. An IO
 * loop stuck in a callback, or a deadlock, stops the pings, and systemd restarts the service
 * (Restart=on-failure), which is what WatchdogSec= is for.
 */
#pragma once

#include <event2/event.h>
#include <glib.h>

#include "evd_loop.h"

G_BEGIN_DECLS

/* The sockets passed by socket activation (LISTEN_FDS), by FileDescriptorName=: "admin" for
 * the admin port, any other name (or none) for the Thrift port. -1 when none was passed. The
 * environment variables are unset, so child processes do not inherit them. */
typedef struct {
  int thrift;
  int admin;
} EvdSystemdSockets;

gboolean evd_systemd_sockets (EvdSystemdSockets *out, GError **error);

/* sd_notify, printf-style: "READY=1\nSTATUS=..." */
void evd_systemd_notify (const char *format, ...) G_GNUC_PRINTF (1, 2);

typedef struct _EvdSystemdWatchdog EvdSystemdWatchdog;

/* Starts pinging on `base` if WATCHDOG_USEC asks for it; NULL otherwise. */
EvdSystemdWatchdog *evd_systemd_watchdog_new (struct event_base *base, EvdLoop **loops,
                                              guint n_loops);
void evd_systemd_watchdog_free (EvdSystemdWatchdog *w);

G_END_DECLS

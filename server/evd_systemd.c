/* evd_systemd: notify, socket activation and watchdog (see evd_systemd.h). */
#include "evd_systemd.h"

#include <gio/gio.h>
#include <stdarg.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

gboolean
evd_systemd_sockets (EvdSystemdSockets *out, GError **error)
{
  char **names = NULL;
  int n = sd_listen_fds_with_names (1, &names);

  out->thrift = out->admin = -1;
  if (n < 0) {
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (-n),
                 "sockets passed by systemd (LISTEN_FDS): %s", g_strerror (-n));
    return FALSE;
  }
  for (int i = 0; i < n; i++) {
    int fd = SD_LISTEN_FDS_START + i;
    gboolean admin = names != NULL && names[i] != NULL && strcmp (names[i], "admin") == 0;
    int *slot = admin ? &out->admin : &out->thrift;

    if (sd_is_socket (fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "descriptor %d passed by systemd is not a listening stream socket", fd);
      g_strfreev (names);
      return FALSE;
    }
    if (*slot >= 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "systemd passed two %s sockets; name the admin one "
                   "FileDescriptorName=admin", admin ? "admin" : "Thrift");
      g_strfreev (names);
      return FALSE;
    }
    *slot = fd;
  }
  g_strfreev (names);
  return TRUE;
}

void
evd_systemd_notify (const char *format, ...)
{
  g_autofree char *text = NULL;
  va_list ap;

  if (g_getenv ("NOTIFY_SOCKET") == NULL)
    return;
  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  sd_notify (0, text);
}

struct _EvdSystemdWatchdog {
  struct event *timer;
  EvdLoop **loops;
  guint n_loops;
  gint64 limit_us;           /* a loop behind by more than this is stuck */
  gboolean complained;
};

static void
evd_systemd_on_watchdog (evutil_socket_t fd, short what, void *arg)
{
  EvdSystemdWatchdog *w = arg;

  (void) fd;
  (void) what;
  for (guint i = 0; i < w->n_loops; i++) {
    gint64 lag = evd_loop_lag_us (w->loops[i]);
    if (lag > w->limit_us) {
      if (!w->complained)
        g_critical ("IO loop %u has not run for %" G_GINT64_FORMAT " ms: not pinging the "
                    "systemd watchdog, so that systemd restarts the service",
                    evd_loop_index (w->loops[i]), lag / 1000);
      w->complained = TRUE;
      return;
    }
  }
  w->complained = FALSE;
  sd_notify (0, "WATCHDOG=1");
}

EvdSystemdWatchdog *
evd_systemd_watchdog_new (struct event_base *base, EvdLoop **loops, guint n_loops)
{
  EvdSystemdWatchdog *w;
  guint64 usec = 0;
  struct timeval tv;

  if (sd_watchdog_enabled (0, &usec) <= 0 || usec == 0)
    return NULL;
  w = g_new0 (EvdSystemdWatchdog, 1);
  w->loops = loops;
  w->n_loops = n_loops;
  /* Ping twice per period, as sd_watchdog_enabled(3) advises; a loop is stuck when it is
   * half a period behind, so a stuck loop misses the deadline by at most one period. */
  w->limit_us = (gint64) usec / 2;
  tv.tv_sec = (time_t) (usec / 2 / G_USEC_PER_SEC);
  tv.tv_usec = (suseconds_t) (usec / 2 % G_USEC_PER_SEC);
  w->timer = event_new (base, -1, EV_PERSIST, evd_systemd_on_watchdog, w);
  event_add (w->timer, &tv);
  g_message ("systemd watchdog: pinging every %" G_GUINT64_FORMAT " ms while the %u IO loops "
             "run", usec / 2000, n_loops);
  sd_notify (0, "WATCHDOG=1");
  return w;
}

void
evd_systemd_watchdog_free (EvdSystemdWatchdog *w)
{
  if (w == NULL)
    return;
  event_free (w->timer);
  g_free (w);
}

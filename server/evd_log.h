/* evd_log: how evdal writes its log, and a limiter for messages a client can provoke.
 *
 * Messages go through GLib's structured logging, domain "evdal": to the journal with its
 * fields when stderr is connected to journald, as readable lines on a terminal otherwise.
 * Anything a remote peer can trigger at will (a bad frame, a refused connection) is logged
 * through an EvdLogLimit, so a flood of bad input cannot become a flood of log lines.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Installs the writer; `verbose` also shows debug messages. */
void evd_log_init (gboolean verbose);
gboolean evd_log_verbose (void);

/* At most EVD_LOG_LIMIT_BURST messages per second per limiter; the rest are counted and the
 * count is reported with the next message let through. One limiter per loop and purpose:
 * loops never share one, so it needs no lock. */
#define EVD_LOG_LIMIT_BURST 10

typedef struct {
  gint64 window_start_us;
  guint in_window;
  guint suppressed;
} EvdLogLimit;

/* Logs a warning unless the limiter says no. */
void evd_log_limited (EvdLogLimit *limit, const char *format, ...) G_GNUC_PRINTF (2, 3);

G_END_DECLS

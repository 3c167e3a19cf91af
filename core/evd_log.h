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
/* The config's log_level: debug, info, notice, warning or error. */
gboolean evd_log_parse_level (const char *name, GLogLevelFlags *level);
void evd_log_set_level (GLogLevelFlags level);

/* A message about one request, lookup or peer (each may be NULL): in the journal they are
 * the fields REQUEST_ID, LOOKUP and PEER; on a terminal, a "[id] peer: " prefix. Such
 * messages quote what a client sent, so control characters in the message (a newline would
 * forge a second line on a terminal) are written as '?'. */
void evd_log_event (GLogLevelFlags level, const char *request_id, const char *lookup,
                    const char *peer, const char *format, ...) G_GNUC_PRINTF (5, 6);

/* At most EVD_LOG_LIMIT_BURST messages per second per limiter; the rest are counted and the
 * count is reported with the next message let through. One limiter per loop and purpose:
 * loops never share one, so it needs no lock. */
#define EVD_LOG_LIMIT_BURST 10

typedef struct {
  gint64 window_start_us;
  guint in_window;
  guint suppressed;
} EvdLogLimit;

/* Logs a warning about `peer` (may be NULL) with evd_log_event unless the limiter says no. */
void evd_log_limited (EvdLogLimit *limit, const char *peer, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

G_END_DECLS

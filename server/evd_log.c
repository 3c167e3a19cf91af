/* evd_log: log writer and rate limiter (see evd_log.h). */
#include "evd_log.h"

#include <stdio.h>
#include <unistd.h>

static gboolean evd_log_is_verbose;

static GLogWriterOutput
evd_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
  (void) data;
  /* Info messages (start-up, listening...) are part of an operator's view; debug is opt-in. */
  if ((level & G_LOG_LEVEL_DEBUG) && !evd_log_is_verbose)
    return G_LOG_WRITER_HANDLED;
  if (g_log_writer_is_journald (fileno (stderr)) &&
      g_log_writer_journald (level, fields, n_fields, NULL) == G_LOG_WRITER_HANDLED)
    return G_LOG_WRITER_HANDLED;
  return g_log_writer_standard_streams (level, fields, n_fields, NULL);
}

void
evd_log_init (gboolean verbose)
{
  evd_log_is_verbose = verbose;
  g_log_set_writer_func (evd_log_writer, NULL, NULL);
}

gboolean
evd_log_verbose (void)
{
  return evd_log_is_verbose;
}

void
evd_log_limited (EvdLogLimit *limit, const char *format, ...)
{
  gint64 now = g_get_monotonic_time ();
  g_autofree char *message = NULL;
  va_list ap;

  if (now - limit->window_start_us >= G_USEC_PER_SEC) {
    limit->window_start_us = now;
    limit->in_window = 0;
  }
  if (limit->in_window >= EVD_LOG_LIMIT_BURST) {
    limit->suppressed++;
    return;
  }
  limit->in_window++;
  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  if (limit->suppressed > 0) {
    g_warning ("%s (and %u similar messages suppressed)", message, limit->suppressed);
    limit->suppressed = 0;
  } else {
    g_warning ("%s", message);
  }
}

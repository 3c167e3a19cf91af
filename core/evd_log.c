/* evd_log: log writer and rate limiter (see evd_log.h). */
#include "evd_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A log line quotes what clients sent (request ids, keys, lookup names, method names), and
 * the limiters count lines, not bytes: a 4 MiB request id in ten refusals a second was 40 MiB
 * of log and most of a second of its loop. So a message is cut to EVD_LOG_TEXT_MAX bytes and
 * each field (request id, lookup, peer) to EVD_LOG_FIELD_MAX, marked "...[cut: N bytes]". */
#define EVD_LOG_TEXT_MAX 1024
#define EVD_LOG_FIELD_MAX 128

static gboolean evd_log_is_verbose;
/* The least severe level written: messages of a higher GLogLevelFlags bit are dropped. Atomic:
 * a reload sets it on the main thread while the loops log. */
static gint evd_log_max = G_LOG_LEVEL_INFO;
/* GLib 2.74's terminal writer formats the time with localtime(3), one static buffer for the
 * process: two threads writing at once would garble each other's timestamps. */
static GMutex evd_log_stream_lock;

static GLogWriterOutput
evd_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
  (void) data;
  /* Info messages (start-up, listening...) are part of an operator's view; debug is opt-in. */
  GLogWriterOutput out;

  if ((level & G_LOG_LEVEL_MASK) > (GLogLevelFlags) g_atomic_int_get (&evd_log_max))
    return G_LOG_WRITER_HANDLED;
  if (g_log_writer_is_journald (fileno (stderr)) &&
      g_log_writer_journald (level, fields, n_fields, NULL) == G_LOG_WRITER_HANDLED)
    return G_LOG_WRITER_HANDLED;
  g_mutex_lock (&evd_log_stream_lock);
  out = g_log_writer_standard_streams (level, fields, n_fields, NULL);
  g_mutex_unlock (&evd_log_stream_lock);
  return out;
}

void
evd_log_init (gboolean verbose)
{
  evd_log_is_verbose = verbose;
  g_atomic_int_set (&evd_log_max, verbose ? G_LOG_LEVEL_DEBUG : G_LOG_LEVEL_INFO);
  g_log_set_writer_func (evd_log_writer, NULL, NULL);
}

static const struct {
  const char *name;
  GLogLevelFlags level;
} evd_log_levels[] = {
  { "debug", G_LOG_LEVEL_DEBUG }, { "info", G_LOG_LEVEL_INFO },
  { "notice", G_LOG_LEVEL_MESSAGE }, { "warning", G_LOG_LEVEL_WARNING },
  { "error", G_LOG_LEVEL_CRITICAL },
};

gboolean
evd_log_parse_level (const char *name, GLogLevelFlags *level)
{
  for (guint i = 0; i < G_N_ELEMENTS (evd_log_levels); i++)
    if (g_ascii_strcasecmp (name, evd_log_levels[i].name) == 0) {
      *level = evd_log_levels[i].level;
      return TRUE;
    }
  return FALSE;
}

void
evd_log_set_level (GLogLevelFlags level)
{
  /* --verbose wins over the file: it is what someone debugging asked for just now. */
  if (!evd_log_is_verbose)
    g_atomic_int_set (&evd_log_max, level);
}

/* syslog(3) priorities, as the journal wants them. */
static const char *
evd_log_priority (GLogLevelFlags level)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    return "3";
  if (level & G_LOG_LEVEL_WARNING)
    return "4";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "5";
  if (level & G_LOG_LEVEL_INFO)
    return "6";
  return "7";
}

/* Where a text of `len` bytes is cut to keep at most `max`: at a character's start. */
static gsize
evd_log_cut_at (const char *s, gsize len, gsize max)
{
  gsize n = MIN (len, max);

  while (n > 0 && n < len && ((guchar) s[n] & 0xc0) == 0x80)
    n--;
  return n;
}

/* The message, formatted into at most EVD_LOG_TEXT_MAX bytes (vsnprintf copies no more,
 * whatever the arguments' length) and marked when cut. */
static char *evd_log_format (const char *format, va_list ap) G_GNUC_PRINTF (1, 0);

static char *
evd_log_format (const char *format, va_list ap)
{
  char buf[EVD_LOG_TEXT_MAX + 1];
  int n = vsnprintf (buf, sizeof buf, format, ap);

  if (n < 0)
    return g_strdup (format);
  if ((gsize) n <= EVD_LOG_TEXT_MAX)
    return g_strdup (buf);
  return g_strdup_printf ("%.*s\xe2\x80\xa6[cut: %d bytes]",
                          (int) evd_log_cut_at (buf, EVD_LOG_TEXT_MAX, EVD_LOG_TEXT_MAX), buf, n);
}

/* A field cut to EVD_LOG_FIELD_MAX bytes, or NULL when it fits as it is. */
static char *
evd_log_cut_field (const char *s)
{
  gsize len;

  if (s == NULL || (len = strlen (s)) <= EVD_LOG_FIELD_MAX)
    return NULL;
  return g_strdup_printf ("%.*s\xe2\x80\xa6[cut: %" G_GSIZE_FORMAT " bytes]",
                          (int) evd_log_cut_at (s, len, EVD_LOG_FIELD_MAX), s, len);
}

void
evd_log_event (GLogLevelFlags level, const char *request_id, const char *lookup,
               const char *peer, const char *format, ...)
{
  g_autofree char *text = NULL;
  g_autofree char *message = NULL;
  g_autofree char *id_cut = NULL, *lookup_cut = NULL, *peer_cut = NULL;
  GLogField fields[7];
  gsize n = 0;
  va_list ap;

  if ((level & G_LOG_LEVEL_MASK) > (GLogLevelFlags) g_atomic_int_get (&evd_log_max))
    return;
  va_start (ap, format);
  text = evd_log_format (format, ap);
  va_end (ap);
  if ((id_cut = evd_log_cut_field (request_id)) != NULL)
    request_id = id_cut;
  if ((lookup_cut = evd_log_cut_field (lookup)) != NULL)
    lookup = lookup_cut;
  if ((peer_cut = evd_log_cut_field (peer)) != NULL)
    peer = peer_cut;
  /* The terminal shows MESSAGE only, so it carries the ids too; the journal gets each as a
   * field of its own (journalctl REQUEST_ID=... finds a request's every line). */
  message = g_strdup_printf ("%s%s%s%s%s%s", request_id ? "[" : "", request_id ? request_id : "",
                             request_id ? "] " : "", peer ? peer : "", peer ? ": " : "", text);
  /* The request id, call keys and lookup names are the client's: a newline in them would
   * start a line of its choosing on a terminal or in a log file. */
  for (char *p = message; *p != '\0'; p++)
    if ((guchar) *p < 0x20 || (guchar) *p == 0x7f)
      *p = '?';
  fields[n++] = (GLogField) { "MESSAGE", message, -1 };
  fields[n++] = (GLogField) { "PRIORITY", evd_log_priority (level), -1 };
  fields[n++] = (GLogField) { "GLIB_DOMAIN", G_LOG_DOMAIN, -1 };
  if (request_id != NULL)
    fields[n++] = (GLogField) { "REQUEST_ID", request_id, -1 };
  if (lookup != NULL)
    fields[n++] = (GLogField) { "LOOKUP", lookup, -1 };
  if (peer != NULL)
    fields[n++] = (GLogField) { "PEER", peer, -1 };
  g_log_structured_array (level, fields, n);
}

gboolean
evd_log_verbose (void)
{
  return evd_log_is_verbose;
}

void
evd_log_limited (EvdLogLimit *limit, const char *peer, const char *format, ...)
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
  message = evd_log_format (format, ap);
  va_end (ap);
  if (limit->suppressed > 0) {
    evd_log_event (G_LOG_LEVEL_WARNING, NULL, NULL, peer,
                   "%s (and %u similar messages suppressed)", message, limit->suppressed);
    limit->suppressed = 0;
  } else {
    evd_log_event (G_LOG_LEVEL_WARNING, NULL, NULL, peer, "%s", message);
  }
}

/* evd_log: the structured fields each message carries (what journald gets), the level
 * filter, the terminal's readable lines, and the rate limiter for what peers can provoke. */
#include <string.h>

#include "evd_log.h"

/* Every message written, as its fields; filled by the capturing writer. */
static GPtrArray *captured;  /* GHashTable *: field name -> value */

static GLogWriterOutput
capture_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
  GHashTable *m = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  (void) level;
  (void) data;
  for (gsize i = 0; i < n_fields; i++)
    g_hash_table_insert (m, g_strdup (fields[i].key),
                         fields[i].length < 0 ? g_strdup (fields[i].value)
                                              : g_strndup (fields[i].value, fields[i].length));
  g_ptr_array_add (captured, m);
  return G_LOG_WRITER_HANDLED;
}

static const char *
field (guint i, const char *key)
{
  g_assert_cmpuint (i, <, captured->len);
  return g_hash_table_lookup (captured->pdata[i], key);
}

static void
reset (void)
{
  g_ptr_array_set_size (captured, 0);
  evd_log_set_level (G_LOG_LEVEL_INFO);
}

static void
test_fields (void)
{
  reset ();
  evd_log_event (G_LOG_LEVEL_WARNING, "req-7", "user", "127.0.0.1:4242", "lookup %s failed: %d",
                 "user", 42);
  g_assert_cmpuint (captured->len, ==, 1);
  /* journalctl REQUEST_ID=req-7 finds it; the message itself stays readable alone. */
  g_assert_cmpstr (field (0, "REQUEST_ID"), ==, "req-7");
  g_assert_cmpstr (field (0, "LOOKUP"), ==, "user");
  g_assert_cmpstr (field (0, "PEER"), ==, "127.0.0.1:4242");
  g_assert_cmpstr (field (0, "PRIORITY"), ==, "4");
  g_assert_cmpstr (field (0, "GLIB_DOMAIN"), ==, "evdal");
  g_assert_cmpstr (field (0, "MESSAGE"), ==, "[req-7] 127.0.0.1:4242: lookup user failed: 42");

  /* Absent ids are absent fields, not empty ones. */
  evd_log_event (G_LOG_LEVEL_MESSAGE, NULL, NULL, NULL, "plain");
  g_assert_cmpuint (captured->len, ==, 2);
  g_assert_null (field (1, "REQUEST_ID"));
  g_assert_null (field (1, "LOOKUP"));
  g_assert_null (field (1, "PEER"));
  g_assert_cmpstr (field (1, "PRIORITY"), ==, "5");
  g_assert_cmpstr (field (1, "MESSAGE"), ==, "plain");
}

static void
test_level (void)
{
  GLogLevelFlags level = 0;

  reset ();
  g_assert_true (evd_log_parse_level ("WARNING", &level));
  g_assert_cmpint (level, ==, G_LOG_LEVEL_WARNING);
  g_assert_true (evd_log_parse_level ("notice", &level));
  g_assert_cmpint (level, ==, G_LOG_LEVEL_MESSAGE);
  g_assert_false (evd_log_parse_level ("loud", &level));

  evd_log_set_level (G_LOG_LEVEL_WARNING);
  evd_log_event (G_LOG_LEVEL_INFO, "r", NULL, NULL, "dropped");
  evd_log_event (G_LOG_LEVEL_MESSAGE, "r", NULL, NULL, "dropped too");
  g_assert_cmpuint (captured->len, ==, 0);
  evd_log_event (G_LOG_LEVEL_WARNING, "r", NULL, NULL, "kept");
  evd_log_event (G_LOG_LEVEL_CRITICAL, "r", NULL, NULL, "kept too");
  g_assert_cmpuint (captured->len, ==, 2);
  g_assert_cmpstr (field (1, "PRIORITY"), ==, "3");

  evd_log_set_level (G_LOG_LEVEL_DEBUG);
  evd_log_event (G_LOG_LEVEL_DEBUG, NULL, NULL, NULL, "now shown");
  g_assert_cmpuint (captured->len, ==, 3);
  g_assert_cmpstr (field (2, "PRIORITY"), ==, "7");
}

static void
test_limiter (void)
{
  EvdLogLimit limit = { 0 };

  reset ();
  for (int i = 0; i < 25; i++)
    evd_log_limited (&limit, "10.0.0.1:1", "bad frame %d", i);
  g_assert_cmpuint (captured->len, ==, EVD_LOG_LIMIT_BURST);
  g_assert_cmpstr (field (0, "MESSAGE"), ==, "10.0.0.1:1: bad frame 0");
  g_assert_cmpstr (field (0, "PEER"), ==, "10.0.0.1:1");
  g_assert_cmpuint (limit.suppressed, ==, 25 - EVD_LOG_LIMIT_BURST);

  /* A second later (the window moved back instead of sleeping), the next message says how
   * many were not written, and the count starts again. */
  limit.window_start_us -= G_USEC_PER_SEC;
  evd_log_limited (&limit, "10.0.0.1:1", "bad frame %d", 25);
  g_assert_cmpuint (captured->len, ==, EVD_LOG_LIMIT_BURST + 1);
  g_assert_cmpstr (field (EVD_LOG_LIMIT_BURST, "MESSAGE"), ==,
                   "10.0.0.1:1: bad frame 25 (and 15 similar messages suppressed)");
  g_assert_cmpuint (limit.suppressed, ==, 0);
  evd_log_limited (&limit, NULL, "no peer");
  g_assert_cmpstr (field (EVD_LOG_LIMIT_BURST + 1, "MESSAGE"), ==, "no peer");
  /* What a client sent cannot forge a second line. */
  evd_log_limited (&limit, NULL, "method %s", "ping\n2026-12-02 evdal: all good\x1b[0m\x7f");
  g_assert_cmpstr (field (EVD_LOG_LIMIT_BURST + 2, "MESSAGE"), ==,
                   "method ping?2026-12-02 evdal: all good?[0m?");
}

/* The real writer, on a terminal (stderr is a pipe here, not journald): one readable line. */
static void
test_terminal_line (void)
{
  if (g_test_subprocess ()) {
    evd_log_init (FALSE);
    evd_log_event (G_LOG_LEVEL_WARNING, "req-9", "orders", "unix", "slow: %d ms", 250);
    evd_log_event (G_LOG_LEVEL_DEBUG, "req-9", NULL, NULL, "debug is opt-in");
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed ();
  g_test_trap_assert_stderr ("*evdal-WARNING*[req-9] unix: slow: 250 ms*");
  /* GLib's stream writer puts debug lines on stdout: neither stream has it. */
  g_test_trap_assert_stdout_unmatched ("*debug is opt-in*");
  g_test_trap_assert_stderr_unmatched ("*debug is opt-in*");
}

static void
test_verbose_wins (void)
{
  if (g_test_subprocess ()) {
    evd_log_init (TRUE);
    evd_log_set_level (G_LOG_LEVEL_WARNING);  /* the config's, overruled by --verbose */
    evd_log_event (G_LOG_LEVEL_DEBUG, NULL, NULL, NULL, "debug shown");
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed ();
  g_test_trap_assert_stdout ("*debug shown*");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* Subprocesses install the real writer; the parent captures. A writer is set once. */
  if (!g_test_subprocess ())
    g_log_set_writer_func (capture_writer, NULL, NULL);
  captured = g_ptr_array_new_with_free_func ((GDestroyNotify) g_hash_table_unref);
  g_test_add_func ("/log/fields", test_fields);
  g_test_add_func ("/log/level", test_level);
  g_test_add_func ("/log/limiter", test_limiter);
  g_test_add_func ("/log/terminal-line", test_terminal_line);
  g_test_add_func ("/log/verbose-wins", test_verbose_wins);
  int rc = g_test_run ();
  g_ptr_array_unref (captured);
  return rc;
}

/* test_config: the INI configuration (core/evd_config.c): defaults, values, inline comments,
 * and problems that name the file, line, group and key, all reported at once. */
#include <glib/gstdio.h>
#include <string.h>

#include "evd_config.h"

static EvdConfig *
load (const char *text)
{
  return evd_config_load_data (text, strlen (text), "t.conf", "/etc/evdal");
}

/* evd_config_check's problems, one per line; NULL when there are none. */
static char **
problems (EvdConfig *cfg)
{
  g_autoptr (GError) error = NULL;

  if (evd_config_check (cfg, &error))
    return NULL;
  g_assert_error (error, EVD_CONFIG_ERROR, EVD_CONFIG_ERROR_INVALID);
  return g_strsplit (error->message, "\n", -1);
}

static void
assert_has (char **lines, const char *expected)
{
  for (guint i = 0; lines != NULL && lines[i] != NULL; i++)
    if (strstr (lines[i], expected) != NULL)
      return;
  g_error ("no problem contains \"%s\"", expected);
}

static void
test_defaults (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n");
  const EvdServerConfig *s = evd_config_server (cfg);

  g_assert_null (problems (cfg));
  g_assert_cmpstr (s->listen, ==, "127.0.0.1:9090");
  g_assert_cmpint (s->io_threads, ==, 0);
  g_assert_cmpint (s->busy_poll_us, ==, 0);
  g_assert_cmpint (s->max_connections, ==, 10000);
  g_assert_cmpint (s->max_frame_bytes, ==, 16777216);
  g_assert_cmpint (s->max_calls, ==, 64);
  g_assert_cmpint (s->max_inflight, ==, 100000);
  g_assert_cmpint (s->deadline_ms, ==, 1000);
  g_assert_cmpint (s->idle_timeout_ms, ==, 300000);
  g_assert_cmpint (s->shutdown_timeout_ms, ==, 10000);
}

static void
test_values_and_comments (void)
{
  g_autoptr (EvdConfig) cfg = load ("# a comment\n"
                                    "[server]\n"
                                    "listen = [::1]:7000\n"
                                    "deadline_ms = 250   # inline comment\n"
                                    "admin_listen = /run/a#b\n"
                                    "io_threads=3\n"
                                    "busy_poll_us = 50\n");
  const EvdServerConfig *s = evd_config_server (cfg);

  g_assert_null (problems (cfg));
  g_assert_cmpstr (s->listen, ==, "[::1]:7000");
  g_assert_cmpint (s->deadline_ms, ==, 250);
  g_assert_cmpstr (s->admin_listen, ==, "/run/a#b");  /* '#' without a blank before is text */
  g_assert_cmpint (s->io_threads, ==, 3);
  g_assert_cmpint (s->busy_poll_us, ==, 50);
  evd_config_override_listen (cfg, "/run/evdal.sock");
  g_assert_cmpstr (evd_config_server (cfg)->listen, ==, "/run/evdal.sock");
}

/* Only a comment after '=': the value is empty, not the comment. */
static void
test_value_that_is_only_a_comment (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n"
                                    "admin_listen =    # no admin endpoint\n");

  g_assert_null (problems (cfg));
  g_assert_cmpstr (evd_config_server (cfg)->admin_listen, ==, "");
}

/* Issue 13: ports past 65535 wrapped (":70000" bound 4464) and passed --check-config, and
 * the documented spelling of "off", admin_listen = "", passed the check then stopped
 * start-up. */
static void
test_listen_addresses_checked (void)
{
  static const char *const bad[][2] = {
    { "127.0.0.1:70000", "port must be a number from 0 to 65535" },
    { "127.0.0.1:65537", "port must be a number from 0 to 65535" },
    { "127.0.0.1:-1", "port must be a number from 0 to 65535" },
    { "127.0.0.1:", "port must be a number from 0 to 65535" },
    { "127.0.0.1", "expected host:port" },
    { "::1:9000", "IPv6 address needs brackets" },
    { "[::1", "expected [ipv6]:port" },
    { "[nope]:80", "not an IPv6 address" },
    { "bad host:80", "not an address or a host name" },
    { "unix:", "unix socket path is empty" },
  };
  static const char *const good[] = {
    "127.0.0.1:0", "127.0.0.1:65535", ":9090", "localhost:9090", "[::1]:0", "/run/e.sock",
    "unix:/run/e.sock",
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autofree char *text = g_strdup_printf ("[server]\nlisten = 127.0.0.1:0\n"
                                             "admin_listen = %s\n", bad[i][0]);
    g_autoptr (EvdConfig) cfg = load (text);
    g_auto (GStrv) lines = problems (cfg);

    g_assert_nonnull (lines);
    assert_has (lines, "t.conf:3: [server] admin_listen:");
    assert_has (lines, bad[i][1]);
  }
  for (guint i = 0; i < G_N_ELEMENTS (good); i++) {
    g_autofree char *text = g_strdup_printf ("[server]\nlisten = %s\n", good[i]);
    g_autoptr (EvdConfig) cfg = load (text);

    g_assert_null (problems (cfg));
  }
  for (guint i = 0; i < 2; i++) {
    g_autoptr (EvdConfig) cfg = load (i == 0 ? "[server]\nadmin_listen = \"\"\n"
                                             : "[server]\nadmin_listen = ''\n");

    g_assert_null (problems (cfg));
    g_assert_cmpstr (evd_config_server (cfg)->admin_listen, ==, "");
  }
}

static void
test_every_problem_with_its_line (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n"                    /* 1 */
                                    "io_threads = 2\n"              /* 2 */
                                    "max_connections = lots\n"      /* 3 */
                                    "deadline_ms = 0\n"             /* 4 */
                                    "max_conections = 5\n"          /* 5: a typo */
                                    "io_threads = 4\n"              /* 6: again */
                                    "this is not a key\n"           /* 7 */
                                    "[nonsense]\n"                  /* 8 */
                                    "x = 1\n");                     /* 9 */
  g_auto (GStrv) lines = problems (cfg);

  g_assert_nonnull (lines);
  assert_has (lines, "t.conf:3: [server] max_connections: \"lots\" is not an integer");
  assert_has (lines, "t.conf:4: [server] deadline_ms: 0 is out of range (1..3600000)");
  assert_has (lines, "t.conf:5: [server] max_conections: unknown key");
  assert_has (lines, "t.conf:6: [server] io_threads: set twice (first on line 2)");
  assert_has (lines, "t.conf:7: [server]: expected \"key = value\"");
  assert_has (lines, "t.conf:8: [nonsense]: unknown group");
  g_assert_cmpuint (g_strv_length (lines), ==, 6);
  /* A bad value gives its default; the last of a twice-set key wins. */
  g_assert_cmpint (evd_config_server (cfg)->max_connections, ==, 10000);
  g_assert_cmpint (evd_config_server (cfg)->io_threads, ==, 4);
}

/* A key set twice whose last value (the one GKeyFile keeps) is bad: the problem named the
 * first line, which holds a good value. A third setting still names the first. */
static void
test_bad_value_of_a_key_set_twice_names_its_line (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n"                    /* 1 */
                                    "io_threads = 2\n"              /* 2 */
                                    "max_calls = 5\n"               /* 3 */
                                    "io_threads = 3\n"              /* 4 */
                                    "io_threads = lots\n");         /* 5 */
  g_auto (GStrv) lines = problems (cfg);

  g_assert_nonnull (lines);
  assert_has (lines, "t.conf:4: [server] io_threads: set twice (first on line 2)");
  assert_has (lines, "t.conf:5: [server] io_threads: set twice (first on line 2)");
  assert_has (lines, "t.conf:5: [server] io_threads: \"lots\" is not an integer");
  g_assert_cmpuint (g_strv_length (lines), ==, 3);
}

static void
test_syntax_problems (void)
{
  g_autoptr (EvdConfig) before = load ("key = 1\n[server]\n");
  g_autoptr (EvdConfig) header = load ("[server\nio_threads = x\n");
  g_autoptr (EvdConfig) binary = evd_config_load_data ("[server]\n\xff\xfe\n", 12, "t.conf", ".");
  g_auto (GStrv) a = problems (before);
  g_auto (GStrv) b = problems (header);
  g_auto (GStrv) c = problems (binary);

  assert_has (a, "t.conf:1: a key before any [group]");
  assert_has (b, "t.conf:1: a group header must be \"[name]\"");
  assert_has (c, "t.conf: not UTF-8 text");
}

/* Names GKeyFile refuses (a key holding [ or ], a group name with [ or a control character)
 * failed the whole parse: one line-less message ("Invalid key name: ab[c"), every other
 * problem hidden, and the groups after it read as empty. Each is now a problem of its line,
 * and the rest of the file is read. */
static void
test_names_gkeyfile_refuses (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n"                    /* 1 */
                                    "ab[c = 1\n"                    /* 2 */
                                    "max_connections = lots\n"      /* 3 */
                                    "a]b = 2\n"                     /* 4 */
                                    "[lookup a[b]\n"                /* 5 */
                                    "x = 1\n"                       /* 6 */
                                    "[lookup c\001d]\n"            /* 7 */
                                    "[server2]\n"                   /* 8 */
                                    "io_threads = 3\n");            /* 9 */
  g_auto (GStrv) lines = problems (cfg);

  g_assert_nonnull (lines);
  assert_has (lines, "t.conf:2: [server] ab[c: a key name may not hold [ or ]");
  assert_has (lines, "t.conf:3: [server] max_connections: \"lots\" is not an integer");
  assert_has (lines, "t.conf:4: [server] a]b: a key name may not hold [ or ]");
  assert_has (lines, "t.conf:5: a group name may not hold [ or control characters");
  assert_has (lines, "t.conf:7: a group name may not hold [ or control characters");
  assert_has (lines, "t.conf:8: [server2]: unknown group");
  g_assert_cmpuint (g_strv_length (lines), ==, 6);
}

static void
test_groups_and_getters (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n"
                                    "[lookup b]\nbackend = delay\nflag = true\nn = 0\n"
                                    "[lookup a]\nlist = x\n"
                                    "[database main]\npath = db.sqlite\n");
  g_auto (GStrv) lookups = evd_config_groups_of_kind (cfg, "lookup");
  g_auto (GStrv) dbs = evd_config_groups_of_kind (cfg, "database");
  g_autofree char *missing = NULL;
  g_autofree char *path = NULL;
  g_auto (GStrv) keys = NULL;
  g_auto (GStrv) lines = NULL;

  g_assert_cmpuint (g_strv_length (lookups), ==, 2);
  g_assert_cmpstr (lookups[0], ==, "lookup b");  /* file order */
  g_assert_cmpstr (lookups[1], ==, "lookup a");
  g_assert_true (evd_config_bool (cfg, "lookup b", "flag", FALSE));
  g_assert_false (evd_config_bool (cfg, "lookup b", "n", TRUE));
  g_assert_cmpint (evd_config_int (cfg, "lookup b", "absent", 42, 0, 100), ==, 42);
  g_assert_cmpstr ((missing = evd_config_string (cfg, "lookup b", "backend", NULL)), ==, "delay");
  g_assert_null (evd_config_require (cfg, "lookup a", "backend"));
  keys = evd_config_keys (cfg, "lookup a");
  g_assert_cmpstr (keys[0], ==, "list");
  path = evd_config_string (cfg, "database main", "path", NULL);
  {
    g_autofree char *full = evd_config_resolve_path (cfg, path);
    g_autofree char *abs = evd_config_resolve_path (cfg, "/var/lib/x.db");
    g_assert_cmpstr (full, ==, "/etc/evdal/db.sqlite");
    g_assert_cmpstr (abs, ==, "/var/lib/x.db");
  }
  lines = problems (cfg);
  /* Claimed groups are known; every key was read; only the required key is missing. */
  g_assert_cmpuint (g_strv_length (lines), ==, 1);
  assert_has (lines, "t.conf:6: [lookup a] backend: is required");
  g_assert_cmpuint (g_strv_length (dbs), ==, 1);
}

static void
test_load_file (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("evdal-config-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "evdal.conf", NULL);
  g_autoptr (EvdConfig) cfg = NULL;
  g_autofree char *resolved = NULL;

  g_assert_null (evd_config_load ("/nonexistent/evdal.conf", &error));
  g_assert_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
  g_assert_true (g_file_set_contents (path, "[server]\nmax_calls = 9\n", -1, NULL));
  cfg = evd_config_load (path, NULL);
  g_assert_nonnull (cfg);
  g_assert_cmpstr (evd_config_path (cfg), ==, path);
  g_assert_cmpint (evd_config_server (cfg)->max_calls, ==, 9);
  resolved = evd_config_resolve_path (cfg, "sample.db");
  g_assert_true (g_str_has_prefix (resolved, dir));
  g_unlink (path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/config/defaults", test_defaults);
  g_test_add_func ("/config/values-and-comments", test_values_and_comments);
  g_test_add_func ("/config/value-only-a-comment", test_value_that_is_only_a_comment);
  g_test_add_func ("/config/every-problem-with-its-line", test_every_problem_with_its_line);
  g_test_add_func ("/config/listen-addresses-checked", test_listen_addresses_checked);
  g_test_add_func ("/config/bad-value-of-a-key-set-twice",
                   test_bad_value_of_a_key_set_twice_names_its_line);
  g_test_add_func ("/config/syntax-problems", test_syntax_problems);
  g_test_add_func ("/config/names-gkeyfile-refuses", test_names_gkeyfile_refuses);
  g_test_add_func ("/config/groups-and-getters", test_groups_and_getters);
  g_test_add_func ("/config/load-file", test_load_file);
  return g_test_run ();
}

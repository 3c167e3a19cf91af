/* test_redis: storage/evd_redis: the command template (splitting, params, the allow-list),
 * the reply -> table mapping, and clients on a real redis-server started here in a temporary
 * folder (pipelining, timeouts with tombstones, DEBUG SLEEP, AUTH, a server killed and
 * restarted). Exits 77 (skipped) without redis-server. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <glib/gstdio.h>

#include "evd_redis.h"

/* ---- Helpers: a reply parsed from RESP bytes, a command's arguments. ---- */

static redisReply *
parse_resp (const char *bytes, gsize len)
{
  redisReader *r = redisReaderCreate ();
  void *reply = NULL;

  g_assert_cmpint (redisReaderFeed (r, bytes, len), ==, REDIS_OK);
  g_assert_cmpint (redisReaderGetReply (r, &reply), ==, REDIS_OK);
  g_assert_nonnull (reply);
  redisReaderFree (r);
  return reply;
}

/* The arguments of a formatted command (a RESP array of bulk strings, which the reply parser
 * reads too): what the server will see. */
static redisReply *
format_args (const char *template, const EvdParam *params, guint n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new (template, &error);
  char *cmd;
  gsize len;
  redisReply *r;

  g_assert_no_error (error);
  cmd = evd_redis_template_format (t, params, n, &len, &error);
  g_assert_no_error (error);
  r = parse_resp (cmd, len);
  free (cmd);
  g_assert_cmpint (r->type, ==, REDIS_REPLY_ARRAY);
  return r;
}

static void
assert_arg (const redisReply *r, guint i, const char *want, gsize want_len)
{
  g_assert_cmpuint (i, <, r->elements);
  g_assert_cmpint (r->element[i]->type, ==, REDIS_REPLY_STRING);
  g_assert_cmpmem (r->element[i]->str, r->element[i]->len, want, want_len);
}

static EvdParam
text_param (const char *name, const char *text, gsize len)
{
  return (EvdParam) { name, { EVD_VALUE_TEXT, 0, 0, text, (guint32) len } };
}

/* ---- Templates. ---- */

static void
test_template_split (void)
{
  redisReply *r = format_args ("  HGET   user:{id}   \"full name\"  ", (EvdParam[]) {
                                 { "id", { EVD_VALUE_INT, 42, 0, NULL, 0 } } }, 1);

  g_assert_cmpuint (r->elements, ==, 3);
  assert_arg (r, 0, "HGET", 4);
  assert_arg (r, 1, "user:42", 7);
  assert_arg (r, 2, "full name", 9);
  freeReplyObject (r);

  /* Braces doubled are literal (a cluster hash tag), quotes and backslashes escaped. */
  r = format_args ("GET {{tag}}:{id}:x \"a\\\"b\\\\c\" \"\"", (EvdParam[]) {
                     text_param ("id", "7", 1) }, 1);
  g_assert_cmpuint (r->elements, ==, 4);
  assert_arg (r, 1, "{tag}:7:x", 9);
  assert_arg (r, 2, "a\"b\\c", 5);
  assert_arg (r, 3, "", 0);
  freeReplyObject (r);
}

/* A param is one argument's text, whatever it holds: blanks, CRLF, RESP fragments, NUL. */
static void
test_template_injection (void)
{
  static const char *const evil[] = {
    "a b c", "x\r\nSET k v\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", "\"", "{id}", "",
  };

  for (guint i = 0; i < G_N_ELEMENTS (evil); i++) {
    EvdParam p[] = { text_param ("k", evil[i], strlen (evil[i])) };
    redisReply *r = format_args ("MGET pre{k}post {k}", p, 1);
    g_autofree char *both = g_strconcat ("pre", evil[i], "post", NULL);

    g_assert_cmpuint (r->elements, ==, 3);
    assert_arg (r, 1, both, strlen (both));
    assert_arg (r, 2, evil[i], strlen (evil[i]));
    freeReplyObject (r);
  }
  {
    static const char blob[] = { 'a', '\0', '\r', '\n', (char) 0xff };
    EvdParam p[] = { { "k", { EVD_VALUE_BLOB, 0, 0, blob, sizeof blob } } };
    redisReply *r = format_args ("GET {k}", p, 1);

    assert_arg (r, 1, blob, sizeof blob);
    freeReplyObject (r);
  }
}

static void
test_template_refused (void)
{
  static const struct { const char *text, *message; } cases[] = {
    { "SET k v", "command SET is not an allowed read-only command" },
    { "del k", "command DEL is not" },
    { "EVAL \"return 1\" 0", "command EVAL is not" },
    { "DEBUG SLEEP 2", "command DEBUG is not" },
    { "{cmd} k", "must be written out" },
    { "G{x}ET k", "must be written out" },
    { "", "no command" },
    { "GET \"k", "not closed" },
    { "GET {1x}", "a { starts a {param}" },
    { "GET {a b}", "a { starts a {param}" },
    { "GET a}", "a lone }" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    EvdRedisTemplate *t = evd_redis_template_new (cases[i].text, &error);

    g_assert_null (t);
    g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE);
    if (strstr (error->message, cases[i].message) == NULL)
      g_error ("\"%s\": %s", cases[i].text, error->message);
  }
  {
    g_autoptr (GString) many = g_string_new ("MGET");
    g_autoptr (GError) error = NULL;

    for (int i = 0; i < EVD_REDIS_MAX_ARGS; i++)
      g_string_append (many, " k");
    g_assert_null (evd_redis_template_new (many->str, &error));
    g_assert_nonnull (strstr (error->message, "more than"));
  }
}

static void
test_template_shapes (void)
{
  static const struct { const char *text; EvdRedisShape shape; const char *cmd; } cases[] = {
    { "hgetall h:{id}", EVD_REDIS_SHAPE_FIELD_VALUE, "HGETALL" },
    { "ZRANGE z 0 -1 WITHSCORES", EVD_REDIS_SHAPE_MEMBER_SCORE, "ZRANGE" },
    { "zrevrange z 0 {n} withscores", EVD_REDIS_SHAPE_MEMBER_SCORE, "ZREVRANGE" },
    { "ZRANGEBYSCORE z -inf +inf WITHSCORES LIMIT 0 5", EVD_REDIS_SHAPE_MEMBER_SCORE,
      "ZRANGEBYSCORE" },
    { "ZRANGE z 0 -1", EVD_REDIS_SHAPE_VALUE, "ZRANGE" },
    { "HMGET h a b", EVD_REDIS_SHAPE_VALUE, "HMGET" },
    { "GET WITHSCORES", EVD_REDIS_SHAPE_VALUE, "GET" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (EvdRedisTemplate) t = evd_redis_template_new (cases[i].text, &error);

    g_assert_no_error (error);
    g_assert_cmpint (evd_redis_template_shape (t), ==, cases[i].shape);
    g_assert_cmpstr (evd_redis_template_command (t), ==, cases[i].cmd);
  }
  {
    g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("MGET {b} {a} x{b}", NULL);

    g_assert_cmpuint (evd_redis_template_n_params (t), ==, 2);
    g_assert_cmpstr (evd_redis_template_param (t, 0), ==, "b");
    g_assert_cmpstr (evd_redis_template_param (t, 1), ==, "a");
  }
}

static void
test_param_text (void)
{
  static const struct { double r; const char *text; } reals[] = {
    { 0.1, "0.1" }, { 1.5, "1.5" }, { 100, "100" }, { -2.25, "-2.25" }, { 1e300, "1e+300" },
    { 1.0000000000000002, "1.0000000000000002" }, { 0.30000000000000004, "0.30000000000000004" },
    { 1.0 / 3, "0.3333333333333333" }, { INFINITY, "inf" }, { -INFINITY, "-inf" },
  };
  g_autoptr (GString) s = g_string_new (NULL);
  EvdValue v = { EVD_VALUE_INT, G_MININT64, 0, NULL, 0 };

  g_assert_true (evd_redis_param_text (&v, s));
  g_assert_cmpstr (s->str, ==, "-9223372036854775808");
  {
    static const struct { gint64 i; const char *text; } ints[] = {
      { 0, "0" }, { -1, "-1" }, { 7, "7" }, { 10, "10" }, { 1234567890, "1234567890" },
      { G_MAXINT64, "9223372036854775807" },
    };

    for (guint i = 0; i < G_N_ELEMENTS (ints); i++) {
      v = (EvdValue) { EVD_VALUE_INT, ints[i].i, 0, NULL, 0 };
      g_string_truncate (s, 0);
      g_assert_true (evd_redis_param_text (&v, s));
      g_assert_cmpstr (s->str, ==, ints[i].text);
    }
  }
  for (guint i = 0; i < G_N_ELEMENTS (reals); i++) {
    v = (EvdValue) { EVD_VALUE_REAL, 0, reals[i].r, NULL, 0 };
    g_string_truncate (s, 0);
    g_assert_true (evd_redis_param_text (&v, s));
    g_assert_cmpstr (s->str, ==, reals[i].text);
  }
  v = (EvdValue) { EVD_VALUE_NULL, 0, 0, NULL, 0 };
  g_assert_false (evd_redis_param_text (&v, s));
}

static void
test_template_bad_params (void)
{
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("GET {k}", NULL);
  EvdParam null_param = { "k", { EVD_VALUE_NULL, 0, 0, NULL, 0 } };
  gsize len;

  for (guint n = 0; n < 2; n++) {
    g_autoptr (GError) error = NULL;

    g_assert_null (evd_redis_template_format (t, &null_param, n, &len, &error));
    g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_BAD_PARAMS);
    g_assert_nonnull (strstr (error->message, n ? "null" : "missing"));
  }
}

/* ---- The reply mapper. ---- */

static EvdRows *
map (const char *resp, gsize len, EvdRedisShape shape, GError **error)
{
  redisReply *r = parse_resp (resp, len);
  EvdRows *rows = evd_redis_reply_rows (r, shape, error);

  freeReplyObject (r);
  return rows;
}
#define MAP(lit, shape, err) map (lit, sizeof lit - 1, shape, err)

static void
assert_cell_text (EvdRows *t, guint row, guint col, EvdValueKind kind, const char *want,
                  gsize len)
{
  const EvdCell *c = evd_rows_cell (t, row, col);

  g_assert_cmpint (c->kind, ==, kind);
  g_assert_cmpmem (evd_rows_cell_data (t, c), c->len, want, len);
}

static void
assert_columns (EvdRows *t, const char *a, const char *b)
{
  g_assert_cmpuint (evd_rows_n_columns (t), ==, b ? 2 : 1);
  g_assert_cmpstr (evd_rows_column (t, 0), ==, a);
  if (b)
    g_assert_cmpstr (evd_rows_column (t, 1), ==, b);
}

static void
test_reply_scalars (void)
{
  g_autoptr (GError) error = NULL;
  EvdRows *t;

  t = MAP ("$5\r\nhello\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  assert_columns (t, "value", NULL);
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 1);
  assert_cell_text (t, 0, 0, EVD_VALUE_TEXT, "hello", 5);
  evd_rows_unref (t);
  t = MAP ("$3\r\na\0b\r\n", EVD_REDIS_SHAPE_VALUE, &error);   /* NUL is valid UTF-8 */
  assert_cell_text (t, 0, 0, EVD_VALUE_TEXT, "a\0b", 3);
  evd_rows_unref (t);
  t = MAP ("$2\r\n\xff\xfe\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  assert_cell_text (t, 0, 0, EVD_VALUE_BLOB, "\xff\xfe", 2);
  evd_rows_unref (t);
  t = MAP ("$-1\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  assert_columns (t, "value", NULL);
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 0);
  evd_rows_unref (t);
  t = MAP (":-42\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  g_assert_cmpint (evd_rows_cell (t, 0, 0)->kind, ==, EVD_VALUE_INT);
  g_assert_cmpint (evd_rows_cell (t, 0, 0)->v.i, ==, -42);
  evd_rows_unref (t);
  t = MAP ("+hash\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  assert_cell_text (t, 0, 0, EVD_VALUE_TEXT, "hash", 4);
  evd_rows_unref (t);
  g_assert_no_error (error);

  g_assert_null (MAP ("-WRONGTYPE Operation against a key\r\n", EVD_REDIS_SHAPE_VALUE, &error));
  g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY);
  g_assert_cmpstr (error->message, ==, "WRONGTYPE Operation against a key");
}

static void
test_reply_arrays (void)
{
  g_autoptr (GError) error = NULL;
  EvdRows *t;

  t = MAP ("*4\r\n$1\r\na\r\n$-1\r\n:7\r\n$1\r\n\x80\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  g_assert_no_error (error);
  assert_columns (t, "value", NULL);
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 4);
  assert_cell_text (t, 0, 0, EVD_VALUE_TEXT, "a", 1);
  g_assert_cmpint (evd_rows_cell (t, 1, 0)->kind, ==, EVD_VALUE_NULL);
  g_assert_cmpint (evd_rows_cell (t, 2, 0)->v.i, ==, 7);
  assert_cell_text (t, 3, 0, EVD_VALUE_BLOB, "\x80", 1);
  evd_rows_unref (t);
  t = MAP ("*0\r\n", EVD_REDIS_SHAPE_VALUE, &error);
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 0);
  evd_rows_unref (t);

  t = MAP ("*4\r\n$4\r\nname\r\n$3\r\nAda\r\n$4\r\ncart\r\n$1\r\n3\r\n",
           EVD_REDIS_SHAPE_FIELD_VALUE, &error);
  assert_columns (t, "field", "value");
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 2);
  assert_cell_text (t, 0, 0, EVD_VALUE_TEXT, "name", 4);
  assert_cell_text (t, 0, 1, EVD_VALUE_TEXT, "Ada", 3);
  assert_cell_text (t, 1, 0, EVD_VALUE_TEXT, "cart", 4);
  assert_cell_text (t, 1, 1, EVD_VALUE_TEXT, "3", 1);
  evd_rows_unref (t);
  t = MAP ("*0\r\n", EVD_REDIS_SHAPE_FIELD_VALUE, &error);   /* no such hash */
  assert_columns (t, "field", "value");
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 0);
  evd_rows_unref (t);

  t = MAP ("*6\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$4\r\n-inf\r\n$1\r\nc\r\n$2\r\n10\r\n",
           EVD_REDIS_SHAPE_MEMBER_SCORE, &error);
  g_assert_no_error (error);
  assert_columns (t, "member", "score");
  g_assert_cmpuint (evd_rows_n_rows (t), ==, 3);
  assert_cell_text (t, 0, 0, EVD_VALUE_TEXT, "a", 1);
  g_assert_cmpint (evd_rows_cell (t, 0, 1)->kind, ==, EVD_VALUE_REAL);
  g_assert_cmpfloat (evd_rows_cell (t, 0, 1)->v.r, ==, 1.5);
  g_assert_cmpfloat (evd_rows_cell (t, 1, 1)->v.r, ==, -INFINITY);
  g_assert_cmpfloat (evd_rows_cell (t, 2, 1)->v.r, ==, 10);
  evd_rows_unref (t);

  g_assert_null (MAP ("*1\r\n$1\r\na\r\n", EVD_REDIS_SHAPE_FIELD_VALUE, &error));
  g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY);
  g_clear_error (&error);
  g_assert_null (MAP ("*2\r\n$1\r\na\r\n$1\r\nx\r\n", EVD_REDIS_SHAPE_MEMBER_SCORE, &error));
  g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY);
  g_clear_error (&error);
  g_assert_null (MAP ("*1\r\n*1\r\n:1\r\n", EVD_REDIS_SHAPE_VALUE, &error));
  g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY);
  g_clear_error (&error);
  g_assert_null (MAP ("$1\r\na\r\n", EVD_REDIS_SHAPE_FIELD_VALUE, &error));
  g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY);
}

static void
test_address (void)
{
  static const char *const good[] = { "127.0.0.1:6379", "[::1]:6379", "cache.internal:6380",
                                      "/run/redis/redis.sock" };
  static const char *const bad[] = { "127.0.0.1", "host:0", "host:70000", ":6379", "host:x",
                                     "relative.sock", "" };

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    g_assert_true (evd_redis_address_check (good[i], NULL));
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GError) error = NULL;

    g_assert_false (evd_redis_address_check (bad[i], &error));
    g_assert_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_ADDRESS);
  }
}

/* ---- A real server. ---- */

typedef struct {
  char *dir;
  char *sock;
  GPid pid;
  const char *password;
} Server;

static char *
side_command (const char *sock, int argc, const char **argv, gboolean wait_reply)
{
  struct sockaddr_un un = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);
  char *cmd = NULL;
  int len = redisFormatCommandArgv (&cmd, argc, argv, NULL);
  redisReader *r;
  void *reply = NULL;
  char *text;

  /* a server that never answers fails the test rather than hanging it */
  struct timeval tv = { 20, 0 };

  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  g_strlcpy (un.sun_path, sock, sizeof un.sun_path);
  if (connect (fd, (struct sockaddr *) &un, sizeof un) != 0) {
    close (fd);
    free (cmd);
    return NULL;
  }
  g_assert_cmpint (write (fd, cmd, (size_t) len), ==, len);
  free (cmd);
  if (!wait_reply) {
    shutdown (fd, SHUT_WR);  /* the server runs it even if we go */
    close (fd);
    return g_strdup ("sent");
  }
  r = redisReaderCreate ();
  while (reply == NULL) {
    char buf[4096];
    ssize_t n = read (fd, buf, sizeof buf);

    if (n <= 0)
      break;
    redisReaderFeed (r, buf, (size_t) n);
    g_assert_cmpint (redisReaderGetReply (r, &reply), ==, REDIS_OK);
  }
  close (fd);
  redisReaderFree (r);
  if (reply == NULL)
    return NULL;
  text = ((redisReply *) reply)->str ? g_strdup (((redisReply *) reply)->str)
                                     : g_strdup_printf ("%lld", ((redisReply *) reply)->integer);
  freeReplyObject (reply);
  return text;
}

static void
server_child_setup (gpointer data)
{
  (void) data;
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

static void
server_start (Server *s)
{
  g_autofree char *log = g_build_filename (s->dir, "redis.log", NULL);
  const char *argv[32] = {
    "redis-server", "--port", "0", "--unixsocket", s->sock, "--unixsocketperm", "700",
    "--save", "", "--appendonly", "no", "--dir", s->dir, "--logfile", log,
    "--enable-debug-command", "local", "--daemonize", "no",
  };
  int argc = 19;
  g_autoptr (GError) error = NULL;
  gint64 until = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  if (s->password != NULL) {
    argv[argc++] = "--requirepass";
    argv[argc++] = s->password;
  }
  /* Its output to /dev/null and its life tied to this process: a test that fails aborts
   * without server_free, and a server left running held the test's stdout (ctest's pipe)
   * open, so the run waited on it after the failure. */
  g_assert_true (g_spawn_async (NULL, (char **) argv, NULL,
                                G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                                G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                                server_child_setup, NULL, &s->pid, &error));
  g_assert_no_error (error);
  for (;;) {
    const char *ping[] = { "PING" };
    g_autofree char *pong = side_command (s->sock, 1, ping, TRUE);

    if (pong != NULL)
      break;
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    g_usleep (20000);
  }
}

static void
server_kill (Server *s)
{
  int status;

  kill (s->pid, SIGKILL);
  waitpid (s->pid, &status, 0);
  g_spawn_close_pid (s->pid);
  g_unlink (s->sock);
}

static void
server_new (Server *s, const char *password)
{
  s->dir = g_dir_make_tmp ("evd-redis-XXXXXX", NULL);
  s->sock = g_build_filename (s->dir, "redis.sock", NULL);
  s->password = password;
  server_start (s);
}

static void
server_free (Server *s)
{
  g_autofree char *log = g_build_filename (s->dir, "redis.log", NULL);

  server_kill (s);
  g_unlink (log);
  g_rmdir (s->dir);
  g_free (s->dir);
  g_free (s->sock);
}

static void
server_set (Server *s, const char *key, const char *value)
{
  const char *argv[] = { "SET", key, value };
  g_autofree char *ok = side_command (s->sock, 3, argv, TRUE);

  g_assert_cmpstr (ok, ==, "OK");
}

/* Waits until the server's main thread sleeps in DEBUG SLEEP (the system call it is in is a
 * nanosleep: 35 or 230 on x86-64, 101 or 115 on arm64), rather than for a fixed time. */
static void
server_wait_asleep (Server *s)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/syscall", (int) s->pid);
  gint64 until = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  for (;;) {
    g_autofree char *text = NULL;
    long nr;

    g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
    nr = strtol (text, NULL, 10);
#if defined(__x86_64__)
    if (nr == 35 || nr == 230)
#else
    if (nr == 101 || nr == 115)
#endif
      return;
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    g_usleep (1000);
  }
}

/* One call's outcome, as the test sees it. */
typedef struct {
  gboolean done;
  int code;                 /* -1: rows */
  char *value;              /* the first cell's text, or the error message */
  gint64 at_us;
} Outcome;

static void
on_done (gpointer data, EvdRows *rows, const GError *error)
{
  Outcome *o = data;

  g_assert_false (o->done);
  o->done = TRUE;
  o->at_us = g_get_monotonic_time ();
  if (error != NULL) {
    o->code = error->code;
    o->value = g_strdup (error->message);
    return;
  }
  o->code = -1;
  if (evd_rows_n_rows (rows) > 0) {
    const EvdCell *c = evd_rows_cell (rows, 0, 0);

    o->value = c->kind == EVD_VALUE_INT ? g_strdup_printf ("%" G_GINT64_FORMAT, c->v.i)
                                        : g_strndup ((const char *) evd_rows_cell_data (rows, c),
                                                     c->len);
  }
  evd_rows_unref (rows);
}

static gboolean
all_done (Outcome *o, guint n)
{
  for (guint i = 0; i < n; i++)
    if (!o[i].done)
      return FALSE;
  return TRUE;
}

/* Runs the base until the n outcomes are done, or fails after `seconds`. */
static void
run_until_done (struct event_base *base, Outcome *o, guint n, double seconds)
{
  gint64 until = g_get_monotonic_time () + (gint64) (seconds * G_USEC_PER_SEC);

  while (!all_done (o, n)) {
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    event_base_loop (base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    g_usleep (200);
  }
}

static void
run_until_up (struct event_base *base, EvdRedisClient *c, guint n, double seconds)
{
  gint64 until = g_get_monotonic_time () + (gint64) (seconds * G_USEC_PER_SEC);

  while (evd_redis_client_connections_up (c) < n) {
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    event_base_loop (base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    g_usleep (500);
  }
}

static void
outcomes_clear (Outcome *o, guint n)
{
  for (guint i = 0; i < n; i++)
    g_free (o[i].value);
  memset (o, 0, n * sizeof *o);
}

/* Runs the base until the client has lost (or been refused) `n` connections in all. */
static void
run_until_losses (struct event_base *base, EvdRedisStats *stats, gint64 n, double seconds)
{
  gint64 until = g_get_monotonic_time () + (gint64) (seconds * G_USEC_PER_SEC);

  while (__atomic_load_n (&stats->losses, __ATOMIC_RELAXED) < n) {
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    event_base_loop (base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    g_usleep (500);
  }
}

/* Calls until one fails inside evd_redis_client_call (no connection up): `o` then holds it. */
static void
call_until_refused (struct event_base *base, EvdRedisClient *c, const EvdRedisTemplate *t,
                    const EvdParam *p, Outcome *o)
{
  gint64 until = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  while (evd_redis_client_call (c, t, p, 1, g_get_monotonic_time () + 10 * G_USEC_PER_SEC,
                                on_done, o) != NULL) {
    run_until_done (base, o, 1, 10);
    outcomes_clear (o, 1);
    g_assert_cmpint (g_get_monotonic_time (), <, until);
  }
}

static gint64
later (int ms)
{
  return g_get_monotonic_time () + ms * 1000;
}

/* 300 pipelined GETs on one connection, each answered with its own key's value. */
static void
test_client_pipeline (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("GET k:{i}", NULL);
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, NULL, 0, 0 };
  Outcome o[300] = { 0 };
  EvdRedisClient *c;

  server_new (&s, NULL);
  opts.address = s.sock;
  for (int i = 0; i < 300; i += 2) {  /* odd keys are missing: nil, zero rows */
    g_autofree char *k = g_strdup_printf ("k:%d", i), *v = g_strdup_printf ("v%d", i);

    server_set (&s, k, v);
  }
  c = evd_redis_client_new (base, &opts);
  for (int i = 0; i < 300; i++) {
    EvdParam p = { "i", { EVD_VALUE_INT, i, 0, NULL, 0 } };

    g_assert_nonnull (evd_redis_client_call (c, t, &p, 1, later (10000), on_done, &o[i]));
  }
  run_until_done (base, o, 300, 10);
  for (int i = 0; i < 300; i++) {
    g_autofree char *want = i % 2 ? NULL : g_strdup_printf ("v%d", i);

    g_assert_cmpint (o[i].code, ==, -1);
    g_assert_cmpstr (o[i].value, ==, want);
  }
  outcomes_clear (o, 300);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* The server sleeps 2 s (DEBUG SLEEP 2): calls with short deadlines answer TIMEOUT well before it wakes; the
 * calls sent behind them on the same connection are answered with their own replies (the
 * timed-out calls' replies are dropped as tombstones); an error reply fails only its call. */
static void
test_client_slow_server (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) get = evd_redis_template_new ("GET {k}", NULL);
  g_autoptr (EvdRedisTemplate) hgetall = evd_redis_template_new ("HGETALL {k}", NULL);
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, NULL, 0, 0 };
  const char *sleep_cmd[] = { "DEBUG", "SLEEP", "2" };
  Outcome o[6] = { 0 };
  EvdParam pa = text_param ("k", "a", 1), pb = text_param ("k", "b", 1);
  EvdRedisClient *c;
  gint64 t0;
  g_autofree char *sent = NULL;

  server_new (&s, NULL);
  opts.address = s.sock;
  server_set (&s, "a", "A");
  server_set (&s, "b", "B");
  c = evd_redis_client_new (base, &opts);
  run_until_up (base, c, 1, 10);
  sent = side_command (s.sock, 3, sleep_cmd, FALSE);
  server_wait_asleep (&s);
  t0 = g_get_monotonic_time ();
  evd_redis_client_call (c, get, &pa, 1, later (150), on_done, &o[0]);
  evd_redis_client_call (c, get, &pb, 1, later (150), on_done, &o[1]);
  evd_redis_client_call (c, get, &pb, 1, later (20000), on_done, &o[2]);
  evd_redis_client_call (c, hgetall, &pa, 1, later (20000), on_done, &o[3]);  /* WRONGTYPE */
  evd_redis_client_call (c, get, &pa, 1, later (20000), on_done, &o[4]);
  run_until_done (base, o, 2, 10);
  for (int i = 0; i < 2; i++) {
    g_assert_cmpint (o[i].code, ==, EVD_REDIS_ERROR_TIMEOUT);
    /* answered at its deadline (150 ms), not when the server wakes (2 s) */
    g_assert_cmpint (o[i].at_us - t0, <, 1500000);
  }
  g_assert_false (o[2].done);
  run_until_done (base, o, 5, 20);
  g_assert_cmpint (o[2].code, ==, -1);
  g_assert_cmpstr (o[2].value, ==, "B");
  g_assert_cmpint (o[3].code, ==, EVD_REDIS_ERROR_REPLY);
  g_assert_true (g_str_has_prefix (o[3].value, "WRONGTYPE"));
  g_assert_cmpint (o[4].code, ==, -1);
  g_assert_cmpstr (o[4].value, ==, "A");
  /* cancel: completes now, the next call still gets its own reply */
  {
    EvdRedisCall *rc = evd_redis_client_call (c, get, &pb, 1, later (20000), on_done, &o[5]);

    evd_redis_call_cancel (rc);
    g_assert_cmpint (o[5].code, ==, EVD_REDIS_ERROR_CANCELLED);
    outcomes_clear (o, 6);
    evd_redis_client_call (c, get, &pa, 1, later (20000), on_done, &o[0]);
    run_until_done (base, o, 1, 10);
    g_assert_cmpstr (o[0].value, ==, "A");
  }
  g_assert_cmpuint (evd_redis_client_connections_up (c), ==, 1);   /* never lost */
  outcomes_clear (o, 6);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* Killed with calls in flight: they fail UNAVAILABLE at once; while the server is gone, calls
 * fail at once naming the database; after it is back, calls are answered again. */
static void
test_client_restart (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) get = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 2, &stats, 0, 0 };
  const char *sleep_cmd[] = { "DEBUG", "SLEEP", "5" };
  EvdParam pa = text_param ("k", "a", 1);
  Outcome o[20] = { 0 };
  EvdRedisClient *c;
  g_autofree char *sent = NULL;

  server_new (&s, NULL);
  opts.address = s.sock;
  server_set (&s, "a", "A");
  c = evd_redis_client_new (base, &opts);
  run_until_up (base, c, 2, 10);
  g_assert_cmpint (g_atomic_int_get (&stats.connections), ==, 2);
  sent = side_command (s.sock, 3, sleep_cmd, FALSE);
  server_wait_asleep (&s);
  for (int i = 0; i < 10; i++)
    evd_redis_client_call (c, get, &pa, 1, later (20000), on_done, &o[i]);
  g_assert_cmpint (g_atomic_int_get (&stats.in_flight), ==, 10);
  server_kill (&s);
  run_until_done (base, o, 10, 5);
  for (int i = 0; i < 10; i++) {
    g_assert_cmpint (o[i].code, ==, EVD_REDIS_ERROR_UNAVAILABLE);
    g_assert_nonnull (strstr (o[i].value, "database cache: connection lost"));
  }
  g_assert_cmpint (g_atomic_int_get (&stats.connections), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&stats.in_flight), ==, 0);
  /* down: fails inside the call */
  g_assert_null (evd_redis_client_call (c, get, &pa, 1, later (20000), on_done, &o[10]));
  g_assert_cmpint (o[10].code, ==, EVD_REDIS_ERROR_UNAVAILABLE);
  g_assert_true (g_str_has_prefix (o[10].value, "database cache unavailable: "));
  /* retries meanwhile find no socket; then the server is back on the same path */
  run_until_losses (base, &stats, 3, 10);   /* 2 lost, 1 retry */
  server_start (&s);
  server_set (&s, "a", "A2");
  run_until_up (base, c, 2, 10);   /* the backoff is at most 2 s */
  evd_redis_client_call (c, get, &pa, 1, later (20000), on_done, &o[11]);
  run_until_done (base, o + 11, 1, 10);
  g_assert_cmpstr (o[11].value, ==, "A2");
  outcomes_clear (o, 20);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* A server that answers nothing for longer than stuck_ms: the connection is closed and made
 * again (its tombstones go with it), and calls are answered once the server is back. */
static void
test_client_stuck (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) get = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 300, 0 };
  const char *sleep_cmd[] = { "DEBUG", "SLEEP", "2" };
  EvdParam pa = text_param ("k", "a", 1);
  Outcome o[2] = { 0 };
  g_autofree char *sent = NULL;
  EvdRedisClient *c;

  server_new (&s, NULL);
  opts.address = s.sock;
  server_set (&s, "a", "A");
  c = evd_redis_client_new (base, &opts);
  run_until_up (base, c, 1, 10);
  sent = side_command (s.sock, 3, sleep_cmd, FALSE);
  server_wait_asleep (&s);
  /* One call, due after stuck_ms: when its deadline passes it answers TIMEOUT, and then its
   * tombstone, the head of the FIFO, has waited longer than stuck_ms. */
  evd_redis_client_call (c, get, &pa, 1, later (400), on_done, &o[0]);
  run_until_done (base, o, 1, 10);
  g_assert_cmpint (o[0].code, ==, EVD_REDIS_ERROR_TIMEOUT);
  g_assert_cmpint (stats.losses, ==, 1);
  g_assert_cmpint (stats.in_flight, ==, 0);    /* the tombstone went with the connection */
  run_until_up (base, c, 1, 20);               /* once the server is awake again */
  evd_redis_client_call (c, get, &pa, 1, later (10000), on_done, &o[1]);
  run_until_done (base, o + 1, 1, 10);
  g_assert_cmpstr (o[1].value, ==, "A");
  outcomes_clear (o, 2);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

static void
test_client_auth (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) get = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisOptions opts = { "cache", NULL, "s3cret pass", 1, NULL, 0, 0 };
  EvdParam pa = text_param ("k", "a", 1);
  Outcome o[2] = { 0 };
  EvdRedisClient *c;

  server_new (&s, "s3cret pass");
  opts.address = s.sock;
  c = evd_redis_client_new (base, &opts);
  evd_redis_client_call (c, get, &pa, 1, later (10000), on_done, &o[0]);  /* queued behind AUTH */
  run_until_done (base, o, 1, 10);
  g_assert_cmpint (o[0].code, ==, -1);
  g_assert_null (o[0].value);
  evd_redis_client_free (c);

  opts.password = "wrong";
  c = evd_redis_client_new (base, &opts);
  evd_redis_client_call (c, get, &pa, 1, later (10000), on_done, &o[1]);
  run_until_done (base, o + 1, 1, 10);
  g_assert_cmpint (o[1].code, ==, EVD_REDIS_ERROR_UNAVAILABLE);
  g_assert_nonnull (strstr (o[1].value, "AUTH: WRONGPASS"));
  outcomes_clear (o, 2);
  /* and the client says why when it is down */
  call_until_refused (base, c, get, &pa, &o[0]);
  g_assert_nonnull (strstr (o[0].value, "unavailable: AUTH: WRONGPASS"));
  outcomes_clear (o, 2);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* Lets one client in: this one, a connection kept open (PING answered), returned. */
static int
server_fill (Server *s)
{
  const char *one_client[] = { "CONFIG", "SET", "maxclients", "1" };
  g_autofree char *ok = side_command (s->sock, 4, one_client, TRUE);
  struct sockaddr_un un = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM, 0);
  struct timeval tv = { 20, 0 };
  char buf[16];

  g_assert_cmpstr (ok, ==, "OK");
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  g_strlcpy (un.sun_path, s->sock, sizeof un.sun_path);
  g_assert_cmpint (connect (fd, (struct sockaddr *) &un, sizeof un), ==, 0);
  g_assert_cmpint (write (fd, "PING\r\n", 6), ==, 6);
  g_assert_cmpint (read (fd, buf, sizeof buf), ==, 7);
  g_assert_cmpmem (buf, 7, "+PONG\r\n", 7);
  return fd;
}

/* Lets every client in again, through the one that was in (server_fill), and closes it. */
static void
server_let_in (int hold)
{
  const char *let_in = "CONFIG SET maxclients 10000\r\n";
  char buf[16];

  g_assert_cmpint (write (hold, let_in, strlen (let_in)), ==, (gssize) strlen (let_in));
  g_assert_cmpint (read (hold, buf, sizeof buf), ==, 5);
  close (hold);
}

/* Redis at its maxclients accepts a connection, writes "-ERR max number of clients reached"
 * and closes it. Such a connection never worked: it is made again after the backoff, doubling
 * (100-200 ms, 200-400, 400-800...), not every 100-200 ms forever as when being connected
 * counted as working; calls refused meanwhile give Redis's reason. Once the server lets it
 * in, calls are answered again. */
static void
test_client_refused_at_once (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) get = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 0 };
  EvdParam pa = text_param ("k", "a", 1);
  Outcome o[1] = { 0 };
  EvdRedisClient *c;
  gint64 t0, until;
  int hold;

  server_new (&s, NULL);
  opts.address = s.sock;
  server_set (&s, "a", "A");
  hold = server_fill (&s);
  t0 = g_get_monotonic_time ();
  c = evd_redis_client_new (base, &opts);
  run_until_losses (base, &stats, 6, 30);
  /* Five waits between the six refusals: at least 100 + 200 + 400 + 800 + 1600 ms with the
   * backoff (a busy machine only makes it longer); 5 x 100-200 ms without it. */
  g_assert_cmpint (g_get_monotonic_time () - t0, >=, 3100 * 1000);
  /* Calls refused while it is down say why: Redis's words, not "a reply nobody asked for". */
  call_until_refused (base, c, get, &pa, &o[0]);
  g_assert_cmpstr (o[0].value, ==, "database cache unavailable: ERR max number of clients reached");
  outcomes_clear (o, 1);
  server_let_in (hold);
  /* A refusal may still be on its way in: call until one is answered. */
  until = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
  for (;;) {
    run_until_up (base, c, 1, 10);
    evd_redis_client_call (c, get, &pa, 1, later (10000), on_done, &o[0]);
    run_until_done (base, o, 1, 10);
    if (o[0].code == -1)
      break;
    outcomes_clear (o, 1);
    g_assert_cmpint (g_get_monotonic_time (), <, until);
  }
  g_assert_cmpstr (o[0].value, ==, "A");
  outcomes_clear (o, 1);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* A connection that stayed up longer than the longest wait worked, even if no command went
 * on it: when it is lost (Redis's `timeout` closes idle clients; CLIENT KILL; a restart) it is
 * made again after the first wait, 100-200 ms, not after the 1-2 s that the refusals before it
 * had built up. */
static void
test_client_idle_loss (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 0 };
  const char *kill_cmd[] = { "CLIENT", "KILL", "TYPE", "normal" };
  g_autofree char *killed = NULL;
  EvdRedisClient *c;
  gint64 losses, lost_at;

  server_new (&s, NULL);
  opts.address = s.sock;
  {
    int hold = server_fill (&s);

    c = evd_redis_client_new (base, &opts);
    run_until_losses (base, &stats, 6, 30);   /* the next wait would be 1-2 s */
    server_let_in (hold);
  }
  /* Up and idle for longer than 2 s (again if a refusal was still on its way in). */
  do {
    gint64 until;

    run_until_up (base, c, 1, 10);
    until = g_get_monotonic_time () + 2200 * 1000;
    losses = __atomic_load_n (&stats.losses, __ATOMIC_RELAXED);
    while (g_get_monotonic_time () < until) {
      event_base_loop (base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
      g_usleep (1000);
    }
  } while (__atomic_load_n (&stats.losses, __ATOMIC_RELAXED) != losses);
  killed = side_command (s.sock, 4, kill_cmd, TRUE);   /* all but the side connection */
  g_assert_cmpstr (killed, ==, "1");
  run_until_losses (base, &stats, losses + 1, 10);
  lost_at = g_get_monotonic_time ();
  run_until_up (base, c, 1, 10);
  g_assert_cmpint (g_get_monotonic_time () - lost_at, <, 1000 * 1000);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* max_reply_bytes counts each reply's own bytes on the wire, not the pipeline's: 50 pipelined
 * GETs of a 100-byte value (108 bytes: "$100\r\n", the value, CRLF) all pass a bound of 108,
 * and all fail a bound of 107, each naming its exact size, the connection going on (a reply
 * that has all come is dropped whole). */
static void
test_client_reply_bound (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 108 };
  g_autofree char *value = g_strnfill (100, 'v');
  EvdParam pv = text_param ("k", "v", 1), pw = text_param ("k", "w", 1);
  Outcome o[51] = { 0 };

  server_new (&s, NULL);
  opts.address = s.sock;
  server_set (&s, "v", value);
  server_set (&s, "w", "x");
  for (gsize bound = 108; bound >= 107; bound--) {
    EvdRedisClient *c;

    opts.max_reply_bytes = bound;
    c = evd_redis_client_new (base, &opts);
    run_until_up (base, c, 1, 10);
    for (int i = 0; i < 50; i++)
      g_assert_nonnull (evd_redis_client_call (c, t, &pv, 1, later (10000), on_done, &o[i]));
    g_assert_nonnull (evd_redis_client_call (c, t, &pw, 1, later (10000), on_done, &o[50]));
    run_until_done (base, o, 51, 10);
    for (int i = 0; i < 50; i++) {
      if (bound == 108) {
        g_assert_cmpint (o[i].code, ==, -1);
        g_assert_cmpstr (o[i].value, ==, value);
      } else {
        g_assert_cmpint (o[i].code, ==, EVD_REDIS_ERROR_TOO_LARGE);
        g_assert_cmpstr (o[i].value, ==, "database cache: a reply of 108 bytes is over "
                         "max_reply_bytes (107)");
      }
    }
    g_assert_cmpint (o[50].code, ==, -1);        /* the short one, behind them, came */
    g_assert_cmpstr (o[50].value, ==, "x");
    g_assert_cmpint (stats.losses, ==, 0);
    outcomes_clear (o, 51);
    evd_redis_client_free (c);
  }
  event_base_free (base);
  server_free (&s);
}

/* A 1 MiB value against a 4 KiB bound: the call fails as soon as the bytes pass the bound,
 * without the rest being held; the connection, which cannot be read past that reply, is
 * lost with the call behind it (UNAVAILABLE, retryable), and the next connection serves. */
static void
test_client_reply_bound_huge (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 4096 };
  const char *grow[] = { "SETRANGE", "huge", "1048575", "x" };
  g_autofree char *len = NULL;
  EvdParam ph = text_param ("k", "huge", 4), pw = text_param ("k", "w", 1);
  Outcome o[2] = { 0 };
  EvdRedisClient *c;

  server_new (&s, NULL);
  opts.address = s.sock;
  len = side_command (s.sock, 4, grow, TRUE);
  g_assert_cmpstr (len, ==, "1048576");
  server_set (&s, "w", "x");
  c = evd_redis_client_new (base, &opts);
  run_until_up (base, c, 1, 10);
  g_assert_nonnull (evd_redis_client_call (c, t, &ph, 1, later (10000), on_done, &o[0]));
  g_assert_nonnull (evd_redis_client_call (c, t, &pw, 1, later (10000), on_done, &o[1]));
  run_until_done (base, o, 2, 10);
  g_assert_cmpint (o[0].code, ==, EVD_REDIS_ERROR_TOO_LARGE);
  g_assert_cmpstr (o[0].value, ==, "database cache: a reply of more than 4096 bytes is over "
                   "max_reply_bytes");
  g_assert_cmpint (o[1].code, ==, EVD_REDIS_ERROR_UNAVAILABLE);
  g_assert_cmpstr (o[1].value, ==, "database cache: connection lost: a reply of more than "
                   "4096 bytes is over max_reply_bytes");
  g_assert_cmpint (stats.losses, ==, 1);
  outcomes_clear (o, 2);
  run_until_up (base, c, 1, 10);
  g_assert_nonnull (evd_redis_client_call (c, t, &pw, 1, later (10000), on_done, &o[0]));
  run_until_done (base, o, 1, 10);
  g_assert_cmpstr (o[0].value, ==, "x");
  outcomes_clear (o, 1);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* An array is refused at its header when its elements cannot fit in the bound (at least 3
 * bytes each), before hiredis allocates them: 1400 elements against 4096 bytes. 1000 elements
 * pass the header and fail on their bytes (7 each). */
static void
test_client_reply_bound_elements (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("LRANGE {k} 0 -1", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 4096 };
  EvdParam pl = text_param ("k", "long", 4), ps = text_param ("k", "short", 5);
  const char *argv[2 + 1400] = { "RPUSH", "long" };
  Outcome o[2] = { 0 };
  g_autofree char *n = NULL, *m = NULL;
  EvdRedisClient *c;

  server_new (&s, NULL);
  opts.address = s.sock;
  for (int i = 0; i < 1400; i++)
    argv[2 + i] = "x";
  n = side_command (s.sock, 2 + 1400, argv, TRUE);
  g_assert_cmpstr (n, ==, "1400");
  argv[1] = "short";
  m = side_command (s.sock, 2 + 1000, argv, TRUE);
  g_assert_cmpstr (m, ==, "1000");
  c = evd_redis_client_new (base, &opts);
  for (int round = 0; round < 2; round++) {
    run_until_up (base, c, 1, 10);
    g_assert_nonnull (evd_redis_client_call (c, t, round == 0 ? &pl : &ps, 1, later (10000),
                                             on_done, &o[0]));
    g_assert_nonnull (evd_redis_client_call (c, t, &ps, 1, later (10000), on_done, &o[1]));
    run_until_done (base, o, 2, 10);
    g_assert_cmpint (o[0].code, ==, EVD_REDIS_ERROR_TOO_LARGE);
    if (round == 0) {
      g_assert_cmpstr (o[0].value, ==, "database cache: a reply of 1400 elements (at least "
                       "4200 bytes) is over max_reply_bytes (4096)");
      g_assert_cmpint (o[1].code, ==, EVD_REDIS_ERROR_UNAVAILABLE);   /* lost with it */
      g_assert_cmpint (stats.losses, ==, 1);
    } else {
      /* Refused on its bytes: whole ("a reply of 7007 bytes") when one read brought it all,
       * else as they passed the bound ("more than 4096 bytes"), its connection lost then. */
      g_assert_true (g_str_has_prefix (o[0].value, "database cache: a reply of "));
      g_assert_null (strstr (o[0].value, "elements"));
    }
    outcomes_clear (o, 2);
  }
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* An array of more rows than the template's max_rows is dropped as it is read: its call fails
 * ("more than max_rows"), the call behind it on the same connection is answered, and the
 * connection goes on. HGETALL counts a row per field and value pair. */
static void
test_client_max_rows (void)
{
  Server s = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) lrange = evd_redis_template_new ("LRANGE {k} 0 -1", NULL);
  g_autoptr (EvdRedisTemplate) hgetall = evd_redis_template_new ("HGETALL {k}", NULL);
  g_autoptr (EvdRedisTemplate) get = evd_redis_template_new ("GET {k}", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 0 };
  EvdParam pl = text_param ("k", "list", 4), ph10 = text_param ("k", "h10", 3),
           ph11 = text_param ("k", "h11", 3), pw = text_param ("k", "w", 1);
  const char *rpush[2 + 1000] = { "RPUSH", "list" };
  const char *hset[2 + 22] = { "HSET", NULL };
  Outcome o[4] = { 0 };
  EvdRedisClient *c;

  server_new (&s, NULL);
  opts.address = s.sock;
  for (int i = 0; i < 1000; i++)
    rpush[2 + i] = "x";
  g_free (side_command (s.sock, 2 + 1000, rpush, TRUE));
  for (int n = 10; n <= 11; n++) {
    g_autofree char *key = g_strdup_printf ("h%d", n);
    char fields[11][8];

    hset[1] = key;
    for (int i = 0; i < n; i++) {
      g_snprintf (fields[i], sizeof fields[i], "f%d", i);
      hset[2 + 2 * i] = fields[i];
      hset[3 + 2 * i] = "v";
    }
    g_free (side_command (s.sock, 2 + 2 * n, hset, TRUE));
  }
  server_set (&s, "w", "x");
  evd_redis_template_set_max_rows (lrange, 10);
  evd_redis_template_set_max_rows (hgetall, 10);
  c = evd_redis_client_new (base, &opts);
  run_until_up (base, c, 1, 10);
  g_assert_nonnull (evd_redis_client_call (c, lrange, &pl, 1, later (10000), on_done, &o[0]));
  g_assert_nonnull (evd_redis_client_call (c, hgetall, &ph10, 1, later (10000), on_done, &o[1]));
  g_assert_nonnull (evd_redis_client_call (c, hgetall, &ph11, 1, later (10000), on_done, &o[2]));
  g_assert_nonnull (evd_redis_client_call (c, get, &pw, 1, later (10000), on_done, &o[3]));
  run_until_done (base, o, 4, 10);
  g_assert_cmpint (o[0].code, ==, EVD_REDIS_ERROR_TOO_MANY_ROWS);
  g_assert_cmpstr (o[0].value, ==, "more than max_rows (10) rows");
  g_assert_cmpint (o[1].code, ==, -1);          /* 10 pairs: 10 rows */
  g_assert_cmpint (o[2].code, ==, EVD_REDIS_ERROR_TOO_MANY_ROWS);
  g_assert_cmpint (o[3].code, ==, -1);
  g_assert_cmpstr (o[3].value, ==, "x");
  g_assert_cmpint (stats.losses, ==, 0);
  outcomes_clear (o, 4);
  evd_redis_client_free (c);
  event_base_free (base);
  server_free (&s);
}

/* ---- A fake server, for replies no real Redis sends. ---- */

typedef struct {
  char *dir;
  char *sock;
  int lfd;
  int fd;
} Fake;

static void
fake_new (Fake *f)
{
  struct sockaddr_un un = { .sun_family = AF_UNIX };

  f->dir = g_dir_make_tmp ("evd-redis-fake-XXXXXX", NULL);
  f->sock = g_build_filename (f->dir, "fake.sock", NULL);
  f->lfd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  f->fd = -1;
  g_strlcpy (un.sun_path, f->sock, sizeof un.sun_path);
  g_assert_cmpint (bind (f->lfd, (struct sockaddr *) &un, sizeof un), ==, 0);
  g_assert_cmpint (listen (f->lfd, 8), ==, 0);
}

/* Runs the base until the client's connection is in. */
static void
fake_accept (Fake *f, struct event_base *base)
{
  gint64 until = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while ((f->fd = accept (f->lfd, NULL, NULL)) < 0) {
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    event_base_loop (base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    g_usleep (200);
  }
}

/* Runs the base until the server has read `n` commands on its connection, in all. */
static void
fake_read_commands (Fake *f, struct event_base *base, guint n)
{
  gint64 until = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  redisReader *r = redisReaderCreate ();
  guint got = 0;

  while (got < n) {
    char buf[4096];
    ssize_t len = recv (f->fd, buf, sizeof buf, MSG_DONTWAIT);
    void *cmd = NULL;

    if (len > 0)
      redisReaderFeed (r, buf, (size_t) len);
    while (redisReaderGetReply (r, &cmd) == REDIS_OK && cmd != NULL) {
      freeReplyObject (cmd);
      got++;
    }
    g_assert_cmpint (g_get_monotonic_time (), <, until);
    event_base_loop (base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    g_usleep (200);
  }
  redisReaderFree (r);
}

static void
fake_write (Fake *f, const char *bytes, gsize len)
{
  g_assert_cmpint (write (f->fd, bytes, len), ==, (gssize) len);
}

static void
fake_free (Fake *f)
{
  if (f->fd >= 0)
    close (f->fd);
  close (f->lfd);
  g_unlink (f->sock);
  g_rmdir (f->dir);
  g_free (f->sock);
  g_free (f->dir);
}

/* An empty status ("+\r\n") is 3 bytes: an array of 1300 of them, 3907 bytes on the wire, is
 * within a bound of 4096 and answered, the connection going on; it used to be refused at its
 * header as "at least 5200 bytes", and its connection lost with the call behind it. */
static void
test_client_reply_bound_short_elements (void)
{
  Fake f = { 0 };
  struct event_base *base = event_base_new ();
  g_autoptr (EvdRedisTemplate) t = evd_redis_template_new ("LRANGE {k} 0 -1", NULL);
  EvdRedisStats stats = { 0 };
  EvdRedisOptions opts = { "cache", NULL, NULL, 1, &stats, 0, 4096 };
  EvdParam p = text_param ("k", "k", 1);
  g_autoptr (GString) reply = g_string_new ("*1300\r\n");
  Outcome o[2] = { 0 };
  EvdRedisClient *c;

  for (int i = 0; i < 1300; i++)
    g_string_append (reply, "+\r\n");
  g_assert_cmpuint (reply->len, ==, 3907);
  g_string_append (reply, "$1\r\nx\r\n");     /* the next call's */
  fake_new (&f);
  opts.address = f.sock;
  c = evd_redis_client_new (base, &opts);
  fake_accept (&f, base);
  run_until_up (base, c, 1, 10);
  g_assert_nonnull (evd_redis_client_call (c, t, &p, 1, later (10000), on_done, &o[0]));
  g_assert_nonnull (evd_redis_client_call (c, t, &p, 1, later (10000), on_done, &o[1]));
  fake_read_commands (&f, base, 2);
  fake_write (&f, reply->str, reply->len);
  run_until_done (base, o, 2, 10);
  g_assert_cmpint (o[0].code, ==, -1);           /* 1300 rows of "" */
  g_assert_cmpstr (o[0].value, ==, "");
  g_assert_cmpint (o[1].code, ==, -1);
  g_assert_cmpstr (o[1].value, ==, "x");
  g_assert_cmpint (stats.losses, ==, 0);
  outcomes_clear (o, 2);
  evd_redis_client_free (c);
  event_base_free (base);
  fake_free (&f);
}

int
main (int argc, char **argv)
{
  g_autofree char *redis = g_find_program_in_path ("redis-server");

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/redis/template/split", test_template_split);
  g_test_add_func ("/redis/template/injection", test_template_injection);
  g_test_add_func ("/redis/template/refused", test_template_refused);
  g_test_add_func ("/redis/template/shapes", test_template_shapes);
  g_test_add_func ("/redis/template/bad-params", test_template_bad_params);
  g_test_add_func ("/redis/param-text", test_param_text);
  g_test_add_func ("/redis/reply/scalars", test_reply_scalars);
  g_test_add_func ("/redis/reply/arrays", test_reply_arrays);
  g_test_add_func ("/redis/address", test_address);
  if (redis == NULL) {
    int rc = g_test_run ();

    g_printerr ("redis-server not found: the client tests are skipped\n");
    return rc != 0 ? rc : 77;
  }
  signal (SIGPIPE, SIG_IGN);
  g_test_add_func ("/redis/client/pipeline", test_client_pipeline);
  g_test_add_func ("/redis/client/slow-server", test_client_slow_server);
  g_test_add_func ("/redis/client/restart", test_client_restart);
  g_test_add_func ("/redis/client/auth", test_client_auth);
  g_test_add_func ("/redis/client/stuck", test_client_stuck);
  g_test_add_func ("/redis/client/refused-at-once", test_client_refused_at_once);
  g_test_add_func ("/redis/client/idle-loss", test_client_idle_loss);
  g_test_add_func ("/redis/client/reply-bound", test_client_reply_bound);
  g_test_add_func ("/redis/client/reply-bound-huge", test_client_reply_bound_huge);
  g_test_add_func ("/redis/client/reply-bound-elements", test_client_reply_bound_elements);
  g_test_add_func ("/redis/client/max-rows", test_client_max_rows);
  g_test_add_func ("/redis/client/reply-bound-short-elements",
                   test_client_reply_bound_short_elements);
  return g_test_run ();
}

/* evd_config: loading, locating and checking evdal's INI configuration (see evd_config.h). */
#include "evd_config.h"
#include "evd_quark.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "evd_log.h"

struct _EvdConfig {
  gatomicrefcount refs;
  char *path;            /* as given, for messages */
  char *dir;             /* its folder, for relative paths */
  GKeyFile *kf;          /* NULL when the text did not even parse */
  GHashTable *lines;     /* "group" and "group\037key" -> line number */
  GHashTable *last_lines;/* "group\037key" set twice -> the line GKeyFile takes it from */
  GHashTable *used;      /* "group\037key" read by someone; "group" claimed by a module */
  GPtrArray *problems;   /* char *, in the order found */
  GPtrArray *group_order;/* char *, groups in file order */
  EvdServerConfig server;
};

EVD_DEFINE_QUARK (evd-config-error-quark, evd_config_error)

static char *
evd_config_slot (const char *group, const char *key)
{
  return key ? g_strconcat (group, "\037", key, NULL) : g_strdup (group);
}

static guint
evd_config_line_of (EvdConfig *cfg, const char *group, const char *key)
{
  g_autofree char *slot = evd_config_slot (group, key);
  guint line = GPOINTER_TO_UINT (g_hash_table_lookup (cfg->last_lines, slot));

  if (line == 0)
    line = GPOINTER_TO_UINT (g_hash_table_lookup (cfg->lines, slot));

  if (line == 0 && key != NULL)
    line = GPOINTER_TO_UINT (g_hash_table_lookup (cfg->lines, group));
  return line;
}

static void
evd_config_add_problem (EvdConfig *cfg, guint line, const char *group, const char *key,
                        const char *message)
{
  GString *s = g_string_new (cfg->path);

  if (line > 0)
    g_string_append_printf (s, ":%u", line);
  g_string_append (s, ": ");
  if (group != NULL)
    g_string_append_printf (s, "[%s]%s%s: ", group, key ? " " : "", key ? key : "");
  g_string_append (s, message);
  g_ptr_array_add (cfg->problems, g_string_free (s, FALSE));
}

void
evd_config_problem (EvdConfig *cfg, const char *group, const char *key, const char *format, ...)
{
  va_list ap;
  g_autofree char *message = NULL;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  evd_config_add_problem (cfg, evd_config_line_of (cfg, group, key), group, key, message);
}

/* ---- The pre-scan: line numbers, syntax and duplicates. ---- */

static gboolean
evd_config_is_blank_or_comment (const char *line)
{
  return *line == '\0' || *line == '#';
}

static gboolean
evd_config_scan_group (EvdConfig *cfg, const char *line, guint lineno, char **group)
{
  const char *end = strchr (line, ']');

  if (end == NULL || end[1] != '\0' || end == line + 1) {
    evd_config_add_problem (cfg, lineno, NULL, NULL, "a group header must be \"[name]\"");
    return FALSE;
  }
  g_free (*group);
  *group = g_strndup (line + 1, (gsize) (end - line - 1));
  /* GKeyFile refuses these names, and with them the whole file. */
  for (const char *p = *group; *p != '\0'; p++)
    if (*p == '[' || g_ascii_iscntrl (*p)) {
      evd_config_add_problem (cfg, lineno, NULL, NULL,
                              "a group name may not hold [ or control characters");
      g_clear_pointer (group, g_free);
      return FALSE;
    }
  if (g_hash_table_contains (cfg->lines, *group)) {
    evd_config_add_problem (cfg, lineno, *group, NULL, "group appears twice");
    return TRUE;  /* GKeyFile merges the two; the problem is reported once */
  }
  g_hash_table_insert (cfg->lines, g_strdup (*group), GUINT_TO_POINTER (lineno));
  g_ptr_array_add (cfg->group_order, g_strdup (*group));
  return TRUE;
}

static gboolean
evd_config_scan_key (EvdConfig *cfg, const char *line, guint lineno, const char *group)
{
  const char *eq = strchr (line, '=');
  g_autofree char *key = NULL;
  g_autofree char *slot = NULL;
  guint first;

  if (eq == NULL) {
    evd_config_add_problem (cfg, lineno, group, NULL,
                            "expected \"key = value\", a [group] or a # comment");
    return FALSE;
  }
  key = g_strstrip (g_strndup (line, (gsize) (eq - line)));
  if (group == NULL) {
    evd_config_add_problem (cfg, lineno, NULL, NULL, "a key before any [group]");
    return FALSE;
  }
  if (*key == '\0') {
    evd_config_add_problem (cfg, lineno, group, NULL, "a value without a key");
    return FALSE;
  }
  if (strpbrk (key, "[]") != NULL) {  /* GKeyFile would refuse the whole file */
    evd_config_add_problem (cfg, lineno, group, key, "a key name may not hold [ or ]");
    return FALSE;
  }
  slot = evd_config_slot (group, key);
  first = GPOINTER_TO_UINT (g_hash_table_lookup (cfg->lines, slot));
  if (first != 0) {
    g_autofree char *msg = g_strdup_printf ("set twice (first on line %u)", first);
    evd_config_add_problem (cfg, lineno, group, key, msg);
    /* GKeyFile keeps the last: a problem with the value names the line it comes from. */
    g_hash_table_insert (cfg->last_lines, g_steal_pointer (&slot), GUINT_TO_POINTER (lineno));
    return TRUE;  /* the problem is reported once */
  }
  g_hash_table_insert (cfg->lines, g_steal_pointer (&slot), GUINT_TO_POINTER (lineno));
  return TRUE;
}

/* Records where every group and key stands and reports bad lines. Returns the text with the
 * bad lines emptied, for GKeyFile: a syntax error must not hide the problems of the rest, and
 * emptied lines keep the line numbers right. A bad group header also empties the keys under
 * it, which would otherwise land in the group before. */
static char *
evd_config_prescan (EvdConfig *cfg, const char *data, gsize len)
{
  g_autofree char *text = g_strndup (data, len);
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  g_autofree char *group = NULL;
  gboolean in_bad_group = FALSE;

  for (guint i = 0; lines[i] != NULL; i++) {
    char *line = g_strstrip (lines[i]);
    gboolean ok;

    if (evd_config_is_blank_or_comment (line))
      continue;
    if (*line == '[') {
      ok = evd_config_scan_group (cfg, line, i + 1, &group);
      in_bad_group = !ok;
    } else {
      ok = !in_bad_group && evd_config_scan_key (cfg, line, i + 1, group);
    }
    if (!ok)
      *line = '\0';
  }
  return g_strjoinv ("\n", lines);
}

/* ---- Getters. ---- */

static char *
evd_config_raw (EvdConfig *cfg, const char *group, const char *key)
{
  g_autofree char *slot = NULL;
  char *value;

  if (cfg->kf == NULL || !g_key_file_has_key (cfg->kf, group, key, NULL))
    return NULL;
  slot = evd_config_slot (group, key);
  g_hash_table_add (cfg->used, g_steal_pointer (&slot));
  value = g_key_file_get_value (cfg->kf, group, key, NULL);
  if (value == NULL)
    return NULL;
  /* A comment may follow a value after blanks: "delay_ms = 100   # default". GKeyFile has
   * already dropped the blanks after '=', so a value that starts with '#' is all comment:
   * "admin_listen =   # off" is empty. */
  for (char *p = value; *p; p++) {
    if (*p == '#' && (p == value || p[-1] == ' ' || p[-1] == '\t')) {
      *p = '\0';
      break;
    }
  }
  return g_strstrip (value);
}

char *
evd_config_string (EvdConfig *cfg, const char *group, const char *key, const char *def)
{
  char *value = evd_config_raw (cfg, group, key);

  return value ? value : g_strdup (def);
}

char *
evd_config_require (EvdConfig *cfg, const char *group, const char *key)
{
  char *value = evd_config_raw (cfg, group, key);

  if (value == NULL || *value == '\0') {
    evd_config_problem (cfg, group, key, "is required");
    g_free (value);
    return NULL;
  }
  return value;
}

gint64
evd_config_int (EvdConfig *cfg, const char *group, const char *key, gint64 def, gint64 min,
                gint64 max)
{
  g_autofree char *value = evd_config_raw (cfg, group, key);
  gint64 n;
  char *end;

  if (value == NULL)
    return def;
  errno = 0;
  n = g_ascii_strtoll (value, &end, 10);
  if (*value == '\0' || *end != '\0' || errno != 0) {
    evd_config_problem (cfg, group, key, "\"%s\" is not an integer", value);
    return def;
  }
  if (n < min || n > max) {
    evd_config_problem (cfg, group, key, "%" G_GINT64_FORMAT " is out of range (%"
                        G_GINT64_FORMAT "..%" G_GINT64_FORMAT ")", n, min, max);
    return def;
  }
  return n;
}

gboolean
evd_config_bool (EvdConfig *cfg, const char *group, const char *key, gboolean def)
{
  g_autofree char *value = evd_config_raw (cfg, group, key);

  if (value == NULL)
    return def;
  if (g_ascii_strcasecmp (value, "true") == 0 || g_strcmp0 (value, "1") == 0)
    return TRUE;
  if (g_ascii_strcasecmp (value, "false") == 0 || g_strcmp0 (value, "0") == 0)
    return FALSE;
  evd_config_problem (cfg, group, key, "\"%s\" is not true or false", value);
  return def;
}

char **
evd_config_keys (EvdConfig *cfg, const char *group)
{
  return evd_config_keys_with_prefix (cfg, group, "");
}

char **
evd_config_keys_with_prefix (EvdConfig *cfg, const char *group, const char *prefix)
{
  g_auto (GStrv) keys = cfg->kf ? g_key_file_get_keys (cfg->kf, group, NULL, NULL) : NULL;
  g_autoptr (GStrvBuilder) out = g_strv_builder_new ();

  for (guint i = 0; keys != NULL && keys[i] != NULL; i++)
    if (g_str_has_prefix (keys[i], prefix)) {
      evd_config_mark_used (cfg, group, keys[i]);
      g_strv_builder_add (out, keys[i]);
    }
  return g_strv_builder_end (out);
}

char *
evd_config_group_text (EvdConfig *cfg, const char *group)
{
  g_auto (GStrv) keys = cfg->kf ? g_key_file_get_keys (cfg->kf, group, NULL, NULL) : NULL;
  GString *out = g_string_new (NULL);

  for (guint i = 0; keys != NULL && keys[i] != NULL; i++) {
    g_autofree char *value = g_key_file_get_value (cfg->kf, group, keys[i], NULL);
    g_string_append_printf (out, "%s=%s\n", keys[i], value ? value : "");
  }
  return g_string_free (out, FALSE);
}

void
evd_config_mark_used (EvdConfig *cfg, const char *group, const char *key)
{
  g_hash_table_add (cfg->used, evd_config_slot (group, key));
}

gboolean
evd_config_has_key (EvdConfig *cfg, const char *group, const char *key)
{
  return cfg->kf != NULL && g_key_file_has_key (cfg->kf, group, key, NULL);
}

char **
evd_config_groups_of_kind (EvdConfig *cfg, const char *kind)
{
  GPtrArray *out = g_ptr_array_new ();
  gsize klen = strlen (kind);

  for (guint i = 0; i < cfg->group_order->len; i++) {
    const char *g = cfg->group_order->pdata[i];

    if (strncmp (g, kind, klen) == 0 && g[klen] == ' ' && g[klen + 1] != '\0') {
      g_ptr_array_add (out, g_strdup (g));
      g_hash_table_add (cfg->used, g_strdup (g));
    }
  }
  g_ptr_array_add (out, NULL);
  return (char **) g_ptr_array_free (out, FALSE);
}

/* ---- The [server] group. ---- */

/* The admin port's shared secret lives in a file of its own, so that the config can be
 * world-readable and the secret not (systemd's LoadCredential= can provide it). */
static void
evd_config_read_secret (EvdConfig *cfg, const char *g)
{
  g_autofree char *file = evd_config_string (cfg, g, "admin_secret_file", NULL);
  g_autofree char *path = NULL;
  g_autofree char *data = NULL;
  g_autoptr (GError) error = NULL;

  if (file == NULL)
    return;
  path = evd_config_resolve_path (cfg, file);
  if (!g_file_get_contents (path, &data, NULL, &error)) {
    evd_config_problem (cfg, g, "admin_secret_file", "%s", error->message);
    return;
  }
  g_strstrip (data);
  if (strlen (data) < 16) {
    evd_config_problem (cfg, g, "admin_secret_file", "%s: the secret must have at least 16 "
                        "characters", path);
    return;
  }
  cfg->server.admin_secret = g_steal_pointer (&data);
}

static void
evd_config_read_log_level (EvdConfig *cfg, const char *g)
{
  g_autofree char *name = evd_config_string (cfg, g, "log_level", "info");

  if (!evd_log_parse_level (name, &cfg->server.log_level)) {
    evd_config_problem (cfg, g, "log_level", "\"%s\": expected debug, info, notice, warning "
                        "or error", name);
    cfg->server.log_level = G_LOG_LEVEL_INFO;
  }
}

/* Whether `port` is a decimal port number 0-65535 (getaddrinfo takes "70000" and wraps it). */
static gboolean
evd_config_port_ok (const char *port)
{
  gsize n = strlen (port);

  if (n == 0 || n > 5)
    return FALSE;
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isdigit (port[i]))
      return FALSE;
  return atoi (port) <= 65535;
}

/* Why a host name is not one, or NULL: letters, digits, '-' and '.' (a name is looked up at
 * start-up; here only its spelling is checked). */
static const char *
evd_config_host_problem (const char *host)
{
  if (strchr (host, ':') != NULL)
    return "an IPv6 address needs brackets: [addr]:port";
  if (strlen (host) > 253)
    return "the host name is longer than 253 characters";
  for (const char *p = host; *p; p++)
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '.')
      return "the host is not an address or a host name";
  return NULL;
}

/* Checks a listen address's spelling and port range, so that what --check-config passes also
 * starts (binding can still fail: the port taken, the address not local). */
static void
evd_config_check_address (EvdConfig *cfg, const char *group, const char *key, const char *addr)
{
  const char *path = g_str_has_prefix (addr, "unix:") ? addr + 5 : addr[0] == '/' ? addr : NULL;
  g_autofree char *host = NULL;
  const char *port, *why = NULL;
  guint8 buf[16];

  if (path != NULL) {
    if (*path == '\0')
      evd_config_problem (cfg, group, key, "\"%s\": the unix socket path is empty", addr);
    else if (strlen (path) >= 108)
      evd_config_problem (cfg, group, key, "\"%s\": a unix socket path has at most 107 bytes",
                          addr);
    return;
  }
  if (addr[0] == '[') {
    const char *end = strchr (addr, ']');
    if (end == NULL || end[1] != ':') {
      evd_config_problem (cfg, group, key, "\"%s\": expected [ipv6]:port", addr);
      return;
    }
    host = g_strndup (addr + 1, (gsize) (end - addr - 1));
    port = end + 2;
    if (inet_pton (AF_INET6, host, buf) != 1)
      why = "not an IPv6 address between the brackets";
  } else {
    const char *colon = strrchr (addr, ':');
    if (colon == NULL) {
      evd_config_problem (cfg, group, key, "\"%s\": expected host:port, [ipv6]:port or a unix "
                          "socket path", addr);
      return;
    }
    host = g_strndup (addr, (gsize) (colon - addr));
    port = colon + 1;
    if (*host != '\0' && inet_pton (AF_INET, host, buf) != 1)
      why = evd_config_host_problem (host);
  }
  if (why == NULL && !evd_config_port_ok (port))
    why = "the port must be a number from 0 to 65535";
  if (why != NULL)
    evd_config_problem (cfg, group, key, "\"%s\": %s", addr, why);
}

/* An address value: `""` (the spelling the docs give for "off") is empty. */
static char *
evd_config_address (EvdConfig *cfg, const char *group, const char *key, const char *def)
{
  char *v = evd_config_string (cfg, group, key, def);

  if (strcmp (v, "\"\"") == 0 || strcmp (v, "''") == 0)
    v[0] = '\0';
  return v;
}

static void
evd_config_read_server (EvdConfig *cfg)
{
  EvdServerConfig *s = &cfg->server;
  const char *g = "server";

  g_hash_table_add (cfg->used, g_strdup (g));
  s->listen = evd_config_address (cfg, g, "listen", "127.0.0.1:9090");
  s->admin_listen = evd_config_address (cfg, g, "admin_listen", "");
  evd_config_read_secret (cfg, g);
  evd_config_read_log_level (cfg, g);
  s->io_threads = (int) evd_config_int (cfg, g, "io_threads", 0, 0, 256);
  s->busy_poll_us = (int) evd_config_int (cfg, g, "busy_poll_us", 0, 0, 10000);
  s->workers = (int) evd_config_int (cfg, g, "workers", 4, 1, 1024);
  /* Each connection costs a descriptor and a few KiB; the process raises its descriptor
   * limit to the hard limit at start, so this is the knob that protects memory. */
  s->max_connections = (int) evd_config_int (cfg, g, "max_connections", 10000, 1, 1000000);
  /* 16 MiB: far above any sane fetch, far below what would hurt to buffer. */
  s->max_frame_bytes = (int) evd_config_int (cfg, g, "max_frame_bytes", 16 << 20, 64, 1 << 30);
  s->max_calls = (int) evd_config_int (cfg, g, "max_calls", 64, 1, 100000);
  s->max_inflight = (int) evd_config_int (cfg, g, "max_inflight", 100000, 1, 100000000);
  /* 64 MiB: a few thousand hot pages of a web shop; every lookup's cache counts against it. */
  s->cache_max_bytes = evd_config_int (cfg, g, "cache_max_bytes", 64 << 20, 0,
                                       (gint64) 1 << 40);
  s->deadline_ms = (int) evd_config_int (cfg, g, "deadline_ms", 1000, 1, 3600000);
  s->idle_timeout_ms = (int) evd_config_int (cfg, g, "idle_timeout_ms", 300000, 0, 86400000);
  /* Long enough for a slow mobile uplink to send a big request, short enough that a client
   * sending a byte a minute (slowloris) gives its connection back. */
  s->read_timeout_ms = (int) evd_config_int (cfg, g, "read_timeout_ms", 30000, 1, 3600000);
  /* A client that reads none of its replies for this long is gone or hostile; its unsent
   * replies (bounded by max_output_bytes) are freed with its connection. */
  s->write_timeout_ms = (int) evd_config_int (cfg, g, "write_timeout_ms", 30000, 1, 3600000);
  s->shutdown_timeout_ms = (int) evd_config_int (cfg, g, "shutdown_timeout_ms", 10000, 0,
                                                 3600000);
  /* Behind a load balancer: long enough for its health checks to see "draining" and stop
   * sending new connections (check interval x fall count, plus a margin); 0 (no balancer,
   * or systemd socket activation) closes the listener at once. */
  s->drain_ms = (int) evd_config_int (cfg, g, "drain_ms", 0, 0, 3600000);
  s->reuse_port = evd_config_bool (cfg, g, "reuse_port", FALSE);
  /* Pipelining is for latency; hundreds of requests queued on one socket are a client that
   * does not read, and each costs memory until answered. */
  s->max_pipeline = (int) evd_config_int (cfg, g, "max_pipeline", 128, 1, 100000);
  s->max_output_bytes = (int) evd_config_int (cfg, g, "max_output_bytes", 4 << 20, 4096,
                                              1 << 30);
  /* One reply's encoded size, and the calls of a fetch that would push it past this fail
   * alone with BACKEND "reply too large": clients refuse larger frames with a transport error
   * that loses every call (Thrift's Java and Go clients stop at 16,384,000 bytes, evdal-cli at
   * max_frame_bytes), so the default leaves them room. */
  s->max_reply_bytes = (int) evd_config_int (cfg, g, "max_reply_bytes", 16000000, 4096,
                                             1 << 30);
  /* A request that waited this long before the loop could read it is better refused at once
   * (the client retries elsewhere) than served late on top of a backlog. */
  s->max_queue_ms = (int) evd_config_int (cfg, g, "max_queue_ms", 500, 0, 60000);
  /* A loop callback is meant to take microseconds; 100 ms is a blocked loop. */
  s->stall_warn_ms = (int) evd_config_int (cfg, g, "stall_warn_ms", 100, 0, 60000);
  if (*s->listen == '\0')
    evd_config_problem (cfg, g, "listen", "is empty");
  else
    evd_config_check_address (cfg, g, "listen", s->listen);
  if (*s->admin_listen != '\0')  /* empty: no admin endpoint */
    evd_config_check_address (cfg, g, "admin_listen", s->admin_listen);
}

/* ---- Life. ---- */

EvdConfig *
evd_config_load_data (const char *data, gsize len, const char *name, const char *dir)
{
  EvdConfig *cfg = g_new0 (EvdConfig, 1);
  g_autoptr (GError) error = NULL;

  g_atomic_ref_count_init (&cfg->refs);
  cfg->path = g_strdup (name);
  cfg->dir = g_strdup (dir ? dir : ".");
  cfg->lines = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  cfg->last_lines = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  cfg->used = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  cfg->problems = g_ptr_array_new_with_free_func (g_free);
  cfg->group_order = g_ptr_array_new_with_free_func (g_free);

  if (memchr (data, '\0', len) != NULL || !g_utf8_validate (data, (gssize) len, NULL)) {
    evd_config_add_problem (cfg, 0, NULL, NULL, "not UTF-8 text");
  } else {
    /* GKeyFile parses only what the pre-scan accepted: its messages have line numbers. */
    g_autofree char *clean = evd_config_prescan (cfg, data, len);
    cfg->kf = g_key_file_new ();
    if (!g_key_file_load_from_data (cfg->kf, clean, strlen (clean), G_KEY_FILE_NONE, &error))
      evd_config_add_problem (cfg, 0, NULL, NULL, error->message);
  }
  evd_config_read_server (cfg);
  return cfg;
}

EvdConfig *
evd_config_load (const char *path, GError **error)
{
  g_autofree char *data = NULL;
  g_autofree char *dir = NULL;
  gsize len;

  if (!g_file_get_contents (path, &data, &len, error))
    return NULL;
  dir = g_path_get_dirname (path);
  return evd_config_load_data (data, len, path, dir);
}

EvdConfig *
evd_config_ref (EvdConfig *cfg)
{
  g_atomic_ref_count_inc (&cfg->refs);
  return cfg;
}

void
evd_config_unref (EvdConfig *cfg)
{
  if (cfg == NULL || !g_atomic_ref_count_dec (&cfg->refs))
    return;
  g_free (cfg->path);
  g_free (cfg->dir);
  g_clear_pointer (&cfg->kf, g_key_file_free);
  g_hash_table_unref (cfg->lines);
  g_hash_table_unref (cfg->last_lines);
  g_hash_table_unref (cfg->used);
  g_ptr_array_unref (cfg->problems);
  g_ptr_array_unref (cfg->group_order);
  g_free (cfg->server.listen);
  g_free (cfg->server.admin_listen);
  if (cfg->server.admin_secret != NULL)
    memset (cfg->server.admin_secret, 0, strlen (cfg->server.admin_secret));
  g_free (cfg->server.admin_secret);
  g_free (cfg);
}

const EvdServerConfig *
evd_config_server (EvdConfig *cfg)
{
  return &cfg->server;
}

void
evd_config_override_listen (EvdConfig *cfg, const char *listen)
{
  g_free (cfg->server.listen);
  cfg->server.listen = g_strdup (listen);
}

const char *
evd_config_path (EvdConfig *cfg)
{
  return cfg->path;
}

char *
evd_config_resolve_path (EvdConfig *cfg, const char *path)
{
  if (g_path_is_absolute (path))
    return g_strdup (path);
  return g_build_filename (cfg->dir, path, NULL);
}

static void
evd_config_flag_unread (EvdConfig *cfg)
{
  for (guint i = 0; cfg->kf != NULL && i < cfg->group_order->len; i++) {
    const char *group = cfg->group_order->pdata[i];
    g_auto (GStrv) keys = NULL;

    if (!g_hash_table_contains (cfg->used, group)) {
      evd_config_problem (cfg, group, NULL, "unknown group (expected [server], [lookup NAME], [database NAME] "
                          "or [upstream NAME])");
      continue;
    }
    keys = g_key_file_get_keys (cfg->kf, group, NULL, NULL);
    for (guint k = 0; keys && keys[k]; k++) {
      g_autofree char *slot = evd_config_slot (group, keys[k]);

      if (!g_hash_table_contains (cfg->used, slot))
        evd_config_problem (cfg, group, keys[k], "unknown key");
    }
  }
}

gboolean
evd_config_check (EvdConfig *cfg, GError **error)
{
  g_autoptr (GString) all = g_string_new (NULL);

  evd_config_flag_unread (cfg);
  if (cfg->problems->len == 0)
    return TRUE;
  for (guint i = 0; i < cfg->problems->len; i++)
    g_string_append_printf (all, "%s%s", i ? "\n" : "", (char *) cfg->problems->pdata[i]);
  g_set_error_literal (error, EVD_CONFIG_ERROR, EVD_CONFIG_ERROR_INVALID, all->str);
  return FALSE;
}

/* evd_config: evdal's INI configuration (GLib GKeyFile), with errors that name the file, line
 * and key at fault.
 *
 * GKeyFile parses, but it knows no line numbers and no comments after a value, so a small
 * pre-scan of the text records where each group and key stands, rejects lines that are no
 * group, key or comment, and flags keys set twice. Getters never fail: a missing key gives the
 * default, a bad value records a problem ("FILE:LINE: [group] key: what is wrong") and gives
 * the default, so one pass over the file reports every problem at once. Modules that own a
 * group (the server, each backend) read it with these getters; evd_config_check() then adds a
 * problem for every key nobody read (a typo must not pass silently) and fails with all
 * problems, one per line.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The [server] group. Every limit has a reason next to its default in evd_config.c. */
typedef struct {
  char *listen;
  char *admin_listen;      /* "" = no admin endpoint */
  char *admin_secret;      /* read from admin_secret_file; NULL = no check */
  GLogLevelFlags log_level;
  int io_threads;          /* 0 = one per core */
  int busy_poll_us;        /* IO loops poll this long after work before sleeping; 0 = never */
  int workers;
  int max_connections;
  int max_frame_bytes;
  int max_calls;
  int max_inflight;
  int deadline_ms;
  int idle_timeout_ms;     /* 0 = never */
  int read_timeout_ms;     /* a request half-received for longer than this is closed */
  int write_timeout_ms;    /* replies that cannot be sent for this long close the connection */
  int shutdown_timeout_ms; /* after drain_ms: how long requests in flight may take */
  int drain_ms;            /* after SIGTERM, keep accepting (health says draining) this long */
  gboolean reuse_port;     /* SO_REUSEPORT on the listeners: a new evdal binds while this drains */
  int max_pipeline;        /* requests in flight on one connection before it is not read */
  int max_output_bytes;    /* unsent reply bytes on one connection before it is not read */
  int max_reply_bytes;     /* one encoded reply at most; calls that do not fit fail alone */
  int max_queue_ms;        /* a loop this far behind answers new fetches Overloaded; 0 = off */
  int stall_warn_ms;       /* a loop callback that runs longer is logged; 0 = off */
  gint64 cache_max_bytes;  /* all lookups' result caches together (evd_cache) */
} EvdServerConfig;

typedef struct _EvdConfig EvdConfig;

/* Reads and parses `path`. Only an unreadable file fails here; syntax and value problems are
 * collected for evd_config_check(). */
EvdConfig *evd_config_load (const char *path, GError **error);
/* The same from memory; `name` stands for the file in messages, `dir` for its folder. */
EvdConfig *evd_config_load_data (const char *data, gsize len, const char *name, const char *dir);
/* A config is shared by whoever was built from it (the server, each engine generation). */
EvdConfig *evd_config_ref (EvdConfig *cfg);
void evd_config_unref (EvdConfig *cfg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdConfig, evd_config_unref)

const EvdServerConfig *evd_config_server (EvdConfig *cfg);
const char *evd_config_path (EvdConfig *cfg);
/* --listen on the command line wins over the file. */
void evd_config_override_listen (EvdConfig *cfg, const char *listen);
/* A path from the config made absolute against the config file's folder. */
char *evd_config_resolve_path (EvdConfig *cfg, const char *path);

/* Groups whose name is "<kind> <name>", e.g. kind "lookup" gives every [lookup X], in file
 * order. Returns the full group names (free with g_strfreev). */
char **evd_config_groups_of_kind (EvdConfig *cfg, const char *kind);
gboolean evd_config_has_key (EvdConfig *cfg, const char *group, const char *key);

gint64 evd_config_int (EvdConfig *cfg, const char *group, const char *key, gint64 def,
                       gint64 min, gint64 max);
gboolean evd_config_bool (EvdConfig *cfg, const char *group, const char *key, gboolean def);
/* The value with an inline comment and surrounding blanks removed; `def` (may be NULL) when
 * absent. Free with g_free. */
char *evd_config_string (EvdConfig *cfg, const char *group, const char *key, const char *def);
/* Like evd_config_string, but a missing or empty value is a problem and gives NULL. */
char *evd_config_require (EvdConfig *cfg, const char *group, const char *key);
/* Every key of the group, marked as read. */
char **evd_config_keys (EvdConfig *cfg, const char *group);
/* The keys of the group that start with `prefix`, marked as read: the others stay unknown
 * unless someone reads them. */
char **evd_config_keys_with_prefix (EvdConfig *cfg, const char *group, const char *prefix);
/* The group's keys and values as written, "key=value\n" each in file order ("" when the group
 * is absent), marking nothing: what a section says, to tell whether a reload changed it.
 * Free with g_free. */
char *evd_config_group_text (EvdConfig *cfg, const char *group);

/* Records a problem at the key's line (key NULL: the group's line). */
void evd_config_problem (EvdConfig *cfg, const char *group, const char *key,
                         const char *format, ...) G_GNUC_PRINTF (4, 5);
/* Marks a key as read without reading it. */
void evd_config_mark_used (EvdConfig *cfg, const char *group, const char *key);

/* Flags unread keys and unknown groups, then fails with every problem, one per line. */
gboolean evd_config_check (EvdConfig *cfg, GError **error);

#define EVD_CONFIG_ERROR (evd_config_error_quark ())
GQuark evd_config_error_quark (void);
enum { EVD_CONFIG_ERROR_READ, EVD_CONFIG_ERROR_INVALID };

G_END_DECLS

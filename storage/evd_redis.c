/* evd_redis: command templates, reply mapping, and pipelined Redis connections on a libevent
 * base (see evd_redis.h for the life of a call). */
#include "evd_redis.h"
#include "evd_connect.h"
#include "evd_dns.h"
#include "evd_quark.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/util.h>

EVD_DEFINE_QUARK (evd-redis-error-quark, evd_redis_error)

/* ---- The allow-list. ----
 * Read-only commands only: a data-access layer reads, and a template that writes (SET, DEL,
 * EVAL, SORT with STORE, GETDEL, GETEX...) must stop start-up rather than run on every fetch.
 * Commands that read but block or scan the whole keyspace (BLPOP, KEYS, SCAN) are left out
 * too: they hold a pipelined connection or the server. */
static const char *const evd_redis_allowed[] = {
  /* strings and keys */
  "GET", "MGET", "GETRANGE", "STRLEN", "EXISTS", "TTL", "PTTL", "TYPE", "GETBIT", "BITCOUNT",
  /* hashes */
  "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSTRLEN",
  /* sets */
  "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD",
  /* sorted sets */
  "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX",
  "ZSCORE", "ZMSCORE", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZRANK", "ZREVRANK",
  /* lists */
  "LRANGE", "LLEN", "LINDEX", "LPOS",
  NULL,
};

const char *const *
evd_redis_allowed_commands (void)
{
  return evd_redis_allowed;
}

/* ---- Templates. ---- */

/* A piece of an argument: literal bytes, or a param (index into the template's names). */
typedef struct {
  int param;                /* -1: literal */
  char *text;
  gsize len;
} EvdRedisPiece;

typedef struct {
  GArray *pieces;           /* EvdRedisPiece */
} EvdRedisArg;

struct _EvdRedisTemplate {
  char *command;
  EvdRedisShape shape;
  guint max_rows;           /* 0: no bound */
  GPtrArray *names;         /* char *, distinct params */
  EvdRedisArg args[EVD_REDIS_MAX_ARGS];
  guint n_args;
};

static void
evd_redis_arg_clear (EvdRedisArg *a)
{
  if (a->pieces == NULL)
    return;
  for (guint i = 0; i < a->pieces->len; i++)
    g_free (g_array_index (a->pieces, EvdRedisPiece, i).text);
  g_array_unref (a->pieces);
}

void
evd_redis_template_free (EvdRedisTemplate *t)
{
  if (t == NULL)
    return;
  for (guint i = 0; i < t->n_args; i++)
    evd_redis_arg_clear (&t->args[i]);
  g_ptr_array_unref (t->names);
  g_free (t->command);
  g_free (t);
}

static void
evd_redis_arg_add (EvdRedisArg *a, int param, const char *text, gsize len)
{
  EvdRedisPiece p = { param, NULL, len };

  if (param < 0 && len == 0)
    return;
  p.text = param < 0 ? g_strndup (text, len) : NULL;
  g_array_append_val (a->pieces, p);
}

static int
evd_redis_template_name (EvdRedisTemplate *t, const char *name, gsize len)
{
  g_autofree char *n = g_strndup (name, len);
  guint i;

  if (g_ptr_array_find_with_equal_func (t->names, n, g_str_equal, &i))
    return (int) i;
  g_ptr_array_add (t->names, g_steal_pointer (&n));
  return (int) t->names->len - 1;
}

/* One raw argument (quotes already removed) into pieces: literal text and {name}s. */
static gboolean
evd_redis_template_arg (EvdRedisTemplate *t, EvdRedisArg *a, const GString *raw, GError **error)
{
  GString *lit = g_string_new (NULL);
  const char *s = raw->str, *end = raw->str + raw->len;

  a->pieces = g_array_new (FALSE, FALSE, sizeof (EvdRedisPiece));
  while (s < end) {
    if ((s[0] == '{' || s[0] == '}') && s + 1 < end && s[1] == s[0]) {
      g_string_append_c (lit, s[0]);
      s += 2;
    } else if (s[0] == '{') {
      const char *n = s + 1, *e = n;

      while (e < end && (g_ascii_isalnum (*e) || *e == '_'))
        e++;
      if (e == n || e >= end || *e != '}' || g_ascii_isdigit (*n)) {
        g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE,
                     "\"%s\": a { starts a {param} (a name of letters, digits and _), "
                     "write {{ for a brace", raw->str);
        g_string_free (lit, TRUE);
        return FALSE;
      }
      evd_redis_arg_add (a, -1, lit->str, lit->len);
      g_string_truncate (lit, 0);
      evd_redis_arg_add (a, evd_redis_template_name (t, n, (gsize) (e - n)), NULL, 0);
      s = e + 1;
    } else if (s[0] == '}') {
      g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE,
                   "\"%s\": a lone }, write }} for a brace", raw->str);
      g_string_free (lit, TRUE);
      return FALSE;
    } else {
      g_string_append_c (lit, *s++);
    }
  }
  evd_redis_arg_add (a, -1, lit->str, lit->len);
  g_string_free (lit, TRUE);
  return TRUE;
}

/* The next blank-separated word of `*s`, quotes removed; FALSE at the end or on an error. */
static gboolean
evd_redis_template_word (const char **s, GString *word, GError **error)
{
  const char *p = *s;

  g_string_truncate (word, 0);
  while (*p == ' ' || *p == '\t')
    p++;
  if (*p == '\0')
    return FALSE;
  while (*p != '\0' && *p != ' ' && *p != '\t') {
    if (*p != '"') {
      g_string_append_c (word, *p++);
      continue;
    }
    for (p++; *p != '"'; p++) {
      if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
        p++;
      if (*p == '\0') {
        g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE, "a \" is not closed");
        return FALSE;
      }
      g_string_append_c (word, *p);
    }
    p++;
  }
  *s = p;
  return TRUE;
}

static gboolean
evd_redis_template_check_command (EvdRedisTemplate *t, GError **error)
{
  const EvdRedisArg *a = &t->args[0];
  const EvdRedisPiece *p = a->pieces->len == 1 ? &g_array_index (a->pieces, EvdRedisPiece, 0)
                                               : NULL;

  if (p == NULL || p->param >= 0) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE,
                 "the command (the first word) must be written out, not a {param}");
    return FALSE;
  }
  t->command = g_ascii_strup (p->text, -1);
  if (!g_strv_contains (evd_redis_allowed, t->command)) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE,
                 "command %s is not an allowed read-only command (see the README's list)",
                 t->command);
    return FALSE;
  }
  return TRUE;
}

/* HGETALL answers field, value pairs; a sorted-set range WITHSCORES, member, score pairs. */
static void
evd_redis_template_set_shape (EvdRedisTemplate *t)
{
  t->shape = EVD_REDIS_SHAPE_VALUE;
  if (strcmp (t->command, "HGETALL") == 0) {
    t->shape = EVD_REDIS_SHAPE_FIELD_VALUE;
    return;
  }
  if (!g_str_has_prefix (t->command, "ZRANGE") && !g_str_has_prefix (t->command, "ZREVRANGE"))
    return;
  for (guint i = 1; i < t->n_args; i++) {
    const GArray *pieces = t->args[i].pieces;

    if (pieces->len == 1 && g_array_index (pieces, EvdRedisPiece, 0).param < 0 &&
        g_ascii_strcasecmp (g_array_index (pieces, EvdRedisPiece, 0).text, "WITHSCORES") == 0)
      t->shape = EVD_REDIS_SHAPE_MEMBER_SCORE;
  }
}

EvdRedisTemplate *
evd_redis_template_new (const char *text, GError **error)
{
  g_autoptr (EvdRedisTemplate) t = g_new0 (EvdRedisTemplate, 1);
  g_autoptr (GString) word = g_string_new (NULL);
  GError *local = NULL;

  t->names = g_ptr_array_new_with_free_func (g_free);
  while (evd_redis_template_word (&text, word, &local)) {
    if (t->n_args == EVD_REDIS_MAX_ARGS) {
      g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE,
                   "more than %d arguments", EVD_REDIS_MAX_ARGS);
      return NULL;
    }
    if (!evd_redis_template_arg (t, &t->args[t->n_args++], word, error))
      return NULL;
  }
  if (local != NULL) {
    g_propagate_error (error, local);
    return NULL;
  }
  if (t->n_args == 0) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_TEMPLATE, "no command");
    return NULL;
  }
  if (!evd_redis_template_check_command (t, error))
    return NULL;
  evd_redis_template_set_shape (t);
  return g_steal_pointer (&t);
}

const char *
evd_redis_template_command (const EvdRedisTemplate *t)
{
  return t->command;
}

EvdRedisShape
evd_redis_template_shape (const EvdRedisTemplate *t)
{
  return t->shape;
}

void
evd_redis_template_set_max_rows (EvdRedisTemplate *t, guint max_rows)
{
  t->max_rows = max_rows;
}

guint
evd_redis_template_n_params (const EvdRedisTemplate *t)
{
  return t->names->len;
}

const char *
evd_redis_template_param (const EvdRedisTemplate *t, guint i)
{
  return t->names->pdata[i];
}

/* Decimal, without printf's machinery: one per int param of every call. */
static void
evd_redis_append_int (GString *out, gint64 v)
{
  char buf[24], *p = buf + sizeof buf;
  guint64 u = v < 0 ? -(guint64) v : (guint64) v;

  do
    *--p = (char) ('0' + u % 10);
  while ((u /= 10) != 0);
  if (v < 0)
    *--p = '-';
  g_string_append_len (out, p, buf + sizeof buf - p);
}

gboolean
evd_redis_param_text (const EvdValue *v, GString *out)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  switch (v->kind) {
  case EVD_VALUE_INT:
    evd_redis_append_int (out, v->i);
    return TRUE;
  case EVD_VALUE_REAL:
    if (!isfinite (v->r)) {
      g_string_append (out, isnan (v->r) ? "nan" : v->r > 0 ? "inf" : "-inf");
      return TRUE;
    }
    /* 15 significant digits give the shortest form of any double that has one that short
     * (the rounding to 15 digits lands on it); else 16, else 17 always reads back. */
    for (int digits = 15; digits <= 17; digits++) {
      char fmt[8];

      g_snprintf (fmt, sizeof fmt, "%%.%dg", digits);
      g_ascii_formatd (buf, sizeof buf, fmt, v->r);
      if (g_ascii_strtod (buf, NULL) == v->r)
        break;
    }
    g_string_append (out, buf);
    return TRUE;
  case EVD_VALUE_TEXT:
  case EVD_VALUE_BLOB:
    g_string_append_len (out, v->data, v->len);
    return TRUE;
  default:
    return FALSE;
  }
}

/* evd_redis_template_format with the arguments written into `buf` (a client's scratch
 * buffer, reused for every call on its loop). */
static char *
evd_redis_template_format_in (const EvdRedisTemplate *t, const EvdParam *params,
                              guint n_params, GString *buf, gsize *len, GError **error)
{
  const char *argv[EVD_REDIS_MAX_ARGS];
  size_t argvlen[EVD_REDIS_MAX_ARGS];
  gsize starts[EVD_REDIS_MAX_ARGS];
  char *cmd = NULL;
  int n;

  g_string_truncate (buf, 0);
  /* Every argument is written into one buffer first (it may move while it grows), and the
   * pointers are taken at the end. */
  for (guint i = 0; i < t->n_args; i++) {
    const GArray *pieces = t->args[i].pieces;

    starts[i] = buf->len;
    for (guint j = 0; j < pieces->len; j++) {
      const EvdRedisPiece *p = &g_array_index (pieces, EvdRedisPiece, j);
      const char *name = p->param >= 0 ? t->names->pdata[p->param] : NULL;
      const EvdValue *v = name ? evd_value_find_param (params, n_params, name) : NULL;

      if (name == NULL) {
        g_string_append_len (buf, p->text, (gssize) p->len);
      } else if (v == NULL || !evd_redis_param_text (v, buf)) {
        g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_BAD_PARAMS,
                     "param %s: %s", name, v == NULL ? "missing" : "null is no argument");
        return NULL;
      }
    }
    argvlen[i] = buf->len - starts[i];
  }
  for (guint i = 0; i < t->n_args; i++)
    argv[i] = buf->str + starts[i];
  n = redisFormatCommandArgv (&cmd, (int) t->n_args, argv, argvlen);
  if (n < 0)
    g_error ("redisFormatCommandArgv: out of memory");
  *len = (gsize) n;
  return cmd;
}

char *
evd_redis_template_format (const EvdRedisTemplate *t, const EvdParam *params, guint n_params,
                           gsize *len, GError **error)
{
  g_autoptr (GString) buf = g_string_new (NULL);

  return evd_redis_template_format_in (t, params, n_params, buf, len, error);
}

/* ---- Replies. ---- */

static const char *const evd_redis_value_cols[] = { "value" };
static const char *const evd_redis_field_cols[] = { "field", "value" };
static const char *const evd_redis_score_cols[] = { "member", "score" };

/* UTF-8 with NULs allowed (g_utf8_validate calls a NUL invalid). */
static gboolean
evd_redis_utf8 (const char *s, gsize len)
{
  const char *end = s + len;

  while (s < end) {
    const char *nul = memchr (s, '\0', (gsize) (end - s));
    const char *stop = nul ? nul : end;

    if (!g_utf8_validate_len (s, (gsize) (stop - s), NULL))
      return FALSE;
    s = stop + (nul ? 1 : 0);
  }
  return TRUE;
}

static void
evd_redis_add_bytes (EvdRows *rows, const redisReply *r)
{
  if (evd_redis_utf8 (r->str, r->len))
    evd_rows_add_text (rows, r->str, (gssize) r->len);
  else
    evd_rows_add_blob (rows, r->str, r->len);
}

static gboolean
evd_redis_add_cell (EvdRows *rows, const redisReply *r, GError **error)
{
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    evd_redis_add_bytes (rows, r);
    return TRUE;
  case REDIS_REPLY_INTEGER:
    evd_rows_add_int (rows, r->integer);
    return TRUE;
  case REDIS_REPLY_NIL:
    evd_rows_add_null (rows);
    return TRUE;
  case REDIS_REPLY_ERROR:
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY, "%s", r->str);
    return FALSE;
  default:
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY,
                 "a nested array in the reply has no table shape");
    return FALSE;
  }
}

/* field, value or member, score rows from a flat array of pairs. */
static gboolean
evd_redis_add_pairs (EvdRows *rows, const redisReply *r, EvdRedisShape shape, GError **error)
{
  if (r->elements % 2 != 0) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY,
                 "a reply of %zu elements, not pairs", r->elements);
    return FALSE;
  }
  for (size_t i = 0; i < r->elements; i += 2) {
    const redisReply *a = r->element[i], *b = r->element[i + 1];
    char *end = NULL;
    double score;

    if (a->type != REDIS_REPLY_STRING || b->type != REDIS_REPLY_STRING) {
      g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY, "a pair that is not strings");
      return FALSE;
    }
    evd_redis_add_bytes (rows, a);
    if (shape == EVD_REDIS_SHAPE_FIELD_VALUE) {
      evd_redis_add_bytes (rows, b);
      continue;
    }
    score = g_ascii_strtod (b->str, &end);
    if (b->len == 0 || end != b->str + b->len) {
      g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY, "score \"%s\" is no number",
                   b->str);
      return FALSE;
    }
    evd_rows_add_real (rows, score);
  }
  return TRUE;
}

EvdRows *
evd_redis_reply_rows (const redisReply *r, EvdRedisShape shape, GError **error)
{
  const char *const *cols = shape == EVD_REDIS_SHAPE_FIELD_VALUE ? evd_redis_field_cols
                          : shape == EVD_REDIS_SHAPE_MEMBER_SCORE ? evd_redis_score_cols
                          : evd_redis_value_cols;
  guint n_cols = shape == EVD_REDIS_SHAPE_VALUE ? 1 : 2;
  g_autoptr (EvdRows) rows = NULL;
  size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements : 1;
  gsize bytes = 16;

  if (r->type == REDIS_REPLY_ERROR) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY, "%s", r->str);
    return NULL;
  }
  if (shape != EVD_REDIS_SHAPE_VALUE && r->type != REDIS_REPLY_ARRAY) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_REPLY, "a reply that is not an array");
    return NULL;
  }
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
    bytes += r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->len + 1 : 0;
  bytes += r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ? r->len + 1 : 0;
  rows = evd_rows_new_sized (n_cols, cols, (guint) MIN (n + n_cols, G_MAXUINT), bytes);
  if (r->type == REDIS_REPLY_NIL)
    return g_steal_pointer (&rows);   /* no value: no row */
  if (r->type != REDIS_REPLY_ARRAY)
    return evd_redis_add_cell (rows, r, error) ? g_steal_pointer (&rows) : NULL;
  if (shape != EVD_REDIS_SHAPE_VALUE)
    return evd_redis_add_pairs (rows, r, shape, error) ? g_steal_pointer (&rows) : NULL;
  for (size_t i = 0; i < r->elements; i++)
    if (!evd_redis_add_cell (rows, r->element[i], error))
      return NULL;
  return g_steal_pointer (&rows);
}

/* ---- Addresses. ---- */

/* A unix socket path, or host:port; `sa` is filled when the host is numeric. */
typedef struct {
  gboolean is_unix;
  char *host;               /* NULL for a unix socket */
  int port;
  struct sockaddr_storage sa;
  int sa_len;               /* 0: the host needs resolving */
} EvdRedisAddress;

static gboolean
evd_redis_address_parse (const char *address, EvdRedisAddress *a, GError **error)
{
  const char *colon;
  char *end = NULL;
  long port;

  memset (a, 0, sizeof *a);
  if (address[0] == '/') {
    struct sockaddr_un *un = (struct sockaddr_un *) &a->sa;

    if (strlen (address) >= sizeof un->sun_path) {
      g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_ADDRESS,
                   "socket path longer than %zu bytes", sizeof un->sun_path - 1);
      return FALSE;
    }
    a->is_unix = TRUE;
    un->sun_family = AF_UNIX;
    strcpy (un->sun_path, address);
    a->sa_len = (int) sizeof *un;
    return TRUE;
  }
  colon = strrchr (address, ':');
  if (colon != NULL)
    port = strtol (colon + 1, &end, 10);
  if (colon == NULL || colon == address || end == colon + 1 || *end != '\0' ||
      port < 1 || port > 65535) {
    g_set_error (error, EVD_REDIS_ERROR, EVD_REDIS_ERROR_ADDRESS,
                 "\"%s\" is neither host:port nor an absolute socket path", address);
    return FALSE;
  }
  a->port = (int) port;
  if (address[0] == '[' && colon[-1] == ']')
    a->host = g_strndup (address + 1, (gsize) (colon - address - 2));
  else
    a->host = g_strndup (address, (gsize) (colon - address));
  a->sa_len = (int) sizeof a->sa;
  if (evutil_parse_sockaddr_port (address, (struct sockaddr *) &a->sa, &a->sa_len) != 0)
    a->sa_len = 0;          /* a name: resolved on the loop, without blocking */
  return TRUE;
}

gboolean
evd_redis_address_check (const char *address, GError **error)
{
  EvdRedisAddress a;

  if (!evd_redis_address_parse (address, &a, error))
    return FALSE;
  g_free (a.host);
  return TRUE;
}

/* ---- Connections. ---- */

/* Reconnection delays: the first retry soon (a restart is often quick), then doubling so
 * that a server that is down is not hammered by every loop's connections. */
#define EVD_REDIS_BACKOFF_MIN_MS 100
#define EVD_REDIS_BACKOFF_MAX_MS 2000
/* One connection attempt, name resolution included, shared by the name's addresses (each has
 * its part of what is left): without a bound, an address that drops SYNs would hold the
 * connection for the kernel's two minutes and the addresses behind it would never be tried.
 * As the Thrift upstreams' and PostgreSQL's default connect_timeout_ms. */
#define EVD_REDIS_CONNECT_TIMEOUT_MS 2000

typedef enum {
  EVD_REDIS_CONN_DOWN,      /* waiting for its backoff timer; takes no calls */
  EVD_REDIS_CONN_CONNECTING,
  EVD_REDIS_CONN_UP,
} EvdRedisConnState;

typedef struct _EvdRedisConn EvdRedisConn;

/* One entry of a connection's FIFO: a call waiting for its reply, the AUTH sent first on
 * a new connection (conn set, done NULL, is_auth), or a tombstone (done NULL). */
struct _EvdRedisCall {
  GList link;               /* in the connection's FIFO */
  EvdRedisConn *conn;
  EvdRedisDone done;
  gpointer data;
  EvdRedisShape shape;
  guint max_rows;           /* 0: no bound */
  gboolean is_auth;
  gint64 deadline_us;
  gint64 sent_us;
};

struct _EvdRedisConn {
  EvdRedisClient *client;
  EvdRedisConnState state;
  struct bufferevent *bev;
  EvdConnect *connect;      /* CONNECTING over TCP: the attempt under way; NULL otherwise */
  redisReader *reader;
  gsize reading;            /* bytes fed to the reader since the last whole reply ended */
  int elements_over;        /* -1, or the length of an array refused for max_reply_bytes */
  redisReplyObjectFunctions hiredis;   /* hiredis's own object functions, which ours wrap */
  GQueue fifo;              /* EvdRedisCall, in the order sent */
  struct event *retry;      /* backoff timer */
  struct event *deadline;   /* due at the earliest live deadline, or not pending */
  gint64 deadline_due;
  guint failures;           /* in a row, for the backoff */
  gint64 up_us;             /* when it connected */
};

struct _EvdRedisClient {
  struct event_base *base;
  struct evdns_base *dns;   /* made at the first name to resolve */
  char *name;
  char *password;
  EvdRedisAddress addr;
  EvdRedisStats *stats;
  EvdRedisStats own_stats;
  gint64 stuck_us;
  gsize max_reply;          /* bytes on the wire */
  GString *scratch;         /* a command's arguments while it is formatted */
  char *last_error;         /* why the last connection was lost, for calls refused now */
  guint n_conns;
  EvdRedisConn *conns;
};

static void evd_redis_conn_connect (EvdRedisConn *conn);
static void evd_redis_conn_arm (EvdRedisConn *conn, gint64 due_us);

static void
evd_redis_call_finish (EvdRedisCall *call, EvdRows *rows, const GError *error)
{
  EvdRedisDone done = call->done;

  g_assert (done != NULL);
  call->done = NULL;        /* a tombstone from now on, if still in a FIFO */
  done (call->data, rows, error);
}

static void
evd_redis_call_fail (EvdRedisCall *call, EvdRedisError code, const char *fmt, ...)
  G_GNUC_PRINTF (3, 4);

static void
evd_redis_call_fail (EvdRedisCall *call, EvdRedisError code, const char *fmt, ...)
{
  g_autoptr (GError) error = NULL;
  va_list ap;

  va_start (ap, fmt);
  error = g_error_new_valist (EVD_REDIS_ERROR, code, fmt, ap);
  va_end (ap);
  evd_redis_call_finish (call, NULL, error);
}

/* Closes the connection's socket and takes its FIFO (to `fifo`), so that a done callback
 * run afterwards, which may send a new call, finds this connection down. */
static void
evd_redis_conn_close (EvdRedisConn *conn, GQueue *fifo)
{
  EvdRedisStats *stats = conn->client->stats;

  if (conn->state == EVD_REDIS_CONN_UP)
    g_atomic_int_add (&stats->connections, -1);
  g_atomic_int_add (&stats->in_flight, -(gint) conn->fifo.length);
  conn->state = EVD_REDIS_CONN_DOWN;
  g_clear_pointer (&conn->connect, evd_connect_cancel);
  g_clear_pointer (&conn->bev, bufferevent_free);
  g_clear_pointer (&conn->reader, redisReaderFree);
  *fifo = conn->fifo;
  g_queue_init (&conn->fifo);
  evd_redis_conn_arm (conn, G_MAXINT64);
}

/* Fails every call of `fifo` still waiting with `code`, and frees the entries. */
static void
evd_redis_fifo_fail (GQueue *fifo, EvdRedisError code, const char *name, const char *why)
{
  while (fifo->head != NULL) {
    EvdRedisCall *call = fifo->head->data;

    g_queue_unlink (fifo, &call->link);
    if (call->done != NULL)
      evd_redis_call_fail (call, code, "database %s: %s", name, why);
    g_free (call);
  }
}

/* The connection failed or the server went away: its calls fail with UNAVAILABLE, and it is
 * made again after a backoff. */
static void
evd_redis_conn_lost (EvdRedisConn *conn, const char *why)
{
  EvdRedisClient *c = conn->client;
  g_autofree char *lost = g_strdup_printf ("connection lost: %s", why);
  GQueue fifo;
  guint delay_ms;

  g_free (c->last_error);
  c->last_error = g_strdup (why);
  __atomic_fetch_add (&c->stats->losses, 1, __ATOMIC_RELAXED);
  /* Up for longer than the longest wait, it worked even if no command went on it (Redis's
   * `timeout` closes idle clients): its loss starts the backoff again. */
  if (conn->state == EVD_REDIS_CONN_UP &&
      g_get_monotonic_time () - conn->up_us >= EVD_REDIS_BACKOFF_MAX_MS * (gint64) 1000)
    conn->failures = 0;
  evd_redis_conn_close (conn, &fifo);
  /* 100-200 ms, 200-400, 400-800... up to 2 s: the README's "after 100 ms, doubling", and
   * no sooner (as PostgreSQL's, evd_pg_backoff_ms), each with jitter so that the
   * connections of every loop do not come back in step. */
  delay_ms = EVD_REDIS_BACKOFF_MIN_MS << MIN (conn->failures, 5u);
  delay_ms += (guint) g_random_int_range (0, (gint32) delay_ms + 1);
  delay_ms = MIN (delay_ms, EVD_REDIS_BACKOFF_MAX_MS);
  conn->failures++;
  struct timeval tv = { delay_ms / 1000, (delay_ms % 1000) * 1000 };

  evtimer_add (conn->retry, &tv);
  evd_redis_fifo_fail (&fifo, EVD_REDIS_ERROR_UNAVAILABLE, c->name, lost);
}

/* The earliest deadline of a live call, or G_MAXINT64. */
static gint64
evd_redis_conn_next_deadline (EvdRedisConn *conn)
{
  gint64 next = G_MAXINT64;

  for (GList *l = conn->fifo.head; l != NULL; l = l->next) {
    EvdRedisCall *call = l->data;

    if (call->done != NULL && call->deadline_us < next)
      next = call->deadline_us;
  }
  return next;
}

static void
evd_redis_conn_arm (EvdRedisConn *conn, gint64 due_us)
{
  gint64 wait_us = MAX (due_us - g_get_monotonic_time (), 0);

  conn->deadline_due = due_us;
  if (due_us == G_MAXINT64) {
    event_del (conn->deadline);
    return;
  }
  struct timeval tv = { wait_us / G_USEC_PER_SEC, wait_us % G_USEC_PER_SEC };

  evtimer_add (conn->deadline, &tv);
}

/* A server that has not answered the oldest command of a connection for this long is taken
 * as hung (stopped, or a network that drops everything silently): the connection is closed
 * and made again, so that its FIFO of tombstones stops growing with every call sent. Far
 * above any lookup's timeout: a slow reply (DEBUG SLEEP 2) must not cost the connection. */
#define EVD_REDIS_STUCK_MS 10000

/* Every element of an array takes at least 3 bytes on the wire: an empty status or error
 * ("+\r\n", "-\r\n"); ":0\r\n" and "*0\r\n" are 4, "$-1\r\n" 5, "$0\r\n\r\n" 6. */
#define EVD_REDIS_MIN_ELEMENT 3

/* The reply, or part of one, that nobody will read: an array of more rows than its call may
 * have, or the reply of a call that timed out. Its elements are parsed and dropped as they
 * come; the reader builds nothing under it. */
static char evd_redis_discarded_reply;
#define EVD_REDIS_DISCARDED ((void *) &evd_redis_discarded_reply)

/* max_reply_bytes when the options give none: the Thrift side's own frame bound. */
#define EVD_REDIS_MAX_REPLY (16u << 20)

/* Checked when calls expire, i.e. only while calls keep coming. Only a tombstone at the head
 * counts: a call still waiting is not given up before its own deadline (a timer may fire a
 * little early: libevent's default clock is the coarse one). */
static gboolean
evd_redis_conn_stuck (EvdRedisConn *conn, gint64 now)
{
  EvdRedisCall *head = conn->fifo.head ? conn->fifo.head->data : NULL;

  return head != NULL && head->done == NULL && now - head->sent_us > conn->client->stuck_us;
}

/* Calls past their deadline answer TIMEOUT now and stay as tombstones. Expired calls are
 * found first: a done callback may add calls to this FIFO or cancel others. */
static void
evd_redis_conn_on_deadline (evutil_socket_t fd, short what, void *arg)
{
  EvdRedisConn *conn = arg;
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GPtrArray) expired = g_ptr_array_new ();

  (void) fd, (void) what;
  for (GList *l = conn->fifo.head; l != NULL; l = l->next) {
    EvdRedisCall *call = l->data;

    if (call->done != NULL && call->deadline_us <= now)
      g_ptr_array_add (expired, call);
  }
  conn->deadline_due = G_MAXINT64;   /* the timer has fired: not pending */
  for (guint i = 0; i < expired->len; i++) {
    EvdRedisCall *call = expired->pdata[i];

    if (call->done != NULL)
      evd_redis_call_fail (call, EVD_REDIS_ERROR_TIMEOUT, "database %s: no reply within the "
                           "deadline", conn->client->name);
  }
  if (conn->state == EVD_REDIS_CONN_DOWN)
    return;
  if (evd_redis_conn_stuck (conn, now))
    evd_redis_conn_lost (conn, "no reply for too long");
  else
    evd_redis_conn_arm (conn, evd_redis_conn_next_deadline (conn));
}

static void
evd_redis_conn_on_retry (evutil_socket_t fd, short what, void *arg)
{
  (void) fd, (void) what;
  evd_redis_conn_connect (arg);
}

/* One reply, `size` bytes on the wire, for the head of the FIFO. FALSE when the connection
 * was lost meanwhile. */
static gboolean
evd_redis_conn_reply (EvdRedisConn *conn, redisReply *reply, gsize size)
{
  EvdRedisClient *c = conn->client;
  EvdRedisCall *call = conn->fifo.head ? conn->fifo.head->data : NULL;
  g_autoptr (GError) error = NULL;
  EvdRows *rows;

  if (call == NULL) {       /* never a discarded reply: only a call's is discarded */
    /* An error before any command is the server saying why it closes (Redis at its
     * maxclients): its words are why the database is unavailable. */
    g_autofree char *why = g_strdup (reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                       : "a reply nobody asked for");

    freeReplyObject (reply);
    evd_redis_conn_lost (conn, why);
    return FALSE;
  }
  g_queue_unlink (&conn->fifo, &call->link);
  g_atomic_int_add (&c->stats->in_flight, -1);
  if (reply == EVD_REDIS_DISCARDED) {     /* an array the call cannot take (create_array) */
    conn->failures = 0;
    if (call->done != NULL)
      evd_redis_call_fail (call, EVD_REDIS_ERROR_TOO_MANY_ROWS, "more than max_rows (%u) rows",
                           call->max_rows);
    g_free (call);
    return TRUE;
  }
  if (call->is_auth && reply->type == REDIS_REPLY_ERROR) {
    g_autofree char *why = g_strdup_printf ("AUTH: %s", reply->str);

    freeReplyObject (reply);
    g_free (call);
    evd_redis_conn_lost (conn, why);
    return FALSE;
  }
  /* The server answered a command: the connection works, and its next loss starts the
   * backoff again. Not once it connected: Redis at its maxclients accepts, writes an error
   * and closes, and that connection must back off like one refused. */
  if (reply->type != REDIS_REPLY_ERROR)
    conn->failures = 0;
  if (call->done != NULL && size > c->max_reply)
    evd_redis_call_fail (call, EVD_REDIS_ERROR_TOO_LARGE, "database %s: a reply of %"
                         G_GSIZE_FORMAT " bytes is over max_reply_bytes (%" G_GSIZE_FORMAT ")",
                         c->name, size, c->max_reply);
  else if (call->done != NULL) {
    rows = evd_redis_reply_rows (reply, call->shape, &error);
    evd_redis_call_finish (call, rows, error);
  }
  freeReplyObject (reply);
  g_free (call);
  return TRUE;
}

/* The reply that has not all come is over max_reply_bytes: its call fails for good (asked
 * again, Redis would send it again), and the connection, whose stream cannot be read past
 * that reply without holding it, is lost with the calls behind. */
static void
evd_redis_conn_too_large (EvdRedisConn *conn)
{
  EvdRedisClient *c = conn->client;
  EvdRedisCall *call = conn->fifo.head ? conn->fifo.head->data : NULL;
  g_autofree char *why = NULL;

  if (conn->elements_over >= 0)
    why = g_strdup_printf ("a reply of %d elements (at least %" G_GINT64_FORMAT " bytes) is "
                           "over max_reply_bytes (%" G_GSIZE_FORMAT ")", conn->elements_over,
                           (gint64) conn->elements_over * EVD_REDIS_MIN_ELEMENT, c->max_reply);
  else
    why = g_strdup_printf ("a reply of more than %" G_GSIZE_FORMAT " bytes is over "
                           "max_reply_bytes", c->max_reply);
  if (call != NULL && call->done != NULL)
    evd_redis_call_fail (call, EVD_REDIS_ERROR_TOO_LARGE, "database %s: %s", c->name, why);
  /* The call may have cancelled others or sent more; the connection is still this one's. */
  if (conn->state != EVD_REDIS_CONN_DOWN)
    evd_redis_conn_lost (conn, why);
}

static gboolean
evd_redis_task_discarded (const redisReadTask *task)
{
  return task->parent != NULL && task->parent->obj == EVD_REDIS_DISCARDED;
}

/* The rows an array of `elements` makes for `call`'s shape: a pair of elements per row for
 * HGETALL and WITHSCORES. */
static guint64
evd_redis_call_rows_of (const EvdRedisCall *call, int elements)
{
  return call->shape == EVD_REDIS_SHAPE_VALUE ? (guint64) elements : (guint64) elements / 2;
}

/* hiredis allocates an array's element pointers when its header comes ("*50000000\r\n":
 * 400 MB at once, for 12 bytes), and a reply object per element after. An array whose
 * elements cannot fit in max_reply_bytes is refused there: NULL makes the reader fail, and
 * elements_over tells evd_redis_conn_on_read that it was this, not a lack of memory. The
 * reply of a call that cannot take it (more rows than its max_rows, or no caller left) is
 * discarded instead: the connection goes on, and nothing of it is held. */
static void *
evd_redis_create_array (const redisReadTask *task, int elements)
{
  EvdRedisConn *conn = task->privdata;
  EvdRedisCall *head = conn->fifo.head ? conn->fifo.head->data : NULL;

  if (evd_redis_task_discarded (task))
    return EVD_REDIS_DISCARDED;
  if (elements < 0 || (guint64) elements * EVD_REDIS_MIN_ELEMENT > conn->client->max_reply) {
    conn->elements_over = elements;
    return NULL;
  }
  if (task->parent == NULL && head != NULL && !head->is_auth &&
      (head->done == NULL ||
       (head->max_rows > 0 && evd_redis_call_rows_of (head, elements) > head->max_rows)))
    return EVD_REDIS_DISCARDED;
  return conn->hiredis.createArray (task, elements);
}

static void *
evd_redis_create_string (const redisReadTask *task, char *str, size_t len)
{
  EvdRedisConn *conn = task->privdata;

  return evd_redis_task_discarded (task) ? EVD_REDIS_DISCARDED
                                         : conn->hiredis.createString (task, str, len);
}

static void *
evd_redis_create_integer (const redisReadTask *task, long long value)
{
  EvdRedisConn *conn = task->privdata;

  return evd_redis_task_discarded (task) ? EVD_REDIS_DISCARDED
                                         : conn->hiredis.createInteger (task, value);
}

static void *
evd_redis_create_nil (const redisReadTask *task)
{
  EvdRedisConn *conn = task->privdata;

  return evd_redis_task_discarded (task) ? EVD_REDIS_DISCARDED : conn->hiredis.createNil (task);
}

static void
evd_redis_free_reply (void *reply)
{
  if (reply != EVD_REDIS_DISCARDED)
    freeReplyObject (reply);
}

/* Constant, so shared by every reader without a lock; each wraps the connection's copy of
 * hiredis's own (which redisReaderCreate installs, and hiredis does not export). */
static const redisReplyObjectFunctions evd_redis_reply_fns = {
  .createString = evd_redis_create_string,
  .createArray = evd_redis_create_array,
  .createInteger = evd_redis_create_integer,
  .createNil = evd_redis_create_nil,
  .freeObject = evd_redis_free_reply,
};

static redisReader *
evd_redis_reader_new (EvdRedisConn *conn)
{
  redisReader *r = redisReaderCreate ();

  if (r == NULL)
    g_error ("redisReaderCreate: out of memory");
  conn->hiredis = *r->fn;
  r->fn = (redisReplyObjectFunctions *) &evd_redis_reply_fns;
  r->privdata = conn;
  conn->elements_over = -1;
  return r;
}

static void
evd_redis_conn_on_read (struct bufferevent *bev, void *arg)
{
  EvdRedisConn *conn = arg;
  redisReader *r = conn->reader;
  struct evbuffer *in = bufferevent_get_input (bev);
  struct evbuffer_iovec vec[8];
  int n;

  /* The reader keeps its own copy of what it has not parsed yet. All of the input is fed at
   * once: a read brings at most libevent's single-read bound (16 KiB), so the reader holds
   * at most that much past max_reply_bytes before the check below. */
  while ((n = evbuffer_peek (in, -1, NULL, vec, G_N_ELEMENTS (vec))) > 0) {
    gsize fed = 0;

    for (int i = 0; i < MIN (n, (int) G_N_ELEMENTS (vec)); i++) {
      if (redisReaderFeed (r, vec[i].iov_base, vec[i].iov_len) != REDIS_OK)
        g_error ("redisReaderFeed: out of memory");
      fed += vec[i].iov_len;
    }
    evbuffer_drain (in, fed);
    conn->reading += fed;
  }
  for (;;) {
    void *reply = NULL;
    gsize size;
    int rc = redisReaderGetReply (r, &reply);

    if (rc != REDIS_OK && conn->elements_over >= 0) {
      evd_redis_conn_too_large (conn);
      return;
    }
    if (rc != REDIS_OK) {
      g_autofree char *why = g_strdup_printf ("protocol error: %s", r->errstr);

      evd_redis_conn_lost (conn, why);
      return;
    }
    if (reply == NULL)
      break;
    /* A whole reply leaves the reader at its end: what it has not parsed is the next's. The
     * parsed part of a reply still coming is gone from the reader's buffer, hence the count
     * from where the reply began rather than the buffer's length. */
    size = conn->reading - (r->len - r->pos);
    conn->reading = r->len - r->pos;
    if (!evd_redis_conn_reply (conn, reply, size))
      return;
  }
  if (conn->reading > conn->client->max_reply)
    evd_redis_conn_too_large (conn);
}

static void
evd_redis_conn_up (EvdRedisConn *conn)
{
  conn->state = EVD_REDIS_CONN_UP;
  conn->up_us = g_get_monotonic_time ();
  g_atomic_int_add (&conn->client->stats->connections, 1);
  __atomic_fetch_add (&conn->client->stats->connects, 1, __ATOMIC_RELAXED);
  if (!conn->client->addr.is_unix) {
    int one = 1;

    setsockopt (bufferevent_getfd (conn->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

/* A TCP connection made by evd_connect (every address of the name tried): the bufferevent,
 * which has held the commands sent meanwhile, takes its socket and writes them. */
static void
evd_redis_conn_on_connect (gpointer data, evutil_socket_t fd, const GError *error)
{
  EvdRedisConn *conn = data;

  conn->connect = NULL;
  if (error != NULL) {
    evd_redis_conn_lost (conn, error->message);
    return;
  }
  bufferevent_setfd (conn->bev, fd);      /* its events were enabled: they are watched now */
  evd_redis_conn_up (conn);
}

static void
evd_redis_conn_on_event (struct bufferevent *bev, short what, void *arg)
{
  EvdRedisConn *conn = arg;
  g_autofree char *why = NULL;

  (void) bev;
  if (what & BEV_EVENT_CONNECTED) {       /* a unix socket's */
    evd_redis_conn_up (conn);
    return;
  }
  if (what & BEV_EVENT_EOF)
    why = g_strdup ("the server closed the connection");
  else
    why = g_strdup (g_strerror (EVUTIL_SOCKET_ERROR () ? EVUTIL_SOCKET_ERROR () : ECONNRESET));
  evd_redis_conn_lost (conn, why);
}

static void
evd_redis_free_command (const void *data, size_t len, void *extra)
{
  (void) len, (void) extra;
  free ((void *) data);
}

/* Puts an entry at the FIFO's tail and its command in the output. */
static void
evd_redis_conn_send (EvdRedisConn *conn, EvdRedisCall *call, char *cmd, gsize len)
{
  call->conn = conn;
  call->sent_us = g_get_monotonic_time ();
  call->link.data = call;
  g_queue_push_tail_link (&conn->fifo, &call->link);
  g_atomic_int_add (&conn->client->stats->in_flight, 1);
  /* The formatted command is handed over, not copied; the buffer frees it once sent. */
  evbuffer_add_reference (bufferevent_get_output (conn->bev), cmd, len,
                          evd_redis_free_command, NULL);
}

static void
evd_redis_conn_send_auth (EvdRedisConn *conn)
{
  EvdRedisCall *auth = g_new0 (EvdRedisCall, 1);
  const char *argv[] = { "AUTH", conn->client->password };
  size_t argvlen[] = { 4, strlen (conn->client->password) };
  char *cmd = NULL;
  int n = redisFormatCommandArgv (&cmd, 2, argv, argvlen);

  if (n < 0)
    g_error ("redisFormatCommandArgv: out of memory");
  auth->is_auth = TRUE;
  evd_redis_conn_send (conn, auth, cmd, (gsize) n);
}

static void
evd_redis_conn_connect (EvdRedisConn *conn)
{
  EvdRedisClient *c = conn->client;
  int rc;

  conn->bev = bufferevent_socket_new (c->base, -1, BEV_OPT_CLOSE_ON_FREE);
  conn->reader = evd_redis_reader_new (conn);
  conn->reading = 0;
  conn->state = EVD_REDIS_CONN_CONNECTING;
  bufferevent_setcb (conn->bev, evd_redis_conn_on_read, NULL, evd_redis_conn_on_event, conn);
  bufferevent_enable (conn->bev, EV_READ | EV_WRITE);
  if (c->password != NULL)
    evd_redis_conn_send_auth (conn);
  if (c->addr.is_unix) {
    rc = bufferevent_socket_connect (conn->bev, (struct sockaddr *) &c->addr.sa, c->addr.sa_len);
    /* A connect that fails at once (no such socket file) reports it here, not as an event. */
    if (rc != 0 && conn->state == EVD_REDIS_CONN_CONNECTING)
      evd_redis_conn_lost (conn, g_strerror (errno ? errno : ECONNREFUSED));
    return;
  }
  /* A name is resolved by evdns, on the loop; a numeric address needs no resolver. */
  if (c->addr.sa_len == 0 && c->dns == NULL)
    c->dns = evd_dns_new (c->base);
  conn->connect = evd_connect_start (c->base, c->dns, c->addr.host, c->addr.port,
                                     EVD_REDIS_CONNECT_TIMEOUT_MS, evd_redis_conn_on_connect, conn);
}

EvdRedisClient *
evd_redis_client_new (struct event_base *base, const EvdRedisOptions *o)
{
  EvdRedisClient *c = g_new0 (EvdRedisClient, 1);
  g_autoptr (GError) error = NULL;

  c->base = base;
  c->name = g_strdup (o->name);
  c->password = g_strdup (o->password);
  c->stats = o->stats ? o->stats : &c->own_stats;
  c->stuck_us = (o->stuck_ms > 0 ? o->stuck_ms : EVD_REDIS_STUCK_MS) * (gint64) 1000;
  c->max_reply = o->max_reply_bytes > 0 ? o->max_reply_bytes : EVD_REDIS_MAX_REPLY;
  c->last_error = g_strdup ("not connected yet");
  c->scratch = g_string_sized_new (256);
  if (!evd_redis_address_parse (o->address, &c->addr, &error))
    g_error ("evd_redis_client_new: %s (checked at config load)", error->message);
  c->n_conns = MAX (o->connections, 1u);
  c->conns = g_new0 (EvdRedisConn, c->n_conns);
  for (guint i = 0; i < c->n_conns; i++) {
    EvdRedisConn *conn = &c->conns[i];

    conn->client = c;
    conn->retry = evtimer_new (base, evd_redis_conn_on_retry, conn);
    conn->deadline = evtimer_new (base, evd_redis_conn_on_deadline, conn);
    conn->deadline_due = G_MAXINT64;
    evd_redis_conn_connect (conn);
  }
  return c;
}

void
evd_redis_client_free (EvdRedisClient *c)
{
  if (c == NULL)
    return;
  for (guint i = 0; i < c->n_conns; i++) {
    EvdRedisConn *conn = &c->conns[i];
    GQueue fifo;

    evd_redis_conn_close (conn, &fifo);
    evd_redis_fifo_fail (&fifo, EVD_REDIS_ERROR_CANCELLED, c->name, "closed");
    event_free (conn->retry);
    event_free (conn->deadline);
  }
  /* With fail_requests: a lookup left by a cancelled attempt is answered (failed), and so
   * freed, on the loop's next pass (evd_connect.h). */
  evd_dns_free (c->dns, TRUE);
  g_free (c->conns);
  g_free (c->addr.host);
  g_free (c->name);
  if (c->password != NULL)
    memset (c->password, 0, strlen (c->password));
  g_free (c->password);
  g_free (c->last_error);
  g_string_free (c->scratch, TRUE);
  g_free (c);
}

/* The connection with the fewest entries in its FIFO among those up; else among those
 * connecting (the command waits in the output until the connection is made). */
static EvdRedisConn *
evd_redis_client_pick (EvdRedisClient *c)
{
  EvdRedisConn *best = NULL;

  for (guint i = 0; i < c->n_conns; i++) {
    EvdRedisConn *conn = &c->conns[i];

    if (conn->state == EVD_REDIS_CONN_DOWN)
      continue;
    if (best == NULL || (conn->state == EVD_REDIS_CONN_UP && best->state != EVD_REDIS_CONN_UP) ||
        (conn->state == best->state && conn->fifo.length < best->fifo.length))
      best = conn;
  }
  return best;
}

EvdRedisCall *
evd_redis_client_call (EvdRedisClient *c, const EvdRedisTemplate *t, const EvdParam *params,
                       guint n_params, gint64 deadline_us, EvdRedisDone done, gpointer data)
{
  EvdRedisConn *conn = evd_redis_client_pick (c);
  g_autoptr (GError) error = NULL;
  EvdRedisCall *call;
  char *cmd;
  gsize len;

  if (conn == NULL) {
    error = g_error_new (EVD_REDIS_ERROR, EVD_REDIS_ERROR_UNAVAILABLE,
                         "database %s unavailable: %s", c->name, c->last_error);
    done (data, NULL, error);
    return NULL;
  }
  cmd = evd_redis_template_format_in (t, params, n_params, c->scratch, &len, &error);
  if (cmd == NULL) {
    done (data, NULL, error);
    return NULL;
  }
  call = g_new0 (EvdRedisCall, 1);
  call->done = done;
  call->data = data;
  call->shape = evd_redis_template_shape (t);
  call->max_rows = t->max_rows;
  call->deadline_us = deadline_us;
  evd_redis_conn_send (conn, call, cmd, len);
  if (deadline_us < conn->deadline_due)
    evd_redis_conn_arm (conn, deadline_us);
  return call;
}

void
evd_redis_call_cancel (EvdRedisCall *call)
{
  /* The engine cancels a call whose time ran out too: count it as what it is. */
  if (g_get_monotonic_time () >= call->deadline_us)
    evd_redis_call_fail (call, EVD_REDIS_ERROR_TIMEOUT, "database %s: no reply within the "
                         "deadline", call->conn->client->name);
  else
    evd_redis_call_fail (call, EVD_REDIS_ERROR_CANCELLED, "cancelled");
}

guint
evd_redis_client_connections_up (EvdRedisClient *c)
{
  guint n = 0;

  for (guint i = 0; i < c->n_conns; i++)
    n += c->conns[i].state == EVD_REDIS_CONN_UP;
  return n;
}

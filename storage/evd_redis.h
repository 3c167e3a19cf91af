/* evd_redis: evdal's own Redis connections on a plain libevent base: command templates,
 * pipelined calls, and the mapping of Redis replies to tables.
 *
 * hiredis (Debian's 0.14) is used for two pure functions only: its reply parser (redisReader)
 * and its command formatter (redisFormatCommandArgv). Its async layer is not used: in 0.14
 * its libevent adapter cannot be freed from its own callback, and it owns its connection's
 * life in ways a loop that reconnects and times calls out cannot control.
 *
 * A client (EvdRedisClient) is `connections` bufferevents to one server, owned by one event
 * base and touched only from that base's thread. Redis answers a connection's commands in
 * the order it received them, so each connection keeps a FIFO of the calls it has sent; a
 * reply completes the call at the head. A call that stops waiting (its deadline passed, or it
 * was cancelled) stays in the FIFO as a tombstone, so that its reply, when it comes, is
 * dropped and the calls behind it still receive their own.
 *
 * The life of a call. evd_redis_client_call() formats the command and sends it on the
 * connection with the fewest calls in the air; `done` is then called exactly once, on the
 * base's thread: with rows when the reply comes, or with an error (EVD_REDIS_ERROR_*) when the
 * deadline passes first (TIMEOUT at once, not when the reply comes), the connection is lost
 * (UNAVAILABLE, for every call it carried), the reply is Redis's error (REPLY), or cancel was
 * called (CANCELLED, inside evd_redis_call_cancel). When no connection is up, or the params
 * cannot be made into arguments, `done` runs inside evd_redis_client_call(), which then
 * returns NULL. A lost connection is made again after 100 ms, doubling up to 2 s, each delay
 * with jitter; the doubling starts over once a connection has worked (the server answered a
 * command on it, or it stayed up 2 s), not when it connected: a server that accepts and closes
 * at once (Redis at its maxclients) is backed off from. While a connection waits to be made
 * again it takes no calls, and when none is up, calls fail at once ("database NAME
 * unavailable: why"). A connection whose oldest command has had no reply for `stuck_ms`
 * (10 s) counts as lost too, so that a hung server does not make its FIFO of tombstones grow
 * without end. A reply longer on the wire than `max_reply_bytes` fails its call (TOO_LARGE):
 * when it has all come, the connection goes on; when it has not, the connection is lost as
 * soon as its bytes pass the bound (every other call it carried fails with UNAVAILABLE), so
 * that one huge value (a 500 MB string, a million-element list) cannot take evdal's memory.
 */
#pragma once

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "evd_value.h"
#include "evd_rows.h"

G_BEGIN_DECLS

#define EVD_REDIS_ERROR (evd_redis_error_quark ())
GQuark evd_redis_error_quark (void);
typedef enum {
  EVD_REDIS_ERROR_TEMPLATE,     /* a command template that is malformed or not read-only */
  EVD_REDIS_ERROR_ADDRESS,      /* an address that is neither host:port nor a socket path */
  EVD_REDIS_ERROR_BAD_PARAMS,   /* a missing or null param */
  EVD_REDIS_ERROR_REPLY,        /* Redis answered with an error, or a reply of another shape */
  EVD_REDIS_ERROR_UNAVAILABLE,  /* no connection up, or the call's connection was lost */
  EVD_REDIS_ERROR_TIMEOUT,      /* the call's deadline passed before its reply */
  EVD_REDIS_ERROR_CANCELLED,
  EVD_REDIS_ERROR_TOO_LARGE,    /* a reply over max_reply_bytes */
  EVD_REDIS_ERROR_TOO_MANY_ROWS,/* a reply of more rows than the template's max_rows */
} EvdRedisError;

/* ---- Command templates. ---- */

/* How a reply becomes rows; fixed by the command (see the README's table). */
typedef enum {
  EVD_REDIS_SHAPE_VALUE,        /* column `value` */
  EVD_REDIS_SHAPE_FIELD_VALUE,  /* HGETALL: columns `field`, `value`, a row per field */
  EVD_REDIS_SHAPE_MEMBER_SCORE, /* ... WITHSCORES: columns `member`, `score` (real) */
} EvdRedisShape;

/* Arguments of one command, as many as the template has; a limit, so that a template cannot
 * make a command of unbounded size on every call. */
#define EVD_REDIS_MAX_ARGS 64

typedef struct _EvdRedisTemplate EvdRedisTemplate;

/* Splits `text` into arguments at blanks ("..." keeps blanks in one argument, with \" and \\
 * inside); `{name}` in an argument is the call's param `name`, `{{` and `}}` are literal
 * braces. The first argument is the command, which must be a literal on the read-only
 * allow-list (evd_redis_allowed_commands). */
EvdRedisTemplate *evd_redis_template_new (const char *text, GError **error);
void evd_redis_template_free (EvdRedisTemplate *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdRedisTemplate, evd_redis_template_free)

/* The command's name in upper case ("HGETALL"). */
const char *evd_redis_template_command (const EvdRedisTemplate *t);
EvdRedisShape evd_redis_template_shape (const EvdRedisTemplate *t);
/* The most rows a reply may make (0, the default: no bound). An array reply of more is
 * refused at its header, "more than max_rows (N) rows" (TOO_MANY_ROWS), and its elements are
 * read and dropped as they come, never held. */
void evd_redis_template_set_max_rows (EvdRedisTemplate *t, guint max_rows);
/* The distinct param names, in the order they first appear. */
guint evd_redis_template_n_params (const EvdRedisTemplate *t);
const char *evd_redis_template_param (const EvdRedisTemplate *t, guint i);
/* The command in Redis's protocol with `params` put in their arguments (each param's text
 * stays inside its argument, whatever bytes it holds); free with free(). Fails with
 * BAD_PARAMS when a param is missing or null. */
char *evd_redis_template_format (const EvdRedisTemplate *t, const EvdParam *params,
                                 guint n_params, gsize *len, GError **error);

/* The read-only commands a template may use, NULL-terminated, upper case. */
const char *const *evd_redis_allowed_commands (void);

/* A param's text as an argument: an int in decimal, a real as the shortest decimal that reads
 * back the same ("inf", "-inf", "nan" when not finite), text as is, a blob as its bytes.
 * Appends to `out`; FALSE for a null or malformed value. */
gboolean evd_redis_param_text (const EvdValue *v, GString *out);

/* ---- Replies. ---- */

/* The rows of `reply` (a reference to hand over), or REPLY for an error reply (its message)
 * or a reply that the shape cannot hold. */
EvdRows *evd_redis_reply_rows (const redisReply *reply, EvdRedisShape shape, GError **error);

/* ---- Clients. ---- */

/* Counters shared by the clients of one database on every loop; relaxed atomics, read by
 * /metrics from another thread. */
typedef struct {
  gint connections;         /* up now */
  gint in_flight;           /* calls sent whose reply has not come, tombstones included */
  gint64 connects;          /* connections made (first and again) */
  gint64 losses;            /* connections lost or refused */
} EvdRedisStats;

typedef struct {
  const char *name;         /* the database's name, in messages */
  const char *address;      /* "host:port", "[v6]:port", or an absolute socket path */
  const char *password;     /* NULL: no AUTH */
  guint connections;        /* at least 1 */
  EvdRedisStats *stats;     /* NULL, or kept by the caller longer than the client */
  guint stuck_ms;           /* 0: 10 s; a connection whose oldest command has waited this
                               long for its reply is closed and made again */
  gsize max_reply_bytes;    /* 0: 16 MiB; a reply longer than this on the wire fails its call
                               (and breaks its connection when it has not all come yet) */
} EvdRedisOptions;

/* Checks an address without resolving or connecting (for --check-config). */
gboolean evd_redis_address_check (const char *address, GError **error);

typedef struct _EvdRedisClient EvdRedisClient;
typedef struct _EvdRedisCall EvdRedisCall;
/* Exactly one of rows (a reference handed over) and error. */
typedef void (*EvdRedisDone) (gpointer data, EvdRows *rows, const GError *error);

/* Starts connecting at once. The options are copied. On the base's thread. */
EvdRedisClient *evd_redis_client_new (struct event_base *base, const EvdRedisOptions *opts);
/* Fails every call still waiting with CANCELLED, then closes. On the base's thread. */
void evd_redis_client_free (EvdRedisClient *c);

/* See "The life of a call" above. `params` are read before it returns. */
EvdRedisCall *evd_redis_client_call (EvdRedisClient *c, const EvdRedisTemplate *t,
                                     const EvdParam *params, guint n_params, gint64 deadline_us,
                                     EvdRedisDone done, gpointer data);
/* Completes the call with CANCELLED now; its reply will be dropped. Not after `done` ran. */
void evd_redis_call_cancel (EvdRedisCall *call);

/* Connections up now, on this client. */
guint evd_redis_client_connections_up (EvdRedisClient *c);

G_END_DECLS

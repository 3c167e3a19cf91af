/* evd_pg: PostgreSQL through libpq's asynchronous API on a libevent loop: a database's
 * settings and statements (EvdPgDb, shared by every loop), one pool of connections per loop
 * (EvdPgPool, touched only by its loop's thread), and one query at a time per connection.
 *
 * Nothing here blocks the loop: connecting is PQconnectStartParams + PQconnectPoll on the
 * socket libpq names at each step, timed by our own timer (libpq ignores connect_timeout in
 * this mode); host names are resolved by libevent's evdns and handed to libpq as `hostaddr`
 * (keeping `host` for TLS and the server's name); the connection is non-blocking
 * (PQsetnonblocking) and PQflush is driven by write readiness. Each connection prepares every
 * statement of the database once, when it connects, and learns each param's type and the
 * result columns (PQsendDescribePrepared); a call's params are sent typed, converted from its
 * EvdValues, never written into the SQL.
 *
 * The session settings that change what PostgreSQL sends back are pinned in the start-up
 * packet (`options`): DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres,
 * extra_float_digits=1, bytea_output=hex (the form evd_pg decodes; a role or database that
 * defaults to 'escape' made every bytea column fail), lc_monetary=C (money's text),
 * client_encoding=UTF8; with default_transaction_read_only=on, statement_timeout and
 * client_connection_check_interval. gssencmode=disable unless the conninfo sets it: GSSAPI
 * encryption, libpq's default when a Kerberos credential cache is at hand, may ask the KDC
 * for a ticket, blocking, while connecting.
 *
 * Where to connect is what libpq would use: the conninfo's host, hostaddr and port, else a
 * service file's (`service=` or PGSERVICE), else the environment's (PGHOST, PGHOSTADDR,
 * PGPORT), read once by evd_pg_db_new; a host name from any of them is resolved by evdns.
 *
 * The life of a query (EvdPgQuery). The caller fills it and hands it to evd_pg_pool_submit()
 * on the pool's loop; the pool completes it exactly once through its `done` callback, on that
 * loop: at once inside submit when the database has no live connection (BACKEND "database
 * NAME unavailable: ..."), else when its result is in or its connection is lost. The caller
 * may give it up with evd_pg_query_cancel() (its deadline passed, its request ended), which
 * completes it at once with EVD_PG_CANCELLED if it had not completed; the query struct may be
 * freed as soon as `done` has run. A connection whose query was given up keeps reading until
 * the abandoned result has drained, out of the pool meanwhile; one that does not drain within
 * EVD_PG_DRAIN_MS is closed and replaced (closing is the one cancel that cannot block: the
 * server notices it at its next client_connection_check_interval, and statement_timeout
 * bounds the rest).
 *
 * Failures. A connection that fails to connect or breaks is reconnected after an exponential
 * backoff with jitter, 100 ms to 2 s. While no connection of the pool is up, queries fail at
 * once rather than wait for their deadline; those queued when the last one breaks too.
 * A prepared statement PostgreSQL no longer runs because the columns it reads changed
 * ("cached plan must not change result type") fails its call as EVD_PG_LOST, and its
 * connection is made again at once, so that its statements are prepared anew.
 *
 * Several hosts (`host=a,b`, libpq's multi-host strings). Names are resolved in their order
 * and each address becomes one entry of the host, hostaddr and port lists libpq gets, kept
 * aligned; libpq walks that list on each attempt and honours target_session_attrs itself.
 * A failed attempt is tried again at once and after EVD_PG_RETRY_QUICK_MS before the backoff
 * above (the host that is still up is usually a step down the list), and queries wait for
 * those quick attempts rather than fail. With target_session_attrs=prefer-standby, a
 * connection that came up on a primary (the server's in_hot_standby, reported by PostgreSQL
 * 14 and later, says "off") is there only because no standby answered: after
 * `standby_recheck_ms` (jittered by a quarter either way) it is closed as soon as it is idle
 * and opened anew, so reads go back to a standby that is back. Recycling never fails a call:
 * a busy connection finishes its query first, and what is submitted meanwhile waits.
 */
#pragma once

#include <event2/event.h>
#include <glib.h>

#include "evd_value.h"
#include "evd_rows.h"

G_BEGIN_DECLS

#define EVD_PG_ERROR (evd_pg_error_quark ())
GQuark evd_pg_error_quark (void);
typedef enum {
  EVD_PG_ERROR_CONFIG,        /* conninfo or SQL the client refuses */
  EVD_PG_ERROR_UNAVAILABLE,   /* no connection to the database */
  EVD_PG_ERROR_SERVER,        /* PostgreSQL refused (its message) */
  EVD_PG_ERROR_TIMEOUT,       /* the check did not finish in time */
} EvdPgError;

/* A query's outcome. */
typedef enum {
  EVD_PG_OK,
  EVD_PG_FAILED,              /* BACKEND: the server's or the client's message */
  EVD_PG_LOST,                /* BACKEND, may succeed if sent again: the connection broke
                               * before the query was answered, or none could be made, or
                               * its prepared statement went stale (remade) */
  EVD_PG_CANCELLED,           /* given up by evd_pg_query_cancel */
} EvdPgStatus;

/* How long a connection whose query was given up may take to drain it before it is closed. */
#define EVD_PG_DRAIN_MS 1000
/* Reconnect backoff bounds. */
#define EVD_PG_BACKOFF_MIN_MS 100
#define EVD_PG_BACKOFF_MAX_MS 2000
/* Several hosts: the second quick attempt's delay (the first is at once). Short, since the
 * usual failure is one host gone while another is up; long enough not to spin on a refusal. */
#define EVD_PG_RETRY_QUICK_MS 50

/* The wait before a connection's `attempt`-th reconnect (0 first) after failures in a row:
 * exponential, jittered, within EVD_PG_BACKOFF_MIN_MS..EVD_PG_BACKOFF_MAX_MS. */
int evd_pg_backoff_ms (int attempt);

typedef struct _EvdPgDb EvdPgDb;
typedef struct _EvdPgPool EvdPgPool;
typedef struct _EvdPgQuery EvdPgQuery;

typedef struct {
  int connections;            /* per pool (per loop) */
  int statement_timeout_ms;   /* 0: none */
  int connect_timeout_ms;     /* a connection attempt, resolution included */
  int check_interval_ms;      /* client_connection_check_interval; 0: off */
  int standby_recheck_ms;     /* a prefer-standby connection on a primary is remade after
                               * this; 0: never */
  /* Optional: a pool went from no connection up to one (up, message NULL), or lost its last
   * one or failed its first attempt (down, why). On the pool's loop; storage does not log,
   * the caller does. */
  void (*notify) (gpointer data, gboolean up, const char *message);
  gpointer notify_data;
} EvdPgOptions;

/* ---- The database: settings and statements, shared by every pool. ----
 * Made and given statements on one thread before any pool exists; afterwards read-only,
 * except its counters (atomics). */

/* `conninfo` is any libpq connection string or URI; it is parsed (not connected to) here,
 * with libpq's defaults from the environment and the service file: call it where blocking
 * on a file is fine (the config's thread), never on a loop. A service that is not defined is
 * EVD_PG_ERROR_CONFIG. */
EvdPgDb *evd_pg_db_new (const char *name, const char *conninfo, const EvdPgOptions *options,
                        GError **error);
void evd_pg_db_free (EvdPgDb *db);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdPgDb, evd_pg_db_free)
const char *evd_pg_db_name (EvdPgDb *db);

/* Adds a statement: its :name placeholders become $1, $2, ... (a name used twice is one
 * param); `names` receives them in $n order (owned by the db). Returns its index, or -1 with
 * an error when the SQL has no statement or the placeholders cannot be read. */
int evd_pg_db_add_statement (EvdPgDb *db, const char *sql, const char *const **names,
                             guint *n_names, GError **error);

/* Prepares and describes statement `stmt` on a connection of its own, made on a private event
 * base run on the calling thread for at most `timeout_ms` (start-up and reload may wait that
 * long, no loop does): it must prepare, return columns, and have every param typed. FALSE
 * with EVD_PG_ERROR_UNAVAILABLE or _TIMEOUT when the database could not be reached (the
 * caller decides whether that is fatal), or EVD_PG_ERROR_SERVER with PostgreSQL's message. */
gboolean evd_pg_db_check (EvdPgDb *db, int stmt, int timeout_ms, GError **error);

/* Counters over every pool, for /metrics (any thread). */
typedef struct {
  int up, connecting, broken;    /* connections by state (draining counts as up) */
  int in_flight, queued;
  guint64 reconnects, queries, failures;
  int standby, primary;          /* up connections by the server's role (unknown: neither) */
  guint64 recycles;              /* prefer-standby connections on a primary, remade */
} EvdPgStats;
void evd_pg_db_stats (EvdPgDb *db, EvdPgStats *stats);

/* ---- The SQL rewriter (exposed for tests). ----
 * `:name` -> `$n`, outside quotes, comments (block comments nest, as PostgreSQL reads them),
 * dollar-quoted strings, and not in `::` casts. */
char *evd_pg_sql_rewrite (const char *sql, GPtrArray *names, GError **error);

/* ---- sqlcommenter (https://google.github.io/sqlcommenter/spec/). ----
 * `pairs` is key, value, key, value, ..., NULL; a pair whose value is NULL is left out.
 * Returns the SQL comment that holds k1='v1',k2='v2' (slash-star before, star-slash after),
 * the pairs sorted by key, every byte of keys and values but [A-Za-z0-9_.~-] percent-encoded:
 * whatever a value holds, no quote, star or slash reaches the SQL, so the comment can neither
 * end early nor nest. NULL when no pair has a value. */
char *evd_pg_sql_comment (const char *const *pairs);

/* ---- One loop's pool. ---- */

/* Opens db->connections connections on `base` (the calling thread must be the base's). */
EvdPgPool *evd_pg_pool_new (EvdPgDb *db, struct event_base *base);
/* Closes them; queries still held complete with EVD_PG_CANCELLED first. */
void evd_pg_pool_free (EvdPgPool *pool);

typedef void (*EvdPgDone) (EvdPgQuery *query, EvdPgStatus status, EvdRows *rows,
                           const char *message);

struct _EvdPgQuery {
  /* Filled by the caller. */
  int stmt;
  const EvdParam *params;     /* by name; the statement's names pick from them */
  guint n_params;
  int max_rows;
  EvdPgDone done;             /* `rows` is handed over; `message` is for BACKEND */
  gpointer user_data;
  /* Optional (NULL: none, the common case): a comment made by evd_pg_sql_comment, which must
   * outlive the query. With one, the statement is sent unprepared (PQsendQueryParams: parse,
   * bind and execute in the same round trip) as its SQL followed by the comment, so that
   * pg_stat_activity shows it while it runs; its params keep the types PostgreSQL gave them
   * at PREPARE and are sent as they always are, never written into the SQL. */
  const char *comment;
  /* Private. */
  EvdPgPool *pool;
  gpointer conn;              /* the connection running it, NULL while queued */
  GList link;                 /* in the pool's queue while queued */
  gboolean queued, finished;
};

void evd_pg_pool_submit (EvdPgPool *pool, EvdPgQuery *query);
void evd_pg_query_cancel (EvdPgQuery *query);

G_END_DECLS

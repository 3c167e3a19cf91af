/* evd_pg: PostgreSQL through libpq's asynchronous API on a libevent loop (see evd_pg.h).
 *
 * One EvdPgConn is one libpq connection and the state machine around it:
 *
 *   BACKOFF --timer--> RESOLVING --evdns--> CONNECTING --PQconnectPoll OK--> SETUP
 *      ^                                                                     | prepare and
 *      |                                                                     v describe each
 *      +---- lost, failed, timed out, drain too slow ---- READY <--> BUSY --> DRAINING
 *
 * A connection in READY takes the oldest queued query; BUSY runs it; a query given up while
 * it runs leaves its connection DRAINING (reading and dropping the result) until it is READY
 * again or EVD_PG_DRAIN_MS have passed, when it is closed and replaced. One timer per
 * connection serves the backoff, the connect timeout and the drain bound (never two at once).
 * The socket libpq names can change while connecting (each host tried is a new socket, often
 * with the old one's number), so the read and write events are remade at every connect step,
 * and whenever PQsocket() differs from the one they watch.
 * The events watch a dup() of libpq's socket, never libpq's own number: libpq closes its
 * socket by itself (a lost connection, the next host), and the loop only learns of it after;
 * a watch on libpq's number would then make libevent call epoll_ctl on a number another
 * loop's library may already have been given for a new socket. The dup stays this loop's
 * until evd_pg_conn_unwatch closes it.
 * A second timer, `recheck`, runs while a prefer-standby connection is READY or BUSY on a
 * primary; when it fires the connection is recycled (closed and started again) the next time
 * it is READY.
 */
#include "evd_pg.h"

#include "evd_dns.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

G_DEFINE_QUARK (evd-pg-error-quark, evd_pg_error)

/* Type oids of pg_type.h (stable since PostgreSQL's first releases). */
enum {
  EVD_PG_BOOLOID = 16, EVD_PG_BYTEAOID = 17, EVD_PG_INT8OID = 20, EVD_PG_INT2OID = 21,
  EVD_PG_INT4OID = 23, EVD_PG_OIDOID = 26, EVD_PG_XIDOID = 28, EVD_PG_CIDOID = 29,
  EVD_PG_FLOAT4OID = 700, EVD_PG_FLOAT8OID = 701, EVD_PG_UNKNOWNOID = 705,
};

typedef struct {
  char *sql;                /* with $n */
  GPtrArray *names;         /* char *, in $n order */
  char name[16];            /* the prepared statement's: "evd<index>" */
} EvdPgStmt;

struct _EvdPgDb {
  char *name;
  EvdPgOptions opt;
  GPtrArray *keys, *values; /* the conninfo's settings but those evd_pg sets itself */
  char *host, *hostaddr, *port, *options;
  char **host_list, **port_list;  /* host split at commas, and each one's port ("" default) */
  GPtrArray *stmts;         /* EvdPgStmt *; fixed once pools exist */
  /* Counters over every pool (atomics). Connections by state are one 64-bit word, 21 bits
   * each (up, connecting, broken), so that a scrape reads a consistent triple: a connection
   * moving between states is never counted twice or not at all. */
  gint64 states;
  gint in_flight, queued;
  gint64 reconnects, queries, failures;
  /* Several hosts: quick retries after a failure. prefer-standby: recheck connections that
   * came up on a primary. */
  guint n_hosts;
  gboolean prefer_standby;
  gint standby, primary;    /* up connections by role (atomics) */
  gint64 recycles;
};

/* What a connection knows of its server, from in_hot_standby when it came up. */
typedef enum {
  EVD_PG_ROLE_UNKNOWN,      /* not up, or a server older than 14 that does not report it */
  EVD_PG_ROLE_STANDBY,
  EVD_PG_ROLE_PRIMARY,
} EvdPgRole;

typedef enum {
  EVD_PG_BACKOFF,
  EVD_PG_RESOLVING,
  EVD_PG_CONNECTING,
  EVD_PG_SETUP,
  EVD_PG_READY,
  EVD_PG_BUSY,
  EVD_PG_DRAINING,
  EVD_PG_CLOSED,
} EvdPgState;

/* What one connection learned about one statement when it prepared it. */
typedef struct {
  Oid *types;               /* each param's type */
  int n_types;
  char *error;              /* NULL: usable */
} EvdPgConnStmt;

typedef struct _EvdPgConn EvdPgConn;

/* One host name being resolved; outlives its connection if that goes first (`conn` NULL),
 * since evdns calls back exactly once whatever happens. */
typedef struct {
  EvdPgConn *conn;
  struct evdns_getaddrinfo_request *req;
  gboolean in_call;         /* inside evdns_getaddrinfo, which may answer at once */
  gboolean answered;        /* it did: */
  int result;
  struct evutil_addrinfo *res;
} EvdPgResolve;

struct _EvdPgConn {
  EvdPgPool *pool;
  EvdPgState state;
  PGconn *pg;
  evutil_socket_t lib_fd;       /* libpq's socket that `fd` duplicates; -1: none watched */
  evutil_socket_t fd;           /* ours: a dup() of lib_fd, the number rd and wr watch */
  struct event *rd, *wr, *timer;
  gboolean watch_rd, watch_wr;  /* whether rd/wr are added now, so that a query that changes
                                   nothing (the common case) costs libevent nothing */
  int attempt;              /* failures in a row, for the backoff */
  EvdPgRole role;
  struct event *recheck;    /* prefer-standby on a primary: time to look for a standby again */
  gboolean recycle;         /* it fired: remade the next time it is READY */
  /* RESOLVING: the entries libpq gets, one per address. */
  GPtrArray *hosts, *addrs, *ports;
  guint resolve_next;
  EvdPgResolve *resolve;
  GString *resolve_errors;
  /* SETUP: the statement being prepared, and whether its describe was sent. */
  int setup_stmt;
  gboolean setup_describe;
  EvdPgConnStmt *stmts;
  /* BUSY: the query and the first result of the command in flight. */
  EvdPgQuery *query;
  PGresult *result;
  GString *scratch;         /* params as text, bytea decoded */
  char *fatal;              /* a FATAL the server sent while idle: why it is closing */
};

struct _EvdPgPool {
  EvdPgDb *db;
  struct event_base *base;
  struct evdns_base *dns;
  EvdPgConn **conns;
  int n_conns;
  GQueue queue;             /* EvdPgQuery *, oldest first (links are the queries' own) */
  char *last_error;         /* why the last attempt failed or connection broke */
  gboolean ever_tried;      /* an attempt has ended, for better or worse */
  int announced;            /* what notify said last: 1 up, -1 down, 0 nothing yet */
  /* evd_pg_db_check: one connection, statement `only_stmt`, no reconnect. */
  gboolean check;
  int only_stmt;
  gboolean check_done;
};

static void evd_pg_conn_start (EvdPgConn *c);
static void evd_pg_conn_lost (EvdPgConn *c, const char *why);
static void evd_pg_conn_dispatch (EvdPgConn *c);
static void evd_pg_setup_next (EvdPgConn *c);

/* ---- Small helpers. ---- */

/* libpq's messages end in a newline and may span lines ("...failed: Connection refused\n\tIs
 * the server running..."): one line is what a log and a BACKEND error want. */
static char *
evd_pg_one_line (const char *msg)
{
  GString *s = g_string_new (NULL);

  for (const char *p = msg ? msg : ""; *p; p++) {
    if (*p == '\n' || *p == '\t' || *p == '\r') {
      if (s->len > 0 && s->str[s->len - 1] != ' ')
        g_string_append_c (s, ' ');
    } else {
      g_string_append_c (s, *p);
    }
  }
  while (s->len > 0 && s->str[s->len - 1] == ' ')
    g_string_truncate (s, s->len - 1);
  if (s->len == 0)
    g_string_assign (s, "unknown error");
  return g_string_free (s, FALSE);
}

static int
evd_pg_state_class (EvdPgState st)
{
  switch (st) {
  case EVD_PG_RESOLVING: case EVD_PG_CONNECTING: case EVD_PG_SETUP: return 1;
  case EVD_PG_READY: case EVD_PG_BUSY: case EVD_PG_DRAINING: return 2;
  case EVD_PG_BACKOFF: return 3;
  default: return 0;
  }
}

#define EVD_PG_STATE_BITS 21

/* A connection in state class `cls`, as a term of db->states (0 for none). */
static gint64
evd_pg_state_unit (int cls)
{
  return cls == 2 ? 1 : cls == 1 ? (gint64) 1 << EVD_PG_STATE_BITS
       : cls == 3 ? (gint64) 1 << (2 * EVD_PG_STATE_BITS) : 0;
}

/* The one place a connection's state changes, so the database's gauges stay true. */
static void
evd_pg_conn_set_state (EvdPgConn *c, EvdPgState st)
{
  EvdPgDb *db = c->pool->db;
  gint64 delta = evd_pg_state_unit (evd_pg_state_class (st)) -
                 evd_pg_state_unit (evd_pg_state_class (c->state));

  if (c->pool->check) {
    c->state = st;
    return;
  }
  if (delta != 0)
    __atomic_add_fetch (&db->states, delta, __ATOMIC_RELAXED);
  if ((c->state == EVD_PG_BUSY) != (st == EVD_PG_BUSY))
    g_atomic_int_add (&db->in_flight, st == EVD_PG_BUSY ? 1 : -1);
  c->state = st;
}

static gboolean
evd_pg_pool_any_up (EvdPgPool *pool)
{
  for (int i = 0; i < pool->n_conns; i++)
    if (evd_pg_state_class (pool->conns[i]->state) == 2)
      return TRUE;
  return FALSE;
}

/* A database of several hosts tries a failed connection again at once, then after
 * EVD_PG_RETRY_QUICK_MS: this many attempts before the backoff. */
#define EVD_PG_QUICK_RETRIES 2

static int
evd_pg_quick_retries (EvdPgDb *db)
{
  return db->n_hosts > 1 ? EVD_PG_QUICK_RETRIES : 0;
}

/* Whether a query must fail now rather than wait: no connection is up, an attempt has failed
 * since the last one came up, and no connection is on its way up at once (its first attempt,
 * or one of the quick retries of a database of several hosts). */
static gboolean
evd_pg_pool_hopeless (EvdPgPool *pool)
{
  int quick = evd_pg_quick_retries (pool->db);

  if (!pool->ever_tried || pool->last_error == NULL)
    return FALSE;
  for (int i = 0; i < pool->n_conns; i++) {
    EvdPgConn *c = pool->conns[i];
    int cls = evd_pg_state_class (c->state);

    if (cls == 2 || (quick > 0 && (cls == 1 || cls == 3) && c->attempt <= quick))
      return FALSE;
  }
  return TRUE;
}

/* The one place a connection's role changes, so the gauges by role stay true. */
static void
evd_pg_conn_set_role (EvdPgConn *c, EvdPgRole role)
{
  EvdPgDb *db = c->pool->db;

  if (c->pool->check || c->role == role)
    return;
  if (c->role != EVD_PG_ROLE_UNKNOWN)
    g_atomic_int_add (c->role == EVD_PG_ROLE_STANDBY ? &db->standby : &db->primary, -1);
  if (role != EVD_PG_ROLE_UNKNOWN)
    g_atomic_int_add (role == EVD_PG_ROLE_STANDBY ? &db->standby : &db->primary, 1);
  c->role = role;
}

static void
evd_pg_query_finish (EvdPgQuery *q, EvdPgStatus status, EvdRows *rows, const char *message)
{
  g_assert (!q->finished);
  q->finished = TRUE;
  q->conn = NULL;
  if (status == EVD_PG_FAILED || status == EVD_PG_LOST)
    __atomic_add_fetch (&q->pool->db->failures, 1, __ATOMIC_RELAXED);
  q->done (q, status, rows, message);
}

static EvdPgQuery *
evd_pg_pool_pop (EvdPgPool *pool)
{
  GList *l = g_queue_pop_head_link (&pool->queue);
  EvdPgQuery *q;

  if (l == NULL)
    return NULL;
  q = l->data;
  q->queued = FALSE;
  g_atomic_int_add (&pool->db->queued, -1);
  return q;
}

/* No connection is up and the last attempt failed: nothing queued can be served soon. */
static void
evd_pg_pool_fail_queued (EvdPgPool *pool)
{
  EvdPgQuery *q;

  if (!evd_pg_pool_hopeless (pool))
    return;
  while ((q = evd_pg_pool_pop (pool)) != NULL) {
    g_autofree char *msg = g_strdup_printf ("database %s unavailable: %s", pool->db->name,
                                            pool->last_error);
    evd_pg_query_finish (q, EVD_PG_LOST, NULL, msg);
  }
}

/* ---- Socket events. ---- */

static void evd_pg_conn_on_io (evutil_socket_t fd, short what, void *arg);

static void
evd_pg_conn_unwatch (EvdPgConn *c)
{
  g_clear_pointer (&c->rd, event_free);
  g_clear_pointer (&c->wr, event_free);
  if (c->fd >= 0)
    evutil_closesocket (c->fd);
  c->fd = c->lib_fd = -1;
  c->watch_rd = c->watch_wr = FALSE;
}

/* Adds or deletes `ev` when `want` differs from `*on`, what it is now. */
static void
evd_pg_event_want (struct event *ev, gboolean *on, gboolean want)
{
  if (!want == !*on)
    return;
  if (want)
    event_add (ev, NULL);
  else
    event_del (ev);
  *on = want;
}

/* Watches libpq's current socket for reading and/or writing. FALSE: lost (it could not be
 * duplicated; the connection has been failed). */
static gboolean
evd_pg_conn_watch (EvdPgConn *c, gboolean rd, gboolean wr)
{
  evutil_socket_t fd = PQsocket (c->pg);

  if (fd != c->lib_fd) {
    evd_pg_conn_unwatch (c);
    if (fd < 0)
      return TRUE;
    c->fd = fcntl (fd, F_DUPFD_CLOEXEC, 0);
    if (c->fd < 0) {
      g_autofree char *why = g_strdup_printf ("cannot watch the socket: %s", g_strerror (errno));

      evd_pg_conn_lost (c, why);
      return FALSE;
    }
    c->lib_fd = fd;
    c->rd = event_new (c->pool->base, c->fd, EV_READ | EV_PERSIST, evd_pg_conn_on_io, c);
    c->wr = event_new (c->pool->base, c->fd, EV_WRITE | EV_PERSIST, evd_pg_conn_on_io, c);
  }
  /* Every query flushes and asks for the same (read, not write): event_add/event_del each
   * take the base's lock, so only a change reaches libevent. */
  evd_pg_event_want (c->rd, &c->watch_rd, rd);
  evd_pg_event_want (c->wr, &c->watch_wr, wr);
  return TRUE;
}

static void
evd_pg_timer_set (EvdPgConn *c, int ms)
{
  struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

  evtimer_add (c->timer, &tv);
}

/* ---- Closing and reconnecting. ---- */

static void
evd_pg_conn_close (EvdPgConn *c)
{
  evd_pg_conn_unwatch (c);
  evtimer_del (c->timer);
  evtimer_del (c->recheck);
  c->recycle = FALSE;
  evd_pg_conn_set_role (c, EVD_PG_ROLE_UNKNOWN);
  if (c->resolve != NULL) {
    EvdPgResolve *r = g_steal_pointer (&c->resolve);

    r->conn = NULL;                       /* the callback frees it */
    if (r->req != NULL)
      evdns_getaddrinfo_cancel (r->req);
  }
  g_clear_pointer (&c->result, PQclear);
  g_clear_pointer (&c->pg, PQfinish);    /* non-blocking: Terminate goes if the socket takes it */
  g_clear_pointer (&c->fatal, g_free);
  for (guint i = 0; c->stmts != NULL && i < c->pool->db->stmts->len; i++) {
    g_clear_pointer (&c->stmts[i].types, g_free);
    g_clear_pointer (&c->stmts[i].error, g_free);
  }
  g_clear_pointer (&c->stmts, g_free);
  g_clear_pointer (&c->hosts, g_ptr_array_unref);
  g_clear_pointer (&c->addrs, g_ptr_array_unref);
  g_clear_pointer (&c->ports, g_ptr_array_unref);
}

int
evd_pg_backoff_ms (int attempt)
{
  /* Doubling from twice the floor, then jitter of half to all of it, so that every loop's
   * connections do not come back at once: the first wait is 100-200 ms, none is under
   * EVD_PG_BACKOFF_MIN_MS or over EVD_PG_BACKOFF_MAX_MS (issue 15: "100 ms to 2 s"). */
  int ms = (2 * EVD_PG_BACKOFF_MIN_MS) << MIN (MAX (attempt, 0), 10);

  ms = MIN (ms, EVD_PG_BACKOFF_MAX_MS);
  return ms / 2 + g_random_int_range (0, ms / 2 + 1);
}

/* When the connection's `attempt`-th failure in a row is tried again. */
static int
evd_pg_retry_ms (EvdPgDb *db, int attempt)
{
  int quick = evd_pg_quick_retries (db);

  if (attempt < quick)
    return attempt == 0 ? 0 : EVD_PG_RETRY_QUICK_MS;
  return evd_pg_backoff_ms (attempt - quick);
}

/* The connection failed or broke: its query (if any) fails, it is closed, and a new attempt
 * is due after the backoff. */
static void
evd_pg_conn_lost (EvdPgConn *c, const char *why)
{
  EvdPgPool *pool = c->pool;
  EvdPgQuery *q = g_steal_pointer (&c->query);
  /* The server's FATAL first, as libpq writes it when one ends a command. */
  g_autofree char *full = c->fatal != NULL ? g_strconcat (c->fatal, why, NULL) : NULL;
  g_autofree char *line = evd_pg_one_line (full != NULL ? full : why);

  evd_pg_conn_close (c);
  g_free (pool->last_error);
  pool->last_error = g_strdup (line);
  pool->ever_tried = TRUE;
  if (pool->check) {
    evd_pg_conn_set_state (c, EVD_PG_CLOSED);
    pool->check_done = TRUE;
    event_base_loopbreak (pool->base);
    return;
  }
  evd_pg_conn_set_state (c, EVD_PG_BACKOFF);
  evd_pg_timer_set (c, evd_pg_retry_ms (pool->db, c->attempt++));
  if (!evd_pg_pool_any_up (pool) && pool->announced != -1) {
    pool->announced = -1;
    if (pool->db->opt.notify != NULL)
      pool->db->opt.notify (pool->db->opt.notify_data, FALSE, line);
  }
  if (q != NULL) {
    g_autofree char *msg = g_strdup_printf ("database %s: connection lost: %s", pool->db->name,
                                            line);
    evd_pg_query_finish (q, EVD_PG_LOST, NULL, msg);
  }
  evd_pg_pool_fail_queued (pool);
}

/* The connection is closed and made again at once, counted as a reconnect (not a failure:
 * no backoff). */
static void
evd_pg_conn_remake (EvdPgConn *c)
{
  evd_pg_conn_close (c);
  __atomic_add_fetch (&c->pool->db->reconnects, 1, __ATOMIC_RELAXED);
  evd_pg_conn_start (c);
}

static void
evd_pg_conn_on_timer (evutil_socket_t fd, short what, void *arg)
{
  EvdPgConn *c = arg;

  (void) fd, (void) what;
  switch (c->state) {
  case EVD_PG_BACKOFF:
    __atomic_add_fetch (&c->pool->db->reconnects, 1, __ATOMIC_RELAXED);
    evd_pg_conn_start (c);
    break;
  case EVD_PG_DRAINING:
    /* Closing is the cancel that cannot block; the server was not at fault, so the new
     * connection is made now, and what is queued waits for it. */
    evd_pg_conn_remake (c);
    break;
  default: {
    g_autofree char *msg = g_strdup_printf ("no connection within %d ms",
                                            c->pool->db->opt.connect_timeout_ms);
    evd_pg_conn_lost (c, msg);
  }
  }
}

/* A prefer-standby connection on a primary, idle: closed and started again, so that libpq
 * looks for a standby once more (and falls back to the primary again if none answers). It has
 * no query, so no call fails; what is submitted meanwhile waits for this or another. */
static void
evd_pg_conn_recycle (EvdPgConn *c)
{
  g_assert (c->state == EVD_PG_READY && c->query == NULL);
  evd_pg_conn_close (c);
  __atomic_add_fetch (&c->pool->db->recycles, 1, __ATOMIC_RELAXED);
  evd_pg_conn_start (c);
}

static void
evd_pg_conn_on_recheck (evutil_socket_t fd, short what, void *arg)
{
  EvdPgConn *c = arg;

  (void) fd, (void) what;
  c->recycle = TRUE;
  if (c->state == EVD_PG_READY)
    evd_pg_conn_recycle (c);
  /* else BUSY or DRAINING: evd_pg_conn_finish_query recycles it when the result is in. */
}

/* The connection is up: what its server is, from in_hot_standby (libpq keeps the latest
 * value the server reported). On a primary although standbys were preferred, no standby
 * answered when it connected: look again after standby_recheck_ms, jittered by a quarter
 * either way so that a pool's connections do not all go at once. */
static void
evd_pg_conn_learn_role (EvdPgConn *c)
{
  EvdPgDb *db = c->pool->db;
  const char *hot = PQparameterStatus (c->pg, "in_hot_standby");
  EvdPgRole role = hot == NULL ? EVD_PG_ROLE_UNKNOWN
                   : strcmp (hot, "on") == 0 ? EVD_PG_ROLE_STANDBY : EVD_PG_ROLE_PRIMARY;
  int ms = db->opt.standby_recheck_ms;

  evd_pg_conn_set_role (c, role);
  if (role == EVD_PG_ROLE_PRIMARY && db->prefer_standby && db->n_hosts > 1 && ms > 0 &&
      !c->pool->check) {
    struct timeval tv;

    ms = ms - ms / 4 + g_random_int_range (0, ms / 2 + 1);
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add (c->recheck, &tv);
  }
}

/* ---- Connecting. ---- */

/* What the server says outside a command reaches the notice receiver. A lookup's notices are
 * nobody's business, but a FATAL there is the server's reason for the close that follows
 * (pg_terminate_backend, a shutdown, idle_session_timeout): libpq gives it to no error
 * message, so it is kept for the connection's own (evd_pg_conn_lost). */
static void
evd_pg_on_notice (void *arg, const PGresult *r)
{
  EvdPgConn *c = arg;
  const char *severity = PQresultErrorField (r, PG_DIAG_SEVERITY_NONLOCALIZED);

  if (severity != NULL && (strcmp (severity, "FATAL") == 0 || strcmp (severity, "PANIC") == 0)) {
    g_free (c->fatal);
    c->fatal = g_strdup (PQresultErrorMessage (r));
  }
}

static void
evd_pg_conn_connect (EvdPgConn *c)
{
  EvdPgDb *db = c->pool->db;
  g_autoptr (GPtrArray) k = g_ptr_array_new ();
  g_autoptr (GPtrArray) v = g_ptr_array_new ();
  g_autofree char *hosts = NULL, *addrs = NULL, *ports = NULL, *options = NULL;
  g_autofree char *check = NULL;

  for (guint i = 0; i < db->keys->len; i++) {
    g_ptr_array_add (k, db->keys->pdata[i]);
    g_ptr_array_add (v, db->values->pdata[i]);
  }
  if (c->hosts != NULL && c->hosts->len > 0) {
    g_ptr_array_add (c->hosts, NULL);
    g_ptr_array_add (c->addrs, NULL);
    g_ptr_array_add (c->ports, NULL);
    hosts = g_strjoinv (",", (char **) c->hosts->pdata);
    addrs = g_strjoinv (",", (char **) c->addrs->pdata);
    ports = g_strjoinv (",", (char **) c->ports->pdata);
    g_ptr_array_add (k, "host"), g_ptr_array_add (v, hosts);
    g_ptr_array_add (k, "hostaddr"), g_ptr_array_add (v, addrs);
    g_ptr_array_add (k, "port"), g_ptr_array_add (v, ports);
  } else {
    if (db->hostaddr)
      g_ptr_array_add (k, "hostaddr"), g_ptr_array_add (v, db->hostaddr);
    if (db->host)
      g_ptr_array_add (k, "host"), g_ptr_array_add (v, db->host);
    if (db->port)
      g_ptr_array_add (k, "port"), g_ptr_array_add (v, db->port);
  }
  /* Later -c settings win, so ours follow the user's own options. Each pins the text of some
   * type (lc_monetary: money's, "$1,234.50" in C, "1.234,50 €" in de_DE). */
  check = db->opt.check_interval_ms > 0
          ? g_strdup_printf (" -c client_connection_check_interval=%d", db->opt.check_interval_ms)
          : g_strdup ("");
  options = g_strdup_printf ("%s%s-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres "
                             "-c extra_float_digits=1 -c bytea_output=hex -c lc_monetary=C "
                             "-c default_transaction_read_only=on "
                             "-c statement_timeout=%d%s",
                             db->options ? db->options : "",
                             db->options && *db->options ? " " : "",
                             db->opt.statement_timeout_ms, check);
  g_ptr_array_add (k, "options"), g_ptr_array_add (v, options);
  g_ptr_array_add (k, "client_encoding"), g_ptr_array_add (v, "UTF8");
  g_ptr_array_add (k, NULL), g_ptr_array_add (v, NULL);

  g_clear_pointer (&c->hosts, g_ptr_array_unref);
  g_clear_pointer (&c->addrs, g_ptr_array_unref);
  g_clear_pointer (&c->ports, g_ptr_array_unref);
  c->pg = PQconnectStartParams ((const char *const *) k->pdata, (const char *const *) v->pdata, 0);
  if (c->pg == NULL) {
    evd_pg_conn_lost (c, "out of memory");
    return;
  }
  if (PQstatus (c->pg) == CONNECTION_BAD) {
    evd_pg_conn_lost (c, PQerrorMessage (c->pg));
    return;
  }
  /* libpq prints notices on stderr by default; a lookup's notices are nobody's business. */
  PQsetNoticeReceiver (c->pg, evd_pg_on_notice, c);
  evd_pg_conn_set_state (c, EVD_PG_CONNECTING);
  /* libpq: after PQconnectStart, wait until the socket is writable, then poll. */
  evd_pg_conn_watch (c, FALSE, TRUE);
}

static void evd_pg_resolve_next (EvdPgConn *c);

static void
evd_pg_resolve_take (EvdPgConn *c, int result, struct evutil_addrinfo *res)
{
  EvdPgDb *db = c->pool->db;
  const char *host = db->host_list[c->resolve_next];

  if (result != 0) {
    g_string_append_printf (c->resolve_errors, "%scould not resolve host \"%s\": %s",
                            c->resolve_errors->len ? "; " : "", host,
                            evutil_gai_strerror (result));
    return;
  }
  /* Every address is an entry of its own, in the resolver's order: libpq tries them in
   * turn, as it would have after its own (blocking) getaddrinfo(). */
  for (struct evutil_addrinfo *a = res; a != NULL; a = a->ai_next) {
    char buf[128];
    const void *in = a->ai_family == AF_INET
                     ? (const void *) &((struct sockaddr_in *) a->ai_addr)->sin_addr
                     : (const void *) &((struct sockaddr_in6 *) a->ai_addr)->sin6_addr;

    if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
      continue;
    if (evutil_inet_ntop (a->ai_family, in, buf, sizeof buf) == NULL)
      continue;
    g_ptr_array_add (c->hosts, g_strdup (host));
    g_ptr_array_add (c->addrs, g_strdup (buf));
    g_ptr_array_add (c->ports, g_strdup (db->port_list[c->resolve_next]));
  }
  evutil_freeaddrinfo (res);
}

static void
evd_pg_resolve_on_done (int result, struct evutil_addrinfo *res, void *arg)
{
  EvdPgResolve *r = arg;
  EvdPgConn *c = r->conn;

  if (r->in_call) {                       /* answered inside evdns_getaddrinfo */
    r->answered = TRUE, r->result = result, r->res = res;
    return;
  }
  g_free (r);
  if (c == NULL) {                        /* the connection went first */
    if (res)
      evutil_freeaddrinfo (res);
    return;
  }
  c->resolve = NULL;
  evd_pg_resolve_take (c, result, res);
  c->resolve_next++;
  evd_pg_resolve_next (c);
}

/* Resolves db->host_list in order into c->hosts/addrs/ports; unix socket folders pass as
 * they are. Connects when every host is done. */
static void
evd_pg_resolve_next (EvdPgConn *c)
{
  EvdPgPool *pool = c->pool;
  EvdPgDb *db = pool->db;

  for (; db->host_list[c->resolve_next] != NULL; c->resolve_next++) {
    const char *host = db->host_list[c->resolve_next];
    struct evutil_addrinfo hints = { 0 };
    struct evdns_getaddrinfo_request *req;
    EvdPgResolve *r;

    if (*host == '\0' || *host == '/' || *host == '@') {
      g_ptr_array_add (c->hosts, g_strdup (host));
      g_ptr_array_add (c->addrs, g_strdup (""));
      g_ptr_array_add (c->ports, g_strdup (db->port_list[c->resolve_next]));
      continue;
    }
    if (pool->dns == NULL)
      pool->dns = evd_dns_new (pool->base);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    r = g_new0 (EvdPgResolve, 1);
    r->conn = c;
    r->in_call = TRUE;
    req = evdns_getaddrinfo (pool->dns, host, NULL, &hints, evd_pg_resolve_on_done, r);
    r->in_call = FALSE;
    if (r->answered) {
      int result = r->result;
      struct evutil_addrinfo *res = r->res;

      g_free (r);
      evd_pg_resolve_take (c, result, res);
      continue;
    }
    r->req = req;
    c->resolve = r;
    return;                               /* evd_pg_resolve_on_done goes on */
  }
  if (c->hosts->len == 0) {
    evd_pg_conn_lost (c, c->resolve_errors->len ? c->resolve_errors->str : "no host");
    return;
  }
  evd_pg_conn_connect (c);
}

/* A new attempt: resolve (when the conninfo names hosts without addresses), then connect. */
static void
evd_pg_conn_start (EvdPgConn *c)
{
  EvdPgDb *db = c->pool->db;

  evd_pg_conn_set_state (c, EVD_PG_RESOLVING);
  evd_pg_timer_set (c, db->opt.connect_timeout_ms);
  c->stmts = g_new0 (EvdPgConnStmt, db->stmts->len);
  if (db->host_list == NULL) {
    evd_pg_conn_connect (c);
    return;
  }
  c->hosts = g_ptr_array_new_with_free_func (g_free);
  c->addrs = g_ptr_array_new_with_free_func (g_free);
  c->ports = g_ptr_array_new_with_free_func (g_free);
  c->resolve_next = 0;
  g_string_truncate (c->resolve_errors, 0);
  evd_pg_resolve_next (c);
}

static void
evd_pg_conn_poll (EvdPgConn *c)
{
  PostgresPollingStatusType st = PQconnectPoll (c->pg);

  /* The events are remade at every step, not only when PQsocket() changes: moving to the
   * next host (or rejecting one for target_session_attrs) closes the socket and opens a new
   * one that usually gets the same number back, and events kept across the swap would
   * still watch (through their dup) the socket libpq has let go. */
  evd_pg_conn_unwatch (c);
  switch (st) {
  case PGRES_POLLING_READING:
    evd_pg_conn_watch (c, TRUE, FALSE);
    break;
  case PGRES_POLLING_WRITING:
    evd_pg_conn_watch (c, FALSE, TRUE);
    break;
  case PGRES_POLLING_OK:
    if (PQsetnonblocking (c->pg, 1) != 0) {
      evd_pg_conn_lost (c, PQerrorMessage (c->pg));
      return;
    }
    if (!evd_pg_conn_watch (c, TRUE, FALSE))
      return;
    evd_pg_conn_set_state (c, EVD_PG_SETUP);
    c->setup_stmt = c->pool->check ? c->pool->only_stmt : 0;
    c->setup_describe = FALSE;
    evd_pg_setup_next (c);
    break;
  default:
    evd_pg_conn_lost (c, PQerrorMessage (c->pg));
  }
}

/* ---- Commands: one at a time, results read until PQgetResult says NULL. ---- */

/* Sends what libpq holds; watches for writability while some is left. FALSE: lost. */
static gboolean
evd_pg_conn_flush (EvdPgConn *c)
{
  int r = PQflush (c->pg);

  if (r < 0) {
    evd_pg_conn_lost (c, PQerrorMessage (c->pg));
    return FALSE;
  }
  return evd_pg_conn_watch (c, TRUE, r == 1);
}

static void evd_pg_conn_command_done (EvdPgConn *c);

/* Reads what arrived and takes every result that is whole; the command is done at the NULL
 * result. The first result is kept (a statement has one); any later one is dropped. */
static void
evd_pg_conn_read (EvdPgConn *c)
{
  if (!PQconsumeInput (c->pg)) {
    evd_pg_conn_lost (c, PQerrorMessage (c->pg));
    return;
  }
  if (c->state == EVD_PG_READY) {
    /* Idle: a notice or a parameter status; a server that closed shows as EOF above. */
    PGresult *r;

    while (!PQisBusy (c->pg) && (r = PQgetResult (c->pg)) != NULL)
      PQclear (r);
    return;
  }
  while (!PQisBusy (c->pg)) {
    PGresult *r = PQgetResult (c->pg);

    if (r == NULL) {
      evd_pg_conn_command_done (c);
      return;
    }
    if (c->result == NULL)
      c->result = r;
    else
      PQclear (r);
  }
}

static void
evd_pg_conn_on_io (evutil_socket_t fd, short what, void *arg)
{
  EvdPgConn *c = arg;

  (void) fd;
  if (c->state == EVD_PG_CONNECTING) {
    evd_pg_conn_poll (c);
    return;
  }
  if ((what & EV_WRITE) && !evd_pg_conn_flush (c))
    return;
  if (what & EV_READ)
    evd_pg_conn_read (c);
}

/* ---- Setup: every statement prepared, then described. ---- */

static char *
evd_pg_result_message (const PGresult *r)
{
  const char *primary = PQresultErrorField (r, PG_DIAG_MESSAGE_PRIMARY);

  return evd_pg_one_line (primary ? primary : PQresultErrorMessage (r));
}

static void
evd_pg_setup_next (EvdPgConn *c)
{
  EvdPgPool *pool = c->pool;
  const char *name;
  int ok;

  if (c->setup_stmt >= (int) pool->db->stmts->len) {
    /* Ready to serve. */
    evtimer_del (c->timer);
    c->attempt = 0;
    pool->ever_tried = TRUE;
    evd_pg_conn_set_state (c, EVD_PG_READY);
    evd_pg_conn_learn_role (c);
    g_clear_pointer (&pool->last_error, g_free);
    if (pool->check) {
      pool->check_done = TRUE;
      event_base_loopbreak (pool->base);
      return;
    }
    if (pool->announced != 1) {
      pool->announced = 1;
      if (pool->db->opt.notify != NULL)
        pool->db->opt.notify (pool->db->opt.notify_data, TRUE, NULL);
    }
    evd_pg_conn_dispatch (c);
    return;
  }
  name = ((EvdPgStmt *) pool->db->stmts->pdata[c->setup_stmt])->name;
  if (!c->setup_describe)
    ok = PQsendPrepare (c->pg, name,
                        ((EvdPgStmt *) pool->db->stmts->pdata[c->setup_stmt])->sql, 0, NULL);
  else
    ok = PQsendDescribePrepared (c->pg, name);
  if (!ok) {
    evd_pg_conn_lost (c, PQerrorMessage (c->pg));
    return;
  }
  evd_pg_conn_flush (c);
}

/* A prepare or describe answered. A statement that does not prepare, returns no columns or
 * has a param PostgreSQL could not type is unusable on this connection (its calls fail with
 * the reason); the connection itself serves the others. */
static void
evd_pg_setup_took (EvdPgConn *c, PGresult *r)
{
  EvdPgConnStmt *st = &c->stmts[c->setup_stmt];
  guint n_names = ((EvdPgStmt *) c->pool->db->stmts->pdata[c->setup_stmt])->names->len;
  gboolean described = c->setup_describe;

  c->setup_describe = !c->setup_describe;
  if (PQresultStatus (r) != PGRES_COMMAND_OK) {
    st->error = evd_pg_result_message (r);
    c->setup_describe = FALSE;
  } else if (described) {
    st->n_types = PQnparams (r);
    st->types = g_new0 (Oid, MAX (st->n_types, 1));
    for (int i = 0; i < st->n_types; i++) {
      st->types[i] = PQparamtype (r, i);
      if (st->types[i] == EVD_PG_UNKNOWNOID && st->error == NULL)
        st->error = g_strdup_printf ("could not determine data type of parameter $%d "
                                     "(cast it in the SQL, e.g. :x::int8)", i + 1);
    }
    if (PQnfields (r) == 0 && st->error == NULL)
      st->error = g_strdup ("the statement returns no columns (lookups only read)");
    /* Each call sends one value per :name found, and a commented call types them with
     * these: a :name that PostgreSQL reads as comment or quoted text (the rewriter and
     * PostgreSQL's lexer disagreeing) would fail every call, so it is refused here. */
    if (st->n_types != (int) n_names && st->error == NULL)
      st->error = g_strdup_printf ("PostgreSQL reads %d params where evdal found %u :names "
                                   "(is one inside a comment or quoted text?)",
                                   st->n_types, n_names);
  }
  if (!c->setup_describe)   /* a check prepares one statement only */
    c->setup_stmt = c->pool->check ? (int) c->pool->db->stmts->len : c->setup_stmt + 1;
}

/* ---- Queries. ---- */

static void evd_pg_conn_finish_query (EvdPgConn *c, PGresult *r);

static void
evd_pg_conn_command_done (EvdPgConn *c)
{
  PGresult *r = g_steal_pointer (&c->result);

  switch (c->state) {
  case EVD_PG_SETUP:
    if (r != NULL)
      evd_pg_setup_took (c, r);
    PQclear (r);
    evd_pg_setup_next (c);
    break;
  case EVD_PG_BUSY:
  case EVD_PG_DRAINING:
    evd_pg_conn_finish_query (c, r);
    break;
  default:
    PQclear (r);
  }
}

/* An int in decimal, as PostgreSQL reads it: every lookup's key goes through here, and
 * printf's format parsing was a visible share of a query's own CPU. */
static void
evd_pg_append_int (GString *out, gint64 i)
{
  char buf[24], *p = buf + sizeof buf;
  guint64 u = i < 0 ? (guint64) 0 - (guint64) i : (guint64) i;

  do {
    *--p = (char) ('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (i < 0)
    *--p = '-';
  g_string_append_len (out, p, buf + sizeof buf - p);
}

/* The params in $n order, as libpq takes them: text for everything PostgreSQL parses from
 * text (ints, reals, text, numeric, dates...), binary for blobs (bytea's binary form is its
 * bytes). Values are written in c->scratch, each followed by a NUL. FALSE with a message
 * naming the param when a value cannot be sent. */
static gboolean
evd_pg_params_build (EvdPgConn *c, EvdPgQuery *q, EvdPgStmt *stmt, EvdPgConnStmt *st,
                     const char **values, int *lengths, int *formats, char **message)
{
  gsize *offs = g_newa (gsize, stmt->names->len + 1);

  g_string_truncate (c->scratch, 0);
  for (guint i = 0; i < stmt->names->len; i++) {
    const char *name = stmt->names->pdata[i];
    const EvdValue *v = evd_value_find_param (q->params, q->n_params, name);
    Oid type = (int) i < st->n_types ? st->types[i] : 0;

    offs[i] = G_MAXSIZE;
    lengths[i] = 0;
    formats[i] = 0;
    if (v == NULL || v->kind == EVD_VALUE_NULL)
      continue;
    offs[i] = c->scratch->len;
    switch (v->kind) {
    case EVD_VALUE_INT:
      if ((type == EVD_PG_INT2OID && (v->i < G_MININT16 || v->i > G_MAXINT16)) ||
          (type == EVD_PG_INT4OID && (v->i < G_MININT32 || v->i > G_MAXINT32))) {
        *message = g_strdup_printf ("param :%s: %" G_GINT64_FORMAT " is out of range for %s",
                                    name, v->i, type == EVD_PG_INT2OID ? "smallint" : "integer");
        return FALSE;
      }
      evd_pg_append_int (c->scratch, v->i);
      break;
    case EVD_VALUE_REAL: {
      char buf[G_ASCII_DTOSTR_BUF_SIZE];

      if (isnan (v->r))
        g_string_append (c->scratch, "NaN");
      else if (isinf (v->r))
        g_string_append (c->scratch, v->r > 0 ? "Infinity" : "-Infinity");
      else
        g_string_append (c->scratch, g_ascii_dtostr (buf, sizeof buf, v->r));
      break;
    }
    case EVD_VALUE_TEXT:
      if (memchr (v->data, '\0', v->len) != NULL) {
        *message = g_strdup_printf ("param :%s: PostgreSQL text cannot hold a NUL byte", name);
        return FALSE;
      }
      g_string_append_len (c->scratch, v->data, v->len);
      break;
    case EVD_VALUE_BLOB:
      /* Binary is bytea's own form, but any other type's receive function reads the bytes
       * its own way: eight bytes became a bigint, four a date, silently. A blob that is not
       * for a bytea does not fit, as 'abc' does not fit an integer. */
      if (type != EVD_PG_BYTEAOID) {
        *message = g_strdup_printf ("param :%s: a blob fits only a bytea param", name);
        return FALSE;
      }
      g_string_append_len (c->scratch, v->data, v->len);
      lengths[i] = (int) v->len;
      formats[i] = 1;
      break;
    default:
      *message = g_strdup_printf ("param :%s: malformed value", name);
      return FALSE;
    }
    g_string_append_c (c->scratch, '\0');
  }
  for (guint i = 0; i < stmt->names->len; i++)
    values[i] = offs[i] == G_MAXSIZE ? NULL : c->scratch->str + offs[i];
  return TRUE;
}

/* A query with a comment (a sampled trace context): its SQL and the comment sent unprepared,
 * so that pg_stat_activity shows them while it runs (a prepared statement shows its PREPARE
 * text, the same for every call). One round trip as for a prepared one (Parse, Bind, Describe,
 * Execute, Sync), but parsed and planned again: the price is paid by sampled calls only. The
 * params are typed with the types this connection's PREPARE learned, so they read exactly as
 * they do prepared. The newline ends a `--` comment the SQL may end with. */
static int
evd_pg_conn_send_commented (EvdPgConn *c, EvdPgQuery *q, EvdPgStmt *stmt, EvdPgConnStmt *st,
                            const char *const *values, const int *lengths, const int *formats)
{
  int n = (int) stmt->names->len;
  g_autofree char *sql = g_strconcat (stmt->sql, "\n", q->comment, NULL);

  g_assert (st->n_types == n);
  return PQsendQueryParams (c->pg, sql, n, st->types, values, lengths, formats, 0);
}

static void
evd_pg_conn_run (EvdPgConn *c, EvdPgQuery *q)
{
  EvdPgDb *db = c->pool->db;
  EvdPgStmt *stmt = db->stmts->pdata[q->stmt];
  EvdPgConnStmt *st = &c->stmts[q->stmt];
  guint n = stmt->names->len;
  const char **values = g_newa (const char *, n + 1);
  int *lengths = g_newa (int, n + 1), *formats = g_newa (int, n + 1);
  g_autofree char *message = NULL;
  int ok;

  if (st->error != NULL) {
    message = g_strdup_printf ("database %s: %s", db->name, st->error);
    evd_pg_query_finish (q, EVD_PG_FAILED, NULL, message);
    return;
  }
  if (!evd_pg_params_build (c, q, stmt, st, values, lengths, formats, &message)) {
    evd_pg_query_finish (q, EVD_PG_FAILED, NULL, message);
    return;
  }
  if (q->comment != NULL)
    ok = evd_pg_conn_send_commented (c, q, stmt, st, values, lengths, formats);
  else
    ok = PQsendQueryPrepared (c->pg, stmt->name, (int) n, values, lengths, formats, 0);
  if (!ok) {
    message = evd_pg_one_line (PQerrorMessage (c->pg));
    evd_pg_conn_lost (c, message);       /* first: the completion may submit again */
    evd_pg_query_finish (q, EVD_PG_LOST, NULL, message);
    return;
  }
  __atomic_add_fetch (&db->queries, 1, __ATOMIC_RELAXED);
  q->conn = c;
  c->query = q;
  evd_pg_conn_set_state (c, EVD_PG_BUSY);
  evd_pg_conn_flush (c);
}

/* A READY connection takes queued queries until one runs (others may fail before sending). */
static void
evd_pg_conn_dispatch (EvdPgConn *c)
{
  EvdPgQuery *q;

  while (c->state == EVD_PG_READY && (q = evd_pg_pool_pop (c->pool)) != NULL)
    evd_pg_conn_run (c, q);
}

static int
evd_pg_hex (char ch)
{
  return g_ascii_isdigit (ch) ? ch - '0' : g_ascii_tolower (ch) - 'a' + 10;
}

/* bytea's text output is "\x" and two hex digits per byte (bytea_output = hex, the default
 * since 9.0; the escape format is refused rather than misread). */
static gboolean
evd_pg_unhex (GString *out, const char *text, int len)
{
  g_string_truncate (out, 0);
  if (len < 2 || text[0] != '\\' || text[1] != 'x' || len % 2 != 0)
    return FALSE;
  for (int i = 2; i < len; i += 2) {
    if (!g_ascii_isxdigit (text[i]) || !g_ascii_isxdigit (text[i + 1]))
      return FALSE;
    g_string_append_c (out, (char) (evd_pg_hex (text[i]) << 4 | evd_pg_hex (text[i + 1])));
  }
  return TRUE;
}

/* Which parameter a server error is about: bind errors carry a context such as "unnamed
 * portal parameter $2 = '...'". -1 when it names none. */
static int
evd_pg_error_param (const PGresult *r)
{
  const char *ctx = PQresultErrorField (r, PG_DIAG_CONTEXT);
  const char *p = ctx ? strstr (ctx, "parameter $") : NULL;

  return p ? atoi (p + strlen ("parameter $")) - 1 : -1;
}

/* Types whose values are kept in their cells (ints, reals, bool), not in the rows' arena. */
static gboolean
evd_pg_type_inline (Oid type)
{
  switch (type) {
  case EVD_PG_INT2OID: case EVD_PG_INT4OID: case EVD_PG_INT8OID:
  case EVD_PG_OIDOID: case EVD_PG_XIDOID: case EVD_PG_CIDOID:
  case EVD_PG_FLOAT4OID: case EVD_PG_FLOAT8OID: case EVD_PG_BOOLOID:
    return TRUE;
  default:
    return FALSE;
  }
}

/* An integer as PostgreSQL writes one (an optional '-' and decimal digits, within int8, so no
 * overflow check is needed): strtoll's locale and base handling was the largest single cost
 * of converting a result. */
static gint64
evd_pg_parse_int (const char *v)
{
  gboolean neg = *v == '-';
  guint64 u = 0;

  for (v += neg; *v >= '0' && *v <= '9'; v++)
    u = u * 10 + (guint64) (*v - '0');
  return neg ? (gint64) (0 - u) : (gint64) u;
}

/* The rows of a result, by the type table of the README. NULL with a message when a value
 * cannot be read. */
static EvdRows *
evd_pg_rows_from (EvdPgConn *c, const PGresult *r, int max_rows, char **message)
{
  int nf = PQnfields (r), nt = PQntuples (r);
  const char **cols = g_newa (const char *, nf + 1);
  Oid *types = g_newa (Oid, nf + 1);
  gsize arena = 0;
  g_autoptr (EvdRows) rows = NULL;

  if (nt > max_rows) {
    *message = g_strdup_printf ("more than max_rows (%d) rows", max_rows);
    return NULL;
  }
  for (int f = 0; f < nf; f++) {
    cols[f] = PQfname (r, f);
    types[f] = PQftype (r, f);
    arena += strlen (cols[f]) + 1;
    if (evd_pg_type_inline (types[f]))
      continue;                           /* numbers live in their cells, not the arena */
    for (int t = 0; t < nt; t++)
      arena += (gsize) PQgetlength (r, t, f) + 1;
  }
  rows = evd_rows_new_sized ((guint) nf, cols, (guint) ((nt + 1) * nf), arena);
  for (int t = 0; t < nt; t++) {
    for (int f = 0; f < nf; f++) {
      const char *v;
      int len;

      if (PQgetisnull (r, t, f)) {
        evd_rows_add_null (rows);
        continue;
      }
      v = PQgetvalue (r, t, f);
      switch (types[f]) {
      case EVD_PG_INT2OID: case EVD_PG_INT4OID: case EVD_PG_INT8OID:
      case EVD_PG_OIDOID: case EVD_PG_XIDOID: case EVD_PG_CIDOID:
        evd_rows_add_int (rows, evd_pg_parse_int (v));
        break;
      case EVD_PG_FLOAT4OID: case EVD_PG_FLOAT8OID:
        evd_rows_add_real (rows, g_ascii_strtod (v, NULL));
        break;
      case EVD_PG_BOOLOID:
        evd_rows_add_int (rows, v[0] == 't');
        break;
      case EVD_PG_BYTEAOID:
        len = PQgetlength (r, t, f);
        if (!evd_pg_unhex (c->scratch, v, len)) {
          *message = g_strdup_printf ("column %s: bytea not in hex output", cols[f]);
          return NULL;
        }
        evd_rows_add_blob (rows, c->scratch->str, c->scratch->len);
        break;
      default:
        len = PQgetlength (r, t, f);
        /* client_encoding is UTF8, but a SQL_ASCII database sends its bytes unchecked. */
        if (!g_utf8_validate_len (v, (gsize) len, NULL)) {
          *message = g_strdup_printf ("column %s: text is not valid UTF-8", cols[f]);
          return NULL;
        }
        evd_rows_add_text (rows, v, len);
      }
    }
  }
  return g_steal_pointer (&rows);
}

/* PostgreSQL refuses to run a prepared statement whose result columns changed since it was
 * prepared (a column added to a table read with *, a column's type changed): "cached plan
 * must not change result type", at every call until the statement is prepared again. Told
 * by its SQLSTATE and the server's routine, which no lc_messages translates. */
static gboolean
evd_pg_result_stale_plan (const PGresult *r)
{
  const char *state = PQresultErrorField (r, PG_DIAG_SQLSTATE);
  const char *routine = PQresultErrorField (r, PG_DIAG_SOURCE_FUNCTION);

  return state != NULL && routine != NULL && strcmp (state, "0A000") == 0 &&
         strcmp (routine, "RevalidateCachedQuery") == 0;
}

static void
evd_pg_conn_finish_query (EvdPgConn *c, PGresult *r)
{
  EvdPgQuery *q = g_steal_pointer (&c->query);
  EvdPgDb *db = c->pool->db;
  g_autofree char *message = NULL;
  EvdRows *rows = NULL;
  gboolean stale = r != NULL && evd_pg_result_stale_plan (r);

  if (c->state == EVD_PG_DRAINING)     /* the drain bound; a BUSY connection has no timer */
    evtimer_del (c->timer);
  evd_pg_conn_set_state (c, EVD_PG_READY);
  if (q != NULL) {
    ExecStatusType status = r ? PQresultStatus (r) : PGRES_FATAL_ERROR;

    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      rows = evd_pg_rows_from (c, r, q->max_rows, &message);
    } else if (r != NULL) {
      g_autofree char *pgmsg = evd_pg_result_message (r);
      EvdPgStmt *stmt = db->stmts->pdata[q->stmt];
      int p = evd_pg_error_param (r);

      if (p >= 0 && p < (int) stmt->names->len)
        message = g_strdup_printf ("param :%s: %s", (char *) stmt->names->pdata[p], pgmsg);
      else
        message = g_strdup_printf ("database %s: %s", db->name, pgmsg);
    } else {
      message = g_strdup_printf ("database %s: no result", db->name);
    }
  }
  PQclear (r);
  if (stale) {
    /* The statements are prepared again by a new connection (the old one would fail this
     * way for good); the call may succeed if sent again, so it fails retryable. */
    evd_pg_conn_remake (c);              /* before `done`, which may submit again */
  } else if (c->recycle) {
    evd_pg_conn_recycle (c);             /* before `done`, which may submit again */
  }
  if (q != NULL) {
    if (rows != NULL)
      evd_pg_query_finish (q, EVD_PG_OK, rows, NULL);
    else
      evd_pg_query_finish (q, stale ? EVD_PG_LOST : EVD_PG_FAILED, NULL, message);
  }
  if (c->state == EVD_PG_READY)
    evd_pg_conn_dispatch (c);
}

/* ---- The pool. ---- */

static EvdPgConn *
evd_pg_conn_new (EvdPgPool *pool)
{
  EvdPgConn *c = g_new0 (EvdPgConn, 1);

  c->pool = pool;
  c->fd = c->lib_fd = -1;
  c->state = EVD_PG_CLOSED;
  c->timer = evtimer_new (pool->base, evd_pg_conn_on_timer, c);
  c->recheck = evtimer_new (pool->base, evd_pg_conn_on_recheck, c);
  c->scratch = g_string_sized_new (256);
  c->resolve_errors = g_string_new (NULL);
  return c;
}

static void
evd_pg_conn_free (EvdPgConn *c)
{
  EvdPgQuery *q = g_steal_pointer (&c->query);

  evd_pg_conn_close (c);
  evd_pg_conn_set_state (c, EVD_PG_CLOSED);
  event_free (c->timer);
  event_free (c->recheck);
  g_string_free (c->scratch, TRUE);
  g_string_free (c->resolve_errors, TRUE);
  g_free (c);
  if (q != NULL)
    evd_pg_query_finish (q, EVD_PG_CANCELLED, NULL, NULL);
}

static EvdPgPool *
evd_pg_pool_make (EvdPgDb *db, struct event_base *base, int n)
{
  EvdPgPool *pool = g_new0 (EvdPgPool, 1);

  pool->db = db;
  pool->base = base;
  pool->n_conns = n;
  pool->conns = g_new0 (EvdPgConn *, n);
  g_queue_init (&pool->queue);
  for (int i = 0; i < n; i++)
    pool->conns[i] = evd_pg_conn_new (pool);
  return pool;
}

EvdPgPool *
evd_pg_pool_new (EvdPgDb *db, struct event_base *base)
{
  EvdPgPool *pool = evd_pg_pool_make (db, base, db->opt.connections);

  for (int i = 0; i < pool->n_conns; i++)
    evd_pg_conn_start (pool->conns[i]);
  return pool;
}

void
evd_pg_pool_free (EvdPgPool *pool)
{
  EvdPgQuery *q;

  if (pool == NULL)
    return;
  while ((q = evd_pg_pool_pop (pool)) != NULL)
    evd_pg_query_finish (q, EVD_PG_CANCELLED, NULL, NULL);
  for (int i = 0; i < pool->n_conns; i++)
    evd_pg_conn_free (pool->conns[i]);
  g_free (pool->conns);
  evd_dns_free (pool->dns, TRUE);         /* pending lookups call back, cancelled */
  g_free (pool->last_error);
  g_free (pool);
}

void
evd_pg_pool_submit (EvdPgPool *pool, EvdPgQuery *q)
{
  g_assert (q->stmt >= 0 && q->stmt < (int) pool->db->stmts->len);
  q->pool = pool;
  q->conn = NULL;
  q->finished = FALSE;
  q->queued = FALSE;
  for (int i = 0; i < pool->n_conns; i++) {
    if (pool->conns[i]->state == EVD_PG_READY) {
      evd_pg_conn_run (pool->conns[i], q);
      return;
    }
  }
  if (evd_pg_pool_hopeless (pool)) {
    g_autofree char *msg = g_strdup_printf ("database %s unavailable: %s", pool->db->name,
                                            pool->last_error);
    evd_pg_query_finish (q, EVD_PG_LOST, NULL, msg);
    return;
  }
  q->link.data = q;
  q->link.next = q->link.prev = NULL;
  g_queue_push_tail_link (&pool->queue, &q->link);
  q->queued = TRUE;
  g_atomic_int_add (&pool->db->queued, 1);
}

void
evd_pg_query_cancel (EvdPgQuery *q)
{
  EvdPgConn *c = q->conn;

  if (q->finished)
    return;
  if (q->queued) {
    g_queue_unlink (&q->pool->queue, &q->link);
    q->queued = FALSE;
    g_atomic_int_add (&q->pool->db->queued, -1);
  } else if (c != NULL) {
    /* Its connection reads the result and drops it, out of the pool until then. */
    c->query = NULL;
    evd_pg_conn_set_state (c, EVD_PG_DRAINING);
    evd_pg_timer_set (c, EVD_PG_DRAIN_MS);
  }
  evd_pg_query_finish (q, EVD_PG_CANCELLED, NULL, NULL);
}

/* ---- sqlcommenter ---- */

static int
evd_pg_pair_cmp (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* Percent-encodes all but the URL's unreserved characters (RFC 3986). */
static void
evd_pg_url_encode (GString *out, const char *s)
{
  for (const guchar *p = (const guchar *) s; *p; p++) {
    if (g_ascii_isalnum (*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
      g_string_append_c (out, (char) *p);
    else
      g_string_append_printf (out, "%%%02X", *p);
  }
}

char *
evd_pg_sql_comment (const char *const *pairs)
{
  g_autoptr (GArray) kv = g_array_new (FALSE, FALSE, sizeof (const char *) * 2);
  GString *out;

  for (guint i = 0; pairs[i] != NULL; i += 2) {
    if (pairs[i + 1] != NULL)
      g_array_append_vals (kv, &pairs[i], 1);
  }
  if (kv->len == 0)
    return NULL;
  g_array_sort (kv, evd_pg_pair_cmp);
  out = g_string_new ("/*");
  for (guint i = 0; i < kv->len; i++) {
    const char *const *pair = &g_array_index (kv, const char *, 2 * i);

    if (i > 0)
      g_string_append_c (out, ',');
    evd_pg_url_encode (out, pair[0]);
    g_string_append (out, "='");
    evd_pg_url_encode (out, pair[1]);
    g_string_append_c (out, '\'');
  }
  g_string_append (out, "*/");
  return g_string_free (out, FALSE);
}

/* ---- The database. ---- */

/* Splits a comma list; NULL for NULL. */
static char **
evd_pg_split (const char *s)
{
  return s ? g_strsplit (s, ",", -1) : NULL;
}

/* How many items a comma list has (libpq's multi-host strings); 0 for NULL. */
static guint
evd_pg_count_items (const char *s)
{
  guint n = s ? 1 : 0;

  for (; s != NULL && *s; s++)
    n += *s == ',';
  return n;
}

/* The sslmode the probe below gives libpq: one it refuses, and only after it has filled in its
 * defaults (it checks sslmode once the host list is read, before it resolves or opens
 * anything). */
#define EVD_PG_PROBE_SSLMODE "evdal-probe"

/* Where libpq would connect: the host, hostaddr and port (and the options evdal's own -c
 * settings follow) of the conninfo, else of the service file the conninfo (`service=`) or
 * PGSERVICE names, else of the environment (PGHOST, PGHOSTADDR, PGPORT, PGOPTIONS), else
 * libpq's defaults. PQconninfoParse() gives the conninfo's own
 * settings only: a host name from anywhere else never reached evdns, and libpq resolved it
 * with a blocking getaddrinfo() inside PQconnectPoll(), on the loop. PQconndefaults() applies
 * the environment but not the conninfo's service, and the service files cannot be read as
 * libpq reads them (the system one's folder is compiled into libpq). So libpq itself is asked:
 * a connection is started with the conninfo's settings and an sslmode it refuses; it applies
 * its defaults, refuses the options before connecting, and PQconninfo() shows what it had
 * filled in. Any other refusal is the conninfo's own (a service that is not defined, more
 * ports than hosts), reported now rather than at every attempt. Runs on the thread that reads
 * the config, never a loop (the service file and ~/.pgpass are read). The connections then
 * give libpq these explicitly, so the environment and the service cannot add a name. */
static gboolean
evd_pg_db_probe (EvdPgDb *db, PQconninfoOption *opts, GError **error)
{
  g_autoptr (GPtrArray) k = g_ptr_array_new ();
  g_autoptr (GPtrArray) v = g_ptr_array_new ();
  PQconninfoOption *seen;
  PGconn *probe;
  gboolean filled = FALSE;

  for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (o->val != NULL)
      g_ptr_array_add (k, o->keyword), g_ptr_array_add (v, o->val);
  }
  g_ptr_array_add (k, "sslmode"), g_ptr_array_add (v, EVD_PG_PROBE_SSLMODE);
  g_ptr_array_add (k, NULL), g_ptr_array_add (v, NULL);
  probe = PQconnectStartParams ((const char *const *) k->pdata, (const char *const *) v->pdata,
                                0);
  if (probe == NULL) {
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "out of memory");
    return FALSE;
  }
  seen = PQconninfo (probe);
  for (PQconninfoOption *o = seen; o != NULL && o->keyword != NULL; o++) {
    char **to = strcmp (o->keyword, "host") == 0 ? &db->host
                : strcmp (o->keyword, "hostaddr") == 0 ? &db->hostaddr
                : strcmp (o->keyword, "port") == 0 ? &db->port
                : strcmp (o->keyword, "options") == 0 ? &db->options : NULL;

    if (to != NULL)
      *to = g_strdup (o->val);
    else if (strcmp (o->keyword, "sslmode") == 0)
      filled = g_strcmp0 (o->val, EVD_PG_PROBE_SSLMODE) == 0;
  }
  PQconninfoFree (seen);
  if (PQstatus (probe) != CONNECTION_BAD || !filled ||
      strstr (PQerrorMessage (probe), EVD_PG_PROBE_SSLMODE) == NULL) {
    g_autofree char *line = evd_pg_one_line (PQstatus (probe) == CONNECTION_BAD
                                             ? PQerrorMessage (probe)
                                             : "libpq accepted sslmode=" EVD_PG_PROBE_SSLMODE);

    PQfinish (probe);
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "%s", line);
    return FALSE;
  }
  PQfinish (probe);
  return TRUE;
}

EvdPgDb *
evd_pg_db_new (const char *name, const char *conninfo, const EvdPgOptions *options,
               GError **error)
{
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse (conninfo, &err);
  g_autoptr (EvdPgDb) db = NULL;
  g_auto (GStrv) ports = NULL;
  guint n_hosts, n_ports;

  if (opts == NULL) {
    g_autofree char *line = evd_pg_one_line (err ? err : "out of memory");

    PQfreemem (err);
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "%s", line);
    return NULL;
  }
  db = g_new0 (EvdPgDb, 1);
  db->name = g_strdup (name);
  db->opt = *options;
  db->keys = g_ptr_array_new_with_free_func (g_free);
  db->values = g_ptr_array_new_with_free_func (g_free);
  db->stmts = g_ptr_array_new ();
  for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (o->val == NULL)
      continue;
    if (strcmp (o->keyword, "target_session_attrs") == 0)
      db->prefer_standby = strcmp (o->val, "prefer-standby") == 0;   /* libpq gets it too */
    if (strcmp (o->keyword, "host") == 0 || strcmp (o->keyword, "hostaddr") == 0 ||
        strcmp (o->keyword, "port") == 0 || strcmp (o->keyword, "options") == 0)
      continue;                            /* libpq's view of them: evd_pg_db_probe */
    else if (strcmp (o->keyword, "client_encoding") == 0 ||
             strcmp (o->keyword, "connect_timeout") == 0)
      continue;                            /* ours: UTF8, and our own timer */
    else {
      g_ptr_array_add (db->keys, g_strdup (o->keyword));
      g_ptr_array_add (db->values, g_strdup (o->val));
    }
  }
  if (!evd_pg_db_probe (db, opts, error)) {
    PQconninfoFree (opts);
    return NULL;
  }
  PQconninfoFree (opts);
  db->n_hosts = MAX (evd_pg_count_items (db->host), evd_pg_count_items (db->hostaddr));
  if (!g_ptr_array_find_with_equal_func (db->keys, "fallback_application_name", g_str_equal,
                                         NULL)) {
    g_ptr_array_add (db->keys, g_strdup ("fallback_application_name"));
    g_ptr_array_add (db->values, g_strdup ("evdal"));
  }
  /* libpq's default, gssencmode=prefer, tries GSSAPI encryption first whenever a Kerberos
   * credential cache is at hand, and gss_init_sec_context() may then ask the KDC for a ticket
   * over the network, blocking, inside PQconnectPoll() on the loop. Only a conninfo that asks
   * for it gets it. */
  if (!g_ptr_array_find_with_equal_func (db->keys, "gssencmode", g_str_equal, NULL)) {
    g_ptr_array_add (db->keys, g_strdup ("gssencmode"));
    g_ptr_array_add (db->values, g_strdup ("disable"));
  }
  /* Host names are resolved by evdns unless the user gave the addresses. An empty host or
   * hostaddr is libpq's "not given" (host: the default socket folder), passed on as it is:
   * an empty host split to no host at all, and an attempt that could never connect. */
  if (db->host != NULL && *db->host != '\0' && (db->hostaddr == NULL || *db->hostaddr == '\0')) {
    db->host_list = evd_pg_split (db->host);
    ports = evd_pg_split (db->port);
    n_hosts = g_strv_length (db->host_list);
    n_ports = ports ? g_strv_length (ports) : 0;
    if (n_ports > 1 && n_ports != n_hosts) {
      g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG,
                   "could not match %u port numbers to %u hosts", n_ports, n_hosts);
      return NULL;
    }
    db->port_list = g_new0 (char *, n_hosts + 1);
    for (guint i = 0; i < n_hosts; i++)
      db->port_list[i] = g_strdup (n_ports == 0 ? "" : ports[n_ports == 1 ? 0 : i]);
  }
  return g_steal_pointer (&db);
}

static void
evd_pg_stmt_free (EvdPgStmt *s)
{
  g_free (s->sql);
  g_ptr_array_unref (s->names);
  g_free (s);
}

void
evd_pg_db_free (EvdPgDb *db)
{
  if (db == NULL)
    return;
  g_ptr_array_set_free_func (db->stmts, (GDestroyNotify) evd_pg_stmt_free);
  g_ptr_array_unref (db->stmts);
  g_ptr_array_unref (db->keys);
  g_ptr_array_unref (db->values);
  g_strfreev (db->host_list);
  g_strfreev (db->port_list);
  g_free (db->host);
  g_free (db->hostaddr);
  g_free (db->port);
  g_free (db->options);
  g_free (db->name);
  g_free (db);
}

const char *
evd_pg_db_name (EvdPgDb *db)
{
  return db->name;
}

int
evd_pg_db_add_statement (EvdPgDb *db, const char *sql, const char *const **names,
                         guint *n_names, GError **error)
{
  EvdPgStmt *s = g_new0 (EvdPgStmt, 1);

  s->names = g_ptr_array_new_with_free_func (g_free);
  s->sql = evd_pg_sql_rewrite (sql, s->names, error);
  if (s->sql == NULL) {
    evd_pg_stmt_free (s);
    return -1;
  }
  g_snprintf (s->name, sizeof s->name, "evd%u", db->stmts->len);
  g_ptr_array_add (db->stmts, s);
  *names = (const char *const *) s->names->pdata;
  *n_names = s->names->len;
  return (int) db->stmts->len - 1;
}

void
evd_pg_db_stats (EvdPgDb *db, EvdPgStats *s)
{
  gint64 states = __atomic_load_n (&db->states, __ATOMIC_RELAXED);
  gint64 mask = ((gint64) 1 << EVD_PG_STATE_BITS) - 1;

  s->up = (int) (states & mask);
  s->connecting = (int) ((states >> EVD_PG_STATE_BITS) & mask);
  s->broken = (int) ((states >> (2 * EVD_PG_STATE_BITS)) & mask);
  s->in_flight = g_atomic_int_get (&db->in_flight);
  s->queued = g_atomic_int_get (&db->queued);
  s->reconnects = (guint64) __atomic_load_n (&db->reconnects, __ATOMIC_RELAXED);
  s->queries = (guint64) __atomic_load_n (&db->queries, __ATOMIC_RELAXED);
  s->failures = (guint64) __atomic_load_n (&db->failures, __ATOMIC_RELAXED);
  s->standby = g_atomic_int_get (&db->standby);
  s->primary = g_atomic_int_get (&db->primary);
  s->recycles = (guint64) __atomic_load_n (&db->recycles, __ATOMIC_RELAXED);
}

gboolean
evd_pg_db_check (EvdPgDb *db, int stmt, int timeout_ms, GError **error)
{
  struct event_base *base = event_base_new ();
  EvdPgPool *pool = evd_pg_pool_make (db, base, 1);
  EvdPgConn *c = pool->conns[0];
  struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
  gboolean ok = FALSE;

  pool->check = TRUE;
  pool->only_stmt = stmt;
  evd_pg_conn_start (c);
  if (!pool->check_done) {
    event_base_loopexit (base, &tv);
    event_base_dispatch (base);
  }
  if (!pool->check_done)
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_TIMEOUT,
                 "database %s: no answer within %d ms", db->name, timeout_ms);
  else if (c->state != EVD_PG_READY)
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_UNAVAILABLE, "database %s unavailable: %s",
                 db->name, pool->last_error ? pool->last_error : "?");
  else if (c->stmts[stmt].error != NULL)
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_SERVER, "%s", c->stmts[stmt].error);
  else
    ok = TRUE;
  evd_pg_pool_free (pool);
  event_base_free (base);
  return ok;
}

/* ---- :name -> $n ---- */

static gboolean
evd_pg_ident_start (char ch)
{
  return g_ascii_isalpha (ch) || ch == '_';
}

/* Copies a quoted run ('...', "...", E'...' with backslashes) and returns where it ends. */
static const char *
evd_pg_skip_quoted (GString *out, const char *p, char quote, gboolean backslash)
{
  g_string_append_c (out, *p++);
  while (*p) {
    if (backslash && *p == '\\' && p[1]) {
      g_string_append_len (out, p, 2);
      p += 2;
      continue;
    }
    g_string_append_c (out, *p);
    if (*p++ == quote) {
      if (*p == quote) {                  /* doubled: part of the text */
        g_string_append_c (out, *p++);
        continue;
      }
      return p;
    }
  }
  return NULL;
}

char *
evd_pg_sql_rewrite (const char *sql, GPtrArray *names, GError **error)
{
  g_autoptr (GString) out = g_string_new (NULL);
  const char *p = sql;
  gboolean any = FALSE;

  while (*p) {
    if (*p == '\'' || *p == '"') {
      gboolean esc = *p == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                     (p - 1 == sql || !g_ascii_isalnum (p[-2]));
      const char *end = evd_pg_skip_quoted (out, p, *p, esc);

      if (end == NULL) {
        g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "unterminated quoted text");
        return NULL;
      }
      p = end;
    } else if (p[0] == '-' && p[1] == '-') {
      const char *nl = strchr (p, '\n');
      gsize n = nl ? (gsize) (nl - p) : strlen (p);

      g_string_append_len (out, p, n);
      p += n;
    } else if (p[0] == '/' && p[1] == '*') {
      /* Block comments nest in PostgreSQL (as in the SQL standard, unlike C): the comment
       * ends at the star-slash that matches its own slash-star. Ending it at the first one
       * made a :name after an inner comment a param PostgreSQL never sees. */
      const char *end = p + 2;
      int depth = 1;

      while (*end != '\0' && depth > 0) {
        if (end[0] == '/' && end[1] == '*')
          depth++, end += 2;
        else if (end[0] == '*' && end[1] == '/')
          depth--, end += 2;
        else
          end++;
      }
      if (depth > 0) {
        g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "unterminated comment");
        return NULL;
      }
      g_string_append_len (out, p, end - p);
      p = end;
    } else if (*p == '$' && (p == sql || !(g_ascii_isalnum (p[-1]) || p[-1] == '_'))
               && (p[1] == '$' || evd_pg_ident_start (p[1]))) {
      /* A dollar-quoted string: $tag$ ... $tag$. */
      const char *q = p + 1;
      g_autofree char *tag = NULL;
      const char *end;

      while (g_ascii_isalnum (*q) || *q == '_')
        q++;
      if (*q != '$') {
        g_string_append_c (out, *p++);
        continue;
      }
      tag = g_strndup (p, q + 1 - p);
      end = strstr (q + 1, tag);
      if (end == NULL) {
        g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "unterminated %s string", tag);
        return NULL;
      }
      end += strlen (tag);
      g_string_append_len (out, p, end - p);
      p = end;
    } else if (*p == '$' && g_ascii_isdigit (p[1])) {
      g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG,
                   "write params as :name, not $%c", p[1]);
      return NULL;
    } else if (p[0] == ':' && p[1] == ':') {
      g_string_append (out, "::");
      p += 2;
    } else if (*p == ':' && evd_pg_ident_start (p[1])) {
      const char *q = p + 1;
      g_autofree char *name = NULL;
      guint idx;

      while (g_ascii_isalnum (*q) || *q == '_')
        q++;
      name = g_strndup (p + 1, q - p - 1);
      if (!g_ptr_array_find_with_equal_func (names, name, g_str_equal, &idx)) {
        g_ptr_array_add (names, g_strdup (name));
        idx = names->len - 1;
      }
      g_string_append_printf (out, "$%u", idx + 1);
      p = q;
    } else {
      if (!g_ascii_isspace (*p) && *p != ';')
        any = TRUE;
      g_string_append_c (out, *p++);
    }
  }
  if (!any) {
    g_set_error (error, EVD_PG_ERROR, EVD_PG_ERROR_CONFIG, "no SQL statement");
    return NULL;
  }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

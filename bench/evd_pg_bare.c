/* evdal-pg-bare: the limit of this machine for the sample page's SQL on PostgreSQL, the peer of
 * evdal's pg7 benchmark. The same statements as the config's PostgreSQL lookups, through libpq
 * with nothing else: one thread per core, each driving its share of the connections
 * asynchronously (poll), statements prepared once per connection, every value of every row
 * read; no Thrift, no event library. With --pipeline, a page's statements go to one
 * connection in one libpq pipeline (one round trip per page); without, one statement at a time
 * per connection, as evdal does. evdal's overhead is its throughput and CPU against this.
 *
 *   evdal-pg-bare --config deploy/evdal-postgresql.conf [--conninfo CI] [--threads N]
 *                 [--connections N] [--duration S] [--pipeline]
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "evd_config.h"
#include "evd_pg.h"

typedef struct {
  PGconn *pg;
  int step;                 /* statement in flight (one at a time) */
  gint64 user;
  gint64 t0;
  gboolean synced;
} EvdPgBareConn;

typedef struct {
  const char *conninfo;
  GPtrArray *sql;           /* rewritten, $1 = user_id */
  int connections;
  gboolean pipeline;
  gint64 users;
  double duration;
  guint seed;
  guint64 pages, rows;
  GArray *lat_us;
} EvdPgBareThread;

static volatile gint64 evd_pg_bare_sink;

/* Reads every value the way evdal converts it, so that both pay for the same decoding. */
static void
evd_pg_bare_read (EvdPgBareThread *t, PGresult *r)
{
  gint64 sink = 0;

  if (PQresultStatus (r) != PGRES_TUPLES_OK)
    g_error ("query failed: %s", PQresultErrorMessage (r));
  for (int row = 0; row < PQntuples (r); row++) {
    for (int f = 0; f < PQnfields (r); f++) {
      const char *v = PQgetvalue (r, row, f);

      if (PQgetisnull (r, row, f))
        continue;
      switch (PQftype (r, f)) {
      case 20: case 21: case 23: sink += g_ascii_strtoll (v, NULL, 10); break;
      case 700: case 701: sink += (gint64) g_ascii_strtod (v, NULL); break;
      case 17: sink += PQgetlength (r, row, f); break;
      default: sink += g_utf8_validate_len (v, (gsize) PQgetlength (r, row, f), NULL);
      }
    }
    t->rows++;
  }
  evd_pg_bare_sink += sink;
}

static void
evd_pg_bare_send (EvdPgBareThread *t, EvdPgBareConn *c)
{
  char uid[32], name[16];
  const char *values[1] = { uid };

  g_snprintf (uid, sizeof uid, "%" G_GINT64_FORMAT, c->user);
  if (!t->pipeline) {
    g_snprintf (name, sizeof name, "s%d", c->step);
    if (!PQsendQueryPrepared (c->pg, name, 1, values, NULL, NULL, 0))
      g_error ("send: %s", PQerrorMessage (c->pg));
    return;
  }
  for (guint i = 0; i < t->sql->len; i++) {
    g_snprintf (name, sizeof name, "s%u", i);
    if (!PQsendQueryPrepared (c->pg, name, 1, values, NULL, NULL, 0))
      g_error ("send: %s", PQerrorMessage (c->pg));
  }
  if (!PQpipelineSync (c->pg))
    g_error ("sync: %s", PQerrorMessage (c->pg));
  c->synced = FALSE;
}

static void
evd_pg_bare_page (EvdPgBareThread *t, EvdPgBareConn *c, GRand *rand)
{
  c->user = g_rand_int_range (rand, 1, (gint32) t->users + 1);
  c->step = 0;
  c->t0 = g_get_monotonic_time ();
  evd_pg_bare_send (t, c);
}

static void
evd_pg_bare_done (EvdPgBareThread *t, EvdPgBareConn *c)
{
  gint64 dt = g_get_monotonic_time () - c->t0;

  g_array_append_val (t->lat_us, dt);
  t->pages++;
}

/* Takes what arrived on one connection; TRUE when a page finished. */
static gboolean
evd_pg_bare_read_conn (EvdPgBareThread *t, EvdPgBareConn *c)
{
  if (!PQconsumeInput (c->pg))
    g_error ("read: %s", PQerrorMessage (c->pg));
  while (!PQisBusy (c->pg)) {
    PGresult *r = PQgetResult (c->pg);

    if (t->pipeline) {
      if (r == NULL) {
        if (c->synced)
          return TRUE;
        continue;                          /* between two statements' results */
      }
      if (PQresultStatus (r) == PGRES_PIPELINE_SYNC) {
        c->synced = TRUE;
        PQclear (r);
        return TRUE;
      }
      evd_pg_bare_read (t, r);
      PQclear (r);
      continue;
    }
    if (r == NULL) {                       /* this statement is done */
      if (++c->step == (int) t->sql->len)
        return TRUE;
      evd_pg_bare_send (t, c);
      continue;
    }
    evd_pg_bare_read (t, r);
    PQclear (r);
  }
  return FALSE;
}

static gpointer
evd_pg_bare_thread (gpointer data)
{
  EvdPgBareThread *t = data;
  EvdPgBareConn *conns = g_new0 (EvdPgBareConn, t->connections);
  struct pollfd *fds = g_new0 (struct pollfd, t->connections);
  GRand *rand = g_rand_new_with_seed (t->seed);
  gint64 end;

  for (int i = 0; i < t->connections; i++) {
    EvdPgBareConn *c = &conns[i];

    c->pg = PQconnectdb (t->conninfo);
    if (PQstatus (c->pg) != CONNECTION_OK)
      g_error ("connect: %s", PQerrorMessage (c->pg));
    for (guint s = 0; s < t->sql->len; s++) {
      char name[16];
      PGresult *r;

      g_snprintf (name, sizeof name, "s%u", s);
      r = PQprepare (c->pg, name, t->sql->pdata[s], 0, NULL);
      if (PQresultStatus (r) != PGRES_COMMAND_OK)
        g_error ("prepare: %s", PQresultErrorMessage (r));
      PQclear (r);
    }
    PQsetnonblocking (c->pg, 1);
    if (t->pipeline && !PQenterPipelineMode (c->pg))
      g_error ("pipeline: %s", PQerrorMessage (c->pg));
    fds[i].fd = PQsocket (c->pg);
    fds[i].events = POLLIN;
  }
  end = g_get_monotonic_time () + (gint64) (t->duration * G_USEC_PER_SEC);
  for (int i = 0; i < t->connections; i++)
    evd_pg_bare_page (t, &conns[i], rand);
  while (g_get_monotonic_time () < end) {
    for (int i = 0; i < t->connections; i++)
      fds[i].events = POLLIN | (PQflush (conns[i].pg) == 1 ? POLLOUT : 0);
    if (poll (fds, (nfds_t) t->connections, 100) <= 0)
      continue;
    for (int i = 0; i < t->connections; i++) {
      if (fds[i].revents == 0)
        continue;
      if (evd_pg_bare_read_conn (t, &conns[i])) {
        evd_pg_bare_done (t, &conns[i]);
        evd_pg_bare_page (t, &conns[i], rand);
      }
    }
  }
  for (int i = 0; i < t->connections; i++)
    PQfinish (conns[i].pg);
  g_free (conns);
  g_free (fds);
  g_rand_free (rand);
  return NULL;
}

static int
evd_pg_bare_cmp (gconstpointer a, gconstpointer b)
{
  gint64 x = *(const gint64 *) a, y = *(const gint64 *) b;
  return (x > y) - (x < y);
}

/* The config's PostgreSQL lookups ($n for :name) and their database's conninfo. */
static GPtrArray *
evd_pg_bare_load (const char *path, char **conninfo)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdConfig) cfg = evd_config_load (path, &error);
  g_auto (GStrv) groups = NULL;
  GPtrArray *sql = g_ptr_array_new_with_free_func (g_free);

  if (cfg == NULL)
    g_error ("%s", error->message);
  groups = evd_config_groups_of_kind (cfg, "lookup");
  for (guint i = 0; groups[i] != NULL; i++) {
    g_autofree char *s = evd_config_string (cfg, groups[i], "sql", NULL);
    g_autofree char *db = evd_config_string (cfg, groups[i], "database", NULL);
    g_autofree char *group = db ? g_strdup_printf ("database %s", db) : NULL;
    g_autofree char *kind = group ? evd_config_string (cfg, group, "backend", "sqlite") : NULL;
    g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
    char *rewritten;

    if (s == NULL || kind == NULL || strcmp (kind, "postgresql") != 0)
      continue;
    if (*conninfo == NULL)
      *conninfo = evd_config_string (cfg, group, "conninfo", NULL);
    rewritten = evd_pg_sql_rewrite (s, names, &error);
    if (rewritten == NULL || names->len != 1)
      g_error ("%s: one :user_id param expected", groups[i]);
    g_ptr_array_add (sql, rewritten);
  }
  return sql;
}

int
main (int argc, char **argv)
{
  g_autofree char *config = NULL, *conninfo = NULL;
  int threads = (int) g_get_num_processors (), connections = 4;
  double duration = 10;
  gboolean pipeline = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config, "evdal config with the lookups", "FILE" },
    { "conninfo", 0, 0, G_OPTION_ARG_STRING, &conninfo, "Instead of the config's", "CI" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Threads (default: one per core)", "N" },
    { "connections", 'n', 0, G_OPTION_ARG_INT, &connections, "Connections per thread (4)", "N" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &duration, "Seconds (default 10)", "S" },
    { "pipeline", 'p', 0, G_OPTION_ARG_NONE, &pipeline, "A page per pipeline", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- the sample page's SQL on PostgreSQL");
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) sql = NULL;
  g_autoptr (GArray) all = g_array_new (FALSE, FALSE, sizeof (gint64));
  g_autofree EvdPgBareThread *t = NULL;
  g_autofree GThread **th = NULL;
  guint64 pages = 0, rows = 0;
  struct rusage ru;
  double cpu;
  PGconn *pg;
  PGresult *r;
  gint64 users;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || config == NULL) {
    g_printerr ("%s\n", error ? error->message : "--config is required");
    return 2;
  }
  {
    char *from_config = NULL;

    sql = evd_pg_bare_load (config, &from_config);
    if (conninfo == NULL)
      conninfo = from_config;
    else
      g_free (from_config);
  }
  if (sql->len == 0 || conninfo == NULL)
    g_error ("%s: no PostgreSQL lookups", config);
  pg = PQconnectdb (conninfo);
  r = PQexec (pg, "SELECT max(id) FROM users");
  if (PQresultStatus (r) != PGRES_TUPLES_OK)
    g_error ("%s", PQerrorMessage (pg));
  users = g_ascii_strtoll (PQgetvalue (r, 0, 0), NULL, 10);
  PQclear (r);
  PQfinish (pg);
  t = g_new0 (EvdPgBareThread, threads);
  th = g_new0 (GThread *, threads);
  for (int i = 0; i < threads; i++) {
    t[i] = (EvdPgBareThread) { conninfo, sql, connections, pipeline, users, duration,
                               (guint) i + 1, 0, 0, g_array_new (FALSE, FALSE, sizeof (gint64)) };
    th[i] = g_thread_new ("bare", evd_pg_bare_thread, &t[i]);
  }
  for (int i = 0; i < threads; i++) {
    g_thread_join (th[i]);
    pages += t[i].pages;
    rows += t[i].rows;
    g_array_append_vals (all, t[i].lat_us->data, t[i].lat_us->len);
    g_array_unref (t[i].lat_us);
  }
  getrusage (RUSAGE_SELF, &ru);
  cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  g_array_sort (all, evd_pg_bare_cmp);
#define PCT(p) (all->len ? g_array_index (all, gint64, MIN (all->len - 1, (guint) (all->len * (p)))) / 1000.0 : 0)
  printf ("%u statements per page, %d threads x %d connections%s, %.1f s: %" G_GUINT64_FORMAT
          " pages, %" G_GUINT64_FORMAT " rows\n", sql->len, threads, connections,
          pipeline ? " (pipelined)" : "", duration, pages, rows);
  printf ("RESULT {\"label\": \"pg-bare\", \"threads\": %d, \"connections\": %d, "
          "\"pipeline\": %s, \"requests\": %" G_GUINT64_FORMAT ", \"seconds\": %.2f, "
          "\"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"cpu_s\": %.3f}\n", threads,
          threads * connections, pipeline ? "true" : "false", pages, duration,
          pages / duration, PCT (0.5), PCT (0.99), cpu);
  return 0;
}

/* evdal-sqlite-bare: the physical limit of this machine for the sample page's SQL, as the
 * peer of evdal's sqlite7 benchmark. It runs the same statements as the config's SQLite
 * lookups, straight through the SQLite C API, one thread per core, each with its own
 * read-only connection and prepared statements, reading every value of every row; no
 * network, no Thrift, no event loop. evdal's overhead is its throughput against this.
 *
 *   evdal-sqlite-bare --config deploy/evdal.conf [--threads N] [--duration S] [--lookups a,b]
 *                     [--pages N]
 *
 * --pages N runs exactly N pages per thread instead of a duration: a fixed amount of work, for
 * counting instructions per page under callgrind (bench/callgrind_page.py).
 *
 * --handoff runs the same pages the way evdal's architecture must (issue 20's floor): the
 * statements go from --threads event loops (evd_loop) to evdal's own SQLite pool
 * (evd_sqlite, --workers threads) and their tables come back to the loop with evd_loop_post,
 * --inflight pages at a time in all, a new page started as each one completes. No network and
 * no Thrift: only the hand-off that keeping SQLite off the loops costs, so evdal's CPU per page
 * can never be below this mode's.
 *
 * Both modes print their own CPU per page (getrusage of the process over the pages run).
 */
#include <event2/thread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "evd_config.h"
#include "evd_loop.h"
#include "evd_sqlite.h"

typedef struct {
  char *db_path;
  GPtrArray *sql;          /* char *, one per lookup */
  gint64 users;
  double duration;
  guint64 max_pages;       /* 0: run for duration; else exactly this many pages */
  guint seed;
  /* results */
  guint64 pages;
  guint64 rows;
  GArray *lat_us;          /* gint64, one per page */
} EvdBareThread;

static gint64
evd_bare_count_users (const char *path)
{
  sqlite3 *db;
  sqlite3_stmt *st;
  gint64 n = 0;

  if (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
    g_error ("cannot open %s: %s", path, sqlite3_errmsg (db));
  if (sqlite3_prepare_v2 (db, "SELECT max(id) FROM users", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step (st) == SQLITE_ROW)
    n = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  sqlite3_close (db);
  return n;
}

/* Where the values read go, so that the compiler cannot skip reading them. */
static volatile gint64 evd_bare_sink;

/* Reads every column the way evdal's worker does, so that both pay for the same decoding. */
static guint64
evd_bare_read_rows (sqlite3_stmt *st)
{
  guint64 rows = 0;
  gint64 sink = 0;

  while (sqlite3_step (st) == SQLITE_ROW) {
    for (int i = 0; i < sqlite3_column_count (st); i++) {
      switch (sqlite3_column_type (st, i)) {
      case SQLITE_INTEGER: sink += sqlite3_column_int64 (st, i); break;
      case SQLITE_FLOAT: sink += (gint64) sqlite3_column_double (st, i); break;
      case SQLITE_TEXT: sink += g_utf8_validate ((const char *) sqlite3_column_text (st, i),
                                                 sqlite3_column_bytes (st, i), NULL); break;
      case SQLITE_BLOB: sink += sqlite3_column_bytes (st, i); break;
      default: break;
      }
    }
    rows++;
  }
  evd_bare_sink += sink;
  return rows;
}

static gpointer
evd_bare_thread (gpointer data)
{
  EvdBareThread *t = data;
  sqlite3 *db;
  g_autoptr (GPtrArray) stmts = g_ptr_array_new ();
  GRand *rand = g_rand_new_with_seed (t->seed);
  gint64 end = g_get_monotonic_time () + (gint64) (t->duration * G_USEC_PER_SEC);

  if (sqlite3_open_v2 (t->db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK)
    g_error ("cannot open %s", t->db_path);
  /* As evdal's pool does: threads opening a WAL database at once may find another one
   * rebuilding its shared index, which is a short wait, not an error. */
  sqlite3_busy_timeout (db, 1000);
  for (guint i = 0; i < t->sql->len; i++) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v3 (db, t->sql->pdata[i], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
        SQLITE_OK)
      g_error ("cannot prepare %s: %s", (char *) t->sql->pdata[i], sqlite3_errmsg (db));
    g_ptr_array_add (stmts, st);
  }
  while (t->max_pages ? t->pages < t->max_pages : g_get_monotonic_time () < end) {
    gint64 user = g_rand_int_range (rand, 1, (gint32) t->users + 1);
    gint64 t0 = g_get_monotonic_time (), dt;

    for (guint i = 0; i < stmts->len; i++) {
      sqlite3_stmt *st = stmts->pdata[i];
      sqlite3_bind_int64 (st, 1, user);
      t->rows += evd_bare_read_rows (st);
      sqlite3_reset (st);
    }
    dt = g_get_monotonic_time () - t0;
    g_array_append_val (t->lat_us, dt);
    t->pages++;
  }
  for (guint i = 0; i < stmts->len; i++)
    sqlite3_finalize (stmts->pdata[i]);
  sqlite3_close (db);
  g_rand_free (rand);
  return NULL;
}

/* ---- --handoff: the pages through evd_loop and evd_sqlite. ---- */

#define EVD_HANDOFF_MAX_STMTS 16

typedef struct _EvdHandoffLoop EvdHandoffLoop;

typedef struct {
  EvdHandoffLoop *l;
  EvdParam param;                   /* user_id, for every statement that names a param */
  EvdSqliteJob jobs[EVD_HANDOFF_MAX_STMTS];
  EvdRows *rows[EVD_HANDOFF_MAX_STMTS];
  guint left;
  gint64 t0;
} EvdHandoffPage;

struct _EvdHandoffLoop {
  EvdLoop *loop;
  EvdSqlitePool *pool;
  const int *stmts;
  const guint *n_params;
  guint n_stmts;
  gint64 users;
  gint64 end;
  guint64 max_pages;
  GRand *rand;
  EvdHandoffPage *pages_mem;
  guint inflight, running;
  /* results */
  guint64 pages;
  guint64 rows;
  GArray *lat_us;
};

static void evd_handoff_page_start (EvdHandoffPage *p);

/* On the loop: one statement's table is back. */
static void
evd_handoff_job_back (gpointer data)
{
  EvdSqliteJob *job = data;
  EvdHandoffPage *p = job->data;
  EvdHandoffLoop *l = p->l;
  guint i = (guint) (job - p->jobs);

  if (p->rows[i] != NULL) {
    l->rows += evd_rows_n_rows (p->rows[i]);
    evd_rows_unref (g_steal_pointer (&p->rows[i]));
  }
  if (--p->left > 0)
    return;
  gint64 dt = g_get_monotonic_time () - p->t0;
  g_array_append_val (l->lat_us, dt);
  l->pages++;
  if (l->max_pages ? l->pages + l->running <= l->max_pages : g_get_monotonic_time () < l->end) {
    evd_handoff_page_start (p);
    return;
  }
  if (--l->running == 0)
    evd_loop_quit (l->loop);
}

/* On a worker: hand the table to the page's loop, as evdal's SQLite backend does. */
static void
evd_handoff_job_done (EvdSqliteJob *job, EvdRows *rows, GError *error)
{
  EvdHandoffPage *p = job->data;

  if (error != NULL)
    g_error ("statement failed: %s", error->message);
  p->rows[job - p->jobs] = rows;
  evd_loop_post (p->l->loop, evd_handoff_job_back, job);
}

static void
evd_handoff_page_start (EvdHandoffPage *p)
{
  EvdHandoffLoop *l = p->l;

  p->param = (EvdParam) { "user_id", { .kind = EVD_VALUE_INT,
                                       .i = g_rand_int_range (l->rand, 1, (gint32) l->users + 1) } };
  p->left = l->n_stmts;
  p->t0 = g_get_monotonic_time ();
  for (guint i = 0; i < l->n_stmts; i++) {
    p->jobs[i] = (EvdSqliteJob) { .stmt = l->stmts[i], .params = &p->param,
                                  .n_params = l->n_params[i] > 0 ? 1 : 0, .max_rows = 1000,
                                  .deadline_us = G_MAXINT64, .done = evd_handoff_job_done,
                                  .data = p };
    evd_sqlite_pool_submit (l->pool, &p->jobs[i]);
  }
}

static void
evd_handoff_loop_begin (gpointer data)
{
  EvdHandoffLoop *l = data;

  for (guint i = 0; i < l->inflight; i++)
    evd_handoff_page_start (&l->pages_mem[i]);
}

/* Runs the pages; returns them and fills the latencies, as the bare threads do. */
static guint64
evd_handoff_run (const char *db_path, GPtrArray *sql, gint64 users, int loops, int workers,
                 int inflight, double duration, guint64 max_pages, guint64 *rows, GArray *all)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdSqlitePool) pool = evd_sqlite_pool_new (db_path, workers, 1000, &error);
  int stmts[EVD_HANDOFF_MAX_STMTS];
  guint n_params[EVD_HANDOFF_MAX_STMTS];
  g_autofree EvdHandoffLoop *l = g_new0 (EvdHandoffLoop, loops);
  guint64 pages = 0;

  if (pool == NULL)
    g_error ("%s", error->message);
  if (sql->len > EVD_HANDOFF_MAX_STMTS)
    g_error ("at most %d statements", EVD_HANDOFF_MAX_STMTS);
  for (guint i = 0; i < sql->len; i++) {
    g_autoptr (GPtrArray) params = NULL;

    stmts[i] = evd_sqlite_pool_prepare (pool, sql->pdata[i], &params, &error);
    if (stmts[i] < 0)
      g_error ("%s", error->message);
    if (params->len > 1 || (params->len == 1 && strcmp (params->pdata[0], "user_id") != 0))
      g_error ("--handoff binds :user_id only: %s", (char *) sql->pdata[i]);
    n_params[i] = params->len;
  }
  evthread_use_pthreads ();
  for (int i = 0; i < loops; i++) {
    l[i] = (EvdHandoffLoop) { .pool = pool, .stmts = stmts, .n_params = n_params,
                              .n_stmts = sql->len, .users = users, .max_pages = max_pages,
                              .rand = g_rand_new_with_seed ((guint32) i + 1),
                              .inflight = (guint) MAX (1, inflight / loops),
                              .lat_us = g_array_new (FALSE, FALSE, sizeof (gint64)) };
    if (max_pages > 0)  /* exactly max_pages per loop, the users the bare thread draws */
      l[i].inflight = (guint) MIN (l[i].inflight, max_pages);
    l[i].running = l[i].inflight;
    l[i].pages_mem = g_new0 (EvdHandoffPage, l[i].inflight);
    for (guint j = 0; j < l[i].inflight; j++)
      l[i].pages_mem[j].l = &l[i];
    l[i].loop = evd_loop_new ((guint) i, &error);
    if (l[i].loop == NULL)
      g_error ("%s", error->message);
  }
  for (int i = 0; i < loops; i++) {
    l[i].end = g_get_monotonic_time () + (gint64) (duration * G_USEC_PER_SEC);
    evd_loop_post (l[i].loop, evd_handoff_loop_begin, &l[i]);
    if (!evd_loop_start (l[i].loop, &error))
      g_error ("%s", error->message);
  }
  for (int i = 0; i < loops; i++) {
    evd_loop_free (l[i].loop);
    pages += l[i].pages;
    *rows += l[i].rows;
    g_array_append_vals (all, l[i].lat_us->data, l[i].lat_us->len);
    g_array_unref (l[i].lat_us);
    g_rand_free (l[i].rand);
    g_free (l[i].pages_mem);
  }
  return pages;
}

static double
evd_bare_cpu_us (void)
{
  struct rusage r;

  getrusage (RUSAGE_SELF, &r);
  return (double) (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 +
         (double) (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static int
evd_bare_cmp (gconstpointer a, gconstpointer b)
{
  gint64 x = *(const gint64 *) a, y = *(const gint64 *) b;
  return (x > y) - (x < y);
}

/* Every SQLite lookup of the config (or those named), on its [database]. */
static GPtrArray *
evd_bare_load (const char *path, const char *only, char **db_path, int *workers)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdConfig) cfg = evd_config_load (path, &error);
  g_auto (GStrv) groups = NULL;
  g_auto (GStrv) wanted = only ? g_strsplit (only, ",", -1) : NULL;
  GPtrArray *sql = g_ptr_array_new_with_free_func (g_free);

  if (cfg == NULL)
    g_error ("%s", error->message);
  groups = evd_config_groups_of_kind (cfg, "lookup");
  for (guint i = 0; groups[i] != NULL; i++) {
    g_autofree char *s = evd_config_string (cfg, groups[i], "sql", NULL);
    g_autofree char *db = evd_config_string (cfg, groups[i], "database", NULL);
    const char *name = groups[i] + strlen ("lookup ");

    if (s == NULL || db == NULL)
      continue;
    if (wanted != NULL && !g_strv_contains ((const char *const *) wanted, name))
      continue;
    if (*db_path == NULL) {
      g_autofree char *group = g_strdup_printf ("database %s", db);
      g_autofree char *rel = evd_config_string (cfg, group, "path", "sample.db");
      *db_path = evd_config_resolve_path (cfg, rel);
      if (*workers <= 0)
        *workers = (int) evd_config_int (cfg, group, "workers", 4, 1, 1024);
    }
    g_ptr_array_add (sql, g_steal_pointer (&s));
  }
  return sql;
}

int
main (int argc, char **argv)
{
  g_autofree char *config = NULL, *only = NULL, *db_path = NULL;
  int threads = (int) g_get_num_processors ();
  double duration = 10;
  gint64 max_pages = 0;
  gboolean handoff = FALSE;
  int workers = 0, inflight = 64;
  double cpu0, cpu_us;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config, "evdal config with the lookups", "FILE" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Threads (default: one per core)", "N" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &duration, "Seconds (default 10)", "S" },
    { "lookups", 'l', 0, G_OPTION_ARG_STRING, &only, "Only these lookups", "a,b" },
    { "pages", 'n', 0, G_OPTION_ARG_INT64, &max_pages, "Exactly N pages per thread", "N" },
    { "handoff", 0, 0, G_OPTION_ARG_NONE, &handoff,
      "Through evdal's loops (--threads of them) and SQLite pool", NULL },
    { "workers", 'w', 0, G_OPTION_ARG_INT, &workers, "--handoff: pool threads (default: the database's workers)", "N" },
    { "inflight", 'i', 0, G_OPTION_ARG_INT, &inflight,
      "--handoff: pages in flight in all (default 64)", "N" },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- the sample page's SQL, bare");
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) sql = NULL;
  g_autoptr (GArray) all = g_array_new (FALSE, FALSE, sizeof (gint64));
  g_autofree EvdBareThread *t = NULL;
  g_autofree GThread **th = NULL;
  guint64 pages = 0, rows = 0;
  gint64 users;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || config == NULL) {
    g_printerr ("%s\n", error ? error->message : "--config is required");
    return 2;
  }
  /* As evdal's SQLite pool does before its first connection. */
  sqlite3_config (SQLITE_CONFIG_MEMSTATUS, 0);
  sql = evd_bare_load (config, only, &db_path, &workers);
  users = evd_bare_count_users (db_path);
  cpu0 = evd_bare_cpu_us ();
  if (handoff) {
    pages = evd_handoff_run (db_path, sql, users, threads, workers, inflight, duration,
                             (guint64) MAX (max_pages, 0), &rows, all);
  } else {
    t = g_new0 (EvdBareThread, threads);
    th = g_new0 (GThread *, threads);
    for (int i = 0; i < threads; i++) {
      t[i] = (EvdBareThread) { db_path, sql, users, duration, (guint64) MAX (max_pages, 0),
                               (guint) i + 1, 0, 0,
                               g_array_new (FALSE, FALSE, sizeof (gint64)) };
      th[i] = g_thread_new ("bare", evd_bare_thread, &t[i]);
    }
    for (int i = 0; i < threads; i++) {
      g_thread_join (th[i]);
      pages += t[i].pages;
      rows += t[i].rows;
      g_array_append_vals (all, t[i].lat_us->data, t[i].lat_us->len);
      g_array_unref (t[i].lat_us);
    }
  }
  cpu_us = evd_bare_cpu_us () - cpu0;
  g_array_sort (all, evd_bare_cmp);
#define PCT(p) (all->len ? g_array_index (all, gint64, MIN (all->len - 1, (guint) (all->len * (p)))) / 1000.0 : 0)
  printf ("%u statements per page, %d threads, %.1f s: %" G_GUINT64_FORMAT " pages, %"
          G_GUINT64_FORMAT " rows\n", sql->len, threads, duration, pages, rows);
  printf ("RESULT {\"label\": \"%s\", \"threads\": %d, \"requests\": %" G_GUINT64_FORMAT
          ", \"seconds\": %.2f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
          "\"cpu_us_per_page\": %.1f}\n", handoff ? "sqlite-handoff" : "sqlite-bare", threads,
          pages, duration, pages / duration, PCT (0.5), PCT (0.99), pages ? cpu_us / pages : 0);
  return 0;
}

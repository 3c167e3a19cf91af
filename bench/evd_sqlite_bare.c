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
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "evd_config.h"

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

static int
evd_bare_cmp (gconstpointer a, gconstpointer b)
{
  gint64 x = *(const gint64 *) a, y = *(const gint64 *) b;
  return (x > y) - (x < y);
}

/* Every SQLite lookup of the config (or those named), on its [database]. */
static GPtrArray *
evd_bare_load (const char *path, const char *only, char **db_path)
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
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config, "evdal config with the lookups", "FILE" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Threads (default: one per core)", "N" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &duration, "Seconds (default 10)", "S" },
    { "lookups", 'l', 0, G_OPTION_ARG_STRING, &only, "Only these lookups", "a,b" },
    { "pages", 'n', 0, G_OPTION_ARG_INT64, &max_pages, "Exactly N pages per thread", "N" },
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
  sql = evd_bare_load (config, only, &db_path);
  users = evd_bare_count_users (db_path);
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
  g_array_sort (all, evd_bare_cmp);
#define PCT(p) (all->len ? g_array_index (all, gint64, MIN (all->len - 1, (guint) (all->len * (p)))) / 1000.0 : 0)
  printf ("%u statements per page, %d threads, %.1f s: %" G_GUINT64_FORMAT " pages, %"
          G_GUINT64_FORMAT " rows\n", sql->len, threads, duration, pages, rows);
  printf ("RESULT {\"label\": \"sqlite-bare\", \"threads\": %d, \"requests\": %" G_GUINT64_FORMAT
          ", \"seconds\": %.2f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f}\n", threads,
          pages, duration, pages / duration, PCT (0.5), PCT (0.99));
  return 0;
}

/* test_sample: the sample web-shop database (tools/mkdb/evd_sample.c): its shape, its
 * determinism, and that every lookup of the sample config reads it through an index. */
#include <glib/gstdio.h>
#include <unistd.h>
#include <sqlite3.h>
#include <string.h>

#include "evd_sample.h"

static char *dir;

static char *
make (const char *name, guint users, guint64 seed)
{
  char *path = g_build_filename (dir, name, NULL);
  EvdSampleOptions o = { users, seed };
  g_autoptr (GError) error = NULL;

  g_assert_true (evd_sample_generate (path, &o, &error));
  g_assert_no_error (error);
  return path;
}

static gint64
one (sqlite3 *db, const char *sql)
{
  sqlite3_stmt *st;
  gint64 v;

  g_assert_cmpint (sqlite3_prepare_v2 (db, sql, -1, &st, NULL), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_step (st), ==, SQLITE_ROW);
  v = sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  return v;
}

static sqlite3 *
open_ro (const char *path)
{
  sqlite3 *db;

  g_assert_cmpint (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
  return db;
}

/* A digest of every row of every table, in a fixed order. */
static char *
digest (const char *path)
{
  static const char *const tables[] = {
    "users", "accounts", "orders", "notifications", "roles", "permissions",
    "role_permissions", "user_roles", "products",
  };
  sqlite3 *db = open_ro (path);
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  char *out;

  for (guint t = 0; t < G_N_ELEMENTS (tables); t++) {
    g_autofree char *sql = g_strdup_printf ("SELECT * FROM %s ORDER BY 1, 2", tables[t]);
    sqlite3_stmt *st;
    g_assert_cmpint (sqlite3_prepare_v2 (db, sql, -1, &st, NULL), ==, SQLITE_OK);
    while (sqlite3_step (st) == SQLITE_ROW) {
      for (int i = 0; i < sqlite3_column_count (st); i++) {
        const void *b = sqlite3_column_blob (st, i);
        g_checksum_update (sum, b ? b : (const guchar *) "\x01NULL", b ? sqlite3_column_bytes (st, i) : 5);
        g_checksum_update (sum, (const guchar *) "\x00", 1);
      }
    }
    sqlite3_finalize (st);
  }
  out = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  sqlite3_close (db);
  return out;
}

static void
test_shape (void)
{
  g_autofree char *path = make ("shape.db", 2000, 1);
  g_autofree char *tmp = g_strdup_printf ("%s.tmp-%d", path, (int) getpid ());
  sqlite3 *db = open_ro (path);
  gint64 orders = one (db, "SELECT count(*) FROM orders");
  gint64 notes = one (db, "SELECT count(*) FROM notifications");

  g_assert_false (g_file_test (tmp, G_FILE_TEST_EXISTS));
  g_assert_cmpint (one (db, "SELECT count(*) FROM users"), ==, 2000);
  g_assert_cmpint (one (db, "SELECT count(*) FROM accounts"), ==, 2000);
  g_assert_cmpint (orders, >, 2000 * 8);   /* about 10 per user */
  g_assert_cmpint (orders, <, 2000 * 12);
  g_assert_cmpint (notes, >, 2000 * 10);   /* about 12 per user */
  g_assert_cmpint (one (db, "SELECT count(*) FROM notifications WHERE read = 0") * 4, >, notes);
  g_assert_cmpint (one (db, "SELECT count(*) FROM products"), ==, 10000);
  /* Referential integrity, and every user has the customer role. */
  g_assert_cmpint (one (db, "SELECT count(*) FROM orders WHERE user_id NOT IN (SELECT id FROM users)"), ==, 0);
  g_assert_cmpint (one (db, "SELECT count(DISTINCT user_id) FROM user_roles WHERE role_id = 1"), ==, 2000);
  g_assert_cmpint (one (db, "SELECT count(*) FROM users WHERE favorite_category NOT IN "
                            "(SELECT category FROM products)"), ==, 0);
  /* Every kind of value the lookups must carry: non-ASCII text, blobs, NULLs, reals. */
  g_assert_cmpint (one (db, "SELECT count(*) FROM users WHERE name <> CAST(name AS BLOB) "
                            "OR length(CAST(name AS BLOB)) > length(name)"), >, 0);
  g_assert_cmpint (one (db, "SELECT count(*) FROM accounts WHERE avatar IS NULL"), >, 0);
  g_assert_cmpint (one (db, "SELECT count(*) FROM accounts WHERE typeof(avatar) = 'blob'"), >, 0);
  g_assert_cmpint (one (db, "SELECT count(*) FROM orders WHERE typeof(discount) = 'real'"), >, 0);
  g_assert_cmpint (one (db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), ==, 1);
  sqlite3_close (db);
}

static void
test_deterministic (void)
{
  g_autofree char *a = make ("a.db", 500, 7);
  g_autofree char *b = make ("b.db", 500, 7);
  g_autofree char *c = make ("c.db", 500, 8);
  g_autofree char *da = digest (a), *db = digest (b), *dc = digest (c);

  g_assert_cmpstr (da, ==, db);
  g_assert_cmpstr (da, !=, dc);
}

/* The SQL of every lookup in deploy/evdal.conf reads through an index (the small permissions
 * table aside) and finds rows for an existing user. */
static void
test_lookups_use_indexes (void)
{
  g_autofree char *path = make ("idx.db", 3000, 1);
  g_autofree char *conf = g_build_filename (EVDAL_SOURCE_DIR, "deploy", "evdal.conf", NULL);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_auto (GStrv) groups = NULL;
  sqlite3 *db = open_ro (path);
  guint checked = 0;

  g_assert_true (g_key_file_load_from_file (kf, conf, G_KEY_FILE_NONE, NULL));
  groups = g_key_file_get_groups (kf, NULL);
  for (guint i = 0; groups[i] != NULL; i++) {
    g_autofree char *sql = g_key_file_get_value (kf, groups[i], "sql", NULL);
    g_autofree char *plan_sql = NULL;
    sqlite3_stmt *st;
    gboolean rows = FALSE;

    if (sql == NULL)
      continue;
    plan_sql = g_strconcat ("EXPLAIN QUERY PLAN ", sql, NULL);
    g_assert_cmpint (sqlite3_prepare_v2 (db, plan_sql, -1, &st, NULL), ==, SQLITE_OK);
    sqlite3_bind_int64 (st, 1, 42);
    while (sqlite3_step (st) == SQLITE_ROW) {
      const char *detail = (const char *) sqlite3_column_text (st, 3);
      if (g_str_has_prefix (detail, "SCAN") && strstr (detail, "permissions") == NULL &&
          strstr (detail, " p ") == NULL)
        g_error ("%s scans: %s", groups[i], detail);
    }
    sqlite3_finalize (st);
    g_assert_cmpint (sqlite3_prepare_v2 (db, sql, -1, &st, NULL), ==, SQLITE_OK);
    sqlite3_bind_int64 (st, 1, 42);
    rows = sqlite3_step (st) == SQLITE_ROW;
    sqlite3_finalize (st);
    g_assert_true (rows || strstr (sql, "notifications") || strstr (sql, "orders"));
    checked++;
  }
  g_assert_cmpuint (checked, ==, 6);
  sqlite3_close (db);
}

static void
test_bad_path (void)
{
  EvdSampleOptions o = { 10, 1 };
  g_autoptr (GError) error = NULL;

  g_assert_false (evd_sample_generate ("/nonexistent/dir/x.db", &o, &error));
  g_assert_nonnull (error);
  g_assert_nonnull (strstr (error->message, "/nonexistent/dir/x.db"));
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  dir = g_dir_make_tmp ("evdal-sample-XXXXXX", NULL);
  g_test_add_func ("/sample/shape", test_shape);
  g_test_add_func ("/sample/deterministic", test_deterministic);
  g_test_add_func ("/sample/lookups-use-indexes", test_lookups_use_indexes);
  g_test_add_func ("/sample/bad-path", test_bad_path);
  rc = g_test_run ();
  {
    g_autofree char *rm = g_strdup_printf ("rm -rf %s", dir);
    g_spawn_command_line_sync (rm, NULL, NULL, NULL, NULL);
  }
  g_free (dir);
  return rc;
}

/* evd_sample_pg: the sample web-shop database loaded into PostgreSQL (evdal-mkdb
 * --postgresql), row for row the SQLite one: the SQLite file is made by the same generator,
 * then each table is copied with COPY. Same tables, columns and indexes, so the seven-lookup
 * page's SQL runs unchanged on both; text columns use the "C" collation, so ORDER BY on text
 * sorts bytewise as SQLite does. A role with SELECT grants only (evdal_ro by default) is what
 * evdal logs in as (deploy/evdal-postgresql.conf).
 *
 * A command-line tool: blocking libpq is right here (nothing else waits on this thread).
 */
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "evd_sample.h"

extern const char evd_sample_indexes_sql[];

static G_DEFINE_QUARK (evd-sample-pg-error-quark, evd_sample_pg_error)

/* Tables first, bare: keys and indexes are built after COPY, in one pass each, rather than
 * updated and checked row by row (several times faster for the full sample). */
static const char evd_sample_pg_schema[] =
  "DROP TABLE IF EXISTS user_roles, role_permissions, permissions, roles, notifications, "
  "  orders, accounts, products, users CASCADE;\n"
  "CREATE TABLE users (id bigint NOT NULL, name text COLLATE \"C\" NOT NULL,"
  "  email text COLLATE \"C\" NOT NULL, country text COLLATE \"C\" NOT NULL,"
  "  favorite_category text COLLATE \"C\" NOT NULL, created_at bigint NOT NULL);\n"
  "CREATE TABLE accounts (user_id bigint NOT NULL, plan text COLLATE \"C\" NOT NULL,"
  "  balance_cents bigint NOT NULL, currency text COLLATE \"C\" NOT NULL,"
  "  status text COLLATE \"C\" NOT NULL, avatar bytea, referral_code text COLLATE \"C\");\n"
  "CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL,"
  "  created_at bigint NOT NULL, total_cents bigint NOT NULL,"
  "  status text COLLATE \"C\" NOT NULL, discount double precision);\n"
  "CREATE TABLE notifications (id bigint NOT NULL, user_id bigint NOT NULL,"
  "  created_at bigint NOT NULL, kind text COLLATE \"C\" NOT NULL,"
  "  body text COLLATE \"C\" NOT NULL, read bigint NOT NULL);\n"
  "CREATE TABLE roles (id bigint NOT NULL, name text COLLATE \"C\" NOT NULL);\n"
  "CREATE TABLE permissions (id bigint NOT NULL, name text COLLATE \"C\" NOT NULL);\n"
  "CREATE TABLE role_permissions (role_id bigint NOT NULL, permission_id bigint NOT NULL);\n"
  "CREATE TABLE user_roles (user_id bigint NOT NULL, role_id bigint NOT NULL);\n"
  "CREATE TABLE products (id bigint NOT NULL, name text COLLATE \"C\" NOT NULL,"
  "  category text COLLATE \"C\" NOT NULL, price_cents bigint NOT NULL,"
  "  popularity bigint NOT NULL);\n";

/* The same keys as storage/schema.sql, once the rows are in. */
static const char evd_sample_pg_keys[] =
  "ALTER TABLE users ADD PRIMARY KEY (id), ADD UNIQUE (email);\n"
  "ALTER TABLE accounts ADD PRIMARY KEY (user_id), ADD FOREIGN KEY (user_id) REFERENCES users;\n"
  "ALTER TABLE orders ADD PRIMARY KEY (id), ADD FOREIGN KEY (user_id) REFERENCES users;\n"
  "ALTER TABLE notifications ADD PRIMARY KEY (id), ADD FOREIGN KEY (user_id) REFERENCES users;\n"
  "ALTER TABLE roles ADD PRIMARY KEY (id), ADD UNIQUE (name);\n"
  "ALTER TABLE permissions ADD PRIMARY KEY (id), ADD UNIQUE (name);\n"
  "ALTER TABLE role_permissions ADD PRIMARY KEY (role_id, permission_id),"
  "  ADD FOREIGN KEY (role_id) REFERENCES roles, ADD FOREIGN KEY (permission_id) REFERENCES permissions;\n"
  "ALTER TABLE user_roles ADD PRIMARY KEY (user_id, role_id),"
  "  ADD FOREIGN KEY (user_id) REFERENCES users, ADD FOREIGN KEY (role_id) REFERENCES roles;\n"
  "ALTER TABLE products ADD PRIMARY KEY (id);\n";

/* In the order foreign keys need. */
static const char *const evd_sample_pg_tables[] = {
  "users", "accounts", "orders", "notifications", "roles", "permissions", "role_permissions",
  "user_roles", "products", NULL,
};

static gboolean
evd_sample_pg_exec (PGconn *pg, const char *sql, GError **error)
{
  PGresult *r = PQexec (pg, sql);
  gboolean ok = PQresultStatus (r) == PGRES_COMMAND_OK || PQresultStatus (r) == PGRES_TUPLES_OK;

  if (!ok)
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s", PQresultErrorMessage (r));
  PQclear (r);
  return ok;
}

/* One value in COPY's text format. */
static void
evd_sample_pg_value (GString *line, sqlite3_stmt *st, int col)
{
  switch (sqlite3_column_type (st, col)) {
  case SQLITE_NULL:
    g_string_append (line, "\\N");
    break;
  case SQLITE_INTEGER:
    g_string_append_printf (line, "%lld", (long long) sqlite3_column_int64 (st, col));
    break;
  case SQLITE_FLOAT: {
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    g_string_append (line, g_ascii_dtostr (buf, sizeof buf, sqlite3_column_double (st, col)));
    break;
  }
  case SQLITE_BLOB: {
    const guint8 *b = sqlite3_column_blob (st, col);
    int n = sqlite3_column_bytes (st, col);

    g_string_append (line, "\\\\x");       /* bytea hex input, its backslash escaped */
    for (int i = 0; i < n; i++)
      g_string_append_printf (line, "%02x", b[i]);
    break;
  }
  default: {
    const char *t = (const char *) sqlite3_column_text (st, col);

    for (; *t; t++) {
      switch (*t) {
      case '\\': g_string_append (line, "\\\\"); break;
      case '\t': g_string_append (line, "\\t"); break;
      case '\n': g_string_append (line, "\\n"); break;
      case '\r': g_string_append (line, "\\r"); break;
      default: g_string_append_c (line, *t);
      }
    }
  }
  }
}

static gboolean
evd_sample_pg_copy (PGconn *pg, sqlite3 *db, const char *table, GError **error)
{
  g_autofree char *select = g_strdup_printf ("SELECT * FROM %s", table);
  g_autofree char *copy = g_strdup_printf ("COPY %s FROM STDIN", table);
  g_autoptr (GString) buf = g_string_sized_new (1 << 17);
  sqlite3_stmt *st = NULL;
  PGresult *r;
  gboolean ok = TRUE;
  int rc;

  if (sqlite3_prepare_v2 (db, select, -1, &st, NULL) != SQLITE_OK) {
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s", sqlite3_errmsg (db));
    return FALSE;
  }
  r = PQexec (pg, copy);
  if (PQresultStatus (r) != PGRES_COPY_IN) {
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s", PQresultErrorMessage (r));
    PQclear (r);
    sqlite3_finalize (st);
    return FALSE;
  }
  PQclear (r);
  while (ok && (rc = sqlite3_step (st)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count (st); c++) {
      if (c > 0)
        g_string_append_c (buf, '\t');
      evd_sample_pg_value (buf, st, c);
    }
    g_string_append_c (buf, '\n');
    if (buf->len >= (1 << 16)) {
      ok = PQputCopyData (pg, buf->str, (int) buf->len) == 1;
      g_string_truncate (buf, 0);
    }
  }
  sqlite3_finalize (st);
  if (ok && buf->len > 0)
    ok = PQputCopyData (pg, buf->str, (int) buf->len) == 1;
  if (PQputCopyEnd (pg, ok ? NULL : "evdal-mkdb: copy failed") != 1)
    ok = FALSE;
  while ((r = PQgetResult (pg)) != NULL) {
    if (PQresultStatus (r) != PGRES_COMMAND_OK && ok) {
      g_set_error (error, evd_sample_pg_error_quark (), 1, "COPY %s: %s", table,
                   PQresultErrorMessage (r));
      ok = FALSE;
    }
    PQclear (r);
  }
  if (!ok && error != NULL && *error == NULL)
    g_set_error (error, evd_sample_pg_error_quark (), 1, "COPY %s: %s", table,
                 PQerrorMessage (pg));
  return ok;
}

/* The role evdal logs in as, made when missing, with SELECT on the tables and nothing else.
 * Looked up with a parameter, not in a DO $$ ... $$ block: a name may hold "$$". */
static gboolean
evd_sample_pg_role (PGconn *pg, const char *role, GError **error)
{
  const char *const params[] = { role };
  PGresult *r = PQexecParams (pg, "SELECT 1 FROM pg_roles WHERE rolname = $1", 1, NULL, params,
                              NULL, NULL, 0);
  gboolean exists = PQresultStatus (r) == PGRES_TUPLES_OK && PQntuples (r) > 0;
  char *id;
  g_autofree char *sql = NULL;

  if (PQresultStatus (r) != PGRES_TUPLES_OK) {
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s", PQresultErrorMessage (r));
    PQclear (r);
    return FALSE;
  }
  PQclear (r);
  id = PQescapeIdentifier (pg, role, strlen (role));
  if (id == NULL) {
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s", PQerrorMessage (pg));
    return FALSE;
  }
  sql = g_strdup_printf ("%s%s%s"
                         "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %s; "
                         "GRANT USAGE ON SCHEMA public TO %s; "
                         "GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s;",
                         exists ? "" : "CREATE ROLE ", exists ? "" : id,
                         exists ? "" : " LOGIN; ", id, id, id);
  PQfreemem (id);
  return evd_sample_pg_exec (pg, sql, error);
}

gboolean
evd_sample_load_postgresql (const char *sqlite_path, const char *conninfo, const char *role,
                            GError **error)
{
  PGconn *pg = PQconnectdb (conninfo);
  sqlite3 *db = NULL;
  gboolean ok = FALSE;

  if (PQstatus (pg) != CONNECTION_OK) {
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s", PQerrorMessage (pg));
    PQfinish (pg);
    return FALSE;
  }
  if (sqlite3_open_v2 (sqlite_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
    g_set_error (error, evd_sample_pg_error_quark (), 1, "%s: %s", sqlite_path,
                 sqlite3_errmsg (db));
    goto out;
  }
  /* The SQLite file's text is UTF-8: say so, whatever PGCLIENTENCODING asks libpq for (a
   * LATIN1 client encoding stored "Chloé" as "ChloÃ©"), as evd_pg does for evdal. The tables
   * go to schema public, where the role's grants are, not to a schema named after the user
   * (the default search_path is "$user", public). */
  if (!evd_sample_pg_exec (pg, "SET client_encoding = 'UTF8'; SET search_path = public; "
                               "SET client_min_messages = warning; BEGIN", error) ||
      !evd_sample_pg_exec (pg, evd_sample_pg_schema, error))
    goto out;
  for (guint i = 0; evd_sample_pg_tables[i] != NULL; i++)
    if (!evd_sample_pg_copy (pg, db, evd_sample_pg_tables[i], error))
      goto out;
  if (!evd_sample_pg_exec (pg, evd_sample_pg_keys, error) ||
      !evd_sample_pg_exec (pg, evd_sample_indexes_sql, error) ||
      !evd_sample_pg_exec (pg, "COMMIT", error) ||
      !evd_sample_pg_exec (pg, "ANALYZE", error))
    goto out;
  if (role != NULL && *role != '\0' && !evd_sample_pg_role (pg, role, error))
    goto out;
  ok = TRUE;
out:
  sqlite3_close (db);
  PQfinish (pg);
  return ok;
}

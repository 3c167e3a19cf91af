/* evdal-mkdb: builds the sample web-shop database that deploy/evdal.conf serves, and with
 * --postgresql loads the same rows into PostgreSQL (deploy/evdal-postgresql.conf). */
#include <glib/gstdio.h>
#include <stdio.h>
#include <unistd.h>

#include "evd_sample.h"

int
main (int argc, char **argv)
{
  gint users = 100000;
  gint64 seed = 1;
  g_autofree char *postgresql = NULL;
  g_autofree char *role = NULL;  /* evdal_ro, set after parsing: GOption frees no default */
  GOptionEntry entries[] = {
    { "users", 'u', 0, G_OPTION_ARG_INT, &users, "Users (default 100000)", "N" },
    { "seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed (default 1)", "S" },
    { "postgresql", 0, 0, G_OPTION_ARG_STRING, &postgresql,
      "Also load the rows into this PostgreSQL database (libpq string or URI); OUT.db may "
      "then be left out", "CONNINFO" },
    { "role", 0, 0, G_OPTION_ARG_STRING, &role,
      "With --postgresql: the role evdal logs in as, SELECT only (default evdal_ro; \"\": "
      "none)", "NAME" },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("[OUT.db] - make the sample database");
  g_autoptr (GError) error = NULL;
  g_autofree char *tmpdir = NULL, *path = NULL;
  EvdSampleOptions o;
  gint64 t0 = g_get_monotonic_time ();

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || argc > 2 ||
      (argc != 2 && postgresql == NULL) || users < 1) {
    g_printerr ("evdal-mkdb: %s\n", error ? error->message
                : "usage: evdal-mkdb [--users N] [--postgresql CONNINFO] OUT.db");
    return 2;
  }
  if (role == NULL)
    role = g_strdup ("evdal_ro");
  if (argc == 2) {
    path = g_strdup (argv[1]);
  } else {
    tmpdir = g_dir_make_tmp ("evdal-mkdb-XXXXXX", &error);
    if (tmpdir == NULL) {
      g_printerr ("evdal-mkdb: %s\n", error->message);
      return 1;
    }
    path = g_build_filename (tmpdir, "sample.db", NULL);
  }
  o = (EvdSampleOptions) { (guint) users, (guint64) seed };
  if (!evd_sample_generate (path, &o, &error) ||
      (postgresql != NULL && !evd_sample_load_postgresql (path, postgresql, role, &error))) {
    g_printerr ("evdal-mkdb: %s\n", error->message);
    if (tmpdir) {
      g_autofree char *wal = g_strconcat (path, "-wal", NULL), *shm = g_strconcat (path, "-shm", NULL);
      unlink (path), unlink (wal), unlink (shm), g_rmdir (tmpdir);
    }
    return 1;
  }
  if (tmpdir) {
    g_autofree char *wal = g_strconcat (path, "-wal", NULL), *shm = g_strconcat (path, "-shm", NULL);
    unlink (path), unlink (wal), unlink (shm), g_rmdir (tmpdir);
  }
  printf ("evdal-mkdb: %s%s%s: %d users in %.1f s\n", argc == 2 ? path : "",
          argc == 2 && postgresql ? " and " : "", postgresql ? "PostgreSQL" : "", users,
          (g_get_monotonic_time () - t0) / 1e6);
  return 0;
}

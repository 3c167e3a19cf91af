/* evdal-mkdb: builds the sample web-shop database that deploy/evdal.conf serves. */
#include <stdio.h>

#include "evd_sample.h"

int
main (int argc, char **argv)
{
  gint users = 100000;
  gint64 seed = 1;
  GOptionEntry entries[] = {
    { "users", 'u', 0, G_OPTION_ARG_INT, &users, "Users (default 100000)", "N" },
    { "seed", 's', 0, G_OPTION_ARG_INT64, &seed, "Seed (default 1)", "S" },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("OUT.db - make the sample database");
  g_autoptr (GError) error = NULL;
  EvdSampleOptions o;
  gint64 t0 = g_get_monotonic_time ();

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || argc != 2 || users < 1) {
    g_printerr ("evdal-mkdb: %s\n", error ? error->message : "usage: evdal-mkdb [--users N] OUT.db");
    return 2;
  }
  o = (EvdSampleOptions) { (guint) users, (guint64) seed };
  if (!evd_sample_generate (argv[1], &o, &error)) {
    g_printerr ("evdal-mkdb: %s\n", error->message);
    return 1;
  }
  printf ("evdal-mkdb: %s: %d users in %.1f s\n", argv[1], users,
          (g_get_monotonic_time () - t0) / 1e6);
  return 0;
}

/* test_backend_example: the example backend of docs/ARCHITECTURE.md (examples/c-backend/whoami.c)
 * compiles against evd_backend.h, fills the vtable slots it means to, reads its config with
 * file, line and key, and is the very code the document shows. */
#include <string.h>

#include "whoami.c"

static EvdConfig *
load (const char *text)
{
  return evd_config_load_data (text, strlen (text), "t.conf", "/etc/evdal");
}

/* Opens [lookup me] of `text` with the example's open(); its spec's params go in *n_params. */
static Whoami *
open_me (EvdConfig *cfg, guint *n_params)
{
  EvdLookupSpec spec = { "me", "lookup me", "whoami:me", g_array_new (FALSE, TRUE,
                                                                     sizeof (EvdParamSpec)) };
  Whoami *w;

  /* What evd_lookup does before open(): finds the group and reads the keys of every lookup. */
  g_strfreev (evd_config_groups_of_kind (cfg, "lookup"));
  evd_config_mark_used (cfg, "lookup me", "backend");
  w = whoami_class.open (NULL, cfg, &spec);
  *n_params = spec.params->len;
  for (guint i = 0; i < spec.params->len; i++)
    g_free (g_array_index (spec.params, EvdParamSpec, i).name);
  g_array_unref (spec.params);
  return w;
}

static void
test_vtable (void)
{
  /* Designated initializers: each hook lands in its own slot, the optional ones stay NULL. */
  g_assert_cmpstr (whoami_class.kind, ==, "whoami");
  g_assert_true (whoami_class.open == whoami_open);
  g_assert_true (whoami_class.start == whoami_start);
  g_assert_true (whoami_class.cancel == whoami_cancel);
  g_assert_true (whoami_class.close == g_free);
  g_assert_null (whoami_class.setup);
  g_assert_null (whoami_class.teardown);
  g_assert_null (whoami_class.release);
  g_assert_null (whoami_class.collect);
}

static void
test_open (void)
{
  g_autoptr (EvdConfig) cfg = load ("[lookup me]\nbackend = whoami\npause_ms = 1500\n");
  g_autoptr (GError) error = NULL;
  guint n_params = 99;
  Whoami *w = open_me (cfg, &n_params);

  g_assert_nonnull (w);
  g_assert_cmpint (w->pause_ms, ==, 1500);
  g_assert_cmpuint (n_params, ==, 0);
  evd_config_check (cfg, &error);
  g_assert_no_error (error);
  whoami_class.close (w);
}

static void
test_bad_pause_names_file_line_and_key (void)
{
  g_autoptr (EvdConfig) cfg = load ("[lookup me]\nbackend = whoami\npause_ms = 20000\n");
  g_autoptr (GError) error = NULL;
  guint n_params;

  whoami_class.close (open_me (cfg, &n_params));
  g_assert_false (evd_config_check (cfg, &error));
  g_assert_nonnull (error);
  g_assert_nonnull (strstr (error->message, "t.conf:3: [lookup me] pause_ms: "));
}

static void
test_document_shows_this_code (void)
{
  g_autofree char *doc = NULL, *code = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (g_file_get_contents (EVDAL_SOURCE_DIR "/docs/ARCHITECTURE.md", &doc, NULL,
                                      &error));
  g_assert_true (g_file_get_contents (EVDAL_SOURCE_DIR "/examples/c-backend/whoami.c", &code,
                                      NULL, &error));
  g_assert_no_error (error);
  if (strstr (doc, code) == NULL)
    g_test_fail_printf ("docs/ARCHITECTURE.md does not show examples/c-backend/whoami.c as "
                        "it is: copy the file into its code block");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/backend_example/vtable", test_vtable);
  g_test_add_func ("/backend_example/open", test_open);
  g_test_add_func ("/backend_example/bad_pause", test_bad_pause_names_file_line_and_key);
  g_test_add_func ("/backend_example/document", test_document_shows_this_code);
  return g_test_run ();
}

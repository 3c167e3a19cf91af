/* evd_modules: loading backend modules at start-up (see evd_modules.h). */
#include "evd_modules.h"

#include <gmodule.h>

#include "evd_backend.h"

/* The resolved paths loaded at start-up, NULL before; a reload compares with it. */
static GStrv evd_modules_loaded;

/* `[server] modules`, split at commas, each resolved against the config's folder. */
static GStrv
evd_modules_paths (EvdConfig *cfg)
{
  g_autofree char *value = evd_config_string (cfg, "server", "modules", "");
  g_auto (GStrv) items = g_strsplit (value, ",", -1);
  g_autoptr (GStrvBuilder) paths = g_strv_builder_new ();

  for (guint i = 0; items[i] != NULL; i++) {
    const char *item = g_strstrip (items[i]);
    if (*item != '\0') {
      g_autofree char *path = evd_config_resolve_path (cfg, item);
      g_strv_builder_add (paths, path);
    }
  }
  return g_strv_builder_end (paths);
}

/* Loads one module; FALSE after reporting why not. */
static gboolean
evd_modules_load_one (EvdConfig *cfg, const char *path)
{
  GModule *module = g_module_open (path, G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
  gpointer version = NULL, init = NULL;
  g_autoptr (GError) error = NULL;

  if (module == NULL) {
    evd_config_problem (cfg, "server", "modules", "%s: %s", path, g_module_error ());
    return FALSE;
  }
  if (!g_module_symbol (module, "evdal_backend_module_api_version", &version) ||
      !g_module_symbol (module, "evdal_backend_module_init", &init)) {
    evd_config_problem (cfg, "server", "modules", "%s: not an evdal backend module (%s)", path,
                        g_module_error ());
    g_module_close (module);
    return FALSE;
  }
  if (*(const guint *) version != EVDAL_BACKEND_API_VERSION) {
    evd_config_problem (cfg, "server", "modules", "%s: built against backend API version %u, "
                        "this evdal has version %u", path, *(const guint *) version,
                        (guint) EVDAL_BACKEND_API_VERSION);
    g_module_close (module);
    return FALSE;
  }
  /* From here its classes may be registered: it stays, whatever init says. */
  g_module_make_resident (module);
  if (!((EvdBackendModuleInit) init) (&error)) {
    evd_config_problem (cfg, "server", "modules", "%s: %s", path,
                        error ? error->message : "its init failed and did not say why");
    return FALSE;
  }
  return TRUE;
}

static guint
evd_modules_n_kinds (void)
{
  const EvdBackendClass *const *all = evd_backend_all ();
  guint n = 0;

  while (all[n] != NULL)
    n++;
  return n;
}

/* "whoami, other": the kinds registered from index `from` on. */
static char *
evd_modules_kinds_from (guint from)
{
  const EvdBackendClass *const *all = evd_backend_all ();
  GString *s = g_string_new (NULL);

  for (guint i = from; all[i] != NULL; i++)
    g_string_append_printf (s, "%s%s", i > from ? ", " : "", all[i]->kind);
  return g_string_free (s, FALSE);
}

void
evd_modules_load (EvdConfig *cfg)
{
  g_auto (GStrv) paths = evd_modules_paths (cfg);

  if (evd_modules_loaded != NULL) {
    if (!g_strv_equal ((const char *const *) paths, (const char *const *) evd_modules_loaded))
      g_warning ("reload: [server] modules changed; modules load at start-up only, so the "
                 "change takes effect at the next restart");
    return;
  }
  for (guint i = 0; paths[i] != NULL; i++) {
    guint before = evd_modules_n_kinds ();

    if (evd_modules_load_one (cfg, paths[i])) {
      g_autofree char *kinds = evd_modules_kinds_from (before);
      g_message ("backend module %s: %s", paths[i], *kinds ? kinds : "registered no kind");
    }
  }
  evd_modules_loaded = g_steal_pointer (&paths);
}

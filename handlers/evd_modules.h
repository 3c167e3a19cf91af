/* evd_modules: backend modules, the shared objects `[server] modules = a.so, b.so` names,
 * loaded with GModule at start-up.
 *
 * Each path (relative ones from the config file's folder) is opened, its
 * evdal_backend_module_api_version compared with this evdal's EVDAL_BACKEND_API_VERSION, and
 * its evdal_backend_module_init() run, which registers its backend kinds (evd_backend.h).
 * A module that cannot be opened, is not a module, was built against another interface
 * version or whose init fails is a config problem naming its path and why (g_module_error()
 * for the first two), so start-up stops with every problem at once. Modules stay loaded
 * until the process exits: their classes are referenced from every lookup.
 */
#pragma once

#include "evd_config.h"

G_BEGIN_DECLS

/* The first call (start-up, main thread, before the lookups are read) loads the modules of
 * `cfg`; later calls (reloads) only read the key, and warn when the list changed, since a
 * loaded module cannot be unloaded. Problems go through evd_config_problem. */
void evd_modules_load (EvdConfig *cfg);

G_END_DECLS

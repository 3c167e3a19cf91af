/* evd_service: the DataAccess service of idl/evdal.thrift: its method table, the three
 * methods (each an asynchronous handler, see evd_rpc), and live reloading.
 *
 * fetch() is the fan-out engine's; ping() and lookups() answer at once. The lookups live in
 * an engine built from the config. A reload builds a whole new engine from the new config and,
 * only if every problem check passes, makes it current. Each loop keeps its own reference to
 * the engine it uses and picks up a newer one on its next request (one atomic read of a
 * generation number; the lock is taken once per loop per reload). Requests in flight finish
 * on the engine they started with, which is freed after the last of them.
 */
#pragma once

#include "evd_config.h"
#include "evd_engine.h"
#include "evd_rpc.h"

G_BEGIN_DECLS

typedef struct _EvdDataAccess EvdDataAccess;

/* Builds the service and its lookups from the config; problems are recorded in cfg. It counts
 * into `metrics` and keeps traced requests in `traces` (either may be NULL); both must outlive
 * it. */
EvdDataAccess *evd_data_access_new (EvdConfig *cfg, EvdMetrics *metrics, EvdTraceStore *traces);
void evd_data_access_free (EvdDataAccess *da);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdDataAccess, evd_data_access_free)

const EvdService *evd_data_access_service (EvdDataAccess *da);
/* Where sampled fetches' spans go, and the sample ratio (NULL: no export, ratio 0); set
 * before serving, and it must outlive the service. */
void evd_data_access_set_otlp (EvdDataAccess *da, EvdOtlp *otlp);

/* Replaces the lookups with those of `cfg` (main thread). On a config with problems, fails
 * with all of them and keeps the current lookups. `summary` (may be NULL) receives what
 * changed: "3 lookups; added: a; removed: b". */
gboolean evd_data_access_reload (EvdDataAccess *da, EvdConfig *cfg, char **summary,
                                 GError **error);

/* /lookups: every lookup with its backend, params, timeout and how often it ran. */
void evd_data_access_lookups_json (EvdDataAccess *da, GString *out);
/* For /health: a line per database/upstream whose circuit breaker is not closed. Any thread. */
void evd_data_access_health (EvdDataAccess *da, GString *out);

G_END_DECLS

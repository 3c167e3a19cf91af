/* evd_service: the DataAccess service of idl/evdal.thrift: its method table, and the three
 * methods, each an asynchronous handler (evd_rpc). fetch() is the fan-out engine's; ping()
 * and lookups() answer at once.
 */
#pragma once

#include "evd_config.h"
#include "evd_engine.h"
#include "evd_rpc.h"

G_BEGIN_DECLS

typedef struct _EvdDataAccess EvdDataAccess;

/* Builds the service and its lookups from the config; problems are recorded in cfg. */
EvdDataAccess *evd_data_access_new (EvdConfig *cfg);
void evd_data_access_free (EvdDataAccess *da);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdDataAccess, evd_data_access_free)

const EvdService *evd_data_access_service (EvdDataAccess *da);
EvdEngine *evd_data_access_engine (EvdDataAccess *da);

G_END_DECLS

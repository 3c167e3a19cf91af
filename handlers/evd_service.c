/* evd_service: DataAccess's methods (see evd_service.h). */
#include "evd_service.h"

#include "evdal_data_access.h"

struct _EvdDataAccess {
  EvdService service;
  EvdEngine *engine;
};

static void
evd_service_ping (EvdCall *call, ThriftStruct *args, gpointer data)
{
  evdalDataAccessPingResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_RESULT, NULL);

  (void) args;
  (void) data;
  r->success = g_strdup ("pong");
  r->__isset_success = TRUE;
  evd_call_reply (call, THRIFT_STRUCT (r));
}

static evdalLookupInfo *
evd_service_lookup_info (EvdLookup *l)
{
  const EvdLookupSpec *spec = evd_lookup_spec (l);
  evdalLookupInfo *info = g_object_new (EVDAL_TYPE_LOOKUP_INFO, NULL);

  info->name = g_strdup (spec->name);
  info->backend = g_strdup (spec->backend_name);
  for (guint i = 0; i < spec->params->len; i++)
    g_ptr_array_add (info->params, g_strdup (g_array_index (spec->params, EvdParamSpec, i).name));
  info->timeout_ms = evd_lookup_timeout_ms (l);
  info->description = g_strdup (evd_lookup_description (l));
  info->__isset_name = info->__isset_backend = info->__isset_params = TRUE;
  info->__isset_timeout_ms = info->__isset_description = TRUE;
  return info;
}

static void
evd_service_lookups (EvdCall *call, ThriftStruct *args, gpointer data)
{
  EvdDataAccess *da = data;
  EvdLookupSet *set = evd_engine_lookups (da->engine);
  evdalDataAccessLookupsResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_LOOKUPS_RESULT, NULL);

  (void) args;
  for (guint i = 0; i < evd_lookup_set_size (set); i++)
    g_ptr_array_add (r->success, evd_service_lookup_info (evd_lookup_set_nth (set, i)));
  r->__isset_success = TRUE;
  evd_call_reply (call, THRIFT_STRUCT (r));
}

static void
evd_service_fetch (EvdCall *call, ThriftStruct *args, gpointer data)
{
  EvdDataAccess *da = data;

  evd_engine_fetch (da->engine, call, EVDAL_DATA_ACCESS_FETCH_ARGS (args)->request);
}

static guint
evd_service_pending (gpointer data)
{
  EvdDataAccess *da = data;

  return evd_engine_pending (da->engine);
}

static const EvdMethod evd_service_methods[] = {
  { "fetch", 0, evd_service_fetch },
  { "lookups", 0, evd_service_lookups },
  { "ping", 0, evd_service_ping },
};

EvdDataAccess *
evd_data_access_new (EvdConfig *cfg)
{
  EvdDataAccess *da = g_new0 (EvdDataAccess, 1);
  EvdMethod *methods = g_memdup2 (evd_service_methods, sizeof evd_service_methods);

  /* GTypes are known only at run time, so the table is completed here. */
  methods[0].args_type = EVDAL_TYPE_DATA_ACCESS_FETCH_ARGS;
  methods[1].args_type = EVDAL_TYPE_DATA_ACCESS_LOOKUPS_ARGS;
  methods[2].args_type = EVDAL_TYPE_DATA_ACCESS_PING_ARGS;
  da->service.name = "DataAccess";
  da->service.methods = methods;
  da->service.n_methods = G_N_ELEMENTS (evd_service_methods);
  da->service.data = da;
  da->service.pending = evd_service_pending;
  da->service.args_schema = evd_wire_schema_args;
  da->engine = evd_engine_new (cfg);
  return da;
}

void
evd_data_access_free (EvdDataAccess *da)
{
  if (da == NULL)
    return;
  evd_engine_free (da->engine);
  g_free ((gpointer) da->service.methods);
  g_free (da);
}

const EvdService *
evd_data_access_service (EvdDataAccess *da)
{
  return &da->service;
}

EvdEngine *
evd_data_access_engine (EvdDataAccess *da)
{
  return da->engine;
}

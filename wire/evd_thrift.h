/* evd_thrift: g_autoptr support for the c_glib and generated types evdal uses, which their
 * headers do not declare. Include this instead of the c_glib and generated headers. */
#pragma once

#include <thrift/c_glib/protocol/thrift_protocol.h>
#include <thrift/c_glib/thrift_application_exception.h>
#include <thrift/c_glib/thrift_struct.h>
#include <thrift/c_glib/transport/thrift_transport.h>

#include "evdal_data_access.h"
#include "evdal_evdal_types.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ThriftTransport, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ThriftProtocol, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ThriftStruct, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ThriftApplicationException, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalValue, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalTable, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalLookupError, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalSpan, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalLookupResult, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalFetchRequest, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalFetchResponse, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalDataAccessFetchArgs, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalDataAccessFetchResult, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalDataAccessPingResult, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (evdalDataAccessLookupsResult, g_object_unref)

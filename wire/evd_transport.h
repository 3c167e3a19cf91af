/* evd_transport: the only ThriftTransport evdal hands to c_glib's protocols.
 *
 * It reads from a slice of memory that evdal already holds whole and has validated
 * (evd_wire), and writes to a GByteArray that the connection later queues for sending. c_glib
 * never touches a socket, so its own transports' traps (read_slow copying the wrong bytes
 * across a buffer edge, a blocking read inside the loop) cannot happen, and its reads become
 * plain memcpys: ThriftMemoryBuffer would memmove the rest of the buffer on every read.
 */
#pragma once

#include "evd_thrift.h"

G_BEGIN_DECLS

#define EVD_TYPE_TRANSPORT (evd_transport_get_type ())
G_DECLARE_FINAL_TYPE (EvdTransport, evd_transport, EVD, TRANSPORT, ThriftTransport)

EvdTransport *evd_transport_new (void);

/* Reads come from data[0..len) from now on; the memory must outlive the reads. */
void evd_transport_set_input (EvdTransport *t, const guint8 *data, gsize len);
/* Bytes of the input not read yet. */
gsize evd_transport_input_left (EvdTransport *t);

/* Writes append to `out` (borrowed; NULL stops writing) from now on. */
void evd_transport_set_output (EvdTransport *t, GByteArray *out);

G_END_DECLS

/* evd_transport: a ThriftTransport over memory evdal owns (see evd_transport.h). */
#include "evd_transport.h"

#include <string.h>

struct _EvdTransport {
  ThriftTransport parent;
  const guint8 *in;
  gsize in_len;
  gsize in_pos;
  GByteArray *out;
};

G_DEFINE_FINAL_TYPE (EvdTransport, evd_transport, THRIFT_TYPE_TRANSPORT)

EvdTransport *
evd_transport_new (void)
{
  return g_object_new (EVD_TYPE_TRANSPORT, NULL);
}

void
evd_transport_set_input (EvdTransport *t, const guint8 *data, gsize len)
{
  t->in = data;
  t->in_len = len;
  t->in_pos = 0;
}

gsize
evd_transport_input_left (EvdTransport *t)
{
  return t->in_len - t->in_pos;
}

void
evd_transport_set_output (EvdTransport *t, GByteArray *out)
{
  t->out = out;
}

static gboolean
evd_transport_is_open (ThriftTransport *transport)
{
  (void) transport;
  return TRUE;
}

static gboolean
evd_transport_ok (ThriftTransport *transport, GError **error)
{
  (void) transport;
  (void) error;
  return TRUE;
}

static gint32
evd_transport_read (ThriftTransport *transport, gpointer buf, guint32 len, GError **error)
{
  EvdTransport *t = EVD_TRANSPORT (transport);

  /* A short read would make c_glib decode garbage; the scanner makes this unreachable for
   * well-formed input, so it is an error, not a partial read. */
  if (len > t->in_len - t->in_pos) {
    g_set_error (error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE,
                 "read of %u bytes past the end of the message", len);
    return -1;
  }
  memcpy (buf, t->in + t->in_pos, len);
  t->in_pos += len;
  return (gint32) len;
}

static gboolean
evd_transport_write (ThriftTransport *transport, const gpointer buf, const guint32 len,
                     GError **error)
{
  EvdTransport *t = EVD_TRANSPORT (transport);

  if (t->out == NULL) {
    g_set_error (error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_SEND,
                 "no output buffer");
    return FALSE;
  }
  g_byte_array_append (t->out, buf, len);
  return TRUE;
}

/* c_glib 0.17 asks the transport before it allocates a string or container; answer from the
 * bytes really left, so even a bug in the scanner cannot turn into a 2 GiB allocation. */
static gboolean
evd_transport_check_read_bytes_available (ThriftTransport *transport, glong n, GError **error)
{
  EvdTransport *t = EVD_TRANSPORT (transport);

  if (n < 0 || (gsize) n > t->in_len - t->in_pos) {
    g_set_error (error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE,
                 "message claims %ld bytes, %zu are left", n, t->in_len - t->in_pos);
    return FALSE;
  }
  return TRUE;
}

static gboolean
evd_transport_size_ok (ThriftTransport *transport, glong size, GError **error)
{
  (void) transport;
  (void) size;
  (void) error;
  return TRUE;
}

static void
evd_transport_class_init (EvdTransportClass *klass)
{
  ThriftTransportClass *tc = THRIFT_TRANSPORT_CLASS (klass);

  tc->is_open = evd_transport_is_open;
  tc->open = evd_transport_ok;
  tc->close = evd_transport_ok;
  tc->read = evd_transport_read;
  tc->read_all = evd_transport_read;
  tc->read_end = evd_transport_ok;
  tc->write = evd_transport_write;
  tc->write_end = evd_transport_ok;
  tc->flush = evd_transport_ok;
  tc->checkReadBytesAvailable = evd_transport_check_read_bytes_available;
  tc->updateKnownMessageSize = evd_transport_size_ok;
  tc->resetConsumedMessageSize = evd_transport_size_ok;
  tc->countConsumedMessageBytes = evd_transport_size_ok;
}

static void
evd_transport_init (EvdTransport *t)
{
  (void) t;
}

/* evd_writer: binary and compact Thrift encodings into a byte array (see evd_writer.h). */
#include "evd_writer.h"

#include <string.h>

/* The compact protocol's type codes (its own, not the binary protocol's). */
enum {
  EVD_CT_BOOL_TRUE = 1,
  EVD_CT_BOOL_FALSE = 2,
  EVD_CT_BYTE = 3,
  EVD_CT_I16 = 4,
  EVD_CT_I32 = 5,
  EVD_CT_I64 = 6,
  EVD_CT_DOUBLE = 7,
  EVD_CT_BINARY = 8,
  EVD_CT_LIST = 9,
  EVD_CT_SET = 10,
  EVD_CT_MAP = 11,
  EVD_CT_STRUCT = 12,
};

static guint8
evd_writer_ctype (guint8 ttype)
{
  switch (ttype) {
  case EVD_WIRE_T_BOOL: return EVD_CT_BOOL_TRUE;
  case EVD_WIRE_T_BYTE: return EVD_CT_BYTE;
  case EVD_WIRE_T_I16: return EVD_CT_I16;
  case EVD_WIRE_T_I32: return EVD_CT_I32;
  case EVD_WIRE_T_I64: return EVD_CT_I64;
  case EVD_WIRE_T_DOUBLE: return EVD_CT_DOUBLE;
  case EVD_WIRE_T_STRING: return EVD_CT_BINARY;
  case EVD_WIRE_T_LIST: return EVD_CT_LIST;
  case EVD_WIRE_T_SET: return EVD_CT_SET;
  case EVD_WIRE_T_MAP: return EVD_CT_MAP;
  default: return EVD_CT_STRUCT;
  }
}

/* Room for n more bytes at the end of the array; the caller fills all n.
 *
 * A reply is written a few bytes at a time, hundreds of times, and g_byte_array_set_size()
 * divides by the element size on every call to check for overflow: in sqlite7's profile
 * that division was the hottest instruction in GLib. So the writer asks GLib for room only
 * now and then, and in between moves the array's public length itself, within what it asked
 * for (`cap`): a byte array has no clear function and no terminator, so its length is all
 * there is to keep right. */
static inline guint8 *
evd_writer_grow (EvdWriter *w, guint n)
{
  guint at = w->out->len;

  if (G_UNLIKELY ((guint64) at + n > w->cap)) {  /* also when others appended past cap */
    w->cap = MAX (at + n, MAX (2 * at, 256));
    g_byte_array_set_size (w->out, w->cap);
  }
  w->out->len = at + n;
  return w->out->data + at;
}

static inline void
evd_writer_byte (EvdWriter *w, guint8 b)
{
  *evd_writer_grow (w, 1) = b;
}

static void
evd_writer_be32 (EvdWriter *w, guint32 v)
{
  v = GUINT32_TO_BE (v);
  memcpy (evd_writer_grow (w, 4), &v, 4);
}

static void
evd_writer_be64 (EvdWriter *w, guint64 v)
{
  v = GUINT64_TO_BE (v);
  memcpy (evd_writer_grow (w, 8), &v, 8);
}

/* Unsigned LEB128, as the compact protocol's varints. */
static void
evd_writer_varint (EvdWriter *w, guint64 v)
{
  guint8 buf[10];
  guint n = 0;

  while (v >= 0x80) {
    buf[n++] = (guint8) (v | 0x80);
    v >>= 7;
  }
  buf[n++] = (guint8) v;
  memcpy (evd_writer_grow (w, n), buf, n);
}

static inline guint64
evd_writer_zigzag (gint64 v)
{
  return ((guint64) v << 1) ^ (guint64) (v >> 63);
}

void
evd_writer_init (EvdWriter *w, GByteArray *out, EvdProto proto)
{
  w->out = out;
  w->cap = out->len;  /* all that is known to be allocated */
  w->proto = proto;
  w->depth = 0;
  w->last_fid = 0;
}

void
evd_writer_message_begin (EvdWriter *w, const char *name, guint8 type, gint32 seqid)
{
  if (w->proto == EVD_PROTO_BINARY) {
    evd_writer_be32 (w, 0x80010000u | type);
    evd_writer_string (w, name);
    evd_writer_be32 (w, (guint32) seqid);
  } else {
    evd_writer_byte (w, 0x82);
    evd_writer_byte (w, (guint8) (1 | ((type << 5) & 0xe0)));
    evd_writer_varint (w, (guint32) seqid);
    evd_writer_string (w, name);
  }
}

void
evd_writer_struct_begin (EvdWriter *w)
{
  g_return_if_fail (w->depth < EVD_WRITER_MAX_DEPTH);
  w->saved_fid[w->depth++] = w->last_fid;
  w->last_fid = 0;
}

void
evd_writer_struct_end (EvdWriter *w)
{
  g_return_if_fail (w->depth > 0);
  evd_writer_byte (w, 0);  /* the field stop, in both protocols */
  w->last_fid = w->saved_fid[--w->depth];
}

/* Compact: a field id within 15 after the previous one rides in the type byte; any other
 * (the first field of a result struct is id 0) follows it as a zigzag varint. */
static void
evd_writer_compact_field (EvdWriter *w, guint8 ctype, gint16 id)
{
  if (id > w->last_fid && id - w->last_fid <= 15) {
    evd_writer_byte (w, (guint8) (((id - w->last_fid) << 4) | ctype));
  } else {
    evd_writer_byte (w, ctype);
    evd_writer_varint (w, evd_writer_zigzag (id));
  }
  w->last_fid = id;
}

void
evd_writer_field_begin (EvdWriter *w, guint8 ttype, gint16 id)
{
  if (w->proto == EVD_PROTO_BINARY) {
    guint8 *p = evd_writer_grow (w, 3);
    p[0] = ttype;
    p[1] = (guint8) ((guint16) id >> 8);
    p[2] = (guint8) id;
  } else {
    evd_writer_compact_field (w, evd_writer_ctype (ttype), id);
  }
}

void
evd_writer_field_bool (EvdWriter *w, gint16 id, gboolean value)
{
  if (w->proto == EVD_PROTO_BINARY) {
    evd_writer_field_begin (w, EVD_WIRE_T_BOOL, id);
    evd_writer_byte (w, value ? 1 : 0);
  } else {
    /* Compact keeps a bool field's value in its header's type. */
    evd_writer_compact_field (w, value ? EVD_CT_BOOL_TRUE : EVD_CT_BOOL_FALSE, id);
  }
}

void
evd_writer_list_begin (EvdWriter *w, guint8 elem_ttype, guint32 size)
{
  if (w->proto == EVD_PROTO_BINARY) {
    evd_writer_byte (w, elem_ttype);
    evd_writer_be32 (w, size);
  } else if (size <= 14) {
    evd_writer_byte (w, (guint8) ((size << 4) | evd_writer_ctype (elem_ttype)));
  } else {
    evd_writer_byte (w, (guint8) (0xf0 | evd_writer_ctype (elem_ttype)));
    evd_writer_varint (w, size);
  }
}

void
evd_writer_map_begin (EvdWriter *w, guint8 key_ttype, guint8 value_ttype, guint32 size)
{
  if (w->proto == EVD_PROTO_BINARY) {
    evd_writer_byte (w, key_ttype);
    evd_writer_byte (w, value_ttype);
    evd_writer_be32 (w, size);
  } else if (size == 0) {
    evd_writer_byte (w, 0);  /* an empty map has no types */
  } else {
    evd_writer_varint (w, size);
    evd_writer_byte (w, (guint8) ((evd_writer_ctype (key_ttype) << 4) |
                                  evd_writer_ctype (value_ttype)));
  }
}

void
evd_writer_i32 (EvdWriter *w, gint32 v)
{
  if (w->proto == EVD_PROTO_BINARY)
    evd_writer_be32 (w, (guint32) v);
  else
    evd_writer_varint (w, (guint32) (((guint32) v << 1) ^ (guint32) (v >> 31)));
}

void
evd_writer_i64 (EvdWriter *w, gint64 v)
{
  if (w->proto == EVD_PROTO_BINARY)
    evd_writer_be64 (w, (guint64) v);
  else
    evd_writer_varint (w, evd_writer_zigzag (v));
}

void
evd_writer_double (EvdWriter *w, double v)
{
  guint64 bits;

  memcpy (&bits, &v, 8);
  if (w->proto == EVD_PROTO_BINARY) {
    evd_writer_be64 (w, bits);
  } else {
    bits = GUINT64_TO_LE (bits);  /* compact writes doubles little-endian */
    memcpy (evd_writer_grow (w, 8), &bits, 8);
  }
}

void
evd_writer_binary (EvdWriter *w, const void *data, gsize len)
{
  if (w->proto == EVD_PROTO_BINARY)
    evd_writer_be32 (w, (guint32) len);
  else
    evd_writer_varint (w, (guint32) len);
  if (len > 0)
    memcpy (evd_writer_grow (w, (guint) len), data, len);
}

void
evd_writer_string (EvdWriter *w, const char *s)
{
  evd_writer_binary (w, s, s != NULL ? strlen (s) : 0);
}

guint8 *
evd_writer_room (EvdWriter *w, gsize max)
{
  guint8 *p;

  g_return_val_if_fail (max <= G_MAXUINT - w->out->len, NULL);
  p = evd_writer_grow (w, (guint) max);
  w->out->len -= (guint) max;
  return p;
}

void
evd_writer_commit (EvdWriter *w, const guint8 *end)
{
  gsize len = (gsize) (end - w->out->data);

  g_return_if_fail (end >= w->out->data + w->out->len && len <= w->cap);
  w->out->len = (guint) len;
}

/* evd_reader: a pull decoder of the Thrift binary and compact protocols over bytes in memory,
 * for hand-written decoders of whole messages (handlers/evd_request decodes fetch's args
 * with it).
 *
 * evd_wire's scanner resumes across partial input and only checks a message; this reader
 * pulls typed values out of a complete one. Every read is checked against the end: the first
 * problem is kept in `bad` (a static string saying what was wrong), the reader jumps to the
 * end, and every later read returns zero values, so a decoder may check `bad` once per struct
 * rather than after every value. Nesting is bounded by EVD_WIRE_MAX_DEPTH.
 *
 * The primitives are inline: they run per field of every request on the IO loops.
 */
#pragma once

#include <glib.h>
#include <string.h>

#include "evd_wire.h"

G_BEGIN_DECLS

/* A reader over one message's bytes: start it as (EvdReader) { .p, .end, .proto }. */
typedef struct {
  const guint8 *p, *end;
  EvdProto proto;
  gint16 last_fid;          /* compact: the previous field id of the struct being read */
  gboolean bool_pending;    /* compact: a bool field whose value came in its header */
  gboolean bool_value;
  const char *bad;          /* the first problem found; reading stops there */
  guint depth;
} EvdReader;

static inline gboolean
evd_reader_fail (EvdReader *r, const char *why)
{
  if (r->bad == NULL)
    r->bad = why;
  r->p = r->end;
  return FALSE;
}

static inline gboolean
evd_reader_take (EvdReader *r, gsize n, const guint8 **out)
{
  if ((gsize) (r->end - r->p) < n)
    return evd_reader_fail (r, "the message ends inside a value");
  *out = r->p;
  r->p += n;
  return TRUE;
}

static inline guint8
evd_reader_byte (EvdReader *r)
{
  const guint8 *b;

  return evd_reader_take (r, 1, &b) ? *b : 0;
}

static inline guint64
evd_reader_varint (EvdReader *r)
{
  guint64 v = 0;

  for (guint shift = 0; shift < 70; shift += 7) {
    guint8 b = evd_reader_byte (r);
    v |= (guint64) (b & 0x7f) << shift;
    if ((b & 0x80) == 0 || r->bad)
      return v;
  }
  evd_reader_fail (r, "a varint longer than ten bytes");
  return 0;
}

static inline guint32
evd_reader_be32 (EvdReader *r)
{
  const guint8 *b;

  if (!evd_reader_take (r, 4, &b))
    return 0;
  return ((guint32) b[0] << 24) | ((guint32) b[1] << 16) | ((guint32) b[2] << 8) | b[3];
}

static inline gint32
evd_reader_i32 (EvdReader *r)
{
  if (r->proto == EVD_PROTO_BINARY)
    return (gint32) evd_reader_be32 (r);
  guint32 z = (guint32) evd_reader_varint (r);
  return (gint32) ((z >> 1) ^ (guint32) -(gint32) (z & 1));
}

static inline gint64
evd_reader_i64 (EvdReader *r)
{
  if (r->proto == EVD_PROTO_BINARY) {
    guint64 hi = evd_reader_be32 (r);
    return (gint64) ((hi << 32) | evd_reader_be32 (r));
  }
  guint64 z = evd_reader_varint (r);
  return (gint64) ((z >> 1) ^ -(z & 1));
}

static inline double
evd_reader_double (EvdReader *r)
{
  const guint8 *b;
  guint64 bits = 0;
  double d;

  if (evd_reader_take (r, 8, &b)) {
    for (guint i = 0; i < 8; i++)  /* binary is big-endian, compact little-endian */
      bits |= (guint64) b[r->proto == EVD_PROTO_BINARY ? i : 7 - i] << (8 * (7 - i));
  }
  memcpy (&d, &bits, 8);
  return d;
}

static inline gboolean
evd_reader_bool (EvdReader *r)
{
  if (r->bool_pending) {
    r->bool_pending = FALSE;
    return r->bool_value;
  }
  /* Binary writes 1 or 0; compact writes a bool outside a field header as its type code,
   * 1 for true. Read as c_glib reads them: binary's any byte but 0 is true. */
  guint8 b = evd_reader_byte (r);

  return r->proto == EVD_PROTO_BINARY ? b != 0 : b == 1;
}

/* A string's or binary's bytes (in the message). */
static inline gboolean
evd_reader_binary (EvdReader *r, const guint8 **data, guint32 *len)
{
  gint64 n = r->proto == EVD_PROTO_BINARY ? (gint32) evd_reader_be32 (r)
                                          : (gint64) (guint32) evd_reader_varint (r);

  if (n < 0)
    return evd_reader_fail (r, "a negative length");
  *len = (guint32) n;
  return evd_reader_take (r, (gsize) n, data);
}

/* A compact type nibble as the binary protocol's type code (the scanner's table). */
static inline guint8
evd_reader_ttype (EvdReader *r, guint8 nibble)
{
  guint8 t = evd_wire_compact_type (nibble);

  if (t == 0)
    evd_reader_fail (r, "an unknown compact type");
  return t;
}

/* The next field's type and id; FALSE at the struct's stop (or on a problem). */
static inline gboolean
evd_reader_field (EvdReader *r, guint8 *ttype, gint16 *id)
{
  guint8 b = evd_reader_byte (r);

  /* Compact's stop is a zero type nibble, whatever the high nibble holds (as c_glib and the
   * scanner read it). */
  if ((r->proto == EVD_PROTO_COMPACT ? b & 0x0f : b) == 0 || r->bad)
    return FALSE;
  if (r->proto == EVD_PROTO_BINARY) {
    const guint8 *p;
    *ttype = b;
    if (!evd_reader_take (r, 2, &p))
      return FALSE;
    *id = (gint16) ((p[0] << 8) | p[1]);
    return TRUE;
  }
  /* Compact: the id is a delta in the high nibble, or a zigzag varint after the byte; a
   * bool field carries its value in the type (1 true, 2 false). */
  if (b >> 4)
    *id = (gint16) (r->last_fid + (b >> 4));
  else
    *id = (gint16) evd_reader_i32 (r);
  r->last_fid = *id;
  *ttype = evd_reader_ttype (r, b & 0x0f);
  if (*ttype == EVD_WIRE_T_BOOL) {
    r->bool_pending = TRUE;
    r->bool_value = (b & 0x0f) == 1;
  }
  return !r->bad;
}

/* Containers: element types and count; compact's short and long forms. */
static inline guint32
evd_reader_list (EvdReader *r, guint8 *elem)
{
  if (r->proto == EVD_PROTO_BINARY) {
    gint32 n;
    *elem = evd_reader_byte (r);
    n = (gint32) evd_reader_be32 (r);
    if (n < 0)
      evd_reader_fail (r, "a negative size");
    return r->bad ? 0 : (guint32) n;
  }
  guint8 b = evd_reader_byte (r);
  guint32 n = b >> 4;
  *elem = evd_reader_ttype (r, b & 0x0f);
  if (n == 15)
    n = (guint32) evd_reader_varint (r);
  return r->bad ? 0 : n;
}

static inline guint32
evd_reader_map (EvdReader *r, guint8 *key, guint8 *value)
{
  if (r->proto == EVD_PROTO_BINARY) {
    gint32 n;
    *key = evd_reader_byte (r);
    *value = evd_reader_byte (r);
    n = (gint32) evd_reader_be32 (r);
    if (n < 0)
      evd_reader_fail (r, "a negative size");
    return r->bad ? 0 : (guint32) n;
  }
  guint32 n = (guint32) evd_reader_varint (r);
  if (n > 0) {
    guint8 b = evd_reader_byte (r);
    *key = evd_reader_ttype (r, b >> 4);
    *value = evd_reader_ttype (r, b & 0x0f);
  }
  return r->bad ? 0 : n;
}

/* Entering and leaving a struct: compact's field ids are relative within each. */
static inline gboolean
evd_reader_enter (EvdReader *r, gint16 *saved)
{
  if (++r->depth > EVD_WIRE_MAX_DEPTH)
    return evd_reader_fail (r, "nested too deep");
  *saved = r->last_fid;
  r->last_fid = 0;
  return TRUE;
}

static inline void
evd_reader_leave (EvdReader *r, gint16 saved)
{
  r->depth--;
  r->last_fid = saved;
}

/* Skips one value of type `ttype` (nested ones too); FALSE once the reader has failed. */
gboolean evd_reader_skip (EvdReader *r, guint8 ttype);

G_END_DECLS

/* evd_wire: wire-format detection and the bounded, resumable message scanner (see evd_wire.h). */
#include "evd_wire.h"

#include <string.h>

/* Abstract Thrift types (TType). They are the binary protocol's type codes, so binary bytes
 * need no translation; compact codes are mapped onto them. */
enum {
  EVD_T_STOP = 0,
  EVD_T_BOOL = 2,
  EVD_T_BYTE = 3,
  EVD_T_DOUBLE = 4,
  EVD_T_I16 = 6,
  EVD_T_I32 = 8,
  EVD_T_I64 = 10,
  EVD_T_STRING = 11,
  EVD_T_STRUCT = 12,
  EVD_T_MAP = 13,
  EVD_T_SET = 14,
  EVD_T_LIST = 15,
  EVD_T_COUNT = 16,
};

/* EvdWireFrame.kind. A struct frame keeps, in elem[0], the type of a field whose header has
 * been read but whose value has not (EVD_T_STOP when none), so a walk that runs out of bytes
 * between a field header and its value resumes at the value. */
enum {
  EVD_FRAME_STRUCT = 1,
  EVD_FRAME_LIST = 2, /* lists and sets: the wire does not tell them apart */
  EVD_FRAME_MAP = 3,
};

#define EVD_BINARY_VERSION_HI 0x80
#define EVD_BINARY_VERSION_LO 0x01
#define EVD_COMPACT_ID 0x82
#define EVD_COMPACT_VERSION 1
#define EVD_COMPACT_VERSION_MASK 0x1f
#define EVD_COMPACT_TYPE_SHIFT 5

/* The fixed part of a strict binary header: version word, name length, seqid. */
#define EVD_BINARY_HEADER_MIN 12
/* The shortest compact header: id, version/type, 1-byte seqid, 1-byte name length. */
#define EVD_COMPACT_HEADER_MIN 4

typedef EvdWireStatus (*EvdWireValueFn) (EvdWireScanner *s, const guint8 *data, gsize len,
                                         guint8 type);

/* What differs between the protocols: how tokens look. The walk itself is shared. */
typedef struct {
  EvdWireStatus (*header) (EvdWireScanner *s, const guint8 *data, gsize len);
  EvdWireStatus (*field) (EvdWireScanner *s, const guint8 *data, gsize len, EvdWireFrame *f);
  EvdWireValueFn value[EVD_T_COUNT]; /* NULL: a type the protocol does not have */
  /* The fewest bytes a value of each type takes; for the fixed-size types also the exact size.
   * Container sizes are checked against these, so a claim of 2^31 elements fails at once. */
  guint8 min_size[EVD_T_COUNT];
} EvdWireOps;

static const EvdWireOps *evd_wire_ops (const EvdWireScanner *s);

/* ---------------------------------------------------------------------------------------
 * Detection */

static EvdWireStatus
evd_wire_detect_bad (const char **reason, const char *why)
{
  if (reason != NULL)
    *reason = why;
  return EVD_WIRE_BAD_HEADER;
}

/* Judges the protocol bytes at p (len of them, at least 1); total is all bytes seen so far. */
static EvdWireStatus
evd_wire_detect_proto (const guint8 *p, gsize len, gsize total, gboolean framed,
                       EvdWireFormat *fmt, const char **reason)
{
  EvdProto proto;

  if (p[0] == EVD_BINARY_VERSION_HI) {
    proto = EVD_PROTO_BINARY;
    if (len >= 2 && p[1] != EVD_BINARY_VERSION_LO)
      return evd_wire_detect_bad (reason, "unsupported binary protocol version");
  } else if (p[0] == EVD_COMPACT_ID) {
    proto = EVD_PROTO_COMPACT;
    if (len >= 2 && (p[1] & EVD_COMPACT_VERSION_MASK) != EVD_COMPACT_VERSION)
      return evd_wire_detect_bad (reason, "unsupported compact protocol version");
  } else {
    return evd_wire_detect_bad (reason, "frame holds neither a binary nor a compact message");
  }
  if (total < EVD_WIRE_DETECT_BYTES)
    return EVD_WIRE_NEED_MORE;
  if (fmt != NULL) {
    fmt->framed = framed;
    fmt->proto = proto;
  }
  return EVD_WIRE_OK;
}

EvdWireStatus
evd_wire_detect (const guint8 *data, gsize len, EvdWireFormat *fmt, const char **reason)
{
  if (reason != NULL)
    *reason = NULL;
  if (len == 0)
    return EVD_WIRE_NEED_MORE;
  if (data[0] == EVD_BINARY_VERSION_HI || data[0] == EVD_COMPACT_ID)
    return evd_wire_detect_proto (data, len, len, FALSE, fmt, reason);
  /* Anything else is the high byte of a frame length, and a length may not be negative. */
  if (data[0] & 0x80)
    return evd_wire_detect_bad (reason, "not a Thrift message (frame length would be negative)");
  if (len <= 4)
    return EVD_WIRE_NEED_MORE;
  return evd_wire_detect_proto (data + 4, len - 4, len, TRUE, fmt, reason);
}

/* ---------------------------------------------------------------------------------------
 * Token helpers. Readers work on a local cursor and move s->pos only once a whole token is
 * there, which is what makes the walk resumable. */

/* Errors before the header is complete mean the stream cannot be trusted at all. */
static EvdWireStatus
evd_wire_fail (EvdWireScanner *s, const char *why)
{
  s->reason = why;
  return s->header_ok ? EVD_WIRE_BAD_BODY : EVD_WIRE_BAD_HEADER;
}

/* Is a token ending at `end` there? Past max_len it never can be: that is malformed, not
 * incomplete, so the caller does not wait for bytes it would refuse anyway. */
static EvdWireStatus
evd_wire_want (EvdWireScanner *s, gsize len, guint64 end)
{
  if (end > s->max_len)
    return evd_wire_fail (s, s->header_ok ? "message longer than the length limit"
                                          : "message header longer than the length limit");
  if (end > len) {
    s->need = (gsize) end;
    return EVD_WIRE_NEED_MORE;
  }
  return EVD_WIRE_OK;
}

/* Reads a big-endian i32 (all four bytes must be present). */
static gint32
evd_wire_be32 (const guint8 *b)
{
  return (gint32) (((guint32) b[0] << 24) | ((guint32) b[1] << 16) | ((guint32) b[2] << 8)
                   | (guint32) b[3]);
}

/* Reads a compact varint of at most max_bytes at *p and moves *p past it. *low gets the low
 * 32 bits of its value, all that sizes and ids need; i64 values are only skipped. */
static EvdWireStatus
evd_wire_varint (EvdWireScanner *s, const guint8 *data, gsize len, gsize *p, guint max_bytes,
                 guint32 *low)
{
  guint32 v = 0;

  for (guint i = 0; i < max_bytes; i++) {
    EvdWireStatus st = evd_wire_want (s, len, (guint64) *p + i + 1);
    if (st != EVD_WIRE_OK)
      return st;
    if (i < 5)
      v |= (guint32) (((guint64) (data[*p + i] & 0x7f) << (7 * i)) & G_MAXUINT32);
    if ((data[*p + i] & 0x80) == 0) {
      *p += i + 1;
      *low = v;
      return EVD_WIRE_OK;
    }
  }
  return evd_wire_fail (s, max_bytes == 5 ? "varint longer than 5 bytes"
                                          : "varint longer than 10 bytes");
}

/* A 32-bit varint as c_glib reads it: the low 32 bits, as a signed number. */
static EvdWireStatus
evd_wire_varint32 (EvdWireScanner *s, const guint8 *data, gsize len, gsize *p, gint32 *out)
{
  guint32 v = 0;
  EvdWireStatus st = evd_wire_varint (s, data, len, p, 5, &v);

  *out = (gint32) v;
  return st;
}

static gboolean
evd_wire_type_ok (const EvdWireOps *ops, guint t)
{
  return t < EVD_T_COUNT && ops->value[t] != NULL;
}

static gboolean
evd_wire_msg_type_ok (guint t)
{
  return t >= EVD_MSG_CALL && t <= EVD_MSG_ONEWAY;
}

/* ---------------------------------------------------------------------------------------
 * The schema */

/* Lists and sets are alike on the wire: a decoder expecting one reads the other fine. */
static gboolean
evd_wire_same_type (guint8 wire, guint8 declared)
{
  if (wire == EVD_T_SET)
    wire = EVD_T_LIST;
  if (declared == EVD_T_SET)
    declared = EVD_T_LIST;
  return wire == declared;
}

static gboolean
evd_wire_elems_declared (const EvdWireFrame *f)
{
  const EvdWireSchema *d = f->schema;

  if (f->kind == EVD_FRAME_LIST)
    return d->elem[0] != NULL && evd_wire_same_type (f->elem[0], d->elem[0]->ttype);
  if (f->kind == EVD_FRAME_MAP)
    return d->elem[0] != NULL && d->elem[1] != NULL &&
           evd_wire_same_type (f->elem[0], d->elem[0]->ttype) &&
           evd_wire_same_type (f->elem[1], d->elem[1]->ttype);
  return TRUE;
}

/* The declared type of field `id` of the struct being walked, when the wire's type is the
 * declared one; NULL otherwise (the decoder skips a field of another type unread). */
static const EvdWireSchema *
evd_wire_field_schema (const EvdWireFrame *f, gint16 id, guint8 wire_type)
{
  const EvdWireSchema *st = f->schema;

  for (guint i = 0; st != NULL && i < st->n_fields; i++)
    if (st->fields[i].id == id)
      return st->fields[i].type->ttype == wire_type ? st->fields[i].type : NULL;
  return NULL;
}

/* Once the header names the method, the args struct gets its declared schema. */
static void
evd_wire_bind_schema (EvdWireScanner *s, const guint8 *name)
{
  const guint8 *colon;
  gsize len = s->name_len;

  if (s->schema_for == NULL || s->depth == 0)
    return;
  colon = memchr (name, ':', len);
  if (colon != NULL) {
    len -= (gsize) (colon + 1 - name);
    name = colon + 1;
  }
  s->stack[0].schema = s->schema_for ((const char *) name, len);
}

/* ---------------------------------------------------------------------------------------
 * The stack */

static EvdWireStatus
evd_wire_push (EvdWireScanner *s, guint8 kind, guint8 e0, guint8 e1, guint32 left)
{
  EvdWireFrame *f;

  if (s->depth >= s->max_depth)
    return evd_wire_fail (s, "nesting deeper than the depth limit");
  f = &s->stack[s->depth++];
  memset (f, 0, sizeof *f);
  f->kind = kind;
  f->elem[0] = e0;
  f->elem[1] = e1;
  f->left = left;
  f->schema = s->next_schema;
  s->next_schema = NULL;
  if (f->schema != NULL && left > 0 && !evd_wire_elems_declared (f))
    return evd_wire_fail (s, "container elements are not of the type the IDL declares");
  return EVD_WIRE_OK;
}

/* Once name, type and seqid are known, the args (or result) struct opens at depth 1. */
static EvdWireStatus
evd_wire_header_done (EvdWireScanner *s, guint8 type, gint32 seqid, gsize name_len,
                      gsize body_offset)
{
  s->header_ok = TRUE;
  s->type = type;
  s->seqid = seqid;
  s->name_len = name_len;
  s->body_offset = body_offset;
  s->pos = body_offset;
  s->depth = 0;
  return evd_wire_push (s, EVD_FRAME_STRUCT, EVD_T_STOP, EVD_T_STOP, 0);
}

/* Strings and containers: a length that is negative, or whose smallest encoding would pass
 * max_len, is refused before any of its bytes are awaited. */
static EvdWireStatus
evd_wire_check_size (EvdWireScanner *s, gint32 n, gsize start, guint per_item,
                     const char *negative, const char *too_big)
{
  if (n < 0)
    return evd_wire_fail (s, negative);
  if ((guint64) start + (guint64) n * per_item > s->max_len)
    return evd_wire_fail (s, too_big);
  return EVD_WIRE_OK;
}

static EvdWireStatus
evd_wire_check_string (EvdWireScanner *s, gint32 n, gsize start)
{
  return evd_wire_check_size (s, n, start, 1, "string length is negative",
                              "string longer than the message could hold");
}

static EvdWireStatus
evd_wire_check_container (EvdWireScanner *s, gint32 n, gsize start, guint per_item)
{
  return evd_wire_check_size (s, n, start, per_item, "container size is negative",
                              "container size larger than the message could hold");
}

/* Shared value readers. */

/* Fixed-size scalars: their size is their minimum size. */
static EvdWireStatus
evd_wire_fixed (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  guint64 end = (guint64) s->pos + evd_wire_ops (s)->min_size[type];
  EvdWireStatus st = evd_wire_want (s, len, end);

  (void) data;
  if (st == EVD_WIRE_OK)
    s->pos = (gsize) end;
  return st;
}

/* A struct value takes no bytes of its own: its fields and STOP are walked in its frame. */
static EvdWireStatus
evd_wire_open_struct (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  (void) data;
  (void) len;
  (void) type;
  return evd_wire_push (s, EVD_FRAME_STRUCT, EVD_T_STOP, EVD_T_STOP, 0);
}

/* ---------------------------------------------------------------------------------------
 * Binary protocol tokens */

static EvdWireStatus
evd_wire_binary_header (EvdWireScanner *s, const guint8 *data, gsize len)
{
  gint32 name_len;
  guint64 end;
  EvdWireStatus st;

  /* Judge the bytes already here, so garbage is refused without waiting for 12 bytes. The
   * third byte of the version word is unused; like c_glib, it is ignored. A limit too small
   * for any header is judged first, so the verdict does not depend on how bytes arrive. */
  if (s->max_len < EVD_BINARY_HEADER_MIN)
    return evd_wire_want (s, len, EVD_BINARY_HEADER_MIN);
  if ((len >= 1 && data[0] != EVD_BINARY_VERSION_HI)
      || (len >= 2 && data[1] != EVD_BINARY_VERSION_LO))
    return evd_wire_fail (s, "not a strict binary protocol message (bad version)");
  if (len >= 4 && !evd_wire_msg_type_ok (data[3]))
    return evd_wire_fail (s, "unknown message type");
  if (len < 8)
    return evd_wire_want (s, len, EVD_BINARY_HEADER_MIN);
  name_len = evd_wire_be32 (data + 4);
  if (name_len < 0)
    return evd_wire_fail (s, "message name length is negative");
  end = (guint64) EVD_BINARY_HEADER_MIN + (guint64) name_len;
  if (end > s->max_len)
    return evd_wire_fail (s, "message name longer than the length limit allows");
  if ((st = evd_wire_want (s, len, end)) != EVD_WIRE_OK)
    return st;
  return evd_wire_header_done (s, data[3], evd_wire_be32 (data + 8 + name_len),
                               (gsize) name_len, (gsize) end);
}

/* type(1) id(2), or a lone STOP byte that closes the struct. */
static EvdWireStatus
evd_wire_binary_field (EvdWireScanner *s, const guint8 *data, gsize len, EvdWireFrame *f)
{
  EvdWireStatus st = evd_wire_want (s, len, (guint64) s->pos + 1);
  guint8 type;

  if (st != EVD_WIRE_OK)
    return st;
  type = data[s->pos];
  if (type == EVD_T_STOP) {
    s->pos++;
    s->depth--;
    return EVD_WIRE_OK;
  }
  if (!evd_wire_type_ok (evd_wire_ops (s), type))
    return evd_wire_fail (s, "unknown field type");
  if ((st = evd_wire_want (s, len, (guint64) s->pos + 3)) != EVD_WIRE_OK)
    return st;
  f->pending = evd_wire_field_schema (f, (gint16) ((data[s->pos + 1] << 8) | data[s->pos + 2]),
                                      type);
  s->pos += 3;
  f->elem[0] = type;
  return EVD_WIRE_OK;
}

/* i32 length, then the bytes: one token, so a resumed walk never splits a string. */
static EvdWireStatus
evd_wire_binary_string (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  gsize start = s->pos + 4;
  gint32 n;
  EvdWireStatus st;

  (void) type;
  if ((st = evd_wire_want (s, len, start)) != EVD_WIRE_OK)
    return st;
  n = evd_wire_be32 (data + s->pos);
  if ((st = evd_wire_check_string (s, n, start)) != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_want (s, len, (guint64) start + (guint32) n)) != EVD_WIRE_OK)
    return st;
  s->pos = start + (guint32) n;
  return EVD_WIRE_OK;
}

/* etype(1) size(4); sets are lists on the wire. */
static EvdWireStatus
evd_wire_binary_list (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  const EvdWireOps *ops = evd_wire_ops (s);
  gsize start = s->pos + 5;
  guint8 elem;
  gint32 n;
  EvdWireStatus st;

  (void) type;
  if ((st = evd_wire_want (s, len, start)) != EVD_WIRE_OK)
    return st;
  elem = data[s->pos];
  if (!evd_wire_type_ok (ops, elem))
    return evd_wire_fail (s, "unknown list or set element type");
  n = evd_wire_be32 (data + s->pos + 1);
  if ((st = evd_wire_check_container (s, n, start, ops->min_size[elem])) != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_push (s, EVD_FRAME_LIST, elem, EVD_T_STOP, (guint32) n)) != EVD_WIRE_OK)
    return st;
  s->pos = start;
  return EVD_WIRE_OK;
}

/* ktype(1) vtype(1) size(4). */
static EvdWireStatus
evd_wire_binary_map (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  const EvdWireOps *ops = evd_wire_ops (s);
  gsize start = s->pos + 6;
  guint8 k, v;
  gint32 n;
  EvdWireStatus st;

  (void) type;
  if ((st = evd_wire_want (s, len, start)) != EVD_WIRE_OK)
    return st;
  k = data[s->pos];
  v = data[s->pos + 1];
  if (!evd_wire_type_ok (ops, k) || !evd_wire_type_ok (ops, v))
    return evd_wire_fail (s, "unknown map key or value type");
  n = evd_wire_be32 (data + s->pos + 2);
  st = evd_wire_check_container (s, n, start, (guint) ops->min_size[k] + ops->min_size[v]);
  if (st != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_push (s, EVD_FRAME_MAP, k, v, (guint32) n)) != EVD_WIRE_OK)
    return st;
  s->pos = start;
  return EVD_WIRE_OK;
}

/* ---------------------------------------------------------------------------------------
 * Compact protocol tokens */

/* Compact type nibbles as TTypes; 0 marks a code that is not a value type (STOP, UUID and
 * the unassigned 14, 15 are refused). Both bool codes mean bool. */
static const guint8 evd_wire_compact_ttype[16] = {
  0,           EVD_T_BOOL,   EVD_T_BOOL,   EVD_T_BYTE, EVD_T_I16,  EVD_T_I32,
  EVD_T_I64,   EVD_T_DOUBLE, EVD_T_STRING, EVD_T_LIST, EVD_T_SET,  EVD_T_MAP,
  EVD_T_STRUCT, 0,           0,            0,
};

guint8
evd_wire_compact_type (guint8 nibble)
{
  return nibble < G_N_ELEMENTS (evd_wire_compact_ttype) ? evd_wire_compact_ttype[nibble] : 0;
}

#define EVD_COMPACT_BOOL_TRUE 1
#define EVD_COMPACT_BOOL_FALSE 2

/* 0x82, version|type<<5, varint seqid, varint name length, name. */
static EvdWireStatus
evd_wire_compact_header (EvdWireScanner *s, const guint8 *data, gsize len)
{
  gsize p = 2;
  gint32 seqid, name_len;
  EvdWireStatus st;

  if (s->max_len < EVD_COMPACT_HEADER_MIN)
    return evd_wire_want (s, len, EVD_COMPACT_HEADER_MIN);
  if (len >= 1 && data[0] != EVD_COMPACT_ID)
    return evd_wire_fail (s, "not a compact protocol message");
  if (len >= 2 && (data[1] & EVD_COMPACT_VERSION_MASK) != EVD_COMPACT_VERSION)
    return evd_wire_fail (s, "unsupported compact protocol version");
  if (len >= 2 && !evd_wire_msg_type_ok (data[1] >> EVD_COMPACT_TYPE_SHIFT))
    return evd_wire_fail (s, "unknown message type");
  if (len < 2)
    return evd_wire_want (s, len, EVD_COMPACT_HEADER_MIN);
  if ((st = evd_wire_varint32 (s, data, len, &p, &seqid)) == EVD_WIRE_OK)
    st = evd_wire_varint32 (s, data, len, &p, &name_len);
  if (st == EVD_WIRE_NEED_MORE)
    s->need = MAX (s->need, EVD_COMPACT_HEADER_MIN);
  if (st != EVD_WIRE_OK)
    return st;
  if (name_len < 0)
    return evd_wire_fail (s, "message name length is negative");
  if ((guint64) p + (guint32) name_len > s->max_len)
    return evd_wire_fail (s, "message name longer than the length limit allows");
  if ((st = evd_wire_want (s, len, (guint64) p + (guint32) name_len)) != EVD_WIRE_OK)
    return st;
  return evd_wire_header_done (s, data[1] >> EVD_COMPACT_TYPE_SHIFT, seqid, (gsize) name_len,
                               p + (guint32) name_len);
}

/* A field header; as in c_glib, a zero type nibble is STOP whatever the high nibble says.
 * A zero high nibble means the id follows as a zigzag varint; otherwise it holds the id's
 * delta from the struct's previous field (last_fid), which the schema check needs. */
static EvdWireStatus
evd_wire_compact_field (EvdWireScanner *s, const guint8 *data, gsize len, EvdWireFrame *f)
{
  EvdWireStatus st = evd_wire_want (s, len, (guint64) s->pos + 1);
  gsize p = s->pos + 1;
  gint32 id;
  guint code;

  if (st != EVD_WIRE_OK)
    return st;
  code = data[s->pos] & 0x0f;
  if (code == EVD_T_STOP) {
    s->pos = p;
    s->depth--;
    return EVD_WIRE_OK;
  }
  if (evd_wire_compact_ttype[code] == 0)
    return evd_wire_fail (s, "unknown field type");
  if ((data[s->pos] >> 4) == 0) {
    if ((st = evd_wire_varint32 (s, data, len, &p, &id)) != EVD_WIRE_OK)
      return st;
    id = (gint32) (((guint32) id >> 1) ^ (0u - ((guint32) id & 1)));  /* zigzag */
  } else {
    id = f->last_fid + (data[s->pos] >> 4);
  }
  s->pos = p;
  f->last_fid = (gint16) id;
  f->pending = evd_wire_field_schema (f, (gint16) id, evd_wire_compact_ttype[code]);
  /* A bool field's value is its type code: nothing more to read. */
  if (code != EVD_COMPACT_BOOL_TRUE && code != EVD_COMPACT_BOOL_FALSE)
    f->elem[0] = evd_wire_compact_ttype[code];
  return EVD_WIRE_OK;
}

/* i16 and i32 are zigzag varints of at most 5 bytes, i64 of at most 10. */
static EvdWireStatus
evd_wire_compact_int (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  gsize p = s->pos;
  guint32 v;
  EvdWireStatus st = evd_wire_varint (s, data, len, &p, type == EVD_T_I64 ? 10 : 5, &v);

  if (st == EVD_WIRE_OK)
    s->pos = p;
  return st;
}

static EvdWireStatus
evd_wire_compact_string (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  gsize p = s->pos;
  gint32 n;
  EvdWireStatus st;

  (void) type;
  if ((st = evd_wire_varint32 (s, data, len, &p, &n)) != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_check_string (s, n, p)) != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_want (s, len, (guint64) p + (guint32) n)) != EVD_WIRE_OK)
    return st;
  s->pos = p + (guint32) n;
  return EVD_WIRE_OK;
}

/* size<<4 | etype when size < 15, else 0xF0 | etype followed by a varint size. */
static EvdWireStatus
evd_wire_compact_list (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  gsize p = s->pos + 1;
  guint8 elem;
  gint32 n;
  EvdWireStatus st;

  (void) type;
  if ((st = evd_wire_want (s, len, p)) != EVD_WIRE_OK)
    return st;
  elem = evd_wire_compact_ttype[data[s->pos] & 0x0f];
  if (elem == 0)
    return evd_wire_fail (s, "unknown list or set element type");
  n = data[s->pos] >> 4;
  if (n == 15 && (st = evd_wire_varint32 (s, data, len, &p, &n)) != EVD_WIRE_OK)
    return st;
  st = evd_wire_check_container (s, n, p, evd_wire_ops (s)->min_size[elem]);
  if (st != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_push (s, EVD_FRAME_LIST, elem, EVD_T_STOP, (guint32) n)) != EVD_WIRE_OK)
    return st;
  s->pos = p;
  return EVD_WIRE_OK;
}

/* The kv-type byte after a non-empty map's size. */
static EvdWireStatus
evd_wire_compact_map_types (EvdWireScanner *s, const guint8 *data, gsize len, gsize *p,
                            guint8 *k, guint8 *v)
{
  EvdWireStatus st = evd_wire_want (s, len, (guint64) *p + 1);

  if (st != EVD_WIRE_OK)
    return st;
  *k = evd_wire_compact_ttype[data[*p] >> 4];
  *v = evd_wire_compact_ttype[data[*p] & 0x0f];
  if (*k == 0 || *v == 0)
    return evd_wire_fail (s, "unknown map key or value type");
  (*p)++;
  return EVD_WIRE_OK;
}

/* varint size, then key<<4 | value types only when the map is not empty. */
static EvdWireStatus
evd_wire_compact_map (EvdWireScanner *s, const guint8 *data, gsize len, guint8 type)
{
  const EvdWireOps *ops = evd_wire_ops (s);
  gsize p = s->pos;
  guint8 k = EVD_T_STOP, v = EVD_T_STOP;
  gint32 n;
  EvdWireStatus st;

  (void) type;
  if ((st = evd_wire_varint32 (s, data, len, &p, &n)) != EVD_WIRE_OK)
    return st;
  if (n < 0)
    return evd_wire_check_container (s, n, p, 1);
  if (n > 0 && (st = evd_wire_compact_map_types (s, data, len, &p, &k, &v)) != EVD_WIRE_OK)
    return st;
  st = evd_wire_check_container (s, n, p, (guint) ops->min_size[k] + ops->min_size[v]);
  if (st != EVD_WIRE_OK)
    return st;
  if ((st = evd_wire_push (s, EVD_FRAME_MAP, k, v, (guint32) n)) != EVD_WIRE_OK)
    return st;
  s->pos = p;
  return EVD_WIRE_OK;
}

/* ---------------------------------------------------------------------------------------
 * The protocols. UUID (binary 16, compact 13) is absent: c_glib 0.17 cannot read it. */

static const EvdWireOps evd_wire_binary_ops = {
  .header = evd_wire_binary_header,
  .field = evd_wire_binary_field,
  .value = {
    [EVD_T_BOOL] = evd_wire_fixed,   [EVD_T_BYTE] = evd_wire_fixed,
    [EVD_T_DOUBLE] = evd_wire_fixed, [EVD_T_I16] = evd_wire_fixed,
    [EVD_T_I32] = evd_wire_fixed,    [EVD_T_I64] = evd_wire_fixed,
    [EVD_T_STRING] = evd_wire_binary_string, [EVD_T_STRUCT] = evd_wire_open_struct,
    [EVD_T_MAP] = evd_wire_binary_map, [EVD_T_SET] = evd_wire_binary_list,
    [EVD_T_LIST] = evd_wire_binary_list,
  },
  /* A map header is 6 bytes even when empty. */
  .min_size = {
    [EVD_T_BOOL] = 1, [EVD_T_BYTE] = 1, [EVD_T_DOUBLE] = 8, [EVD_T_I16] = 2,
    [EVD_T_I32] = 4,  [EVD_T_I64] = 8,  [EVD_T_STRING] = 4, [EVD_T_STRUCT] = 1,
    [EVD_T_MAP] = 6,  [EVD_T_SET] = 5,  [EVD_T_LIST] = 5,
  },
};

static const EvdWireOps evd_wire_compact_ops = {
  .header = evd_wire_compact_header,
  .field = evd_wire_compact_field,
  .value = {
    [EVD_T_BOOL] = evd_wire_fixed,        [EVD_T_BYTE] = evd_wire_fixed,
    [EVD_T_DOUBLE] = evd_wire_fixed,      [EVD_T_I16] = evd_wire_compact_int,
    [EVD_T_I32] = evd_wire_compact_int,   [EVD_T_I64] = evd_wire_compact_int,
    [EVD_T_STRING] = evd_wire_compact_string, [EVD_T_STRUCT] = evd_wire_open_struct,
    [EVD_T_MAP] = evd_wire_compact_map,   [EVD_T_SET] = evd_wire_compact_list,
    [EVD_T_LIST] = evd_wire_compact_list,
  },
  /* Bools in containers take a byte each; bool fields live in their header instead. */
  .min_size = {
    [EVD_T_BOOL] = 1, [EVD_T_BYTE] = 1, [EVD_T_DOUBLE] = 8, [EVD_T_I16] = 1,
    [EVD_T_I32] = 1,  [EVD_T_I64] = 1,  [EVD_T_STRING] = 1, [EVD_T_STRUCT] = 1,
    [EVD_T_MAP] = 1,  [EVD_T_SET] = 1,  [EVD_T_LIST] = 1,
  },
};

static const EvdWireOps *
evd_wire_ops (const EvdWireScanner *s)
{
  return s->proto == EVD_PROTO_COMPACT ? &evd_wire_compact_ops : &evd_wire_binary_ops;
}

/* ---------------------------------------------------------------------------------------
 * The walk: one token per step, the innermost open struct or container deciding what comes
 * next. */

static EvdWireStatus
evd_wire_step_struct (EvdWireScanner *s, const EvdWireOps *ops, const guint8 *data, gsize len,
                      EvdWireFrame *f)
{
  guint8 type = f->elem[0];
  EvdWireStatus st;

  if (type == EVD_T_STOP)
    return ops->field (s, data, len, f);
  s->next_schema = f->pending;
  st = ops->value[type] (s, data, len, type);
  s->next_schema = NULL;
  if (st == EVD_WIRE_OK)
    f->elem[0] = EVD_T_STOP;
  return st;
}

static EvdWireStatus
evd_wire_step_list (EvdWireScanner *s, const EvdWireOps *ops, const guint8 *data, gsize len,
                    EvdWireFrame *f)
{
  EvdWireStatus st;

  if (f->left == 0) {
    s->depth--;
    return EVD_WIRE_OK;
  }
  s->next_schema = f->schema ? f->schema->elem[0] : NULL;
  st = ops->value[f->elem[0]] (s, data, len, f->elem[0]);
  s->next_schema = NULL;
  if (st == EVD_WIRE_OK)
    f->left--;
  return st;
}

static EvdWireStatus
evd_wire_step_map (EvdWireScanner *s, const EvdWireOps *ops, const guint8 *data, gsize len,
                   EvdWireFrame *f)
{
  guint8 type = f->elem[f->phase];
  EvdWireStatus st;

  if (f->left == 0) {
    s->depth--;
    return EVD_WIRE_OK;
  }
  s->next_schema = f->schema ? f->schema->elem[f->phase] : NULL;
  st = ops->value[type] (s, data, len, type);
  s->next_schema = NULL;
  if (st != EVD_WIRE_OK)
    return st;
  if (f->phase == 1)
    f->left--;
  f->phase ^= 1;
  return EVD_WIRE_OK;
}

/* Steps until the args struct closes or a token is missing or malformed. Every step either
 * consumes bytes, opens a frame (bounded by max_depth) or closes one, so this ends. */
static EvdWireStatus
evd_wire_walk (EvdWireScanner *s, const EvdWireOps *ops, const guint8 *data, gsize len)
{
  EvdWireStatus st = EVD_WIRE_OK;

  while (st == EVD_WIRE_OK && s->depth > 0) {
    /* The pointer stays valid when a step pushes: the stack is a fixed array. */
    EvdWireFrame *f = &s->stack[s->depth - 1];

    if (f->kind == EVD_FRAME_STRUCT)
      st = evd_wire_step_struct (s, ops, data, len, f);
    else if (f->kind == EVD_FRAME_LIST)
      st = evd_wire_step_list (s, ops, data, len, f);
    else
      st = evd_wire_step_map (s, ops, data, len, f);
  }
  if (st == EVD_WIRE_OK)
    s->msg_len = s->pos;
  return st;
}

/* Binary puts the name before the seqid, compact after it, right before the body. */
static gsize
evd_wire_name_offset (const EvdWireScanner *s)
{
  return s->proto == EVD_PROTO_BINARY ? 8 : s->body_offset - s->name_len;
}

void
evd_wire_scanner_init (EvdWireScanner *s, EvdProto proto, gsize max_len, guint max_depth)
{
  /* Not the stack: 2 KiB per message, and every frame is cleared when it is pushed. */
  memset (s, 0, G_STRUCT_OFFSET (EvdWireScanner, stack));
  s->proto = proto;
  s->max_len = max_len;
  /* The args struct itself needs one level; the stack has room for EVD_WIRE_MAX_DEPTH. */
  s->max_depth = CLAMP (max_depth, 1, EVD_WIRE_MAX_DEPTH);
}

EvdWireStatus
evd_wire_scanner_header (EvdWireScanner *s, const guint8 *data, gsize len)
{
  EvdWireStatus st;

  g_return_val_if_fail (s->proto == EVD_PROTO_BINARY || s->proto == EVD_PROTO_COMPACT,
                        EVD_WIRE_BAD_HEADER);
  /* A verdict is final: the same bytes would give it again. */
  if (s->reason != NULL)
    return s->header_ok ? EVD_WIRE_OK : EVD_WIRE_BAD_HEADER;
  if (!s->header_ok) {
    if ((st = evd_wire_ops (s)->header (s, data, len)) != EVD_WIRE_OK)
      return st;
    evd_wire_bind_schema (s, data + evd_wire_name_offset (s));
  }
  /* The buffer may have moved since the header was read. */
  s->name = data + evd_wire_name_offset (s);
  return EVD_WIRE_OK;
}

EvdWireStatus
evd_wire_scanner_feed (EvdWireScanner *s, const guint8 *data, gsize len)
{
  EvdWireStatus st;

  if (s->reason != NULL)
    return s->header_ok ? EVD_WIRE_BAD_BODY : EVD_WIRE_BAD_HEADER;
  if ((st = evd_wire_scanner_header (s, data, len)) != EVD_WIRE_OK)
    return st;
  if (s->msg_len != 0)
    return EVD_WIRE_OK;
  /* Should len ever shrink below pos, every token reader's first bounds check says
   * NEED_MORE: nothing is read past len. */
  return evd_wire_walk (s, evd_wire_ops (s), data, len);
}

/* ---- Framing. ---- */

EvdWireStatus
evd_wire_frame_length (const guint8 *data, gsize len, gint32 max_frame, gint32 *frame_len,
                       const char **reason)
{
  gint32 n;

  if (len < 4)
    return EVD_WIRE_NEED_MORE;
  n = (gint32) evd_wire_be32 (data);
  *frame_len = n;
  if (n < 0)
    return evd_wire_detect_bad (reason, "the frame length is negative");
  if (n == 0)
    return evd_wire_detect_bad (reason, "the frame is empty");
  if (n > max_frame)
    return evd_wire_detect_bad (reason, "the frame is longer than max_frame_bytes");
  return EVD_WIRE_OK;
}

EvdWireStatus
evd_wire_scanner_frame (EvdWireScanner *s, const guint8 *data, gsize frame_len)
{
  EvdWireStatus st = evd_wire_scanner_feed (s, data, frame_len);

  /* Bytes short of max_len (= frame_len) are NEED_MORE to the walk; here none will come. */
  if (st == EVD_WIRE_NEED_MORE)
    return evd_wire_fail (s, s->header_ok ? "the message is longer than its frame"
                                          : "the message header is longer than its frame");
  if (st == EVD_WIRE_OK && s->msg_len != frame_len)
    return evd_wire_fail (s, "the frame holds bytes after the message");
  return st;
}

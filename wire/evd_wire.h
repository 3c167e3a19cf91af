/* evd_wire: the Thrift wire formats as evdal sees them before anything is decoded.
 *
 * A connection's first bytes say which transport (framed or unframed) and protocol (binary
 * or compact) it speaks; evd_wire_detect() reads them. Then every message passes through an
 * EvdWireScanner before c_glib may decode it: the scanner walks the message with an explicit
 * stack (no recursion, no allocation), checks every length against the bytes actually present
 * and every nesting against a depth limit, and so finds where an unframed message ends. This
 * is what protects evdal from c_glib 0.17's traps: its protocols allocate a string's or a
 * container's declared size before reading it, and its skip() recurses without limit.
 *
 * The scanner is resumable: when the bytes run out in the middle of a message it stops at the
 * start of the token it could not finish and says EVD_WIRE_NEED_MORE; calling it again with
 * the same message start and more bytes continues from there, so an unframed message that
 * arrives in many pieces is walked once, not once per piece.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  EVD_PROTO_BINARY = 1,
  EVD_PROTO_COMPACT = 2,
} EvdProto;

typedef struct {
  gboolean framed;
  EvdProto proto;
} EvdWireFormat;

typedef enum {
  EVD_WIRE_OK,         /* a whole, well-formed message */
  EVD_WIRE_NEED_MORE,  /* well-formed so far; more bytes are needed */
  EVD_WIRE_BAD_HEADER, /* not a message header we speak: the stream cannot be trusted, close */
  EVD_WIRE_BAD_BODY,   /* header is fine (name, type, seqid known), the rest is malformed */
} EvdWireStatus;

/* Thrift message types (TMessageType). */
enum {
  EVD_MSG_CALL = 1,
  EVD_MSG_REPLY = 2,
  EVD_MSG_EXCEPTION = 3,
  EVD_MSG_ONEWAY = 4,
};

/* Bytes evd_wire_detect() needs to decide. */
#define EVD_WIRE_DETECT_BYTES 6

/* Decides the wire format from a connection's first bytes.
 * Framed: a 4-byte big-endian length, then 0x80 0x01 (binary) or 0x82 (compact).
 * Unframed binary starts with 0x80 0x01, unframed compact with 0x82 and a version 1 byte.
 * Returns NEED_MORE while fewer than EVD_WIRE_DETECT_BYTES are given, BAD_HEADER when the
 * bytes are none of these (with *reason set to a static string), OK otherwise. */
EvdWireStatus evd_wire_detect (const guint8 *data, gsize len, EvdWireFormat *fmt,
                               const char **reason);

/* ---- Framing: the framed transport's 4-byte big-endian length, then exactly one message. */

/* Reads the length that starts a frame, from data[0..len). NEED_MORE with fewer than 4
 * bytes. BAD_HEADER when the length is outside 1..max_frame (zero, negative read as a signed
 * int32, or over the limit), with *reason a static string; OK otherwise. *frame_len gets the
 * declared length (signed, for the log) whenever 4 bytes are there. Nothing of the declared
 * size may be awaited or allocated before this said OK: that is the whole point of the limit. */
EvdWireStatus evd_wire_frame_length (const guint8 *data, gsize len, gint32 max_frame,
                                     gint32 *frame_len, const char **reason);

/* Deepest nesting of structs and containers a message may have; the args struct of a call is
 * depth 1. evdal's deepest real message is about 6; 64 leaves room for any sane IDL while
 * bounding the stack of the scanner and of c_glib's recursive decoders. */
#define EVD_WIRE_MAX_DEPTH 64

/* ---- The schema: what the IDL declares, as far as decoding safety needs it. ----
 *
 * With a schema, the walk also checks that every container of a declared field carries the
 * declared element types (a field of another wire type is fine: decoders skip it). c_glib's
 * generated decoders never compare them, and a map whose values are not what the IDL says
 * makes them misparse, fail half-way and leak; such a message is BAD_BODY instead. The tables
 * are generated from the IDL at build time (cmake/gen_schema.py). */

/* Thrift's type codes (the binary protocol's). */
enum {
  EVD_WIRE_T_BOOL = 2,
  EVD_WIRE_T_BYTE = 3,
  EVD_WIRE_T_DOUBLE = 4,
  EVD_WIRE_T_I16 = 6,
  EVD_WIRE_T_I32 = 8,
  EVD_WIRE_T_I64 = 10,
  EVD_WIRE_T_STRING = 11,
  EVD_WIRE_T_STRUCT = 12,
  EVD_WIRE_T_MAP = 13,
  EVD_WIRE_T_SET = 14,
  EVD_WIRE_T_LIST = 15,
};

/* A compact type nibble as the binary protocol's type code (EVD_WIRE_T_*; both bool codes
 * are bool); 0 for a nibble that is not a value type. */
guint8 evd_wire_compact_type (guint8 nibble);

typedef struct _EvdWireSchema EvdWireSchema;

typedef struct {
  gint16 id;
  const EvdWireSchema *type;
} EvdWireSchemaField;

struct _EvdWireSchema {
  guint8 ttype;                       /* EVD_WIRE_T_* */
  const EvdWireSchema *elem[2];       /* list/set: elem[0]; map: key, value */
  const EvdWireSchemaField *fields;   /* struct */
  guint n_fields;
};

/* The schema of a method's args struct, or NULL when it has none (unknown method). `method`
 * is not NUL-terminated and has no "Service:" prefix. */
typedef const EvdWireSchema *(*EvdWireSchemaFn) (const char *method, gsize len);

/* The generated tables of DataAccess (cmake/gen_schema.py): each method's args struct, and
 * its result struct (what a reply carries: success or a declared exception), for clients
 * that validate replies before c_glib reads them. */
const EvdWireSchema *evd_wire_schema_args (const char *method, gsize len);
const EvdWireSchema *evd_wire_schema_result (const char *method, gsize len);

typedef struct {
  const EvdWireSchema *schema;   /* what this struct or container is declared as, or NULL */
  const EvdWireSchema *pending;  /* struct: the declared type of the field being read */
  guint8 kind;      /* frame kind: struct, list/set or map (private values) */
  guint8 elem[2];   /* element types: list elem in [0]; map key [0], value [1] */
  guint8 phase;     /* map: next is key (0) or value (1) */
  guint32 left;     /* containers: elements (map: pairs) still to walk */
  gint16 last_fid;  /* compact structs: the previous field id, for delta ids */
  guint8 bool_pending; /* compact: a bool field whose value lives in its header */
} EvdWireFrame;

typedef struct {
  /* set by evd_wire_scanner_init */
  EvdProto proto;
  gsize max_len;     /* the message may not span more bytes than this */
  guint max_depth;   /* <= EVD_WIRE_MAX_DEPTH */
  EvdWireSchemaFn schema_for;  /* optional, set after init: check args against the IDL */

  /* filled as soon as the message header is read */
  gboolean header_ok;
  const guint8 *name; /* points into the data of the last call; not NUL-terminated */
  gsize name_len;
  guint8 type;        /* EVD_MSG_* */
  gint32 seqid;
  gsize body_offset;  /* where the args (or result) struct starts */

  /* result */
  gsize msg_len;      /* EVD_WIRE_OK: the message's length in bytes */
  gsize need;         /* EVD_WIRE_NEED_MORE: the total length known to be needed (> len) */
  const char *reason; /* EVD_WIRE_BAD_*: a static, human-readable reason */

  /* private: where the walk stands */
  gsize pos;
  guint depth;
  const EvdWireSchema *next_schema;  /* for the frame the next push opens */
  EvdWireFrame stack[EVD_WIRE_MAX_DEPTH];
} EvdWireScanner;

void evd_wire_scanner_init (EvdWireScanner *s, EvdProto proto, gsize max_len, guint max_depth);

/* Walks the message that starts at data[0]; `len` bytes are present. Call again with the
 * same start (the buffer may have moved) and a larger len after EVD_WIRE_NEED_MORE. A
 * message that would pass max_len is BAD_HEADER when its header itself is too long, else
 * BAD_BODY. A string, binary or container length that is negative, or larger than the bytes
 * left up to max_len could hold, is BAD_BODY at once: nothing waits for 2 GiB that can never
 * be allowed. */
EvdWireStatus evd_wire_scanner_feed (EvdWireScanner *s, const guint8 *data, gsize len);

/* Reads only the message header (name, type, seqid, body_offset), so that a caller can
 * decide from it alone (to shed a call under overload, say) before the body is walked;
 * evd_wire_scanner_feed() then goes on from there. OK once the header is read, even if the
 * body has since been found bad; NEED_MORE or BAD_HEADER as for feed. */
EvdWireStatus evd_wire_scanner_header (EvdWireScanner *s, const guint8 *data, gsize len);

/* Walks the message that must fill a whole frame: data[0..frame_len) is the frame's payload,
 * all of it present, and the scanner was initialised with max_len = frame_len (its header may
 * already have been read with evd_wire_scanner_header). Never NEED_MORE: a header that does
 * not fit in the frame is BAD_HEADER; a body that would need more bytes than the frame, or a
 * message that ends before the frame does (bytes after it, which no client writes), is
 * BAD_BODY. A framed BAD_BODY costs only its call: the frame says where the next one starts. */
EvdWireStatus evd_wire_scanner_frame (EvdWireScanner *s, const guint8 *data, gsize frame_len);

G_END_DECLS

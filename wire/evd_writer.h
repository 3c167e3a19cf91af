/* evd_writer: Thrift's binary and compact encodings written straight into a byte array, for
 * the replies that are on every request's path (a fetch's response and its rows).
 *
 * c_glib writes a struct through a GObject per struct and value and a virtual call per token;
 * a fetch reply with a few dozen values then costs more in object setup and teardown than
 * the lookups themselves (docs/BENCHMARKS.md). The writer is the other way: plain calls that
 * append bytes. Its output is byte for byte what c_glib's TBinaryProtocol (strict) and
 * TCompactProtocol write for the same tokens; tests/unit/test_writer.c proves it against
 * c_glib for every token kind and for whole fetch replies.
 *
 * Usage mirrors a protocol's write calls without the ends that write nothing: struct_begin,
 * then per field field_begin and its value (a bool field is one call, field_bool), then
 * struct_end (which writes the stop). Writing cannot fail: the array grows.
 */
#pragma once

#include <glib.h>

#include "evd_wire.h"

G_BEGIN_DECLS

/* Nesting of structs the writer tracks (compact field ids are relative to the previous field
 * of the same struct). A fetch reply nests 5 deep. */
#define EVD_WRITER_MAX_DEPTH 16

typedef struct {
  GByteArray *out;
  guint cap;                               /* bytes of out known to be allocated */
  EvdProto proto;
  guint depth;
  gint16 last_fid;                         /* compact: previous field id of this struct */
  gint16 saved_fid[EVD_WRITER_MAX_DEPTH];  /* compact: of the enclosing structs */
} EvdWriter;

/* Appends to `out` from its current end. */
void evd_writer_init (EvdWriter *w, GByteArray *out, EvdProto proto);

/* A message header: name, EVD_MSG_* type, seqid (strict binary, or compact version 1). */
void evd_writer_message_begin (EvdWriter *w, const char *name, guint8 type, gint32 seqid);

void evd_writer_struct_begin (EvdWriter *w);
/* Writes the field stop and closes the struct. */
void evd_writer_struct_end (EvdWriter *w);
/* `ttype` is the binary protocol's type code (EVD_WIRE_T_*); not for bools. */
void evd_writer_field_begin (EvdWriter *w, guint8 ttype, gint16 id);
void evd_writer_field_bool (EvdWriter *w, gint16 id, gboolean value);

void evd_writer_list_begin (EvdWriter *w, guint8 elem_ttype, guint32 size);
void evd_writer_map_begin (EvdWriter *w, guint8 key_ttype, guint8 value_ttype, guint32 size);

void evd_writer_i32 (EvdWriter *w, gint32 v);
void evd_writer_i64 (EvdWriter *w, gint64 v);
void evd_writer_double (EvdWriter *w, double v);
/* A string or binary of `len` bytes (< 2^31). */
void evd_writer_binary (EvdWriter *w, const void *data, gsize len);
/* A NUL-terminated string; NULL is written as "" (as c_glib does). */
void evd_writer_string (EvdWriter *w, const char *s);

/* For an encoder that writes a run of tokens itself (a table's rows: hundreds of tokens
 * whose calls and room checks cost more than their bytes): room for at most `max` more bytes
 * at the end, the array's length unmoved; then evd_writer_commit() with the end of what was
 * written there. Nothing else may write between the two. The run must leave the writer's
 * struct nesting as it found it (whole structs only), since the writer does not see it. */
guint8 *evd_writer_room (EvdWriter *w, gsize max);
void evd_writer_commit (EvdWriter *w, const guint8 *end);

G_END_DECLS

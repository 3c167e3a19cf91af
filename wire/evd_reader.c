/* evd_reader: skipping values (see evd_reader.h for the reader). */
#include "evd_reader.h"

gboolean
evd_reader_skip (EvdReader *r, guint8 ttype)
{
  const guint8 *data;
  guint32 len, n;
  guint8 a = 0, b = 0;
  gint16 saved, id;

  switch (ttype) {
  case EVD_WIRE_T_BOOL: evd_reader_bool (r); break;
  case EVD_WIRE_T_BYTE: evd_reader_byte (r); break;
  case EVD_WIRE_T_I16:
  case EVD_WIRE_T_I32: evd_reader_i32 (r); break;
  case EVD_WIRE_T_I64: evd_reader_i64 (r); break;
  case EVD_WIRE_T_DOUBLE: evd_reader_double (r); break;
  case EVD_WIRE_T_STRING: evd_reader_binary (r, &data, &len); break;
  case EVD_WIRE_T_STRUCT:
    if (!evd_reader_enter (r, &saved))
      return FALSE;
    while (evd_reader_field (r, &a, &id))
      evd_reader_skip (r, a);
    evd_reader_leave (r, saved);
    break;
  case EVD_WIRE_T_LIST:
  case EVD_WIRE_T_SET:
    n = evd_reader_list (r, &a);
    if (++r->depth > EVD_WIRE_MAX_DEPTH)
      return evd_reader_fail (r, "nested too deep");
    for (guint32 i = 0; i < n && !r->bad; i++)
      evd_reader_skip (r, a);
    r->depth--;
    break;
  case EVD_WIRE_T_MAP:
    n = evd_reader_map (r, &a, &b);
    if (++r->depth > EVD_WIRE_MAX_DEPTH)
      return evd_reader_fail (r, "nested too deep");
    for (guint32 i = 0; i < n && !r->bad; i++) {
      evd_reader_skip (r, a);
      evd_reader_skip (r, b);
    }
    r->depth--;
    break;
  default:
    return evd_reader_fail (r, "an unknown type");
  }
  return !r->bad;
}

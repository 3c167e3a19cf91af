/* test_response: evd_response_fit (issue 13): a fetch reply kept within its byte bound by
 * failing, in request order, the calls whose rows do not fit, in both protocols. The encoding
 * itself is compared with c_glib's in test_writer. */
#include <string.h>

#include "evd_backend.h"
#include "evd_response.h"

#define BLOB 1000

static EvdRows *
blob_rows (void)
{
  static const char *const cols[] = { "b" };
  static guint8 bytes[BLOB];
  EvdRows *rows = evd_rows_new (1, cols);

  evd_rows_add_blob (rows, bytes, sizeof bytes);
  return rows;
}

/* The reply's size (the result struct only: the caller's room excludes the header). */
static gsize
written (EvdProto proto, const EvdResponseResult *res, guint n)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  EvdWriter w;

  evd_writer_init (&w, out, proto);
  evd_response_write (&w, "req", res, n, 1);
  return out->len;
}

static void
test_fit (gconstpointer data)
{
  EvdProto proto = GPOINTER_TO_INT (data);
  g_autoptr (EvdRows) rows = blob_rows ();
  static const char *const keys[] = { "c0", "c1", "c2", "c3", "c4" };
  EvdResponseResult res[5];
  gsize one, room;

  for (guint i = 0; i < 5; i++)
    res[i] = (EvdResponseResult) { .key = keys[i], .rows = rows };
  /* Room for everything: nothing measured, nothing cut. */
  g_assert_cmpuint (evd_response_fit (proto, written (proto, res, 5) + 1000, "req", res, 5), ==,
                    0);
  for (guint i = 0; i < 5; i++)
    g_assert_true (res[i].rows == rows);
  /* Room for three tables and two errors: c3 and c4 fail, in request order. */
  one = written (proto, res, 1);
  room = 3 * one + 2 * 300;
  g_assert_cmpuint (evd_response_fit (proto, room, "req", res, 5), ==, 2);
  for (guint i = 0; i < 5; i++) {
    g_assert_true (i < 3 ? res[i].rows == rows : res[i].rows == NULL);
    if (i >= 3) {
      g_assert_cmpint (res[i].error_kind, ==, EVDAL_ERROR_KIND_BACKEND);
      g_assert_nonnull (strstr (res[i].error_message, "reply too large"));
    }
  }
  g_assert_cmpuint (written (proto, res, 5), <=, room);
  /* No room at all: every table fails, the errors are still written. */
  for (guint i = 0; i < 5; i++)
    res[i] = (EvdResponseResult) { .key = keys[i], .rows = rows };
  g_assert_cmpuint (evd_response_fit (proto, 0, "req", res, 5), ==, 5);
  g_assert_cmpuint (written (proto, res, 5), <, BLOB);
}

/* A traced reply: each result carries a span (the backend's "kind:lookup" name, marks) that
 * the cheap bound must count too. It left them out, so a reply with a large table and a
 * span whose backend name is long passed the cheap check and went out past its room. */
static void
test_fit_counts_spans (gconstpointer data)
{
  EvdProto proto = GPOINTER_TO_INT (data);
  g_autoptr (EvdRows) rows = blob_rows ();
  const EvdResponseSpan span = {
    0, 100, "postgresql:orders_of_the_customer_by_region_and_by_day_of_week",
    EVD_MARK_COALESCED | EVD_MARK_RETRIED | EVD_MARK_HEDGED, 3,
  };
  EvdResponseResult res = { .key = "orders", .rows = rows, .span = &span };
  gsize room = written (proto, &res, 1) - 1;

  /* One byte short: the table cannot stay. */
  g_assert_cmpuint (evd_response_fit (proto, room, "req", &res, 1), ==, 1);
  g_assert_null (res.rows);
  g_assert_cmpuint (written (proto, &res, 1), <=, room);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/response/fit/binary", GINT_TO_POINTER (EVD_PROTO_BINARY), test_fit);
  g_test_add_data_func ("/response/fit/compact", GINT_TO_POINTER (EVD_PROTO_COMPACT), test_fit);
  g_test_add_data_func ("/response/fit/spans/binary", GINT_TO_POINTER (EVD_PROTO_BINARY),
                        test_fit_counts_spans);
  g_test_add_data_func ("/response/fit/spans/compact", GINT_TO_POINTER (EVD_PROTO_COMPACT),
                        test_fit_counts_spans);
  return g_test_run ();
}

/* Unit tests of evd_otlp: the [tracing] keys and their problems, the span JSON (the protobuf
 * JSON mapping, read back with json-glib), and the queue that drops and counts when full. */
#include <signal.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "evd_otlp.h"

static EvdConfig *
load (const char *text)
{
  return evd_config_load_data (text, strlen (text), "t.conf", "/etc/evdal");
}

static void
test_config_defaults_and_problems (void)
{
  g_autoptr (EvdConfig) cfg = load ("[server]\n");
  g_autoptr (EvdOtlp) o = evd_otlp_new (cfg, NULL);
  const EvdOtlpConfig *c = evd_otlp_config (o);
  g_autoptr (EvdConfig) bad = NULL;
  g_autoptr (EvdOtlp) ob = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_null (c->otlp_endpoint);
  g_assert_cmpfloat (c->sample_ratio, ==, 0.01);
  g_assert_cmpstr (c->service_name, ==, "evdal");
  g_assert_cmpint (c->batch_max_spans, ==, 512);
  g_assert_cmpint (c->batch_max_age_ms, ==, 1000);
  g_assert_cmpint (c->queue_max_spans, ==, 8192);
  g_assert_cmpint (c->export_timeout_ms, ==, 2000);
  g_assert_false (evd_otlp_exporting (o));
  g_assert_true (evd_config_check (cfg, NULL));

  bad = load ("[server]\n[tracing]\notlp_endpoint = udp://x\nsample_ratio = 1.5\n"
              "queue_max_spans = 0\nsample_rate = 1\n");
  ob = evd_otlp_new (bad, NULL);
  g_assert_false (evd_config_check (bad, &error));
  g_assert_nonnull (strstr (error->message, "t.conf:3: [tracing] otlp_endpoint: \"udp://x\" is "
                                            "not an http:// or https:// URL"));
  g_assert_nonnull (strstr (error->message, "t.conf:4: [tracing] sample_ratio: \"1.5\" is not a "
                                            "number from 0 to 1"));
  g_assert_nonnull (strstr (error->message, "t.conf:5: [tracing] queue_max_spans:"));
  g_assert_nonnull (strstr (error->message, "t.conf:6: [tracing] sample_rate: unknown key"));
  g_assert_null (evd_otlp_config (ob)->otlp_endpoint);
}

static const guint8 trace_id[16] = { 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                     0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36 };
static const guint8 span_a[8] = { 0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7 };
static const guint8 span_b[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

/* Two spans written one after the other make a JSON list's items with every field as the
 * mapping wants it: hex ids, kinds as integers, int64s (times, intValue) as strings. */
static void
test_span_json_is_the_protobuf_mapping (void)
{
  g_autoptr (GString) out = g_string_new (NULL);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *doc = NULL;
  JsonArray *spans;
  JsonObject *a, *b, *attr;
  JsonArray *values;
  static const char *const marks[] = { "cache_hit", "retried:2" };
  EvdOtlpSpan root = { trace_id, span_a, NULL, "k=v", "DataAccess/fetch", EVD_OTLP_KIND_SERVER,
                       1764748800000000, 1764748800012345 };
  EvdOtlpSpan child = { trace_id, span_b, span_a, NULL, "lookup \"q\"\n", EVD_OTLP_KIND_CLIENT,
                        1764748800000100, 1764748800012000 };

  evd_otlp_span_begin (out, &root);
  evd_otlp_attr_string (out, "rpc.system", "apache_thrift");
  evd_otlp_span_end (out, NULL);
  evd_otlp_span_begin (out, &child);
  evd_otlp_attr_int (out, "evdal.rows", -42);
  evd_otlp_attr_string (out, "evdal.error_kind", "TIMEOUT");
  evd_otlp_attr_strings (out, "evdal.marks", marks, G_N_ELEMENTS (marks));
  evd_otlp_span_end (out, "timed out \"badly\"");
  doc = g_strdup_printf ("[%s]", out->str);
  g_assert_true (json_parser_load_from_data (parser, doc, -1, &error));
  g_assert_no_error (error);
  spans = json_node_get_array (json_parser_get_root (parser));
  g_assert_cmpuint (json_array_get_length (spans), ==, 2);
  a = json_array_get_object_element (spans, 0);
  b = json_array_get_object_element (spans, 1);
  g_assert_cmpstr (json_object_get_string_member (a, "traceId"), ==,
                   "4bf92f3577b34da6a3ce929d0e0e4736");
  g_assert_cmpstr (json_object_get_string_member (a, "spanId"), ==, "00f067aa0ba902b7");
  g_assert_false (json_object_has_member (a, "parentSpanId"));
  g_assert_cmpstr (json_object_get_string_member (a, "traceState"), ==, "k=v");
  g_assert_cmpint (json_object_get_int_member (a, "kind"), ==, 2);
  g_assert_cmpstr (json_object_get_string_member (a, "startTimeUnixNano"), ==,
                   "1764748800000000000");
  g_assert_cmpstr (json_object_get_string_member (a, "endTimeUnixNano"), ==,
                   "1764748800012345000");
  g_assert_cmpuint (json_object_get_size (json_object_get_object_member (a, "status")), ==, 0);
  attr = json_array_get_object_element (json_object_get_array_member (a, "attributes"), 0);
  g_assert_cmpstr (json_object_get_string_member (attr, "key"), ==, "rpc.system");
  g_assert_cmpstr (json_object_get_string_member (json_object_get_object_member (attr, "value"),
                                                  "stringValue"), ==, "apache_thrift");

  g_assert_cmpstr (json_object_get_string_member (b, "parentSpanId"), ==, "00f067aa0ba902b7");
  g_assert_cmpstr (json_object_get_string_member (b, "spanId"), ==, "0102030405060708");
  g_assert_cmpstr (json_object_get_string_member (b, "name"), ==, "lookup \"q\"\n");
  g_assert_cmpint (json_object_get_int_member (b, "kind"), ==, 3);
  attr = json_array_get_object_element (json_object_get_array_member (b, "attributes"), 0);
  g_assert_cmpstr (json_object_get_string_member (json_object_get_object_member (attr, "value"),
                                                  "intValue"), ==, "-42");
  attr = json_array_get_object_element (json_object_get_array_member (b, "attributes"), 2);
  g_assert_cmpstr (json_object_get_string_member (attr, "key"), ==, "evdal.marks");
  values = json_object_get_array_member (json_object_get_object_member (
    json_object_get_object_member (attr, "value"), "arrayValue"), "values");
  g_assert_cmpuint (json_array_get_length (values), ==, 2);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (values, 1),
                                                  "stringValue"), ==, "retried:2");
  g_assert_cmpint (json_object_get_int_member (json_object_get_object_member (b, "status"),
                                               "code"), ==, 2);
  g_assert_cmpstr (json_object_get_string_member (json_object_get_object_member (b, "status"),
                                                  "message"), ==, "timed out \"badly\"");
}

static double
sample (const char *text, const char *name)
{
  g_autofree char *pattern = g_strdup_printf ("\n%s ", name);
  const char *at = strstr (text, pattern);

  g_assert_nonnull (at);
  return g_ascii_strtod (at + strlen (pattern), NULL);
}

/* Spans beyond queue_max_spans are dropped and counted at once, never waited for; a shutdown
 * with a collector that is not there drops (and counts) what was queued, within its bound. */
static void
test_queue_drops_when_full (void)
{
  g_autoptr (EvdMetrics) m = evd_metrics_new ();
  /* a port nothing listens on (1, tcpmux, is not served on the test machines); batches would
   * leave only after 10 minutes or 1000 spans: nothing is sent before the end */
  g_autoptr (EvdConfig) cfg = load ("[server]\n[tracing]\notlp_endpoint = http://127.0.0.1:1/\n"
                                    "queue_max_spans = 10\nbatch_max_spans = 1000\n"
                                    "batch_max_age_ms = 600000\nexport_timeout_ms = 2000\n");
  EvdOtlp *o = evd_otlp_new (cfg, m);
  g_autofree char *text = NULL;
  gint64 t0;

  g_assert_true (evd_config_check (cfg, NULL));
  evd_otlp_start (o);
  g_assert_true (evd_otlp_exporting (o));
  evd_otlp_submit (o, g_string_new ("{}"), 4);
  evd_otlp_submit (o, g_string_new ("{}"), 4);
  t0 = g_get_monotonic_time ();
  evd_otlp_submit (o, g_string_new ("{}"), 4);  /* 12 > 10: dropped */
  evd_otlp_submit (o, g_string_new ("{}"), 2);  /* 10: kept */
  g_assert_cmpint (g_get_monotonic_time () - t0, <, G_USEC_PER_SEC);
  evd_otlp_count_invalid (o);
  text = evd_metrics_render (m);
  g_assert_cmpfloat (sample (text, "evdal_tracing_spans_dropped_total"), ==, 4);
  g_assert_cmpfloat (sample (text, "evdal_tracing_queued_spans"), ==, 10);
  g_assert_cmpfloat (sample (text, "evdal_tracing_invalid_context_total"), ==, 1);
  g_clear_pointer (&text, g_free);
  /* the flush finds no collector: 10 more dropped, and the thread ends within its bound */
  g_test_expect_message ("evdal", G_LOG_LEVEL_WARNING,
                         "tracing: export to http://127.0.0.1:1/ failed: *; 10 spans dropped*");
  t0 = g_get_monotonic_time ();
  evd_otlp_free (o);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 10 * G_USEC_PER_SEC);
  g_test_assert_expected_messages ();
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* A peer that closes first must not kill the test with SIGPIPE (evdal ignores it too). */
  signal (SIGPIPE, SIG_IGN);
  g_test_add_func ("/otlp/config-defaults-and-problems", test_config_defaults_and_problems);
  g_test_add_func ("/otlp/span-json-is-the-protobuf-mapping",
                   test_span_json_is_the_protobuf_mapping);
  g_test_add_func ("/otlp/queue-drops-when-full", test_queue_drops_when_full);
  return g_test_run ();
}

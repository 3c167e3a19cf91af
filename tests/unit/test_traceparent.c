/* Unit tests of evd_traceparent: every W3C Trace Context rule evdal applies, ids, sampling. */
#include <string.h>

#include "evd_traceparent.h"

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void
test_valid_version_00 (void)
{
  EvdTraceparent tp;
  char back[EVD_TRACEPARENT_LEN + 1], hex[33];

  g_assert_true (evd_traceparent_parse (TP_OK, &tp));
  evd_traceparent_hex (tp.trace_id, 16, hex);
  g_assert_cmpstr (hex, ==, "4bf92f3577b34da6a3ce929d0e0e4736");
  evd_traceparent_hex (tp.span_id, 8, hex);
  g_assert_cmpstr (hex, ==, "00f067aa0ba902b7");
  g_assert_cmpint (tp.flags, ==, EVD_TRACE_FLAG_SAMPLED);
  evd_traceparent_format (tp.trace_id, tp.span_id, tp.flags, back);
  g_assert_cmpstr (back, ==, TP_OK);
  g_assert_true (evd_traceparent_parse (
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &tp));
  g_assert_cmpint (tp.flags, ==, 0);
}

static void
test_version_ff_is_invalid (void)
{
  EvdTraceparent tp;

  g_assert_false (evd_traceparent_parse (
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp));
}

static void
test_all_zero_ids_are_invalid (void)
{
  EvdTraceparent tp;

  g_assert_false (evd_traceparent_parse (
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", &tp));
  g_assert_false (evd_traceparent_parse (
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", &tp));
}

static void
test_wrong_lengths_are_invalid (void)
{
  static const char *const bad[] = {
    "",
    "00",
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",     /* trace id 31 */
    "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",   /* trace id 33 */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",     /* span id 15 */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",   /* span id 17 */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",     /* flags 1 */
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",   /* flags 3 */
    TP_OK "-",                                                     /* v00 with more */
    TP_OK "-what",
    " " TP_OK,                                                     /* white space */
    TP_OK " ",
    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",    /* not dashes */
  };
  EvdTraceparent tp;

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_test_message ("%s", bad[i]);
    g_assert_false (evd_traceparent_parse (bad[i], &tp));
  }
  g_assert_false (evd_traceparent_parse (NULL, &tp));
}

static void
test_uppercase_and_non_hex_are_invalid (void)
{
  static const char *const bad[] = {
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
    "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
    "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  };
  EvdTraceparent tp;

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_test_message ("%s", bad[i]);
    g_assert_false (evd_traceparent_parse (bad[i], &tp));
  }
}

/* A later version is read as far as version 00 goes: ids and the sampled flag; what follows
 * must start with '-'. Flags other than sampled are not carried on. */
static void
test_future_versions_read_as_00 (void)
{
  EvdTraceparent tp;
  char hex[33];

  g_assert_true (evd_traceparent_parse (
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp));
  g_assert_cmpint (tp.flags, ==, 1);
  g_assert_true (evd_traceparent_parse (
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds", &tp));
  evd_traceparent_hex (tp.trace_id, 16, hex);
  g_assert_cmpstr (hex, ==, "4bf92f3577b34da6a3ce929d0e0e4736");
  g_assert_cmpint (tp.flags, ==, 1);
  g_assert_false (evd_traceparent_parse (
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what", &tp));
  g_assert_false (evd_traceparent_parse (
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", &tp));
  g_assert_true (evd_traceparent_parse (
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &tp));
  g_assert_cmpint (tp.flags, ==, 1);
  g_assert_true (evd_traceparent_parse (
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", &tp));
  g_assert_cmpint (tp.flags, ==, 0);
}

static void
test_tracestate_rules (void)
{
  g_autoptr (GString) many = g_string_new (NULL);
  g_autoptr (GString) long_value = g_string_new ("k=");

  g_assert_true (evd_traceparent_tracestate_valid (""));
  g_assert_true (evd_traceparent_tracestate_valid ("rojo=00f067aa0ba902b7"));
  g_assert_true (evd_traceparent_tracestate_valid ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
  g_assert_true (evd_traceparent_tracestate_valid (" rojo=1 ,, congo=2 "));  /* OWS, empty */
  g_assert_true (evd_traceparent_tracestate_valid ("tenant1@vendor=x"));
  g_assert_true (evd_traceparent_tracestate_valid ("a_b-c*d/e=va lue!"));
  g_assert_false (evd_traceparent_tracestate_valid (NULL));
  g_assert_false (evd_traceparent_tracestate_valid ("Rojo=1"));          /* uppercase key */
  g_assert_false (evd_traceparent_tracestate_valid ("1abc=1"));          /* digit first */
  g_assert_false (evd_traceparent_tracestate_valid ("rojo"));            /* no value */
  g_assert_false (evd_traceparent_tracestate_valid ("rojo="));           /* empty value */
  g_assert_false (evd_traceparent_tracestate_valid ("rojo=a=b"));        /* '=' in value */
  g_assert_false (evd_traceparent_tracestate_valid ("rojo=1,rojo=2"));   /* key twice */
  g_assert_false (evd_traceparent_tracestate_valid ("@vendor=x"));       /* empty tenant */
  g_assert_false (evd_traceparent_tracestate_valid ("t@=x"));            /* empty system */
  g_assert_false (evd_traceparent_tracestate_valid ("t@vendorvendorvendor=x")); /* system 18 */
  g_assert_false (evd_traceparent_tracestate_valid ("t@v@w=x"));
  g_assert_false (evd_traceparent_tracestate_valid ("rojo=\x01"));
  /* 32 members pass, 33 do not */
  for (int i = 0; i < 32; i++)
    g_string_append_printf (many, "%sk%d=v", i ? "," : "", i);
  g_assert_true (evd_traceparent_tracestate_valid (many->str));
  g_string_append (many, ",k32=v");
  g_assert_false (evd_traceparent_tracestate_valid (many->str));
  /* 512 characters pass, 513 do not (a value of 256 is itself too long: several members) */
  g_string_truncate (many, 0);
  for (int i = 0; many->len < EVD_TRACESTATE_MAX; i++)
    g_string_append_printf (many, "%sk%02d=%s", i ? "," : "", i,
                            "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
  g_string_truncate (many, EVD_TRACESTATE_MAX);
  g_assert_true (evd_traceparent_tracestate_valid (many->str));
  g_string_append_c (many, 'v');
  g_assert_false (evd_traceparent_tracestate_valid (many->str));
  for (int i = 0; i < 257; i++)
    g_string_append_c (long_value, 'x');
  g_assert_false (evd_traceparent_tracestate_valid (long_value->str));  /* value 257 */
}

static void
test_ratio_sampling (void)
{
  guint8 id[16] = { 0 };
  guint hits = 0;

  g_assert_false (evd_traceparent_ratio_sampled (id, 0.0));
  g_assert_true (evd_traceparent_ratio_sampled (id, 1.0));
  g_assert_true (evd_traceparent_ratio_sampled (id, 0.001));  /* low part 0: always below */
  memset (id + 8, 0xff, 8);  /* 2^63 - 1 once the top bit is cleared */
  g_assert_false (evd_traceparent_ratio_sampled (id, 0.999));
  g_assert_true (evd_traceparent_ratio_sampled (id, 1.0));
  /* about the ratio over random ids; the first 8 bytes do not matter */
  for (int i = 0; i < 100000; i++) {
    evd_traceparent_random_id (id, 16);
    hits += evd_traceparent_ratio_sampled (id, 0.1);
  }
  g_assert_cmpuint (hits, >, 9000);
  g_assert_cmpuint (hits, <, 11000);
}

static gpointer
make_ids (gpointer data)
{
  GPtrArray *out = data;

  for (int i = 0; i < 1000; i++) {
    guint8 *id = g_malloc (8);
    evd_traceparent_random_id (id, 8);
    g_ptr_array_add (out, id);
  }
  return NULL;
}

/* Ids of two threads made at once do not repeat (each thread has its own generator). */
static void
test_ids_differ_across_threads (void)
{
  g_autoptr (GPtrArray) a = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) b = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GHashTable) seen = g_hash_table_new (g_int64_hash, g_int64_equal);
  GThread *ta = g_thread_new ("a", make_ids, a), *tb = g_thread_new ("b", make_ids, b);

  g_thread_join (ta);
  g_thread_join (tb);
  for (guint i = 0; i < 1000; i++) {
    g_assert_true (g_hash_table_add (seen, a->pdata[i]));
    g_assert_true (g_hash_table_add (seen, b->pdata[i]));
  }
}

/* A fetch's context: joined when valid (parent-based sampling, tracestate kept), a trace of
 * its own when invalid or absent (ratio-based), invalid values reported. */
static void
test_context (void)
{
  EvdTraceContext c;
  char hex[33];

  g_assert_true (evd_traceparent_context (&c, TP_OK, "rojo=1", 0.0));
  g_assert_true (c.remote);
  g_assert_true (c.sampled);  /* the parent's flag, whatever the ratio */
  g_assert_cmpstr (c.tracestate, ==, "rojo=1");
  evd_traceparent_hex (c.trace_id, 16, hex);
  g_assert_cmpstr (hex, ==, "4bf92f3577b34da6a3ce929d0e0e4736");
  evd_traceparent_hex (c.parent_id, 8, hex);
  g_assert_cmpstr (hex, ==, "00f067aa0ba902b7");
  evd_traceparent_hex (c.span_id, 8, hex);
  g_assert_cmpstr (hex, !=, "00f067aa0ba902b7");

  g_assert_true (evd_traceparent_context (
    &c, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", NULL, 1.0));
  g_assert_true (c.remote);
  g_assert_false (c.sampled);  /* unsampled parent: not exported, even at ratio 1 */

  g_assert_false (evd_traceparent_context (&c, TP_OK, "Bad=1", 1.0));  /* bad tracestate */
  g_assert_true (c.remote);
  g_assert_null (c.tracestate);

  g_assert_false (evd_traceparent_context (&c, "garbage", "rojo=1", 1.0));
  g_assert_false (c.remote);
  g_assert_true (c.sampled);  /* a trace of its own, by the ratio */
  g_assert_null (c.tracestate);

  g_assert_true (evd_traceparent_context (&c, NULL, "rojo=1", 0.0));
  g_assert_false (c.remote);
  g_assert_false (c.sampled);
  g_assert_null (c.tracestate);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/traceparent/valid-version-00", test_valid_version_00);
  g_test_add_func ("/traceparent/version-ff-is-invalid", test_version_ff_is_invalid);
  g_test_add_func ("/traceparent/all-zero-ids-are-invalid", test_all_zero_ids_are_invalid);
  g_test_add_func ("/traceparent/wrong-lengths-are-invalid", test_wrong_lengths_are_invalid);
  g_test_add_func ("/traceparent/uppercase-and-non-hex-are-invalid",
                   test_uppercase_and_non_hex_are_invalid);
  g_test_add_func ("/traceparent/future-versions-read-as-00", test_future_versions_read_as_00);
  g_test_add_func ("/traceparent/tracestate-rules", test_tracestate_rules);
  g_test_add_func ("/traceparent/ratio-sampling", test_ratio_sampling);
  g_test_add_func ("/traceparent/ids-differ-across-threads", test_ids_differ_across_threads);
  g_test_add_func ("/traceparent/context", test_context);
  return g_test_run ();
}

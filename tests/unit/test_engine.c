/* test_engine: the fan-out engine (handlers/evd_engine.c) on a loop of its own, with the
 * static, delay and fault backends.
 *
 * Each fetch is a real DataAccess.fetch message, written in call order with evd_writer, run
 * through the scanner and evd_rpc into evd_engine_fetch on a loop that no thread runs: the
 * test drives it with evd_loop_run_pending, and with event_base_loop where a timer must fire.
 * The reply is the bytes a client would get, decoded by c_glib. After each fetch the test
 * checks that nothing is left holding on: the fetch's reference on its request (taken in
 * evd_engine_fetch, given back when the fetch is freed), the backend calls outstanding and the
 * fetches in flight. A fetch freed twice is a double free that the sanitizer build reports.
 */
#include <event2/thread.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_binary_protocol.h>

#include "evd_engine.h"
#include "evd_transport.h"
#include "evd_writer.h"

/* ---- What the fault backend logs (at info level) when it is cancelled. ---- */

static gint fault_cancels;
static gint refusals;         /* warnings: calls refused before they ran */

static GLogWriterOutput
test_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
  for (gsize i = 0; i < n_fields; i++) {
    if (strcmp (fields[i].key, "MESSAGE") != 0 || fields[i].length != -1)
      continue;
    if (strstr (fields[i].value, "fault backend: call cancelled") != NULL)
      g_atomic_int_inc (&fault_cancels);
    else if ((level & G_LOG_LEVEL_WARNING) && strstr (fields[i].value, " refused: ") != NULL)
      g_atomic_int_inc (&refusals);
  }
  /* Counted, not printed: only what the tests do not expect is shown. */
  if (level & (G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_WARNING))
    return G_LOG_WRITER_HANDLED;
  return g_log_writer_default (level, fields, n_fields, data);
}

/* ---- The engine under test. ---- */

static const char test_config[] =
  "[server]\n"
  "deadline_ms = 5000\n"
  "max_calls = 16\n"
  "[lookup flags]\n"
  "backend = static\n"
  "columns = flag, enabled\n"
  "row.1 = checkout, 1\n"
  "row.2 = dark, 0\n"
  "[lookup nap]\n"
  "backend = delay\n"
  "delay_ms = 5\n"
  "[lookup broken]\n"
  "backend = fault\n"
  "mode = fail\n"
  "[lookup hang]\n"
  "backend = fault\n"
  "mode = hang\n"
  "[lookup twice]\n"
  "backend = fault\n"
  "mode = double\n"
  "delay_ms = 0\n"
  "[lookup late]\n"
  "backend = fault\n"
  "mode = late\n"
  "delay_ms = 40\n"
  "[lookup thread]\n"
  "backend = fault\n"
  "mode = thread\n"
  "delay_ms = 1\n";

static EvdLoop *loop;
static EvdMetrics *metrics;
static EvdEngineCounters counters;
static EvdEngine *engine;
static struct event *keepalive;

/* How often `lookup` has run (every outcome). */
static guint64
test_executions (const char *lookup)
{
  EvdMetricsLookup *s = evd_metrics_lookup (metrics, lookup);
  guint64 n = 0;

  for (guint i = 0; i < EVD_ERROR_KIND_N; i++)
    n += s->calls[i];
  return n;
}

/* ---- Requests, written in the order given. ---- */

typedef struct {
  const char *key;
  const char *lookup;
  gint64 delay_ms;      /* the delay_ms param; < 0: not given */
  gint32 timeout_ms;    /* 0: not given */
  gboolean critical;
} TestCall;

#define NO_DELAY (-1)

static GByteArray *
test_encode_fetch (gint32 seqid, gboolean trace, const TestCall *calls, guint n)
{
  GByteArray *out = g_byte_array_new ();
  EvdWriter w;

  evd_writer_init (&w, out, EVD_PROTO_BINARY);
  evd_writer_message_begin (&w, "fetch", EVD_MSG_CALL, seqid);
  evd_writer_struct_begin (&w);                          /* args */
  evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
  evd_writer_struct_begin (&w);                          /* FetchRequest */
  if (trace) {
    evd_writer_field_begin (&w, EVD_WIRE_T_STRUCT, 1);
    evd_writer_struct_begin (&w);                        /* RequestContext */
    evd_writer_field_bool (&w, 4, TRUE);
    evd_writer_struct_end (&w);
  }
  evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
  evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, n);
  for (guint i = 0; i < n; i++) {
    evd_writer_string (&w, calls[i].key);
    evd_writer_struct_begin (&w);                        /* LookupCall */
    evd_writer_field_begin (&w, EVD_WIRE_T_STRING, 1);
    evd_writer_string (&w, calls[i].lookup);
    if (calls[i].delay_ms >= 0) {
      evd_writer_field_begin (&w, EVD_WIRE_T_MAP, 2);
      evd_writer_map_begin (&w, EVD_WIRE_T_STRING, EVD_WIRE_T_STRUCT, 1);
      evd_writer_string (&w, "delay_ms");
      evd_writer_struct_begin (&w);                      /* Value */
      evd_writer_field_begin (&w, EVD_WIRE_T_I64, 2);
      evd_writer_i64 (&w, calls[i].delay_ms);
      evd_writer_struct_end (&w);
    }
    if (calls[i].timeout_ms != 0) {
      evd_writer_field_begin (&w, EVD_WIRE_T_I32, 3);
      evd_writer_i32 (&w, calls[i].timeout_ms);
    }
    if (calls[i].critical)
      evd_writer_field_bool (&w, 4, TRUE);
    evd_writer_struct_end (&w);
  }
  evd_writer_struct_end (&w);
  evd_writer_struct_end (&w);
  return out;
}

/* ---- A fetch through evd_rpc into the engine. ---- */

typedef struct {
  EvdCall *call;
  EvdFetchRequest *request;   /* our own reference, to see the fetch give back its own */
  gint outstanding_at_reply;  /* backend calls not completed when the reply was written */
  GByteArray *reply;
  gboolean done;
  gint64 started_us;
} TestRun;

static TestRun *current;

static void
test_handler_fetch (EvdCall *call, gpointer args, gpointer data)
{
  (void) data;
  current->request = evd_request_ref (args);
  evd_engine_fetch (engine, call, args);
}

static gpointer
test_decode_fetch (EvdProto proto, const guint8 *body, gsize len, GError **error)
{
  return evd_request_decode (proto, body, len, error);
}

static const EvdMethod methods[] = {
  { .name = "fetch", .handler = test_handler_fetch, .decode = test_decode_fetch,
    .free_args = (GDestroyNotify) evd_request_unref },
};
static const EvdService service = {
  .name = "DataAccess", .methods = methods, .n_methods = G_N_ELEMENTS (methods),
};

static void
test_on_done (EvdCall *call, gpointer owner)
{
  TestRun *run = owner;
  GByteArray *bytes = evd_call_reply_bytes (call);

  g_assert_false (run->done);
  run->done = TRUE;
  run->outstanding_at_reply = g_atomic_int_get (&counters.outstanding);
  run->reply = g_byte_array_sized_new (bytes->len);
  g_byte_array_append (run->reply, bytes->data, bytes->len);
  evd_call_free (call);
}

/* Starts a fetch; it may be answered before this returns (everything answers at once). */
static TestRun *
test_start (gboolean trace, const TestCall *calls, guint n)
{
  g_autoptr (GByteArray) msg = test_encode_fetch (7, trace, calls, n);
  EvdWireFormat fmt = { FALSE, EVD_PROTO_BINARY };
  TestRun *run = g_new0 (TestRun, 1);
  EvdWireScanner scan;

  evd_wire_scanner_init (&scan, fmt.proto, msg->len, EVD_WIRE_MAX_DEPTH);
  g_assert_cmpint (evd_wire_scanner_header (&scan, msg->data, msg->len), ==, EVD_WIRE_OK);
  g_assert_cmpint (evd_wire_scanner_feed (&scan, msg->data, msg->len), ==, EVD_WIRE_OK);
  run->call = evd_rpc_prepare (&service, loop, fmt, &scan, msg->data, TRUE);
  evd_call_set_peer (run->call, "test");
  run->started_us = g_get_monotonic_time ();
  current = run;
  evd_call_start (run->call, test_on_done, run);
  current = NULL;
  g_assert_nonnull (run->request);
  return run;
}

/* Runs the loop until `flag` is set: queued posts first, then one pass of libevent (timers,
 * wake-ups from other threads; the keepalive timer makes it wait rather than spin, and come
 * back now and then to see whether it should give up). */
static void
test_drive_until (const gboolean *flag)
{
  gint64 give_up = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;

  for (;;) {
    evd_loop_run_pending (loop);
    if (*flag)
      return;
    g_assert_cmpint (g_get_monotonic_time (), <, give_up);
    event_base_loop (evd_loop_base (loop), EVLOOP_ONCE);
  }
}

static void
test_tick (evutil_socket_t fd, short what, void *arg)
{
  (void) fd;
  (void) what;
  (void) arg;
}

static gboolean
test_nothing_outstanding (void)
{
  return g_atomic_int_get (&counters.outstanding) == 0;
}

/* Drives the loop until every backend call has completed and its reference gone. */
static void
test_drive_until_idle (void)
{
  gint64 give_up = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;

  for (;;) {
    evd_loop_run_pending (loop);
    if (test_nothing_outstanding ())
      break;
    g_assert_cmpint (g_get_monotonic_time (), <, give_up);
    event_base_loop (evd_loop_base (loop), EVLOOP_ONCE);
  }
  evd_loop_run_pending (loop);  /* the backends' references go one post later */
}

/* Everything the fetch held is given back: it was freed (exactly once: a second free is a
 * double free, and a second unref of the request would drop ours). */
static void
test_finish (TestRun *run)
{
  test_drive_until_idle ();
  g_assert_cmpint (g_atomic_int_get (&counters.inflight), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&counters.outstanding), ==, 0);
  g_assert_cmpint (g_atomic_int_get (&run->request->refs), ==, 1);
  evd_request_unref (run->request);
  g_clear_pointer (&run->reply, g_byte_array_unref);
  g_free (run);
}

/* The reply, decoded by c_glib as a client would. */
static evdalDataAccessFetchResult *
test_result (TestRun *run)
{
  g_autoptr (EvdTransport) t = evd_transport_new ();
  g_autoptr (ThriftProtocol) p = g_object_new (THRIFT_TYPE_BINARY_PROTOCOL, "transport", t, NULL);
  evdalDataAccessFetchResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
  g_autofree char *name = NULL;
  ThriftMessageType type;
  gint32 seqid;

  g_assert_true (run->done);
  evd_transport_set_input (t, run->reply->data, run->reply->len);
  g_assert_cmpint (thrift_protocol_read_message_begin (p, &name, &type, &seqid, NULL), >, 0);
  g_assert_cmpstr (name, ==, "fetch");
  g_assert_cmpint (type, ==, T_REPLY);
  g_assert_cmpint (seqid, ==, 7);
  g_assert_cmpint (thrift_struct_read (THRIFT_STRUCT (r), p, NULL), >, 0);
  return r;
}

static evdalLookupResult *
test_lookup_result (evdalDataAccessFetchResult *r, const char *key)
{
  evdalLookupResult *lr;

  g_assert_true (r->__isset_success);
  lr = g_hash_table_lookup (r->success->results, key);
  g_assert_nonnull (lr);
  return lr;
}

/* The first cell of a call's table, as text ("12" for an int). */
static char *
test_first_cell (evdalDataAccessFetchResult *r, const char *key)
{
  evdalLookupResult *lr = test_lookup_result (r, key);
  GPtrArray *row;
  evdalValue *v;

  g_assert_false (lr->__isset_error);
  g_assert_true (lr->__isset_table);
  g_assert_cmpuint (lr->table->rows->len, >=, 1);
  row = g_ptr_array_index (lr->table->rows, 0);
  v = g_ptr_array_index (row, 0);
  if (v->__isset_int_value)
    return g_strdup_printf ("%" G_GINT64_FORMAT, v->int_value);
  g_assert_true (v->__isset_text_value);
  return g_strdup (v->text_value);
}

static void
test_assert_cell (evdalDataAccessFetchResult *r, const char *key, const char *want)
{
  g_autofree char *cell = test_first_cell (r, key);

  g_assert_cmpstr (cell, ==, want);
}

static void
test_assert_error (evdalDataAccessFetchResult *r, const char *key, evdalErrorKind kind)
{
  evdalLookupResult *lr = test_lookup_result (r, key);

  g_assert_true (lr->__isset_error);
  g_assert_false (lr->__isset_table);
  g_assert_cmpint (lr->error->kind, ==, kind);
}

/* ---- Tests. ---- */

/* A static lookup answers inside start(): the whole fetch is done before evd_call_start
 * returns, and nothing but posted references is left for the loop. */
static void
test_static_answers_at_once (void)
{
  static const TestCall calls[] = {
    { "f", "flags", NO_DELAY, 0, FALSE },
  };
  TestRun *run = test_start (FALSE, calls, 1);
  g_autoptr (evdalDataAccessFetchResult) r = NULL;
  evdalLookupResult *lr;

  g_assert_true (run->done);
  r = test_result (run);
  lr = test_lookup_result (r, "f");
  g_assert_cmpuint (lr->table->columns->len, ==, 2);
  g_assert_cmpstr (g_ptr_array_index (lr->table->columns, 0), ==, "flag");
  g_assert_cmpuint (lr->table->rows->len, ==, 2);
  test_assert_cell (r, "f", "checkout");
  test_finish (run);
}

/* Calls naming the same lookup, params and time budget run once and share the answer; a
 * different param value or budget is a run of its own. */
static void
test_identical_calls_run_once (void)
{
  static const TestCall calls[] = {
    { "a", "nap", 3, 0, FALSE }, { "b", "nap", 3, 0, FALSE }, { "c", "nap", 4, 0, FALSE },
    { "d", "nap", 3, 4000, FALSE }, { "e", "flags", NO_DELAY, 0, FALSE },
    { "f", "flags", NO_DELAY, 0, FALSE }, { "g", "nap", 3, 0, FALSE },
  };
  guint64 naps = test_executions ("nap"), flags = test_executions ("flags");
  TestRun *run = test_start (TRUE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;
  evdalLookupResult *a, *b, *g;

  test_drive_until (&run->done);
  r = test_result (run);
  g_assert_cmpuint (test_executions ("nap") - naps, ==, 3);    /* {a,b,g}, c, d */
  g_assert_cmpuint (test_executions ("flags") - flags, ==, 1); /* {e,f} */
  for (guint i = 0; i < G_N_ELEMENTS (calls); i++) {
    g_autofree char *cell = test_first_cell (r, calls[i].key);
    g_autofree char *want = g_strdup_printf ("%" G_GINT64_FORMAT, calls[i].delay_ms);

    g_assert_cmpstr (cell, ==, calls[i].delay_ms >= 0 ? want : "checkout");
  }
  /* Shared: one span for the calls of one run, and a span of their own for the others. */
  a = test_lookup_result (r, "a");
  b = test_lookup_result (r, "b");
  g = test_lookup_result (r, "g");
  g_assert_cmpint (a->span->start_us, ==, b->span->start_us);
  g_assert_cmpint (a->span->end_us, ==, b->span->end_us);
  g_assert_cmpint (a->span->end_us, ==, g->span->end_us);
  g_assert_cmpstr (a->span->backend, ==, "delay:nap");
  test_finish (run);
}

/* Each call stops at its own deadline (the lookup's, the call's, the request's, whichever
 * comes first): one timer moves from one to the next, never firing a slot early. */
static void
test_staggered_deadlines (void)
{
  static const TestCall calls[] = {
    { "slow", "hang", NO_DELAY, 120, FALSE }, { "fast", "hang", NO_DELAY, 30, FALSE },
    { "nap", "nap", 1, 0, FALSE }, { "mid", "hang", NO_DELAY, 60, FALSE },
  };
  gint cancels = g_atomic_int_get (&fault_cancels);
  TestRun *run = test_start (TRUE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;
  evdalLookupResult *fast, *mid, *slow;

  test_drive_until (&run->done);
  r = test_result (run);
  test_assert_error (r, "fast", EVDAL_ERROR_KIND_TIMEOUT);
  test_assert_error (r, "mid", EVDAL_ERROR_KIND_TIMEOUT);
  test_assert_error (r, "slow", EVDAL_ERROR_KIND_TIMEOUT);
  test_assert_cell (r, "nap", "1");
  fast = test_lookup_result (r, "fast");
  mid = test_lookup_result (r, "mid");
  slow = test_lookup_result (r, "slow");
  g_assert_cmpstr (fast->error->message, ==, "lookup hang timed out after 30 ms");
  g_assert_cmpstr (mid->error->message, ==, "lookup hang timed out after 60 ms");
  g_assert_cmpstr (slow->error->message, ==, "lookup hang timed out after 120 ms");
  /* Spans count from the request's start: none ended before its deadline, and they ended in
   * the order of their deadlines. */
  g_assert_cmpint (fast->span->end_us, >=, 30000);
  g_assert_cmpint (mid->span->end_us, >=, 60000);
  g_assert_cmpint (slow->span->end_us, >=, 120000);
  g_assert_cmpint (fast->span->end_us, <=, mid->span->end_us);
  g_assert_cmpint (mid->span->end_us, <=, slow->span->end_us);
  /* Each hanging call was cancelled at its timeout, once. */
  g_assert_cmpint (g_atomic_int_get (&fault_cancels) - cancels, ==, 3);
  test_finish (run);
}

/* A critical call's failure ends the fetch with LookupFailed at once: calls still running
 * are cancelled, and calls after it never start (calls start in key order: evd_request sorts
 * them by key). */
static void
test_critical_failure_cancels_the_rest (void)
{
  static const TestCall calls[] = {
    { "1-waiting", "hang", NO_DELAY, 0, FALSE }, { "2-napping", "nap", 2000, 0, FALSE },
    { "3-must", "broken", NO_DELAY, 0, TRUE }, { "4-never", "hang", NO_DELAY, 4000, FALSE },
  };
  gint cancels = g_atomic_int_get (&fault_cancels);
  guint64 hangs = test_executions ("hang"), naps = test_executions ("nap");
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;

  /* "broken" fails inside its start(): answered before the loop ran at all. */
  g_assert_true (run->done);
  r = test_result (run);
  g_assert_false (r->__isset_success);
  g_assert_true (r->__isset_failed);
  g_assert_cmpstr (r->failed->call, ==, "3-must");
  g_assert_cmpint (r->failed->error->kind, ==, EVDAL_ERROR_KIND_BACKEND);
  g_assert_cmpstr (r->failed->error->message, ==, "injected failure");
  g_assert_cmpint (g_atomic_int_get (&fault_cancels) - cancels, ==, 1);  /* 1-waiting */
  g_assert_cmpuint (test_executions ("hang") - hangs, ==, 2);  /* 1-waiting; 4-never, not started */
  g_assert_cmpuint (test_executions ("nap") - naps, ==, 1);    /* cancelled */
  test_finish (run);
}

/* A call that never started (a critical call before it ended the fetch inside its own
 * start()) took no time: its lookup's latency histogram gets a sample of 0, not the
 * monotonic clock itself (its start time was never set: the sum grew by the machine's
 * uptime, and the +Inf bucket by one, for every such call). */
static void
test_never_started_call_takes_no_time (void)
{
  static const TestCall calls[] = {
    { "1-must", "broken", NO_DELAY, 0, TRUE }, { "2-never", "hang", NO_DELAY, 4000, FALSE },
  };
  EvdMetricsLookup *s = evd_metrics_lookup (metrics, "hang");
  guint64 hangs = test_executions ("hang"), sum = s->latency.sum_us;
  guint64 slowest = s->latency.buckets[EVD_HISTOGRAM_N];
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;

  g_assert_true (run->done);
  r = test_result (run);
  g_assert_true (r->__isset_failed);
  g_assert_cmpstr (r->failed->call, ==, "1-must");
  g_assert_cmpuint (test_executions ("hang") - hangs, ==, 1);  /* counted, cancelled */
  g_assert_cmpuint (s->latency.sum_us - sum, ==, 0);
  g_assert_cmpuint (s->latency.buckets[EVD_HISTOGRAM_N] - slowest, ==, 0);
  test_finish (run);
}

/* A critical call that times out ends the fetch the same way, later, from the timer. */
static void
test_critical_timeout (void)
{
  static const TestCall calls[] = {
    { "other", "hang", NO_DELAY, 0, FALSE }, { "must", "hang", NO_DELAY, 20, TRUE },
  };
  gint cancels = g_atomic_int_get (&fault_cancels);
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;

  g_assert_false (run->done);
  test_drive_until (&run->done);
  r = test_result (run);
  g_assert_true (r->__isset_failed);
  g_assert_cmpstr (r->failed->call, ==, "must");
  g_assert_cmpint (r->failed->error->kind, ==, EVDAL_ERROR_KIND_TIMEOUT);
  g_assert_cmpint (g_atomic_int_get (&fault_cancels) - cancels, ==, 2);
  test_finish (run);
}

/* A failed call that is not critical is that call's error; the others answer. */
static void
test_non_critical_failure (void)
{
  static const TestCall calls[] = {
    { "bad", "broken", NO_DELAY, 0, FALSE }, { "good", "nap", 1, 0, FALSE },
    { "who", "nobody", NO_DELAY, 0, FALSE },
  };
  gint refused = g_atomic_int_get (&refusals);
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;

  g_assert_cmpint (g_atomic_int_get (&refusals) - refused, ==, 1);  /* "who", logged */
  test_drive_until (&run->done);
  r = test_result (run);
  test_assert_error (r, "bad", EVDAL_ERROR_KIND_BACKEND);
  test_assert_error (r, "who", EVDAL_ERROR_KIND_UNKNOWN_LOOKUP);
  test_assert_cell (r, "good", "1");
  test_finish (run);
}

/* The client went away: every running call is cancelled, nothing is answered, and the fetch
 * is freed once the last backend let go. */
static void
test_client_gone_cancels_everything (void)
{
  static const TestCall calls[] = {
    { "h1", "hang", NO_DELAY, 0, FALSE }, { "h2", "hang", NO_DELAY, 3000, FALSE },
    { "n", "nap", 3000, 0, FALSE },
  };
  gint cancels = g_atomic_int_get (&fault_cancels);
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));

  evd_loop_run_pending (loop);
  g_assert_false (run->done);
  g_assert_cmpint (g_atomic_int_get (&counters.outstanding), ==, 3);
  g_assert_cmpint (g_atomic_int_get (&counters.inflight), ==, 1);
  evd_call_abandon (run->call);  /* what the connection does when its client leaves */
  evd_loop_run_pending (loop);
  g_assert_cmpint (g_atomic_int_get (&fault_cancels) - cancels, ==, 2);
  test_drive_until_idle ();
  g_assert_false (run->done);    /* the answer went nowhere */
  test_finish (run);
}

/* A backend that ignores cancel answers after the fetch was answered without it: the answer
 * is dropped, and the fetch (whose memory the call lives in) waits for it before it is
 * freed. */
static void
test_late_completion_after_the_answer (void)
{
  static const TestCall calls[] = {
    { "late", "late", NO_DELAY, 5, FALSE }, { "ok", "flags", NO_DELAY, 0, FALSE },
  };
  gint cancels = g_atomic_int_get (&fault_cancels);
  guint64 lates = test_executions ("late");
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;

  test_drive_until (&run->done);
  r = test_result (run);
  test_assert_error (r, "late", EVDAL_ERROR_KIND_TIMEOUT);
  test_assert_cell (r, "ok", "checkout");
  g_assert_cmpint (g_atomic_int_get (&fault_cancels) - cancels, ==, 1);
  /* Answered while the late call was still out (its timer is due after the timeout's, so it
   * fires after it even when both are due in one pass of a late loop). */
  g_assert_cmpint (run->outstanding_at_reply, ==, 1);
  test_drive_until_idle ();
  /* The late answer was taken (the call completed) but counted once, as the timeout. */
  g_assert_cmpuint (test_executions ("late") - lates, ==, 1);
  test_finish (run);
}

/* A backend that completes twice: the first answer counts, the second is ignored. */
static void
test_double_completion_is_ignored (void)
{
  static const TestCall calls[] = {
    { "x", "twice", NO_DELAY, 0, FALSE }, { "y", "nap", 20, 0, FALSE },
  };
  guint64 twice = test_executions ("twice");
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;
  EvdMetricsLookup *s = evd_metrics_lookup (metrics, "twice");
  guint64 ok = s->calls[0];

  test_drive_until (&run->done);
  r = test_result (run);
  test_assert_cell (r, "x", "first");
  test_assert_cell (r, "y", "20");
  g_assert_cmpuint (test_executions ("twice") - twice, ==, 1);
  g_assert_cmpuint (s->calls[0] - ok, ==, 1);
  test_finish (run);
}

/* A completion from another thread travels to the request's loop. */
static void
test_completion_from_a_thread (void)
{
  static const TestCall calls[] = {
    { "t", "thread", NO_DELAY, 0, FALSE }, { "u", "thread", 2, 0, FALSE },
  };
  TestRun *run = test_start (FALSE, calls, G_N_ELEMENTS (calls));
  g_autoptr (evdalDataAccessFetchResult) r = NULL;

  test_drive_until (&run->done);
  r = test_result (run);
  test_assert_cell (r, "t", "from a thread");
  test_assert_cell (r, "u", "from a thread");
  test_finish (run);
}

/* Many fetches at once on one loop, each with every kind of ending: all answered, all freed. */
static void
test_many_fetches_all_freed (void)
{
  static const TestCall calls[] = {
    { "a", "nap", 2, 0, FALSE }, { "b", "late", 1, 1, FALSE },
    { "c", "twice", NO_DELAY, 0, FALSE }, { "d", "hang", NO_DELAY, 10, FALSE },
    { "e", "thread", NO_DELAY, 0, FALSE }, { "f", "flags", NO_DELAY, 0, FALSE },
  };
  TestRun *runs[20];

  for (guint i = 0; i < G_N_ELEMENTS (runs); i++)
    runs[i] = test_start (i % 2 == 0, calls, G_N_ELEMENTS (calls));
  g_assert_cmpint (g_atomic_int_get (&counters.inflight), ==, G_N_ELEMENTS (runs));
  evd_call_abandon (runs[3]->call);
  for (guint i = 0; i < G_N_ELEMENTS (runs); i++) {
    g_autoptr (evdalDataAccessFetchResult) r = NULL;

    if (i == 3)
      continue;
    test_drive_until (&runs[i]->done);
    r = test_result (runs[i]);
    test_assert_error (r, "d", EVDAL_ERROR_KIND_TIMEOUT);
  }
  for (guint i = 0; i < G_N_ELEMENTS (runs); i++)
    test_finish (runs[i]);
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (EvdConfig) cfg = NULL;
  struct timeval tick = { 0, 100000 };
  int rc;

  evthread_use_pthreads ();
  g_test_init (&argc, &argv, NULL);
  g_log_set_debug_enabled (TRUE);
  g_log_set_writer_func (test_log_writer, NULL, NULL);
  cfg = evd_config_load_data (test_config, strlen (test_config), "engine.conf", "/tmp");
  loop = evd_loop_new (0, &error);  /* never started: the test's thread is its thread */
  g_assert_no_error (error);
  keepalive = event_new (evd_loop_base (loop), -1, EV_PERSIST, test_tick, NULL);
  event_add (keepalive, &tick);
  metrics = evd_metrics_new ();
  evd_engine_counters_init (&counters);
  counters.metrics = metrics;
  engine = evd_engine_new (cfg, &counters);
  evd_engine_activate (engine);
  evd_config_check (cfg, &error);
  g_assert_no_error (error);
  evd_engine_activate (engine);  /* its lookups counted in `metrics`, as when serving */
  g_assert_cmpuint (evd_lookup_set_size (evd_engine_lookups (engine)), ==, 7);

  g_test_add_func ("/engine/static-answers-at-once", test_static_answers_at_once);
  g_test_add_func ("/engine/identical-calls-run-once", test_identical_calls_run_once);
  g_test_add_func ("/engine/staggered-deadlines", test_staggered_deadlines);
  g_test_add_func ("/engine/critical-failure-cancels-the-rest",
                   test_critical_failure_cancels_the_rest);
  g_test_add_func ("/engine/never-started-call-takes-no-time",
                   test_never_started_call_takes_no_time);
  g_test_add_func ("/engine/critical-timeout", test_critical_timeout);
  g_test_add_func ("/engine/non-critical-failure", test_non_critical_failure);
  g_test_add_func ("/engine/client-gone-cancels-everything", test_client_gone_cancels_everything);
  g_test_add_func ("/engine/late-completion-after-the-answer",
                   test_late_completion_after_the_answer);
  g_test_add_func ("/engine/double-completion-is-ignored", test_double_completion_is_ignored);
  g_test_add_func ("/engine/completion-from-a-thread", test_completion_from_a_thread);
  g_test_add_func ("/engine/many-fetches-all-freed", test_many_fetches_all_freed);
  rc = g_test_run ();
  /* The engine goes first: its lookups' backends free their state; then the loop runs what
   * is still posted. */
  evd_engine_unref (engine);
  event_free (keepalive);
  evd_loop_free (loop);
  evd_metrics_free (metrics);
  return rc;
}

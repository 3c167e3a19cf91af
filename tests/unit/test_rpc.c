/* test_rpc: decoding calls, asynchronous completion and reply encoding (rpc/evd_rpc.c).
 *
 * Requests are serialized by c_glib's own client-side protocols, run through the scanner and
 * evd_rpc on a real loop thread, and the replies decoded again by c_glib: what a Thrift
 * client would see. */
#include <event2/thread.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_binary_protocol.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>
#include <thrift/c_glib/transport/thrift_memory_buffer.h>

#include "evd_log.h"
#include "evd_rpc.h"
#include "evd_transport.h"

/* ---- Log lines: the warnings evd_rpc writes (from the loop thread), captured. ---- */

#define TEST_PEER "10.1.2.3:4567"

static GMutex warnings_lock;
static GPtrArray *warnings;  /* char *: MESSAGE of each warning of the "evdal" domain */

static GLogWriterOutput
test_capture_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields,
                     gpointer data)
{
  const char *message = NULL, *peer = NULL;

  if (!(level & G_LOG_LEVEL_WARNING))
    return g_log_writer_default (level, fields, n_fields, data);
  for (gsize i = 0; i < n_fields; i++) {
    if (strcmp (fields[i].key, "MESSAGE") == 0)
      message = fields[i].value;
    else if (strcmp (fields[i].key, "PEER") == 0)
      peer = fields[i].value;
  }
  /* A client-provoked line always says which peer provoked it, in the journal too. */
  g_assert_cmpstr (peer, ==, TEST_PEER);
  g_mutex_lock (&warnings_lock);
  g_ptr_array_add (warnings, g_strdup (message));
  g_mutex_unlock (&warnings_lock);
  return G_LOG_WRITER_HANDLED;
}

static guint
test_warnings (void)
{
  guint n;

  g_mutex_lock (&warnings_lock);
  n = warnings->len;
  g_mutex_unlock (&warnings_lock);
  return n;
}

/* The warning logged since `before` (exactly one). */
static void
test_assert_warned (guint before, const char *want)
{
  g_mutex_lock (&warnings_lock);
  g_assert_cmpuint (warnings->len, ==, before + 1);
  g_assert_cmpstr (warnings->pdata[before], ==, want);
  g_mutex_unlock (&warnings_lock);
}

/* ---- A test service. ---- */

typedef struct {
  gint handled;         /* handler runs */
  gint cancelled;       /* cancel hook runs */
  gint shed;            /* shed handler runs */
  gint overloaded;      /* what the service says when asked */
  EvdCall *held;        /* a call the "hold" method keeps open */
} TestState;

static void
test_handler_ping (EvdCall *call, gpointer args, gpointer data)
{
  TestState *st = data;
  evdalDataAccessPingResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_RESULT, NULL);

  (void) args;
  g_atomic_int_inc (&st->handled);
  r->success = g_strdup ("pong");
  r->__isset_success = TRUE;
  evd_call_reply (call, THRIFT_STRUCT (r));
}

static gpointer
test_reply_later (gpointer data)
{
  EvdCall *call = data;
  evdalDataAccessPingResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_RESULT, NULL);

  g_usleep (20000);
  r->success = g_strdup ("from another thread");
  r->__isset_success = TRUE;
  evd_call_reply (call, THRIFT_STRUCT (r));
  return NULL;
}

/* Completes from a thread that is not the loop's. */
static void
test_handler_later (EvdCall *call, gpointer args, gpointer data)
{
  TestState *st = data;

  (void) args;
  g_atomic_int_inc (&st->handled);
  g_thread_unref (g_thread_new ("later", test_reply_later, call));
}

static void
test_on_cancel (EvdCall *call, gpointer data)
{
  TestState *st = data;

  g_atomic_int_inc (&st->cancelled);
  /* A cancelled call must still be completed by its handler. */
  evd_call_fail (call, THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN, "cancelled");
}

/* Keeps the call open until cancelled. */
static void
test_handler_hold (EvdCall *call, gpointer args, gpointer data)
{
  TestState *st = data;

  (void) args;
  g_atomic_int_inc (&st->handled);
  st->held = call;
  evd_call_on_cancel (call, test_on_cancel, st);
}

/* Replies with the number of calls in the request, to prove the args decoded. */
static void
test_handler_fetch (EvdCall *call, gpointer args, gpointer data)
{
  TestState *st = data;
  evdalDataAccessFetchResult *r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
  evdalFetchRequest *req = EVDAL_DATA_ACCESS_FETCH_ARGS (args)->request;

  g_atomic_int_inc (&st->handled);
  r->success->request_id = g_strdup_printf ("%u", g_hash_table_size (req->calls));
  r->success->__isset_request_id = TRUE;
  r->__isset_success = TRUE;
  evd_call_reply (call, THRIFT_STRUCT (r));
}

/* What a shed fetch answers: a request id of "shed", canned (made in main). */
static evdalDataAccessFetchResult *shed_result;
static EvdRpcCanned *shed_canned;

/* Refused before decoding: args must be NULL. */
static void
test_handler_shed (EvdCall *call, gpointer args, gpointer data)
{
  TestState *st = data;

  g_assert_null (args);
  g_atomic_int_inc (&st->shed);
  evd_call_reply_canned (call, shed_canned);
}

static gboolean
test_overloaded (gpointer data, EvdLoop *l)
{
  (void) l;
  return g_atomic_int_get (&((TestState *) data)->overloaded);
}

static TestState state;
static EvdMethod methods[4];
static EvdService service = {
  .name = "DataAccess", .methods = methods, .n_methods = G_N_ELEMENTS (methods), .data = &state,
  .overloaded = test_overloaded,
};
static EvdLoop *loop;

/* ---- Building requests with c_glib. ---- */

static ThriftProtocol *
test_protocol (EvdProto proto, ThriftTransport *t)
{
  return g_object_new (proto == EVD_PROTO_COMPACT ? THRIFT_TYPE_COMPACT_PROTOCOL
                                                  : THRIFT_TYPE_BINARY_PROTOCOL,
                       "transport", t, NULL);
}

static GByteArray *
test_encode_call (EvdProto proto, const char *name, guint8 type, gint32 seqid, ThriftStruct *args)
{
  g_autoptr (ThriftTransport) t = THRIFT_TRANSPORT (evd_transport_new ());
  g_autoptr (ThriftProtocol) p = test_protocol (proto, t);
  GByteArray *out = g_byte_array_new ();

  evd_transport_set_output (EVD_TRANSPORT (t), out);
  g_assert_cmpint (thrift_protocol_write_message_begin (p, name, type, seqid, NULL), >, 0);
  g_assert_cmpint (thrift_struct_write (args, p, NULL), >, 0);
  g_assert_cmpint (thrift_protocol_write_message_end (p, NULL), >=, 0);
  return out;
}

static GByteArray *
test_encode_ping (EvdProto proto, const char *name, guint8 type, gint32 seqid)
{
  g_autoptr (ThriftStruct) args = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_ARGS, NULL);

  return test_encode_call (proto, name, type, seqid, args);
}

/* ---- Running a call on the loop. ---- */

typedef struct {
  EvdWireFormat fmt;
  GByteArray *msg;
  gboolean body_ok_expected;
  GByteArray *reply;    /* copied out in the done callback */
  gint done;            /* done callbacks run */
  gboolean started;
} TestRun;

static void
test_on_done (EvdCall *call, gpointer owner)
{
  TestRun *run = owner;
  GByteArray *bytes = evd_call_reply_bytes (call);

  g_assert_true (evd_loop_is_current (loop));
  if (bytes != NULL) {
    run->reply = g_byte_array_new ();
    g_byte_array_append (run->reply, bytes->data, bytes->len);
  }
  evd_call_free (call);
  g_atomic_int_inc (&run->done);
}

static void
test_start_on_loop (gpointer data)
{
  TestRun *run = data;
  EvdWireScanner scan;
  EvdWireStatus st;
  EvdCall *call;

  /* As evd_conn does: framed, a call may be shed on its header alone; unframed, the body
   * is walked first (to find its end), then it may still be shed before it is decoded. */
  evd_wire_scanner_init (&scan, run->fmt.proto, run->msg->len, EVD_WIRE_MAX_DEPTH);
  g_assert_cmpint (evd_wire_scanner_header (&scan, run->msg->data, run->msg->len), ==,
                   EVD_WIRE_OK);
  call = run->fmt.framed ? evd_rpc_shed (&service, loop, run->fmt, &scan) : NULL;
  if (call == NULL) {
    st = evd_wire_scanner_feed (&scan, run->msg->data, run->msg->len);
    g_assert_cmpint (st == EVD_WIRE_OK, ==, run->body_ok_expected);
    if (st == EVD_WIRE_OK)
      call = evd_rpc_shed (&service, loop, run->fmt, &scan);
    if (call == NULL)
      call = evd_rpc_prepare (&service, loop, run->fmt, &scan, run->msg->data,
                              st == EVD_WIRE_OK);
  }
  evd_call_set_peer (call, TEST_PEER);  /* as evd_conn does before it starts a call */
  evd_call_start (call, test_on_done, run);
  g_atomic_int_set (&run->started, TRUE);
}

static void
test_wait (gint *flag, gint value)
{
  for (int i = 0; i < 500 && g_atomic_int_get (flag) < value; i++)
    g_usleep (2000);
  g_assert_cmpint (g_atomic_int_get (flag), ==, value);
}

static TestRun *
test_run (EvdWireFormat fmt, GByteArray *msg, gboolean body_ok)
{
  TestRun *run = g_new0 (TestRun, 1);

  run->fmt = fmt;
  run->msg = msg;
  run->body_ok_expected = body_ok;
  evd_loop_post (loop, test_start_on_loop, run);
  test_wait (&run->started, TRUE);
  return run;
}

static void
test_run_free (TestRun *run)
{
  g_byte_array_unref (run->msg);
  if (run->reply)
    g_byte_array_unref (run->reply);
  g_free (run);
}

/* Decodes a reply's header, checking the frame length when framed; returns the protocol
 * positioned at the result struct. */
static ThriftProtocol *
test_open_reply (TestRun *run, char **name, ThriftMessageType *type, gint32 *seqid)
{
  EvdTransport *t = evd_transport_new ();
  ThriftProtocol *p = test_protocol (run->fmt.proto, THRIFT_TRANSPORT (t));
  const guint8 *data = run->reply->data;
  gsize len = run->reply->len;

  g_object_unref (t);  /* the protocol holds it */
  if (run->fmt.framed) {
    guint32 be;
    memcpy (&be, data, 4);
    g_assert_cmpuint (GUINT32_FROM_BE (be), ==, len - 4);
    data += 4;
    len -= 4;
  }
  evd_transport_set_input (t, data, len);
  g_assert_cmpint (thrift_protocol_read_message_begin (p, name, type, seqid, NULL), >, 0);
  return p;
}

static char *
test_reply_ping (TestRun *run, gint32 want_seqid)
{
  g_autofree char *name = NULL;
  ThriftMessageType type;
  gint32 seqid;
  g_autoptr (ThriftProtocol) p = test_open_reply (run, &name, &type, &seqid);
  g_autoptr (evdalDataAccessPingResult) r = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_RESULT,
                                                          NULL);

  g_assert_cmpstr (name, ==, "ping");
  g_assert_cmpint (type, ==, T_REPLY);
  g_assert_cmpint (seqid, ==, want_seqid);
  g_assert_cmpint (thrift_struct_read (THRIFT_STRUCT (r), p, NULL), >, 0);
  g_assert_true (r->__isset_success);
  return g_strdup (r->success);
}

/* Reads the TApplicationException { 1: string message, 2: i32 type } field by field: c_glib's
 * ThriftApplicationException leaks on finalize, and the sanitizer run would blame the test. */
static void
test_reply_exception (TestRun *run, const char *want_name, gint32 want_seqid, gint32 want_kind)
{
  g_autofree char *name = NULL;
  g_autofree char *message = NULL;
  g_autofree char *field = NULL;
  ThriftMessageType type;
  ThriftType ftype;
  gint16 fid;
  gint32 seqid, kind = -1;
  g_autoptr (ThriftProtocol) p = test_open_reply (run, &name, &type, &seqid);

  g_assert_cmpstr (name, ==, want_name);
  g_assert_cmpint (type, ==, T_EXCEPTION);
  g_assert_cmpint (seqid, ==, want_seqid);
  g_assert_cmpint (thrift_protocol_read_struct_begin (p, &field, NULL), >=, 0);
  for (;;) {
    g_assert_cmpint (thrift_protocol_read_field_begin (p, NULL, &ftype, &fid, NULL), >=, 0);
    if (ftype == T_STOP)
      break;
    if (fid == 1 && ftype == T_STRING)
      g_assert_cmpint (thrift_protocol_read_string (p, &message, NULL), >, 0);
    else if (fid == 2 && ftype == T_I32)
      g_assert_cmpint (thrift_protocol_read_i32 (p, &kind, NULL), >, 0);
    else
      g_assert_cmpint (thrift_protocol_skip (p, ftype, NULL), >=, 0);
    thrift_protocol_read_field_end (p, NULL);
  }
  thrift_protocol_read_struct_end (p, NULL);  /* compact: pops what struct_begin pushed */
  g_assert_cmpint (kind, ==, want_kind);
  g_assert_nonnull (message);
}

/* ---- Tests. ---- */

static void
test_ping_every_format (void)
{
  for (int framed = 0; framed < 2; framed++) {
    for (EvdProto proto = EVD_PROTO_BINARY; proto <= EVD_PROTO_COMPACT; proto++) {
      EvdWireFormat fmt = { framed, proto };
      TestRun *run = test_run (fmt, test_encode_ping (proto, "ping", T_CALL, 41 + framed),
                               TRUE);
      g_autofree char *answer = NULL;

      test_wait (&run->done, 1);
      answer = test_reply_ping (run, 41 + framed);
      g_assert_cmpstr (answer, ==, "pong");
      test_run_free (run);
    }
  }
}

static void
test_multiplexed (void)
{
  EvdWireFormat fmt = { TRUE, EVD_PROTO_BINARY };
  guint before = test_warnings ();
  TestRun *run = test_run (fmt, test_encode_ping (EVD_PROTO_BINARY, "DataAccess:ping", T_CALL,
                                                  5), TRUE);
  g_autofree char *answer = NULL;

  test_wait (&run->done, 1);
  /* The reply names the method alone, as multiplexing clients expect. */
  answer = test_reply_ping (run, 5);
  g_assert_cmpstr (answer, ==, "pong");
  g_assert_cmpuint (test_warnings (), ==, before);  /* a call served logs nothing */
  test_run_free (run);

  before = test_warnings ();
  run = test_run (fmt, test_encode_ping (EVD_PROTO_BINARY, "Other:ping", T_CALL, 6), TRUE);
  test_wait (&run->done, 1);
  test_reply_exception (run, "ping", 6, THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN_METHOD);
  test_assert_warned (before, TEST_PEER ": UNKNOWN_METHOD: unknown service in \"Other:ping\"");
  test_run_free (run);
}

static void
test_unknown_method (void)
{
  EvdWireFormat fmt = { FALSE, EVD_PROTO_COMPACT };
  gint before = g_atomic_int_get (&state.handled);
  guint warned = test_warnings ();
  TestRun *run = test_run (fmt, test_encode_ping (EVD_PROTO_COMPACT, "nope", T_CALL, 9), TRUE);

  test_wait (&run->done, 1);
  test_reply_exception (run, "nope", 9, THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN_METHOD);
  g_assert_cmpint (g_atomic_int_get (&state.handled), ==, before);
  test_assert_warned (warned, TEST_PEER ": UNKNOWN_METHOD: unknown method \"nope\"");
  test_run_free (run);

  /* The name is the client's: a newline in it must not forge a second log line. */
  warned = test_warnings ();
  run = test_run (fmt, test_encode_ping (EVD_PROTO_COMPACT, "no\nsuch\x1b[2J", T_CALL, 10),
                  TRUE);
  test_wait (&run->done, 1);
  test_reply_exception (run, "no\nsuch\x1b[2J", 10,
                        THRIFT_APPLICATION_EXCEPTION_ERROR_UNKNOWN_METHOD);
  test_assert_warned (warned, TEST_PEER ": UNKNOWN_METHOD: unknown method \"no?such?[2J\"");
  test_run_free (run);
}

static void
test_oneway_sends_nothing (void)
{
  EvdWireFormat fmt = { TRUE, EVD_PROTO_BINARY };
  gint before = g_atomic_int_get (&state.handled);
  TestRun *run = test_run (fmt, test_encode_ping (EVD_PROTO_BINARY, "ping", T_ONEWAY, 3), TRUE);

  test_wait (&run->done, 1);
  g_assert_cmpint (g_atomic_int_get (&state.handled), ==, before + 1);
  g_assert_null (run->reply);
  test_run_free (run);
}

static void
test_completion_from_another_thread (void)
{
  EvdWireFormat fmt = { TRUE, EVD_PROTO_COMPACT };
  TestRun *run = test_run (fmt, test_encode_ping (EVD_PROTO_COMPACT, "later", T_CALL, 77), TRUE);
  g_autofree char *name = NULL;
  ThriftMessageType type;
  gint32 seqid;
  g_autoptr (ThriftProtocol) p = NULL;
  g_autoptr (evdalDataAccessPingResult) r = g_object_new (EVDAL_TYPE_DATA_ACCESS_PING_RESULT,
                                                          NULL);

  test_wait (&run->done, 1);
  p = test_open_reply (run, &name, &type, &seqid);
  g_assert_cmpstr (name, ==, "later");
  g_assert_cmpint (seqid, ==, 77);
  g_assert_cmpint (thrift_struct_read (THRIFT_STRUCT (r), p, NULL), >, 0);
  g_assert_cmpstr (r->success, ==, "from another thread");
  test_run_free (run);
}

/* Posted after something: when it has run, so has everything the loop had to do for that. */
static void
test_sentinel (gpointer data)
{
  g_atomic_int_inc ((gint *) data);
}

static void
test_abandon (gpointer data)
{
  (void) data;
  evd_call_abandon (state.held);
}

static void
test_abandoned_call_is_cancelled_and_dropped (void)
{
  EvdWireFormat fmt = { TRUE, EVD_PROTO_BINARY };
  TestRun *run = test_run (fmt, test_encode_ping (EVD_PROTO_BINARY, "hold", T_CALL, 8), TRUE);

  gint sentinel = 0;

  g_assert_nonnull (state.held);
  evd_loop_post (loop, test_abandon, NULL);
  test_wait (&state.cancelled, 1);
  /* The handler completed it inside the cancel hook: freed without calling the owner. A done
   * callback would have been made ready by then; the sentinel, posted after, runs after it. */
  evd_loop_post (loop, test_sentinel, &sentinel);
  test_wait (&sentinel, 1);
  g_assert_cmpint (g_atomic_int_get (&run->done), ==, 0);
  test_run_free (run);
}

/* A fetch request with three calls, as c_glib's client would send it. */
static GByteArray *
test_encode_fetch (EvdProto proto, gint32 seqid)
{
  g_autoptr (evdalDataAccessFetchArgs) args = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_ARGS,
                                                            NULL);

  for (int i = 0; i < 3; i++) {
    evdalLookupCall *c = g_object_new (EVDAL_TYPE_LOOKUP_CALL, NULL);
    c->lookup = g_strdup ("nap");
    c->__isset_lookup = TRUE;
    g_hash_table_insert (args->request->calls, g_strdup_printf ("k%d", i), c);
  }
  args->request->__isset_calls = TRUE;
  args->__isset_request = TRUE;
  return test_encode_call (proto, "fetch", T_CALL, seqid, THRIFT_STRUCT (args));
}

static void
test_fetch_args_decode (void)
{
  EvdWireFormat fmt = { FALSE, EVD_PROTO_BINARY };
  TestRun *run;
  g_autofree char *name = NULL;
  ThriftMessageType type;
  gint32 seqid;
  g_autoptr (ThriftProtocol) p = NULL;
  g_autoptr (evdalDataAccessFetchResult) r = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT,
                                                           NULL);

  run = test_run (fmt, test_encode_fetch (EVD_PROTO_BINARY, 12), TRUE);
  test_wait (&run->done, 1);
  p = test_open_reply (run, &name, &type, &seqid);
  g_assert_cmpint (type, ==, T_REPLY);
  g_assert_cmpint (thrift_struct_read (THRIFT_STRUCT (r), p, NULL), >, 0);
  g_assert_cmpstr (r->success->request_id, ==, g_atomic_int_get (&state.overloaded) ? "shed"
                                                                                  : "3");
  test_run_free (run);
}

/* A service that says it is overloaded has its fetches answered by the shed handler, with
 * the args never decoded; ping, which has none, is still served. */
static void
test_overloaded_service_sheds_before_decoding (void)
{
  gint handled = g_atomic_int_get (&state.handled), shed = g_atomic_int_get (&state.shed);

  g_atomic_int_set (&state.overloaded, TRUE);
  test_fetch_args_decode ();
  g_assert_cmpint (g_atomic_int_get (&state.shed), ==, shed + 1);
  g_assert_cmpint (g_atomic_int_get (&state.handled), ==, handled);
  test_ping_every_format ();
  g_assert_cmpint (g_atomic_int_get (&state.shed), ==, shed + 1);
  g_atomic_int_set (&state.overloaded, FALSE);
}

/* A canned reply is byte for byte what c_glib writes for the struct it was made from, in
 * every protocol and transport. */
static void
test_canned_reply_is_what_c_glib_writes (void)
{
  g_atomic_int_set (&state.overloaded, TRUE);
  for (int framed = 0; framed < 2; framed++) {
    for (EvdProto proto = EVD_PROTO_BINARY; proto <= EVD_PROTO_COMPACT; proto++) {
      EvdWireFormat fmt = { framed, proto };
      gint32 seqid = 300 + framed * 1000 + proto;
      TestRun *run = test_run (fmt, test_encode_fetch (proto, seqid), TRUE);
      g_autoptr (GByteArray) want = test_encode_call (proto, "fetch", T_REPLY, seqid,
                                                      THRIFT_STRUCT (shed_result));

      if (framed) {
        guint32 be = GUINT32_TO_BE (want->len);
        g_byte_array_prepend (want, (const guint8 *) &be, 4);
      }
      test_wait (&run->done, 1);
      g_assert_nonnull (run->reply);
      g_assert_cmpmem (run->reply->data, run->reply->len, want->data, want->len);
      test_run_free (run);
    }
  }
  g_atomic_int_set (&state.overloaded, FALSE);
}

/* Framed, the shed decision needs nothing but the header: a shed fetch whose body is garbage
 * is still answered by the shed handler (its body is never walked). Unframed, the body must be
 * walked to find where the next message starts, so the garbage is a PROTOCOL_ERROR. */
static void
test_framed_shed_reads_only_the_header (void)
{
  for (int framed = 0; framed < 2; framed++) {
    EvdWireFormat fmt = { framed, EVD_PROTO_BINARY };
    GByteArray *msg = test_encode_fetch (EVD_PROTO_BINARY, 77);
    static const guint8 liar[] = { 11, 0, 1, 0x40, 0, 0, 0, 'x', 0 };
    gint shed = g_atomic_int_get (&state.shed);
    TestRun *run;

    /* The args struct becomes a string field claiming 1 GiB. */
    g_byte_array_set_size (msg, 4 + 4 + 5 + 4);  /* version, name length, "fetch", seqid */
    g_byte_array_append (msg, liar, sizeof liar);
    g_atomic_int_set (&state.overloaded, TRUE);
    run = test_run (fmt, msg, FALSE);
    test_wait (&run->done, 1);
    g_atomic_int_set (&state.overloaded, FALSE);
    if (framed) {
      g_assert_cmpint (g_atomic_int_get (&state.shed), ==, shed + 1);
      g_assert_nonnull (run->reply);
    } else {
      g_assert_cmpint (g_atomic_int_get (&state.shed), ==, shed);
      test_reply_exception (run, "fetch", 77, THRIFT_APPLICATION_EXCEPTION_ERROR_PROTOCOL_ERROR);
    }
    test_run_free (run);
  }
}

/* A fetch whose request field has the wrong type: c_glib skips it, so it decodes to an empty
 * request; a field whose declared size lies is refused by the scanner: PROTOCOL_ERROR. */
static void
test_bad_body_gets_protocol_error (void)
{
  EvdWireFormat fmt = { TRUE, EVD_PROTO_BINARY };
  GByteArray *msg = test_encode_ping (EVD_PROTO_BINARY, "ping", T_CALL, 21);
  /* Replace the empty args struct (a STOP byte) with a string field claiming 1 GiB. */
  static const guint8 liar[] = { 11, 0, 1, 0x40, 0, 0, 0, 'x', 0 };
  TestRun *run;
  guint warned = test_warnings ();

  g_byte_array_set_size (msg, msg->len - 1);
  g_byte_array_append (msg, liar, sizeof liar);
  run = test_run (fmt, msg, FALSE);
  test_wait (&run->done, 1);
  test_reply_exception (run, "ping", 21, THRIFT_APPLICATION_EXCEPTION_ERROR_PROTOCOL_ERROR);
  /* The walk's verdict is the connection's to log (with the walk's reason), not logged twice. */
  g_assert_cmpuint (test_warnings (), ==, warned);
  test_run_free (run);
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  int rc;

  evthread_use_pthreads ();
  g_test_init (&argc, &argv, NULL);
  warnings = g_ptr_array_new_with_free_func (g_free);
  g_log_set_writer_func (test_capture_writer, NULL, NULL);
  methods[0] = (EvdMethod) { .name = "ping", .args_type = EVDAL_TYPE_DATA_ACCESS_PING_ARGS,
                             .handler = test_handler_ping };
  methods[1] = (EvdMethod) { .name = "later", .args_type = EVDAL_TYPE_DATA_ACCESS_PING_ARGS,
                             .handler = test_handler_later };
  methods[2] = (EvdMethod) { .name = "hold", .args_type = EVDAL_TYPE_DATA_ACCESS_PING_ARGS,
                             .handler = test_handler_hold };
  methods[3] = (EvdMethod) { .name = "fetch", .args_type = EVDAL_TYPE_DATA_ACCESS_FETCH_ARGS,
                             .handler = test_handler_fetch, .shed = test_handler_shed };
  shed_result = g_object_new (EVDAL_TYPE_DATA_ACCESS_FETCH_RESULT, NULL);
  shed_result->success->request_id = g_strdup ("shed");
  shed_result->success->__isset_request_id = TRUE;
  shed_result->__isset_success = TRUE;
  shed_canned = evd_rpc_canned_new (THRIFT_STRUCT (shed_result), &error);
  g_assert_no_error (error);
  loop = evd_loop_new (1, &error);
  g_assert_no_error (error);
  g_assert_true (evd_loop_start (loop, &error));

  g_test_add_func ("/rpc/ping-every-format", test_ping_every_format);
  g_test_add_func ("/rpc/multiplexed", test_multiplexed);
  g_test_add_func ("/rpc/unknown-method", test_unknown_method);
  g_test_add_func ("/rpc/oneway-sends-nothing", test_oneway_sends_nothing);
  g_test_add_func ("/rpc/completion-from-another-thread", test_completion_from_another_thread);
  g_test_add_func ("/rpc/abandoned-call", test_abandoned_call_is_cancelled_and_dropped);
  g_test_add_func ("/rpc/fetch-args-decode", test_fetch_args_decode);
  g_test_add_func ("/rpc/bad-body-protocol-error", test_bad_body_gets_protocol_error);
  g_test_add_func ("/rpc/overloaded-sheds-before-decoding",
                   test_overloaded_service_sheds_before_decoding);
  g_test_add_func ("/rpc/canned-reply-is-what-c_glib-writes",
                   test_canned_reply_is_what_c_glib_writes);
  g_test_add_func ("/rpc/framed-shed-reads-only-the-header",
                   test_framed_shed_reads_only_the_header);
  rc = g_test_run ();
  evd_loop_quit (loop);
  evd_loop_free (loop);
  evd_rpc_canned_free (shed_canned);
  g_object_unref (shed_result);
  g_ptr_array_unref (warnings);
  return rc;
}

/* fuzz_wire: libFuzzer target for everything a client's bytes reach before a handler runs:
 * protocol detection, framing, the validation walk (fed whole and in pieces, which must agree),
 * c_glib decoding of the DataAccess arguments, and encoding of the replies.
 *
 * The first input byte picks how the rest is cut into pieces; the rest is the stream. */
#include <string.h>

#include "evd_rpc.h"
#include "evd_data_access.h"

static EvdLoop *loop;
static EvdDataAccess *service;

static void
fuzz_on_done (EvdCall *call, gpointer owner)
{
  (void) owner;
  evd_call_free (call);
}

/* Runs one whole message through the RPC layer, as a connection would. */
static void
fuzz_dispatch (EvdWireFormat fmt, const EvdWireScanner *scan, const guint8 *data, gboolean ok)
{
  EvdCall *call = evd_rpc_prepare (evd_data_access_service (service), loop, fmt, scan, data, ok);

  evd_call_start (call, fuzz_on_done, NULL);
}

/* The walk fed in pieces must end exactly as the walk over the whole. */
static EvdWireStatus
fuzz_scan_pieces (EvdProto proto, const guint8 *data, gsize len, gsize max, guint step)
{
  EvdWireScanner s;
  EvdWireStatus st = EVD_WIRE_NEED_MORE;

  evd_wire_scanner_init (&s, proto, max, EVD_WIRE_MAX_DEPTH);
  s.schema_for = evd_wire_schema_args;
  for (gsize have = MIN (step, len); st == EVD_WIRE_NEED_MORE; have = MIN (have + step, len)) {
    st = evd_wire_scanner_feed (&s, data, have);
    if (have == len)
      break;
  }
  return st;
}

static void
fuzz_stream (const guint8 *data, gsize len, guint step)
{
  EvdWireFormat fmt;
  EvdWireScanner s;
  EvdWireStatus st;
  gsize max = 1 << 16, msg_len;

  if (evd_wire_detect (data, len, &fmt, NULL) != EVD_WIRE_OK)
    return;
  if (fmt.framed) {
    /* The connection's own check of the length, then a frame that is all there. */
    gint32 n;
    const char *reason;

    if (evd_wire_frame_length (data, len, (gint32) max, &n, &reason) != EVD_WIRE_OK ||
        (gsize) n > len - 4)
      return;
    data += 4;
    len = (gsize) n;
    max = len;
  }
  evd_wire_scanner_init (&s, fmt.proto, max, EVD_WIRE_MAX_DEPTH);
  s.schema_for = evd_wire_schema_args;
  st = evd_wire_scanner_feed (&s, data, len);
  if (fuzz_scan_pieces (fmt.proto, data, len, max, step) != st)
    __builtin_trap ();
  if (fmt.framed) {
    /* And the connection's walk of a frame: its header, then a message that must fill it. */
    evd_wire_scanner_init (&s, fmt.proto, max, EVD_WIRE_MAX_DEPTH);
    s.schema_for = evd_wire_schema_args;
    if (evd_wire_scanner_header (&s, data, len) != EVD_WIRE_OK)
      return;
    st = evd_wire_scanner_frame (&s, data, len);
    if (st == EVD_WIRE_NEED_MORE)
      __builtin_trap ();  /* a frame is all there: the walk must decide */
  }
  if (st == EVD_WIRE_OK || (st == EVD_WIRE_BAD_BODY && s.header_ok)) {
    msg_len = st == EVD_WIRE_OK ? s.msg_len : 0;
    if (msg_len <= len)
      fuzz_dispatch (fmt, &s, data, st == EVD_WIRE_OK);
  }
}

/* Messages about requests (a critical call failed...) would only slow the fuzzer down. */
static GLogWriterOutput
fuzz_quiet (GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data)
{
  (void) data;
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    return g_log_writer_standard_streams (level, fields, n, NULL);
  return G_LOG_WRITER_HANDLED;
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  static const char conf[] =
    "[server]\nmax_calls = 8\n[lookup flags]\nbackend = static\ncolumns = a, b\nrow.1 = x, 1\n"
    "[lookup broken]\nbackend = fault\nmode = fail\n";
  g_autoptr (EvdConfig) cfg = evd_config_load_data (conf, sizeof conf - 1, "fuzz.conf", "/");

  (void) argc;
  (void) argv;
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL);  /* a critical is a bug the fuzzer found */
  g_log_set_writer_func (fuzz_quiet, NULL, NULL);
  loop = evd_loop_new (1, NULL);
  service = evd_data_access_new (g_steal_pointer (&cfg), NULL, NULL);  /* lives as long as the process */
  return 0;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  if (size < 2)
    return 0;
  fuzz_stream (data + 1, size - 1, 1 + data[0] % 17);
  evd_loop_run_pending (loop);  /* deferred releases of finished backend calls */
  return 0;
}

/**
 * evdal: the public contract between web frontends and the evdal data-access server.
 *
 * One `fetch` names several lookups; evdal runs them all at once, each against its own
 * backend, and merges their replies. Names, field ids and types here are a promise to every
 * generated client: add fields, never renumber or retype them.
 *
 * Transports and protocols: framed or unframed (buffered), binary or compact, on the same
 * port; the server detects them per connection. Multiplexed clients use the service name
 * "DataAccess".
 */
namespace c_glib evdal
namespace py evdal
namespace cpp evdal
namespace go evdal
namespace java evdal
namespace js evdal

/** A dynamically typed value, as SQLite has them. Exactly one field is set. */
union Value {
  /** SQL NULL. The boolean's value is ignored; set it to true. */
  1: bool null_value
  /** A 64-bit signed integer (SQLite INTEGER). */
  2: i64 int_value
  /** A double (SQLite REAL). */
  3: double real_value
  /** UTF-8 text (SQLite TEXT). */
  4: string text_value
  /** Raw bytes (SQLite BLOB). */
  5: binary blob_value
}

/** Rows that a lookup returns. */
struct Table {
  /** Column names, in the order the lookup returns them. */
  1: list<string> columns
  /** Rows; each row has exactly one Value per column. */
  2: list<list<Value>> rows
}

/** Request-scoped state, handed explicitly to every lookup. */
struct RequestContext {
  /** Caller's id for this request, echoed in the response and in every log line. */
  1: optional string request_id
  /** Who the request is made for (a user or service name); passed to every lookup. */
  2: optional string principal
  /** Time budget of the whole fetch in milliseconds; defaults to [server] deadline_ms. */
  3: optional i32 deadline_ms
  /** When true, every LookupResult carries its Span. */
  4: optional bool trace
  /** Free-form key/value pairs passed to every lookup (locale, tenant...). */
  5: optional map<string, string> attributes
  /**
   * W3C Trace Context: the caller's span as a traceparent header value
   * ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"). evdal's spans join that trace,
   * and it is exported when the flags say sampled. An invalid value is ignored (counted,
   * logged), never an error. Clients without this field may send the attribute "traceparent";
   * the field wins when both are sent.
   */
  6: optional string traceparent
  /** The W3C tracestate that goes with traceparent (or the attribute "tracestate"). */
  7: optional string tracestate
}

/**
 * One lookup to run as part of a fetch.
 *
 * Calls of one fetch that name the same lookup with the same params (same names and values,
 * in any order) and the same time budget run once and share one result. A different
 * timeout_ms that gives a different budget makes a separate run: one run cannot serve two
 * budgets without one call's timeout deciding the other's result.
 */
struct LookupCall {
  /** Name of a lookup configured on the server (see lookups()). */
  1: string lookup
  /** Named parameters of the lookup. */
  2: optional map<string, Value> params
  /** Time budget of this call in milliseconds; the smallest of this, the lookup's and the request's wins. */
  3: optional i32 timeout_ms
  /** When true, a failure of this call fails the whole fetch with LookupFailed, naming this call. */
  4: optional bool critical
}

/** Why a lookup failed. */
enum ErrorKind {
  /** No lookup of that name is configured. */
  UNKNOWN_LOOKUP = 1,
  /** A parameter is unknown, missing or of the wrong type; the message names it. */
  BAD_PARAMS = 2,
  /** The call's time budget ran out. */
  TIMEOUT = 3,
  /** The backend failed (database error, row limit...). */
  BACKEND = 4,
  /** The backend's concurrency limit and wait queue are full. */
  OVERLOADED = 5,
  /** The call was stopped because the request ended (a critical call failed, client left). */
  CANCELLED = 6,
}

/** The error of one failed lookup. */
struct LookupError {
  /** What kind of failure. */
  1: ErrorKind kind
  /** A human-readable explanation. */
  2: string message
}

/** Microseconds since the server finished reading the request. */
struct Span {
  /** When the call started. */
  1: i64 start_us
  /** When the call ended (start_us <= end_us). */
  2: i64 end_us
  /** The backend that served it, as "kind:instance" (for example "delay:nap"). */
  3: string backend
  /**
   * What happened to the call besides its outcome, when anything did: "coalesced" (served by
   * an identical call in flight), "cache_hit", "stale" (expired cached rows: the refresh
   * failed), "hedged" (a second attempt went out), "retried:N", "breaker_open" (the circuit
   * breaker of its database/upstream refused a call). Absent when none applies.
   */
  4: optional list<string> marks
}

/** The outcome of one LookupCall: exactly one of table or error is set. */
struct LookupResult {
  /** The rows, when the call succeeded. */
  1: optional Table table
  /** The error, when the call failed. */
  2: optional LookupError error
  /** Timing of the call, when the request asked for a trace. */
  3: optional Span span
}

/** A batch of lookups to run at once. */
struct FetchRequest {
  /** Request-scoped state; optional. */
  1: optional RequestContext context
  /**
   * The calls, keyed by a name of the caller's choosing; results use the same keys. Identical
   * calls (same lookup, params and time budget; see LookupCall) run once, and each key gets
   * the shared result.
   */
  2: map<string, LookupCall> calls
}

/** The merged replies of a fetch. */
struct FetchResponse {
  /** The context's request_id, or one the server made up. */
  1: string request_id
  /** Exactly one result per key of FetchRequest.calls. */
  2: map<string, LookupResult> results
  /** Time the server spent on the request, in microseconds. */
  3: i64 server_us
}

/** The request itself is unacceptable (no calls, too many calls...). */
exception InvalidRequest {
  /** What is wrong with it. */
  1: string message
}

/** A call marked critical failed; the other calls were cancelled. */
exception LookupFailed {
  /** The key of the call that failed. */
  1: string call
  /** Its error. */
  2: LookupError error
}

/** The server is at capacity; retry later. */
exception Overloaded {
  /** Which limit was reached. */
  1: string message
  /** A suggested delay before retrying, in milliseconds (> 0). */
  2: i32 retry_after_ms
}

/** A configured lookup, as lookups() describes it. */
struct LookupInfo {
  /** The name calls use. */
  1: string name
  /** The backend serving it, as "kind:instance". */
  2: string backend
  /** The names of the parameters it takes. */
  3: list<string> params
  /** Its default time budget in milliseconds (0 when only the request deadline applies). */
  4: i32 timeout_ms
  /** What it returns, for humans. */
  5: string description
}

/** The evdal data-access service. */
service DataAccess {
  /** Runs every call of the request at once and returns their merged results. */
  FetchResponse fetch(1: FetchRequest request)
    throws (1: InvalidRequest invalid, 2: LookupFailed failed, 3: Overloaded overloaded)
  /** Lists the configured lookups. */
  list<LookupInfo> lookups()
  /** Returns "pong": a liveness check that touches no backend. */
  string ping()
}

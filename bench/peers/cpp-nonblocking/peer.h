// evdal-peer-cpp: the C++ peer of evdal's benchmarks (see README.md in this folder).
//
// The types every part of the peer shares: the configuration (read with GLib's GKeyFile from
// the same file evdal reads), the configured lookups and their backends, and one execution of
// one lookup (a Job) as the fan-out hands it to a pool thread.
#pragma once

#include <glib.h>
#include <thrift/concurrency/ThreadManager.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "evdal_types.h"

namespace peer {

using Clock = std::chrono::steady_clock;

// printf into a std::string, for the error messages that must read exactly like evdal's.
std::string format(const char* fmt, ...) G_GNUC_PRINTF(1, 2);

// ---- The INI file, through GKeyFile. ----

// evdal's dialect of INI: "[lookup NAME]" groups, and a comment may follow a value after a
// blank ("delay_ms = 100   # default"), which GKeyFile alone would keep in the value.
// Problems throw std::runtime_error naming the file, group and key.
class Ini {
 public:
  explicit Ini(const std::string& path);
  ~Ini();
  Ini(const Ini&) = delete;
  Ini& operator=(const Ini&) = delete;

  std::vector<std::string> groups() const;  // in file order
  std::vector<std::string> keys(const std::string& group) const;  // in file order
  bool has(const std::string& group, const std::string& key) const;
  std::string get(const std::string& group, const std::string& key,
                  const std::string& def = "") const;
  std::string require(const std::string& group, const std::string& key) const;
  int64_t integer(const std::string& group, const std::string& key, int64_t def, int64_t min,
                  int64_t max) const;
  // A path relative to the config file's folder, as evdal resolves them.
  std::string resolve(const std::string& path) const;
  [[noreturn]] void fail(const std::string& group, const std::string& key,
                         const std::string& message) const;

 private:
  GKeyFile* kf_;
  std::string path_, dir_;
};

// ---- Lookups. ----

// What a call's param may be: SQL binds any Value, the delay backend wants an int.
enum class ParamType { Any, Int };

struct ParamSpec {
  std::string name;
  ParamType type;
  bool required;
};

struct FetchState;
struct Job;

struct Database;  // [database NAME], see peer_backends.cpp

// A kind of lookup. run() answers one call: it fills the result's table or its error. A
// blocking backend runs on a pool thread and must return soon after job.stopped() turns true
// (the request ended or the call's time ran out); the outcome is then ignored.
class Backend {
 public:
  virtual ~Backend() = default;
  // false: answered at once from memory, on the handler's thread (no pool hop).
  virtual bool blocking() const { return true; }
  // The database whose pool runs its calls; nullptr: the general lookup pool does.
  virtual Database* database() const { return nullptr; }
  virtual void run(Job& job, evdal::LookupResult& out) = 0;
};

// max_concurrent / max_queue of a lookup: calls beyond max_concurrent wait here (not in the
// pool, where they would hold a thread) for a running call of the same lookup to finish.
struct Bulkhead {
  std::mutex mutex;
  int running = 0;
  std::deque<std::shared_ptr<Job>> waiting;
};

// One [lookup NAME] group.
struct Lookup {
  std::string name;
  std::string backend_name;  // "kind:instance", shown by lookups() and in spans
  std::string description;
  int timeout_ms = 0;        // 0: only the request's deadline bounds a call
  int max_concurrent = 0;    // 0: unbounded
  int max_queue = 1000;
  std::vector<ParamSpec> params;
  std::unique_ptr<Backend> backend;
  // Where its calls run (set at start-up): its database's pool, or the lookup pool; nullptr
  // for a backend that is not blocking.
  std::shared_ptr<apache::thrift::concurrency::ThreadManager> pool;
  Bulkhead bulkhead;

  const ParamSpec* param(const std::string& n) const;
  std::string param_names() const;  // "a, b" or "none", for messages
};

// [database NAME]: a SQLite file, and the threads that run its statements, each with a
// read-only connection of its own (as evdal, `workers` of them).
struct Database {
  std::string kind = "sqlite";  // or "redis" (peer_redis.cpp): address, password, no pool
  std::string address, password;
  std::string name, path;
  int busy_timeout_ms = 1000;
  int workers = 4;
  std::vector<std::string> statements;  // by id; registered at start-up only
  std::shared_ptr<apache::thrift::concurrency::ThreadManager> pool;
};

// [upstream NAME]: an HTTP/JSON service (peer_http.cpp).
struct Upstream {
  std::string name, base_url, ca_file;
  size_t max_response_bytes = 1048576;
};

struct Config {
  std::string listen = "127.0.0.1:9090";
  int deadline_ms = 1000;
  int max_calls = 64;
  int max_inflight = 100000;
  int workers = 4;  // [server] workers: the default of [database NAME] workers
  std::vector<std::unique_ptr<Lookup>> lookups;  // in config order
  std::map<std::string, Lookup*> by_name;
  std::map<std::string, std::shared_ptr<Database>> databases;
  std::map<std::string, std::shared_ptr<Upstream>> upstreams;
};

// Reads the whole file; throws std::runtime_error on the first problem.
std::unique_ptr<Config> load_config(const std::string& path);

// Backend factories (peer_backends.cpp): read the group's own keys, declare the params.
std::shared_ptr<Database> open_database(const Ini& ini, const std::string& group,
                                        const Config& cfg);
std::unique_ptr<Backend> open_delay(const Ini& ini, const std::string& group, Lookup& l);
std::unique_ptr<Backend> open_static(const Ini& ini, const std::string& group, Lookup& l);
std::unique_ptr<Backend> open_sqlite(const Ini& ini, const std::string& group, Lookup& l,
                                     const Config& cfg);
std::unique_ptr<Backend> open_redis(const Ini& ini, const std::string& group, Lookup& l,
                                    const Config& cfg);
// peer_http.cpp: blocking libcurl on the lookup pool's threads.
std::shared_ptr<Upstream> open_upstream(const Ini& ini, const std::string& group);
std::unique_ptr<Backend> open_http(const Ini& ini, const std::string& group, Lookup& l,
                                   const Config& cfg);

// ---- One fetch in flight. ----

// What a fetch shares with the pool threads running its calls. The handler answers at the
// deadline even when a call still runs, and the request is freed with the answer, so all that
// a running call touches lives here and in its Job, kept alive by shared_ptr.
struct FetchState {
  std::mutex mutex;
  std::condition_variable job_done;  // the handler waits on it for completions
  std::condition_variable ended_cv;  // sleeping calls wait on it, to stop when the fetch ends
  std::atomic<bool> ended{false};    // answered: running calls may stop
  Clock::time_point start;
  std::string request_id;
  // Guarded by mutex:
  int pending = 0;                   // jobs not done
  Job* failed = nullptr;             // the first critical job that failed
};

// One execution of one lookup, serving every call of the fetch with the same lookup, deadline
// and params (evdal runs such duplicates once, too).
struct Job {
  std::shared_ptr<FetchState> fetch;
  Lookup* lookup = nullptr;
  std::map<std::string, evdal::Value> params;  // a copy: the request may be gone first
  Clock::time_point deadline;
  Clock::time_point launched, finished;
  std::vector<std::string> keys;
  bool critical = false;
  bool queued = false;             // waiting in its lookup's bulkhead (guarded by its mutex)
  // Guarded by fetch->mutex until the fetch ended, read-only afterwards:
  bool done = false;
  evdal::LookupResult result;      // exactly one of table and error

  bool stopped() const {
    return fetch->ended.load(std::memory_order_relaxed) || Clock::now() >= deadline;
  }
};

// Result helpers.
void set_error(evdal::LookupResult& out, evdal::ErrorKind::type kind, const std::string& msg);
void set_table(evdal::LookupResult& out, evdal::Table&& table);
// The error of a call whose time ran out, worded like evdal's.
std::string timeout_message(const Job& job, bool queued = false);
// A backend stopped early: TIMEOUT when the call's time ran out, else CANCELLED.
void set_interrupted(const Job& job, evdal::LookupResult& out);

evdal::Value int_value(int64_t v);

// Which field of a Value is set; Invalid when not exactly one is (a malformed union).
enum class Kind { Invalid, Null, Int, Real, Text, Blob };
Kind kind_of(const evdal::Value& v);
const char* kind_name(Kind k);

}  // namespace peer

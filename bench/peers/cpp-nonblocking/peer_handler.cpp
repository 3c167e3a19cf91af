// The fan-out, as a C++ Thrift user writes it: the handler thread plans the calls, hands the
// blocking ones to thread pools, then sleeps on a condition variable until every call is
// done, a critical one failed, or the next deadline passed; then it merges. The contract is
// evdal's (handlers/evd_engine.c): the same checks, error kinds and messages, deadlines,
// critical calls, duplicate calls run once, traces and request ids.
#include "peer_handler.h"

#include <thrift/concurrency/FunctionRunner.h>

#include <algorithm>

namespace peer {

using apache::thrift::concurrency::FunctionRunner;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// What an Overloaded reply suggests, as evdal.
constexpr int kRetryAfterMs = 50;

struct Handler::Plan {
  std::shared_ptr<FetchState> fs;
  Clock::time_point deadline;  // the whole request's
  bool trace = false;
  std::vector<std::shared_ptr<Job>> jobs;
  std::map<std::string, Job*> by_dedup;
  std::vector<std::pair<std::string, evdal::LookupError>> early;  // calls refused at once
};

Handler::Handler(const Config& cfg) : cfg_(cfg), id_prefix_(format("%08x", g_random_int())) {
  for (const auto& l : cfg.lookups) {
    evdal::LookupInfo& i = infos_.emplace_back();
    i.name = l->name;
    i.backend = l->backend_name;
    for (const ParamSpec& p : l->params) i.params.push_back(p.name);
    i.timeout_ms = l->timeout_ms;
    i.description = l->description;
  }
}

static evdal::LookupError lookup_error(evdal::ErrorKind::type kind, std::string message) {
  evdal::LookupError e;
  e.kind = kind;
  e.message = std::move(message);
  return e;
}

// ---- Planning ----

void Handler::admit(const evdal::FetchRequest& request) {
  const evdal::RequestContext* ctx = request.__isset.context ? &request.context : nullptr;
  evdal::InvalidRequest invalid;
  if (request.calls.empty())
    invalid.message = "no calls: FetchRequest.calls is empty";
  else if (request.calls.size() > (size_t) cfg_.max_calls)
    invalid.message = format("%zu calls, more than max_calls (%d)", request.calls.size(),
                             cfg_.max_calls);
  else if (ctx && ctx->__isset.deadline_ms && ctx->deadline_ms <= 0)
    invalid.message = format("context.deadline_ms must be positive, got %d", ctx->deadline_ms);
  if (!invalid.message.empty()) throw invalid;
  if (inflight_.fetch_add(1) >= cfg_.max_inflight) {
    inflight_--;
    evdal::Overloaded o;
    o.message = format("max_inflight (%d) fetches in flight", cfg_.max_inflight);
    o.retry_after_ms = kRetryAfterMs;
    throw o;
  }
}

// Checks a call's params against its lookup's declaration.
static bool check_params(const Lookup& l, const std::map<std::string, evdal::Value>& params,
                         evdal::LookupError& e) {
  for (const auto& [name, v] : params) {
    const ParamSpec* p = l.param(name);
    Kind k = kind_of(v);
    bool typed = p && p->type != ParamType::Any;
    if (p == nullptr) {
      e = lookup_error(evdal::ErrorKind::BAD_PARAMS,
                       format("param %s: lookup %s does not take it (it takes: %s)",
                              name.c_str(), l.name.c_str(), l.param_names().c_str()));
      return false;
    }
    if (k == Kind::Text && !g_utf8_validate(v.text_value.c_str(), -1, nullptr)) {
      e = lookup_error(evdal::ErrorKind::BAD_PARAMS,
                       format("param %s: text is not valid UTF-8", name.c_str()));
      return false;
    }
    if (k == Kind::Invalid || (typed && k != Kind::Null && k != Kind::Int) ||
        (typed && k == Kind::Null && p->required)) {
      e = lookup_error(evdal::ErrorKind::BAD_PARAMS,
                       format("param %s: expected %s, got %s", name.c_str(),
                              typed ? kind_name(Kind::Int) : "a value", kind_name(k)));
      return false;
    }
  }
  for (const ParamSpec& p : l.params) {
    if (p.required && !params.count(p.name)) {
      e = lookup_error(evdal::ErrorKind::BAD_PARAMS, format("param %s: required by lookup %s",
                                                            p.name.c_str(), l.name.c_str()));
      return false;
    }
  }
  return true;
}

// Text naming (lookup, deadline, params) exactly: equal keys are the same execution. Every
// piece is length-prefixed, so no two different calls share a key.
static std::string dedup_key(const std::string& lookup, Clock::duration budget,
                             const std::map<std::string, evdal::Value>& params) {
  std::string s = std::to_string(lookup.size()) + ":" + lookup + "|" +
                  std::to_string(budget.count());
  for (const auto& [name, v] : params) {  // a std::map: sorted by name already
    Kind k = kind_of(v);
    s += "|" + std::to_string(name.size()) + ":" + name + "=" + std::to_string((int) k) + ":";
    switch (k) {
      case Kind::Int: s += std::to_string(v.int_value); break;
      case Kind::Real: s += format("%a", v.real_value); break;
      case Kind::Text: s += std::to_string(v.text_value.size()) + ":" + v.text_value; break;
      case Kind::Blob: s += std::to_string(v.blob_value.size()) + ":" + v.blob_value; break;
      default: break;
    }
  }
  return s;
}

// Resolves one call to a job (new, or shared with an identical call), or to an error.
bool Handler::plan_call(Plan& plan, const std::string& key, const evdal::LookupCall& call,
                        evdal::LookupError& e) {
  static const std::map<std::string, evdal::Value> no_params;
  auto it = cfg_.by_name.find(call.lookup);
  if (it == cfg_.by_name.end()) {
    e = lookup_error(evdal::ErrorKind::UNKNOWN_LOOKUP,
                     format("no lookup named \"%s\"", call.lookup.c_str()));
    return false;
  }
  Lookup& l = *it->second;
  if (call.__isset.timeout_ms && call.timeout_ms <= 0) {
    e = lookup_error(evdal::ErrorKind::BAD_PARAMS,
                     format("timeout_ms must be positive, got %d", call.timeout_ms));
    return false;
  }
  const auto& params = call.__isset.params ? call.params : no_params;
  if (!check_params(l, params, e)) return false;

  // The smallest of the request's, the lookup's and the call's budgets wins.
  Clock::time_point start = plan.fs->start, deadline = plan.deadline;
  if (l.timeout_ms > 0) deadline = std::min(deadline, start + milliseconds(l.timeout_ms));
  if (call.__isset.timeout_ms)
    deadline = std::min(deadline, start + milliseconds(call.timeout_ms));
  Job*& job = plan.by_dedup[dedup_key(l.name, deadline - start, params)];
  if (job == nullptr) {
    auto j = std::make_shared<Job>();
    j->fetch = plan.fs;
    j->lookup = &l;
    j->params = params;
    j->deadline = deadline;
    plan.jobs.push_back(j);
    job = j.get();
  }
  job->keys.push_back(key);
  job->critical |= call.__isset.critical && call.critical;
  return true;
}

// ---- Running ----

// Records a job's outcome, unless it was already decided (timed out) or the fetch answered.
static void complete(Job& job, evdal::LookupResult&& r) {
  FetchState& fs = *job.fetch;
  {
    std::lock_guard<std::mutex> lock(fs.mutex);
    if (job.done || fs.ended.load(std::memory_order_relaxed)) return;
    job.done = true;
    job.finished = Clock::now();
    job.result = std::move(r);
    if (!job.result.__isset.table && !job.result.__isset.error)
      set_error(job.result, evdal::ErrorKind::BACKEND, "backend returned nothing");
    fs.pending--;
    if (job.result.__isset.error && job.critical && fs.failed == nullptr) fs.failed = &job;
  }
  fs.job_done.notify_one();
}

void Handler::launch(const std::shared_ptr<Job>& job) {
  Lookup& l = *job->lookup;
  job->launched = Clock::now();
  if (!l.backend->blocking()) {
    evdal::LookupResult r;
    l.backend->run(*job, r);
    complete(*job, std::move(r));
    return;
  }
  if (l.max_concurrent > 0) {
    std::unique_lock<std::mutex> lock(l.bulkhead.mutex);
    Bulkhead& b = l.bulkhead;
    if (b.running >= l.max_concurrent) {
      if ((int) b.waiting.size() < l.max_queue) {
        job->queued = true;
        b.waiting.push_back(job);  // release() submits it when a running call ends
        return;
      }
      lock.unlock();
      evdal::LookupResult r;
      set_error(r, evdal::ErrorKind::OVERLOADED,
                format("lookup %s is at max_concurrent and its queue is full", l.name.c_str()));
      complete(*job, std::move(r));
      return;
    }
    b.running++;
  }
  submit(job);
}

void Handler::submit(std::shared_ptr<Job> job) {
  try {
    job->lookup->pool->add(FunctionRunner::create([this, job] { run(job); }));
  } catch (const apache::thrift::TException& e) {  // the pool is stopping
    evdal::LookupResult r;
    set_error(r, evdal::ErrorKind::BACKEND, std::string("lookup pool: ") + e.what());
    release(*job->lookup);
    complete(*job, std::move(r));
  }
}

void Handler::run(const std::shared_ptr<Job>& job) {
  evdal::LookupResult r;
  if (job->stopped()) {
    // Its time ran out (or its fetch ended) while it waited for a thread: do not run it.
    set_interrupted(*job, r);
  } else {
    try {
      job->lookup->backend->run(*job, r);
    } catch (const std::exception& e) {
      set_error(r, evdal::ErrorKind::BACKEND, e.what());
    }
  }
  // The place is given back before the answer can leave: a client that sends its next fetch
  // as soon as this one is answered must find the place free (evdal orders it the same way).
  release(*job->lookup);
  complete(*job, std::move(r));
}

// A running call of `l` ended: its place goes straight to the next waiting call, if any.
void Handler::release(Lookup& l) {
  if (l.max_concurrent == 0) return;
  std::shared_ptr<Job> next;
  {
    std::lock_guard<std::mutex> lock(l.bulkhead.mutex);
    if (l.bulkhead.waiting.empty()) {
      l.bulkhead.running--;
    } else {
      next = std::move(l.bulkhead.waiting.front());
      l.bulkhead.waiting.pop_front();
      next->queued = false;
    }
  }
  if (next) submit(std::move(next));
}

// Takes a job whose time ran out out of its lookup's wait queue; true if it was waiting.
static bool withdraw(Job& job) {
  Bulkhead& b = job.lookup->bulkhead;
  if (job.lookup->max_concurrent == 0) return false;
  std::lock_guard<std::mutex> lock(b.mutex);
  if (!job.queued) return false;
  b.waiting.erase(std::find_if(b.waiting.begin(), b.waiting.end(),
                               [&](const std::shared_ptr<Job>& j) { return j.get() == &job; }));
  job.queued = false;
  return true;
}

// Waits until every job is done or a critical one failed; a job still going at its deadline
// is done with TIMEOUT. Then the fetch ends: running calls see `ended` and stop.
void Handler::wait(Plan& plan) {
  FetchState& fs = *plan.fs;
  std::unique_lock<std::mutex> lock(fs.mutex);
  while (fs.pending > 0 && fs.failed == nullptr) {
    Clock::time_point now = Clock::now(), next = Clock::time_point::max();
    for (const auto& job : plan.jobs) {
      if (job->done) continue;
      if (job->deadline > now) {
        next = std::min(next, job->deadline);
        continue;
      }
      bool queued = withdraw(*job);
      job->done = true;
      job->finished = now;
      set_error(job->result, evdal::ErrorKind::TIMEOUT, timeout_message(*job, queued));
      fs.pending--;
      if (job->critical && fs.failed == nullptr) fs.failed = job.get();
    }
    if (fs.pending > 0 && fs.failed == nullptr) fs.job_done.wait_until(lock, next);
  }
  fs.ended = true;
  lock.unlock();
  fs.ended_cv.notify_all();
}

// ---- Answering ----

static evdal::Span make_span(const FetchState& fs, Clock::time_point from, Clock::time_point to,
                             const std::string& backend) {
  evdal::Span s;
  s.start_us = std::max<int64_t>(duration_cast<microseconds>(from - fs.start).count(), 0);
  s.end_us = std::max<int64_t>(duration_cast<microseconds>(to - fs.start).count(), s.start_us);
  s.backend = backend;
  return s;
}

std::string Handler::request_id(const evdal::FetchRequest& request) {
  const evdal::RequestContext& c = request.context;
  if (request.__isset.context && c.__isset.request_id && !c.request_id.empty())
    return c.request_id;
  return format("%s-%012llx", id_prefix_.c_str(), (unsigned long long) next_id_++);
}

void Handler::fetch(evdal::FetchResponse& out, const evdal::FetchRequest& request) {
  admit(request);
  struct Inflight {
    std::atomic<int>& n;
    ~Inflight() { n--; }
  } inflight{inflight_};
  const evdal::RequestContext* ctx = request.__isset.context ? &request.context : nullptr;
  Plan plan;
  plan.fs = std::make_shared<FetchState>();
  FetchState& fs = *plan.fs;
  fs.start = Clock::now();
  fs.request_id = request_id(request);  // the http backend sends it upstream
  plan.deadline = fs.start + milliseconds(ctx && ctx->__isset.deadline_ms ? ctx->deadline_ms
                                                                          : cfg_.deadline_ms);
  plan.trace = ctx && ctx->__isset.trace && ctx->trace;

  for (const auto& [key, call] : request.calls) {
    evdal::LookupError e;
    if (plan_call(plan, key, call, e)) continue;
    if (call.__isset.critical && call.critical) {
      evdal::LookupFailed x;
      x.call = key;
      x.error = e;
      throw x;  // a critical call refused up front: nothing starts
    }
    plan.early.emplace_back(key, std::move(e));
  }

  fs.pending = (int) plan.jobs.size();
  for (const auto& job : plan.jobs) {
    {
      std::lock_guard<std::mutex> lock(fs.mutex);
      if (fs.failed) break;  // a critical call failed already: start no more
    }
    launch(job);
  }
  wait(plan);
  if (fs.failed) {
    failed_++;
    evdal::LookupFailed x;
    x.call = fs.failed->keys[0];
    x.error = fs.failed->result.error;
    throw x;
  }

  // Merge: one result per key; duplicate calls share their job's result.
  out.request_id = request_id(request);
  for (const auto& job : plan.jobs) {
    evdal::Span span = make_span(fs, job->launched, job->finished, job->lookup->backend_name);
    for (size_t i = 0; i < job->keys.size(); i++) {
      evdal::LookupResult& r = out.results[job->keys[i]];
      r = i + 1 < job->keys.size() ? job->result : std::move(job->result);
      if (plan.trace) r.__set_span(span);
    }
  }
  for (auto& [key, error] : plan.early) {
    evdal::LookupResult& r = out.results[key];
    r.__set_error(std::move(error));
    if (plan.trace) r.__set_span(make_span(fs, fs.start, fs.start, "none"));
  }
  out.server_us =
      std::max<int64_t>(duration_cast<microseconds>(Clock::now() - fs.start).count(), 1);
  answered_.fetch_add(1, std::memory_order_relaxed);
  calls_.fetch_add(out.results.size(), std::memory_order_relaxed);
  for (const auto& [key, r] : out.results)
    if (r.__isset.error && r.error.kind > 0 && r.error.kind <= evdal::ErrorKind::CANCELLED)
      errors_[r.error.kind].fetch_add(1, std::memory_order_relaxed);
}

std::string Handler::summary() const {
  std::string kinds;
  uint64_t total = 0;
  for (int k = 1; k <= evdal::ErrorKind::CANCELLED; k++) {
    if (uint64_t n = errors_[k].load()) {
      kinds += format("%s%s %llu", kinds.empty() ? "" : ", ",
                      evdal::to_string((evdal::ErrorKind::type) k).c_str(),
                      (unsigned long long) n);
      total += n;
    }
  }
  return format("%llu fetches answered, %llu failed (critical call); %llu calls, %llu with an "
                "error%s%s%s", (unsigned long long) answered_.load(),
                (unsigned long long) failed_.load(), (unsigned long long) calls_.load(),
                (unsigned long long) total, kinds.empty() ? "" : " (", kinds.c_str(),
                kinds.empty() ? "" : ")");
}

}  // namespace peer

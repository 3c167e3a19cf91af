// The DataAccess handler: runs on a ThreadManager worker of TNonblockingServer, fans a
// fetch's calls out on the pools of their lookups (a database's, or the general lookup
// pool), waits for them all with their deadlines, and merges the results.
#pragma once

#include <thrift/concurrency/ThreadManager.h>

#include "DataAccess.h"
#include "peer.h"

namespace peer {

class Handler : public evdal::DataAccessIf {
 public:
  explicit Handler(const Config& cfg);

  void fetch(evdal::FetchResponse& out, const evdal::FetchRequest& request) override;
  void lookups(std::vector<evdal::LookupInfo>& out) override { out = infos_; }
  void ping(std::string& out) override { out = "pong"; }

  // "N fetches answered, C calls, E with an error (TIMEOUT t...)": printed at exit, since the
  // load generator counts failed RPCs only, and a benchmark run with calls answered TIMEOUT
  // measured less work.
  std::string summary() const;

 private:
  struct Plan;

  void admit(const evdal::FetchRequest& request);
  bool plan_call(Plan& plan, const std::string& key, const evdal::LookupCall& call,
                 evdal::LookupError& error);
  void launch(const std::shared_ptr<Job>& job);
  void submit(std::shared_ptr<Job> job);
  void run(const std::shared_ptr<Job>& job);  // on a lookup-pool thread
  void release(Lookup& l);
  void wait(Plan& plan);
  std::string request_id(const evdal::FetchRequest& request);

  const Config& cfg_;
  std::vector<evdal::LookupInfo> infos_;
  std::atomic<int> inflight_{0};
  std::atomic<uint64_t> next_id_{0};
  std::atomic<uint64_t> answered_{0}, failed_{0}, calls_{0};
  std::atomic<uint64_t> errors_[evdal::ErrorKind::CANCELLED + 1] = {};
  std::string id_prefix_;
};

}  // namespace peer

// evdal-peer-cpp --config FILE [--listen HOST:PORT] [--io-threads N] [--workers N]
//                [--lookup-threads N] [--sqlite-threads N]
//
// TNonblockingServer (framed transport, binary protocol) with a ThreadManager running the
// handlers. The calls they fan out run on more ThreadManagers: one per [database NAME] for
// SQL (its `workers` threads, each with its own connection, as evdal), and the lookup pool
// for the rest (delay).
#include <getopt.h>
#include <pthread.h>
#include <signal.h>

#include <thrift/concurrency/ThreadFactory.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/transport/TNonblockingServerSocket.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "peer_handler.h"

using apache::thrift::concurrency::ThreadFactory;
using apache::thrift::concurrency::ThreadManager;

namespace {

// The defaults are a compromise of the tuning runs on 2 cores: few handlers suit short calls,
// many suit sleeping ones (bench/tune_peer.py; docs/BENCHMARKS.md has the table).
struct Options {
  std::string config, listen;
  int io_threads = 2;
  int workers = 64;
  int lookup_threads = 256;
  int sqlite_threads = 0;  // 0: each database's `workers`
};

[[noreturn]] void usage(int status) {
  std::fprintf(status ? stderr : stdout,
               "usage: evdal-peer-cpp --config FILE [--listen HOST:PORT] [--io-threads N]\n"
               "                      [--workers N] [--lookup-threads N] [--sqlite-threads N]\n"
               "  --listen          overrides [server] listen (port 0: any free port)\n"
               "  --io-threads      TNonblockingServer IO threads (default 2)\n"
               "  --workers         ThreadManager threads running the handlers (default 64)\n"
               "  --lookup-threads  threads running the delay calls fanned out (default 256)\n"
               "  --sqlite-threads  threads (connections) per database, overriding its\n"
               "                    `workers` key (default: the config's, 4 if unset)\n");
  std::exit(status);
}

int positive(const char* opt, const char* text) {
  char* end = nullptr;
  long n = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || n < 1 || n > 100000) {
    std::fprintf(stderr, "evdal-peer-cpp: %s: expected a number from 1 to 100000, got \"%s\"\n",
                 opt, text);
    std::exit(2);
  }
  return (int) n;
}

Options parse_options(int argc, char** argv) {
  static const option longopts[] = {
      {"config", required_argument, nullptr, 'c'},
      {"listen", required_argument, nullptr, 'l'},
      {"io-threads", required_argument, nullptr, 'i'},
      {"workers", required_argument, nullptr, 'w'},
      {"lookup-threads", required_argument, nullptr, 'L'},
      {"sqlite-threads", required_argument, nullptr, 'S'},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  Options o;
  int c;
  while ((c = getopt_long(argc, argv, "c:l:h", longopts, nullptr)) != -1) {
    switch (c) {
      case 'c': o.config = optarg; break;
      case 'l': o.listen = optarg; break;
      case 'i': o.io_threads = positive("--io-threads", optarg); break;
      case 'w': o.workers = positive("--workers", optarg); break;
      case 'L': o.lookup_threads = positive("--lookup-threads", optarg); break;
      case 'S': o.sqlite_threads = positive("--sqlite-threads", optarg); break;
      case 'h': usage(0);
      default: usage(2);
    }
  }
  if (o.config.empty() || optind != argc) usage(2);
  return o;
}

// "127.0.0.1:9090" or "[::1]:9090".
bool split_listen(const std::string& listen, std::string& host, int& port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  long p = std::strtol(listen.c_str() + colon + 1, &end, 10);
  port = (int) p;
  return *end == '\0' && colon + 1 < listen.size() && p >= 0 && p <= 65535;
}

std::shared_ptr<ThreadManager> pool(int threads) {
  auto tm = ThreadManager::newSimpleThreadManager(threads);
  // Joinable threads: stop() then waits for them, and each pool thread's SQLite connections
  // (thread_local) are closed before the process exits.
  tm->threadFactory(std::make_shared<ThreadFactory>(false));
  tm->start();
  return tm;
}

// Prints the address once the socket listens: the e2e harness and scripts wait for it.
class Ready : public apache::thrift::server::TServerEventHandler {
 public:
  Ready(apache::thrift::server::TNonblockingServer& server, std::string host)
      : server_(server), host_(std::move(host)) {}
  void preServe() override {
    std::fprintf(stderr, "listening on %s%s%s:%d\n", host_.find(':') != std::string::npos ? "[" : "",
                 host_.c_str(), host_.find(':') != std::string::npos ? "]" : "",
                 server_.getListenPort());
    std::fflush(stderr);
    serving = true;
  }
  std::atomic<bool> serving{false};

 private:
  apache::thrift::server::TNonblockingServer& server_;
  std::string host_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  std::unique_ptr<peer::Config> cfg;
  try {
    cfg = peer::load_config(o.config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evdal-peer-cpp: %s\n", e.what());
    return 2;
  }
  std::string host, listen = o.listen.empty() ? cfg->listen : o.listen;
  int port = 0;
  if (!split_listen(listen, host, port)) {
    std::fprintf(stderr, "evdal-peer-cpp: listen \"%s\": expected HOST:PORT\n", listen.c_str());
    return 2;
  }

  // SIGTERM and SIGINT are taken by one thread with sigwait(): blocked here, before any other
  // thread starts, so that every thread inherits the mask. A client gone mid-reply is no
  // reason to die: SIGPIPE is ignored.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto lookup_pool = pool(o.lookup_threads);
  for (auto& [name, db] : cfg->databases)
    if (db->kind == "sqlite")  // Redis calls run on the lookup pool
      db->pool = pool(o.sqlite_threads ? o.sqlite_threads : db->workers);
  for (auto& l : cfg->lookups) {
    peer::Database* db = l->backend->database();
    if (l->backend->blocking()) l->pool = db ? db->pool : lookup_pool;
  }
  auto handler_pool = pool(o.workers);
  auto handler = std::make_shared<peer::Handler>(*cfg);
  auto processor = std::make_shared<evdal::DataAccessProcessor>(handler);
  auto socket = std::make_shared<apache::thrift::transport::TNonblockingServerSocket>(host, port);
  apache::thrift::server::TNonblockingServer server(
      processor, std::make_shared<apache::thrift::protocol::TBinaryProtocolFactory>(), socket,
      handler_pool);
  server.setNumIOThreads(o.io_threads);
  auto ready = std::make_shared<Ready>(server, host);
  server.setServerEventHandler(ready);

  std::atomic<bool> served{false};
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    // stop() reaches only the IO loops already running (a signal may come in the middle of
    // serve()'s start-up): repeat it until serve() has returned. Once serve() failed, main
    // wakes this thread with a signal of its own, and there is nothing to stop.
    while (!served) {
      if (ready->serving) server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });

  int status = 0;
  try {
    server.serve();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evdal-peer-cpp: %s: %s\n", listen.c_str(), e.what());
    status = 1;
  }
  served = true;
  if (status != 0) pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  // Handlers still running end by their deadlines; their lookups then stop too.
  handler_pool->stop();
  lookup_pool->stop();
  for (auto& [name, db] : cfg->databases) db->pool->stop();
  std::fprintf(stderr, "evdal-peer-cpp: %s\n", handler->summary().c_str());
  return status;
}

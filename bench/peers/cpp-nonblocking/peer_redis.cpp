// redis: evdal's Redis lookups (handlers/evd_backend_redis.c) the way a C++ Thrift user writes
// them: hiredis's blocking API, one connection per lookup-pool thread per [database NAME], a
// call holding its thread until the reply comes or its time runs out (the socket's timeout
// is set to the call's time left). Same command templates, tables and error kinds as evdal.
#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "peer.h"

namespace peer {
namespace {

// An argument: pieces of literal text and params ({name}); the first argument is the command.
struct Piece {
  bool param;
  std::string text;  // the literal, or the param's name
};
using Arg = std::vector<Piece>;

// Splits a template as evdal does (evd_redis_template_new), without its checks: the peer
// serves configs that evdal accepted.
std::vector<Arg> split(const std::string& text, std::vector<std::string>& names) {
  std::vector<Arg> args;
  const char* p = text.c_str();
  for (;;) {
    std::string word;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0') return args;
    while (*p && *p != ' ' && *p != '\t') {
      if (*p != '"') {
        word += *p++;
        continue;
      }
      for (p++; *p && *p != '"'; p++) {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
        word += *p;
      }
      if (*p) p++;
    }
    Arg a;
    std::string lit;
    for (size_t i = 0; i < word.size(); i++) {
      if ((word[i] == '{' || word[i] == '}') && i + 1 < word.size() && word[i + 1] == word[i]) {
        lit += word[i++];
      } else if (word[i] == '{') {
        size_t end = word.find('}', i);
        if (!lit.empty()) a.push_back({false, lit});
        lit.clear();
        std::string name = word.substr(i + 1, end - i - 1);
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
        a.push_back({true, name});
        i = end;
      } else {
        lit += word[i];
      }
    }
    if (!lit.empty() || a.empty()) a.push_back({false, lit});
    args.push_back(std::move(a));
  }
}

// A param's text as evdal writes it (evd_redis_param_text); false for null.
bool param_text(const evdal::Value& v, std::string& out) {
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  switch (kind_of(v)) {
    case Kind::Int: out += std::to_string(v.int_value); return true;
    case Kind::Real:
      if (!std::isfinite(v.real_value)) {
        out += std::isnan(v.real_value) ? "nan" : v.real_value > 0 ? "inf" : "-inf";
        return true;
      }
      for (int digits = 15; digits <= 17; digits++) {
        g_ascii_formatd(buf, sizeof buf, digits == 15 ? "%.15g" : digits == 16 ? "%.16g" : "%.17g",
                        v.real_value);
        if (g_ascii_strtod(buf, nullptr) == v.real_value) break;
      }
      out += buf;
      return true;
    case Kind::Text: out += v.text_value; return true;
    case Kind::Blob: out += v.blob_value; return true;
    default: return false;
  }
}

enum class Shape { Value, FieldValue, MemberScore };

evdal::Value bytes_value(const redisReply* r) {
  evdal::Value v;
  if (g_utf8_validate_len(r->str, r->len, nullptr) || std::memchr(r->str, 0, r->len))
    v.__set_text_value(std::string(r->str, r->len));
  else
    v.__set_blob_value(std::string(r->str, r->len));
  return v;
}

// The reply as evdal maps it (evd_redis_reply_rows).
void map_reply(const redisReply* r, Shape shape, evdal::LookupResult& out) {
  evdal::Table t;
  if (r->type == REDIS_REPLY_ERROR) {
    set_error(out, evdal::ErrorKind::BACKEND, std::string(r->str, r->len));
    return;
  }
  t.columns = shape == Shape::FieldValue ? std::vector<std::string>{"field", "value"}
            : shape == Shape::MemberScore ? std::vector<std::string>{"member", "score"}
            : std::vector<std::string>{"value"};
  auto cell = [](const redisReply* e) {
    evdal::Value v;
    if (e->type == REDIS_REPLY_INTEGER) v.__set_int_value(e->integer);
    else if (e->type == REDIS_REPLY_NIL) v.__set_null_value(true);
    else v = bytes_value(e);
    return v;
  };
  if (r->type == REDIS_REPLY_NIL) {
  } else if (r->type != REDIS_REPLY_ARRAY) {
    t.rows.push_back({cell(r)});
  } else if (shape == Shape::Value) {
    for (size_t i = 0; i < r->elements; i++) t.rows.push_back({cell(r->element[i])});
  } else {
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      evdal::Value second;
      if (shape == Shape::FieldValue) second = bytes_value(r->element[i + 1]);
      else second.__set_real_value(g_ascii_strtod(r->element[i + 1]->str, nullptr));
      t.rows.push_back({bytes_value(r->element[i]), second});
    }
  }
  set_table(out, std::move(t));
}

// This thread's connection to each Redis database, made at its first call.
thread_local std::map<const Database*, redisContext*> t_redis;

class RedisBackend : public Backend {
 public:
  RedisBackend(Database* db, std::vector<Arg> args, Shape shape)
      : db_(db), args_(std::move(args)), shape_(shape) {}

  void run(Job& job, evdal::LookupResult& out) override {
    std::vector<std::string> argv(args_.size());
    for (size_t i = 0; i < args_.size(); i++)
      for (const Piece& p : args_[i]) {
        if (!p.param) {
          argv[i] += p.text;
          continue;
        }
        auto it = job.params.find(p.text);
        if (it == job.params.end() || !param_text(it->second, argv[i])) {
          set_error(out, evdal::ErrorKind::BAD_PARAMS,
                    format("param %s: null is no argument", p.text.c_str()));
          return;
        }
      }
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(job.deadline - Clock::now());
    if (left.count() <= 0) {
      set_interrupted(job, out);
      return;
    }
    redisContext* c = connection(out);
    if (c == nullptr) return;
    struct timeval tv = {(time_t) (left.count() / 1000000), (suseconds_t) (left.count() % 1000000)};
    redisSetTimeout(c, tv);
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const std::string& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, (int) argv.size(), ptrs.data(),
                                                         lens.data()));
    if (r == nullptr) {  // the connection cannot be used again: its reply may still come
      bool timed_out = c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
      std::string why = c->errstr;
      redisFree(c);
      t_redis.erase(db_);
      if (timed_out)
        set_interrupted(job, out);
      else
        set_error(out, evdal::ErrorKind::BACKEND,
                  format("database %s: connection lost: %s", db_->name.c_str(), why.c_str()));
      return;
    }
    map_reply(r, shape_, out);
    freeReplyObject(r);
  }

 private:
  redisContext* connection(evdal::LookupResult& out) {
    redisContext*& c = t_redis[db_];
    if (c != nullptr) return c;
    const std::string& a = db_->address;
    if (a[0] == '/') {
      c = redisConnectUnix(a.c_str());
    } else {
      size_t colon = a.rfind(':');
      c = redisConnect(a.substr(0, colon).c_str(), std::atoi(a.c_str() + colon + 1));
    }
    if (c != nullptr && c->err == 0 && !db_->password.empty()) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "AUTH %b", db_->password.data(),
                                                      db_->password.size()));
      if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
        set_error(out, evdal::ErrorKind::BACKEND,
                  format("database %s unavailable: AUTH: %s", db_->name.c_str(),
                         r ? r->str : c->errstr));
        if (r) freeReplyObject(r);
        redisFree(c);
        c = nullptr;
        return nullptr;
      }
      freeReplyObject(r);
    }
    if (c == nullptr || c->err != 0) {
      set_error(out, evdal::ErrorKind::BACKEND,
                format("database %s unavailable: %s", db_->name.c_str(),
                       c ? c->errstr : "out of memory"));
      if (c) redisFree(c);
      c = nullptr;
    }
    return c;
  }

  Database* db_;
  std::vector<Arg> args_;
  Shape shape_;
};

}  // namespace

std::unique_ptr<Backend> open_redis(const Ini& ini, const std::string& group, Lookup& l,
                                    const Config& cfg) {
  std::string name = ini.require(group, "database");
  auto it = cfg.databases.find(name);
  if (it == cfg.databases.end() || it->second->kind != "redis")
    ini.fail(group, "database", "no [database " + name + "] with backend = redis is configured");
  std::vector<std::string> names;
  std::vector<Arg> args = split(ini.require(group, "command"), names);
  if (args.empty()) ini.fail(group, "command", "no command");
  std::string cmd = args[0][0].text;
  for (char& ch : cmd) ch = g_ascii_toupper(ch);
  Shape shape = cmd == "HGETALL" ? Shape::FieldValue : Shape::Value;
  if (g_str_has_prefix(cmd.c_str(), "ZRANGE") || g_str_has_prefix(cmd.c_str(), "ZREVRANGE"))
    for (const Arg& a : args)
      if (a.size() == 1 && !a[0].param && g_ascii_strcasecmp(a[0].text.c_str(), "WITHSCORES") == 0)
        shape = Shape::MemberScore;
  for (const std::string& n : names) l.params.push_back({n, ParamType::Any, true});
  l.backend_name = "redis:" + name;
  return std::make_unique<RedisBackend>(it->second.get(), std::move(args), shape);
}

}  // namespace peer

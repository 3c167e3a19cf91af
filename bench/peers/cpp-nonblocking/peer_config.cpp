// The configuration: evdal's own INI file read with GKeyFile. Only what the peer needs is
// read; evdal's other keys (TLS, admin, connection limits...) are ignored.
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <stdexcept>

#include "peer.h"

namespace peer {

std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char* s = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  std::string out(s);
  g_free(s);
  return out;
}

// ---- Ini ----

Ini::Ini(const std::string& path) : kf_(g_key_file_new()), path_(path) {
  GError* error = nullptr;
  char* dir = g_path_get_dirname(path.c_str());
  dir_ = dir;
  g_free(dir);
  if (!g_key_file_load_from_file(kf_, path.c_str(), G_KEY_FILE_NONE, &error)) {
    std::string msg = path + ": " + error->message;
    g_error_free(error);
    g_key_file_free(kf_);
    throw std::runtime_error(msg);
  }
}

Ini::~Ini() { g_key_file_free(kf_); }

static std::vector<std::string> take_strv(char** v) {
  std::vector<std::string> out;
  for (char** p = v; p && *p; p++) out.emplace_back(*p);
  g_strfreev(v);
  return out;
}

std::vector<std::string> Ini::groups() const {
  return take_strv(g_key_file_get_groups(kf_, nullptr));
}

std::vector<std::string> Ini::keys(const std::string& group) const {
  return take_strv(g_key_file_get_keys(kf_, group.c_str(), nullptr, nullptr));
}

bool Ini::has(const std::string& group, const std::string& key) const {
  return g_key_file_has_key(kf_, group.c_str(), key.c_str(), nullptr);
}

std::string Ini::get(const std::string& group, const std::string& key,
                     const std::string& def) const {
  char* raw = g_key_file_get_value(kf_, group.c_str(), key.c_str(), nullptr);
  if (raw == nullptr) return def;
  // A '#' after a blank starts a comment, as in evdal's reader.
  for (char* p = raw; *p; p++) {
    if (*p == '#' && p > raw && (p[-1] == ' ' || p[-1] == '\t')) {
      *p = '\0';
      break;
    }
  }
  std::string value(g_strstrip(raw));
  g_free(raw);
  return value;
}

std::string Ini::require(const std::string& group, const std::string& key) const {
  std::string v = get(group, key);
  if (v.empty()) fail(group, key, "is required");
  return v;
}

int64_t Ini::integer(const std::string& group, const std::string& key, int64_t def,
                     int64_t min, int64_t max) const {
  if (!has(group, key)) return def;
  std::string v = get(group, key);
  char* end = nullptr;
  errno = 0;
  int64_t n = g_ascii_strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0)
    fail(group, key, format("\"%s\" is not an integer", v.c_str()));
  if (n < min || n > max)
    fail(group, key, format("%" G_GINT64_FORMAT " is out of range (%" G_GINT64_FORMAT
                            "..%" G_GINT64_FORMAT ")", n, min, max));
  return n;
}

std::string Ini::resolve(const std::string& path) const {
  if (g_path_is_absolute(path.c_str())) return path;
  char* full = g_build_filename(dir_.c_str(), path.c_str(), nullptr);
  std::string out(full);
  g_free(full);
  return out;
}

void Ini::fail(const std::string& group, const std::string& key,
               const std::string& message) const {
  throw std::runtime_error(path_ + ": [" + group + "]" + (key.empty() ? "" : " " + key) + ": " +
                           message);
}

// ---- Lookups ----

const ParamSpec* Lookup::param(const std::string& n) const {
  for (const ParamSpec& p : params)
    if (p.name == n) return &p;
  return nullptr;
}

std::string Lookup::param_names() const {
  std::string s;
  for (const ParamSpec& p : params) s += (s.empty() ? "" : ", ") + p.name;
  return s.empty() ? "none" : s;
}

static std::unique_ptr<Lookup> open_lookup(const Ini& ini, const std::string& group,
                                           const Config& cfg) {
  auto l = std::make_unique<Lookup>();
  // A lookup naming a database is SQL: "backend = sqlite" may go without saying.
  std::string kind = ini.has(group, "backend") || !ini.has(group, "database")
                         ? (!ini.has(group, "backend") && ini.has(group, "upstream")
                                ? "http" : ini.require(group, "backend"))
                         : "sqlite";
  if (!ini.has(group, "backend") && ini.has(group, "database")) {  // the database's kind
    auto db = cfg.databases.find(ini.get(group, "database"));
    if (db != cfg.databases.end()) kind = db->second->kind;
  }
  l->name = group.substr(strlen("lookup "));
  l->backend_name = kind + ":" + l->name;
  l->timeout_ms = (int) ini.integer(group, "timeout_ms", 0, 0, 3600000);
  l->max_concurrent = (int) ini.integer(group, "max_concurrent", 0, 0, 1000000);
  l->max_queue = (int) ini.integer(group, "max_queue", 1000, 0, 10000000);
  l->description = ini.get(group, "description");
  if (kind == "delay")
    l->backend = open_delay(ini, group, *l);
  else if (kind == "static")
    l->backend = open_static(ini, group, *l);
  else if (kind == "sqlite")
    l->backend = open_sqlite(ini, group, *l, cfg);
  else if (kind == "redis")
    l->backend = open_redis(ini, group, *l, cfg);
  else if (kind == "http")
    l->backend = open_http(ini, group, *l, cfg);
  else
    ini.fail(group, "backend", "backend \"" + kind + "\" is not supported by the peer "
                               "(it has: delay, static, sqlite, redis, http)");
  return l;
}

std::unique_ptr<Config> load_config(const std::string& path) {
  Ini ini(path);
  auto cfg = std::make_unique<Config>();
  const std::string s = "server";

  cfg->listen = ini.get(s, "listen", cfg->listen);
  cfg->deadline_ms = (int) ini.integer(s, "deadline_ms", 1000, 1, 3600000);
  cfg->max_calls = (int) ini.integer(s, "max_calls", 64, 1, 100000);
  cfg->max_inflight = (int) ini.integer(s, "max_inflight", 100000, 1, 100000000);
  cfg->workers = (int) ini.integer(s, "workers", 4, 1, 1024);
  // Databases first: lookups name them.
  for (const std::string& g : ini.groups())
    if (g_str_has_prefix(g.c_str(), "database "))
      cfg->databases[g.substr(strlen("database "))] = open_database(ini, g, *cfg);
  for (const std::string& g : ini.groups())
    if (g_str_has_prefix(g.c_str(), "upstream "))
      cfg->upstreams[g.substr(strlen("upstream "))] = open_upstream(ini, g);
  for (const std::string& g : ini.groups()) {
    if (!g_str_has_prefix(g.c_str(), "lookup ")) continue;
    cfg->lookups.push_back(open_lookup(ini, g, *cfg));
    cfg->by_name[cfg->lookups.back()->name] = cfg->lookups.back().get();
  }
  return cfg;
}

// ---- Results ----

void set_error(evdal::LookupResult& out, evdal::ErrorKind::type kind, const std::string& msg) {
  out.error.kind = kind;
  out.error.message = msg;
  out.__isset.error = true;
  out.__isset.table = false;
}

void set_table(evdal::LookupResult& out, evdal::Table&& table) {
  out.table = std::move(table);
  out.__isset.table = true;
  out.__isset.error = false;
}

std::string timeout_message(const Job& job, bool queued) {
  auto budget = std::chrono::duration_cast<std::chrono::milliseconds>(job.deadline -
                                                                      job.fetch->start);
  return format("lookup %s timed out after %lld ms%s", job.lookup->name.c_str(),
                (long long) budget.count(),
                queued ? " waiting for its turn (max_concurrent)" : "");
}

void set_interrupted(const Job& job, evdal::LookupResult& out) {
  if (Clock::now() >= job.deadline)
    set_error(out, evdal::ErrorKind::TIMEOUT, timeout_message(job));
  else
    set_error(out, evdal::ErrorKind::CANCELLED, "cancelled: the request ended");
}

evdal::Value int_value(int64_t v) {
  evdal::Value x;
  x.__set_int_value(v);
  return x;
}

Kind kind_of(const evdal::Value& v) {
  const auto& i = v.__isset;
  if (i.null_value + i.int_value + i.real_value + i.text_value + i.blob_value != 1)
    return Kind::Invalid;
  if (i.null_value) return Kind::Null;
  if (i.int_value) return Kind::Int;
  if (i.real_value) return Kind::Real;
  return i.text_value ? Kind::Text : Kind::Blob;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Int: return "int";
    case Kind::Real: return "real";
    case Kind::Text: return "text";
    case Kind::Blob: return "blob";
    default: return "malformed (not exactly one field set)";
  }
}

}  // namespace peer

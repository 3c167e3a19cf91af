// The three kinds of lookup the benchmarks use, answering exactly like evdal's backends
// (handlers/evd_backend_{delay,static,sqlite}.c, storage/evd_sqlite.c): same tables, same
// error kinds and messages. What differs is how they wait: here a call holds a pool thread
// for as long as it runs, which is the thread-pool design the peer stands for.
#include <sqlite3.h>

#include <cstring>

#include "peer.h"

namespace peer {
namespace {

// ---- delay: sleeps delay_ms, then answers [slept_ms]. ----

constexpr int64_t kDelayMaxMs = 3600000;  // as evdal: an hour, a longer one is a typo

class DelayBackend : public Backend {
 public:
  explicit DelayBackend(int64_t default_ms) : default_ms_(default_ms) {}

  void run(Job& job, evdal::LookupResult& out) override {
    int64_t ms = default_ms_;
    auto it = job.params.find("delay_ms");
    if (it != job.params.end() && it->second.__isset.int_value) ms = it->second.int_value;
    if (ms < 0 || ms > kDelayMaxMs) {
      set_error(out, evdal::ErrorKind::BAD_PARAMS,
                format("param delay_ms: %lld is outside 0..%d", (long long) ms, (int) kDelayMaxMs));
      return;
    }
    // Waits on the fetch's condition variable rather than in sleep_for(): a call whose time
    // ran out, or whose fetch ended (a critical call failed), gives its thread back at once.
    auto wake = Clock::now() + std::chrono::milliseconds(ms);
    FetchState& fs = *job.fetch;
    {
      std::unique_lock<std::mutex> lock(fs.mutex);
      fs.ended_cv.wait_until(lock, std::min(wake, job.deadline),
                             [&] { return fs.ended.load(std::memory_order_relaxed); });
    }
    if (Clock::now() < wake) {
      set_interrupted(job, out);
      return;
    }
    evdal::Table t;
    t.columns = {"slept_ms"};
    t.rows = {{int_value(ms)}};
    set_table(out, std::move(t));
  }

 private:
  int64_t default_ms_;
};

// ---- static: a table written in the config, answered from memory. ----

class StaticBackend : public Backend {
 public:
  explicit StaticBackend(evdal::Table table) : table_(std::move(table)) {}
  bool blocking() const override { return false; }
  void run(Job&, evdal::LookupResult& out) override { set_table(out, evdal::Table(table_)); }

 private:
  evdal::Table table_;
};

// Splits a comma-separated line as evdal does: blanks around fields go, a field in double
// quotes keeps commas and blanks (\" and \\ escape inside). false on a malformed line.
bool split_fields(const std::string& line, std::vector<std::string>& fields,
                  std::vector<bool>& quoted) {
  const char* p = line.c_str();
  for (;;) {
    std::string field;
    while (*p == ' ' || *p == '\t') p++;
    bool q = *p == '"';
    if (q) {
      bool closed = false;
      for (p++; *p && !closed; p++) {
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
          field += *++p;
        else if (*p == '"')
          closed = true;
        else
          field += *p;
      }
      if (!closed) return false;
      while (*p == ' ' || *p == '\t') p++;
    } else {
      while (*p != ',' && *p != '\0') field += *p++;
      while (!field.empty() && g_ascii_isspace(field.back())) field.pop_back();
    }
    fields.push_back(std::move(field));
    quoted.push_back(q);
    if (*p == '\0') return true;
    if (*p != ',') return false;
    p++;
  }
}

// An unquoted integer is an int, a decimal number a real, `null` a NULL, the rest text.
evdal::Value static_value(const std::string& text, bool quoted) {
  evdal::Value v;
  char* end = nullptr;
  if (quoted) {
    v.__set_text_value(text);
  } else if (text == "null") {
    v.__set_null_value(true);
  } else if (int64_t i = g_ascii_strtoll(text.c_str(), &end, 10); !text.empty() && !*end) {
    v.__set_int_value(i);
  } else if (double d = g_ascii_strtod(text.c_str(), &end); !text.empty() && !*end) {
    v.__set_real_value(d);
  } else {
    v.__set_text_value(text);
  }
  return v;
}

// ---- sqlite: one statement per lookup, params bound by name. ----

// How often (in SQLite VM instructions) a running statement checks its deadline and cancel
// flag: as evdal, a few microseconds of work between checks.
constexpr int kProgressOps = 1000;

// One pool thread's read-only connection to one database, with the statements it has
// prepared so far (on first use, then reused for the thread's life).
struct Connection {
  sqlite3* db = nullptr;
  std::vector<sqlite3_stmt*> stmts;  // by statement id
  const Job* current = nullptr;      // read by the progress handler, on this thread only
  ~Connection() {
    for (sqlite3_stmt* s : stmts) sqlite3_finalize(s);
    sqlite3_close(db);
  }
};

// Non-zero interrupts the statement: its call's time ran out or its fetch ended.
int on_progress(void* arg) {
  const Job* job = static_cast<Connection*>(arg)->current;
  return job != nullptr && job->stopped();
}

sqlite3* open_readonly(const Database& d, std::string& err) {
  sqlite3* db = nullptr;
  if (!g_file_test(d.path.c_str(), G_FILE_TEST_IS_REGULAR)) {
    err = d.path + ": no such database file";
    return nullptr;
  }
  // NOMUTEX: a connection belongs to one thread.
  int rc = sqlite3_open_v2(d.path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(db, d.busy_timeout_ms);
    rc = sqlite3_exec(db, "PRAGMA query_only = ON; SELECT count(*) FROM sqlite_schema;",
                      nullptr, nullptr, nullptr);
  }
  if (rc != SQLITE_OK) {
    err = d.path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return nullptr;
  }
  return db;
}

// Compiles one read-only statement; nullptr with SQLite's message otherwise.
sqlite3_stmt* compile(sqlite3* db, const std::string& sql, std::string& err) {
  sqlite3_stmt* st = nullptr;
  const char* tail = nullptr;
  if (sqlite3_prepare_v3(db, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &st, &tail) !=
      SQLITE_OK) {
    err = sqlite3_errmsg(db);
    return nullptr;
  }
  if (st == nullptr) {
    err = "no SQL statement";
    return nullptr;
  }
  while (tail && g_ascii_isspace(*tail)) tail++;
  if (tail && *tail != '\0' && *tail != ';')
    err = format("one statement only: \"%.40s\" follows the first", tail);
  else if (!sqlite3_stmt_readonly(st))
    err = "the statement writes to the database; lookups are read-only";
  else
    return st;
  sqlite3_finalize(st);
  return nullptr;
}

// This thread's connections, one per database, closed when the pool thread exits.
thread_local std::map<const Database*, std::unique_ptr<Connection>> t_connections;

class SqliteBackend : public Backend {
 public:
  SqliteBackend(Database* db, size_t stmt, int max_rows)
      : db_(db), stmt_(stmt), max_rows_(max_rows) {}

  Database* database() const override { return db_; }

  void run(Job& job, evdal::LookupResult& out) override {
    std::string err;
    sqlite3_stmt* st = statement(err);
    if (st == nullptr) {
      set_error(out, evdal::ErrorKind::BACKEND, err);
      return;
    }
    Connection& c = *t_connections[db_];
    c.current = &job;
    execute(job, c.db, st, out);
    c.current = nullptr;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }

 private:
  // This thread's prepared statement, opening the connection or preparing it on first use.
  sqlite3_stmt* statement(std::string& err) {
    std::unique_ptr<Connection>& c = t_connections[db_];
    if (!c) {
      sqlite3* db = open_readonly(*db_, err);
      if (db == nullptr) return nullptr;
      c = std::make_unique<Connection>();
      c->db = db;
      sqlite3_progress_handler(db, kProgressOps, on_progress, c.get());
    }
    if (c->stmts.size() <= stmt_) c->stmts.resize(db_->statements.size(), nullptr);
    if (c->stmts[stmt_] == nullptr) c->stmts[stmt_] = compile(c->db, db_->statements[stmt_], err);
    return c->stmts[stmt_];
  }

  static int bind(sqlite3_stmt* st, int i, const evdal::Value& v) {
    switch (kind_of(v)) {
      case Kind::Int: return sqlite3_bind_int64(st, i, v.int_value);
      case Kind::Real: return sqlite3_bind_double(st, i, v.real_value);
      case Kind::Text:
        return sqlite3_bind_text64(st, i, v.text_value.data(), v.text_value.size(),
                                   SQLITE_TRANSIENT, SQLITE_UTF8);
      case Kind::Blob:
        return sqlite3_bind_blob64(st, i, v.blob_value.data(), v.blob_value.size(),
                                   SQLITE_TRANSIENT);
      default: return sqlite3_bind_null(st, i);
    }
  }

  void execute(const Job& job, sqlite3* db, sqlite3_stmt* st, evdal::LookupResult& out) {
    // Params by name: ":user_id" takes the call's "user_id" (the handler checked that every
    // one is there).
    for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++) {
      const char* name = sqlite3_bind_parameter_name(st, i);
      auto it = name ? job.params.find(name + 1) : job.params.end();
      if ((it != job.params.end() ? bind(st, i, it->second) : sqlite3_bind_null(st, i)) !=
          SQLITE_OK) {
        set_error(out, evdal::ErrorKind::BACKEND,
                  format("binding %s: %s", name ? name : "?", sqlite3_errmsg(db)));
        return;
      }
    }
    int n = sqlite3_column_count(st), rows = 0, rc;
    evdal::Table t;
    for (int i = 0; i < n; i++) t.columns.emplace_back(sqlite3_column_name(st, i));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (rows++ == max_rows_) {
        set_error(out, evdal::ErrorKind::BACKEND,
                  format("more than max_rows (%d) rows", max_rows_));
        return;
      }
      std::vector<evdal::Value>& row = t.rows.emplace_back(n);
      for (int i = 0; i < n; i++) {
        const char* p;
        int len;
        switch (sqlite3_column_type(st, i)) {
          case SQLITE_INTEGER: row[i].__set_int_value(sqlite3_column_int64(st, i)); break;
          case SQLITE_FLOAT: row[i].__set_real_value(sqlite3_column_double(st, i)); break;
          case SQLITE_TEXT:
            p = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
            len = sqlite3_column_bytes(st, i);
            if (!g_utf8_validate_len(p, len, nullptr)) {
              set_error(out, evdal::ErrorKind::BACKEND,
                        format("column %s holds text that is not valid UTF-8",
                               sqlite3_column_name(st, i)));
              return;
            }
            row[i].__set_text_value(std::string(p, len));
            break;
          case SQLITE_BLOB:
            p = static_cast<const char*>(sqlite3_column_blob(st, i));
            len = sqlite3_column_bytes(st, i);
            row[i].__set_blob_value(len > 0 ? std::string(p, len) : std::string());
            break;
          default: row[i].__set_null_value(true);
        }
      }
    }
    if (rc == SQLITE_INTERRUPT)
      set_interrupted(job, out);
    else if (rc != SQLITE_DONE)
      set_error(out, evdal::ErrorKind::BACKEND,
                format("%s (%s)", sqlite3_errmsg(db), sqlite3_errstr(rc)));
    else
      set_table(out, std::move(t));
  }

  Database* db_;
  size_t stmt_;
  int max_rows_;
};

}  // namespace

// ---- Factories ----

std::unique_ptr<Backend> open_delay(const Ini& ini, const std::string& group, Lookup& l) {
  int64_t ms = ini.integer(group, "delay_ms", 100, 0, kDelayMaxMs);
  l.params.push_back({"delay_ms", ParamType::Int, false});
  return std::make_unique<DelayBackend>(ms);
}

std::unique_ptr<Backend> open_static(const Ini& ini, const std::string& group, Lookup&) {
  std::vector<std::string> names;
  std::vector<bool> quoted;
  evdal::Table t;
  if (!split_fields(ini.require(group, "columns"), names, quoted))
    ini.fail(group, "columns", "expected a comma-separated list");
  t.columns = names;
  // Rows are the keys starting with "row", in file order.
  for (const std::string& key : ini.keys(group)) {
    if (!g_str_has_prefix(key.c_str(), "row")) continue;
    std::vector<std::string> fields;
    quoted.clear();
    if (!split_fields(ini.get(group, key), fields, quoted))
      ini.fail(group, key, "unterminated quote");
    if (fields.size() != names.size())
      ini.fail(group, key, format("%zu values for %zu columns", fields.size(), names.size()));
    std::vector<evdal::Value>& row = t.rows.emplace_back();
    for (size_t i = 0; i < fields.size(); i++) row.push_back(static_value(fields[i], quoted[i]));
  }
  return std::make_unique<StaticBackend>(std::move(t));
}

std::shared_ptr<Database> open_database(const Ini& ini, const std::string& group,
                                        const Config& cfg) {
  auto d = std::make_shared<Database>();
  std::string kind = ini.get(group, "backend", "sqlite");
  d->name = group.substr(strlen("database "));
  if (kind == "redis") {  // peer_redis.cpp
    d->kind = kind;
    d->address = ini.require(group, "address");
    if (ini.has(group, "password_file")) {
      gchar* text = nullptr;
      if (!g_file_get_contents(ini.resolve(ini.get(group, "password_file")).c_str(), &text,
                               nullptr, nullptr))
        ini.fail(group, "password_file", "cannot be read");
      d->password = std::string(text).substr(0, std::strcspn(text, "\r\n"));
      g_free(text);
    }
    return d;
  }
  if (kind != "sqlite")
    ini.fail(group, "backend", "\"" + kind + "\": only sqlite and redis databases exist");
  d->path = ini.resolve(ini.require(group, "path"));
  d->busy_timeout_ms = (int) ini.integer(group, "busy_timeout_ms", 1000, 0, 600000);
  d->workers = (int) ini.integer(group, "workers", cfg.workers, 1, 1024);
  return d;
}

std::unique_ptr<Backend> open_sqlite(const Ini& ini, const std::string& group, Lookup& l,
                                     const Config& cfg) {
  std::string name = ini.require(group, "database"), sql = ini.require(group, "sql"), err;
  int max_rows = (int) ini.integer(group, "max_rows", 1000, 1, 10000000);
  auto it = cfg.databases.find(name);
  if (it == cfg.databases.end())
    ini.fail(group, "database", "no [database " + name + "] is configured");
  Database& d = *it->second;

  // Compile it once now, so that bad SQL stops start-up with SQLite's message, and to learn
  // the params: the statement's :name placeholders, all required, any Value type.
  sqlite3* db = open_readonly(d, err);
  if (db == nullptr) ini.fail("database " + name, "path", err);
  sqlite3_stmt* st = compile(db, sql, err);
  for (int i = 1; st != nullptr && i <= sqlite3_bind_parameter_count(st); i++) {
    const char* p = sqlite3_bind_parameter_name(st, i);
    if (p == nullptr) {
      err = format("parameter %d has no name: use :name placeholders, not ?", i);
      break;
    }
    l.params.push_back({p + 1, ParamType::Any, true});
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (!err.empty()) ini.fail(group, "sql", "lookup " + l.name + ": " + err);
  l.backend_name = "sqlite:" + name;
  d.statements.push_back(sql);
  return std::make_unique<SqliteBackend>(&d, d.statements.size() - 1, max_rows);
}

}  // namespace peer

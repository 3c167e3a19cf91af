// postgresql: the peer's PostgreSQL lookups, written the way a C++ Thrift user would: blocking
// libpq on the database's pool threads, one connection per thread, opened on first use and
// reopened after a failure, statements prepared on first use; answers like evdal's
// (handlers/evd_backend_postgresql.c): the same session settings, the same type table, the
// same error kinds. A call holds its thread for as long as PostgreSQL takes; the handler
// answers TIMEOUT at the deadline regardless, and statement_timeout stops a runaway query.
#include <libpq-fe.h>

#include <cstring>

#include "peer.h"

namespace peer {
namespace {

// :name -> $n outside quotes and comments, not in :: casts; names in $n order.
std::string rewrite(const std::string& sql, std::vector<std::string>& names) {
  std::string out;
  const char* p = sql.c_str();
  while (*p) {
    if (*p == '\'' || *p == '"') {
      char q = *p;
      out += *p++;
      while (*p && *p != q) out += *p++;
      if (*p) out += *p++;
    } else if (p[0] == '-' && p[1] == '-') {
      while (*p && *p != '\n') out += *p++;
    } else if (p[0] == ':' && p[1] == ':') {
      out += "::";
      p += 2;
    } else if (*p == ':' && (g_ascii_isalpha(p[1]) || p[1] == '_')) {
      const char* q = p + 1;
      while (g_ascii_isalnum(*q) || *q == '_') q++;
      std::string name(p + 1, q);
      size_t i = 0;
      while (i < names.size() && names[i] != name) i++;
      if (i == names.size()) names.push_back(name);
      out += "$" + std::to_string(i + 1);
      p = q;
    } else {
      out += *p++;
    }
  }
  return out;
}

struct PgConnection {
  PGconn* pg = nullptr;
  std::vector<bool> prepared;
  ~PgConnection() { PQfinish(pg); }
};

thread_local std::map<const Database*, std::unique_ptr<PgConnection>> t_pg;

class PostgresqlBackend : public Backend {
 public:
  PostgresqlBackend(Database* db, size_t stmt, int max_rows)
      : db_(db), stmt_(stmt), max_rows_(max_rows) {}

  Database* database() const override { return db_; }

  void run(Job& job, evdal::LookupResult& out) override {
    std::string err;
    PgConnection* c = connection(err);
    if (c == nullptr) {
      set_error(out, evdal::ErrorKind::BACKEND,
                format("database %s unavailable: %s", db_->name.c_str(), err.c_str()));
      return;
    }
    const std::vector<std::string>& names = db_->param_names[stmt_];
    std::vector<std::string> text(names.size());
    std::vector<const char*> values(names.size());
    std::vector<int> lengths(names.size()), formats(names.size());
    for (size_t i = 0; i < names.size(); i++) {
      auto it = job.params.find(names[i]);
      const evdal::Value* v = it == job.params.end() ? nullptr : &it->second;
      switch (v ? kind_of(*v) : Kind::Null) {
        case Kind::Int: text[i] = std::to_string(v->int_value); break;
        case Kind::Real: text[i] = format("%.17g", v->real_value); break;
        case Kind::Text: text[i] = v->text_value; break;
        case Kind::Blob: text[i] = v->blob_value; formats[i] = 1; break;
        default: values[i] = nullptr; continue;
      }
      values[i] = text[i].data();
      lengths[i] = (int) text[i].size();
    }
    std::string name = "s" + std::to_string(stmt_);
    PGresult* r = PQexecPrepared(c->pg, name.c_str(), (int) names.size(), values.data(),
                                 lengths.data(), formats.data(), 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      std::string msg = PQresultErrorMessage(r);
      while (!msg.empty() && g_ascii_isspace(msg.back())) msg.pop_back();
      PQclear(r);
      if (PQstatus(c->pg) == CONNECTION_BAD) t_pg.erase(db_);
      set_error(out, evdal::ErrorKind::BACKEND,
                format("database %s: %s", db_->name.c_str(), msg.c_str()));
      return;
    }
    if (job.stopped()) {
      PQclear(r);
      set_interrupted(job, out);
      return;
    }
    convert(r, out);
    PQclear(r);
  }

 private:
  PgConnection* connection(std::string& err) {
    std::unique_ptr<PgConnection>& c = t_pg[db_];
    if (!c) {
      auto n = std::make_unique<PgConnection>();
      std::string options = format(
          "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=1 "
          "-c default_transaction_read_only=on -c statement_timeout=%d",
          db_->statement_timeout_ms);
      const char* keys[] = {"dbname", "options", "client_encoding", "fallback_application_name",
                            nullptr};
      const char* vals[] = {db_->conninfo.c_str(), options.c_str(), "UTF8", "evdal-peer",
                            nullptr};
      n->pg = PQconnectdbParams(keys, vals, 1);
      if (PQstatus(n->pg) != CONNECTION_OK) {
        err = PQerrorMessage(n->pg);
        while (!err.empty() && g_ascii_isspace(err.back())) err.pop_back();
        return nullptr;
      }
      c = std::move(n);
    }
    if (c->prepared.size() <= stmt_) c->prepared.resize(db_->statements.size(), false);
    if (!c->prepared[stmt_]) {
      std::string name = "s" + std::to_string(stmt_);
      PGresult* r = PQprepare(c->pg, name.c_str(), db_->statements[stmt_].c_str(), 0, nullptr);
      bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
      err = ok ? "" : PQresultErrorMessage(r);
      PQclear(r);
      if (!ok) {
        t_pg.erase(db_);
        return nullptr;
      }
      c->prepared[stmt_] = true;
    }
    return c.get();
  }

  static int hex(char ch) { return g_ascii_isdigit(ch) ? ch - '0' : g_ascii_tolower(ch) - 'a' + 10; }

  void convert(PGresult* r, evdal::LookupResult& out) {
    int nf = PQnfields(r), nt = PQntuples(r);
    if (nt > max_rows_) {
      set_error(out, evdal::ErrorKind::BACKEND, format("more than max_rows (%d) rows", max_rows_));
      return;
    }
    evdal::Table t;
    for (int f = 0; f < nf; f++) t.columns.emplace_back(PQfname(r, f));
    for (int row = 0; row < nt; row++) {
      std::vector<evdal::Value>& vals = t.rows.emplace_back(nf);
      for (int f = 0; f < nf; f++) {
        const char* v = PQgetvalue(r, row, f);
        int len = PQgetlength(r, row, f);
        if (PQgetisnull(r, row, f)) {
          vals[f].__set_null_value(true);
          continue;
        }
        switch (PQftype(r, f)) {
          case 20: case 21: case 23: case 26:
            vals[f].__set_int_value(g_ascii_strtoll(v, nullptr, 10)); break;
          case 700: case 701: vals[f].__set_real_value(g_ascii_strtod(v, nullptr)); break;
          case 16: vals[f].__set_int_value(v[0] == 't'); break;
          case 17: {
            std::string b;
            for (int i = 2; i + 1 < len; i += 2) b += (char) (hex(v[i]) << 4 | hex(v[i + 1]));
            vals[f].__set_blob_value(b);
            break;
          }
          default: vals[f].__set_text_value(std::string(v, len));
        }
      }
    }
    set_table(out, std::move(t));
  }

  Database* db_;
  size_t stmt_;
  int max_rows_;
};

}  // namespace

std::unique_ptr<Backend> open_postgresql(const Ini& ini, const std::string& group, Lookup& l,
                                         const Config& cfg) {
  std::string name = ini.require(group, "database"), sql = ini.require(group, "sql");
  int max_rows = (int) ini.integer(group, "max_rows", 1000, 1, 10000000);
  auto it = cfg.databases.find(name);
  if (it == cfg.databases.end())
    ini.fail(group, "database", "no [database " + name + "] is configured");
  Database& d = *it->second;
  std::vector<std::string> names;
  std::string rewritten = rewrite(sql, names);
  for (const std::string& n : names) l.params.push_back({n, ParamType::Any, true});
  l.backend_name = "postgresql:" + name;
  d.statements.push_back(rewritten);
  d.param_names.push_back(names);
  return std::make_unique<PostgresqlBackend>(&d, d.statements.size() - 1, max_rows);
}

}  // namespace peer

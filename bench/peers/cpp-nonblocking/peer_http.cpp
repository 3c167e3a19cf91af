// The peer's `http` backend (issue 16): what a C++ Thrift user writes for an HTTP/JSON lookup,
// blocking libcurl on the lookup pool's threads. Each thread keeps its own easy handle, so
// its connection stays alive between calls (one connection per busy thread); a call holds its
// thread for the whole request. URLs, headers, the JSON mapping and the error kinds follow
// evdal's (handlers/evd_backend_http.c, storage/evd_json_rows.c) for what the benchmarks use:
// the same params in the same URL, the same tables.
#include <curl/curl.h>
#include <json-glib/json-glib.h>

#include <cmath>
#include <cstring>
#include <unordered_set>

#include "peer.h"

namespace peer {
namespace {

struct Piece {
  enum Kind { Literal, PathParam, QueryParam } kind;
  std::string text;
};

std::string encode(const std::string& s, const char* keep) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (g_ascii_isalnum(c) || (c && strchr(keep, c))) {
      out += (char) c;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string header_value(const std::string& s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (c > 0x20 && c < 0x7f && c != '%') {
      out += (char) c;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

bool value_text(const evdal::Value& v, std::string& out) {
  switch (kind_of(v)) {
    case Kind::Int: out = std::to_string(v.int_value); return true;
    case Kind::Real: {
      char buf[G_ASCII_DTOSTR_BUF_SIZE], fmt[8];
      for (int prec = 1; prec <= 17; prec++) {
        g_snprintf(fmt, sizeof fmt, "%%.%dg", prec);
        g_ascii_formatd(buf, sizeof buf, fmt, v.real_value);
        if (g_ascii_strtod(buf, nullptr) == v.real_value) break;
      }
      out = buf;
      return true;
    }
    case Kind::Text: out = v.text_value; return true;
    case Kind::Blob: out = v.blob_value; return true;
    default: return false;
  }
}

evdal::Value cell(JsonNode* n) {
  evdal::Value v;
  if (n == nullptr || JSON_NODE_HOLDS_NULL(n)) {
    v.__set_null_value(true);
  } else if (JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64)
      v.__set_int_value(json_node_get_int(n));
    else if (t == G_TYPE_BOOLEAN)
      v.__set_int_value(json_node_get_boolean(n) ? 1 : 0);
    else if (t == G_TYPE_DOUBLE)
      v.__set_real_value(json_node_get_double(n));
    else
      v.__set_text_value(json_node_get_string(n));
  } else {
    char* s = json_to_string(n, FALSE);
    v.__set_text_value(s);
    g_free(s);
  }
  return v;
}

// The JSON mapping of evdal's README ("JSON to rows").
evdal::Table to_table(JsonNode* node) {
  evdal::Table t;
  if (JSON_NODE_HOLDS_OBJECT(node) ||
      (JSON_NODE_HOLDS_ARRAY(node) && json_array_get_length(json_node_get_array(node)) > 0)) {
    std::vector<JsonObject*> objects;
    if (JSON_NODE_HOLDS_OBJECT(node)) {
      objects.push_back(json_node_get_object(node));
    } else {
      JsonArray* a = json_node_get_array(node);
      for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonNode* e = json_array_get_element(a, i);
        if (!JSON_NODE_HOLDS_OBJECT(e)) {
          objects.clear();
          break;
        }
        objects.push_back(json_node_get_object(e));
      }
      if (objects.empty()) {
        t.columns = {"value"};
        for (guint i = 0; i < json_array_get_length(a); i++)
          t.rows.push_back({cell(json_array_get_element(a, i))});
        return t;
      }
    }
    std::unordered_set<std::string> seen;
    for (JsonObject* o : objects) {
      JsonObjectIter it;
      const char* key;
      json_object_iter_init_ordered(&it, o);
      while (json_object_iter_next_ordered(&it, &key, nullptr))
        if (seen.insert(key).second) t.columns.push_back(key);
    }
    for (JsonObject* o : objects) {
      std::vector<evdal::Value>& row = t.rows.emplace_back();
      for (const std::string& c : t.columns)
        row.push_back(cell(json_object_get_member(o, c.c_str())));
    }
    return t;
  }
  t.columns = {"value"};
  if (!JSON_NODE_HOLDS_NULL(node) && !JSON_NODE_HOLDS_ARRAY(node)) t.rows.push_back({cell(node)});
  return t;
}

size_t on_body(char* p, size_t size, size_t n, void* data) {
  auto* body = static_cast<std::pair<std::string, size_t>*>(data);
  if (body->first.size() + size * n > body->second) return 0;
  body->first.append(p, size * n);
  return size * n;
}

int on_progress(void* data, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const Job*>(data)->stopped() ? 1 : 0;  // non-zero aborts
}

class HttpBackend : public Backend {
 public:
  HttpBackend(std::shared_ptr<Upstream> up, std::string get, std::vector<Piece> pieces,
              std::string path, std::vector<std::string> rows)
      : up_(std::move(up)), get_(std::move(get)), pieces_(std::move(pieces)),
        path_(std::move(path)), rows_(std::move(rows)) {}

  void run(Job& job, evdal::LookupResult& out) override {
    std::string url = up_->base_url, text;
    for (const Piece& p : pieces_) {
      if (p.kind == Piece::Literal) {
        url += p.text;
        continue;
      }
      auto it = job.params.find(p.text);
      if (it == job.params.end() || !value_text(it->second, text)) {
        set_error(out, evdal::ErrorKind::BAD_PARAMS,
                  format("param %s is null: an HTTP lookup puts each param's text in the URL",
                         p.text.c_str()));
        return;
      }
      url += encode(text, p.kind == Piece::PathParam ? "-_~" : "-_~.");
    }
    // One easy handle per pool thread: its connection is kept alive between calls.
    thread_local std::unique_ptr<CURL, void (*)(CURL*)> easy(curl_easy_init(), curl_easy_cleanup);
    CURL* e = easy.get();
    curl_easy_reset(e);
    long left = (long) std::chrono::duration_cast<std::chrono::milliseconds>(
        job.deadline - Clock::now()).count();
    if (left <= 0) {
      set_interrupted(job, out);
      return;
    }
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, "Accept: application/json");
    std::string rid = "X-Request-Id: " + header_value(job.fetch->request_id);
    headers = curl_slist_append(headers, rid.c_str());
    std::pair<std::string, size_t> body{std::string(), up_->max_response_bytes};
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");  // as evdal: upstreams reached directly
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "evdal-peer-cpp");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, &job);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
    if (!up_->ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, up_->ca_file.c_str());
    CURLcode rc = curl_easy_perform(e);
    curl_slist_free_all(headers);
    if (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_OPERATION_TIMEDOUT) {
      set_interrupted(job, out);
      return;
    }
    if (rc != CURLE_OK) {
      set_error(out, evdal::ErrorKind::BACKEND,
                format("upstream %s: GET %s: %s", up_->name.c_str(), get_.c_str(),
                       rc == CURLE_WRITE_ERROR ? "the response is longer than max_response_bytes"
                                               : curl_easy_strerror(rc)));
      return;
    }
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
      set_error(out, evdal::ErrorKind::BACKEND, format("upstream %s: GET %s answered HTTP %ld",
                                                       up_->name.c_str(), get_.c_str(), status));
      return;
    }
    answer(body.first, out);
  }

 private:
  void answer(const std::string& body, evdal::LookupResult& out) {
    JsonParser* parser = json_parser_new_immutable();
    GError* error = nullptr;
    if (!json_parser_load_from_data(parser, body.data(), (gssize) body.size(), &error) ||
        json_parser_get_root(parser) == nullptr) {
      set_error(out, evdal::ErrorKind::BACKEND,
                format("upstream %s: GET %s: not JSON: %s", up_->name.c_str(), get_.c_str(),
                       error ? error->message : "the body is empty"));
      g_clear_error(&error);
      g_object_unref(parser);
      return;
    }
    JsonNode* node = json_parser_get_root(parser);
    std::string walked;
    for (const std::string& key : rows_) {
      walked += (walked.empty() ? "" : ".") + key;
      node = JSON_NODE_HOLDS_OBJECT(node) ? json_object_get_member(json_node_get_object(node),
                                                                   key.c_str())
                                          : nullptr;
      if (node == nullptr) {
        set_error(out, evdal::ErrorKind::BACKEND,
                  format("upstream %s: GET %s: rows path \"%s\": no \"%s\" in the response",
                         up_->name.c_str(), get_.c_str(), path_.c_str(), walked.c_str()));
        g_object_unref(parser);
        return;
      }
    }
    set_table(out, to_table(node));
    g_object_unref(parser);
  }

  std::shared_ptr<Upstream> up_;
  std::string get_;
  std::vector<Piece> pieces_;
  std::string path_;
  std::vector<std::string> rows_;
};

}  // namespace

std::shared_ptr<Upstream> open_upstream(const Ini& ini, const std::string& group) {
  auto u = std::make_shared<Upstream>();
  std::string kind = ini.get(group, "backend", "http");
  if (kind != "http") ini.fail(group, "backend", "\"" + kind + "\": only http upstreams exist");
  u->name = group.substr(strlen("upstream "));
  u->base_url = ini.require(group, "base_url");
  while (!u->base_url.empty() && u->base_url.back() == '/') u->base_url.pop_back();
  u->max_response_bytes = (size_t) ini.integer(group, "max_response_bytes", 1048576, 1,
                                               (int64_t) 1 << 30);
  if (ini.has(group, "ca_file")) u->ca_file = ini.resolve(ini.get(group, "ca_file"));
  curl_global_init(CURL_GLOBAL_DEFAULT);
  return u;
}

std::unique_ptr<Backend> open_http(const Ini& ini, const std::string& group, Lookup& l,
                                   const Config& cfg) {
  std::string name = ini.require(group, "upstream"), get = ini.require(group, "get");
  auto it = cfg.upstreams.find(name);
  if (it == cfg.upstreams.end())
    ini.fail(group, "upstream", "no [upstream " + name + "] is configured");
  if (get.empty() || get[0] != '/') ini.fail(group, "get", "must start with '/'");
  std::vector<Piece> pieces;
  bool query = false;
  std::string lit;
  for (size_t i = 0; i < get.size(); i++) {
    if (get[i] == '{') {
      size_t end = get.find('}', i);
      if (end == std::string::npos) ini.fail(group, "get", "unclosed {");
      if (!lit.empty()) pieces.push_back({Piece::Literal, lit});
      lit.clear();
      std::string p = get.substr(i + 1, end - i - 1);
      pieces.push_back({query ? Piece::QueryParam : Piece::PathParam, p});
      if (!l.param(p)) l.params.push_back({p, ParamType::Any, true});
      i = end;
    } else {
      if (get[i] == '?') query = true;
      lit += get[i];
    }
  }
  if (!lit.empty()) pieces.push_back({Piece::Literal, lit});
  std::vector<std::string> rows;
  std::string path = ini.get(group, "rows");
  if (!path.empty()) {
    gchar** keys = g_strsplit(path.c_str(), ".", -1);
    for (gchar** k = keys; *k; k++) rows.push_back(*k);
    g_strfreev(keys);
  }
  l.backend_name = "http:" + name;
  return std::make_unique<HttpBackend>(it->second, get, std::move(pieces), path,
                                       std::move(rows));
}

}  // namespace peer

/* evdal-http-bare: the limit of this machine for http4's HTTP work, the bare-library peer of
 * evdal's HTTP lookups (issue 20: "each new backend's CPU per lookup within 1.5x of its bare
 * client library doing the same work"). The same GETs as http4's four lookups
 * (`/rN/{user_id}`, N = 1..4, random users), through libcurl's multi interface and json-glib
 * with nothing else: one thread per core, each driving its share of the kept-alive connections
 * with curl_multi_poll, every answer parsed and every value of `data.items` read, as evdal maps
 * it to rows. No Thrift, no event library, no deadlines. evdal's CPU per HTTP lookup is set
 * against this program's CPU per request.
 *
 *   evdal-http-bare --base-url http://127.0.0.1:PORT [--threads N] [--connections N]
 *                   [--duration S] [--users N]
 *
 * Prints one JSON line: requests, requests/s, rows, CPU seconds (utime + stime of the process).
 */
#include <curl/curl.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <sys/resource.h>

typedef struct {
  CURL *easy;
  GByteArray *body;         /* this transfer's answer, reused */
  char url[256];
} EvdHttpBareConn;

typedef struct {
  const char *base_url;
  int connections;
  double duration;
  gint64 users;
  guint seed;
  guint64 requests, rows;
  GRand *rand;
} EvdHttpBareThread;

static volatile gint64 evd_http_bare_sink;

static size_t
evd_http_bare_on_body (char *data, size_t size, size_t n, void *user_data)
{
  g_byte_array_append (user_data, (const guint8 *) data, (guint) (size * n));
  return size * n;
}

/* Reads every value of data.items the way evdal's mapping does (objects' members, by type), so
 * both pay for the same decoding. */
static void
evd_http_bare_read (EvdHttpBareThread *t, const GByteArray *body)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) error = NULL;
  gint64 sink = 0;

  if (!json_parser_load_from_data (parser, (const char *) body->data, (gssize) body->len, &error))
    g_error ("invalid JSON: %s", error->message);
  JsonObject *root = json_node_get_object (json_parser_get_root (parser));
  JsonArray *items = json_object_get_array_member (json_object_get_object_member (root, "data"),
                                                   "items");
  for (guint i = 0; i < json_array_get_length (items); i++) {
    JsonObject *o = json_array_get_object_element (items, i);
    JsonObjectIter it;
    const char *key;
    JsonNode *v;

    json_object_iter_init (&it, o);
    while (json_object_iter_next (&it, &key, &v)) {
      switch (json_node_get_value_type (v) == G_TYPE_INT64 ? 0 :
              json_node_get_value_type (v) == G_TYPE_STRING ? 1 : 2) {
      case 0: sink += json_node_get_int (v); break;
      case 1: sink += (gint64) strlen (json_node_get_string (v)); break;
      default: sink += (gint64) json_node_get_double (v); break;
      }
      sink += (gint64) strlen (key);
    }
    t->rows++;
  }
  evd_http_bare_sink += sink;
}

static void
evd_http_bare_send (EvdHttpBareThread *t, CURLM *multi, EvdHttpBareConn *c)
{
  g_snprintf (c->url, sizeof c->url, "%s/r%d/%" G_GINT64_FORMAT, t->base_url,
              (int) (t->requests % 4) + 1,
              (gint64) g_rand_int_range (t->rand, 1, (gint32) t->users + 1));
  g_byte_array_set_size (c->body, 0);
  curl_easy_setopt (c->easy, CURLOPT_URL, c->url);
  curl_multi_add_handle (multi, c->easy);
}

static gpointer
evd_http_bare_thread (gpointer data)
{
  EvdHttpBareThread *t = data;
  CURLM *multi = curl_multi_init ();
  g_autofree EvdHttpBareConn *conns = g_new0 (EvdHttpBareConn, t->connections);
  gint64 end = g_get_monotonic_time () + (gint64) (t->duration * G_USEC_PER_SEC);
  int running = 0;

  t->rand = g_rand_new_with_seed (t->seed);
  /* The options evdal sets on its handles (storage/evd_http.c) that change the work done. */
  curl_multi_setopt (multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) t->connections);
  curl_multi_setopt (multi, CURLMOPT_MAXCONNECTS, (long) t->connections);
  for (int i = 0; i < t->connections; i++) {
    EvdHttpBareConn *c = &conns[i];

    c->easy = curl_easy_init ();
    c->body = g_byte_array_sized_new (1024);
    curl_easy_setopt (c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (c->easy, CURLOPT_PROXY, "");
    curl_easy_setopt (c->easy, CURLOPT_USERAGENT, "evdal");
    curl_easy_setopt (c->easy, CURLOPT_WRITEFUNCTION, evd_http_bare_on_body);
    curl_easy_setopt (c->easy, CURLOPT_WRITEDATA, c->body);
    curl_easy_setopt (c->easy, CURLOPT_PRIVATE, c);
    evd_http_bare_send (t, multi, c);
  }
  do {
    CURLMsg *msg;
    int left;

    curl_multi_perform (multi, &running);
    while ((msg = curl_multi_info_read (multi, &left))) {
      EvdHttpBareConn *c;
      long status = 0;

      if (msg->msg != CURLMSG_DONE)
        continue;
      curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **) &c);
      curl_easy_getinfo (msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (msg->data.result != CURLE_OK || status != 200)
        g_error ("GET %s: %s, status %ld", c->url, curl_easy_strerror (msg->data.result), status);
      curl_multi_remove_handle (multi, c->easy);
      evd_http_bare_read (t, c->body);
      t->requests++;
      if (g_get_monotonic_time () < end)
        evd_http_bare_send (t, multi, c);
    }
    if (running > 0 || g_get_monotonic_time () < end)
      curl_multi_poll (multi, NULL, 0, 100, NULL);
  } while (running > 0 || g_get_monotonic_time () < end);
  for (int i = 0; i < t->connections; i++) {
    curl_multi_remove_handle (multi, conns[i].easy);
    curl_easy_cleanup (conns[i].easy);
    g_byte_array_unref (conns[i].body);
  }
  curl_multi_cleanup (multi);
  g_rand_free (t->rand);
  return NULL;
}

int
main (int argc, char **argv)
{
  g_autofree char *base_url = NULL;
  int threads = 2, connections = 8;
  double duration = 5.0;
  gint64 users = 100000;
  GOptionEntry entries[] = {
    { "base-url", 'u', 0, G_OPTION_ARG_STRING, &base_url, "Upstream (http://HOST:PORT)", "URL" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "Threads, one multi handle each (2)", "N" },
    { "connections", 'c', 0, G_OPTION_ARG_INT, &connections,
      "Kept-alive connections per thread, one request each at a time (8)", "N" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &duration, "Seconds (5)", "S" },
    { "users", 0, 0, G_OPTION_ARG_INT64, &users, "Random user ids in 1..N (100000)", "N" },
    { NULL, 0, 0, 0, NULL, NULL, NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- bare libcurl + json-glib peer");
  g_autoptr (GError) error = NULL;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || !base_url || threads < 1 ||
      connections < 1 || users < 1) {
    g_printerr ("evdal-http-bare: %s\n", error ? error->message : "--base-url is required");
    return 2;
  }
  curl_global_init (CURL_GLOBAL_DEFAULT);
  g_autofree EvdHttpBareThread *ts = g_new0 (EvdHttpBareThread, threads);
  g_autofree GThread **th = g_new0 (GThread *, threads);
  gint64 t0 = g_get_monotonic_time ();

  for (int i = 0; i < threads; i++) {
    ts[i] = (EvdHttpBareThread) { .base_url = base_url, .connections = connections,
                                  .duration = duration, .users = users, .seed = 17u + (guint) i };
    th[i] = g_thread_new ("bare", evd_http_bare_thread, &ts[i]);
  }
  guint64 requests = 0, rows = 0;
  for (int i = 0; i < threads; i++) {
    g_thread_join (th[i]);
    requests += ts[i].requests;
    rows += ts[i].rows;
  }
  double secs = (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC;
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  double cpu = (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
               (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
  printf ("{\"requests\": %" G_GUINT64_FORMAT ", \"rps\": %.1f, \"rows\": %" G_GUINT64_FORMAT
          ", \"cpu_s\": %.3f, \"cpu_us_per_request\": %.2f}\n", requests, (double) requests / secs,
          rows, cpu, requests ? cpu * 1e6 / (double) requests : 0.0);
  curl_global_cleanup ();
  return 0;
}

/* evd_admin: the admin HTTP endpoint (libevent's evhttp) on `admin_listen`.
 *
 *   GET /health       200 "ready" while serving, 503 "draining" once shutdown began; while
 *                     serving, one more line per database/upstream whose circuit breaker is
 *                     not closed ("breaker NAME open", "breaker NAME half_open"), still 200
 *   GET /metrics      Prometheus text format 0.0.4 (evd_metrics)
 *   GET /lookups      JSON: every lookup, its backend, params, timeout and call counts
 *   GET /traces       HTML: the slowest and most recent traced requests as SVG waterfalls
 *   GET /traces.json  the same traces as JSON, for other tools
 *
 * It runs on the main loop, next to accepting, which otherwise idles: a scrape never takes
 * time from a connection's loop, and the pages read only atomics and short-held locks.
 *
 * With `admin_secret_file` set, every page but /health needs "Authorization: Bearer SECRET"
 * (compared in constant time); /health stays open for load balancers and probes, and says
 * nothing but ready or draining.
 */
#pragma once

#include <event2/event.h>
#include <glib.h>

#include "evd_metrics.h"
#include "evd_trace.h"

G_BEGIN_DECLS

typedef struct _EvdAdmin EvdAdmin;

/* What the pages show; every pointer must outlive the admin. */
typedef struct {
  EvdMetrics *metrics;
  EvdTraceStore *traces;
  void (*lookups_json) (gpointer data, GString *out);
  gpointer lookups_data;
  const char *secret;        /* NULL or "": no check */
  void (*health) (gpointer data, GString *out);  /* optional: lines after "ready" */
  gpointer health_data;
} EvdAdminPages;

/* Listens on `address` (with SO_REUSEPORT when `reuse_port`), or on `fd` when it is not -1
 * (a socket systemd passed). */
EvdAdmin *evd_admin_new (struct event_base *base, const char *address, gboolean reuse_port,
                         int fd, const EvdAdminPages *pages, GError **error);
void evd_admin_free (EvdAdmin *admin);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdAdmin, evd_admin_free)

const char *evd_admin_address (EvdAdmin *admin);
/* /health answers 503 from now on. */
void evd_admin_set_draining (EvdAdmin *admin);

G_END_DECLS

/* evd_dns: the libevent resolver (evdns) each loop's backend pools resolve host names with,
 * made and freed in one place, so that none of them blocks a loop on DNS and none frees it in
 * the order libevent 2.1's evdns_base_free uses (see evd_dns.c). */
#pragma once

#include <event2/dns.h>
#include <event2/event.h>
#include <glib.h>

G_BEGIN_DECLS

/* A resolver on `base` with the system's nameservers (resolv.conf) and /etc/hosts, its UDP
 * sockets unwatched while nothing is being resolved.
 *
 * Test hook: when the environment has EVDAL_HOSTS_FILE, that file's entries are added after
 * /etc/hosts' (same format; a name's addresses in the file's order), so that a test can give a
 * name several addresses in an order of its choosing (a dead one first) without a DNS server.
 * Read by this function only, at each resolver's making; not a setting for production. */
struct evdns_base *evd_dns_new (struct event_base *base);

/* Frees `dns`; with `fail_requests` the lookups still pending call back (DNS_ERR_SHUTDOWN),
 * from the loop's next pass. Without it they never do, and libevent leaks their state: cancel
 * them first, or free with `fail_requests` where lookups may be left to finish alone (those of
 * cancelled evd_connect attempts). NULL: nothing. */
void evd_dns_free (struct evdns_base *dns, gboolean fail_requests);

G_END_DECLS

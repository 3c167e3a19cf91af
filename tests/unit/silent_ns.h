/* silent_ns: a nameserver of a test's own that takes queries and never answers, so that a
 * lookup stays in flight for as long as the test wants, and nothing leaves the machine
 * (test_dns, test_connect). */
#pragma once

#include <event2/dns.h>
#include <glib.h>

/* A UDP socket on 127.0.0.1, a port of its own; its "127.0.0.1:PORT" in `addr`. Close it. */
int silent_ns_open (char *addr, gsize size);

/* Makes `addr` the only nameserver of `dns`. */
void silent_ns_use (struct evdns_base *dns, const char *addr);

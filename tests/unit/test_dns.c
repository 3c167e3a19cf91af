/* test_dns: storage/evd_dns, the resolver every network backend's pool makes on its loop.
 * Freeing it never makes libevent call epoll_ctl on a closed socket (libevent 2.1's own
 * evdns_base_free does, shown here as the control), and a lookup still in flight is failed
 * as evdns_base_free would: the lookup below goes to a nameserver of the test's
 * own on 127.0.0.1 that never answers, so nothing leaves the machine. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "evd_dns.h"
#include "silent_ns.h"
#include "stale_epoll.h"

static struct event_base *
new_base (void)
{
  struct event_base *base = event_base_new ();

  g_assert_nonnull (base);
  return base;
}

/* Freed, with the nameservers resolv.conf names (or libevent's default, 127.0.0.1): the
 * nameserver sockets close after their events are deleted, not before. */
static void
test_free_unwatches_first (void)
{
  struct event_base *base = new_base ();
  struct evdns_base *dns;
  int before;

  if (strcmp (event_base_get_method (base), "epoll") != 0) {
    g_test_skip ("not on epoll");
    event_base_free (base);
    return;
  }
  /* The control: libevent's own free closes each nameserver socket, then deletes its event. */
  dns = evd_dns_new (base);
  g_assert_cmpint (evdns_base_count_nameservers (dns), >, 0);
  before = stale_epoll_ctl_count ();
  evdns_base_free (dns, 0);
  g_assert_cmpint (stale_epoll_ctl_count (), >, before);

  dns = evd_dns_new (base);
  before = stale_epoll_ctl_count ();
  evd_dns_free (dns, FALSE);
  g_assert_cmpint (stale_epoll_ctl_count (), ==, before);
  evd_dns_free (NULL, TRUE);              /* nothing */
  event_base_free (base);
}

typedef struct {
  int calls;
  int result;
} Lookup;

static void
on_lookup (int result, struct evutil_addrinfo *res, void *arg)
{
  Lookup *l = arg;

  l->calls++;
  l->result = result;
  if (res != NULL)
    evutil_freeaddrinfo (res);
}

static struct evdns_base *
dns_on (struct event_base *base, const char *nameserver)
{
  struct evdns_base *dns = evd_dns_new (base);

  silent_ns_use (dns, nameserver);
  return dns;
}

/* A lookup in flight when the resolver is freed with fail_requests: failed once, and no
 * epoll_ctl on a closed socket. (Without fail_requests libevent never calls it back and leaks
 * its state: evd_dns.h asks callers to cancel theirs first.) */
static void
test_free_with_a_lookup_in_flight (void)
{
  struct event_base *base = new_base ();
  char addr[64];
  int ns = silent_ns_open (addr, sizeof addr);
  struct evutil_addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };

  struct evdns_base *dns = dns_on (base, addr);
  Lookup l = { 0 };
  int before;

  g_assert_nonnull (evdns_getaddrinfo (dns, "evd-test.invalid", "80", &hints, on_lookup, &l));
  event_base_loop (base, EVLOOP_NONBLOCK);   /* the query goes out */
  g_assert_cmpint (l.calls, ==, 0);
  before = stale_epoll_ctl_count ();
  evd_dns_free (dns, TRUE);
  event_base_loop (base, EVLOOP_NONBLOCK);   /* deferred callbacks, if any */
  g_assert_cmpint (l.calls, ==, 1);
  g_assert_cmpint (l.result, !=, 0);          /* EVUTIL_EAI_FAIL: DNS_ERR_SHUTDOWN */
  g_assert_cmpint (stale_epoll_ctl_count (), ==, before);
  close (ns);
  event_base_free (base);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/dns/free-unwatches-first", test_free_unwatches_first);
  g_test_add_func ("/dns/free-with-a-lookup-in-flight", test_free_with_a_lookup_in_flight);
  return g_test_run ();
}

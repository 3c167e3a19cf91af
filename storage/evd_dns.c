/* evd_dns: see evd_dns.h. */
#include "evd_dns.h"

struct evdns_base *
evd_dns_new (struct event_base *base)
{
  struct evdns_base *dns = evdns_base_new (base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                 EVDNS_BASE_DISABLE_WHEN_INACTIVE);
  const char *hosts = g_getenv ("EVDAL_HOSTS_FILE");

  /* Appended to /etc/hosts' entries (loaded by INITIALIZE_NAMESERVERS): evdns answers a name
   * with every entry it has, in the order loaded. A file that cannot be read adds nothing
   * but libevent's own localhost entries. */
  if (dns != NULL && hosts != NULL && *hosts != '\0')
    evdns_base_load_hosts (dns, hosts);
  return dns;
}

void
evd_dns_free (struct evdns_base *dns, gboolean fail_requests)
{
  if (dns == NULL)
    return;
  /* libevent 2.1's evdns_base_free closes each nameserver's socket before it deletes the
   * socket's event, so libevent then calls epoll_ctl on a closed number; in evdal another
   * loop may have been given that number for a new socket by then (a backend connecting
   * while a reload frees the old pools). Clearing the nameservers first deletes each event
   * before its socket closes (and moves lookups in flight back to the waiting queue, which
   * evdns_base_free fails or drops as it would have). */
  evdns_base_clear_nameservers_and_suspend (dns);
  evdns_base_free (dns, fail_requests ? 1 : 0);
}

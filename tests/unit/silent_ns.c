/* silent_ns: see silent_ns.h. */
#include "silent_ns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int
silent_ns_open (char *addr, gsize size)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sin, sizeof sin), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &sin, &len), ==, 0);
  g_snprintf (addr, size, "127.0.0.1:%d", ntohs (sin.sin_port));
  return fd;
}

void
silent_ns_use (struct evdns_base *dns, const char *addr)
{
  evdns_base_clear_nameservers_and_suspend (dns);
  g_assert_cmpint (evdns_base_nameserver_ip_add (dns, addr), ==, 0);
  evdns_base_resume (dns);
}

/* test_connect: storage/evd_connect, a TCP connection to host:port trying each address of the
 * name in turn. Names get their addresses from a hosts file of the test's own
 * (EVDAL_HOSTS_FILE, read by evd_dns_new): 127.0.0.2, where nothing listens on Linux's
 * loopback (refused at once), before 127.0.0.1, where the test listens. A lookup that stays in
 * flight goes to a nameserver of the test's own on 127.0.0.1 that never answers, so nothing
 * leaves the machine. */
#include <arpa/inet.h>
#include <dirent.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "evd_connect.h"
#include "evd_dns.h"
#include "silent_ns.h"

typedef struct {
  struct event_base *base;
  struct evdns_base *dns;
  char *dir;
  int listener;             /* on 127.0.0.1:port */
  int port;
} Fixture;

typedef struct {
  int calls;
  evutil_socket_t fd;
  char *message;
  int code;
} Outcome;

static void
on_done (gpointer data, evutil_socket_t fd, const GError *error)
{
  Outcome *o = data;

  o->calls++;
  o->fd = fd;
  o->message = error ? g_strdup (error->message) : NULL;
  o->code = error ? error->code : -1;
}

static int
open_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  int n = 0;

  g_assert_nonnull (d);
  while (readdir (d) != NULL)
    n++;
  closedir (d);
  return n;
}

static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sin;
  g_autofree char *hosts = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;

  (void) data;
  f->dir = g_dir_make_tmp ("evd-connect-XXXXXX", &error);
  g_assert_no_error (error);
  f->listener = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (f->listener, >=, 0);
  g_assert_cmpint (bind (f->listener, (struct sockaddr *) &sin, sizeof sin), ==, 0);
  g_assert_cmpint (listen (f->listener, 16), ==, 0);
  g_assert_cmpint (getsockname (f->listener, (struct sockaddr *) &sin, &len), ==, 0);
  f->port = ntohs (sin.sin_port);
  /* Each name's addresses in this order; nothing listens on 127.0.0.2 or .3 at this port. */
  hosts = g_build_filename (f->dir, "hosts", NULL);
  text = g_strdup ("127.0.0.2 evd-dead-first\n127.0.0.1 evd-dead-first\n"
                   "127.0.0.2 evd-all-dead\n127.0.0.3 evd-all-dead\n");
  g_assert_true (g_file_set_contents (hosts, text, -1, &error));
  g_setenv ("EVDAL_HOSTS_FILE", hosts, TRUE);
  f->base = event_base_new ();
  f->dns = evd_dns_new (f->base);
  g_unsetenv ("EVDAL_HOSTS_FILE");
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  g_autofree char *hosts = g_build_filename (f->dir, "hosts", NULL);

  (void) data;
  evd_dns_free (f->dns, TRUE);
  event_base_loop (f->base, EVLOOP_NONBLOCK);   /* lookups failed by the free, if any */
  event_base_free (f->base);
  close (f->listener);
  g_unlink (hosts);
  g_rmdir (f->dir);
  g_free (f->dir);
}

static void
run_until_done (Fixture *f, Outcome *o)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (o->calls == 0) {
    g_assert_cmpint (g_get_monotonic_time (), <, deadline);
    event_base_loop (f->base, EVLOOP_ONCE);
  }
}

/* The port the socket is connected to on 127.0.0.1, or 0. */
static int
peer_port (evutil_socket_t fd)
{
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;

  if (getpeername (fd, (struct sockaddr *) &sin, &len) != 0 || sin.sin_family != AF_INET ||
      sin.sin_addr.s_addr != htonl (INADDR_LOOPBACK))
    return 0;
  return ntohs (sin.sin_port);
}

/* The name's first address refuses: the second one is connected to, through the loop (never
 * inside evd_connect_start). */
static void
test_first_refused_second_used (Fixture *f, gconstpointer data)
{
  Outcome o = { 0 };
  int accepted;

  (void) data;
  g_assert_nonnull (evd_connect_start (f->base, f->dns, "evd-dead-first", f->port, 2000,
                                       on_done, &o));
  g_assert_cmpint (o.calls, ==, 0);
  run_until_done (f, &o);
  g_assert_cmpint (o.calls, ==, 1);
  g_assert_null (o.message);
  g_assert_cmpint (o.fd, >=, 0);
  g_assert_cmpint (peer_port (o.fd), ==, f->port);
  accepted = accept (f->listener, NULL, NULL);
  g_assert_cmpint (accepted, >=, 0);
  g_assert_cmpint (write (o.fd, "x", 1), ==, 1);
  close (accepted);
  close (o.fd);
}

/* Every address refuses: one error naming each, in order, reported from the loop. */
static void
test_all_refused (Fixture *f, gconstpointer data)
{
  Outcome o = { 0 };
  g_autofree char *want = g_strdup_printf ("cannot connect to evd-all-dead:%d: 127.0.0.2:%d "
                                           "refused, 127.0.0.3:%d refused",
                                           f->port, f->port, f->port);

  (void) data;
  g_assert_nonnull (evd_connect_start (f->base, f->dns, "evd-all-dead", f->port, 2000,
                                       on_done, &o));
  g_assert_cmpint (o.calls, ==, 0);
  run_until_done (f, &o);
  g_assert_cmpint (o.fd, ==, -1);
  g_assert_cmpint (o.code, ==, EVD_CONNECT_ERROR_CONNECT);
  g_assert_cmpstr (o.message, ==, want);
  g_free (o.message);
}

/* A numeric host needs no resolver. */
static void
test_numeric_without_resolver (Fixture *f, gconstpointer data)
{
  Outcome o = { 0 };
  Outcome refused = { 0 };
  g_autofree char *want = g_strdup_printf ("cannot connect to 127.0.0.2:%d: 127.0.0.2:%d refused",
                                           f->port, f->port);

  (void) data;
  evd_connect_start (f->base, NULL, "127.0.0.1", f->port, 0, on_done, &o);
  evd_connect_start (f->base, NULL, "127.0.0.2", f->port, 0, on_done, &refused);
  run_until_done (f, &o);
  run_until_done (f, &refused);
  g_assert_cmpint (peer_port (o.fd), ==, f->port);
  close (o.fd);
  g_assert_cmpstr (refused.message, ==, want);
  g_free (refused.message);
}

/* An IPv6 literal host is named in brackets, as its address is: "::1:PORT" would name
 * another IPv6 address, with no port. (Where the machine has no IPv6, the reason after the
 * address differs; the names do not.) */
static void
test_ipv6_literal_named_in_brackets (Fixture *f, gconstpointer data)
{
  Outcome o = { 0 };
  g_autofree char *want = g_strdup_printf ("cannot connect to [::1]:%d: [::1]:%d ",
                                           f->port, f->port);

  (void) data;
  evd_connect_start (f->base, NULL, "::1", f->port, 2000, on_done, &o);
  run_until_done (f, &o);
  g_assert_cmpint (o.fd, ==, -1);
  g_assert_cmpint (o.code, ==, EVD_CONNECT_ERROR_CONNECT);
  o.message[MIN (strlen (o.message), strlen (want))] = '\0';   /* the names, compared */
  g_assert_cmpstr (o.message, ==, want);
  g_free (o.message);
}

/* Cancelled while connecting (the socket made, the loop not yet run), or with its failure
 * found and not yet reported: no callback, no socket left open. */
static void
test_cancel_while_connecting (Fixture *f, gconstpointer data)
{
  Outcome o = { 0 };
  int before = open_fds ();
  EvdConnect *a;

  (void) data;
  a = evd_connect_start (f->base, f->dns, "evd-dead-first", f->port, 2000, on_done, &o);
  g_assert_cmpint (open_fds (), ==, before + 1);    /* the socket to 127.0.0.1 */
  evd_connect_cancel (a);
  g_assert_cmpint (open_fds (), ==, before);
  a = evd_connect_start (f->base, f->dns, "evd-all-dead", f->port, 2000, on_done, &o);
  evd_connect_cancel (a);
  for (int i = 0; i < 5; i++)
    event_base_loop (f->base, EVLOOP_NONBLOCK);
  g_assert_cmpint (o.calls, ==, 0);
  g_assert_cmpint (open_fds (), ==, before);
  evd_connect_cancel (NULL);                        /* nothing */
}

/* Cancelled while its name is being resolved: no callback, and the lookup, left to finish on
 * its own, is freed when the resolver is freed (failing it): the leak checkers see the rest.
 * Had it been cancelled with evdns_getaddrinfo_cancel, libevent 2.1 would answer it here,
 * after the free, locking the freed evdns_base (valgrind shows it; ASan cannot, libevent not
 * being instrumented). */
static void
test_cancel_while_resolving (Fixture *f, gconstpointer data)
{
  char addr[64];
  int ns = silent_ns_open (addr, sizeof addr);
  Outcome o = { 0 };
  EvdConnect *a;

  (void) data;
  silent_ns_use (f->dns, addr);
  a = evd_connect_start (f->base, f->dns, "evd-test.invalid", f->port, 2000, on_done, &o);
  event_base_loop (f->base, EVLOOP_NONBLOCK);       /* the query goes out */
  g_assert_cmpint (o.calls, ==, 0);
  evd_connect_cancel (a);
  for (int i = 0; i < 3; i++)
    event_base_loop (f->base, EVLOOP_NONBLOCK);
  evd_dns_free (f->dns, TRUE);
  f->dns = NULL;
  for (int i = 0; i < 3; i++)
    event_base_loop (f->base, EVLOOP_NONBLOCK);     /* the lookup fails, and is freed */
  g_assert_cmpint (o.calls, ==, 0);
  close (ns);
}

/* A resolver that never answers costs the attempt its timeout, no more. */
static void
test_resolve_times_out (Fixture *f, gconstpointer data)
{
  char addr[64];
  int ns = silent_ns_open (addr, sizeof addr);
  Outcome o = { 0 };
  gint64 t0 = g_get_monotonic_time ();

  (void) data;
  silent_ns_use (f->dns, addr);
  evd_connect_start (f->base, f->dns, "evd-test.invalid", f->port, 100, on_done, &o);
  run_until_done (f, &o);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, 2 * G_USEC_PER_SEC);
  g_assert_cmpint (o.code, ==, EVD_CONNECT_ERROR_RESOLVE);
  g_assert_cmpstr (o.message, ==, "cannot resolve evd-test.invalid: timed out");
  g_free (o.message);
  close (ns);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(name, fn) \
  g_test_add ("/connect/" name, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
  ADD ("first-refused-second-used", test_first_refused_second_used);
  ADD ("all-refused", test_all_refused);
  ADD ("numeric-without-resolver", test_numeric_without_resolver);
  ADD ("ipv6-literal-named-in-brackets", test_ipv6_literal_named_in_brackets);
  ADD ("cancel-while-connecting", test_cancel_while_connecting);
  ADD ("cancel-while-resolving", test_cancel_while_resolving);
  ADD ("resolve-times-out", test_resolve_times_out);
  return g_test_run ();
}

/* evdal-wake-cost: what one sleep and wake-up of a thread costs in CPU on this machine, the
 * price an IO loop pays each time it has nothing to do and blocks (issue 20, "waiting is
 * free", docs/BENCHMARKS.md).
 *
 * The thread does what a libevent loop with precise timers does when it waits for a timer:
 * timerfd_settime() to arm it PERIOD microseconds ahead, epoll_wait() until it fires, and a
 * read() of the timerfd; its own CPU (getrusage RUSAGE_THREAD: user + system) divided by the
 * rounds is the cost of one wait, the wake-up included. PERIOD 0 arms nothing and polls
 * (epoll_wait with a zero timeout): the same three system calls without sleeping, the floor.
 * On a virtual machine whose idle CPUs halt, a thread that sleeps long enough for its CPU to
 * go idle pays for the halt and the wake-up of that CPU too.
 *
 *   evdal-wake-cost [PERIOD_US...]     (default: 0 100 1000 10000; about a second each)
 */
#define _GNU_SOURCE  /* RUSAGE_THREAD */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

static double
evd_wake_cost_cpu_us (void)
{
  struct rusage r;

  getrusage (RUSAGE_THREAD, &r);
  return (double) (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 +
         (double) (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static void
evd_wake_cost_run (int ep, int tfd, long period_us)
{
  long rounds = period_us > 0 ? MAX (200, 1000000 / (period_us + 50)) : 200000;
  double cpu0 = evd_wake_cost_cpu_us ();
  gint64 t0 = g_get_monotonic_time ();

  for (long i = 0; i < rounds; i++) {
    struct itimerspec is = { { 0, 0 }, { period_us / 1000000, (period_us % 1000000) * 1000 } };
    struct epoll_event out;
    uint64_t expirations;

    if (period_us > 0) {
      timerfd_settime (tfd, 0, &is, NULL);
      while (epoll_wait (ep, &out, 1, -1) != 1)
        ;
      if (read (tfd, &expirations, sizeof expirations) != sizeof expirations)
        g_error ("read(timerfd) failed");
    } else {
      is.it_value.tv_sec = is.it_value.tv_nsec = 0;  /* disarmed: nothing to wait for */
      timerfd_settime (tfd, 0, &is, NULL);
      epoll_wait (ep, &out, 1, 0);
      (void) !read (tfd, &expirations, sizeof expirations);  /* EAGAIN, as a drained fd */
    }
  }
  printf ("period %6ld us: %7.2f us of CPU per wait (%ld waits, %.1f us apart)\n", period_us,
          (evd_wake_cost_cpu_us () - cpu0) / (double) rounds, rounds,
          (double) (g_get_monotonic_time () - t0) / (double) rounds);
}

int
main (int argc, char **argv)
{
  static const long defaults[] = { 0, 100, 1000, 10000 };
  int ep = epoll_create1 (0), tfd = timerfd_create (CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct epoll_event ev = { .events = EPOLLIN };

  if (ep < 0 || tfd < 0 || epoll_ctl (ep, EPOLL_CTL_ADD, tfd, &ev) != 0) {
    perror ("evdal-wake-cost");
    return 1;
  }
  if (argc > 1)
    for (int i = 1; i < argc; i++)
      evd_wake_cost_run (ep, tfd, MAX (atol (argv[i]), 0));
  else
    for (guint i = 0; i < G_N_ELEMENTS (defaults); i++)
      evd_wake_cost_run (ep, tfd, defaults[i]);
  return 0;
}

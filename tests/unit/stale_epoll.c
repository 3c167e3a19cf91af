/* stale_epoll: see stale_epoll.h. */
#define _GNU_SOURCE                       /* RTLD_NEXT */
#include "stale_epoll.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static __thread int stale;                /* each thread's own: a test's servers run on threads
                                             of their own, with libraries not under test */

static int (*real_epoll_ctl) (int, int, int, struct epoll_event *);

/* Before main, so that loop threads only ever read it. */
__attribute__((constructor)) static void
stale_epoll_init (void)
{
  *(void **) &real_epoll_ctl = dlsym (RTLD_NEXT, "epoll_ctl");
}

int
epoll_ctl (int epfd, int op, int fd, struct epoll_event *event)
{
  if (fcntl (fd, F_GETFD) == -1 && errno == EBADF) {
    stale++;
#ifdef STALE_EPOLL_PRELOAD
    /* Preloaded into evdal by the e2e harness: a line it looks for in the server's log, for
     * the IO loops' threads, where libpq, curl and evdns close sockets under the loop. (The
     * main loop's admin server leaves such deletes behind libevent's evhttp: see
     * evd_admin_free.) */
    char name[16] = "", line[128];
    int n;

    pthread_getname_np (pthread_self (), name, sizeof name);
    if (strncmp (name, "evdal-io", 8) == 0) {
      n = snprintf (line, sizeof line, "evdal-stale-epoll: %s: epoll_ctl op %d on closed "
                    "descriptor %d\n", name, op, fd);
      if (write (2, line, (size_t) n) < 0)
        stale++;                          /* nothing more to do: stderr is gone */
    }
#endif
  }
  return real_epoll_ctl (epfd, op, fd, event);
}

int
stale_epoll_ctl_count (void)
{
  return stale;
}

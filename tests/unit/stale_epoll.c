/* stale_epoll: see stale_epoll.h. */
#define _GNU_SOURCE                       /* RTLD_NEXT */
#include "stale_epoll.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sys/epoll.h>

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
  if (fcntl (fd, F_GETFD) == -1 && errno == EBADF)
    stale++;
  return real_epoll_ctl (epfd, op, fd, event);
}

int
stale_epoll_ctl_count (void)
{
  return stale;
}

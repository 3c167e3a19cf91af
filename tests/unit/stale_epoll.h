/* stale_epoll: counts libevent's epoll_ctl() calls on a descriptor that is closed at the
 * time, for the tests of code that watches sockets a library closes by itself. Linking
 * stale_epoll.c into a test puts its epoll_ctl() in place of libc's for every library the
 * test loads (an executable's symbol comes first). A library closes its socket, the loop that
 * watched the number drops the watch only afterwards: in evdal another loop's library may have
 * been given that number for a new socket in between, and this loop's epoll_ctl would then act
 * on it (ThreadSanitizer saw it in a PostgreSQL failover). On one thread the number is still
 * closed when it happens, so the call is seen here.
 * Built with STALE_EPOLL_PRELOAD, it is also a library the e2e harness preloads into evdal
 * (EVDAL_STALE_EPOLL_PRELOAD; builds without sanitizers only): each such call writes a line
 * "evdal-stale-epoll: ..." to stderr, and the harness fails the test that saw one. */
#pragma once

/* How many epoll_ctl() calls made on this thread named a closed descriptor. (The evhttp
 * servers of some tests close a connection's socket before its bufferevent's events go, on
 * their own threads: not the code under test.) */
int stale_epoll_ctl_count (void);

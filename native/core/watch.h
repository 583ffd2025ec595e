/* Watching a process end: with a pidfd, or without (old kernels, or
   CH_RUN_NO_PIDFD_OPEN=1) by asking. See watch.c. */

#ifndef CH_WATCH_H
#define CH_WATCH_H

#include <stdbool.h>
#include <sys/types.h>

struct watch {
   pid_t pid;
   int fd;        /* pidfd, or -1 */
   int procdir;   /* without pidfds, a process not ours: /proc/PID; else -1 */
};

extern bool watch_pidfds;       /* pidfds are used (watch_choose) */
extern int watch_sigchld_fd;    /* without pidfds, after watch_children: a SIGCHLD signalfd, or -1 */

void watch_choose(void);        /* in the parent, before any fork: pidfds or not */
void watch_children(void);      /* without pidfds: SIGCHLD on a signalfd, to wake waits on children */
void watch_sigchld_drain(void); /* consume the SIGCHLDs that woke a poll */
int  watch_open(struct watch *w, pid_t pid, bool child);   /* CHILD: ours. 0, or -1 with errno */
/* A poll(2) timeout of MS (-1: none) that, without pidfds, still wakes up
   to ask, unless only children are watched and SIGCHLD wakes us. */
int  watch_timeout(long ms, bool children_only);
bool watch_ended(const struct watch *w, short revents);   /* REVENTS: poll's, of W's pidfd */
bool watch_wait(const struct watch *w, long ms);          /* a child of ours: ended within MS? */
void watch_close(struct watch *w);

#endif

/* Watching a process end, for the SquashFUSE keeper (squash.c): a child of
   ours, or a process that is not (the core, then the command).

   With pidfd_open(2) (Linux 5.3), a process's end is an fd that polls
   readable: one poll(2) waits for it, at once and with no PID-reuse race.
   Without it (ENOSYS; or CH_RUN_NO_PIDFD_OPEN=1, so that this path runs,
   and is tested, on a new kernel too) the same guarantees come from asking,
   with each wait still bounded where it was:
     - our own children (squashfuse, the probe): waitid(WNOWAIT), which
       leaves them to be reaped as before, asked when a SIGCHLD arrives (on
       a signalfd; every WATCH_TICK_MS if there is none), so that the mount
       is ready as soon as with pidfds;
     - the core, not our child: every WATCH_TICK_MS (nothing tells us at
       once; only the unmount waits for it), through its /proc/PID
       directory, opened while it is certainly the core (it is waiting for the intermediate). The open
       directory stays bound to that process: once it is reaped nothing can
       be looked up in it, so a later process given the same PID never
       passes for it. It has ended when it is gone, or a zombie with no
       thread left: a main thread that exits while others run leaves a
       zombie leader, and the command is not over (a pidfd says the same). */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "watch.h"

#ifndef SYS_pidfd_open
#  define SYS_pidfd_open 434
#endif

static int pidfd_open_(pid_t pid)
{
   return (int)syscall(SYS_pidfd_open, pid, 0);
}

#define WATCH_TICK_MS 20

bool watch_pidfds = true;   /* decided in the core, before any fork (watch_choose) */

int watch_sigchld_fd = -1;   /* without pidfds, in the keeper: its SIGCHLD signalfd */

/* Start watching PID (CHILD: ours). 0, or -1 with errno. */
int watch_open(struct watch *w, pid_t pid, bool child)
{
   char path[32];
   *w = (struct watch){ .pid = pid, .fd = -1, .procdir = -1 };
   if (watch_pidfds) {
      w->fd = pidfd_open_(pid);
      return w->fd < 0 ? -1 : 0;
   }
   if (child)
      return 0;
   snprintf(path, sizeof(path), "/proc/%d", (int)pid);
   w->procdir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
   return w->procdir < 0 ? -1 : 0;
}

/* In the keeper, without pidfds: SIGCHLD blocked and read from a signalfd,
   which then wakes the waits on our children. If that fails, they are
   asked every tick instead. (squashfuse gets an empty mask again.) */
void watch_children(void)
{
   sigset_t set;
   if (watch_pidfds)
      return;
   sigemptyset(&set);
   sigaddset(&set, SIGCHLD);
   if (sigprocmask(SIG_BLOCK, &set, NULL) == 0)
      watch_sigchld_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* Consume the SIGCHLDs that woke us (the signalfd stays readable otherwise). */
void watch_sigchld_drain(void)
{
   struct signalfd_siginfo si;
   while (watch_sigchld_fd >= 0 && read(watch_sigchld_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
      ;
}

/* A poll(2) timeout of MS (-1: none) that, without pidfds, still wakes up
   to ask, unless only our children are watched and SIGCHLD wakes us. */
int watch_timeout(long ms, bool children_only)
{
   if (watch_pidfds || (children_only && watch_sigchld_fd >= 0) || (ms >= 0 && ms < WATCH_TICK_MS))
      return (int)ms;
   return WATCH_TICK_MS;
}

/* Has the process of PROCDIR ended? Read failures count as yes: gone, or
   no longer watchable, and then squashfuse must not be left behind. */
static bool proc_ended(int procdir)
{
   char buf[4096];
   int fd = openat(procdir, "status", O_RDONLY | O_CLOEXEC);
   if (fd < 0)
      return true;   /* ENOENT/ESRCH: reaped */
   ssize_t n = read(fd, buf, sizeof(buf) - 1);
   close(fd);
   if (n <= 0)
      return true;
   buf[n] = '\0';
   const char *state = strstr(buf, "\nState:\t");
   const char *threads = strstr(buf, "\nThreads:\t");
   if (state == NULL)
      return true;
   char c = state[strlen("\nState:\t")];
   if (c != 'Z' && c != 'X')
      return false;
   return threads == NULL || atoi(threads + strlen("\nThreads:\t")) <= 1;
}

/* Has W's process ended? REVENTS: what poll(2) said of W's pidfd. */
bool watch_ended(const struct watch *w, short revents)
{
   if (w->fd >= 0)
      return revents != 0;
   if (w->procdir >= 0)
      return proc_ended(w->procdir);
   siginfo_t si;
   memset(&si, 0, sizeof(si));
   if (waitid(P_PID, w->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
      return errno != EINTR;   /* ECHILD: reaped already */
   return si.si_pid == w->pid;
}

/* Wait up to MS for our child W to end; true if it did. */
bool watch_wait(const struct watch *w, long ms)
{
   long long deadline = now_ms() + ms;
   for (;;) {
      struct pollfd pfd[2] = { { w->fd, POLLIN, 0 }, { watch_sigchld_fd, POLLIN, 0 } };
      long long left = deadline - now_ms();
      int n = poll(pfd, 2, watch_timeout(left > 0 ? left : 0, true));
      if (n < 0 && errno != EINTR)
         return false;
      watch_sigchld_drain();
      if (watch_ended(w, n > 0 ? pfd[0].revents : 0))
         return true;
      if (left <= 0)
         return false;
   }
}

void watch_close(struct watch *w)
{
   if (w->fd >= 0)
      close(w->fd);
   if (w->procdir >= 0)
      close(w->procdir);
   w->fd = w->procdir = -1;
}

/* In the core, before forking: pidfds, unless the kernel lacks them or the
   switch says to behave as if. */
void watch_choose(void)
{
   const char *off = getenv("CH_RUN_NO_PIDFD_OPEN");
   if (off != NULL && strcmp(off, "1") == 0) {
      watch_pidfds = false;
      DEBUG("CH_RUN_NO_PIDFD_OPEN=1: watching squashfuse and the command without pidfds");
      return;
   }
   int fd = pidfd_open_(getpid());
   if (fd >= 0) {
      Z_(close(fd), "can't close pidfd");
      return;
   }
   if (errno == ENOSYS) {
      watch_pidfds = false;
      DEBUG("no pidfd_open(2) (Linux < 5.3): watching squashfuse and the command without pidfds");
   }
   /* Any other error: the real call, later, reports it. */
}

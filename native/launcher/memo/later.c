/* Keeping a record that comes after the plan (issue #27).

   Serializing the record of what a plan depends on, and our check of it,
   delayed every launch that plans. So the front end may hand the plan over
   first (LAUNCHER_LATER_BYTE on the done pipe) and then, no longer tied to
   us (its parent-death signal cleared, its stdio on /dev/null), write the
   record once we exec'd the command (lib/run/main.ts recordLater). We run
   the core at once; the record is checked and kept by a storer: a process of ours
   with the memo's state (key, directory, the key's lock), double-forked so
   that it is not the command's child (the command must not see a child it
   didn't start, nor get its SIGCHLD) and reparented to init or the nearest
   subreaper. It is forked while Node starts, not after the plan (two forks
   and a wait cost the launch 0.53 ms there, measured), and told then whether
   a record follows (a byte on its go pipe) or not (EOF: the front end
   recorded first, or there is no plan). Told, it holds the key's lock until the record is kept or given up,
   so a launch of the same key meanwhile waits for it and hits, as it waits
   for a peer that plans (memo.c). Never waits forever: LATER_WAIT_MS. A
   storer that dies first leaves a mark on the lock file, and the key's
   next launch records before it runs.

   Not in verify or replay mode (the test suite's: the record is kept
   before the command runs, and compared), nor under -v (what the front end
   says of the record belongs before the command's output). */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/* The front end writes the record within milliseconds of the command's exec. */
#define LATER_WAIT_MS 30000

/* Stdio on /dev/null and every other descriptor closed but KEEP's: the
   caller's pipes (a shell's $(...), srun's) must not wait for us. By
   /proc/self/fd, as kernels before close_range (5.9) need. */
static void keep_only(const int *keep, int n)
{
   int null = open("/dev/null", O_RDWR | O_CLOEXEC);
   for (int fd = 0; fd <= 2; fd++)
      if (null < 0 ? close(fd) : dup2(null, fd)) {}
   DIR *d = opendir("/proc/self/fd");
   if (d == NULL)
      return;
   struct dirent *e;
   while ((e = readdir(d)) != NULL) {
      int fd = atoi(e->d_name);
      bool kept = fd <= 2 || fd == dirfd(d) || e->d_name[0] == '.';
      for (int i = 0; i < n && !kept; i++)
         kept = fd == keep[i];
      if (!kept)
         (void)close(fd);
   }
   closedir(d);
}

/* Wait up to LATER_WAIT_MS for one byte on FD: the byte, or 0 (EOF, time up). */
static char byte_from(int fd)
{
   struct pollfd p = { .fd = fd, .events = POLLIN };
   char c = 0;
   int r;
   while ((r = poll(&p, 1, LATER_WAIT_MS)) < 0 && errno == EINTR) {}
   return r == 1 && read(fd, &c, 1) == 1 ? c : 0;
}

/* In the storer: told to (GO), wait for the record's done byte, then check
   and keep the record. */
_Noreturn static void storer(struct memo *m, int memofd, int done, int go)
{
   int keep[] = { m->dirfd, m->lockfd, memofd, done, go };
   keep_only(keep, sizeof(keep) / sizeof(keep[0]));
   if (byte_from(go) == LAUNCHER_LATER_BYTE_C && byte_from(done) == LAUNCHER_DONE_BYTE_C)
      (void)memo_store(m, memofd, -1, 1);   /* and the lock goes */
   _exit(0);
}

int memo_storer_start(struct memo *m, int memofd, int done)
{
   int go[2];
   if (!m->enabled || m->lockfd < 0 || pipe2(go, O_CLOEXEC) != 0)
      return -1;
   pid_t mid = fork();
   if (mid == 0) {
      if (fork() == 0)
         storer(m, memofd, done, go[0]);
      _exit(0);   /* the storer is init's (or a subreaper's) now */
   }
   int status;
   while (mid > 0 && waitpid(mid, &status, 0) < 0 && errno == EINTR) {}
   close(go[0]);
   if (mid < 0) {
      close(go[1]);
      return -1;
   }
   return go[1];
}

void memo_storer_go(struct memo *m, int go)
{
   /* The mark, until memo_store has been (and truncates it): a storer
      killed first (Slurm ends a step's processes when its task ends, and
      a short command's may end within the ms the record takes) leaves it,
      and the next launch of this key, finding it, records before it runs,
      so its plan is kept (memo.c memo_hit). */
   if (go >= 0 && m->lockfd >= 0 && pwrite(m->lockfd, "l", 1, 0) == 1)
      (void)write(go, &(char){ LAUNCHER_LATER_BYTE_C }, 1);
   if (go >= 0)
      close(go);
}

/* Keeping a record that comes after the plan (issue #27).

   Serializing the record of what a plan depends on, and our check of it,
   delayed every launch that plans. So the front end may hand the plan over
   first (LAUNCHER_LATER_BYTE on the done pipe) and then, no longer tied to
   ch-run (its parent-death signal cleared, its stdio on /dev/null), write
   the record to the memo memfd and LAUNCHER_DONE_BYTE to the storer's pipe,
   which LAUNCHER_MEMO_LATER names (lib/run/main.ts recordLater). ch-run runs
   the core at once.

   The storer is a process with the memo's state (key, directory, the
   key's lock) that the front end's waiter forks right after the front end:
   so it is never ch-run's child, nor then the command's (a command must not
   see a child it didn't start, nor get its SIGCHLD), and costs ch-run
   nothing (forked by ch-run after the plan, with the double fork that
   needed, it cost the launch 0.53 ms; and ch-run waking it at the hand-over,
   0.3). It outlives the waiter, which ch-run kills: a parent-death signal
   is not inherited by a fork. It waits for the byte (the record is whole) or EOF (no record comes: the
   front end recorded first and ch-run kept it, or failed, or it is gone),
   checks and keeps the record as memo_store does, and tidies the plan
   directory (memo_tidy; ch-run did, while Node started). It holds the key's
   lock until the record is kept or given up, so a launch of the same key
   meanwhile waits for it and hits, as it waits for a peer that plans
   (memo.c). Never waits forever: LATER_WAIT_MS.

   ch-run marks the lock file when it lets the front end record later; a
   record kept clears the mark. A storer that dies first leaves it, and the
   key's next launch records before it runs.

   Not in verify or replay mode (the test suite's: the record is kept
   before the command runs, and compared), nor under -v (what the front end
   says of the record belongs before the command's output). */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* From the front end's start: Node's start, planning, the record, usually
   well under a second (a first listing of a large SquashFS image takes
   longer). A storer that gives up leaves the mark: the next launch records
   first. */
#define LATER_WAIT_MS 30000

/* Stdio on /dev/null and every other descriptor closed but KEEP's: the
   caller's pipes (a shell's $(...), srun's) must not wait for us. By
   /proc/self/fd, as kernels before close_range (5.9) need. */
static void keep_only(const int *keep, int n)
{
   int null = open("/dev/null", O_RDWR | O_CLOEXEC);   /* closed below with the rest */
   for (int fd = 0; fd <= 2; fd++)
      (void)(null >= 0 ? dup2(null, fd) : close(fd));
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

void memo_storer(struct memo *m, int memofd, int rec)
{
   int keep[] = { m->dirfd, m->lockfd, memofd, rec };
   keep_only(keep, sizeof(keep) / sizeof(keep[0]));
   if (byte_from(rec) == LAUNCHER_DONE_BYTE_C) {
      (void)memo_store(m, memofd, -1, 1);   /* and the lock goes */
   } else if (m->lockfd >= 0) {
      close(m->lockfd);   /* the launcher's to hold, or no one's */
      m->lockfd = -1;
   }
   memo_tidy(m);
   _exit(0);
}

bool memo_mark_later(struct memo *m)
{
   /* Until memo_store has been (it truncates the lock file): a storer
      killed first (Slurm ends a step's processes when its task ends, and a
      short command's may end within the ms the record takes), or a front
      end that never sent it, leaves the mark, and the key's next launch,
      finding it, records before it runs, so that its plan is kept (memo.c
      memo_hit). */
   return m->lockfd >= 0 && pwrite(m->lockfd, "l", 1, 0) == 1;
}

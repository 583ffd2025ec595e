/* Memoized plans, the launcher's half.

   A launch's plan depends on its command line, uid, gid and cwd (the key),
   and on what the front end observed while planning: variables, files, the
   user name (lib/run/memo.ts records them). The front end hands that record
   beside the plan; we keep it in the user's own plan directory, named by a
   hash of the key. A later launch with the same key checks every recorded
   dependency, in order, against the system as it is now; if all hold, it
   replays the planner's environment edits on its own environment, prints
   what the planner printed, and execs the core without starting Node.
   Anything else (no record, a changed dependency, a corrupt or foreign
   file, a different build) is a miss: the front end plans as always and
   its record replaces the old one.

   The files of native/launcher/memo/, one concern each, are listed in internal.h;
   this one holds the launcher's two calls: a hit, and keeping a record.

   Concurrent launches with one key (the ranks of an MPI step on a node)
   wait for the first, which holds KEY.lock while Node plans, and then hit;
   a bounded wait, on our own file in our own directory. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Slot NAME: a memfd of its plan if its record holds; else -1, saying why in M->why. */
static int try_slot(struct memo *m, const char *name)
{
   size_t len, rlen;
   const char *whynot = NULL;
   char *p = entry_read(m, name, &len, &whynot);
   if (p == NULL) {
      why(m, "%s", whynot);
      return -1;
   }
   const char *rp = entry_record(m, p, len, &rlen);
   struct record r;
   int fd = -1;
   if (rp == NULL) {
      why(m, "%s", "corrupt record, removed");
      (void)unlinkat(m->dirfd, name, 0);
   } else if (record_read(m, rp, rlen, &r, true)) {
      char **env = edited_env(&r);
      struct buf plan = { 0 };
      if (env != NULL && build_plan(&r, env, &plan) && (fd = memfd_of(&plan)) >= 0) {
         (void)utimensat(m->dirfd, name, NULL, AT_SYMLINK_NOFOLLOW);   /* used: evicted last */
         if (r.verbose >= 1 && !m->quiet)
            say("plan memo: hit (%s)", name);
         if (!m->quiet)
            replay_log(&r);
      } else {
         why(m, "%s", "can't build plan from record");
      }
      free(plan.p);
   }
   free(p);
   return fd;
}

/* The first slot whose record holds; else -1, with why the first record
   there is didn't ("no record" if there is none). */
int try_hit(struct memo *m)
{
   char first[512] = "no record", name[32];
   for (int i = 0; i < SLOTS; i++) {
      slot_name(m, i, name, sizeof(name));
      int fd = try_slot(m, name);
      if (fd >= 0)
         return fd;
      if (!strcmp(first, "no record") && strcmp(m->why, "no record") != 0)
         snprintf(first, sizeof(first), "%s", m->why);
   }
   snprintf(m->why, sizeof(m->why), "%s", first);
   return -1;
}

/* Concurrent launches of one key (the ranks of an MPI step on a node):
   one plans while holding KEY.lock, the others wait for it and then hit.
   A waiter that still misses, where the planner kept a record (made for
   other conditions: fake nodes sharing /dev/shm), plans in its turn holding
   the lock; where the planner kept none (a plan that can't be memoized),
   the waiters plan at once, side by side, not one by one. A planner keeps
   its record a moment before it lets go of the lock: a waiter that came in
   between finds no newer record once it wakes, so a record kept less than
   KEPT_JUST_NOW_NS before it began to wait counts as the planner's. */
#define KEPT_JUST_NOW_NS 1000000000LL

/* Was a record written at NEWEST (newest_slot) within KEPT_JUST_NOW_NS before now? */
static bool kept_just_now(long long newest)
{
   struct timespec now;
   if (newest == 0 || clock_gettime(CLOCK_REALTIME, &now) != 0)
      return false;
   return now.tv_sec * 1000000000LL + now.tv_nsec - newest < KEPT_JUST_NOW_NS;
}

int replay_check(struct memo *m);

int memo_hit(struct memo *m)
{
   if (m->check_fd >= 0)
      return replay_check(m);
   if (!m->enabled || m->verify)
      return -1;
   int fd = try_hit(m);
   if (fd >= 0)
      return fd;
   char lock[32], missed[512];
   snprintf(missed, sizeof(missed), "%s", m->why);
   snprintf(lock, sizeof(lock), "%s.lock", m->name);
   int lfd = openat(m->dirfd, lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
   struct stat st;
   if (lfd < 0 || fstat(lfd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid()) {
      if (lfd >= 0)
         close(lfd);
      return -1;
   }
   for (int round = 0; round < SLOTS; round++) {
      if (lock_take(lfd, false)) {
         m->lockfd = lfd;   /* ours until our record is kept */
         /* Marked, and no one holds it: a record that was to come after
            its plan was lost (later.c). Record this plan before it runs. */
         m->record_first = fstat(lfd, &st) == 0 && st.st_size > 0;
         return -1;
      }
      long long before = newest_slot(m);
      bool fresh = kept_just_now(before);
      if (!lock_take(lfd, true)) {
         why(m, "%.400s (waited for a concurrent launch in vain)", missed);
         break;
      }
      flock(lfd, LOCK_UN);
      if ((fd = try_hit(m)) >= 0) {
         close(lfd);
         return fd;
      }
      if (newest_slot(m) == before && !fresh) {
         why(m, "%.400s (a concurrent launch kept no record)", missed);
         break;
      }
   }
   close(lfd);
   return -1;
}

int memo_store(struct memo *m, int memofd, int planfd, int tries)
{
   size_t len;
   char *rec = m->enabled ? read_fd(memofd, &len) : NULL;
   struct record r;
   if (rec != NULL && len > 0 && record_read(m, rec, len, &r, false)) {
      m->verbose = r.verbose;
      /* Every dependency must hold now, right after planning: if one
         doesn't, recorder and checker disagree (a bug), or the system
         changed meanwhile; either way the record isn't kept. */
      struct record checked;
      bool holds = record_read(m, rec, len, &checked, true);
      if (m->verify && r.nostore == NULL && !holds) {
         /* Another process may have changed an input while we planned (a
            real launch then misses next time and plans anew): plan again,
            a few times. A recorder that misses something, or records it
            other than the checker reads it, fails every time. */
         if (tries < MEMO_VERIFY_TRIES) {
            if (r.verbose >= 1)
               say("plan memo verify: %s right after planning; planning again", m->why);
            free(rec);
            return -1;
         }
         FATAL_NOERR("plan memo verify: %s right after planning (%d plans in a row)", m->why, tries);
      }
      if (holds && r.nostore == NULL)
         entry_write(m, rec, len);
      if (m->verify && (holds || r.nostore != NULL))
         planfd = verify(m, &r, rec, len, planfd);
   }
   free(rec);
   if (m->lockfd >= 0) {
      (void)ftruncate(m->lockfd, 0);   /* no record is lost (later.c) */
      close(m->lockfd);   /* peers waiting on it now find our record */
      m->lockfd = -1;
   }
   return planfd;
}

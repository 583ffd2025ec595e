/* --join: all ch-run peers of a group (the ranks of one job step on one node)
   share one user+mount namespace. The first to arrive (the winner) builds the
   container; the others setns(2) into it. Nothing of this can happen in Node:
   setns to a user namespace needs a single-threaded process.

   Coordination is a small file named by the tag, holding a struct guarded by
   flock(2), in a directory that only this user can enter: $XDG_RUNTIME_DIR/
   chtk-join, or where there is no such runtime directory, one in /dev/shm.
   /dev/shm is writable by everyone, so that directory's name is not trusted
   blindly: peers try /dev/shm/.chtk-join.UID, then .chtk-join.UID.1, ... in
   the same order, without end, and use the first that is a real directory of
   theirs, mode 0700 (creating it if absent). Something another user planted
   under a name is skipped by every peer alike, so they still meet; nothing
   planted can be followed or block the group. The directory is removed when
   its last group ends, so nothing is left in /dev/shm after a run. The winner waits before exec until every peer
   has opened its namespace fds, so a quick command can't exit and take the
   namespaces with it before a slow peer arrives; then it removes the file.
   A peer that never comes ends in a clear timeout error, not a hang. */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#define JOIN_MAGIC 0x63686a6e31ULL   /* "chjn1" */

enum join_state { JS_SETUP = 1, JS_READY = 2, JS_FAILED = 3 };

struct join_shared {
   unsigned long long magic;
   pid_t winner;
   int state;
   int ct;       /* peers expected, winner included */
   int arrived;  /* peers holding the namespaces, winner included */
};

static int join_fd = -1;
static int join_dirfd = -1;
static char *join_path = NULL;   /* for messages */
static char *join_name = NULL;   /* the file's name in join_dirfd */
static char *join_dir = NULL;
static int join_parentfd = -1;   /* join_dir's parent: the winner tidies after pivot_root, where
                                    $XDG_RUNTIME_DIR is not in sight (/dev/shm is) */
static int peer_userns = -1, peer_mntns = -1;

static void nap(int *us)
{
   struct timespec ts = { 0, *us * 1000L };
   nanosleep(&ts, NULL);
   if (*us < 20000) *us *= 2;   /* 50 us .. 20 ms: quick when peers are quick */
}

static void lock(void)   { Z_(flock(join_fd, LOCK_EX), "join: can't lock %s", join_path); }
static void unlock(void) { Z_(flock(join_fd, LOCK_UN), "join: can't unlock %s", join_path); }

static bool load(struct join_shared *s)
{
   ssize_t r = pread(join_fd, s, sizeof(*s), 0);
   T_(r >= 0, "join: can't read %s", join_path);
   return r == sizeof(*s) && s->magic == JOIN_MAGIC;
}

static void store(const struct join_shared *s)
{
   T_(pwrite(join_fd, s, sizeof(*s), 0) == sizeof(*s), "join: can't write %s", join_path);
}

/* Tags come from the command line or the environment: keep the file name to
   a safe alphabet so a tag can't name a path elsewhere. */
static char *sanitize(const char *tag)
{
   char *s = strdup(tag);
   T_(s != NULL, "strdup");
   for (char *c = s; *c; c++)
      if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
            || *c == '.' || *c == '_' || *c == '-'))
         *c = '_';
   return s;
}

/* The per-user directory of join files, as described at the top; its fd.
   $XDG_RUNTIME_DIR/chtk-join when XDG_RUNTIME_DIR is a directory of ours
   closed to others (no one else can plant anything there); else, in /dev/shm,
   .chtk-join.UID, then .chtk-join.UID.1, .2, ...: names of our own (not
   Charliecloud's ch-run*), and no fixed number of them that an attacker could
   all take. All peers of a group share the environment and try the same names
   in the same order, so they meet in the same directory. */
#define JOIN_DIR_TRIES (1 << 20)   /* not reached: one probe per name another user planted */
static int join_dir_open(void)
{
   int vanished = 0, skipped = 0;
   char *first = NULL;   /* the first name skipped, for the warning */
   const char *xdg = getenv("XDG_RUNTIME_DIR");
   struct stat xst;
   bool private = xdg != NULL && xdg[0] == '/' && lstat(xdg, &xst) == 0 && S_ISDIR(xst.st_mode)
                  && xst.st_uid == getuid() && !(xst.st_mode & 077);
   for (int i = 0; i < (private ? 1 : JOIN_DIR_TRIES); i++) {
      free(join_dir);
      join_dir = private ? xasprintf("%s/chtk-join", xdg)
                 : i == 0 ? xasprintf("/dev/shm/.chtk-join.%u", getuid())
                 : xasprintf("/dev/shm/.chtk-join.%u.%d", getuid(), i);
      if (mkdir(join_dir, 0700) != 0 && errno != EEXIST)
         FATAL("join: can't create %s", join_dir);
      int fd = open(join_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT && vanished++ < 100) {
         i--;   /* removed by the last peer of another group: make it again */
         continue;
      }
      if (fd < 0) {
         if (errno == ENOTDIR || errno == ELOOP || errno == EACCES) {
            if (skipped++ == 0)   /* not a directory of ours: planted */
               first = xasprintf("%s", join_dir);
            continue;
         }
         FATAL("join: can't open %s", join_dir);
      }
      struct stat st;
      Z_(fstat(fd, &st), "join: can't stat %s", join_dir);
      if (st.st_uid == getuid() && (st.st_mode & 0777) == 0700) {
         if (join_parentfd >= 0)
            close(join_parentfd);
         char *parent = private ? xasprintf("%s", xdg) : xasprintf("/dev/shm");
         join_parentfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
         T_(join_parentfd >= 0, "join: can't open %s", parent);
         free(parent);
         static bool said = false;   /* once, however many rounds and plants */
         if (skipped > 0 && !said) {
            said = true;
            WARN("join: ignoring %s%s: not a directory of yours, mode 0700 (using %s)", first,
                 skipped > 1 ? xasprintf(" and %d more", skipped - 1) : "", join_dir);
         }
         free(first);
         return fd;
      }
      if (skipped++ == 0)
         first = xasprintf("%s", join_dir);
      close(fd);
   }
   FATAL_NOERR("join: no usable directory for join files: %s is not a directory of yours, mode 0700%s",
               join_dir, private ? "" : " (nor the names before it); set XDG_RUNTIME_DIR to one");
}

/* Remove our directory once empty; another group's file keeps it. */
static void join_dir_tidy(void)
{
   if (unlinkat(join_parentfd, strrchr(join_dir, '/') + 1, AT_REMOVEDIR) != 0
       && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT && errno != EBUSY)
      WARN("join: can't remove %s", join_dir);
}

/* If the winner dies during setup, peers must not wait for it. */
static void winner_failed(void)
{
   struct join_shared s;
   if (flock(join_fd, LOCK_EX) == 0) {
      if (load(&s) && s.winner == getpid()) {
         s.state = JS_FAILED;
         store(&s);
         unlinkat(join_dirfd, join_name, 0);
         join_dir_tidy();
      }
      flock(join_fd, LOCK_UN);
   }
}

enum join_role join_begin(const struct plan *p)
{
   join_name = sanitize(p->join_tag);

   long long deadline = now_ms() + p->join_timeout_ms;
   int us = 50;
   for (;;) {
      /* Reopened each round: the last peer of another group may have removed
         the (then empty) directory; creating a file in it then fails ENOENT. */
      if (join_dirfd >= 0)
         close(join_dirfd);
      join_dirfd = join_dir_open();
      free(join_path);
      join_path = xasprintf("%s/%s", join_dir, join_name);
      join_fd = openat(join_dirfd, join_name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
      if (join_fd < 0 && errno == ENOENT)
         continue;
      T_(join_fd >= 0, "join: can't open %s", join_path);
      struct stat st;
      Z_(fstat(join_fd, &st), "join: can't stat %s", join_path);
      if (!S_ISREG(st.st_mode) || st.st_uid != getuid())
         FATAL_NOERR("join: %s is not a regular file of yours; refusing it", join_path);
      lock();
      /* The file we locked may have been unlinked by the previous group's
         last step; then start over with a fresh one. */
      struct stat now;
      if (fstatat(join_dirfd, join_name, &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino) {
         unlock(); close(join_fd);
         continue;
      }
      struct join_shared s;
      bool valid = load(&s);
      if (valid && s.state != JS_FAILED && kill(s.winner, 0) != 0 && errno == ESRCH) {
         WARN("join: removing stale group %s (winner %d is gone)", join_path, s.winner);
         valid = false;
      }
      if (!valid || s.state == JS_FAILED) {
         s = (struct join_shared){ JOIN_MAGIC, getpid(), JS_SETUP, p->join_ct, 1 };
         Z_(ftruncate(join_fd, 0), "join: can't truncate %s", join_path);
         store(&s);
         unlock();
         fatal_hook = winner_failed;
         INFO("join: winner of group %s (%d peers)", p->join_tag, p->join_ct);
         return JOIN_WINNER;
      }
      if (s.state == JS_READY) {
         if (s.arrived >= s.ct)
            FATAL_NOERR("join: group %s already has its %d peers; is --join-ct too low?",
                        p->join_tag, s.ct);
         /* Opening the namespace files pins the namespaces: from here on the
            winner may exit without stranding us. */
         char *u = xasprintf("/proc/%d/ns/user", s.winner), *m = xasprintf("/proc/%d/ns/mnt", s.winner);
         peer_userns = open(u, O_RDONLY | O_CLOEXEC);
         peer_mntns = open(m, O_RDONLY | O_CLOEXEC);
         if (peer_userns < 0 || peer_mntns < 0) {
            int e = errno;
            unlock();
            errno = e;
            FATAL("join: can't open namespaces of winner %d", s.winner);
         }
         free(u); free(m);
         s.arrived++;
         store(&s);
         unlock();
         close(join_fd);
         close(join_dirfd);
         DEBUG("join: peer %d of %d in group %s", s.arrived, s.ct, p->join_tag);
         return JOIN_PEER;
      }
      unlock();
      if (now_ms() > deadline) {
         close(join_fd);
         FATAL_NOERR("join: timed out after %d ms waiting for winner %d of group %s to set up",
                     p->join_timeout_ms, s.winner, p->join_tag);
      }
      close(join_fd);   /* reopen each round: the file may be replaced */
      nap(&us);
   }
}

void join_winner_ready(const struct plan *p)
{
   struct join_shared s;
   long long deadline = now_ms() + p->join_timeout_ms;
   int us = 50;

   lock();
   T_(load(&s), "join: %s was corrupted", join_path);
   s.state = JS_READY;
   store(&s);
   unlock();
   for (;;) {
      lock();
      T_(load(&s), "join: %s was corrupted", join_path);
      if (s.arrived >= s.ct) {
         /* Everyone holds the namespaces: the tag is free for reuse. */
         Z_(unlinkat(join_dirfd, join_name, 0), "join: can't remove %s", join_path);
         unlock();
         join_dir_tidy();
         break;
      }
      unlock();
      if (now_ms() > deadline)
         /* fatal_hook marks the group failed and removes the file. */
         FATAL_NOERR("join: timed out after %d ms: %d of %d peers joined group %s "
                     "(is --join-ct too high?)", p->join_timeout_ms, s.arrived, s.ct, p->join_tag);
      nap(&us);
   }
   fatal_hook = NULL;
   close(join_fd);
   close(join_dirfd);
   INFO("join: all %d peers joined group %s", s.ct, p->join_tag);
}

void join_peer_enter(const struct plan *p)
{
   Z_(setns(peer_userns, CLONE_NEWUSER), "join: can't join user namespace");
   Z_(setns(peer_mntns, CLONE_NEWNS), "join: can't join mount namespace");
   close(peer_userns); close(peer_mntns);
}

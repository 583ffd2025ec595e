/* ch-run IMAGE.sqfs: mount a SquashFS image with SquashFUSE inside the
   container's own namespaces, with no privilege and no setuid fusermount.

   Process layout (measured and chosen; see test/squash.test.js):

      core (ch-run's PID, becomes the command by exec)
        `- intermediate: pidfd of the core, setsid, fork, exit (reaped at once)
             `- keeper (reparented away; not the command's child): mounts FUSE
                  `- squashfuse -f IMAGE /dev/fd/N (PDEATHSIG SIGKILL, NO_NEW_PRIVS)

   The core forks after entering the outer user+mount namespace, so the
   keeper and squashfuse share it: the FUSE mount they make is the one the
   core binds as the image root. The command must not be squashfuse's parent
   (a command calling wait(-1) would wait on it forever), hence the double
   fork. The keeper opens /dev/fuse and mounts it at the mount point with
   the capabilities it holds in the namespace; squashfuse only serves that
   connection, inherited as /dev/fd/N (libfuse >= 3.3), with no capability
   at all. Once a probe process's statfs(2) gets an answer (kept apart so
   that a squashfuse that never answers can't block the keeper past its
   timeout), the keeper reports "mounted", or why not, over a pipe, then waits on
   a pidfd of the core (or, without pidfd_open, watches it: see
   watch.c): when the command (same PID) ends, however it ends, the keeper
   kills squashfuse. With both gone nothing is left in the
   namespace and the kernel tears the mount down: nothing survives the
   command, and the mount is never visible outside its namespace. If the
   keeper is killed, squashfuse dies with it (PDEATHSIG).

   SquashFUSE runs in the foreground (single-threaded on up to 2 CPUs,
   else multithreaded: CH_RUN_SQUASH_THREADS): a daemonized squashfuse in
   the namespace would never exit. With a shared mount (holder.c) the
   keeper becomes a long-lived holder in a user+mount namespace of its own. It mounts
   nothing, so libfuse never falls back to fusermount3; NO_NEW_PRIVS makes
   sure nothing it runs could gain privilege anyway. (Measured, the other
   way: squashfuse mounting itself needs CAP_SYS_ADMIN kept across exec as
   an ambient capability, since exec as our non-zero uid drops it.) */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "watch.h"

/* What the keeper tells the core: mounted, or why not. */
struct report {
   int ok;
   int err;           /* errno of the failed step, 0 if none */
   char text[2048];   /* what failed, with squashfuse's own words */
};

/* Set in the core before it forks, for the keeper too: the mount point,
   opened once and checked (check_mount_point), and our namespace's mounts
   before the keeper adds its own (lookup.c: open_new_mount). */
static int mp_fd = -1;
static int *mnt_before;
static size_t mnt_before_ct;

/* A shared mount (holder.c): the listening socket the keeper, become a
   long-lived holder, serves; the image, opened once by the core (so the
   identity the holder is found by is the file squashfuse serves). -1: a
   private mount, today's keeper. */
static int holder_lfd = -1;
static int image_fd = -1;

/* In the keeper: tell the core why the mount failed, and exit. The
   keeper's stderr is /dev/null (it holds none of the caller's stdio), so
   this pipe is the only way out. */
static void keeper_fail(int rfd, int err, const char *fmt, ...)
   __attribute__((noreturn, format(printf, 3, 4)));
static void keeper_fail(int rfd, int err, const char *fmt, ...)
{
   struct report r = { .ok = 0, .err = err };
   va_list ap;
   va_start(ap, fmt);
   vsnprintf(r.text, sizeof(r.text), fmt, ap);
   va_end(ap);
   ssize_t w = write(rfd, &r, sizeof(r));
   (void)w;
   _exit(1);
}

/* Default dispositions and an empty mask: what squashfuse would get from a
   plain shell, not what the caller (or the keeper) set up. */
static void signals_default(void)
{
   struct sigaction dfl = { .sa_handler = SIG_DFL };
   sigemptyset(&dfl.sa_mask);
   for (int s = 1; s < NSIG; s++)
      sigaction(s, &dfl, NULL);   /* EINVAL for SIGKILL, SIGSTOP and the unused: fine */
   sigset_t none;
   sigemptyset(&none);
   sigprocmask(SIG_SETMASK, &none, NULL);
}

/* In squashfuse's process: become squashfuse -f IMAGE /dev/fd/N, N the
   FUSE connection the keeper mounted (libfuse >= 3.3 serves an inherited
   /dev/fd/N and mounts nothing itself). Dies with the keeper; holds no
   capability and can never gain privilege. Failures go to ERRW, which the
   keeper reads. */
static void squashfuse_exec(const struct plan *p, pid_t keeper, int fusefd, int errw, int devnull)
{
   char line[512], fdpath[32];
   if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != keeper)
      _exit(127);
   if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      snprintf(line, sizeof(line), "can't set no_new_privs: %s (%s)", strerror(errno), errno_name(errno));
      goto fail;
   }
   int fd = fcntl(fusefd, F_DUPFD, 3);   /* not close-on-exec: squashfuse's */
   if (fd < 0) {
      snprintf(line, sizeof(line), "can't pass FUSE connection: %s (%s)", strerror(errno), errno_name(errno));
      goto fail;
   }
   snprintf(fdpath, sizeof(fdpath), "/dev/fd/%d", fd);
   if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(errw, 2) < 0) {
      snprintf(line, sizeof(line), "can't redirect stdio: %s (%s)", strerror(errno), errno_name(errno));
      goto fail;
   }
   char image[32];   /* the file the core opened, in a shared holder; else its path */
   if (image_fd >= 0) {
      int ifd = fcntl(image_fd, F_DUPFD, 3);
      if (ifd < 0) {
         snprintf(line, sizeof(line), "can't pass image: %s (%s)", strerror(errno), errno_name(errno));
         goto fail;
      }
      snprintf(image, sizeof(image), "/dev/fd/%d", ifd);
   }
   signals_default();
   /* CH_RUN_SQUASH_THREADS (the plan's): 1 single-threaded (-s), N at most
      N worker threads, 0 squashfuse's own default. */
   char threads[48];
   snprintf(threads, sizeof(threads), "max_threads=%d", p->squash_threads);
   /* argv[0]: the program's own name (squashfuse_ll or squashfuse, the
      front end's choice), as ps shows it. */
   const char *base = strrchr(p->squashfuse, '/');
   char *argv[8] = { (char *)(base != NULL ? base + 1 : p->squashfuse), "-f" };
   int a = 2;
   cpu_set_t cpus;
   /* 0, the default: single-threaded on up to 2 CPUs, where it read
      fastest (docs/design.md, "FUSE threads"); else squashfuse's own. */
   bool few = p->squash_threads == 0 && sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) <= 2;
   if (p->squash_threads == 1 || few)
      argv[a++] = "-s";
   else if (p->squash_threads > 1) {
      argv[a++] = "-o";
      argv[a++] = threads;
   }
   argv[a++] = image_fd >= 0 ? image : p->squash_image;
   argv[a++] = fdpath;
   argv[a] = NULL;
   execv(p->squashfuse, argv);
   snprintf(line, sizeof(line), "can't execute %s: %s (%s)", p->squashfuse, strerror(errno),
            errno_name(errno));
fail:;
   ssize_t w = write(errw, line, strlen(line));
   (void)w;
   _exit(127);
}

/* Append what squashfuse wrote to its stderr to BUF (bounded); false at EOF. */
static bool slurp(int fd, char *buf, size_t size)
{
   size_t len = strlen(buf);
   char scratch[512];
   bool room = len + 1 < size;
   ssize_t n = read(fd, room ? buf + len : scratch, room ? size - len - 1 : sizeof(scratch));
   if (n > 0 && room)
      buf[len + n] = '\0';
   return n > 0 || (n < 0 && errno == EINTR);
}

/* A process that finds the new mount at MNT (checked to be the one the
   keeper made: lookup.c, open_new_mount) and asks it what it is: its
   statfs(2) waits until squashfuse has answered FUSE's INIT, which is what
   "ready" means. It runs apart so that the keeper's own wait can time out:
   a squashfuse that never answers would block the asker for ever. Exits 0
   if so, PROBE_MOVED if MNT leads elsewhere now, 1 on other failures. */
#define PROBE_MOVED 2
static pid_t probe_start(const char *mnt)
{
   pid_t pid = fork();
   if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = open_new_mount(mnt, mnt_before, mnt_before_ct, FUSE_SUPER_MAGIC);
      _exit(fd >= 0 ? 0 : errno == EXDEV ? PROBE_MOVED : 1);
   }
   return pid;
}

/* squashfuse exited (or was killed) before serving: say why, in its words. */
static void fuse_died(const struct plan *p, int rfd, pid_t fuse, int errr, bool err_open, char *said, size_t size)
{
   while (err_open)   /* all it said */
      err_open = slurp(errr, said, size);
   int status = 0;
   while (waitpid(fuse, &status, 0) < 0 && errno == EINTR)
      ;
   size_t l = strlen(said);
   while (l > 0 && (said[l - 1] == '\n' || said[l - 1] == ' '))
      said[--l] = '\0';
   for (char *c = said; *c; c++)
      if (*c == '\n') *c = ' ';
   if (WIFSIGNALED(status))
      keeper_fail(rfd, 0, "squashfuse killed by signal %d before serving %s%s%s", WTERMSIG(status),
                  p->squash_image, *said ? ": " : "", said);
   keeper_fail(rfd, 0, "squashfuse exited with status %d before serving %s%s%s",
               WEXITSTATUS(status), p->squash_image, *said ? ": " : "", said);
}

/* Wait until squashfuse serves the mount (the probe says so), it exited,
   or the timeout; whichever comes first wakes us: the probe's end,
   squashfuse's, or squashfuse writing to stderr. */
static void wait_mounted(const struct plan *p, int rfd, pid_t fuse, int errr)
{
   static char said[1536];
   struct watch fw, pw;
   if (watch_open(&fw, fuse, true) != 0)
      keeper_fail(rfd, errno, "can't open pidfd of squashfuse");
   pid_t probe = probe_start(p->root);
   if (probe < 0)
      keeper_fail(rfd, errno, "can't fork SquashFUSE probe");
   if (watch_open(&pw, probe, true) != 0)
      keeper_fail(rfd, errno, "can't open pidfd of SquashFUSE probe");
   long long deadline = now_ms() + p->squash_timeout_ms;   /* never wait for ever */
   bool err_open = true;
   for (;;) {
      struct pollfd fds[4] = { { pw.fd, POLLIN, 0 }, { fw.fd, POLLIN, 0 }, { err_open ? errr : -1, POLLIN, 0 },
                               { watch_sigchld_fd, POLLIN, 0 } };
      long long left = deadline - now_ms();
      if (left <= 0) {
         kill(probe, SIGKILL);
         kill(fuse, SIGKILL);
         keeper_fail(rfd, ETIMEDOUT, "squashfuse did not serve %s within %.1f s (CH_RUN_SQUASH_TIMEOUT)",
                     p->squash_image, p->squash_timeout_ms / 1000.0);
      }
      int n = poll(fds, 4, watch_timeout(left, true));
      if (n < 0 && errno != EINTR)
         keeper_fail(rfd, errno, "can't poll for the SquashFUSE mount");
      if (n < 0)
         continue;
      if (fds[2].revents)
         err_open = slurp(errr, said, sizeof(said));
      if (fds[3].revents)
         watch_sigchld_drain();
      if (watch_ended(&fw, fds[1].revents))
         fuse_died(p, rfd, fuse, errr, err_open, said, sizeof(said));
      if (watch_ended(&pw, fds[0].revents)) {
         int status = 0;
         while (waitpid(probe, &status, 0) < 0 && errno == EINTR)
            ;
         if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            break;
         if (WIFEXITED(status) && WEXITSTATUS(status) == PROBE_MOVED) {
            kill(fuse, SIGKILL);
            keeper_fail(rfd, 0, "mount point %s changed while mounting (renamed by someone who can "
                        "write to its directory?)", p->root);
         }
         /* The connection failed: squashfuse is exiting; its status says why. */
         if (!watch_wait(&fw, 1000))
            kill(fuse, SIGKILL);
         fuse_died(p, rfd, fuse, errr, err_open, said, sizeof(said));
      }
   }
   watch_close(&pw);
   watch_close(&fw);
}

/* The keeper, after the mount: wait for the core (then the command, same
   PID) to end, draining squashfuse's stderr meanwhile so a message can't
   block it; then end squashfuse. Never returns. */
static void keeper_watch(const struct watch *core, pid_t fuse, int errr)
{
   bool err_open = true;
   for (;;) {
      struct pollfd fds[2] = { { core->fd, POLLIN, 0 }, { err_open ? errr : -1, POLLIN, 0 } };
      if (poll(fds, 2, watch_timeout(-1, false)) < 0) {
         if (errno == EINTR) continue;
         break;   /* can't watch: don't leave squashfuse behind */
      }
      if (watch_ended(core, fds[0].revents))
         break;
      if (fds[1].revents) {
         char junk[512];
         ssize_t n = read(errr, junk, sizeof(junk));
         err_open = n > 0 || (n < 0 && errno == EINTR);
      }
   }
   kill(fuse, SIGKILL);
   while (waitpid(fuse, NULL, 0) < 0 && errno == EINTR)
      ;
   _exit(0);
}

/* The mount point was opened (mp_fd) in the host's mount namespace, before
   a shared mount's rendezvous (holder.c); the kernel won't mount on that
   descriptor from our own namespace. The same directory, opened again
   here: 0, EXDEV if the path leads elsewhere now, or the open's errno. */
static int mount_point_again(const struct plan *p)
{
   struct stat was, now;
   int fd = open(p->root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
   if (fd < 0 || fstat(fd, &now) != 0 || fstat(mp_fd, &was) != 0)
      return errno;
   if (now.st_dev != was.st_dev || now.st_ino != was.st_ino) {
      close(fd);
      return EXDEV;
   }
   close(mp_fd);
   mp_fd = fd;
   return 0;
}

/* Close every descriptor above 2 but the KEEP (N of them; -1s ignored). */
static void close_others(const int *keep, size_t n)
{
   int fds[1024];
   size_t ct = 1024;
   while (ct == 1024) {   /* more than that: another round */
   ct = 0;
   DIR *d = opendir("/proc/self/fd");
   if (d == NULL)
      return;   /* no /proc: the CLOEXEC ones went at exec anyway */
   for (struct dirent *e; (e = readdir(d)) != NULL && ct < 1024;) {
      int fd = atoi(e->d_name);
      if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd <= 2 || fd == dirfd(d))
         continue;
      bool kept = false;
      for (size_t i = 0; i < n; i++)
         kept = kept || keep[i] == fd;
      if (!kept)
         fds[ct++] = fd;
   }
   closedir(d);
   for (size_t i = 0; i < ct; i++)
      close(fds[i]);
   }
}

/* The keeper: start squashfuse, report, watch. Never returns. */
static void keeper(const struct plan *p, const struct watch *core, int rfd)
{
   if (holder_lfd >= 0) {
      /* A holder: its own user and mount namespace (the core's is the
         container's, and later containers enter this one), private, and
         the mounts in it before ours. */
      userns_enter(getuid(), getuid(), getgid(), getgid());
      if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
         keeper_fail(rfd, errno, "can't make / private");
      mnt_before = mount_ids(&mnt_before_ct);
      int e = mount_point_again(p);
      if (e == EXDEV)
         keeper_fail(rfd, 0, "mount point %s changed while mounting (renamed by someone who can "
                     "write to its directory?)", p->root);
      if (e != 0)
         keeper_fail(rfd, e, "can't open SquashFS mount point %s", p->root);
      if (chdir("/") != 0)   /* pin nothing of the caller's for the linger */
         keeper_fail(rfd, errno, "can't cd to /");
      prctl(PR_SET_NAME, "chtk-sqfs-hold");   /* for ps -o comm; its argv stays the core's */
      /* It serves every rank of the node, not the one that started it:
         not that rank's CPU binding (srun --cpu-bind), but every CPU we
         may use (the kernel trims the mask to the cpuset's). */
      cpu_set_t all;
      CPU_ZERO(&all);
      for (int c = 0; c < CPU_SETSIZE; c++)
         CPU_SET(c, &all);
      sched_setaffinity(0, sizeof(all), &all);   /* failing, it keeps the rank's: slower, not wrong */
      /* Nor any descriptor the caller passed on (fd 3 of a pipeline, a
         jobserver, the launcher's): held past the job for the linger, a
         reader would wait for it. Only what the holder needs stays. */
      int keep[] = { rfd, holder_lfd, image_fd, mp_fd, core->fd, core->procdir };
      close_others(keep, sizeof(keep) / sizeof(keep[0]));
   }
   int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
   if (devnull < 0)
      keeper_fail(rfd, errno, "can't open /dev/null");
   /* Hold none of the caller's stdio: a pipe reader would otherwise wait
      for the keeper too. Terminal signals are for the command; ours is to
      outlive it, briefly, and then clean up. */
   if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0)
      keeper_fail(rfd, errno, "can't redirect the keeper's stdio");
   signals_default();
   struct sigaction ign = { .sa_handler = SIG_IGN };
   sigemptyset(&ign.sa_mask);
   for (int s = SIGHUP; s <= SIGTERM; s++)
      if (s == SIGHUP || s == SIGINT || s == SIGQUIT || s == SIGTERM)
         sigaction(s, &ign, NULL);
   watch_children();
   /* We mount, with our capabilities in the namespace; squashfuse only
      serves the connection. On the directory the core checked, by its
      descriptor: the path may name another by now. */
   int conn = open("/dev/fuse", O_RDWR | O_CLOEXEC);
   if (conn < 0)
      keeper_fail(rfd, errno, "can't open /dev/fuse");
   char opts[128];
   snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=%u,group_id=%u", conn, getuid(), getgid());
   char mp[32];
   snprintf(mp, sizeof(mp), "/proc/self/fd/%d", mp_fd);
   if (mount("squashfuse", mp, "fuse.squashfuse", MS_NOSUID | MS_NODEV | MS_RDONLY, opts) != 0)
      keeper_fail(rfd, errno, "can't mount FUSE at %s", p->root);
   int errp[2];
   if (pipe2(errp, O_CLOEXEC) != 0)
      keeper_fail(rfd, errno, "can't create pipe for squashfuse");
   pid_t self = getpid();
   pid_t fuse = fork();
   if (fuse < 0)
      keeper_fail(rfd, errno, "can't fork squashfuse");
   if (fuse == 0)
      squashfuse_exec(p, self, conn, errp[1], devnull);
   close(errp[1]);
   close(conn);   /* squashfuse's alone: if it dies, the connection aborts */
   wait_mounted(p, rfd, fuse, errp[0]);
   struct report ok = { .ok = 1 };
   if (write(rfd, &ok, sizeof(ok)) != sizeof(ok)) {
      kill(fuse, SIGKILL);
      _exit(1);
   }
   close(rfd);
   if (holder_lfd >= 0)
      holder_serve(p, core, fuse, errp[0], holder_lfd, image_fd, mp_fd, mnt_before, mnt_before_ct);
   keeper_watch(core, fuse, errp[0]);
}

/* The intermediate process: take hold of the core (a pidfd, or its /proc
   directory) while it is certainly still the core (it waits for us), leave
   its session, start the keeper. */
static void intermediate(const struct plan *p, pid_t core, int rfd)
{
   struct watch cw;
   if (watch_open(&cw, core, false) != 0) {
      if (watch_pidfds)
         keeper_fail(rfd, errno, "can't open pidfd of ch-run");
      keeper_fail(rfd, errno, "can't open /proc/%d of ch-run", (int)core);
   }
   if (getppid() != core)
      _exit(1);   /* the core is gone already */
   if (setsid() < 0)
      keeper_fail(rfd, errno, "can't start a session for the SquashFUSE keeper");
   pid_t k = fork();
   if (k < 0)
      keeper_fail(rfd, errno, "can't fork SquashFUSE keeper");
   if (k == 0)
      keeper(p, &cw, rfd);
   _exit(0);
}

/* The mount point: opened once, here, and used by that descriptor from now
   on. It must be the caller's own directory (not a symlink), which no one
   else may write to; the front end checks the same first, for its
   messages (lib/container/squash.ts); a memoized plan comes here without it. */
static void check_mount_point(const struct plan *p)
{
   struct stat st;
   if (mp_fd >= 0)
      return;
   mp_fd = open(p->root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
   if (mp_fd < 0 && errno == ENOTDIR) {
      int l = open(p->root, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (l >= 0 && fstat(l, &st) == 0 && S_ISLNK(st.st_mode))
         FATAL_NOERR("can't use SquashFS mount point %s: it is a symlink; give the directory itself", p->root);
   }
   T_(mp_fd >= 0, "can't use SquashFS mount point %s", p->root);
   Z_(fstat(mp_fd, &st), "can't stat SquashFS mount point %s", p->root);
   if (st.st_uid != getuid())   /* (another's uid reads 65534 in our namespace: not shown) */
      FATAL_NOERR("can't use SquashFS mount point %s: not owned by you (uid %d); use a directory of "
                  "your own", p->root, (int)getuid());
   if (st.st_mode & (S_IWGRP | S_IWOTH))
      FATAL_NOERR("can't use SquashFS mount point %s: mode %o lets others write to it (chmod go-w it)",
                  p->root, (unsigned)(st.st_mode & 07777));
}

/* Fork the keeper (through the intermediate) and wait for its report:
   mounted, or why not (then exit, saying so). */
static void keeper_start(const struct plan *p)
{
   watch_choose();
   int rp[2];
   Z_(pipe2(rp, O_CLOEXEC), "can't create pipe for SquashFUSE keeper");
   pid_t core = getpid();
   pid_t mid = fork();
   T_(mid >= 0, "can't fork for SquashFUSE");
   if (mid == 0) {
      close(rp[0]);
      intermediate(p, core, rp[1]);
   }
   Z_(close(rp[1]), "can't close pipe");
   int status;
   pid_t r;
   while ((r = waitpid(mid, &status, 0)) < 0 && errno == EINTR)
      ;
   T_(r == mid, "can't wait for SquashFUSE keeper's parent");

   struct report rep;
   size_t got = 0;
   while (got < sizeof(rep)) {
      ssize_t n = read(rp[0], (char *)&rep + got, sizeof(rep) - got);
      if (n < 0 && errno == EINTR) continue;
      T_(n >= 0, "can't read SquashFUSE keeper's report");
      if (n == 0) break;
      got += n;
   }
   close(rp[0]);
   if (got != sizeof(rep))
      FATAL_NOERR("can't mount %s: SquashFUSE keeper ended without a report", p->squash_image);
   rep.text[sizeof(rep.text) - 1] = '\0';
   if (!rep.ok) {
      errno = rep.err;
      if (rep.err != 0)
         FATAL("can't mount %s: %s", p->squash_image, rep.text);
      FATAL_NOERR("can't mount %s: %s", p->squash_image, rep.text);
   }
}

int squash_mount_point(const struct plan *p)
{
   check_mount_point(p);
   return mp_fd;
}

void squash_holder_start(const struct plan *p, int lfd, int imgfd)
{
   check_mount_point(p);
   holder_lfd = lfd;
   image_fd = imgfd;
   keeper_start(p);   /* the holder holds LFD now: ours goes */
   holder_lfd = image_fd = -1;
   Z_(close(lfd), "can't close SquashFUSE holder socket");
   INFO("SquashFS %s mounted at %s, shared (holder started)", p->squash_image, p->root);
}

int squash_mount(const struct plan *p)
{
   /* Our mount must not propagate anywhere (root_setup repeats this). */
   Z_(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "can't make / private");
   if (mp_fd >= 0) {   /* opened before unshare: every shared-mount name was taken (holder.c) */
      int e = mount_point_again(p);
      if (e == EXDEV)
         FATAL_NOERR("can't mount %s: mount point %s changed while mounting (renamed by someone who can "
                     "write to its directory?)", p->squash_image, p->root);
      errno = e;
      T_(e == 0, "can't use SquashFS mount point %s", p->root);
   }
   check_mount_point(p);
   mnt_before = mount_ids(&mnt_before_ct);
   keeper_start(p);
   /* The keeper's mount, found as it did (the same check: it is the one
      mount that is new in our namespace). */
   int root = open_new_mount(p->root, mnt_before, mnt_before_ct, FUSE_SUPER_MAGIC);
   if (root < 0 && errno == EXDEV)
      FATAL_NOERR("can't mount %s: mount point %s changed while mounting (renamed by someone who can "
                  "write to its directory?)", p->squash_image, p->root);
   T_(root >= 0, "can't open SquashFS mount at %s", p->root);
   Z_(close(mp_fd), "can't close SquashFS mount point");
   free(mnt_before);
   INFO("SquashFS %s mounted at %s", p->squash_image, p->root);
   return root;
}

/* ch-run IMAGE.sqfs: mount a SquashFS image with SquashFUSE inside the
   container's own namespaces, with no privilege and no setuid fusermount.

   Process layout (measured and chosen; see test/squash.test.js):

      core (ch-run's PID, becomes the command by exec)
        `- intermediate: pidfd of the core, setsid, fork, exit (reaped at once)
             `- keeper (reparented away; not the command's child)
                  `- squashfuse -f (PR_SET_PDEATHSIG SIGKILL, NO_NEW_PRIVS)

   The core forks after entering the outer user+mount namespace, so the
   keeper and squashfuse share it: the FUSE mount they make is the one the
   core binds as the image root. The command must not be squashfuse's parent
   (a command calling wait(-1) would wait on it forever), hence the double
   fork. The keeper reports "mounted" or why not over a pipe, then waits on
   a pidfd of the core: when the command (same PID) ends, however it ends,
   the keeper kills squashfuse. With both gone nothing is left in the
   namespace and the kernel tears the mount down: nothing survives the
   command, and the mount is never visible outside its namespace. If the
   keeper is killed, squashfuse dies with it (PDEATHSIG).

   SquashFUSE runs multithreaded (its default) in the foreground: a
   daemonized squashfuse in the namespace would never exit. It mounts FUSE
   itself with the capabilities it has in the namespace; NO_NEW_PRIVS makes
   sure a libfuse fallback to a setuid fusermount3 can't gain privilege. */

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

#ifndef SYS_pidfd_open
#  define SYS_pidfd_open 434
#endif
#define FUSE_SUPER_MAGIC 0x65735546
#define MOUNT_TIMEOUT_MS 60000   /* never wait forever for a mount */

/* What the keeper tells the core: mounted, or why not. */
struct report {
   int ok;
   int err;           /* errno of the failed step, 0 if none */
   char text[2048];   /* what failed, with squashfuse's own words */
};

static int pidfd_open_(pid_t pid)
{
   return (int)syscall(SYS_pidfd_open, pid, 0);
}

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

/* Keep CAP_SYS_ADMIN across exec as an ambient capability: squashfuse runs
   as our own (unmapped-to-root) uid, so exec would drop the capabilities we
   hold in our user namespace, and libfuse's mount(2) would fail. The
   capability is over this namespace only, which holds nothing but the
   container's mounts. */
static int keep_sys_admin(void)
{
   struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
   struct __user_cap_data_struct d[2];
   if (syscall(SYS_capget, &h, d) != 0)
      return -1;
   d[CAP_TO_INDEX(CAP_SYS_ADMIN)].inheritable |= CAP_TO_MASK(CAP_SYS_ADMIN);
   if (syscall(SYS_capset, &h, d) != 0)
      return -1;
   return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0);
}

/* In squashfuse's process: become squashfuse -f IMAGE MNT. Dies with the
   keeper; can never gain privilege. Failures go to ERRW, which the keeper
   reads. */
static void squashfuse_exec(const struct plan *p, pid_t keeper, int errw, int devnull)
{
   char line[512];
   if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != keeper)
      _exit(127);
   if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      snprintf(line, sizeof(line), "can't set no_new_privs: %s (%s)", strerror(errno), errno_name(errno));
      goto fail;
   }
   if (keep_sys_admin() != 0) {
      snprintf(line, sizeof(line), "can't keep CAP_SYS_ADMIN for squashfuse: %s (%s)", strerror(errno),
               errno_name(errno));
      goto fail;
   }
   if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(errw, 2) < 0) {
      snprintf(line, sizeof(line), "can't redirect stdio: %s (%s)", strerror(errno), errno_name(errno));
      goto fail;
   }
   signals_default();
   char *argv[] = { "squashfuse", "-f", p->squash_image, p->root, NULL };
   execv(p->squashfuse, argv);
   snprintf(line, sizeof(line), "can't execute %s: %s (%s)", p->squashfuse, strerror(errno),
            errno_name(errno));
fail:;
   ssize_t w = write(errw, line, strlen(line));
   (void)w;
   _exit(127);
}

static long now_ms(void)
{
   struct timespec ts;
   clock_gettime(CLOCK_MONOTONIC, &ts);
   return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
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

/* Has a new FUSE filesystem appeared on MNT (its device differs from the
   directory's before)? statfs(2) on a FUSE mount waits for the daemon's
   answer, which a starting squashfuse gives. */
static bool fuse_mounted(const char *mnt, dev_t before)
{
   struct stat st;
   struct statfs sf;
   return stat(mnt, &st) == 0 && st.st_dev != before
          && statfs(mnt, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC;
}

/* Wait until squashfuse has mounted, it exited, or the timeout. The mount
   table changing wakes us (POLLPRI on mountinfo); so does squashfuse
   exiting (its pidfd) or writing to stderr. */
static void wait_mounted(const struct plan *p, int rfd, pid_t fuse, int errr, dev_t before)
{
   static char said[1536];
   int mi = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
   if (mi < 0)
      keeper_fail(rfd, errno, "can't open /proc/self/mountinfo");
   int fusefd = pidfd_open_(fuse);
   if (fusefd < 0)
      keeper_fail(rfd, errno, "can't open pidfd of squashfuse");
   long deadline = now_ms() + MOUNT_TIMEOUT_MS;
   bool err_open = true;
   while (!fuse_mounted(p->root, before)) {
      struct pollfd fds[3] = { { mi, POLLPRI, 0 }, { fusefd, POLLIN, 0 }, { err_open ? errr : -1, POLLIN, 0 } };
      long left = deadline - now_ms();
      if (left <= 0) {
         kill(fuse, SIGKILL);
         keeper_fail(rfd, ETIMEDOUT, "squashfuse did not mount %s on %s within %d s", p->squash_image,
                     p->root, MOUNT_TIMEOUT_MS / 1000);
      }
      int n = poll(fds, 3, (int)left);
      if (n < 0 && errno != EINTR)
         keeper_fail(rfd, errno, "can't poll for the SquashFUSE mount");
      if (fds[2].revents)
         err_open = slurp(errr, said, sizeof(said));
      if (fds[1].revents & POLLIN) {
         while (err_open)   /* all it said */
            err_open = slurp(errr, said, sizeof(said));
         int status = 0;
         while (waitpid(fuse, &status, 0) < 0 && errno == EINTR)
            ;
         size_t l = strlen(said);
         while (l > 0 && (said[l - 1] == '\n' || said[l - 1] == ' '))
            said[--l] = '\0';
         for (char *c = said; *c; c++)
            if (*c == '\n') *c = ' ';
         if (WIFSIGNALED(status))
            keeper_fail(rfd, 0, "squashfuse killed by signal %d before mounting %s%s%s", WTERMSIG(status),
                        p->squash_image, *said ? ": " : "", said);
         keeper_fail(rfd, 0, "squashfuse exited with status %d before mounting %s%s%s",
                     WEXITSTATUS(status), p->squash_image, *said ? ": " : "", said);
      }
   }
   close(fusefd);
   close(mi);
}

/* The keeper, after the mount: wait for the core (then the command, same
   PID) to end, draining squashfuse's stderr meanwhile so a message can't
   block it; then end squashfuse. Never returns. */
static void keeper_watch(int corefd, pid_t fuse, int errr)
{
   bool err_open = true;
   for (;;) {
      struct pollfd fds[2] = { { corefd, POLLIN, 0 }, { err_open ? errr : -1, POLLIN, 0 } };
      if (poll(fds, 2, -1) < 0) {
         if (errno == EINTR) continue;
         break;   /* can't watch: don't leave squashfuse behind */
      }
      if (fds[0].revents)
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

/* The keeper: start squashfuse, report, watch. Never returns. */
static void keeper(const struct plan *p, int corefd, int rfd)
{
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
   struct stat st;
   if (stat(p->root, &st) != 0)
      keeper_fail(rfd, errno, "can't use SquashFS mount point %s", p->root);
   int errp[2];
   if (pipe2(errp, O_CLOEXEC) != 0)
      keeper_fail(rfd, errno, "can't create pipe for squashfuse");
   pid_t self = getpid();
   pid_t fuse = fork();
   if (fuse < 0)
      keeper_fail(rfd, errno, "can't fork squashfuse");
   if (fuse == 0)
      squashfuse_exec(p, self, errp[1], devnull);
   close(errp[1]);
   wait_mounted(p, rfd, fuse, errp[0], st.st_dev);
   struct report ok = { .ok = 1 };
   if (write(rfd, &ok, sizeof(ok)) != sizeof(ok)) {
      kill(fuse, SIGKILL);
      _exit(1);
   }
   close(rfd);
   keeper_watch(corefd, fuse, errp[0]);
}

/* The intermediate process: take a pidfd of the core while it is certainly
   still the core (it waits for us), leave its session, start the keeper. */
static void intermediate(const struct plan *p, pid_t core, int rfd)
{
   int corefd = pidfd_open_(core);
   if (corefd < 0)
      keeper_fail(rfd, errno, "can't open pidfd of ch-run (pidfd_open(2) needs Linux 5.3)");
   if (getppid() != core)
      _exit(1);   /* the core is gone already */
   if (setsid() < 0)
      keeper_fail(rfd, errno, "can't start a session for the SquashFUSE keeper");
   pid_t k = fork();
   if (k < 0)
      keeper_fail(rfd, errno, "can't fork SquashFUSE keeper");
   if (k == 0)
      keeper(p, corefd, rfd);
   _exit(0);
}

void squash_mount(const struct plan *p)
{
   /* Our mount must not propagate anywhere (root_setup repeats this). */
   Z_(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "can't make / private");
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
   INFO("SquashFS %s mounted at %s", p->squash_image, p->root);
}

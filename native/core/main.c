/* ch-run's core: carry out a plan from the TypeScript front end, then become
   the user's command.

   Invoked by the launcher as: ch-run-core FD PID NONBLOCK. FD: an inherited
   descriptor holding the plan; PID: the front end, to reap; NONBLOCK: the
   caller's O_NONBLOCK on stdio, bit N for fd N.
   The process keeps ch-run's PID throughout (the launcher exec'd us, we exec
   the command), so exit status and signals are the command's own, as srun,
   mpirun and scancel expect. Node never ran in this process (it plans in a
   child of the launcher), so what the caller set up (ignored and blocked
   signals, limits, stdio) is the command's as it would be under a bare
   exec. Only O_NONBLOCK, which Node shares, is put back as the caller had it. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "execpath.h"

static const char *env_get(char **env, const char *name)
{
   size_t n = strlen(name);
   for (; *env != NULL; env++)
      if (!strncmp(*env, name, n) && (*env)[n] == '=')
         return *env + n + 1;
   return NULL;
}

/* execvpe(3) with the container's PATH, reporting failure as ch-run must:
   the command named, errno, exit 49. */
static _Noreturn void exec_command(const struct plan *p)
{
   const char *cmd = p->argv[0];
   int err = exec_path(cmd, p->argv, p->env, env_get(p->env, "PATH"), false);
   char line[PATH_MAX + 256];
   int n = snprintf(line, sizeof(line), "ch-run[%d]: error: can't execve(2): %s: %s (%s)\n",
                    getpid(), cmd, strerror(err), errno_name(err));
   ssize_t w = write(STDERR_FILENO, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0);
   /* Not found by PATH search, and the front end knows a PATH that would
      have been used with --set-env: say so (only then; noise otherwise). */
   if (err == ENOENT && p->exec_hint != NULL && strchr(cmd, '/') == NULL && verbose >= 0) {
      n = snprintf(line, sizeof(line), "ch-run[%d]: hint: %s\n", getpid(), p->exec_hint);
      w = write(STDERR_FILENO, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0);
   }
   (void)w;
   _exit(EXIT_CMD);
}

int core_probe_fd = -1;

/* What the command would see, to core_probe_fd: working directory, ids,
   arguments, environment in order, and the mounts (mountinfo without the
   mount ids and device numbers, which differ between two containers), one
   per line. Then exit: the command doesn't run. */
static _Noreturn void probe_report(const struct plan *p)
{
   FILE *out = fdopen(core_probe_fd, "w");
   char cwd[PATH_MAX], line[8192];
   gid_t groups[64];
   int n = getgroups(64, groups);
   if (out == NULL)
      _exit(EXIT_CHRUN);
   fprintf(out, "cwd %s\nids %d %d %d %d groups", getcwd(cwd, sizeof(cwd)) ? cwd : "(none)",
           (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid());
   for (int i = 0; i < n; i++)
      fprintf(out, " %d", (int)groups[i]);
   fputc('\n', out);
   for (char **a = p->argv; *a != NULL; a++)
      fprintf(out, "arg %s\n", *a);
   for (char **e = p->env; *e != NULL; e++)
      fprintf(out, "env %s\n", *e);
   FILE *mi = fopen("/proc/self/mountinfo", "r");
   while (mi != NULL && fgets(line, sizeof(line), mi) != NULL) {
      char *f = line;
      for (int skip = 0; skip < 3 && f != NULL; skip++)   /* mount id, parent id, major:minor */
         if ((f = strchr(f, ' ')) != NULL)
            f++;
      /* Overlay options name their layers by our descriptors
         (lowerdir=/proc/self/fd/N), whose numbers depend on what else the
         process holds: not what the command sees of them. */
      fputs("mount ", out);
      for (const char *c = f != NULL ? f : line; *c != '\0'; c++) {
         fputc(*c, out);
         if (!strncmp(c, "/proc/self/fd/", 14) && c[14] >= '0' && c[14] <= '9') {
            fputs("roc/self/fd/N", out);
            c += 14;
            while (c[1] >= '0' && c[1] <= '9')
               c++;
         }
      }
   }
   _exit(mi != NULL && fclose(out) == 0 ? 0 : EXIT_CHRUN);
}

/* Reap the front end's waiter (a child the launcher left us, killed once
   the plan was whole, perhaps still exiting; Node itself, its child, is
   init's to reap): the command must not inherit it as a child of its own.
   Its status means nothing now. ECHILD: the caller ignores SIGCHLD, so the
   kernel reaped it. */
static void reap_front_end(pid_t pid)
{
   pid_t r;
   while ((r = waitpid(pid, NULL, 0)) < 0 && errno == EINTR)
      ;
   T_(r == pid || errno == ECHILD, "can't wait for front end (pid %d)", (int)pid);
}

/* O_NONBLOCK on stdio is shared with the caller (and Node may have set it):
   give the command what the caller had, bit N of NONBLOCK for fd N. */
static void restore_nonblock(int nonblock)
{
   for (int fd = 0; fd <= 2; fd++) {
      int fl = fcntl(fd, F_GETFL);
      if (fl < 0)
         continue;   /* closed by the caller: leave it so */
      int want = (nonblock & (1 << fd)) ? O_NONBLOCK : 0;
      if ((fl & O_NONBLOCK) != want)
         Z_(fcntl(fd, F_SETFL, (fl & ~O_NONBLOCK) | want), "can't restore O_NONBLOCK on fd %d", fd);
   }
}

/* --join-pid: enter the user and mount namespaces of PID, a container
   process of the caller's (the kernel checks: joining needs capabilities in
   the target user namespace, which only its owner's processes have, and
   ptrace access to PID). By pidfd where the kernel has it, so both
   namespaces are PID's even if PID exits and its number is reused
   meanwhile; else by /proc/PID/ns, the user namespace first. */
static void join_pid_enter(pid_t pid)
{
   int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
   if (pidfd >= 0) {
      if (setns(pidfd, CLONE_NEWUSER | CLONE_NEWNS) == 0) {
         Z_(close(pidfd), "can't close pidfd");
         return;
      }
      if (errno != EINVAL)   /* EINVAL: a kernel < 5.8, whose setns takes no pidfd */
         FATAL("--join-pid: can't join namespaces of process %d", (int)pid);
      Z_(close(pidfd), "can't close pidfd");
   } else if (errno != ENOSYS) {
      FATAL("--join-pid: can't find process %d", (int)pid);
   }
   char *u = xasprintf("/proc/%d/ns/user", (int)pid), *m = xasprintf("/proc/%d/ns/mnt", (int)pid);
   int ufd = open(u, O_RDONLY | O_CLOEXEC), mfd = open(m, O_RDONLY | O_CLOEXEC);
   T_(ufd >= 0, "--join-pid: can't open %s", u);
   T_(mfd >= 0, "--join-pid: can't open %s", m);
   Z_(setns(ufd, CLONE_NEWUSER), "--join-pid: can't join user namespace of process %d", (int)pid);
   Z_(setns(mfd, CLONE_NEWNS), "--join-pid: can't join mount namespace of process %d", (int)pid);
   Z_(close(ufd), "can't close %s", u);
   Z_(close(mfd), "can't close %s", m);
   free(u); free(m);
}

static long number_arg(const char *s, const char *what, long min)
{
   char *end;
   long v = strtol(s, &end, 10);
   if (*s == '\0' || *end != '\0' || v < min || v > INT_MAX)
      FATAL_NOERR("bad %s: %s", what, s);
   return v;
}

/* "executing: ARGV" under -v, as Charliecloud says it (its tests read the
   PID from this line: ours is the command's, as there). */
static void say_executing(const struct plan *p)
{
   char line[1024];
   size_t n = 0;
   for (char **a = p->argv; *a != NULL && n < sizeof(line) - 1; a++) {
      int w = snprintf(line + n, sizeof(line) - n, "%s%s", a == p->argv ? "" : " ", *a);
      if (w < 0)
         break;
      n += (size_t)w < sizeof(line) - n ? (size_t)w : sizeof(line) - 1 - n;
   }
   line[n] = '\0';
   INFO("executing: %s", line);
}

/* The core's entry: ch-run-core's main(), and the launcher's own call when
   a memoized plan spares it the exec (native/launcher/launcher.c). Never returns. */
_Noreturn void core_main(int argc, char **argv)
{
   struct plan p;

   if (argc != 4)
      FATAL_NOERR("this is ch-run's internal core; run ch-run instead");
   plan_read((int)number_arg(argv[1], "plan fd", 0), &p);
   pid_t front = (pid_t)number_arg(argv[2], "front end pid", 0);   /* 0: a memoized plan, no front end */
   int nonblock = (int)number_arg(argv[3], "stdio flags", 0);
   if (core_probe_fd >= 0) {
      verbose = -1;   /* the launch itself says it all */
      if (p.join || p.join_pid != 0) {
         /* Joining would make or enter a group its peers count on. */
         dprintf(core_probe_fd, "join: not probed\n");
         _exit(0);
      }
   }

   /* Charliecloud's -v line for these, which its --join tests count. */
   INFO("join: %d %d %s %d", p.join ? 1 : 0, p.join ? p.join_ct : 0, p.join ? p.join_tag : "(null)",
        (int)p.join_pid);
   /* A SquashFS image, shared (holder.c): every launch registers with the
      holder, a --join peer too (so the mount lives while it does). With
      CH_RUN_SQUASH_LINGER=0 and no --join, a private mount (squash.c). */
   bool shared = p.squash_image != NULL && p.join_pid == 0 && (p.squash_linger_ms > 0 || p.join)
                 && squash_attach(&p);
   enum join_role role = p.join ? join_begin(&p) : JOIN_WINNER;
   if (p.join_pid != 0) {
      join_pid_enter(p.join_pid);
   } else if (role == JOIN_WINNER) {
      /* Outer namespace: identity map, full capabilities for the mounts;
         for a shared SquashFS mount, the holder's and a mount namespace of
         our own. A SquashFS image: its mount is the image root. */
      int mounted = -1;
      if (shared) {
         mounted = squash_enter(&p);
      } else {
         userns_enter(getuid(), getuid(), getgid(), getgid());
         if (p.squash_image != NULL)
            mounted = squash_mount(&p);
      }
      int rootfd = root_setup(&p, mounted);
      mounts_apply(&p, rootfd);
      root_pivot(rootfd);
      /* Inner namespace, as Charliecloud does: mounts inherited into a less
         privileged namespace are locked, so even fake root (-u 0) cannot
         unmount a bind to uncover what it hides, or remount the image
         read-write. The map inside then reads "<ctr uid> <host uid> 1". */
      uid_t host_uid = getuid();
      gid_t host_gid = getgid();
      userns_enter(p.uid, host_uid, p.gid, host_gid);
      if (p.join)
         join_winner_ready(&p);
   } else {
      if (shared)
         squash_detach();
      join_peer_enter(&p);
   }

   if (chdir(p.cwd) != 0) {
      if (!p.cwd_fallback)
         FATAL("can't cd to %s", p.cwd);   /* Charliecloud's words */
      /* Charliecloud starts in / without a word: only -v says why. */
      INFO("can't cd to %s in container (no such directory in the image); starting in /", p.cwd);
      Z_(chdir("/"), "can't cd to / in container");
   }
   if (front > 0)
      reap_front_end(front);
   restore_nonblock(nonblock);
   Z_(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "can't set no_new_privs");
   if (p.seccomp)
      seccomp_install();   /* last: our own set-up is never subject to it */
   if (core_probe_fd >= 0)
      probe_report(&p);
   if (verbose >= 1)
      say_executing(&p);
   exec_command(&p);
}

#ifndef CH_CORE_IN_LAUNCHER
int main(int argc, char **argv)
{
   refuse_privilege("ch-run core");   /* it can be run directly too */
   core_main(argc, argv);
}
#endif

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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"

/* ch-run must never be a privilege boundary: refuse to run setuid or setgid,
   whether by file mode or by a privileged caller's exec. */
static void refuse_setid(void)
{
   struct stat st;
   if (getuid() != geteuid() || getgid() != getegid())
      FATAL_NOERR("running setuid or setgid; refusing (ch-run must not be installed setuid/setgid)");
   if (stat("/proc/self/exe", &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))
      FATAL_NOERR("ch-run core is installed setuid or setgid; refusing to run");
}

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
static void exec_command(const struct plan *p)
{
   const char *cmd = p->argv[0];
   int err = ENOENT;

   if (strchr(cmd, '/') != NULL) {
      execve(cmd, p->argv, p->env);
      err = errno;
   } else if (cmd[0] != '\0') {
      const char *path = env_get(p->env, "PATH");
      if (path == NULL)
         path = "/bin:/usr/bin";
      bool eacces = false;
      char *copy = strdup(path), *save = NULL;
      T_(copy != NULL, "strdup");
      for (char *dir = strtok_r(copy, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
         char *full = xasprintf("%s/%s", *dir ? dir : ".", cmd);
         execve(full, p->argv, p->env);
         free(full);
         if (errno == EACCES)
            eacces = true;
         else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP && errno != ENAMETOOLONG) {
            eacces = false;
            err = errno;
            break;
         }
      }
      free(copy);
      if (eacces)
         err = EACCES;
   }
   char line[PATH_MAX + 256];
   int n = snprintf(line, sizeof(line), "ch-run[%d]: error: can't execve(2): %s: %s (%s)\n",
                    getpid(), cmd, strerror(err), errno_name(err));
   ssize_t w = write(STDERR_FILENO, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0);
   (void)w;
   _exit(EXIT_CMD);
}

/* Reap the front end (a child the launcher left us, still exiting when
   the launcher exec'd us): the command must not inherit it as a child of
   its own. It handed over a plan, so anything but a clean exit is a
   failure. ECHILD: the caller ignores SIGCHLD, so the kernel reaped it. */
static void reap_front_end(pid_t pid)
{
   int status;
   pid_t r;
   while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
      ;
   if (r < 0 && errno == ECHILD)
      return;
   T_(r == pid, "can't wait for front end (pid %d)", (int)pid);
   if (WIFSIGNALED(status))
      FATAL_NOERR("front end was killed by signal %d after planning", WTERMSIG(status));
   if (WEXITSTATUS(status) != 0)
      FATAL_NOERR("front end exited with status %d after planning", WEXITSTATUS(status));
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

static long number_arg(const char *s, const char *what, long min)
{
   char *end;
   long v = strtol(s, &end, 10);
   if (*s == '\0' || *end != '\0' || v < min || v > INT_MAX)
      FATAL_NOERR("bad %s: %s", what, s);
   return v;
}

int main(int argc, char **argv)
{
   struct plan p;

   refuse_setid();
   if (argc != 4)
      FATAL_NOERR("this is ch-run's internal core; run ch-run instead");
   plan_read((int)number_arg(argv[1], "plan fd", 0), &p);
   pid_t front = (pid_t)number_arg(argv[2], "front end pid", 1);
   int nonblock = (int)number_arg(argv[3], "stdio flags", 0);

   enum join_role role = p.join ? join_begin(&p) : JOIN_WINNER;
   if (role == JOIN_WINNER) {
      /* Outer namespace: identity map, full capabilities for the mounts. */
      userns_enter(getuid(), getuid(), getgid(), getgid());
      if (p.squash_image != NULL)
         squash_mount(&p);   /* the image root is its mount point */
      int rootfd = root_setup(&p);
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
      join_peer_enter(&p);
   }

   if (chdir(p.cwd) != 0) {
      if (!p.cwd_fallback)
         FATAL("can't cd to %s in container", p.cwd);
      INFO("host directory %s not in container; starting in /", p.cwd);
      Z_(chdir("/"), "can't cd to / in container");
   }
   reap_front_end(front);
   restore_nonblock(nonblock);
   Z_(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "can't set no_new_privs");
   DEBUG("executing %s", p.argv[0]);
   exec_command(&p);
}

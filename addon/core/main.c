/* ch-run's core: carry out a plan from the TypeScript front end, then become
   the user's command.

   Invoked as: ch-run-core FD, FD an inherited descriptor holding the plan.
   The process keeps ch-run's PID throughout (Node exec'd us, we exec the
   command), so exit status and signals are the command's own, as srun,
   mpirun and scancel expect. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

/* Undo what Node did to the process, which exec would otherwise hand to the
   command: ignored signals (SIGPIPE, SIGXFSZ), a blocked mask, FD_CLOEXEC and
   O_NONBLOCK on stdio, a raised soft RLIMIT_NOFILE. */
static void restore_process(const struct plan *p)
{
   struct sigaction sa;
   memset(&sa, 0, sizeof(sa));
   sa.sa_handler = SIG_DFL;
   sigemptyset(&sa.sa_mask);
   for (int sig = 1; sig < NSIG; sig++)
      if (sig != SIGKILL && sig != SIGSTOP)
         sigaction(sig, &sa, NULL);   /* fails harmlessly for unused numbers */
   sigset_t none;
   sigemptyset(&none);
   Z_(sigprocmask(SIG_SETMASK, &none, NULL), "can't unblock signals");

   for (int fd = 0; fd <= 2; fd++) {
      int fl = fcntl(fd, F_GETFD);
      if (fl < 0)
         continue;   /* closed by our caller: leave it so */
      Z_(fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC), "can't clear FD_CLOEXEC on fd %d", fd);
      fl = fcntl(fd, F_GETFL);
      if (fl >= 0 && (fl & O_NONBLOCK))
         Z_(fcntl(fd, F_SETFL, fl & ~O_NONBLOCK), "can't clear O_NONBLOCK on fd %d", fd);
   }

   if (p->nofile >= 0) {
      struct rlimit rl;
      Z_(getrlimit(RLIMIT_NOFILE, &rl), "can't get RLIMIT_NOFILE");
      rlim_t soft = (rlim_t)p->nofile;
      if (rl.rlim_max != RLIM_INFINITY && soft > rl.rlim_max)
         soft = rl.rlim_max;
      rl.rlim_cur = soft;
      Z_(setrlimit(RLIMIT_NOFILE, &rl), "can't restore RLIMIT_NOFILE to %llu",
         (unsigned long long)soft);
   }
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

int main(int argc, char **argv)
{
   struct plan p;
   char *end;

   refuse_setid();
   if (argc != 2)
      FATAL_NOERR("this is ch-run's internal core; run ch-run instead");
   long fd = strtol(argv[1], &end, 10);
   if (*end != '\0' || fd < 0 || fd > INT_MAX)
      FATAL_NOERR("bad plan fd: %s", argv[1]);
   plan_read((int)fd, &p);

   enum join_role role = p.join ? join_begin(&p) : JOIN_WINNER;
   if (role == JOIN_WINNER) {
      /* Outer namespace: identity map, full capabilities for the mounts. */
      userns_enter(getuid(), getuid(), getgid(), getgid());
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
   restore_process(&p);
   Z_(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "can't set no_new_privs");
   DEBUG("executing %s", p.argv[0]);
   exec_command(&p);
}

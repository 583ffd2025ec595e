/* ch-spank-join: how a SPANK task enters its step's container
   (native/spank/ch_spank.c). slurmstepd execs it in place of the task's
   program: the plugin put its path in argv[0] and the rest in the
   environment. Joining here, at the task's exec, rather than in
   slurm_spank_task_init lets slurmstepd do what it does between the two on
   the host, as for a bare srun: the site's TaskProlog (a host path an image
   lacks) and the task's TMPDIR.

   CH_SPANK_JOIN=PID:FD:EDITS:CWD  the holder's PID, our copy of the release
                             pipe (kept open so the holder stays until we
                             have joined), a memfd of the container's
                             environment edits ("+NAME=VALUE" or "-NAME",
                             NUL-terminated: what ch-run changed in the first
                             task's environment), the working directory
   CH_SPANK_ARGV0=PROG       the task's program, searched in the container's
                             $PATH as slurmstepd would have on the host

   It joins the holder's user and mount namespaces (as ch-run --join's
   peers: the mount namespace's root is the container's), changes directory,
   sets PR_SET_NO_NEW_PRIVS and execs PROG with the task's PID, arguments and
   environment, so exit status, signals and accounting are the program's.
   Errors: "ch-spank[PID]: error: ..." and exit 31 (ch-run's own failures),
   or 49 if PROG can't be exec'd (ch-run's "can't execve(2)"). */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/execpath.h"

#define EXIT_CHRUN 31
#define EXIT_CMD 49

static _Noreturn void fail(int status, const char *what, const char *arg, int err)
{
   dprintf(STDERR_FILENO, "ch-spank[%d]: error: %s%s%s%s%s\n", (int)getpid(), what, arg ? ": " : "", arg ? arg : "",
           err ? ": " : "", err ? strerror(err) : "");
   _exit(status);
}

static void enter(pid_t pid, const char *kind, int type)
{
   char path[64];
   snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, kind);
   int fd = open(path, O_RDONLY | O_CLOEXEC);
   if (fd < 0)
      fail(EXIT_CHRUN, "--ch-image: can't open the container's namespace", path, errno);
   if (setns(fd, type) != 0)
      fail(EXIT_CHRUN, "--ch-image: can't join the container's namespace", path, errno);
   close(fd);
}

/* The container's environment: ch-run's edits, over the task's environment as slurmstepd made it. */
static void apply_edits(int fd)
{
   struct stat st;
   if (fstat(fd, &st) != 0)
      fail(EXIT_CHRUN, "can't read the container's environment", NULL, errno);
   char *buf = malloc((size_t)st.st_size + 1);
   if (buf == NULL)
      fail(EXIT_CHRUN, "malloc", NULL, errno);
   ssize_t got = 0;
   while (got < st.st_size) {
      ssize_t n = pread(fd, buf + got, (size_t)(st.st_size - got), got);
      if (n < 0 && errno == EINTR)
         continue;
      if (n <= 0)
         fail(EXIT_CHRUN, "can't read the container's environment", NULL, n < 0 ? errno : EIO);
      got += n;
   }
   buf[got] = '\0';
   close(fd);
   for (char *e = buf; e < buf + got; e += strlen(e) + 1) {
      char *eq = strchr(e, '=');
      if (e[0] == '-')
         unsetenv(e + 1);
      else if (e[0] == '+' && eq != NULL) {
         *eq = '\0';
         if (setenv(e + 1, eq + 1, 1) != 0)
            fail(EXIT_CHRUN, "can't set", e + 1, errno);
      }
   }
}

/* execve PROG, searched in PATH if it has no slash (the container's PATH). */
static _Noreturn void run(char *prog, char **argv)
{
   extern char **environ;
   int err = exec_path(prog, argv, environ, getenv("PATH"), true);   /* argv[0]: the path found, as slurmstepd gives it */
   fail(EXIT_CMD, "can't execve(2)", prog, err);
}

int main(int argc, char **argv)
{
   (void)argc;
   const char *spec = getenv("CH_SPANK_JOIN"), *a0 = getenv("CH_SPANK_ARGV0");
   char *end;
   if (spec == NULL || a0 == NULL)
      fail(EXIT_CHRUN, "ch-spank-join is run by the ch-toolkit SPANK plugin, not by users", NULL, 0);
   long pid = strtol(spec, &end, 10);
   long fd = *end == ':' ? strtol(end + 1, &end, 10) : -1;
   long edits = *end == ':' ? strtol(end + 1, &end, 10) : -1;
   if (pid <= 0 || fd < 0 || edits < 0 || *end != ':')
      fail(EXIT_CHRUN, "bad CH_SPANK_JOIN", spec, 0);
   char *cwd = strdup(end + 1), *prog = strdup(a0);
   if (cwd == NULL || prog == NULL)
      fail(EXIT_CHRUN, "strdup", NULL, errno);
   unsetenv("CH_SPANK_JOIN");
   unsetenv("CH_SPANK_ARGV0");
   enter((pid_t)pid, "user", CLONE_NEWUSER);
   enter((pid_t)pid, "mnt", CLONE_NEWNS);
   close((int)fd);   /* joined: the holder needn't wait for us */
   apply_edits((int)edits);
   if (chdir(cwd) != 0)
      fail(EXIT_CHRUN, "can't cd to", cwd, errno);
   if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
      fail(EXIT_CHRUN, "can't set no_new_privs", NULL, errno);
   argv[0] = prog;
   run(prog, argv);
}

/* ch-run's launcher: the first thing that runs.

   Node raises the soft RLIMIT_NOFILE to the hard limit at start-up, and the
   original value can't be recovered from inside it; the command in the
   container should get the user's own limit. So record it here, in
   CH_RUN_NOFILE, for the core to restore, then exec Node on the bundled
   front end (dist/ch-run.cjs). A C program rather than a shell script: this
   sits on every launch, and dash plus a subshell cost ~2 ms more. */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
   fprintf(stderr, "ch-run[%d]: error: %s: %s\n", getpid(), what, strerror(errno));
   exit(31);
}

int main(int argc, char **argv)
{
   char exe[PATH_MAX], front[PATH_MAX + 32], nofile[32];
   struct stat st;
   struct rlimit rl;

   if (getuid() != geteuid() || getgid() != getegid()
       || (stat("/proc/self/exe", &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))) {
      fprintf(stderr, "ch-run[%d]: error: ch-run is installed setuid or setgid; refusing to run "
              "(it needs no privileges: chmod ug-s it)\n", getpid());
      return 31;
   }

   /* .../build/Release/ch-run -> .../dist/ch-run.cjs */
   ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
   if (n < 0)
      die("can't find own location (/proc/self/exe)");
   exe[n] = '\0';
   for (int i = 0; i < 3; i++) {
      char *slash = strrchr(exe, '/');
      if (slash == NULL) { errno = ENOENT; die("can't find package root"); }
      *slash = '\0';
   }
   snprintf(front, sizeof(front), "%s/dist/ch-run.cjs", exe);

   if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      snprintf(nofile, sizeof(nofile), "%llu", (unsigned long long)rl.rlim_cur);
      setenv("CH_RUN_NOFILE", nofile, 1);
   }

   char **nargv = calloc(argc + 2, sizeof(char *));
   if (nargv == NULL)
      die("can't allocate");
   const char *node = getenv("CH_RUN_NODE");   /* a site may pin its Node */
   nargv[0] = (char *)(node && *node ? node : "node");
   nargv[1] = front;
   for (int i = 1; i < argc; i++)
      nargv[i + 1] = argv[i];
   execvp(nargv[0], nargv);
   fprintf(stderr, "ch-run[%d]: error: can't execute Node.js (%s): %s; ch-run needs node >= 20 on PATH "
           "or CH_RUN_NODE\n", getpid(), nargv[0], strerror(errno));
   return 31;
}

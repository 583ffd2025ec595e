/* ch-spank-hold: the process that keeps a SPANK step's container on a node
   until its tasks have joined it (native/spank/ch_spank.c).

   ch-run runs it as the container's command (by descriptor: the image needn't
   have it, so it is linked statically): ch-spank-hold REPORT_FD RELEASE_FD.
   It writes "ok", its PID, its working directory and its environment (what the
   container's command would get from ch-run), each NUL-terminated, to
   REPORT_FD and closes it; then it reads RELEASE_FD until end of file, which
   comes when every task of the step on this node has exec'd its program or
   died (each held a copy of the write end until it joined), and exits;
   with a third argument, "stay", it stays until killed (slurm_spank_task_exit). The
   tasks are then in its namespaces themselves, which live on without it. */

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static int number(const char *s)
{
   char *end;
   long v = strtol(s, &end, 10);
   if (*s == '\0' || *end != '\0' || v < 0 || v > INT_MAX) {
      fprintf(stderr, "ch-spank-hold: bad descriptor: %s\n", s);
      exit(1);
   }
   return (int)v;
}

static void put(int fd, const char *s)
{
   size_t n = strlen(s) + 1;
   while (n > 0) {
      ssize_t w = write(fd, s, n);
      if (w < 0 && errno == EINTR)
         continue;
      if (w < 0) {
         perror("ch-spank-hold: can't write report");
         exit(1);
      }
      s += w;
      n -= (size_t)w;
   }
}

int main(int argc, char **argv)
{
   char cwd[PATH_MAX], buf[64];

   if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "stay"))) {
      fprintf(stderr, "ch-spank-hold: run by the ch-toolkit SPANK plugin, not by users\n");
      return 1;
   }
   int report = number(argv[1]), release = number(argv[2]);
   char pid[32];
   snprintf(pid, sizeof(pid), "%d", (int)getpid());   /* no PID namespace: the host's */
   put(report, "ok");
   put(report, pid);
   put(report, getcwd(cwd, sizeof(cwd)) != NULL ? cwd : "/");
   for (char **e = environ; *e != NULL; e++)
      put(report, *e);
   /* An empty string ends it: other holders of the pipe (squashfuse, forked
      by ch-run's core) would keep end-of-file from coming. */
   put(report, "");
   if (close(report) != 0) {
      perror("ch-spank-hold: can't close report");
      return 1;
   }
   /* SIGTERM at scancel ends us as any task; no handler needed. */
   for (;;) {
      ssize_t r = read(release, buf, sizeof(buf));
      if (r == 0 || (r < 0 && errno != EINTR))
         break;
   }
   /* "stay": a SquashFS image, whose shared mount's holder counts us (ch-run's
      process) as its user, not the tasks that joined: the plugin kills us
      when the node's last task ends, and the mount lingers from then on. */
   while (argc == 4)
      pause();
   return 0;
}

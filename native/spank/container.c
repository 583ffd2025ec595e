/* The step's container on this node: made once, by the first task to take
   the shared lock, as that task's user (slurm_spank_task_init runs after
   slurmstepd made the task the job's user for good); joined by every task.

   Making it: ch-spank-stage (lib/stage/) turns --ch-image into an image path
   (staging a tarball or registry image once per node into the user's cache);
   then ch-run, given that path, the options and the task's environment,
   builds the container exactly as `srun ch-run --join IMAGE -- prog` would,
   and runs ch-spank-hold in it (by descriptor), which reports the
   container's working directory and environment and stays until every
   task's ch-spank-join has entered its namespaces. ch-run is started in a grandchild, so the holder is no child
   of the task: the task's program (a shell that waits for all its children,
   say) never sees it. */

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/slurm.h>

#include "ch_spank.h"

struct argv { char *v[256]; int n; };

static void add(struct argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct argv *a, const char *fmt, ...)
{
   va_list ap;
   char *s = NULL;
   va_start(ap, fmt);
   if (a->n < 255 && vasprintf(&s, fmt, ap) >= 0)
      a->v[a->n++] = s;
   va_end(ap);
   a->v[a->n] = NULL;
}

static long long now_ms(void)
{
   struct timespec t;
   clock_gettime(CLOCK_MONOTONIC, &t);
   return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The job's environment plus NAME=VALUE where the job doesn't set NAME. */
static char **env_with(char **job, const char *name, const char *value)
{
   size_t n = 0, len = strlen(name);
   for (; job[n] != NULL; n++)
      if (!strncmp(job[n], name, len) && job[n][len] == '=')
         return job;
   if (value == NULL)
      return job;
   char **e = calloc(n + 2, sizeof(*e));
   if (e == NULL)
      return job;
   memcpy(e, job, n * sizeof(*e));
   if (asprintf(&e[n], "%s=%s", name, value) < 0)
      return job;
   return e;
}

/* S with %n (this node's name) and %u (the user's name) expanded, from the job's environment. */
static char *expand(const char *s, spank_t sp)
{
   char node[256] = "", user[256] = "", out[PATH_MAX];
   spank_getenv(sp, "SLURMD_NODENAME", node, sizeof(node));
   spank_getenv(sp, "USER", user, sizeof(user));
   size_t o = 0;
   for (; *s != '\0' && o < sizeof(out) - 256; s++) {
      if (s[0] == '%' && (s[1] == 'n' || s[1] == 'u')) {
         o += (size_t)snprintf(out + o, sizeof(out) - o, "%s", s[1] == 'n' ? node : user);
         s++;
      } else {
         out[o++] = *s;
      }
   }
   out[o] = '\0';
   return strdup(out);
}

/* Read FD to end of file into BUF (at most CAP bytes, NUL-terminated), by
   DEADLINE; with NUL2, up to two NULs in a row. Bytes read or -1. */
static ssize_t read_all(int fd, char *buf, size_t cap, long long deadline, bool nul2)
{
   size_t got = 0;
   for (;;) {
      struct pollfd p = { fd, POLLIN, 0 };
      long long left = deadline - now_ms();
      if (left <= 0)
         return errno = ETIMEDOUT, -1;
      int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
      if (r < 0 && errno == EINTR)
         continue;
      if (r < 0)
         return -1;
      if (r == 0)
         continue;
      ssize_t n = read(fd, buf + got, cap - 1 - got);
      if (n < 0 && errno == EINTR)
         continue;
      if (n < 0)
         return -1;
      if (n == 0 || (got += (size_t)n) >= cap - 1)
         break;
      if (nul2 && got >= 2 && buf[got - 1] == '\0' && buf[got - 2] == '\0')
         break;
   }
   buf[got] = '\0';
   return (ssize_t)got;
}

static int wait_child(pid_t pid)
{
   int st;
   while (waitpid(pid, &st, 0) < 0)
      if (errno != EINTR)
         return errno == ECHILD ? 0 : -1;   /* ECHILD: SIGCHLD ignored, reaped by the kernel */
   return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool is_sqfs(const char *p);

/* A directory or SquashFS file needs no staging (lib/stage/ would hand it
   back as it is): spare the stager's Node start. The task is the user, so
   this stat is the user's. */
static bool as_is(char *path, size_t cap)
{
   struct stat st;
   char cwd[PATH_MAX];
   if (opt.image[0] == '/')
      snprintf(path, cap, "%s", opt.image);
   else if (getcwd(cwd, sizeof(cwd)) != NULL)
      snprintf(path, cap, "%s/%s", cwd, opt.image);
   else
      return false;
   return stat(path, &st) == 0 && (S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && is_sqfs(path)));
}

/* ch-spank-stage IMAGE: the image path for ch-run into PATH, or -1 (its messages are on stderr). */
static int stage(spank_t sp, char **env, long long deadline, char *path, size_t cap)
{
   if (as_is(path, cap))
      return 0;
   int out[2];
   if (pipe2(out, O_CLOEXEC) != 0) {
      say("--ch-image=%s: can't make a pipe: %s", opt.image, strerror(errno));
      return -1;
   }
   if (site.cache != NULL)
      env = env_with(env, "CH_SPANK_CACHE", expand(site.cache, sp));
   env = env_with(env, "CH_SPANK_CACHE_SIZE", site.cache_size);
   char *prog = NULL;
   if (asprintf(&prog, "%s/bin/ch-spank-stage", package_root()) < 0)
      return -1;
   pid_t pid = fork();
   if (pid < 0) {
      say("--ch-image=%s: can't fork: %s", opt.image, strerror(errno));
      return -1;
   }
   if (pid == 0) {
      if (dup2(out[1], STDOUT_FILENO) < 0)
         _exit(127);
      char *argv[] = { prog, opt.verbose ? "-v" : opt.image, opt.verbose ? opt.image : NULL, NULL };
      execve(prog, argv, env);
      dprintf(STDERR_FILENO, "ch-spank: error: --ch-image=%s: can't run %s: %s\n", opt.image, prog, strerror(errno));
      _exit(127);
   }
   close(out[1]);
   ssize_t n = read_all(out[0], path, cap, deadline, false);
   int e = errno;
   close(out[0]);
   if (n < 0) {
      kill(pid, SIGKILL);
      wait_child(pid);
      say("--ch-image=%s: staging the image: %s", opt.image, strerror(e));
      return -1;
   }
   int rc = wait_child(pid);
   if (rc != 0 || n < 2 || path[n - 1] != '\n') {
      if (rc == 127 || rc == 0)
         say("--ch-image=%s: staging the image failed (exit %d)", opt.image, rc);
      return -1;   /* the stager said why, naming --ch-image */
   }
   path[n - 1] = '\0';
   return 0;
}

static bool is_sqfs(const char *p)
{
   size_t n = strlen(p);
   return (n > 5 && !strcmp(p + n - 5, ".sqfs")) || (n > 9 && !strcmp(p + n - 9, ".squashfs"));
}

/* ch-run's command line for IMAGE, as `ch-run --join` with the user's options. */
static void chrun_argv(struct argv *a, const char *image)
{
   add(a, "%s/build/Release/ch-run", package_root());
   if (opt.verbose)
      add(a, "-v");
   /* A group of one: the plan is a joined one (as with --join), the tasks
      join by setns themselves; a SquashFS image is mounted once per node,
      user and image (the shared mount's holder, native/core/holder.c), and
      a later step reuses it while it lingers. No --join-tag: ch-run's
      default, slurm-JOB.STEP.NODE from the task's SLURM_JOB_ID,
      SLURM_STEP_ID and SLURM_NODEID, isolates steps and nodes just as well,
      and is a template the memoized plan fills in (docs/design.md,
      "Memoized plans"), so the command line is the same in every step and
      a later step's ch-run hits the plan the first one kept. A literal tag
      made every step plan anew, starting Node on every node. */
   add(a, "--join-ct=1");
   char *copy = opt.mounts ? strdup(opt.mounts) : NULL, *save = NULL;
   for (char *m = copy ? strtok_r(copy, ",", &save) : NULL; m != NULL; m = strtok_r(NULL, ",", &save))
      add(a, "--bind=%s", m);
   free(copy);
   if (opt.workdir)
      add(a, "--cd=%s", opt.workdir);
   copy = opt.env ? strdup(opt.env) : NULL;
   for (char *e = copy ? strtok_r(copy, ",", &save) : NULL; e != NULL; e = strtok_r(NULL, ",", &save))
      add(a, "--set-env=%s", e);
   free(copy);
   if (opt.set_env)
      add(a, "--set-env=%s", opt.set_env);
   if (opt.writable)
      add(a, "-W");
   if (opt.gpu_set)
      opt.gpu ? add(a, "--gpu=%s", opt.gpu) : add(a, "--gpu");
   if (opt.device)
      add(a, "--device=%s", opt.device);
   add(a, "%s", image);
   add(a, "--");
   add(a, "/proc/self/fd/5");
   add(a, "3");
   add(a, "4");
   /* The SquashFS mount's holder counts ch-run's process (the holder, after
      exec) as its user, not the tasks that join by setns: the holder stays
      until the node's last task ends (slurm_spank_task_exit), so the mount
      isn't retired under them; then it lingers for the next step. */
   if (is_sqfs(image))
      add(a, "stay");
}

/* In the grandchild: stdio, fds 3 (report), 4 (release), 5 (the holder), then ch-run. */
static _Noreturn void exec_chrun(struct argv *a, char **env, int report_w, int release_r)
{
   char *hold = NULL;
   if (asprintf(&hold, "%s/build/Release/ch-spank-hold", package_root()) < 0)
      _exit(127);
   int h = open(hold, O_RDONLY | O_CLOEXEC);
   int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
   if (h < 0 || nul < 0) {
      dprintf(STDERR_FILENO, "ch-spank: error: can't open %s: %s\n", h < 0 ? hold : "/dev/null", strerror(errno));
      _exit(127);
   }
   /* Out of the way of 3..5 first, then into place without close-on-exec. */
   int r = fcntl(report_w, F_DUPFD_CLOEXEC, 10), l = fcntl(release_r, F_DUPFD_CLOEXEC, 10);
   int hh = fcntl(h, F_DUPFD_CLOEXEC, 10);
   if (r < 0 || l < 0 || hh < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0
       || dup2(r, 3) < 0 || dup2(l, 4) < 0 || dup2(hh, 5) < 0)
      _exit(127);
   execve(a->v[0], a->v, env);
   dprintf(STDERR_FILENO, "ch-spank: error: can't run %s: %s\n", a->v[0], strerror(errno));
   _exit(127);
}

int report_take(char **job, struct shared *sh, char *report, size_t n);

/* Start ch-run and the holder; read its report into SH (cwd, environment edits). */
static int start(struct shared *sh, char **env, const char *image, int release_r, long long deadline)
{
   struct argv a = { .n = 0 };
   chrun_argv(&a, image);
   int rep[2];
   if (pipe2(rep, O_CLOEXEC) != 0)
      return say("--ch-image=%s: can't make a pipe: %s", opt.image, strerror(errno)), -1;
   pid_t mid = fork();
   if (mid < 0)
      return say("--ch-image=%s: can't fork: %s", opt.image, strerror(errno)), -1;
   if (mid == 0) {
      pid_t pid = fork();
      if (pid == 0)
         exec_chrun(&a, env, rep[1], release_r);
      _exit(pid < 0 ? 1 : 0);
   }
   close(rep[1]);
   int rc = wait_child(mid);
   static char report[SHARED_SIZE / 2];
   ssize_t n = rc == 0 ? read_all(rep[0], report, sizeof(report), deadline, true) : -1;
   close(rep[0]);
   if (n < 3 || strcmp(report, "ok") != 0) {
      say("--ch-image=%s: ch-run couldn't make the container%s", opt.image,
          n < 0 && errno == ETIMEDOUT ? " in time (plugstack.conf timeout=)" : " (its messages are above)");
      return -1;
   }
   return report_take(env, sh, report, (size_t)n);
}

/* VAR's value in ENV (a NULL-terminated NAME=VALUE array), or NULL. */
static const char *lookup(char **env, const char *var, size_t len)
{
   for (; *env != NULL; env++)
      if (!strncmp(*env, var, len) && (*env)[len] == '=')
         return *env + len + 1;
   return NULL;
}

static bool append(struct shared *sh, char sign, const char *s)
{
   size_t n = strlen(s) + 2;
   if (sh->env_len + n > SHARED_SIZE - sizeof(*sh))
      return false;
   sh->env[sh->env_len] = sign;
   memcpy(sh->env + sh->env_len + 1, s, n - 1);
   sh->env_len += n;
   return true;
}

/* The holder's report: PID, cwd, and the container's environment made into
   edits of this task's environment (what ch-run set, changed or unset), which
   every task applies to its own: per-task variables ch-run left alone
   (SLURM_PROCID, PMIX_RANK) stay each task's. */
int report_take(char **job, struct shared *sh, char *report, size_t n)
{
   char *end = report + n, *p = report + strlen(report) + 1;
   if (p >= end)
      return say("--ch-image=%s: the container's holder sent a short report", opt.image), -1;
   sh->holder = (pid_t)atoi(p);
   p += strlen(p) + 1;
   if (p >= end || sh->holder <= 0)
      return say("--ch-image=%s: the container's holder sent a short report", opt.image), -1;
   snprintf(sh->cwd, sizeof(sh->cwd), "%s", p);
   p += strlen(p) + 1;
   sh->holder_start = start_time(sh->holder);
   sh->env_len = 0;
   bool ok = true;
   for (char *e = p; e < end && *e != '\0' && ok; e += strlen(e) + 1) {
      char *eq = strchr(e, '=');
      if (eq == NULL)
         continue;
      const char *was = lookup(job, e, (size_t)(eq - e));
      if (was == NULL || strcmp(was, eq + 1) != 0)
         ok = append(sh, '+', e);
   }
   for (char **j = job; *j != NULL && ok; j++) {
      char *eq = strchr(*j, '=');
      if (eq == NULL)
         continue;
      bool kept = false;
      for (char *e = p; e < end && *e != '\0' && !kept; e += strlen(e) + 1)
         kept = !strncmp(e, *j, (size_t)(eq - *j) + 1);
      if (!kept) {
         *eq = '\0';
         ok = append(sh, '-', *j);
         *eq = '=';
      }
   }
   if (!ok)
      return say("--ch-image=%s: the container's environment is too large", opt.image), -1;
   return 0;
}

/* slurmstepd sets TMPDIR=/tmp after the SPANK callbacks where the job has
   none (_make_tmpdir), so ch-run in the prefix form sees it: plan with it too. */
static char **tmpdir_default(char **env)
{
   return env_with(env, "TMPDIR", "/tmp");
}

/* The edits into the step's memfd, which every task's joiner reads. */
static int edits_write(struct shared *sh, int fd)
{
   size_t off = 0;
   while (off < sh->env_len) {
      ssize_t w = pwrite(fd, sh->env + off, sh->env_len - off, (off_t)off);
      if (w < 0 && errno == EINTR)
         continue;
      if (w < 0)
         return say("--ch-image=%s: can't write the container's environment: %s", opt.image, strerror(errno)), -1;
      off += (size_t)w;
   }
   return 0;
}

/* Make the container, once per node and step: the first task to get the lock does; the others wait (bounded). */
int container_once(spank_t sp, struct shared *sh, int release_r, int edits_fd)
{
   long long deadline = now_ms() + site.timeout_s * 1000LL;
   struct timespec until;
   clock_gettime(CLOCK_REALTIME, &until);
   until.tv_sec += site.timeout_s;
   int r = pthread_mutex_timedlock(&sh->lock, &until);
   if (r == EOWNERDEAD) {   /* the maker died: try again ourselves */
      pthread_mutex_consistent(&sh->lock);
      if (sh->state != ST_READY)
         sh->state = ST_NONE;
   } else if (r != 0) {
      say("--ch-image=%s: waited %d s for another task to make the container (plugstack.conf timeout=)",
          opt.image, site.timeout_s);
      return -1;
   }
   if (sh->state == ST_NONE) {
      char **env = NULL;
      static char path[PATH_MAX + 2];
      sh->state = ST_FAILED;
      if (spank_get_item(sp, S_JOB_ENV, &env) != ESPANK_SUCCESS)
         say("--ch-image=%s: can't read the job's environment", opt.image);
      else if (stage(sp, env, deadline, path, sizeof(path)) == 0
               && start(sh, tmpdir_default(env), path, release_r, deadline) == 0
               && edits_write(sh, edits_fd) == 0)
         sh->state = ST_READY;
   }
   int state = sh->state;
   pthread_mutex_unlock(&sh->lock);
   return state == ST_READY ? 0 : -1;
}

/* srun put a guard in argv[0] (slurm_spank_local_user_init) and the
   command in CH_SPANK_CMD: the command back, and the variable gone before
   ch-run or the program could see it. */
int command_restore(spank_t sp)
{
   static char cmd[PATH_MAX * 4];
   int argc = 0;
   char **argv = NULL;
   if (spank_getenv(sp, "CH_SPANK_CMD", cmd, sizeof(cmd)) != ESPANK_SUCCESS)
      return 0;   /* not through srun's plugin (an older srun, say): argv is as given */
   if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1)
      return say("--ch-image=%s: can't read the task's command line", opt.image), -1;
   argv[0] = cmd;
   spank_unsetenv(sp, "CH_SPANK_CMD");
   return 0;
}

/* Make the task join the container at its exec: argv[0] becomes
   ch-spank-join, which enters the holder's namespaces, applies the
   container's environment edits (EDITS_FD) to the task's final environment
   (after slurmstepd's TaskProlog and TMPDIR, as ch-run in the prefix form
   sees them) and execs the task's program there (joiner.c says why not
   here). RELEASE_W stays open across that exec, so the holder waits for the
   joiner; the joiner closes it. */
int container_join(spank_t sp, struct shared *sh, int release_w, int edits_fd)
{
   int argc = 0;
   char **argv = NULL, *join = NULL, *joiner = NULL;
   if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS || argc < 1 || argv[0] == NULL)
      return say("--ch-image=%s: can't read the task's command line", opt.image), -1;

   if (asprintf(&join, "%d:%d:%d:%s", (int)sh->holder, release_w, edits_fd, sh->cwd) < 0
       || asprintf(&joiner, "%s/build/Release/ch-spank-join", package_root()) < 0)
      return say("--ch-image=%s: out of memory", opt.image), -1;
   if (spank_setenv(sp, "CH_SPANK_JOIN", join, 1) != ESPANK_SUCCESS
       || spank_setenv(sp, "CH_SPANK_ARGV0", argv[0], 1) != ESPANK_SUCCESS)
      return say("--ch-image=%s: can't set the task's environment", opt.image), -1;
   if (fcntl(release_w, F_SETFD, 0) != 0 || fcntl(edits_fd, F_SETFD, 0) != 0)
      return say("--ch-image=%s: can't keep the release pipe: %s", opt.image, strerror(errno)), -1;
   /* The task's exec goes to the joiner; slurmstepd owns the array, whose
      old argv[0] the joiner gets back through CH_SPANK_ARGV0. */
   argv[0] = joiner;
   return 0;
}

/* Field 22 of /proc/PID/stat: when PID started (0: no such process). */
unsigned long long start_time(pid_t pid)
{
   char path[64], buf[1024];
   snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
   int fd = open(path, O_RDONLY | O_CLOEXEC);
   if (fd < 0)
      return 0;
   ssize_t n = read(fd, buf, sizeof(buf) - 1);
   close(fd);
   if (n <= 0)
      return 0;
   buf[n] = '\0';
   char *p = strrchr(buf, ')');   /* the command name may hold spaces */
   unsigned long long t = 0;
   for (int field = 2; p != NULL && field < 22; field++)
      p = strchr(p + 1, ' ');
   if (p != NULL)
      t = strtoull(p + 1, NULL, 10);
   return t;
}

/* At the step's end (slurmstepd, root): the holder, if it is still there.
   Its PID came from a process of the user's, who could make it any PID:
   the signal is sent by a child that has fully become the job's user
   (groups, gid, uid, each checked), so the kernel lets it reach only the
   user's own processes, never root's or another user's. */
void holder_kill(struct shared *sh, uid_t uid, gid_t gid)
{
   if (sh->state != ST_READY || sh->holder <= 0 || sh->holder_start == 0
       || start_time(sh->holder) != sh->holder_start)
      return;
   pid_t pid = fork();
   if (pid < 0) {
      slurm_error("ch-spank: can't fork to end the holder: %s", strerror(errno));
      return;
   }
   if (pid == 0) {
      uid_t r, e, s;
      gid_t rg, eg, sg;
      if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0
          || getresuid(&r, &e, &s) != 0 || getresgid(&rg, &eg, &sg) != 0
          || r != uid || e != uid || s != uid || rg != gid || eg != gid || sg != gid)
         _exit(1);
      _exit(kill(sh->holder, SIGKILL) == 0 ? 0 : 2);
   }
   wait_child(pid);
}

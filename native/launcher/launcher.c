/* ch-run's launcher: the first thing that runs, and the process that becomes
   the container.

   Node changes its own process in ways the user's command must not inherit:
   it ignores SIGPIPE and SIGXFSZ, raises the soft RLIMIT_NOFILE, marks stdio
   close-on-exec and may set O_NONBLOCK on stdio (a flag of the open file
   description, shared with the caller). So Node never runs in this process.
   The launcher forks; the child execs Node on the front end
   (dist/ch-run.cjs), which writes its decision into a memfd inherited as
   CH_RUN_PLAN_FD and closes CH_RUN_DONE_FD to say so. This process keeps
   ch-run's PID and the caller's state untouched (ignored and blocked
   signals, limits, stdio), and runs the C core (linked in) on the plan; the
   core execs the command, which inherits that state as POSIX exec semantics say.
   Node's exit is not waited for: Node runs under a small waiter process
   (front_end_waiter); once the plan is confirmed whole the waiter is killed,
   Node follows by its parent-death signal and is reaped by init, and the
   core reaps the waiter just before exec'ing the command (see
   bench/launch.js for what a launch costs). Usually the front end hands over
   its plan before its memo record, detached from us, and records while the
   command starts; a storer of ours keeps the record (memo/later.c).

   The front end's decision and exit status say what happened: a plan, run
   it; "nothing to run" and status 0, it printed help or version; no
   decision and status 31, it reported its own error. Anything else (Node
   missing or broken, CH_RUN_NODE naming some other program, Node killed) is
   reported here and is exit 31, so a failure before the container starts
   is never silent.

   Before all that, a plan memoized by an earlier launch with the same
   command line may do (native/launcher/memo/): then Node is not started at all.

   A C program rather than a shell script: this sits on every launch, and
   dash plus a subshell cost ~2 ms more. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The core is linked in too (core_main: a memoized plan runs it here,
   without the exec of ch-run-core, one exec fewer on every hit), and so
   are its error reporting (FATAL: "what: why (ERRNO)", exit EXIT_CHRUN)
   and helpers (path_find, refuse_privilege). */
#include "../core/core.h"
#include "memo/memo.h"


/* Strip the last component of PATH in place. */
static void strip_last(char *path)
{
   char *slash = strrchr(path, '/');
   if (slash == NULL) { errno = ENOENT; FATAL("can't find ch-run's package root"); }
   *slash = '\0';
}

/* Where we are: the package root, and the directory of the core
   (build/Release). The launcher is built as build/Release/ch-run and runs
   from there (make install links PREFIX/bin/ch-run to it; the kernel
   resolves the link), or as the package's bin/ch-run, a copy the build puts
   there for npm to link (npm packs no symlinks; tools/build.js). */
static void own_location(char *dir, char *root, size_t size)
{
   static const char release[] = "/build/Release";
   ssize_t n = readlink("/proc/self/exe", root, size - 1);
   if (n < 0)
      FATAL("can't find own location (/proc/self/exe)");
   root[n] = '\0';
   strip_last(root);
   size_t len = strlen(root);
   if (len >= sizeof(release) - 1 && !strcmp(root + len - (sizeof(release) - 1), release)) {
      memcpy(dir, root, len + 1);
      root[len - (sizeof(release) - 1)] = '\0';
   } else {
      strip_last(root);   /* ROOT/bin */
      if (snprintf(dir, size, "%s%s", root, release) >= (int)size) {
         errno = ENAMETOOLONG;
         FATAL("can't find ch-run's core in %s", root);
      }
   }
}

/* Node loads the certificates NODE_EXTRA_CA_CERTS names as it starts:
   50-100 ms of every launch that plans, measured here with Debian's
   bundle (and a warning on stderr if the file is missing), for a front end
   that makes no TLS connection. So it gets the variable renamed, in its
   place in the environment (whose order the plan keeps), and names it
   back first thing (lib/run/main.ts), for the container's environment and
   the programs it starts. */
extern char **environ;
static void hide_ca_certs(void)
{
   static const char name[] = "NODE_EXTRA_CA_CERTS=";
   for (char **e = environ; *e != NULL; e++)
      if (!strncmp(*e, name, sizeof(name) - 1)) {
         size_t n = strlen(LAUNCHER_CA_CERTS "=") + strlen(*e) - (sizeof(name) - 1) + 1;
         char *renamed = malloc(n);
         if (renamed == NULL)
            FATAL("can't pass NODE_EXTRA_CA_CERTS to the front end");
         snprintf(renamed, n, "%s=%s", LAUNCHER_CA_CERTS, *e + sizeof(name) - 1);
         *e = renamed;   /* a forked child's own copy of the array, about to exec */
      }
}

/* The memo's storer's pipe (memo/later.c; -1s without a memo): its read end
   the storer's, its write end the front end's where it may hand over its
   plan before its record (REC_LATER: LAUNCHER_MEMO_LATER names it), else no
   one's (the storer then just tidies). */
static int rec_pipe[2] = { -1, -1 };
static bool rec_later = false;

/* In a forked child: die (SIGKILL) when PARENT does, or now if it already
   has. PARENT is the parent's PID taken before the fork: read here,
   getppid() may already name init if the parent was killed before we ran,
   and a check after prctl would pass (seen under load: a front end left
   behind). */
static void die_with(pid_t parent)
{
   if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
      _exit(EXIT_CHRUN);
}

/* In the child: exec Node on the front end, with the plan memfd and the
   write end of the done pipe named in the environment. Never returns. */
static void exec_front_end(pid_t parent, const char *root, int planfd, int donefd, int argc, char **argv,
                           int memofd, const struct memo *memo)
{
   char front[PATH_MAX + 32], fdstr[16];
   /* Its waiter goes when ch-run does, or when ch-run has read the plan. */
   die_with(parent);
   if (fcntl(donefd, F_SETFD, 0) != 0)
      FATAL("can't pass the done pipe to the front end");
   snprintf(front, sizeof(front), "%s/dist/ch-run.cjs", root);
   snprintf(fdstr, sizeof(fdstr), "%d", planfd);
   if (setenv(LAUNCHER_PLAN_FD, fdstr, 1) != 0)
      FATAL("can't set " LAUNCHER_PLAN_FD);
   snprintf(fdstr, sizeof(fdstr), "%d", donefd);
   if (setenv(LAUNCHER_DONE_FD, fdstr, 1) != 0)
      FATAL("can't set " LAUNCHER_DONE_FD);
   /* The record of what the plan depended on goes there (lib/run/memo.ts);
      close-on-exec in ch-run itself, so the core never holds it. */
   snprintf(fdstr, sizeof(fdstr), "%d", memofd);
   if (memofd >= 0 && (fcntl(memofd, F_SETFD, 0) != 0 || setenv(LAUNCHER_MEMO_FD, fdstr, 1) != 0))
      FATAL("can't pass the memo memfd to the front end");
   if (memo->why[0] != '\0' && setenv(LAUNCHER_MEMO_MISS, memo->why, 1) != 0)
      FATAL("can't set " LAUNCHER_MEMO_MISS);
   /* The key left the command's arguments out: the front end says whether
      its plan holds for any (native/launcher/memo/store.c, memo_init). */
   snprintf(fdstr, sizeof(fdstr), "%d", memo->tail_n);
   if (memofd >= 0 && memo->tail != NULL && setenv(LAUNCHER_MEMO_TAIL, fdstr, 1) != 0)
      FATAL("can't set " LAUNCHER_MEMO_TAIL);
   /* It may hand over the plan first and its record afterwards (memo/later.c). */
   snprintf(fdstr, sizeof(fdstr), "%d", rec_pipe[1]);
   if (rec_later && (fcntl(rec_pipe[1], F_SETFD, 0) != 0 || setenv(LAUNCHER_MEMO_LATER, fdstr, 1) != 0))
      FATAL("can't set " LAUNCHER_MEMO_LATER);
   hide_ca_certs();
   /* Node's flags (protocol.json nodeFlags: no JIT), the front end, our arguments. */
   static const char *const flags[] = { NODE_FLAGS_ALL };
   const int nflags = sizeof(flags) / sizeof(flags[0]);
   char **nargv = calloc(argc + nflags + 2, sizeof(char *));
   if (nargv == NULL)
      FATAL("can't allocate");
   const char *node = getenv("CH_RUN_NODE");   /* a site may pin its Node */
   nargv[0] = (char *)(node && *node ? node : "node");
   for (int i = 0; i < nflags; i++)
      nargv[1 + i] = (char *)flags[i];
   nargv[1 + nflags] = front;
   for (int i = 1; i < argc; i++)
      nargv[i + 1 + nflags] = argv[i];
   /* A bare name is looked up on PATH's absolute entries only (never in
      the current directory, which may be shared: path_find). */
   char found[PATH_MAX];
   if (strchr(nargv[0], '/') != NULL)
      execv(nargv[0], nargv);
   else if (path_find(nargv[0], found, sizeof(found)))
      execv(found, nargv);
   /* Said where it happens, on a compute node, often: what needs Node
      there, and how sites provide it (README, "Node on compute nodes"). */
   int e = errno;
   say_error("can't execute Node.js (%s%s): %s (%s); ch-run needs node >= 20 on PATH or in CH_RUN_NODE "
             "to plan a launch it has no memoized plan for (here: %s); a launch with one never starts Node. "
             "On compute nodes, load your site's Node.js (e.g. module load nodejs) or set CH_RUN_NODE "
             "to a Node.js on a shared file system (CH_RUN_NODE=/shared/node-v20/bin/node)",
             node && *node ? "CH_RUN_NODE=" : "", nargv[0], strerror(e), errno_name(e),
             memo->why[0] != '\0' ? memo->why : "none kept");
   _exit(EXIT_CHRUN);   /* a forked child: no exit() */
}

/* Leave this process as STATUS says a child left: the same exit status, or
   killed by the same signal (with no core file of ours). */
_Noreturn static void exit_as(int status)
{
   if (WIFSIGNALED(status)) {
      int sig = WTERMSIG(status);
      struct rlimit none = { 0, 0 };
      sigset_t only;
      (void)setrlimit(RLIMIT_CORE, &none);
      (void)signal(sig, SIG_DFL);
      sigemptyset(&only);
      sigaddset(&only, sig);
      (void)sigprocmask(SIG_UNBLOCK, &only, NULL);
      (void)raise(sig);
   }
   _exit(WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_CHRUN);
}

/* In the child: fork the front end, and wait for it and exit as it did.
   Node is ch-run's grandchild so that, its plan read, getting rid of it
   costs a launch nothing: ch-run kills this small waiter (reaped at once),
   and Node, killed by its parent-death signal, tears down and is reaped
   by init or the nearest subreaper while the command starts. Measured:
   Node takes ~2.3 ms to die after SIGKILL; the core, which reaped it
   before exec'ing the command, waited ~1 ms of it on a launch that planned. */
_Noreturn static void front_end_waiter(pid_t launcher, const char *root, int planfd, int donefd, int argc,
                                       char **argv, int memofd, struct memo *memo)
{
   die_with(launcher);   /* and with us, the front end */
   pid_t self = getpid();
   pid_t pid = fork();
   if (pid < 0)
      FATAL("can't fork front end");
   if (pid == 0)
      exec_front_end(self, root, planfd, donefd, argc, argv, memofd, memo);
   /* The memo's storer: forked here, not by ch-run, it is never the command's
      child, and costs ch-run nothing (memo/later.c). No parent-death signal:
      it outlives us. Without it, no record is kept this time. */
   if (rec_pipe[0] >= 0 && fork() == 0)
      memo_storer(memo, memofd, rec_pipe[0]);
   /* The front end's alone: the done pipe's EOF must mean it is done; the
      storer's, that no record comes. */
   if (close(donefd) != 0 || close(planfd) != 0 || (memofd >= 0 && close(memofd) != 0)
       || (rec_pipe[0] >= 0 && (close(rec_pipe[0]) != 0 || close(rec_pipe[1]) != 0)))
      FATAL("can't close the front end's descriptors");
   int status;
   while (waitpid(pid, &status, 0) < 0)
      if (errno != EINTR)
         FATAL("can't wait for front end");
   exit_as(status);
}

/* Start the front end (under its waiter, whose PID is returned: the front
   end's exit status is its); *DONE gets the read end of its done pipe (see
   front_end_done). SIGCHLD is the default meanwhile (a caller's SIG_IGN
   would have the kernel reap the child and hide its status); *CALLER gets
   the caller's disposition. */
static pid_t start_front_end(const char *root, int planfd, int argc, char **argv, int memofd,
                             struct memo *memo, struct sigaction *caller, int *done_read)
{
   struct sigaction dfl = { .sa_handler = SIG_DFL };
   sigemptyset(&dfl.sa_mask);
   if (sigaction(SIGCHLD, &dfl, caller) != 0)
      FATAL("can't reset SIGCHLD");
   int done[2];
   if (pipe2(done, O_CLOEXEC) != 0)
      FATAL("can't create done pipe");
   pid_t self = getpid();
   pid_t pid = fork();
   if (pid < 0)
      FATAL("can't fork front end");
   if (pid == 0)
      front_end_waiter(self, root, planfd, done[1], argc, argv, memofd, memo);
   if (close(done[1]) != 0 || (rec_pipe[0] >= 0 && (close(rec_pipe[0]) != 0 || close(rec_pipe[1]) != 0)))
      FATAL("can't close done pipe");
   rec_pipe[0] = rec_pipe[1] = -1;
   *done_read = done[0];
   return pid;
}

/* Return when the front end is done planning: it closed the done pipe
   (DONE), on purpose once its decision is written, or by exiting. It
   writes one byte before closing on purpose, LAUNCHER_DONE_BYTE_C; or,
   with a plan whose record follows, LAUNCHER_LATER_BYTE_C (memo/later.c).
   The result is that byte, or 0: a front end that died halfway through a
   plan is told apart. */
static char front_end_done(int done)
{
   /* The byte, or EOF; not EOF after the byte: a helper Node started and
      left behind may hold the pipe open, and must not keep us waiting. */
   char c;
   ssize_t n;
   while ((n = read(done, &c, 1)) < 0)
      if (errno != EINTR)
         FATAL("can't read done pipe");
   return n == 1 && (c == LAUNCHER_DONE_BYTE_C || c == LAUNCHER_LATER_BYTE_C) ? c : 0;
}

static int wait_front_end(pid_t pid)
{
   int status;
   while (waitpid(pid, &status, 0) < 0)
      if (errno != EINTR)
         FATAL("can't wait for front end");
   return status;
}

/* O_NONBLOCK belongs to the open file description, which Node shares with
   us and the caller: put back on stdio what the caller had. */
static void save_stdio_flags(int flags[3])
{
   for (int fd = 0; fd <= 2; fd++)
      flags[fd] = fcntl(fd, F_GETFL);   /* -1: closed by the caller */
}

/* The same for the core, which restores it after reaping the front end:
   bit N set, the caller had O_NONBLOCK on fd N. */
static int nonblock_bits(const int flags[3])
{
   int bits = 0;
   for (int fd = 0; fd <= 2; fd++)
      if (flags[fd] >= 0 && (flags[fd] & O_NONBLOCK))
         bits |= 1 << fd;
   return bits;
}

static void restore_stdio_flags(const int flags[3])
{
   for (int fd = 0; fd <= 2; fd++) {
      if (flags[fd] < 0)
         continue;
      int now = fcntl(fd, F_GETFL);
      if (now < 0)
         FATAL("can't get stdio flags");
      if ((now & O_NONBLOCK) != (flags[fd] & O_NONBLOCK)
          && fcntl(fd, F_SETFL, (now & ~O_NONBLOCK) | (flags[fd] & O_NONBLOCK)) != 0)
         FATAL("can't restore O_NONBLOCK on stdio");
   }
}

/* What the front end decided, by the first 8 bytes it wrote to the plan
   memfd: a plan (lib/run/plan-output.ts), nothing to run (help, version), or
   nothing at all (it failed, or isn't ours). */
enum decision { D_NONE, D_PLAN, D_NOTHING_TO_RUN };

static enum decision front_end_decision(int planfd)
{
   /* Both magics, their NUL included, are 8 bytes. */
   _Static_assert(sizeof(PLAN_MAGIC) == 8 && sizeof(PLAN_NOTHING_TO_RUN) == 8, "plan magics are 8 bytes");
   char head[sizeof(PLAN_MAGIC)];
   ssize_t n = pread(planfd, head, sizeof(head), 0);
   if (n < 0)
      FATAL("can't read plan memfd");
   if (n == sizeof(head) && !memcmp(head, PLAN_MAGIC, sizeof(head)))
      return D_PLAN;
   if (n == sizeof(head) && !memcmp(head, PLAN_NOTHING_TO_RUN, sizeof(head)))
      return D_NOTHING_TO_RUN;
   return D_NONE;
}

/* Explain a front end that ended without a decision and without its own
   error status, 31; exit 31. */
_Noreturn static void front_end_failed(int status)
{
   const char *node = getenv("CH_RUN_NODE");
   char who[PATH_MAX + 32];
   if (node && *node)
      snprintf(who, sizeof(who), "CH_RUN_NODE=%s", node);
   else
      snprintf(who, sizeof(who), "node on PATH");
   if (WIFSIGNALED(status))
      FATAL_NOERR("front end (%s) was killed by signal %d (%s) before starting the container",
                  who, WTERMSIG(status), strsignal(WTERMSIG(status)));
   FATAL_NOERR("front end (%s) exited with status %d without starting the container; "
               "ch-run needs node >= 20 on PATH or in CH_RUN_NODE", who, WEXITSTATUS(status));
}

/* Become the core, which reads the plan from PLANFD: the same code as
   ch-run-core, linked in here, run in this process: one exec fewer (0.6 ms
   a launch, measured on hits; issue #27 made a launch that planned do the
   same). A front end
   that planned may still be exiting: the core reaps it (FRONT, our child),
   after building the container and before it execs the command, so the two
   overlap; then it puts back the caller's O_NONBLOCK bits on stdio (Node's
   exit no longer does). A memoized plan has no front end (FRONT 0) and
   nothing to undo. Never returns. */
_Noreturn static void run_core(int planfd, pid_t front, int nonblock)
{
   char fdstr[16], pidstr[16], nbstr[16];
   if (lseek(planfd, 0, SEEK_SET) != 0)
      FATAL("can't rewind plan memfd");
   snprintf(fdstr, sizeof(fdstr), "%d", planfd);
   snprintf(pidstr, sizeof(pidstr), "%d", (int)front);
   snprintf(nbstr, sizeof(nbstr), "%d", nonblock);
   char *argv[] = { "ch-run", fdstr, pidstr, nbstr, NULL };
   core_main(4, argv);
}

int main(int argc, char **argv)
{
   char dir[PATH_MAX], root[PATH_MAX];
   int stdio_flags[3];
   struct sigaction sigchld;

   refuse_privilege("ch-run");   /* also for the core it may run in this process */
   /* Ours (hide_ca_certs): a caller's goes nowhere, so that a plan and a
      memoized launch see the same environment. */
   if (unsetenv(LAUNCHER_CA_CERTS) != 0)
      FATAL("can't unset " LAUNCHER_CA_CERTS);
   own_location(dir, root, sizeof(dir));
   save_stdio_flags(stdio_flags);

   struct memo memo;
   memo_init(&memo, dir, argc, argv);
   int hit = memo_hit(&memo);
   if (hit >= 0) {
      memo_close(&memo);
      run_core(hit, 0, nonblock_bits(stdio_flags));
   }

   int planfd, memofd;
   char confirmed;
   pid_t front;
   enum decision d;
   for (int tries = 1; ; tries++) {
      /* Not close-on-exec: the front end writes them, the core reads the plan. */
      planfd = memfd_create("ch-run-plan", 0);
      if (planfd < 0)
         FATAL("can't create plan memfd");
      memofd = memo.enabled ? memfd_create("ch-run-memo", MFD_CLOEXEC) : -1;
      if (memo.enabled && memofd < 0)
         FATAL("can't create memo memfd");
      /* The storer tidies the plan directory and keeps a record that comes
         after the plan (memo/later.c); once. The front end may send one
         where we hold the key's lock, for the storer to hold while it
         waits; not in the test suite's modes, which keep the record before
         the command runs, nor where such a record was lost last time. */
      if (tries == 1 && memo.enabled && pipe2(rec_pipe, O_CLOEXEC) != 0)
         FATAL("can't create the storer's pipe");
      rec_later = tries == 1 && memo.enabled && memo.lockfd >= 0 && !memo.verify && !memo.record_first
                  && memo_mark_later(&memo);
      int done;
      front = start_front_end(root, planfd, argc, argv, memofd, &memo, &sigchld, &done);
      confirmed = front_end_done(done);
      d = front_end_decision(planfd);
      if (d != D_PLAN || !confirmed) {
         if (close(done) != 0)
            FATAL("can't close done pipe");
         break;
      }
      /* The plan is whole and all the front end had to say is written (Node
         writes stdio synchronously): its exit, a few ms of V8 teardown, is
         no use to anyone, so its waiter is killed (Node follows, and is
         reaped by init), and the core reaps the waiter. A front end whose
         record follows cleared its parent-death signal: it goes on
         recording, and a storer of ours keeps the record (memo/later.c). */
      if (kill(front, SIGKILL) != 0 && errno != ESRCH)
         FATAL("can't end front end");
      int fd;
      if (confirmed == LAUNCHER_LATER_BYTE_C) {
         fd = planfd;   /* the storer keeps the record */
      } else {
         fd = memo_store(&memo, memofd, planfd, tries);
      }
      if (close(done) != 0)
         FATAL("can't close done pipe");
      if (fd >= 0)
         fd = memo_replay(&memo, fd, nonblock_bits(stdio_flags));   /* tests only */
      if (fd >= 0) {
         if (sigaction(SIGCHLD, &sigchld, NULL) != 0)
            FATAL("can't restore SIGCHLD");
         /* The core runs in this process, as for a hit. */
         if (memofd >= 0 && close(memofd) != 0)
            FATAL("can't close memo memfd");
         memo_close(&memo);
         run_core(fd, front, nonblock_bits(stdio_flags));
      }
      /* Verify mode only (CH_RUN_MEMO_VERIFY): an input changed while it
         planned; plan again. */
      (void)wait_front_end(front);
      if (sigaction(SIGCHLD, &sigchld, NULL) != 0)
         FATAL("can't restore SIGCHLD");
      if (close(planfd) != 0 || (memofd >= 0 && close(memofd) != 0))
         FATAL("can't close plan memfds");
   }
   int status = wait_front_end(front);
   if (sigaction(SIGCHLD, &sigchld, NULL) != 0)
      FATAL("can't restore SIGCHLD");
   restore_stdio_flags(stdio_flags);
   /* 0: help or version; 1: --feature said "not supported". */
   if (WIFEXITED(status) && WEXITSTATUS(status) <= 1 && d == D_NOTHING_TO_RUN)
      return WEXITSTATUS(status);
   if (WIFEXITED(status) && (WEXITSTATUS(status) == EXIT_CHRUN || WEXITSTATUS(status) == EXIT_USAGE)
       && d == D_NONE)
      return WEXITSTATUS(status);   /* the front end reported its own error */
   front_end_failed(status);
}

/* Memoized plans, the test suite's modes: CH_RUN_MEMO_VERIFY=1 (every
   launch runs the plan its record rebuilds, checked equal to the planned
   one) and CH_RUN_MEMO_VERIFY=replay (a second launch must hit the record
   just kept, and its command see the same). See memo.h. */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define EXIT_PROBE   EXIT_CHRUN

/* ---- verify mode (tests) ---- */

/* Split plan P into its environment entries (sorted) and the rest. */
static bool plan_split(const char *p, size_t len, struct buf *rest, char ***env, size_t *n)
{
   struct tokens c = { p, p + len };
   size_t cap = 64;
   *n = 0;
   *env = malloc(cap * sizeof(char *));
   for (const char *t = tokens_next(&c); t != NULL && *env != NULL; t = tokens_next(&c)) {
      if (strcmp(t, PLAN_ENV) != 0) {
         tok(rest, t);
         continue;
      }
      if ((t = tokens_next(&c)) == NULL)
         return false;
      if (*n == cap && (*env = realloc(*env, (cap *= 2) * sizeof(char *))) == NULL)
         return false;
      (*env)[(*n)++] = (char *)t;
   }
   if (*env == NULL || rest->failed)
      return false;
   qsort(*env, *n, sizeof(char *), cmp_str);
   return true;
}

/* Variables a shell sets on its way to exec'ing Node (dash adds PWD; bash
   SHLVL, OLDPWD and _ too). */
static bool shell_var(const char *kv)
{
   static const char *const names[] = { "PWD=", "OLDPWD=", "SHLVL=", "_=" };
   for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
      if (!strncmp(kv, names[i], strlen(names[i])))
         return true;
   return false;
}

/* The same plan, the environment in another order and but for what a shell
   sets: a site's Node wrapper (CH_RUN_NODE, a shell script, say) hands the
   front end its own environment, reordered (dash sorts it) and with PWD
   added; a memoized plan has the caller's. Any other variable must be the
   same in both: one the wrapper changed would differ between a fresh
   launch and a hit. */
static bool same_but_env(const char *a, size_t alen, const char *b, size_t blen, const char **da, const char **db)
{
   struct buf ra = { 0 }, rb = { 0 };
   char **ea = NULL, **eb = NULL;
   size_t na, nb, i = 0, j = 0;
   bool same = plan_split(a, alen, &ra, &ea, &na) && plan_split(b, blen, &rb, &eb, &nb)
               && ra.len == rb.len && !memcmp(ra.p, rb.p, ra.len);
   while (same) {
      while (i < na && shell_var(ea[i]))
         i++;
      while (j < nb && shell_var(eb[j]))
         j++;
      if (i == na || j == nb) {
         same = i == na && j == nb;
         *da = i < na ? ea[i] : "(end)";
         *db = j < nb ? eb[j] : "(end)";
         break;
      }
      *da = ea[i];
      *db = eb[j];
      same = !strcmp(ea[i++], eb[j++]);
   }
   free(ra.p); free(rb.p); free(ea); free(eb);
   return same;
}

/* Under CH_RUN_MEMO_VERIFY: the record must hold right after planning and
   rebuild exactly the plan the front end made; run the rebuilt one. */
int verify(struct memo *m, const struct record *r, const char *rec, size_t len, int planfd)
{
   size_t plen;
   char *want = read_fd(planfd, &plen);
   char **env = edited_env(r);
   struct buf have = { 0 };
   if (want == NULL || env == NULL || !build_plan(r, env, &have)) {
      FATAL_NOERR("plan memo verify: can't rebuild the plan");
   }
   const char *node = getenv("CH_RUN_NODE"), *dhave = NULL, *dwant = NULL;
   if ((have.len != plen || memcmp(have.p, want, plen) != 0) && node != NULL && *node != '\0'
       && !same_but_env(have.p, have.len, want, plen, &dhave, &dwant) && dhave != NULL) {
      FATAL_NOERR("plan memo verify: rebuilt environment differs (Node wrapper CH_RUN_NODE=%.200s): "
                  "planned '%.200s', rebuilt '%.200s'", node, dwant, dhave);
   }
   if ((have.len != plen || memcmp(have.p, want, plen) != 0) && dhave == NULL) {
      size_t i = 0;
      while (i < plen && i < have.len && have.p[i] == want[i])
         i++;
      size_t from = i;
      while (from > 0 && want[from - 1] != '\0')
         from--;
      FATAL_NOERR("plan memo verify: rebuilt plan differs at byte %zu: planned '%.200s', rebuilt '%.200s'",
                  i, from < plen ? want + from : "(end)", from < have.len ? have.p + from : "(end)");
   }
   free(want);
   int fd = memfd_of(&have);
   free(have.p);
   if (fd < 0) {
      FATAL_NOERR("plan memo verify: can't create memfd");
   }
   (void)close(planfd);
   (void)m;
   return fd;
}

/* ---- replay mode (tests) ---- */

/* All child PID writes to FD (closed), NUL-terminated, and its STATUS. */
static char *collect(int fd, pid_t pid, int *status, size_t *len)
{
   struct buf out = { 0 };
   char chunk[4096];
   ssize_t n;
   while ((n = read(fd, chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR))
      if (n > 0)
         put(&out, chunk, n);
   close(fd);
   while (waitpid(pid, status, 0) < 0)
      if (errno != EINTR) {
         free(out.p);
         return NULL;
      }
   put(&out, "", 1);
   *len = out.len - 1;
   return out.failed ? NULL : out.p;
}

/* Carry out plan PLANFD up to the command's exec in a child (the core,
   probing: native/core/main.c): what the command would see, as text, and
   how the child ended (STATUS). Its stderr goes nowhere: the launch
   itself says what it has to. NULL if it can't be done at all. */
static char *probe(int planfd, int nonblock, int *status, size_t *len)
{
   int p[2];
   if (pipe2(p, O_CLOEXEC) != 0)
      return NULL;
   pid_t pid = fork();
   if (pid < 0) {
      close(p[0]);
      close(p[1]);
      return NULL;
   }
   if (pid == 0) {
      char fd[16], nb[16];
      int null = open("/dev/null", O_WRONLY);
      if (null < 0 || dup2(null, STDERR_FILENO) < 0 || lseek(planfd, 0, SEEK_SET) != 0)
         _exit(EXIT_PROBE);
      close(p[0]);
      core_probe_fd = p[1];
      snprintf(fd, sizeof(fd), "%d", planfd);
      snprintf(nb, sizeof(nb), "%d", nonblock);
      char *argv[] = { "ch-run", fd, "0", nb, NULL };
      core_main(4, argv);
   }
   close(p[1]);
   return collect(p[0], pid, status, len);
}

/* Is plan FD one not replayed: joining a group (--join, --join-pid: a probe
   would make or enter one its peers count on), or a SquashFS image (each
   probe would start a squashfuse, gone only some time after it). */
static bool not_replayed(int fd)
{
   size_t len;
   char *p = read_fd(fd, &len);
   bool skip = p == NULL;
   for (struct tokens c = { p, p + (p ? len : 0) }; !skip && c.p < c.end;) {
      const char *t = tokens_next(&c);
      skip = t == NULL || !strcmp(t, PLAN_JOIN) || !strcmp(t, PLAN_JOIN_PID) || !strcmp(t, PLAN_SQUASH);
      if (t != NULL && !strcmp(t, PLAN_ARG))
         break;   /* the command line follows: not keywords */
   }
   free(p);
   return skip;
}

/* The second launch (CH_RUN_MEMO_VERIFY=replay-check): a hit, whose core
   reports to M->check_fd instead of running the command; or "miss" there. */
int replay_check(struct memo *m)
{
   int fd = m->enabled ? try_hit(m) : -1;
   if (fd < 0) {
      dprintf(m->check_fd, "miss: %s\n", m->enabled ? m->why : "memo off");
      _exit(0);
   }
   core_probe_fd = m->check_fd;
   return fd;
}

/* Launch ourselves again (memo_replay's second launch): what it reports,
   and how it ended (STATUS). */
static char *second_launch(struct memo *m, int planfd, int *status, size_t *len)
{
   int p[2];
   if (pipe2(p, 0) != 0)
      return NULL;
   pid_t pid = fork();
   if (pid < 0)
      return NULL;
   if (pid == 0) {
      char fd[16];
      int null = open("/dev/null", O_WRONLY);
      snprintf(fd, sizeof(fd), "%d", p[1]);
      /* As a later launch by the same caller: without this launch's plan. */
      if (null < 0 || dup2(null, STDERR_FILENO) < 0 || close(p[0]) != 0 || close(planfd) != 0
          || setenv(LAUNCHER_MEMO_VERIFY, "replay-check", 1) != 0 || setenv("CH_RUN_MEMO_REPLAY_FD", fd, 1) != 0)
         _exit(EXIT_PROBE);
      execv("/proc/self/exe", m->argv);
      _exit(EXIT_PROBE);
   }
   close(p[1]);
   return collect(p[0], pid, status, len);
}

int memo_replay(struct memo *m, int planfd, int nonblock)
{
   if (!m->replay || !m->stored || not_replayed(planfd))
      return planfd;   /* nothing kept (a later launch plans too), or not replayed */
   /* SIGCHLD as the kernel's default while we wait (a caller's SIG_IGN
      would reap them for us). */
   struct sigaction dfl = { .sa_handler = SIG_DFL }, caller;
   sigemptyset(&dfl.sa_mask);
   int sa = 0, sb = 0;
   size_t la = 0, lb = 0;
   char *a = NULL, *b = NULL;
   if (sigaction(SIGCHLD, &dfl, &caller) == 0) {
      /* The second launch first: what the core makes in a -w image (bind
         targets) is there for the probe of this one, as it would be for a
         later launch; the other way round that launch would rightly miss. */
      b = second_launch(m, planfd, &sb, &lb);
      a = b == NULL ? NULL : probe(planfd, nonblock, &sa, &la);
      (void)sigaction(SIGCHLD, &caller, NULL);
   }
   if (a == NULL || b == NULL) {
      FATAL("plan memo replay: can't run the probes");
   }
   if (!strncmp(b, "miss: ", 6)) {
      /* Our entry replaced by a concurrent launch's (the key's slots full of
         other conditions': other jobs' steps on a node whose launches share
         a key): the second launch could not find it, and its miss says
         nothing. Else: does the record hold for us now? If not, another
         process changed an input since we kept it (a later launch would
         rightly miss): nothing to compare. If it does, the second launch
         missed for a reason of its own: a bug. */
      struct stat st;
      if (fstatat(m->dirfd, m->stored_slot, &st, AT_SYMLINK_NOFOLLOW) != 0
          || (unsigned long long)st.st_ino != m->stored_ino) {
         if (m->verbose >= 1)
            say("plan memo replay: not compared: the record was replaced by a concurrent launch's");
         free(a);
         free(b);
         return planfd;
      }
      m->quiet = true;
      int fd = try_hit(m);
      m->quiet = false;
      if (fd < 0) {
         if (m->verbose >= 1)
            say("plan memo replay: not compared: %s since it was kept", m->why);
         free(a);
         free(b);
         return planfd;
      }
      FATAL_NOERR("plan memo replay: a second launch did not hit the record just kept (%.*s)",
                  (int)strcspn(b + 6, "\n"), b + 6);
   }
   if (sa != sb || la != lb || memcmp(a, b, la) != 0) {
      size_t i = 0;
      while (i < la && i < lb && a[i] == b[i])
         i++;
      while (i > 0 && a[i - 1] != '\n')
         i--;
      int na = (int)strcspn(a + i, "\n"), nb = (int)strcspn(b + i, "\n");
      FATAL_NOERR("plan memo replay: the command of a launch from the record would see other than this "
                  "one's (status %d, %d): planned '%.*s', hit '%.*s'", sa, sb, na > 300 ? 300 : na, a + i,
                  nb > 300 ? 300 : nb, b + i);
   }
   if (m->verbose >= 2)
      say("plan memo replay: a second launch hit; its command would see the same (%zu bytes of cwd, ids, "
          "arguments, environment, mounts)", la);
   free(a);
   free(b);
   return planfd;
}

/* Memoized plans, the launcher's half.

   A launch's plan depends on its command line, uid, gid and cwd (the key),
   and on what the front end observed while planning: variables, files, the
   user name (lib/run/memo.ts records them). The front end hands that record
   beside the plan; we keep it in the user's own plan directory, named by a
   hash of the key. A later launch with the same key checks every recorded
   dependency, in order, against the system as it is now; if all hold, it
   replays the planner's environment edits on its own environment, prints
   what the planner printed, and execs the core without starting Node.
   Anything else (no record, a changed dependency, a corrupt or foreign
   file, a different build) is a miss: the front end plans as always and
   its record replaces the old one.

   The directory: $CH_RUN_CACHE_DIR, else $XDG_RUNTIME_DIR/chtk-plans when
   that is the user's own 0700 directory, else /dev/shm/.chtk-plans.UID (or,
   if someone else took that name, .chtk-plans.UID.1, .2, ...: the first that
   is ours). /dev/shm is shared: the last component is opened O_NOFOLLOW and
   the directory used only if it is ours and closed to others; then entries are
   named through its descriptor, opened O_NOFOLLOW, and used only if they
   are regular files of ours no one else can write. A record can't make the
   core do what the planner wouldn't: the core checks the plan's form as it
   does a fresh one, and the plan came from the planner.

   Concurrent launches with one key (the ranks of an MPI step on a node)
   wait for the first, which holds KEY.lock while Node plans, and then hit;
   a bounded wait, on our own file in our own directory. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "../core/core.h"
#include "memo.h"

extern char **environ;

#define ENTRY_MAGIC  "CHMEMOENT1"
#define RECORD_MAGIC "CHMEMO1"
#define ENTRY_MAX    (16 << 20)   /* far above any plan; a bigger record isn't kept */
#define ENTRIES_MAX  256          /* records per user; the least recently used go first */
#define LOCK_WAIT_NS (10LL * 1000000000LL)
#define DATA_MAX     (1 << 20)
#define EXIT_PROBE   EXIT_CHRUN

/* ---- small buffers and tokens ---- */

struct buf { char *p; size_t len, cap; bool failed; };

static void put(struct buf *b, const void *s, size_t n)
{
   if (b->failed)
      return;
   if (b->len + n > b->cap) {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + n)
         cap *= 2;
      char *p = realloc(b->p, cap);
      if (p == NULL) { b->failed = true; return; }
      b->p = p; b->cap = cap;
   }
   memcpy(b->p + b->len, s, n);
   b->len += n;
}

static void tok(struct buf *b, const char *s) { put(b, s, strlen(s) + 1); }

static void tokf(struct buf *b, const char *fmt, long long v)
{
   char s[32];
   snprintf(s, sizeof(s), fmt, v);
   tok(b, s);
}

static uint64_t fnv64(uint64_t h, const void *data, size_t n)
{
   const unsigned char *p = data;
   for (size_t i = 0; i < n; i++)
      h = (h ^ p[i]) * 0x100000001b3ULL;
   return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static void why(struct memo *m, const char *fmt, const char *arg)
{
   snprintf(m->why, sizeof(m->why), fmt, arg);
}

/* ---- the directory ---- */

/* Open DIR (created 0700 if missing) if it is our own and closed to others;
   -1 if it can't be made or opened, -2 if something else is there. */
static int own_dir(struct memo *m, const char *dir)
{
   /* Opened first: on every launch but the first it is there (no mkdir). */
   int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
   if (fd < 0 && errno == ENOENT) {
      if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
         why(m, "can't create plan directory %.400s", dir);
         return -1;
      }
      fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
   }
   struct stat st;
   if (fd < 0 || fstat(fd, &st) != 0 || st.st_uid != getuid() || (st.st_mode & 077)) {
      why(m, "plan directory %.400s is not yours alone (a link, another user's, or open to others)", dir);
      if (fd >= 0)
         close(fd);
      return -2;
   }
   return fd;
}

/* /dev/shm is everyone's: a name someone else took is skipped, and the next
   tried, as many as were planted (each costs a probe on every launch). */
#define SHM_TRIES (1 << 16)

static int plan_dir(struct memo *m)
{
   char path[PATH_MAX];
   const char *set = getenv("CH_RUN_CACHE_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
   struct stat st;
   if (set != NULL && *set != '\0') {
      if (set[0] != '/') {
         why(m, "CH_RUN_CACHE_DIR %.400s is not an absolute path", set);
         return -1;
      }
      snprintf(path, sizeof(path), "%s", set);
   } else if (xdg != NULL && xdg[0] == '/' && lstat(xdg, &st) == 0 && S_ISDIR(st.st_mode)
              && st.st_uid == getuid() && !(st.st_mode & 077)) {
      snprintf(path, sizeof(path), "%s/chtk-plans", xdg);
   } else {
      /* Our own name, not Charliecloud's ch-run* (its join tests want none
         left in /dev/shm), hidden from ls. */
      for (int i = 0; i < SHM_TRIES; i++) {
         if (i == 0)
            snprintf(path, sizeof(path), "/dev/shm/.chtk-plans.%u", (unsigned)getuid());
         else
            snprintf(path, sizeof(path), "/dev/shm/.chtk-plans.%u.%d", (unsigned)getuid(), i);
         int fd = own_dir(m, path);
         if (fd != -2)
            return fd < 0 ? -1 : fd;
      }
      why(m, "no plan directory: %.400s and every name before it belong to others; set CH_RUN_CACHE_DIR", path);
      return -1;
   }
   int fd = own_dir(m, path);
   return fd < 0 ? -1 : fd;
}

/* ---- the key ---- */

void memo_init(struct memo *m, const char *launcher, int argc, char **argv)
{
   memset(m, 0, sizeof(*m));
   m->dirfd = m->lockfd = m->check_fd = -1;
   const char *off = getenv("CH_RUN_NO_CACHE");
   if (off != NULL && *off != '\0' && strcmp(off, "0") != 0) {
      why(m, "%s", "CH_RUN_NO_CACHE is set");
      return;
   }
   const char *v = getenv("CH_RUN_MEMO_VERIFY"), *check = getenv("CH_RUN_MEMO_REPLAY_FD");
   m->replay = v != NULL && strcmp(v, "replay") == 0;
   m->verify = m->replay || (v != NULL && strcmp(v, "1") == 0);
   m->check_fd = -1;
   if (v != NULL && strcmp(v, "replay-check") == 0 && check != NULL) {
      m->check_fd = atoi(check);   /* memo_replay's second launch */
      (void)unsetenv("CH_RUN_MEMO_REPLAY_FD");   /* not the command's */
   }
   m->argc = argc;
   m->argv = argv;
   char cwd[PATH_MAX];
   if (getcwd(cwd, sizeof(cwd)) == NULL) {
      why(m, "%s", "no current directory");
      return;
   }
   struct buf k = { 0 };
   tok(&k, launcher);
   tokf(&k, "%lld", (long long)getuid());
   tokf(&k, "%lld", (long long)getgid());
   tok(&k, cwd);
   tokf(&k, "%lld", argc);
   for (int i = 0; i < argc; i++)
      tok(&k, argv[i]);
   if (k.failed)
      return;
   m->key = k.p;
   m->key_len = k.len;
   snprintf(m->name, sizeof(m->name), "%016llx", (unsigned long long)fnv64(FNV_INIT, k.p, k.len));
   m->dirfd = plan_dir(m);
   m->enabled = m->dirfd >= 0;
}

/* ---- checking dependencies ---- */

static long long stat_field(const struct stat *st, char f)
{
   switch (f) {
   case 'T': return st->st_mode & S_IFMT;
   case 'M': return st->st_mode;
   case 'U': return st->st_uid;
   case 'G': return st->st_gid;
   case 'S': return st->st_size;
   case 'D': return (long long)st->st_dev;
   case 'I': return (long long)st->st_ino;
   case 'N': return st->st_nlink;
   case 'R': return (long long)st->st_rdev;
   case 'm': return st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
   case 'c': return st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
   }
   return LLONG_MIN;
}

/* "!ERRNO" for a failed call, as the front end records it. */
static bool failed_as(const char *want, int rc)
{
   return want[0] == '!' && rc != 0 && atoi(want + 1) == errno;
}

static bool stat_holds(bool follow, const char *path, const char *mask, const char *want)
{
   struct stat st;
   int rc = follow ? stat(path, &st) : lstat(path, &st);
   if (want[0] == '!' || rc != 0)
      return failed_as(want, rc);
   char have[32 * 12];
   size_t off = 0;
   have[0] = '\0';
   for (const char *f = mask; *f && off < sizeof(have); f++) {
      long long v = stat_field(&st, *f);
      if (v == LLONG_MIN)
         return false;
      /* As Node's BigIntStats print them: device and inode numbers unsigned. */
      bool u = *f == 'D' || *f == 'I' || *f == 'R';
      off += u ? snprintf(have + off, sizeof(have) - off, "%s%llu", off ? " " : "", (unsigned long long)v)
               : snprintf(have + off, sizeof(have) - off, "%s%lld", off ? " " : "", v);
   }
   return strcmp(have, want) == 0;
}

/* "=RESULT" or "!ERRNO": a string-valued call. */
static bool string_holds(const char *want, const char *have, int rc)
{
   if (rc != 0 || want[0] == '!')
      return failed_as(want, rc);
   return want[0] == '=' && strcmp(want + 1, have) == 0;
}

static bool link_holds(const char *path, const char *want)
{
   char t[PATH_MAX];
   ssize_t n = readlink(path, t, sizeof(t) - 1);
   if (n >= 0)
      t[n] = '\0';
   return string_holds(want, t, n < 0 ? -1 : 0);
}

static bool real_holds(const char *path, const char *want)
{
   char t[PATH_MAX];
   return string_holds(want, t, realpath(path, t) == NULL ? -1 : 0);
}

static bool data_holds(const char *path, const char *want)
{
   int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
   if (fd < 0 || want[0] == '!') {
      bool ok = failed_as(want, fd < 0 ? -1 : 0);
      if (fd >= 0)
         close(fd);
      return ok;
   }
   static const char hex[] = "0123456789abcdef";
   const char *w = want + 1;
   unsigned char chunk[4096];
   size_t total = 0;
   bool ok = want[0] == '=';
   ssize_t n = -1;
   while (ok && (n = read(fd, chunk, sizeof(chunk))) > 0 && (total += n) <= DATA_MAX)
      for (ssize_t i = 0; ok && i < n; i++, w += 2)
         ok = w[0] == hex[chunk[i] >> 4] && w[1] == hex[chunk[i] & 15];
   close(fd);
   return ok && n == 0 && *w == '\0';
}

static int cmp_names(const void *a, const void *b)
{
   return strcmp(*(char *const *)a + 1, *(char *const *)b + 1);
}

static char dirent_type(int dirfd, const struct dirent *e)
{
   switch (e->d_type) {
   case DT_DIR: return 'd';
   case DT_REG: return 'f';
   case DT_LNK: return 'l';
   case DT_CHR: return 'c';
   case DT_BLK: return 'b';
   case DT_FIFO: return 'p';
   case DT_SOCK: return 's';
   }
   struct stat st;   /* DT_UNKNOWN: as Node does, ask lstat */
   if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      return 'u';
   return S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : S_ISLNK(st.st_mode) ? 'l'
          : S_ISCHR(st.st_mode) ? 'c' : S_ISBLK(st.st_mode) ? 'b' : S_ISFIFO(st.st_mode) ? 'p'
          : S_ISSOCK(st.st_mode) ? 's' : 'u';
}

/* A listing as the front end records it: sorted names, each after its
   type letter when TYPED, joined by "/". */
static bool list_holds(const char *path, bool typed, const char *want)
{
   DIR *d = opendir(path);
   if (d == NULL || want[0] == '!') {
      bool ok = failed_as(want, d == NULL ? -1 : 0);
      if (d != NULL)
         closedir(d);
      return ok;
   }
   char **names = NULL;
   size_t n = 0, cap = 0;
   bool ok = true;
   struct dirent *e;
   while (ok && (e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
         continue;
      if (n == cap) {
         char **more = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(char *));
         if (more == NULL) { ok = false; break; }
         names = more;
      }
      size_t len = strlen(e->d_name);
      if ((names[n] = malloc(len + 2)) == NULL) { ok = false; break; }
      names[n][0] = typed ? dirent_type(dirfd(d), e) : ' ';
      memcpy(names[n] + 1, e->d_name, len + 1);
      n++;
   }
   closedir(d);
   qsort(names, n, sizeof(char *), cmp_names);
   const char *w = want + 1;
   for (size_t i = 0; i < n; i++) {
      const char *s = typed ? names[i] : names[i] + 1;
      size_t len = strlen(s);
      if (ok && (strncmp(w, s, len) != 0 || (w[len] != '/' && w[len] != '\0')
                 || (w[len] == '\0' && i + 1 != n)))
         ok = false;
      else if (ok)
         w += len + (w[len] == '/');
      free(names[i]);
   }
   free(names);
   return ok && *w == '\0' && (n > 0 || want[1] == '\0');
}

static bool env_holds(const char *name, const char *want)
{
   const char *v = getenv(name);
   return v == NULL ? strcmp(want, "!") == 0 : want[0] == '=' && strcmp(want + 1, v) == 0;
}

/* Whether variable NAME passes TEST ("set", "nonempty", "digits") is HOLDS. */
static bool envcond_holds(const char *name, const char *test, bool holds)
{
   const char *v = getenv(name);
   bool now = !strcmp(test, "set") ? v != NULL
              : !strcmp(test, "nonempty") ? v != NULL && *v != '\0'
              : !strcmp(test, "digits") ? v != NULL && *v != '\0' && strspn(v, "0123456789") == strlen(v)
              : !holds;   /* a test we don't know: never holds */
   return now == holds;
}

static int cmp_str(const void *a, const void *b)
{
   return strcmp(*(char *const *)a, *(char *const *)b);
}

/* FNV-1a of the variables' names, sorted, NUL between: as the front end hashes them. */
static bool envnames_hold(const char *want)
{
   size_t n = 0;
   for (char **e = environ; *e; e++)
      n++;
   char **names = calloc(n + 1, sizeof(char *));
   if (names == NULL)
      return false;
   size_t k = 0;
   bool ok = true;
   for (char **e = environ; *e && ok; e++) {
      const char *eq = strchr(*e, '=');
      if (eq == NULL || eq == *e)
         continue;
      ok = (names[k++] = strndup(*e, eq - *e)) != NULL;
   }
   qsort(names, k, sizeof(char *), cmp_str);
   uint64_t h = FNV_INIT;
   for (size_t i = 0; i < k; i++) {
      if (i > 0)
         h = fnv64(h, "", 1);
      h = fnv64(h, names[i], strlen(names[i]));
      free(names[i]);
   }
   free(names);
   char have[17];
   snprintf(have, sizeof(have), "%016llx", (unsigned long long)h);
   return ok && strcmp(have, want) == 0;
}

static bool user_holds(const char *want)
{
   errno = 0;
   struct passwd *pw = getpwuid(getuid());
   return pw == NULL ? strcmp(want, "!") == 0 : want[0] == '=' && strcmp(want + 1, pw->pw_name) == 0;
}

static bool host_holds(const char *want)
{
   struct utsname u;
   return uname(&u) == 0 && strcmp(u.nodename, want) == 0;
}

/* One dependency record at C (its keyword KW already read): does it hold? Sets *KNOWN. */
static bool dep_holds(const char *kw, struct tokens *c, bool *known, const char **what)
{
   const char *a = NULL, *b = NULL, *d = NULL;
   *known = true;
   *what = kw;
#define ARGS1 ((a = tokens_next(c)) != NULL)
#define ARGS2 (ARGS1 && (b = tokens_next(c)) != NULL)
#define ARGS3 (ARGS2 && (d = tokens_next(c)) != NULL)
   if (!strcmp(kw, "stat") || !strcmp(kw, "lstat"))
      return ARGS3 && (*what = a) && stat_holds(kw[0] == 's', a, b, d);
   if (!strcmp(kw, "access"))
      return ARGS3 && (*what = a) && (access(a, atoi(b)) == 0 ? atoi(d) == 0 : atoi(d) == errno);
   if (!strcmp(kw, "link"))
      return ARGS2 && (*what = a) && link_holds(a, b);
   if (!strcmp(kw, "real"))
      return ARGS2 && (*what = a) && real_holds(a, b);
   if (!strcmp(kw, "data"))
      return ARGS2 && (*what = a) && data_holds(a, b);
   if (!strcmp(kw, "list"))
      return ARGS3 && (*what = a) && list_holds(a, b[0] == '1', d);
   if (!strcmp(kw, "env"))
      return ARGS2 && (*what = a) && env_holds(a, b);
   if (!strcmp(kw, "envhas"))
      return ARGS2 && (*what = a) && (getenv(a) != NULL) == (b[0] == '1');
   if (!strcmp(kw, "envcond"))
      return ARGS3 && (*what = a) && envcond_holds(a, b, d[0] == '1');
   if (!strcmp(kw, "envnames"))
      return ARGS1 && envnames_hold(a);
   if (!strcmp(kw, "user"))
      return ARGS1 && user_holds(a);
   if (!strcmp(kw, "host"))
      return ARGS1 && host_holds(a);
   if (!strcmp(kw, "ppid"))
      return ARGS1 && atoll(a) == (long long)getppid();
   *known = false;
   return false;
#undef ARGS1
#undef ARGS2
#undef ARGS3
}

/* ---- a record: check it, build the plan ---- */

struct record {
   const char *edits_from;   /* first token after the dependencies */
   struct tokens body;       /* the whole record */
   const char *plan;         /* "CHPLAN1" ... "end" */
   size_t plan_len;
   int verbose;
   const char *nostore;      /* why it must not be kept, or NULL */
   const char *join_ph;      /* --join's tag in the plan is this placeholder... */
   const char *join_tmpl;    /* ...for this template, ${NAME} from the environment */
   bool incomplete;
};

/* Walk record R: every dependency must hold (unless !CHECK); notes where the plan is. */
static bool record_read(struct memo *m, const char *p, size_t len, struct record *r, bool check)
{
   memset(r, 0, sizeof(*r));
   struct tokens c = { p, p + len };
   const char *t = tokens_next(&c);
   if (t == NULL || strcmp(t, RECORD_MAGIC) != 0) {
      why(m, "%s", "record from a different build");
      return false;
   }
   while ((t = tokens_next(&c)) != NULL) {
      if (!strcmp(t, "plan")) {
         r->plan = c.p;
         r->plan_len = c.end - c.p;
         return true;
      }
      const char *arg;
      if (!strcmp(t, "nostore") || !strcmp(t, "incomplete")) {
         r->incomplete = t[0] == 'i';
         if ((r->nostore = tokens_next(&c)) == NULL)
            break;
         continue;
      }
      if (!strcmp(t, "jointag")) {
         if ((r->join_ph = tokens_next(&c)) == NULL || (r->join_tmpl = tokens_next(&c)) == NULL)
            break;
         continue;
      }
      if (!strcmp(t, "verbose")) {
         if ((arg = tokens_next(&c)) == NULL)
            break;
         r->verbose = atoi(arg);
         continue;
      }
      if (!strcmp(t, "set") || !strcmp(t, "unset") || !strcmp(t, "log")) {
         if (r->edits_from == NULL)
            r->edits_from = t;   /* edits, then log lines, follow the dependencies */
         if (tokens_next(&c) == NULL || (t[0] == 's' && tokens_next(&c) == NULL))
            break;
         continue;
      }
      bool known;
      const char *what;
      bool holds = dep_holds(t, &c, &known, &what);
      if (!known)
         break;
      if (check && !holds) {
         snprintf(m->why, sizeof(m->why), "%s changed: %s", t, what);
         return false;
      }
   }
   why(m, "%s", "corrupt record");
   return false;
}

/* The live environment with the planner's edits replayed (Map semantics:
   a set of a present name replaces it in place, of a new one appends). */
static char **edited_env(const struct record *r)
{
   size_t n = 0, cap = 16;
   for (char **e = environ; *e; e++)
      cap++;
   char **env = malloc(cap * sizeof(char *));
   if (env == NULL)
      return NULL;
   for (char **e = environ; *e; e++)
      env[n++] = *e;
   /* From the first edit, token by token as written: "set K V", "unset K",
      "log LINE", up to "plan". */
   struct tokens c = { r->edits_from ? r->edits_from : r->plan, r->plan };
   for (const char *t = tokens_next(&c); t != NULL && strcmp(t, "plan") != 0; t = tokens_next(&c)) {
      bool set = !strcmp(t, "set");
      if (!strcmp(t, "log")) {
         if (tokens_next(&c) == NULL)
            return NULL;
         continue;
      }
      if (!set && strcmp(t, "unset") != 0)
         return NULL;   /* not what the front end writes here */
      const char *k = tokens_next(&c), *v = set ? tokens_next(&c) : NULL;
      if (k == NULL || (set && v == NULL))
         return NULL;
      size_t kl = strlen(k), i;
      for (i = 0; i < n; i++)
         if (!strncmp(env[i], k, kl) && env[i][kl] == '=')
            break;
      if (!set) {
         if (i < n) {
            memmove(env + i, env + i + 1, (n - i - 1) * sizeof(char *));
            n--;
         }
         continue;
      }
      char *kv = malloc(kl + strlen(v) + 2);
      if (kv == NULL)
         return NULL;
      sprintf(kv, "%s=%s", k, v);
      if (i == n) {
         if (n + 1 >= cap) {
            char **more = realloc(env, (cap *= 2) * sizeof(char *));
            if (more == NULL)
               return NULL;
            env = more;
         }
         n++;
      }
      env[i] = kv;
   }
   env[n] = NULL;
   return env;
}

/* TEMPLATE with each ${NAME} replaced by NAME's value here ("" if unset). */
static void fill_template(struct buf *out, const char *t)
{
   while (*t) {
      const char *open = strstr(t, "${"), *close = open ? strchr(open, '}') : NULL;
      if (open == NULL || close == NULL) {
         put(out, t, strlen(t));
         break;
      }
      put(out, t, open - t);
      char name[256];
      size_t n = close - open - 2;
      if (n < sizeof(name)) {
         memcpy(name, open + 2, n);
         name[n] = '\0';
         const char *v = getenv(name);
         if (v != NULL)
            put(out, v, strlen(v));
      }
      t = close + 1;
   }
   put(out, "", 1);
}

/* The plan a hit runs: the recorded one, --join's tag filled in, its
   environment from ENV. */
static bool build_plan(const struct record *r, char **env, struct buf *out)
{
   /* The plan ends with "end\0": environment entries go just before it. */
   if (r->plan_len < 4 || memcmp(r->plan + r->plan_len - 4, "end", 4) != 0)
      return false;
   struct tokens c = { r->plan, r->plan + r->plan_len - 4 };
   for (const char *t = tokens_next(&c); t != NULL; t = tokens_next(&c))
      if (r->join_ph != NULL && !strcmp(t, r->join_ph))
         fill_template(out, r->join_tmpl);
      else
         tok(out, t);
   for (char **e = env; *e; e++) {
      tok(out, "env");
      tok(out, *e);
   }
   tok(out, "end");
   return !out->failed;
}

static void replay_log(const struct record *r)
{
   struct tokens c = { r->edits_from ? r->edits_from : r->plan, r->plan };
   for (const char *t = tokens_next(&c); t != NULL && strcmp(t, "plan") != 0; t = tokens_next(&c)) {
      const char *arg = tokens_next(&c);
      if (arg == NULL || (!strcmp(t, "set") && tokens_next(&c) == NULL))
         return;
      if (!strcmp(t, "log"))
         say("%s", arg);
   }
}

/* Write all of B to FD. */
static bool write_all(int fd, const struct buf *b)
{
   for (size_t off = 0; off < b->len;) {
      ssize_t w = write(fd, b->p + off, b->len - off);
      if (w < 0 && errno == EINTR)
         continue;
      if (w <= 0)
         return false;
      off += w;
   }
   return true;
}

static int memfd_of(const struct buf *b)
{
   int fd = memfd_create("ch-run-plan", 0);   /* the core reads it: not close-on-exec */
   if (fd >= 0 && !write_all(fd, b)) {
      close(fd);
      return -1;
   }
   return fd;
}

/* ---- entries ---- */

/* Records per key: the same command line in a few environments (a module
   loaded or not; fake nodes sharing one /dev/shm), each checked in turn.
   Slot 0 is KEY, slot I is KEY.I. */
#define SLOTS 4

static void slot_name(const struct memo *m, int i, char *out, size_t n)
{
   if (i == 0)
      snprintf(out, n, "%s", m->name);
   else
      snprintf(out, n, "%s.%d", m->name, i);
}

/* Read entry NAME, if it is a regular file of ours no one else can write;
   else NULL with WHY. */
static char *entry_read(struct memo *m, const char *name, size_t *len, const char **whynot)
{
   int fd = openat(m->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
   if (fd < 0) {
      *whynot = errno == ENOENT ? "no record" : "record unreadable";
      return NULL;
   }
   struct stat st;
   char *p = NULL;
   if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022)
       || st.st_size > ENTRY_MAX || (p = malloc(st.st_size + 1)) == NULL) {
      *whynot = "record not a plain file of yours";
      close(fd);
      return NULL;
   }
   size_t got = 0;
   ssize_t n;
   while (got < (size_t)st.st_size && ((n = read(fd, p + got, st.st_size - got)) > 0 || (n < 0 && errno == EINTR)))
      got += n > 0 ? n : 0;
   close(fd);
   if (got != (size_t)st.st_size) {
      *whynot = "record unreadable";
      free(p);
      return NULL;
   }
   *len = got;
   return p;
}

/* The entry's record, if the entry is whole and is this launch's key's. */
static const char *entry_record(struct memo *m, const char *p, size_t len, size_t *rlen)
{
   struct tokens c = { p, p + len };
   const char *magic = tokens_next(&c), *sum = tokens_next(&c);
   if (magic == NULL || sum == NULL || strcmp(magic, ENTRY_MAGIC) != 0)
      return NULL;
   char have[17];
   snprintf(have, sizeof(have), "%016llx", (unsigned long long)fnv64(FNV_INIT, c.p, c.end - c.p));
   if (strcmp(have, sum) != 0)
      return NULL;
   if ((size_t)(c.end - c.p) < m->key_len || memcmp(c.p, m->key, m->key_len) != 0)
      return NULL;   /* another key with the same hash */
   *rlen = c.end - c.p - m->key_len;
   return c.p + m->key_len;
}

/* Slot NAME: a memfd of its plan if its record holds; else -1, saying why in M->why. */
static int try_slot(struct memo *m, const char *name)
{
   size_t len, rlen;
   const char *whynot = NULL;
   char *p = entry_read(m, name, &len, &whynot);
   if (p == NULL) {
      why(m, "%s", whynot);
      return -1;
   }
   const char *rp = entry_record(m, p, len, &rlen);
   struct record r;
   int fd = -1;
   if (rp == NULL) {
      why(m, "%s", "corrupt record, removed");
      (void)unlinkat(m->dirfd, name, 0);
   } else if (record_read(m, rp, rlen, &r, true)) {
      char **env = edited_env(&r);
      struct buf plan = { 0 };
      if (env != NULL && build_plan(&r, env, &plan) && (fd = memfd_of(&plan)) >= 0) {
         (void)utimensat(m->dirfd, name, NULL, AT_SYMLINK_NOFOLLOW);   /* used: evicted last */
         if (r.verbose >= 1 && !m->quiet)
            say("plan memo: hit (%s)", name);
         if (!m->quiet)
            replay_log(&r);
      } else {
         why(m, "%s", "can't build plan from record");
      }
      free(plan.p);
   }
   free(p);
   return fd;
}

/* The first slot whose record holds; else -1, with why the first record
   there is didn't ("no record" if there is none). */
static int try_hit(struct memo *m)
{
   char first[512] = "no record", name[32];
   for (int i = 0; i < SLOTS; i++) {
      slot_name(m, i, name, sizeof(name));
      int fd = try_slot(m, name);
      if (fd >= 0)
         return fd;
      if (!strcmp(first, "no record") && strcmp(m->why, "no record") != 0)
         snprintf(first, sizeof(first), "%s", m->why);
   }
   snprintf(m->why, sizeof(m->why), "%s", first);
   return -1;
}

/* When a record of this key was last written (0 if none). */
static long long newest_slot(struct memo *m)
{
   long long t = 0;
   char name[32];
   struct stat st;
   for (int i = 0; i < SLOTS; i++) {
      slot_name(m, i, name, sizeof(name));
      if (fstatat(m->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
         t = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec > t
             ? st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec : t;
   }
   return t;
}

static bool lock_take(int fd, bool wait)
{
   struct timespec t0, now, nap = { 0, 2000000 };
   clock_gettime(CLOCK_MONOTONIC, &t0);
   for (;;) {
      if (flock(fd, LOCK_EX | LOCK_NB) == 0)
         return true;
      if (!wait || (errno != EWOULDBLOCK && errno != EINTR))
         return false;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if ((now.tv_sec - t0.tv_sec) * 1000000000LL + (now.tv_nsec - t0.tv_nsec) > LOCK_WAIT_NS)
         return false;
      nanosleep(&nap, NULL);
   }
}

/* Concurrent launches of one key (the ranks of an MPI step on a node):
   one plans while holding KEY.lock, the others wait for it and then hit.
   A waiter that still misses, where the planner kept a record (made for
   other conditions: fake nodes sharing /dev/shm), plans in its turn holding
   the lock; where the planner kept none (a plan that can't be memoized),
   the waiters plan at once, side by side, not one by one. */
static int replay_check(struct memo *m);

int memo_hit(struct memo *m)
{
   if (m->check_fd >= 0)
      return replay_check(m);
   if (!m->enabled || m->verify)
      return -1;
   int fd = try_hit(m);
   if (fd >= 0)
      return fd;
   char lock[32], missed[512];
   snprintf(missed, sizeof(missed), "%s", m->why);
   snprintf(lock, sizeof(lock), "%s.lock", m->name);
   int lfd = openat(m->dirfd, lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
   struct stat st;
   if (lfd < 0 || fstat(lfd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid()) {
      if (lfd >= 0)
         close(lfd);
      return -1;
   }
   for (int round = 0; round < SLOTS; round++) {
      if (lock_take(lfd, false)) {
         m->lockfd = lfd;   /* ours until our record is kept */
         return -1;
      }
      long long before = newest_slot(m);
      if (!lock_take(lfd, true)) {
         why(m, "%.400s (waited for a concurrent launch in vain)", missed);
         break;
      }
      flock(lfd, LOCK_UN);
      if ((fd = try_hit(m)) >= 0) {
         close(lfd);
         return fd;
      }
      if (newest_slot(m) == before) {
         why(m, "%.400s (a concurrent launch kept no record)", missed);
         break;
      }
   }
   close(lfd);
   return -1;
}

static char *read_fd(int fd, size_t *len)
{
   struct stat st;
   if (fstat(fd, &st) != 0 || st.st_size > ENTRY_MAX)
      return NULL;
   char *p = malloc(st.st_size + 1);
   if (p == NULL)
      return NULL;
   ssize_t n = pread(fd, p, st.st_size, 0);
   if (n != st.st_size) {
      free(p);
      return NULL;
   }
   *len = n;
   return p;
}

static int cmp_mtime(const void *a, const void *b)
{
   const struct timespec *x = a, *y = b;
   return x->tv_sec != y->tv_sec ? (x->tv_sec < y->tv_sec ? -1 : 1)
          : x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
}

/* A record's name: KEY (16 hex digits) or KEY.I for slot I. */
static bool is_entry(const char *s)
{
   size_t n = strlen(s);
   return strspn(s, "0123456789abcdef") == 16
          && (n == 16 || (n == 18 && s[16] == '.' && s[17] >= '1' && s[17] < '0' + SLOTS));
}

/* Does key KEY (16 hex digits) have any record? */
static bool key_has_records(struct memo *m, const char *key)
{
   char name[32];
   for (int i = 0; i < SLOTS; i++) {
      if (i == 0)
         snprintf(name, sizeof(name), "%.16s", key);
      else
         snprintf(name, sizeof(name), "%.16s.%d", key, i);
      if (faccessat(m->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
         return true;
   }
   return false;
}

/* Over ENTRIES_MAX records: remove the least recently used quarter. And
   leftovers: temporaries and orphan locks older than a minute. */
#define SCAN_MAX (4 * ENTRIES_MAX)
static void evict(struct memo *m)
{
   int fd = dup(m->dirfd);
   DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
   if (d == NULL) {
      if (fd >= 0)
         close(fd);
      return;
   }
   static struct timespec times[SCAN_MAX];
   size_t n = 0;
   struct dirent *e;
   struct stat st;
   time_t stale = time(NULL) - 60;
   while ((e = readdir(d)) != NULL) {
      if (fstatat(m->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
         continue;
      size_t len = strlen(e->d_name);
      if (is_entry(e->d_name)) {
         if (n < SCAN_MAX)
            times[n++] = st.st_mtim;
         continue;
      }
      /* A writer's temporary it never renamed (killed), or the lock of a
         key that kept no record: gone after a minute. */
      bool orphan_lock = len == 21 && !strcmp(e->d_name + 16, ".lock") && !key_has_records(m, e->d_name);
      if ((orphan_lock || (len > 20 && !strcmp(e->d_name + len - 4, ".tmp"))) && st.st_mtime < stale)
         (void)unlinkat(m->dirfd, e->d_name, 0);
   }
   if (n > ENTRIES_MAX) {
      qsort(times, n, sizeof(times[0]), cmp_mtime);
      struct timespec cut = times[n / 4];
      rewinddir(d);
      while ((e = readdir(d)) != NULL)
         if (is_entry(e->d_name) && fstatat(m->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
             && cmp_mtime(&st.st_mtim, &cut) < 0)
            (void)unlinkat(m->dirfd, e->d_name, 0);   /* its lock goes later, as an orphan */
   }
   closedir(d);
}

/* Write the entry: header, checksum, key, record; atomically. */
static void entry_write(struct memo *m, const char *rec, size_t len)
{
   uint64_t h = fnv64(fnv64(FNV_INIT, m->key, m->key_len), rec, len);
   struct buf b = { 0 };
   tok(&b, ENTRY_MAGIC);
   tokf(&b, "%016llx", (long long)h);
   put(&b, m->key, m->key_len);
   put(&b, rec, len);
   /* Into the first free slot, else the least recently used one. */
   char slot[32], name[32], tmp[64];
   struct stat st;
   long long oldest = LLONG_MAX;
   for (int i = 0; i < SLOTS; i++) {
      slot_name(m, i, name, sizeof(name));
      if (fstatat(m->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
         snprintf(slot, sizeof(slot), "%s", name);
         break;
      }
      long long t = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
      if (t < oldest) {
         oldest = t;
         snprintf(slot, sizeof(slot), "%s", name);
      }
   }
   snprintf(tmp, sizeof(tmp), "%s.%d.tmp", m->name, (int)getpid());
   int fd = b.failed ? -1 : openat(m->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
   bool ok = fd >= 0 && write_all(fd, &b);
   if (fd >= 0 && close(fd) != 0)
      ok = false;
   if (ok && renameat(m->dirfd, tmp, m->dirfd, slot) == 0) {
      m->stored = true;
      evict(m);
   }
   else if (fd >= 0)
      (void)unlinkat(m->dirfd, tmp, 0);
   free(b.p);
}

/* Split plan P into its environment entries (sorted) and the rest. */
static bool plan_split(const char *p, size_t len, struct buf *rest, char ***env, size_t *n)
{
   struct tokens c = { p, p + len };
   size_t cap = 64;
   *n = 0;
   *env = malloc(cap * sizeof(char *));
   for (const char *t = tokens_next(&c); t != NULL && *env != NULL; t = tokens_next(&c)) {
      if (strcmp(t, "env") != 0) {
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
static int verify(struct memo *m, const struct record *r, const char *rec, size_t len, int planfd)
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

int memo_store(struct memo *m, int memofd, int planfd, int tries)
{
   size_t len;
   char *rec = m->enabled ? read_fd(memofd, &len) : NULL;
   struct record r;
   if (rec != NULL && len > 0 && record_read(m, rec, len, &r, false)) {
      m->verbose = r.verbose;
      /* Every dependency must hold now, right after planning: if one
         doesn't, recorder and checker disagree (a bug), or the system
         changed meanwhile; either way the record isn't kept. */
      struct record checked;
      bool holds = record_read(m, rec, len, &checked, true);
      if (m->verify && r.nostore == NULL && !holds) {
         /* Another process may have changed an input while we planned (a
            real launch then misses next time and plans anew): plan again,
            a few times. A recorder that misses something, or records it
            other than the checker reads it, fails every time. */
         if (tries < MEMO_VERIFY_TRIES) {
            if (r.verbose >= 1)
               say("plan memo verify: %s right after planning; planning again", m->why);
            free(rec);
            return -1;
         }
         FATAL_NOERR("plan memo verify: %s right after planning (%d plans in a row)", m->why, tries);
      }
      if (holds && r.nostore == NULL)
         entry_write(m, rec, len);
      if (m->verify && (holds || r.nostore != NULL))
         planfd = verify(m, &r, rec, len, planfd);
   }
   free(rec);
   if (m->lockfd >= 0) {
      close(m->lockfd);   /* peers waiting on it now find our record */
      m->lockfd = -1;
   }
   return planfd;
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
   probing: addon/core/main.c): what the command would see, as text, and
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
      skip = t == NULL || !strcmp(t, "join") || !strcmp(t, "join-pid") || !strcmp(t, "squash");
      if (t != NULL && !strcmp(t, "arg"))
         break;   /* the command line follows: not keywords */
   }
   free(p);
   return skip;
}

/* The second launch (CH_RUN_MEMO_VERIFY=replay-check): a hit, whose core
   reports to M->check_fd instead of running the command; or "miss" there. */
static int replay_check(struct memo *m)
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
          || setenv("CH_RUN_MEMO_VERIFY", "replay-check", 1) != 0 || setenv("CH_RUN_MEMO_REPLAY_FD", fd, 1) != 0)
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
      /* Does the record hold for us now? If not, another process changed
         an input since we kept it (a later launch would rightly miss):
         nothing to compare. If it does, the second launch missed for a
         reason of its own: a bug. */
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

void memo_close(struct memo *m)
{
   if (m->lockfd >= 0)
      close(m->lockfd);
   if (m->dirfd >= 0)
      close(m->dirfd);
   m->lockfd = m->dirfd = -1;
}

/* Memoized plans: the store. Its directory, a launch's key, the entries
   (records kept per key, in slots), eviction, and the lock that concurrent
   launches of one key share.

   The directory: $CH_RUN_CACHE_DIR, else $XDG_RUNTIME_DIR/chtk-plans when
   that is the user's own 0700 directory, else /dev/shm/.chtk-plans.UID (or,
   if someone else took that name, .chtk-plans.UID.1, .2, ...: the first that
   is ours). /dev/shm is shared: the last component is opened O_NOFOLLOW and
   the directory used only if it is ours and closed to others; then entries are
   named through its descriptor, opened O_NOFOLLOW, and used only if they
   are regular files of ours no one else can write. A record can't make the
   core do what the planner wouldn't: the core checks the plan's form as it
   does a fresh one, and the plan came from the planner. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define ENTRY_MAGIC  "CHMEMOENT1"
#define ENTRIES_MAX  256          /* records per user; the least recently used go first */
#define LOCK_WAIT_NS (10LL * 1000000000LL)

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
   const char *v = getenv(LAUNCHER_MEMO_VERIFY), *check = getenv("CH_RUN_MEMO_REPLAY_FD");
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
   /* The first "--" and a command name after it: the command's arguments
      (what follows the name) are left out of the key, so that a launch
      that differs from a planned one only in them can find its plan. The
      front end says whether its plan holds for any arguments there (most
      do: the planner passes them through) or only for these (the "--" was
      an option's value, or the command began before it), and the record
      says which (record.c). */
   int keep = argc;
   for (int i = 1; i + 1 < argc; i++)
      if (!strcmp(argv[i], "--")) {
         keep = i + 2;
         m->tail = argv + keep;
         m->tail_n = argc - keep;
         tok(&k, RECORD_ARGSLOT);
         break;
      }
   tokf(&k, "%lld", keep);
   for (int i = 0; i < keep; i++)
      tok(&k, argv[i]);
   if (k.failed)
      return;
   m->key = k.p;
   m->key_len = k.len;
   snprintf(m->name, sizeof(m->name), "%016llx", (unsigned long long)fnv64(FNV_INIT, k.p, k.len));
   m->dirfd = plan_dir(m);
   m->enabled = m->dirfd >= 0;
}

/* ---- entries ---- */

void slot_name(const struct memo *m, int i, char *out, size_t n)
{
   if (i == 0)
      snprintf(out, n, "%s", m->name);
   else
      snprintf(out, n, "%s.%d", m->name, i);
}

/* Read entry NAME, if it is a regular file of ours no one else can write;
   else NULL with WHY. */
char *entry_read(struct memo *m, const char *name, size_t *len, const char **whynot)
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
const char *entry_record(struct memo *m, const char *p, size_t len, size_t *rlen)
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

/* ---- the lock ---- */

/* When a record of this key was last written (0 if none). */
long long newest_slot(struct memo *m)
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

bool lock_take(int fd, bool wait)
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

/* ---- writing an entry, and eviction ---- */

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

/* Is NAME still there, last changed before BEFORE? (A leftover goes only then.) */
static bool stale(struct memo *m, const char *name, time_t before)
{
   struct stat st;
   return fstatat(m->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mtime < before;
}

static int cmp_key(const void *a, const void *b)
{
   return memcmp(a, b, 16);
}

/* At ENTRIES_MAX records or more: remove the least recently used quarter
   (the store that follows adds one). And leftovers: temporaries and orphan
   locks older than a minute.
   Run on every miss, so the usual case costs one read of the directory and
   no call per name: records are counted, and a lock is an orphan candidate,
   by name alone. Only candidates (rare) are looked at again, and only an
   eviction stats the records (measured: a stat and an access call for each
   of ~450 names cost ~1.5 ms, and run after the plan it was still 0.5 to
   1 ms of a first launch: docs/design.md, "Second round"). */
#define SCAN_MAX (4 * ENTRIES_MAX)
void memo_tidy(struct memo *m)
{
   if (!m->enabled)
      return;
   int fd = dup(m->dirfd);
   DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
   if (d == NULL) {
      if (fd >= 0)
         close(fd);
      return;
   }
   static char keys[SCAN_MAX][16];   /* the keys that have records, sorted */
   size_t n = 0, nkeys = 0;
   struct dirent *e;
   for (; (e = readdir(d)) != NULL; )
      if (is_entry(e->d_name)) {
         n++;
         if (nkeys < SCAN_MAX)
            memcpy(keys[nkeys++], e->d_name, 16);
      }
   qsort(keys, nkeys, sizeof(keys[0]), cmp_key);
   time_t before = time(NULL) - 60;
   rewinddir(d);
   while ((e = readdir(d)) != NULL) {
      size_t len = strlen(e->d_name);
      /* A writer's temporary it never renamed (killed), or the lock of a
         key that kept no record: gone after a minute. A lock is looked up
         again before it goes (a record may have come since the read). */
      bool lock = len == 21 && !strcmp(e->d_name + 16, ".lock") && strspn(e->d_name, "0123456789abcdef") == 16;
      if (lock && !memcmp(e->d_name, m->name, 16))
         continue;   /* ours, held while we plan */
      if (lock && nkeys < SCAN_MAX && bsearch(e->d_name, keys, nkeys, sizeof(keys[0]), cmp_key) != NULL)
         continue;
      if (lock ? stale(m, e->d_name, before) && !key_has_records(m, e->d_name)
               : len > 20 && !strcmp(e->d_name + len - 4, ".tmp") && stale(m, e->d_name, before))
         (void)unlinkat(m->dirfd, e->d_name, 0);
   }
   if (n >= ENTRIES_MAX) {
      static struct timespec times[SCAN_MAX];
      struct stat st;
      size_t t = 0;
      rewinddir(d);
      while ((e = readdir(d)) != NULL && t < SCAN_MAX)
         if (is_entry(e->d_name) && fstatat(m->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            times[t++] = st.st_mtim;
      qsort(times, t, sizeof(times[0]), cmp_mtime);
      struct timespec cut = times[t / 4];
      rewinddir(d);
      while ((e = readdir(d)) != NULL)
         if (is_entry(e->d_name) && fstatat(m->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
             && cmp_mtime(&st.st_mtim, &cut) < 0)
            (void)unlinkat(m->dirfd, e->d_name, 0);   /* its lock goes later, as an orphan */
   }
   closedir(d);
}

/* Write the entry: header, checksum, key, record; atomically. */
void entry_write(struct memo *m, const char *rec, size_t len)
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
   bool ok = fd >= 0 && write_all(fd, &b) && fstat(fd, &st) == 0;
   if (fd >= 0 && close(fd) != 0)
      ok = false;
   if (ok && renameat(m->dirfd, tmp, m->dirfd, slot) == 0) {
      m->stored = true;
      /* Which entry is ours, for replay mode: a concurrent launch may replace it (verify.c). */
      snprintf(m->stored_slot, sizeof(m->stored_slot), "%s", slot);
      m->stored_ino = (unsigned long long)st.st_ino;
   } else if (fd >= 0)
      (void)unlinkat(m->dirfd, tmp, 0);
   free(b.p);
}

void memo_close(struct memo *m)
{
   if (m->lockfd >= 0)
      close(m->lockfd);
   if (m->dirfd >= 0)
      close(m->dirfd);
   m->lockfd = m->dirfd = -1;
}

/* Memoized plans: checking a record's dependencies against the system as
   it is now, each as the front end recorded it (lib/run/memo.ts). */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

#define DATA_MAX     (1 << 20)

static long long stat_field(const struct stat *st, char f)
{
   switch (f) {
   case STAT_FIELD_TYPE_C: return st->st_mode & S_IFMT;
   case STAT_FIELD_MODE_C: return st->st_mode;
   case STAT_FIELD_UID_C: return st->st_uid;
   case STAT_FIELD_GID_C: return st->st_gid;
   case STAT_FIELD_SIZE_C: return st->st_size;
   case STAT_FIELD_DEV_C: return (long long)st->st_dev;
   case STAT_FIELD_INO_C: return (long long)st->st_ino;
   case STAT_FIELD_NLINK_C: return st->st_nlink;
   case STAT_FIELD_RDEV_C: return (long long)st->st_rdev;
   case STAT_FIELD_MTIME_C: return st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
   case STAT_FIELD_CTIME_C: return st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
   }
   return LLONG_MIN;
}

/* "!ERRNO" for a failed call, as the front end records it. */
static bool failed_as(const char *want, int rc)
{
   return want[0] == RECORD_FAILED_C && rc != 0 && atoi(want + 1) == errno;
}

static bool stat_holds(bool follow, const char *path, const char *mask, const char *want)
{
   struct stat st;
   int rc = follow ? stat(path, &st) : lstat(path, &st);
   if (want[0] == RECORD_FAILED_C || rc != 0)
      return failed_as(want, rc);
   char have[32 * 12];
   size_t off = 0;
   have[0] = '\0';
   for (const char *f = mask; *f && off < sizeof(have); f++) {
      long long v = stat_field(&st, *f);
      if (v == LLONG_MIN)
         return false;
      /* As Node's BigIntStats print them: device and inode numbers unsigned. */
      bool u = *f == STAT_FIELD_DEV_C || *f == STAT_FIELD_INO_C || *f == STAT_FIELD_RDEV_C;
      const char *sep = off ? RECORD_FIELD_SEP : "";
      off += u ? snprintf(have + off, sizeof(have) - off, "%s%llu", sep, (unsigned long long)v)
               : snprintf(have + off, sizeof(have) - off, "%s%lld", sep, v);
   }
   return strcmp(have, want) == 0;
}

/* "=RESULT" or "!ERRNO": a string-valued call. */
static bool string_holds(const char *want, const char *have, int rc)
{
   if (rc != 0 || want[0] == RECORD_FAILED_C)
      return failed_as(want, rc);
   return want[0] == RECORD_VALUE_C && strcmp(want + 1, have) == 0;
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
   if (fd < 0 || want[0] == RECORD_FAILED_C) {
      bool ok = failed_as(want, fd < 0 ? -1 : 0);
      if (fd >= 0)
         close(fd);
      return ok;
   }
   static const char hex[] = "0123456789abcdef";
   const char *w = want + 1;
   unsigned char chunk[4096];
   size_t total = 0;
   bool ok = want[0] == RECORD_VALUE_C;
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
   case DT_DIR: return FILE_TYPE_DIR_C;
   case DT_REG: return FILE_TYPE_FILE_C;
   case DT_LNK: return FILE_TYPE_SYMLINK_C;
   case DT_CHR: return FILE_TYPE_CHAR_C;
   case DT_BLK: return FILE_TYPE_BLOCK_C;
   case DT_FIFO: return FILE_TYPE_FIFO_C;
   case DT_SOCK: return FILE_TYPE_SOCKET_C;
   }
   struct stat st;   /* DT_UNKNOWN: as Node does, ask lstat */
   if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      return FILE_TYPE_UNKNOWN_C;
   return S_ISDIR(st.st_mode) ? FILE_TYPE_DIR_C : S_ISREG(st.st_mode) ? FILE_TYPE_FILE_C
          : S_ISLNK(st.st_mode) ? FILE_TYPE_SYMLINK_C : S_ISCHR(st.st_mode) ? FILE_TYPE_CHAR_C
          : S_ISBLK(st.st_mode) ? FILE_TYPE_BLOCK_C : S_ISFIFO(st.st_mode) ? FILE_TYPE_FIFO_C
          : S_ISSOCK(st.st_mode) ? FILE_TYPE_SOCKET_C : FILE_TYPE_UNKNOWN_C;
}

/* A listing as the front end records it: sorted names, each after its
   type letter when TYPED, joined by RECORD_LIST_SEP. */
static bool list_holds(const char *path, bool typed, const char *want)
{
   DIR *d = opendir(path);
   if (d == NULL || want[0] == RECORD_FAILED_C) {
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
      if (ok && (strncmp(w, s, len) != 0 || (w[len] != RECORD_LIST_SEP_C && w[len] != '\0')
                 || (w[len] == '\0' && i + 1 != n)))
         ok = false;
      else if (ok)
         w += len + (w[len] == RECORD_LIST_SEP_C);
      free(names[i]);
   }
   free(names);
   return ok && *w == '\0' && (n > 0 || want[1] == '\0');
}

static bool env_holds(const char *name, const char *want)
{
   const char *v = getenv(name);
   return v == NULL ? strcmp(want, RECORD_FAILED) == 0 : want[0] == RECORD_VALUE_C && strcmp(want + 1, v) == 0;
}

/* Whether variable NAME passes TEST (ENV_TESTS_*) is HOLDS. */
static bool envcond_holds(const char *name, const char *test, bool holds)
{
   const char *v = getenv(name);
   bool now = !strcmp(test, ENV_TESTS_SET) ? v != NULL
              : !strcmp(test, ENV_TESTS_NONEMPTY) ? v != NULL && *v != '\0'
              : !strcmp(test, ENV_TESTS_DIGITS) ? v != NULL && *v != '\0' && strspn(v, "0123456789") == strlen(v)
              : !holds;   /* a test we don't know: never holds */
   return now == holds;
}

/* FNV-1a of the variables' names, sorted, RECORD_NAMES_SEP between: as the front end hashes them. */
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
         h = fnv64(h, RECORD_NAMES_SEP, 1);
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
   return pw == NULL ? strcmp(want, RECORD_FAILED) == 0
                     : want[0] == RECORD_VALUE_C && strcmp(want + 1, pw->pw_name) == 0;
}

static bool host_holds(const char *want)
{
   struct utsname u;
   return uname(&u) == 0 && strcmp(u.nodename, want) == 0;
}

/* One dependency record at C (its keyword KW already read): does it hold? Sets *KNOWN. */
bool dep_holds(const char *kw, struct tokens *c, bool *known, const char **what)
{
   const char *a = NULL, *b = NULL, *d = NULL;
   *known = true;
   *what = kw;
#define ARGS1 ((a = tokens_next(c)) != NULL)
#define ARGS2 (ARGS1 && (b = tokens_next(c)) != NULL)
#define ARGS3 (ARGS2 && (d = tokens_next(c)) != NULL)
   if (!strcmp(kw, RECORD_STAT) || !strcmp(kw, RECORD_LSTAT))
      return ARGS3 && (*what = a) && stat_holds(!strcmp(kw, RECORD_STAT), a, b, d);
   if (!strcmp(kw, RECORD_ACCESS))
      return ARGS3 && (*what = a) && (access(a, atoi(b)) == 0 ? atoi(d) == 0 : atoi(d) == errno);
   if (!strcmp(kw, RECORD_LINK))
      return ARGS2 && (*what = a) && link_holds(a, b);
   if (!strcmp(kw, RECORD_REAL))
      return ARGS2 && (*what = a) && real_holds(a, b);
   if (!strcmp(kw, RECORD_DATA))
      return ARGS2 && (*what = a) && data_holds(a, b);
   if (!strcmp(kw, RECORD_LIST))
      return ARGS3 && (*what = a) && list_holds(a, b[0] == RECORD_YES_C, d);
   if (!strcmp(kw, RECORD_ENV))
      return ARGS2 && (*what = a) && env_holds(a, b);
   if (!strcmp(kw, RECORD_ENVHAS))
      return ARGS2 && (*what = a) && (getenv(a) != NULL) == (b[0] == RECORD_YES_C);
   if (!strcmp(kw, RECORD_ENVCOND))
      return ARGS3 && (*what = a) && envcond_holds(a, b, d[0] == RECORD_YES_C);
   if (!strcmp(kw, RECORD_ENVNAMES))
      return ARGS1 && envnames_hold(a);
   if (!strcmp(kw, RECORD_USER))
      return ARGS1 && user_holds(a);
   if (!strcmp(kw, RECORD_HOST))
      return ARGS1 && host_holds(a);
   if (!strcmp(kw, RECORD_PPID))
      return ARGS1 && atoll(a) == (long long)getppid();
   *known = false;
   return false;
#undef ARGS1
#undef ARGS2
#undef ARGS3
}

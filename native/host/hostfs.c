/* ch_host.node: the reads ch-run's front end makes most, made here rather
   than through node:fs and node:os (lib/util/host-fs.ts wraps them).

   Why an addon: on a launch that plans (the first launch of each command
   line), Node compiles each of its own fs and os functions from source the
   first time it is called. Measured on the front end: lstatSync's first
   call 160-380 us, fstatSync's (bigint) 90-250, readSync's 200-300, and
   requiring node:os 250-450 before userInfo's first call; 1.5-2 ms of a
   launch that cost node -e 0 + 7 (docs/design.md, "Second round").
   These functions are C from the first call: dlopen and the first call cost
   ~0.15 ms together, and each later call ~2 us against ~9.

   Results are raw: a stat is a Float64Array (or, exact, a BigInt64Array)
   of Node's own field order, a failure the negative errno (libuv's code), so that host-fs.ts makes the
   same Stats and the same errors node:fs makes. Nothing here decides
   anything; the only writes are to descriptors the caller holds (ch-run's
   front end handing its plan to the launcher). */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

/* A stat as Node orders its fields (lib/internal/fs/utils.js): dev, mode,
   nlink, uid, gid, rdev, blksize, ino, size, blocks, then seconds and
   nanoseconds of atime, mtime, ctime and birthtime. */
enum { F_DEV, F_MODE, F_NLINK, F_UID, F_GID, F_RDEV, F_BLKSIZE, F_INO, F_SIZE, F_BLOCKS,
       F_ATIME, F_ATIME_NS, F_MTIME, F_MTIME_NS, F_CTIME, F_CTIME_NS, F_BTIME, F_BTIME_NS, FIELDS };

#define CHECK(call) do { if ((call) != napi_ok) return NULL; } while (0)

static napi_value number(napi_env env, double v)
{
   napi_value r;
   CHECK(napi_create_double(env, v, &r));
   return r;
}

static napi_value failed(napi_env env, int err)
{
   return number(env, -err);
}

/* Argument I as a path: false (and nothing thrown) if it isn't a string or
   doesn't fit; the wrapper gives such paths to node:fs. */
static bool path_arg(napi_env env, napi_value *argv, size_t argc, size_t i, char *out, size_t n)
{
   size_t len;
   napi_valuetype t;
   if (i >= argc || napi_typeof(env, argv[i], &t) != napi_ok || t != napi_string
       || napi_get_value_string_utf8(env, argv[i], out, n, &len) != napi_ok)
      return false;
   return len < n - 1 && strlen(out) == len;   /* not cut short, no NUL inside */
}

static bool bool_arg(napi_env env, napi_value *argv, size_t argc, size_t i)
{
   bool b = false;
   return i < argc && napi_get_value_bool(env, argv[i], &b) == napi_ok && b;
}

static int int_arg(napi_env env, napi_value *argv, size_t argc, size_t i, int dflt)
{
   int32_t v;
   return i < argc && napi_get_value_int32(env, argv[i], &v) == napi_ok ? v : dflt;
}

#define ARGS(n) \
   size_t argc = (n); \
   napi_value argv[(n) > 0 ? (n) : 1]; \
   CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL))

/* statx as libuv makes it (birthtime included), else fstatat where statx is
   missing or refused (old kernels, seccomp filters). DIRFD and PATH as for
   fstatat; FLAGS: AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH. */
static int stat_fields(int dirfd, const char *path, int flags, int64_t *f)
{
   struct statx x;
   if (statx(dirfd, path, flags | AT_STATX_SYNC_AS_STAT, STATX_BASIC_STATS | STATX_BTIME, &x) == 0) {
      f[F_DEV] = (int64_t)makedev(x.stx_dev_major, x.stx_dev_minor);
      f[F_MODE] = x.stx_mode;
      f[F_NLINK] = x.stx_nlink;
      f[F_UID] = x.stx_uid;
      f[F_GID] = x.stx_gid;
      f[F_RDEV] = (int64_t)makedev(x.stx_rdev_major, x.stx_rdev_minor);
      f[F_BLKSIZE] = x.stx_blksize;
      f[F_INO] = (int64_t)x.stx_ino;
      f[F_SIZE] = (int64_t)x.stx_size;
      f[F_BLOCKS] = (int64_t)x.stx_blocks;
      f[F_ATIME] = x.stx_atime.tv_sec;
      f[F_ATIME_NS] = x.stx_atime.tv_nsec;
      f[F_MTIME] = x.stx_mtime.tv_sec;
      f[F_MTIME_NS] = x.stx_mtime.tv_nsec;
      f[F_CTIME] = x.stx_ctime.tv_sec;
      f[F_CTIME_NS] = x.stx_ctime.tv_nsec;
      f[F_BTIME] = x.stx_btime.tv_sec;
      f[F_BTIME_NS] = x.stx_btime.tv_nsec;
      return 0;
   }
   if (errno != ENOSYS && errno != EPERM && errno != EOPNOTSUPP && errno != EINVAL)
      return errno;
   struct stat st;
   if (fstatat(dirfd, path, &st, flags) != 0)
      return errno;
   /* No birthtime here: libuv gives ctime for it (so do we). */
   int64_t v[FIELDS] = { (int64_t)st.st_dev, st.st_mode, (int64_t)st.st_nlink, st.st_uid, st.st_gid,
                         (int64_t)st.st_rdev, st.st_blksize, (int64_t)st.st_ino, st.st_size, st.st_blocks,
                         st.st_atim.tv_sec, st.st_atim.tv_nsec, st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                         st.st_ctim.tv_sec, st.st_ctim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec };
   memcpy(f, v, sizeof(v));
   return 0;
}

/* The fields as a BigInt64Array (EXACT), or as the doubles node:fs's
   Stats hold (a Float64Array: what Node's own stat gives JavaScript, and
   no BigInt to convert); NULL if it can't be made. */
static napi_value fields_array(napi_env env, const int64_t *f, bool exact)
{
   void *data;
   napi_value ab, arr;
   size_t size = exact ? sizeof(int64_t) : sizeof(double);
   CHECK(napi_create_arraybuffer(env, FIELDS * size, &data, &ab));
   if (exact)
      memcpy(data, f, FIELDS * size);
   else
      for (int i = 0; i < FIELDS; i++)
         /* As libuv's uint64 fields become Node's doubles. */
         ((double *)data)[i] = i == F_ATIME_NS || i == F_MTIME_NS || i == F_CTIME_NS || i == F_BTIME_NS
                               || i == F_ATIME || i == F_MTIME || i == F_CTIME || i == F_BTIME
                               ? (double)f[i] : (double)(uint64_t)f[i];
   CHECK(napi_create_typedarray(env, exact ? napi_bigint64_array : napi_float64_array, FIELDS, ab, 0, &arr));
   return arr;
}

/* stat(path, follow, exact): the fields, or -errno. */
static napi_value js_stat(napi_env env, napi_callback_info info)
{
   ARGS(3);
   char p[PATH_MAX + 1];
   if (!path_arg(env, argv, argc, 0, p, sizeof(p)))
      return NULL;
   int64_t f[FIELDS];
   int err = stat_fields(AT_FDCWD, p, bool_arg(env, argv, argc, 1) ? 0 : AT_SYMLINK_NOFOLLOW, f);
   return err ? failed(env, err) : fields_array(env, f, bool_arg(env, argv, argc, 2));
}

/* fstat(fd, exact): the fields, or -errno. */
static napi_value js_fstat(napi_env env, napi_callback_info info)
{
   ARGS(2);
   int fd = int_arg(env, argv, argc, 0, -1);
   int64_t f[FIELDS];
   int err = fd < 0 ? EBADF : stat_fields(fd, "", AT_EMPTY_PATH, f);
   return err ? failed(env, err) : fields_array(env, f, bool_arg(env, argv, argc, 1));
}

/* access(path, mode): 0, or -errno. As access(2): links followed, real ids. */
static napi_value js_access(napi_env env, napi_callback_info info)
{
   ARGS(2);
   char p[PATH_MAX + 1];
   if (!path_arg(env, argv, argc, 0, p, sizeof(p)))
      return NULL;
   return access(p, int_arg(env, argv, argc, 1, F_OK)) == 0 ? number(env, 0) : failed(env, errno);
}

/* readlink(path): the target, or -errno. */
static napi_value js_readlink(napi_env env, napi_callback_info info)
{
   ARGS(1);
   char p[PATH_MAX + 1], target[PATH_MAX + 1];
   if (!path_arg(env, argv, argc, 0, p, sizeof(p)))
      return NULL;
   ssize_t n = readlink(p, target, sizeof(target));
   if (n < 0)
      return failed(env, errno);
   if ((size_t)n >= sizeof(target))
      return failed(env, ENAMETOOLONG);
   napi_value r;
   CHECK(napi_create_string_utf8(env, target, n, &r));
   return r;
}

static void free_data(napi_env env, void *data, void *hint)
{
   free(data);
}

/* All of FD from its start (a size of 0 may still have content: /proc),
   into *OUT (malloc'd, *LEN bytes); 0 or the errno. */
static int read_all(int fd, size_t size_hint, char **out, size_t *len)
{
   size_t cap = size_hint > 0 ? size_hint + 1 : 8192, got = 0;
   char *p = malloc(cap);
   if (p == NULL)
      return ENOMEM;
   for (;;) {
      if (got == cap) {
         char *q = cap > SIZE_MAX / 2 ? NULL : realloc(p, cap * 2);
         if (q == NULL) {
            free(p);
            return ENOMEM;
         }
         p = q;
         cap *= 2;
      }
      ssize_t n = read(fd, p + got, cap - got);
      if (n < 0 && errno == EINTR)
         continue;
      if (n < 0) {
         int err = errno;
         free(p);
         return err;
      }
      if (n == 0)
         break;
      got += n;
   }
   *out = p;
   *len = got;
   return 0;
}

/* readFile(path, utf8): what readFileSync(path) reads, and the identity of
   what was opened, through one descriptor:
   [0, fields, content] (a string if UTF8, else a Buffer), or
   [-errno, syscall] where open failed, or [-errno, syscall, fields] where
   it opened something it couldn't read (a directory: EISDIR, "read"). */
static napi_value js_read_file(napi_env env, napi_callback_info info)
{
   ARGS(2);
   char p[PATH_MAX + 1];
   if (!path_arg(env, argv, argc, 0, p, sizeof(p)))
      return NULL;
   bool utf8 = bool_arg(env, argv, argc, 1);
   napi_value r, v;
   CHECK(napi_create_array(env, &r));
   int fd = open(p, O_RDONLY | O_CLOEXEC);
   int64_t f[FIELDS];
   int err = fd < 0 ? errno : stat_fields(fd, "", AT_EMPTY_PATH, f);
   const char *syscall = fd < 0 ? "open" : "fstat";
   char *data = NULL;
   size_t len = 0;
   if (err == 0) {
      err = read_all(fd, f[F_SIZE] > 0 && f[F_SIZE] < (1LL << 40) ? (size_t)f[F_SIZE] : 0, &data, &len);
      syscall = "read";
   }
   if (fd >= 0)
      close(fd);
   CHECK(napi_set_element(env, r, 0, number(env, -err)));
   if (err != 0) {
      CHECK(napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v));
      CHECK(napi_set_element(env, r, 1, v));
      if (strcmp(syscall, "read") == 0)
         CHECK(napi_set_element(env, r, 2, fields_array(env, f, true)));
      return r;
   }
   CHECK(napi_set_element(env, r, 1, fields_array(env, f, true)));
   if (utf8) {
      napi_status s = napi_create_string_utf8(env, data, len, &v);
      free(data);
      CHECK(s);
   } else if (napi_create_external_buffer(env, len, data, free_data, NULL, &v) != napi_ok) {
      free(data);
      return NULL;
   }
   CHECK(napi_set_element(env, r, 2, v));
   return r;
}

/* writeAll(fd, buffer): write all of BUFFER (a Buffer or typed array) to
   FD, as many writes as it takes: its length, or -errno. */
static napi_value js_write_all(napi_env env, napi_callback_info info)
{
   ARGS(2);
   int fd = int_arg(env, argv, argc, 0, -1);
   void *data;
   size_t len, done = 0;
   bool is_buffer = false;
   if (argc < 2 || napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer
       || napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok)
      return NULL;
   while (done < len) {
      ssize_t n = write(fd, (char *)data + done, len - done);
      if (n < 0 && errno == EINTR)
         continue;
      if (n < 0)
         return failed(env, errno);
      done += n;
   }
   return number(env, (double)done);
}

/* close(fd): 0, or -errno. */
static napi_value js_close(napi_env env, napi_callback_info info)
{
   ARGS(1);
   int fd = int_arg(env, argv, argc, 0, -1);
   return close(fd) == 0 ? number(env, 0) : failed(env, errno);
}

/* detach(parent): ch-run's front end, its plan handed over, records it while
   the container starts (lib/run/main.ts, native/launcher/memo/later.c): it
   no longer dies with its waiter, which the launcher kills, and no longer
   holds the caller's stdio (a shell's $(...) would wait for it). 0, or
   -errno; -ESRCH if our parent is no longer PARENT (ch-run went: no record
   then). */
static napi_value js_detach(napi_env env, napi_callback_info info)
{
   ARGS(1);
   int parent = int_arg(env, argv, argc, 0, -1);
   if (prctl(PR_SET_PDEATHSIG, 0) != 0)
      return failed(env, errno);
   if (getppid() != parent)
      return failed(env, ESRCH);
   int null = open("/dev/null", O_RDWR | O_CLOEXEC);
   if (null < 0)
      return failed(env, errno);
   for (int fd = 0; fd <= 2; fd++)
      if (dup2(null, fd) < 0) {
         int e = errno;
         close(null);
         return failed(env, e);
      }
   close(null);
   return number(env, 0);
}

/* user(): the effective user's passwd entry, as libuv's uv_os_get_passwd
   reads it (os.userInfo): [uid, gid, name, home, shell], or -errno
   (ENOENT: no entry). */
static napi_value js_user(napi_env env, napi_callback_info info)
{
   uid_t uid = geteuid();
   struct passwd pw, *found = NULL;
   long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
   size_t n = hint > 0 ? (size_t)hint : 4096;
   char *buf = NULL;
   int err;
   for (;;) {
      free(buf);
      if ((buf = malloc(n)) == NULL)
         return failed(env, ENOMEM);
      err = getpwuid_r(uid, &pw, buf, n, &found);
      if (err != ERANGE || n > (1 << 20))
         break;
      n *= 2;
   }
   if (err != 0 || found == NULL) {
      free(buf);
      return failed(env, err != 0 ? err : ENOENT);
   }
   napi_value r, v;
   napi_status s = napi_create_array_with_length(env, 5, &r);
   const char *text[3] = { pw.pw_name, pw.pw_dir, pw.pw_shell };
   if (s == napi_ok && (s = napi_set_element(env, r, 0, number(env, pw.pw_uid))) == napi_ok)
      s = napi_set_element(env, r, 1, number(env, pw.pw_gid));
   for (int i = 0; i < 3 && s == napi_ok; i++) {
      if (text[i] == NULL)
         s = napi_get_null(env, &v);
      else
         s = napi_create_string_utf8(env, text[i], NAPI_AUTO_LENGTH, &v);
      if (s == napi_ok)
         s = napi_set_element(env, r, i + 2, v);
   }
   free(buf);
   CHECK(s);
   return r;
}

/* hostname(): as os.hostname() (gethostname), or -errno. */
static napi_value js_hostname(napi_env env, napi_callback_info info)
{
   char name[UV_MAXHOSTNAMESIZE];
   if (gethostname(name, sizeof(name)) != 0)
      return failed(env, errno);
   name[sizeof(name) - 1] = '\0';
   napi_value r;
   CHECK(napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &r));
   return r;
}

/* errname(code): [name, description] of libuv error CODE (negative), the
   words node:fs puts in its messages ("ENOENT", "no such file or directory"). */
static napi_value js_errname(napi_env env, napi_callback_info info)
{
   ARGS(1);
   int code = int_arg(env, argv, argc, 0, 0);
   napi_value r, name, desc;
   CHECK(napi_create_string_utf8(env, uv_err_name(code), NAPI_AUTO_LENGTH, &name));
   CHECK(napi_create_string_utf8(env, uv_strerror(code), NAPI_AUTO_LENGTH, &desc));
   CHECK(napi_create_array_with_length(env, 2, &r));
   CHECK(napi_set_element(env, r, 0, name));
   CHECK(napi_set_element(env, r, 1, desc));
   return r;
}

/* compile.cc: ch-run's bundles compiled from their code caches. */
napi_value ch_compile(napi_env env, napi_callback_info info);
napi_value ch_cache_of(napi_env env, napi_callback_info info);
int ch_v8abi(void);

NAPI_MODULE_INIT()
{
   static const struct { const char *name; napi_callback fn; } fns[] = {
      { "stat", js_stat }, { "fstat", js_fstat }, { "access", js_access }, { "readlink", js_readlink },
      { "readFile", js_read_file }, { "user", js_user }, { "hostname", js_hostname },
      { "errname", js_errname }, { "writeAll", js_write_all },
      { "close", js_close }, { "detach", js_detach }, { "compile", ch_compile }, { "cacheOf", ch_cache_of },
   };
   for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
      napi_value f;
      CHECK(napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
      CHECK(napi_set_named_property(env, exports, fns[i].name, f));
   }
   napi_value abi;
   CHECK(napi_create_int32(env, ch_v8abi(), &abi));
   CHECK(napi_set_named_property(env, exports, "v8abi", abi));
   return exports;
}

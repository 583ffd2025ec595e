/* slowfs: a read-only FUSE passthrough that stands in for a shared file
   system in bench/squash.js. Every request it serves waits LATENCY_US first,
   as a request to an NFS or Lustre server waits for its round trip, and is
   counted; at unmount the counts go to COUNTS, one "op n" a line.

   Usage: slowfs SRC MNT LATENCY_US COUNTS [fuse options...]
   (runs in the foreground, multithreaded, -o allow_other,ro)

   The kernel caches what the server said as FUSE's defaults allow (entries and
   attributes 1 s, like a short NFS attribute cache); a fresh mount and
   dropped page cache make a cold run. Bench helper only: no writes, no
   xattrs. */

#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

enum op { GETATTR, READLINK, OPEN, READ, RELEASE, OPENDIR, READDIR, RELEASEDIR, STATFS, ACCESS, NOPS };
static const char *op_names[NOPS] = { "getattr", "readlink", "open", "read", "release", "opendir", "readdir",
                                      "releasedir", "statfs", "access" };
static unsigned long counts[NOPS];
static int src_fd = -1;
static long latency_us;
static FILE *counts_file;   /* opened at start: FUSE chdirs to / */

/* One request reaches the "server": count it, then wait its round trip. */
static void served(enum op o)
{
   __atomic_fetch_add(&counts[o], 1, __ATOMIC_RELAXED);
   if (latency_us > 0) {
      struct timespec ts = { .tv_sec = latency_us / 1000000, .tv_nsec = (latency_us % 1000000) * 1000 };
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
         ;
   }
}

/* FUSE paths start with "/": relative to the source directory's fd. */
static const char *rel(const char *path)
{
   return path[1] ? path + 1 : ".";
}

static int sf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
   served(GETATTR);
   int r = fi ? fstat((int)fi->fh, st) : fstatat(src_fd, rel(path), st, AT_SYMLINK_NOFOLLOW);
   return r == 0 ? 0 : -errno;
}

static int sf_readlink(const char *path, char *buf, size_t size)
{
   served(READLINK);
   ssize_t n = readlinkat(src_fd, rel(path), buf, size - 1);
   if (n < 0)
      return -errno;
   buf[n] = '\0';
   return 0;
}

static int sf_open(const char *path, struct fuse_file_info *fi)
{
   served(OPEN);
   if ((fi->flags & O_ACCMODE) != O_RDONLY)
      return -EROFS;
   int fd = openat(src_fd, rel(path), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
   if (fd < 0)
      return -errno;
   fi->fh = (uint64_t)fd;
   return 0;
}

static int sf_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
   (void)path;
   served(READ);
   ssize_t n = pread((int)fi->fh, buf, size, off);
   return n < 0 ? -errno : (int)n;
}

static int sf_release(const char *path, struct fuse_file_info *fi)
{
   (void)path;
   served(RELEASE);
   close((int)fi->fh);
   return 0;
}

static int sf_opendir(const char *path, struct fuse_file_info *fi)
{
   served(OPENDIR);
   int fd = openat(src_fd, rel(path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
   if (fd < 0)
      return -errno;
   DIR *d = fdopendir(fd);
   if (!d) {
      int e = errno;
      close(fd);
      return -e;
   }
   fi->fh = (uint64_t)(uintptr_t)d;
   return 0;
}

static int sf_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
   (void)path; (void)off; (void)flags;
   served(READDIR);
   DIR *d = (DIR *)(uintptr_t)fi->fh;
   rewinddir(d);
   errno = 0;
   for (struct dirent *e; (e = readdir(d)) != NULL; errno = 0) {
      struct stat st = { .st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type) };
      if (fill(buf, e->d_name, &st, 0, 0))
         break;
   }
   return -errno;
}

static int sf_releasedir(const char *path, struct fuse_file_info *fi)
{
   (void)path;
   served(RELEASEDIR);
   closedir((DIR *)(uintptr_t)fi->fh);
   return 0;
}

static int sf_statfs(const char *path, struct statvfs *sv)
{
   (void)path;
   served(STATFS);
   return fstatvfs(src_fd, sv) == 0 ? 0 : -errno;
}

static int sf_access(const char *path, int mask)
{
   served(ACCESS);
   return faccessat(src_fd, rel(path), mask, 0) == 0 ? 0 : -errno;
}

/* At unmount: the counts, for the bench to read. */
static void sf_destroy(void *data)
{
   (void)data;
   for (int o = 0; o < NOPS; o++)
      fprintf(counts_file, "%s %lu\n", op_names[o], counts[o]);
   if (fclose(counts_file) != 0)
      fprintf(stderr, "slowfs: can't write counts: %s\n", strerror(errno));
}

static const struct fuse_operations ops = {
   .getattr = sf_getattr, .readlink = sf_readlink, .open = sf_open, .read = sf_read, .release = sf_release,
   .opendir = sf_opendir, .readdir = sf_readdir, .releasedir = sf_releasedir, .statfs = sf_statfs,
   .access = sf_access, .destroy = sf_destroy,
};

int main(int argc, char **argv)
{
   if (argc < 5) {
      fprintf(stderr, "usage: %s SRC MNT LATENCY_US COUNTS [fuse options...]\n", argv[0]);
      return 2;
   }
   char *end;
   latency_us = strtol(argv[3], &end, 10);
   if (*end || latency_us < 0) {
      fprintf(stderr, "slowfs: latency %s: not a number of microseconds\n", argv[3]);
      return 2;
   }
   src_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
   if (src_fd < 0) {
      fprintf(stderr, "slowfs: can't open %s: %s\n", argv[1], strerror(errno));
      return 1;
   }
   counts_file = fopen(argv[4], "we");
   if (!counts_file) {
      fprintf(stderr, "slowfs: can't create %s: %s\n", argv[4], strerror(errno));
      return 1;
   }
   /* max_threads given: libfuse 3.14 warns about its own default otherwise. */
   char *fargv[64] = { argv[0], argv[2], "-f", "-o", "allow_other,ro,default_permissions,max_threads=10" };
   int fargc = 5;
   for (int i = 5; i < argc && fargc < 63; i++)
      fargv[fargc++] = argv[i];
   return fuse_main(fargc, fargv, &ops, NULL);
}

/* Finding things by path, safely: a path inside the image, resolved as the
   container would and never above its root (open_in_root); our namespace's
   mounts (mounts_read, mount_id); a mount we just made, found again and
   checked to be that one (open_new_mount). Used by mounts.c, overlay.c and
   squash.c, which call nothing of each other's but overlay_setup. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core.h"

#ifdef __has_include
#  if __has_include(<linux/openat2.h>)
#    include <linux/openat2.h>
#  endif
#endif
#ifndef RESOLVE_IN_ROOT
struct open_how { unsigned long long flags, mode, resolve; };
#  define RESOLVE_NO_MAGICLINKS 0x02
#  define RESOLVE_IN_ROOT       0x10
#endif
#ifndef SYS_openat2
#  define SYS_openat2 437
#endif

/** Resolving paths inside the image **/

/* Fallback for kernels before 5.6: walk component by component with
   O_NOFOLLOW, resolving symlinks ourselves so that absolute targets and ".."
   restart or stop at the image root, never above it. */
static int walk_in_root(int rootfd, const char *path)
{
   enum { DEPTH_MAX = 256, LINKS_MAX = 40 };
   int stack[DEPTH_MAX];       /* fds of the directories walked through */
   int depth = 0, links = 0, saved = 0;
   char *todo = strdup(path);  /* remaining path; grows when links splice in */
   T_(todo != NULL, "strdup");
   stack[0] = rootfd;

   char *rest = todo;
   for (;;) {
      while (*rest == '/') rest++;
      if (*rest == '\0')
         break;
      char *slash = strchr(rest, '/');
      size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
      char comp[NAME_MAX + 1];
      if (n > NAME_MAX) { saved = ENAMETOOLONG; goto fail; }
      memcpy(comp, rest, n); comp[n] = '\0';
      rest += n;
      if (!strcmp(comp, "."))
         continue;
      if (!strcmp(comp, "..")) {          /* never above the image root */
         if (depth > 0) close(stack[depth--]);
         continue;
      }
      int fd = openat(stack[depth], comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) { saved = errno; goto fail; }
      struct stat st;
      if (fstat(fd, &st) != 0) { saved = errno; close(fd); goto fail; }
      if (S_ISLNK(st.st_mode)) {
         char target[PATH_MAX];
         ssize_t tl = readlinkat(fd, "", target, sizeof(target) - 1);
         close(fd);
         if (tl < 0) { saved = errno; goto fail; }
         if (++links > LINKS_MAX) { saved = ELOOP; goto fail; }
         target[tl] = '\0';
         if (target[0] == '/')             /* absolute: from the image root */
            while (depth > 0) close(stack[depth--]);
         char *spliced = xasprintf("%s/%s", target, rest);
         free(todo);
         todo = rest = spliced;
         continue;
      }
      if (depth + 1 >= DEPTH_MAX) { close(fd); saved = ENAMETOOLONG; goto fail; }
      stack[++depth] = fd;
   }
   free(todo);
   int result = depth > 0 ? stack[depth] : fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
   for (int i = 1; i < depth; i++)
      close(stack[i]);
   return result;

fail:
   free(todo);
   while (depth > 0) close(stack[depth--]);
   errno = saved;
   return -1;
}

/* Open PATH (absolute, inside the image) as an O_PATH fd, following symlinks
   as the container would see them. Returns -1 with errno set on failure. */
int open_in_root(int rootfd, const char *path)
{
   static int have_openat2 = -1;
   if (have_openat2 < 0) {
      have_openat2 = !switched_off("CH_RUN_NO_OPENAT2");
      if (!have_openat2)
         DEBUG("CH_RUN_NO_OPENAT2=1: resolving paths component by component");
   }
   if (have_openat2) {
      struct open_how how = { .flags = O_PATH | O_CLOEXEC,
                              .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
      int fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
      if (fd >= 0 || errno != ENOSYS)
         return fd;
      have_openat2 = false;
      DEBUG("openat2(2) not available; resolving paths component by component");
   }
   return walk_in_root(rootfd, path);
}

/** Our namespace's mounts **/

/* The ID of the mount FD is on ("mnt_id:" in its fdinfo, Linux 3.15). */
int mount_id(int fd)
{
   char path[64], line[256];
   snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
   FILE *f = fopen(path, "re");
   T_(f != NULL, "can't open %s", path);
   int id = -1;
   while (id < 0 && fgets(line, sizeof(line), f) != NULL)
      if (sscanf(line, "mnt_id: %d", &id) != 1)
         id = -1;
   fclose(f);
   if (id < 0)
      FATAL_NOERR("no mnt_id in %s", path);
   return id;
}

/* Undo mountinfo's octal escapes ("\040" for a space) in place. */
static void unescape(char *s)
{
   char *w = s;
   for (char *r = s; *r != '\0'; r++) {
      if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7'
          && r[3] >= '0' && r[3] <= '7') {
         *w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
         r += 3;
      } else {
         *w++ = *r;
      }
   }
   *w = '\0';
}

/* Our mounts, from /proc/self/mountinfo: ID, parent ID, mount point. */
struct mnt *mounts_read(size_t *ct)
{
   FILE *f = fopen("/proc/self/mountinfo", "re");
   T_(f != NULL, "can't open /proc/self/mountinfo");
   struct mnt *v = NULL;
   char *line = NULL;
   size_t cap = 0;
   *ct = 0;
   while (getline(&line, &cap, f) > 0) {
      struct mnt m = { .in_tree = false };
      if (sscanf(line, "%d %d %*s %*s %ms", &m.id, &m.parent, &m.point) != 3)
         FATAL_NOERR("can't parse /proc/self/mountinfo line: %s", line);
      unescape(m.point);
      v = xrealloc(v, (*ct + 1) * sizeof(m));
      v[(*ct)++] = m;
   }
   free(line);
   fclose(f);
   return v;
}

/** Mounts we just made, found again by path **/

/* A mount made on /proc/self/fd/N of a directory lies over that directory;
   the descriptor still names what lies under (the kernel doesn't follow a
   magic link across mounts), so the new mount's root can only be reached by
   resolving a path again, which whoever can rename the path's components
   could point elsewhere meanwhile. So: the IDs of all mounts in our
   namespace before we mount (mount_ids), then, after, the path is opened
   and must be the root of a mount not among them (open_new_mount). Only we
   add mounts to our namespace (it is ours, and private: nothing propagates
   in), and we add one at a time, so that is the one we made. */

int *mount_ids(size_t *ct)
{
   struct mnt *v = mounts_read(ct);
   int *ids = xrealloc(NULL, (*ct + 1) * sizeof(int));
   for (size_t i = 0; i < *ct; i++) {
      ids[i] = v[i].id;
      free(v[i].point);
   }
   free(v);
   return ids;
}

/* PATH, now: an O_PATH fd of the root of a mount that is not among BEFORE
   (CT IDs) and whose filesystem has MAGIC. -1 with errno: the open's, or
   EXDEV if PATH leads anywhere else (swapped by someone who can rename it). */
int open_new_mount(const char *path, const int *before, size_t ct, long magic)
{
   int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
   if (fd < 0)
      return -1;
   int id = mount_id(fd), err = 0;
   for (size_t i = 0; i < ct && err == 0; i++)
      if (before[i] == id)
         err = EXDEV;
   /* The root of its mount: ".." crosses to the mount below, another
      filesystem; from a directory inside, it would stay on this one.
      (A stat of the new mount waits until its server answers; one that
      died fails here, ENOTCONN, which is no swap.) */
   struct stat st, up;
   struct statfs sf;
   int upfd = err ? -1 : openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
   if (err == 0 && (upfd < 0 || fstat(fd, &st) != 0 || fstat(upfd, &up) != 0 || fstatfs(fd, &sf) != 0))
      err = errno;
   if (err == 0 && (st.st_dev == up.st_dev || (long)sf.f_type != magic))
      err = EXDEV;
   if (upfd >= 0)
      close(upfd);
   if (err == 0)
      return fd;
   close(fd);
   errno = err;
   return -1;
}


/* Build the container's filesystem view: bind the image onto itself, make it
   really read-only, apply the plan's mounts in order, pivot into it.

   Every destination is resolved *inside* the image (lookup.c: openat2 RESOLVE_IN_ROOT,
   or a component walk on kernels without it), so an image whose /tmp is a
   symlink to /etc, or whose /etc/passwd points at a host file, cannot make us
   mount anything outside the container's view. The mount syscalls then act
   on /proc/self/fd/N of the resolved O_PATH fd, never on a path that could be
   swapped in between. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core.h"

#define FDPATH_MAX 32
static void fdpath(char *buf, int fd) { snprintf(buf, FDPATH_MAX, "/proc/self/fd/%d", fd); }

/* The flags of the mount under FD that the kernel locks when the mount came
   from a more privileged namespace: a remount must repeat them or fail EPERM. */
static unsigned long locked_flags(int fd)
{
   struct statvfs sv;
   Z_(fstatvfs(fd, &sv), "can't statvfs mount");
   unsigned long f = 0;
   if (sv.f_flag & ST_NOSUID)     f |= MS_NOSUID;
   if (sv.f_flag & ST_NODEV)      f |= MS_NODEV;
   if (sv.f_flag & ST_NOEXEC)     f |= MS_NOEXEC;
   if (sv.f_flag & ST_NOATIME)    f |= MS_NOATIME;
   if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
   if (sv.f_flag & ST_RELATIME)   f |= MS_RELATIME;
   if (sv.f_flag & ST_RDONLY)     f |= MS_RDONLY;
   return f;
}

/* Remount the bind mount whose top is FD with EXTRA flags added. The first
   bind ignores MS_RDONLY; only this separate remount makes it read-only. */
static void remount(int fd, unsigned long extra, const char *what)
{
   char p[FDPATH_MAX];
   fdpath(p, fd);
   unsigned long flags = MS_REMOUNT | MS_BIND | locked_flags(fd) | extra;
   Z_(mount(NULL, p, NULL, flags, NULL), "can't remount %s%s", what,
      (extra & MS_RDONLY) ? " read-only" : "");
}

#ifndef SYS_mount_setattr
#  define SYS_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#  define AT_RECURSIVE 0x8000
#endif
struct mount_attr_ { unsigned long long attr_set, attr_clr, propagation, userns_fd; };

/* Add flags to the mount under FD *and every mount below it*. A remount
   only reaches the top mount of a recursive bind: submounts would stay
   writable under a "read-only" bind. mount_setattr(2) (Linux 5.12) does the
   whole tree at once, and only sets, so the kernel's locked flags don't
   matter. Returns -1 with errno ENOSYS on older kernels. */
static int setattr_tree(int fd, unsigned long extra)
{
   if (switched_off("CH_RUN_NO_MOUNT_SETATTR")) {
      errno = ENOSYS;
      return -1;
   }
   struct mount_attr_ a = { 0, 0, 0, 0 };
   if (extra & MS_RDONLY) a.attr_set |= 0x1;   /* MOUNT_ATTR_RDONLY */
   if (extra & MS_NOSUID) a.attr_set |= 0x2;   /* MOUNT_ATTR_NOSUID */
   if (extra & MS_NODEV)  a.attr_set |= 0x4;   /* MOUNT_ATTR_NODEV */
   if (extra & MS_NOEXEC) a.attr_set |= 0x8;   /* MOUNT_ATTR_NOEXEC */
   return syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof(a));
}

static unsigned long ms_flags(unsigned f)
{
   return ((f & MF_NOSUID) ? MS_NOSUID : 0) | ((f & MF_NODEV) ? MS_NODEV : 0)
          | ((f & MF_NOEXEC) ? MS_NOEXEC : 0) | ((f & MF_RO) ? MS_RDONLY : 0);
}

/* Add FLAGS to every mount of the tree whose top is TOP: what
   mount_setattr(2) does at once, for kernels without it (< 5.12), where a
   remount reaches only one mount. Each submount is found in mountinfo, opened
   by its mount point (a host path: we have not pivoted yet) and checked to be
   that very mount before it is remounted, so a path changed meanwhile is an
   error, not a remount of something else. */
static void remount_tree(int top, unsigned long flags, const char *what)
{
   size_t ct;
   struct mnt *v = mounts_read(&ct);
   int top_id = mount_id(top);
   for (size_t i = 0; i < ct; i++)
      v[i].in_tree = v[i].id == top_id;
   for (bool grew = true; grew;) {   /* children of the tree are in it */
      grew = false;
      for (size_t i = 0; i < ct; i++)
         for (size_t j = 0; j < ct && !v[i].in_tree; j++)
            if (v[j].in_tree && v[i].parent == v[j].id)
               v[i].in_tree = grew = true;
   }
   remount(top, flags, what);
   for (size_t i = 0; i < ct; i++) {
      if (!v[i].in_tree || v[i].id == top_id)
         continue;
      int fd = open(v[i].point, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      T_(fd >= 0, "can't open submount %s of %s", v[i].point, what);
      int found = mount_id(fd);
      if (found == v[i].id) {
         remount(fd, flags, v[i].point);
         DEBUG("remounted submount %s of %s", v[i].point, what);
      } else {
         /* Covered by another mount of the tree at the same point (which
            gets its own turn): unreachable, and stays so, as the inner
            namespace locks every mount. Anything else: the path moved. */
         bool covered = false;
         for (size_t j = 0; j < ct; j++)
            covered |= v[j].in_tree && v[j].id == found && !strcmp(v[j].point, v[i].point);
         if (!covered)
            FATAL_NOERR("submount %s of %s changed while being made read-only", v[i].point, what);
      }
      close(fd);
   }
   for (size_t i = 0; i < ct; i++)
      free(v[i].point);
   free(v);
}

/* Add FLAGS to the mount tree whose top is TOP, submounts included: with
   mount_setattr(2) at once, else by remounting each. */
static void flag_tree(int top, unsigned long flags, const char *what)
{
   if (setattr_tree(top, flags) == 0)
      return;
   T_(errno == ENOSYS, "can't set flags on %s", what);
   INFO("no mount_setattr(2): remounting %s and its submounts one by one", what);
   remount_tree(top, flags, what);
}

/** The image root **/

int root_setup(const struct plan *p, int mounted)
{
   /* Our mounts must not propagate back to the host's namespace. */
   Z_(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "can't make / private");
   int rootfd = mounted;   /* a SquashFS image: its mount already (squash.c) */
   if (rootfd < 0) {
      struct stat st;
      if (stat(p->root, &st) != 0)
         FATAL("can't use image %s", p->root);
      if (!S_ISDIR(st.st_mode)) {
         errno = ENOTDIR;
         FATAL("can't use image %s", p->root);
      }
      Z_(mount(p->root, p->root, NULL, MS_BIND | MS_REC, NULL), "can't bind image %s onto itself",
         p->root);
      rootfd = open(p->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
      T_(rootfd >= 0, "can't open image %s", p->root);
   }
   /* nosuid always: the image is the user's; its setuid bits must mean
      nothing. The whole tree, in case the image directory holds mounts. */
   unsigned long flags = MS_NOSUID | (p->writable ? 0 : MS_RDONLY);
   flag_tree(rootfd, flags, "image root");
   INFO("image %s mounted %s", p->root, p->writable ? "read-write" : "read-only");
   if (p->write_fake)
      rootfd = overlay_setup(p, rootfd);
   return rootfd;
}

/* Generated files (e.g. /etc/passwd) are bind-mounted from a staging tmpfs
   that exists only in our own mount namespace, mounted over a directory of
   the image (the plan's stage-dir, /dev by default, which a later bind
   covers anyway): nothing of it is ever on the host, visible to another
   user, or left behind if we are killed. The stage lives only across a run
   of consecutive file operations, so no other mount can land in it or copy
   it along. (The kernel won't bind an unnamed O_TMPFILE or memfd, hence a
   real file; a bind keeps its file alive after the stage is detached.) */
static int stage_fd = -1;
static int stage_ct = 0;

static void stage_remove(void)
{
   if (stage_fd < 0)
      return;
   char p[FDPATH_MAX];
   fdpath(p, stage_fd);
   Z_(umount2(p, MNT_DETACH), "can't detach staging tmpfs");
   close(stage_fd);
   stage_fd = -1;
}

static void stage_create(const struct plan *p, int rootfd)
{
   char tgt[FDPATH_MAX];
   int dfd = open_in_root(rootfd, p->stage_dir);
   T_(dfd >= 0, "can't open staging directory %s in image", p->stage_dir);
   fdpath(tgt, dfd);
   Z_(mount("tmpfs", tgt, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=4m"),
      "can't mount staging tmpfs on %s", p->stage_dir);
   close(dfd);
   stage_fd = open_in_root(rootfd, p->stage_dir);   /* now the tmpfs's root */
   T_(stage_fd >= 0, "can't open staging tmpfs on %s", p->stage_dir);
}

static int generated_file(const struct plan *p, int rootfd, const struct mount_op *m)
{
   if (stage_fd < 0)
      stage_create(p, rootfd);
   char name[32];
   snprintf(name, sizeof(name), "f%d", stage_ct++);
   int fd = openat(stage_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
   T_(fd >= 0, "can't create staging file for %s", m->dst);
   size_t off = 0;
   while (off < m->src_len) {
      ssize_t w = write(fd, m->src + off, m->src_len - off);
      if (w < 0 && errno == EINTR) continue;
      T_(w > 0, "can't write generated %s", m->dst);
      off += w;
   }
   return fd;
}

/* Create DST inside a tmpfs we mounted (e.g. /home/$USER, or a mount point
   for an injected library): a directory, an empty file, or a symlink whose
   target is SRC. */
static void create_one(int rootfd, const struct mount_op *m)
{
   const char *what = m->kind == MK_MKDIR ? "directory" : m->kind == MK_MKFILE ? "file" : "symlink";
   char *parent = strdup(m->dst), *base = strrchr(parent, '/');
   T_(parent != NULL, "strdup");
   *base++ = '\0';
   int dfd = open_in_root(rootfd, parent[0] ? parent : "/");
   T_(dfd >= 0, "can't create %s %s: can't open parent in image", what, m->dst);
   if (m->kind == MK_SYMLINK) {
      if (symlinkat(m->src, dfd, base) != 0)
         FATAL("can't create symlink %s -> %s in image", m->dst, m->src);
   } else if (m->kind == MK_MKDIR) {
      if (mkdirat(dfd, base, strtol(m->src, NULL, 8)) != 0 && errno != EEXIST)
         FATAL("can't create %s in image", m->dst);
   } else {
      int fd = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      (mode_t)strtol(m->src, NULL, 8));
      T_(fd >= 0, "can't create file %s in image", m->dst);
      Z_(close(fd), "can't close %s", m->dst);
   }
   close(dfd);
   free(parent);
   DEBUG("%s %s%s%s", what, m->dst, m->kind == MK_SYMLINK ? " -> " : "",
         m->kind == MK_SYMLINK ? m->src : "");
}

/* What is mounted, for messages. */
static const char *mount_what(const struct mount_op *m)
{
   return m->kind == MK_BIND ? m->src : m->kind == MK_TMPFS ? "tmpfs" : "generated file";
}

/* The image root's identity (mounts_apply), which no mount may land on. */
static struct stat root_st;

/* Mount M on DFD, its destination resolved in the image. Returns false if
   skipped (an optional source missing on the host). */
static bool mount_at(const struct plan *p, int rootfd, const struct mount_op *m, int dfd)
{
   char tgt[FDPATH_MAX], srcp[FDPATH_MAX];
   fdpath(tgt, dfd);

   /* An image whose /dev (or /tmp, or a bind DST) is a symlink to "/" would
      have us mount over the image root itself: the container would lose its
      root under the mount, and the later steps fail obscurely (unshare of
      the inner namespace: EPERM). Refuse it plainly. */
   struct stat dst_st;
   Z_(fstat(dfd, &dst_st), "can't stat %s in image", m->dst);
   if (dst_st.st_dev == root_st.st_dev && dst_st.st_ino == root_st.st_ino)
      FATAL_NOERR("can't mount %s at %s: it resolves to the image root (a symlink in the image?)",
                  mount_what(m), m->dst);

   switch (m->kind) {
   case MK_BIND: {
      /* The source looked at only when the bind fails, to say which end
         failed (and skip an optional one that isn't there). */
      unsigned long f = MS_BIND | ((m->flags & MF_REC) ? MS_REC : 0);
      if (mount(m->src, tgt, NULL, f, NULL) != 0) {
         int e = errno;
         struct stat st;
         if (stat(m->src, &st) != 0) {
            if (errno == ENOENT && (m->flags & MF_SRCOPT)) {
               DEBUG("skipping %s: not on host", m->src);
               return false;
            }
            FATAL("can't bind %s to %s: source", m->src, m->dst);
         }
         errno = e;
         FATAL("can't bind %s to %s", m->src, m->dst);
      }
      break;
   }
   case MK_TMPFS:
      Z_(mount("tmpfs", tgt, "tmpfs", MS_NOSUID | MS_NODEV | ms_flags(m->flags & ~MF_RO), m->src),
         "can't mount tmpfs at %s", m->dst);
      break;
   case MK_FILE: {
      int srcfd = generated_file(p, rootfd, m);
      /* resolved before the stage covered it? then it lies under stage-dir */
      struct stat d, sg;
      int again = open_in_root(rootfd, m->dst);
      T_(again >= 0, "can't reopen %s", m->dst);
      Z_(fstat(again, &d), "can't stat %s", m->dst);
      Z_(fstat(stage_fd, &sg), "can't stat staging tmpfs");
      close(again);
      if (d.st_dev == sg.st_dev)
         FATAL_NOERR("can't generate %s: it lies under the staging directory %s", m->dst, p->stage_dir);
      fdpath(srcp, srcfd);
      Z_(mount(srcp, tgt, NULL, MS_BIND, NULL), "can't bind generated file to %s", m->dst);
      close(srcfd);
      break;
   }
   case MK_MKDIR: case MK_MKFILE: case MK_SYMLINK:
      break;
   }
   return true;
}

/* Flags a bind can't take at once need a remount of the new mount's top,
   which a fresh resolution of DST now reaches; a recursive bind needs them
   on its submounts too. (A tmpfs got its flags when mounted.) */
static void flag_one(int rootfd, const struct mount_op *m)
{
   unsigned long extra = ms_flags(m->flags);
   if (m->kind == MK_TMPFS || extra == 0)
      return;
   int top = open_in_root(rootfd, m->dst);
   T_(top >= 0, "can't reopen %s after mounting", m->dst);
   if (m->kind == MK_BIND && (m->flags & MF_REC))
      flag_tree(top, extra, m->dst);
   else
      remount(top, extra, m->dst);
   close(top);
}

static void mount_one(const struct plan *p, int rootfd, const struct mount_op *m)
{
   if (m->kind != MK_FILE)
      stage_remove();
   if (m->kind == MK_MKDIR || m->kind == MK_MKFILE || m->kind == MK_SYMLINK) {
      create_one(rootfd, m);
      return;
   }
   int dfd = open_in_root(rootfd, m->dst);
   if (dfd < 0) {
      if (errno == ENOENT && (m->flags & MF_OPTIONAL)) {
         DEBUG("skipping %s: not in image", m->dst);
         return;
      }
      if (m->kind == MK_BIND)
         FATAL("can't bind %s to %s: destination not usable in image", m->src, m->dst);
      FATAL("can't mount %s in image", m->dst);
   }
   bool mounted = mount_at(p, rootfd, m, dfd);
   close(dfd);
   if (!mounted)
      return;
   flag_one(rootfd, m);
   INFO("%s %s%s%s%s", m->kind == MK_BIND ? "bind" : m->kind == MK_TMPFS ? "tmpfs" : "generated",
        m->kind == MK_BIND ? m->src : "", m->kind == MK_BIND ? " -> " : "", m->dst,
        (m->flags & MF_RO) ? " (read-only)" : "");
}

void mounts_apply(const struct plan *p, int rootfd)
{
   /* Once, not per mount: --gpu's /dev has a bind per host entry (hundreds
      on a GPU node), each a few system calls. */
   Z_(fstat(rootfd, &root_st), "can't stat image root");
   for (size_t i = 0; i < p->mount_ct; i++)
      mount_one(p, rootfd, &p->mounts[i]);
   stage_remove();
}

/* Make the image the root. pivot_root(".", ".") stacks the old root on top of
   the new one; detaching it leaves only the image, with no put_old directory
   needed in a read-only, possibly root-owned tree. */
void root_pivot(int rootfd)
{
   Z_(fchdir(rootfd), "can't chdir to image root");
   Z_(syscall(SYS_pivot_root, ".", "."), "can't pivot_root(2) into image");
   Z_(umount2(".", MNT_DETACH), "can't detach old root");
   Z_(chdir("/"), "can't chdir to new root");
   close(rootfd);
}

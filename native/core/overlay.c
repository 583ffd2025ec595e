/* ch-run -W (--write-fake): an overlay over the image root whose upper
   layer is a fresh tmpfs, so the container can write anywhere while the
   image stays untouched; the writes vanish with the mount namespace.

   Nobody can reach the tmpfs but through the overlay. Unprivileged overlayfs needs Linux 5.11.
   Copy-up from a lower file the user does not own fails (EACCES): the
   image must be the user's, as images unpacked or converted by the user
   are. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core.h"

#define OVERLAYFS_SUPER_MAGIC 0x794c7630

/* The upper layer: a tmpfs (SIZE: its size= option, "" for the kernel's
   default) with directories upper/ and work/, whose O_PATH fds go to *UP
   and *WORK; returns the tmpfs's own fd, for overlay_setup() to detach it
   once the overlay holds it. A detached tmpfs (fsopen/fsmount) would need
   no mount point at all, but overlayfs refuses an upper layer outside the
   caller's mount namespace ("failed to clone upperpath", measured on 6.18).
   So it is mounted, briefly, over the image's /dev (always there, and
   covered by the host's later): never on the host, and overlayfs's layers
   don't cross mounts, so the overlay doesn't see it. */
static int upper_tmpfs(int lowerfd, const char *size, int *up, int *work)
{
   char tgt[32], opts[96];
   int dev = open_in_root(lowerfd, "/dev");
   T_(dev >= 0, "--write-fake: can't open /dev in image");
   snprintf(tgt, sizeof(tgt), "/proc/self/fd/%d", dev);
   snprintf(opts, sizeof(opts), "mode=0700%s%.40s", size[0] ? ",size=" : "", size);
   Z_(mount("tmpfs", tgt, "tmpfs", MS_NOSUID | MS_NODEV, opts), "--write-fake: can't mount tmpfs (%s)", opts);
   Z_(close(dev), "--write-fake: can't close /dev");
   int mnt = open_in_root(lowerfd, "/dev");   /* now the tmpfs's root */
   T_(mnt >= 0, "--write-fake: can't open tmpfs");
   Z_(mkdirat(mnt, "upper", 0755), "--write-fake: can't create upper directory");
   Z_(mkdirat(mnt, "work", 0700), "--write-fake: can't create work directory");
   *up = openat(mnt, "upper", O_PATH | O_DIRECTORY | O_CLOEXEC);
   T_(*up >= 0, "--write-fake: can't open upper directory");
   *work = openat(mnt, "work", O_PATH | O_DIRECTORY | O_CLOEXEC);
   T_(*work >= 0, "--write-fake: can't open work directory");
   return mnt;
}

int overlay_setup(const struct plan *p, int lowerfd)
{
   int up, work;
   int tmp = upper_tmpfs(lowerfd, p->write_fake_size, &up, &work);
   /* The lower, upper and work directories named by our own descriptors:
      no path anyone could swap, and no commas or colons to escape. */
   char opts[160], tgt[32];
   snprintf(opts, sizeof(opts), "lowerdir=/proc/self/fd/%d,upperdir=/proc/self/fd/%d,"
            "workdir=/proc/self/fd/%d,userxattr", lowerfd, up, work);
   snprintf(tgt, sizeof(tgt), "/proc/self/fd/%d", lowerfd);
   size_t ct;
   int *before = mount_ids(&ct);
   if (mount("overlay", tgt, "overlay", MS_NOSUID, opts) != 0) {
      struct utsname u;
      if (errno == EPERM && uname(&u) == 0)
         FATAL("--write-fake: can't mount overlay on %s (unprivileged overlayfs needs Linux >= 5.11; "
               "this is %s)", p->root, u.release);
      FATAL("--write-fake: can't mount overlay on %s", p->root);
   }
   /* Found by path (the one that can reach it), and checked to be the
      overlay just made there (lookup.c: open_new_mount). */
   int rootfd = open_new_mount(p->root, before, ct, OVERLAYFS_SUPER_MAGIC);
   if (rootfd < 0 && errno == EXDEV)
      FATAL_NOERR("--write-fake: %s changed while mounting the overlay on it (renamed by someone "
                  "who can write to its directory?)", p->root);
   T_(rootfd >= 0, "--write-fake: can't open overlay at %s", p->root);
   free(before);
   close(up);
   close(work);
   /* The overlay holds its own private copy of the upper mount. */
   snprintf(tgt, sizeof(tgt), "/proc/self/fd/%d", tmp);
   Z_(umount2(tgt, MNT_DETACH), "--write-fake: can't detach tmpfs from image's /dev");
   close(tmp);
   Z_(close(lowerfd), "can't close image root");
   INFO("image %s writable through a tmpfs overlay%s%s", p->root, p->write_fake_size[0] ? " of size " : "",
        p->write_fake_size);
   return rootfd;
}

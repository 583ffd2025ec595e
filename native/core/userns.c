/* Enter a new user namespace and mount namespace, mapping one uid and one
   gid: the only mapping an unprivileged process may write without setuid
   helpers. setgroups(2) must be denied first or the gid map is refused;
   supplementary groups therefore cannot be changed inside (they stay in force
   for host permission checks, and show as the overflow gid). */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static void write_file(const char *path, const char *content)
{
   int fd = open(path, O_WRONLY | O_CLOEXEC);
   T_(fd >= 0, "can't open %s", path);
   size_t len = strlen(content);
   ssize_t w = write(fd, content, len);
   T_(w == (ssize_t)len, "can't write '%.*s' to %s", (int)strcspn(content, "\n"), content, path);
   Z_(close(fd), "can't close %s", path);
}

void userns_enter(uid_t uid_in, uid_t uid_out, gid_t gid_in, gid_t gid_out)
{
   char map[64];

   if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
      int e = errno;
      /* Say why in words the user can act on; the raw errno follows. */
      FILE *f = fopen("/proc/sys/user/max_user_namespaces", "re");
      long max = -1;
      if (f != NULL) {
         if (fscanf(f, "%ld", &max) != 1) max = -1;
         fclose(f);
      }
      errno = e;
      if (max == 0)
         FATAL("can't create user namespace: user namespaces are disabled "
               "(/proc/sys/user/max_user_namespaces is 0; ask your admin)");
      if (e == EINVAL)
         FATAL("can't create user namespace: process is multithreaded or in a chroot");
      FATAL("can't create user namespace");
   }
   write_file("/proc/self/setgroups", "deny");
   snprintf(map, sizeof(map), "%u %u 1\n", uid_in, uid_out);
   write_file("/proc/self/uid_map", map);
   snprintf(map, sizeof(map), "%u %u 1\n", gid_in, gid_out);
   write_file("/proc/self/gid_map", map);
   DEBUG("user namespace: uid %u->%u, gid %u->%u", uid_out, uid_in, gid_out, gid_in);
}

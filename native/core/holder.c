/* One SquashFS mount per node, user and image: the holder, and how a
   launch finds it.

      core of the first launch: binds the rendezvous name, forks the keeper
        (squash.c), which becomes the *holder*: its own user+mount namespace
        with the FUSE mount in it, squashfuse its child, serving the socket
      every launch (the first too): connects, checks the holder is its own
        user's (SO_PEERCRED), gets its namespaces (SCM_RIGHTS), setns(2)
        into them, then unshare(CLONE_NEWNS): a mount namespace of its own
        over the shared mount, for its binds and pivot_root.

   The rendezvous is an abstract unix socket, "chtk-sqfs.UID.HASH.N", HASH
   of the image's (dev, inode, size, mtime, ctime) and the mount point's
   (dev, inode): nothing on any file system, so nothing is left when the
   holder dies, however it dies; a replaced image file is another name, so
   a new mount, and the old holder retires after its users. Anyone may bind
   any abstract name, so a name is never trusted: the listener's uid must
   be ours (SO_PEERCRED) and its reply must name the same identity (a hash
   collision), else the next N is tried; after NAMES_MAX of them the launch
   mounts privately, as with CH_RUN_SQUASH_LINGER=0: a planted name costs a
   fresh mount, never another's image. The holder serves only connections
   from its own uid, and another user could not enter its namespaces anyway
   (setns needs capabilities in them).

   Users are counted by the holder, not by anything the command inherits:
   it takes a pidfd (or, without pidfd_open, the /proc/PID directory, as
   watch.c) of each connecting core, by SO_PEERCRED's PID, while the core
   waits for the reply (so the PID is the core's: a connection already hung
   up is dropped). The core becomes the command with the same PID; the
   connection is closed before exec. When the last user has ended, the
   holder waits squash_linger_ms for a new one, then closes the socket
   (the name goes) and kills squashfuse: the mount goes with the namespace.
   squashfuse dies with the holder (PDEATHSIG); if squashfuse dies the holder
   exits at once, so the next launch mounts afresh, and running containers
   get ENOTCONN from their reads. Every wait is bounded. */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "watch.h"

#ifndef NS_GET_NSTYPE
#  define NS_GET_NSTYPE _IO(0xb7, 0x3)
#  define NS_GET_OWNER_UID _IO(0xb7, 0x4)
#endif

#define NAMES_MAX 16
#define HOLDER_MAGIC 0x6368686f6c643031ULL   /* "chhold01" */

/* The image's and the mount point's identity, as the name hashes it. */
enum { ID_DEV, ID_INO, ID_SIZE, ID_MTIME_S, ID_MTIME_NS, ID_CTIME_S, ID_CTIME_NS, ID_MP_DEV, ID_MP_INO, ID_CT };

struct reply {
   uint64_t magic;
   uint64_t id[ID_CT];           /* what the holder serves */
   uint64_t root_dev, root_ino;  /* the FUSE mount's root */
};

static void identity(uint64_t id[ID_CT], int imgfd, int mpfd)
{
   struct stat i, m;
   Z_(fstat(imgfd, &i), "can't stat SquashFS image");
   Z_(fstat(mpfd, &m), "can't stat SquashFS mount point");
   uint64_t v[ID_CT] = { i.st_dev, i.st_ino, (uint64_t)i.st_size, (uint64_t)i.st_mtim.tv_sec,
                         (uint64_t)i.st_mtim.tv_nsec, (uint64_t)i.st_ctim.tv_sec,
                         (uint64_t)i.st_ctim.tv_nsec, m.st_dev, m.st_ino };
   memcpy(id, v, sizeof(v));
}

/* "\0chtk-sqfs.UID.HASH.N": FNV-1a of the identity. */
static socklen_t sock_name(struct sockaddr_un *a, const uint64_t id[ID_CT], int n)
{
   uint64_t h = 0xcbf29ce484222325ULL;
   for (size_t b = 0; b < ID_CT * sizeof(uint64_t); b++) {
      h ^= ((const unsigned char *)id)[b];
      h *= 0x100000001b3ULL;
   }
   memset(a, 0, sizeof(*a));
   a->sun_family = AF_UNIX;
   int l = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "chtk-sqfs.%u.%016llx.%d", (unsigned)getuid(),
                    (unsigned long long)h, n);
   return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + l);
}

/** The holder **/

struct users { struct watch *w; size_t ct, cap; };

/* A connection: a core of our uid gets our namespaces and becomes a user. */
static void serve_one(struct users *u, int c, const struct reply *r, int nsu, int nsm)
{
   struct ucred cr;
   socklen_t l = sizeof(cr);
   struct watch w;
   /* Another uid reads as the overflow uid in our namespace: never ours. */
   if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0 || cr.uid != getuid() || cr.pid <= 0
       || watch_open(&w, cr.pid, false) != 0)
      return;
   /* Still connected, so the PID was the core's when we took hold of it. */
   struct pollfd pf = { c, POLLRDHUP, 0 };
   if (poll(&pf, 1, 0) != 0) {
      watch_close(&w);
      return;
   }
   int fds[2] = { nsu, nsm };
   char ctl[CMSG_SPACE(sizeof(fds))];
   memset(ctl, 0, sizeof(ctl));
   struct iovec iov = { (void *)r, sizeof(*r) };
   struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
   struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
   cm->cmsg_level = SOL_SOCKET;
   cm->cmsg_type = SCM_RIGHTS;
   cm->cmsg_len = CMSG_LEN(sizeof(fds));
   memcpy(CMSG_DATA(cm), fds, sizeof(fds));
   if (sendmsg(c, &m, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof(*r)) {
      watch_close(&w);
      return;
   }
   if (u->ct == u->cap) {
      u->cap = u->cap ? 2 * u->cap : 16;
      u->w = xrealloc(u->w, u->cap * sizeof(*u->w));
   }
   u->w[u->ct++] = w;
}

static _Noreturn void holder_end(pid_t fuse, int lfd)
{
   close(lfd);   /* first: the name goes, so no one new comes */
   kill(fuse, SIGKILL);
   while (waitpid(fuse, NULL, 0) < 0 && errno == EINTR)
      ;
   _exit(0);
}

/* The keeper of a shared mount, once squashfuse serves it: serve LFD while
   any user lives and for the linger after the last; end when squashfuse
   does. CORE, the first launch, is the first user. Never returns. */
_Noreturn void holder_serve(const struct plan *p, const struct watch *core, pid_t fuse, int errr, int lfd,
                            int imgfd, int mpfd, const int *before, size_t ct)
{
   struct reply r = { .magic = HOLDER_MAGIC };
   identity(r.id, imgfd, mpfd);
   close(imgfd);
   close(mpfd);
   struct stat st;
   int root = open_new_mount(p->root, before, ct, FUSE_SUPER_MAGIC);
   int nsu = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
   int nsm = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
   if (root < 0 || fstat(root, &st) != 0 || nsu < 0 || nsm < 0)
      holder_end(fuse, lfd);   /* its users find no holder: an error each, or a fresh mount */
   close(root);
   r.root_dev = st.st_dev;
   r.root_ino = st.st_ino;
   struct watch fw;
   if (watch_open(&fw, fuse, true) != 0)
      holder_end(fuse, lfd);
   struct users u = { 0 };
   u.w = xrealloc(NULL, 16 * sizeof(*u.w));
   u.cap = 16;
   u.w[u.ct++] = *core;
   long long linger_end = -1;
   bool err_open = true;
   for (;;) {
      size_t nf = 4 + u.ct;
      struct pollfd *f = xrealloc(NULL, nf * sizeof(*f));
      f[0] = (struct pollfd){ lfd, POLLIN, 0 };
      f[1] = (struct pollfd){ fw.fd, POLLIN, 0 };
      f[2] = (struct pollfd){ err_open ? errr : -1, POLLIN, 0 };
      f[3] = (struct pollfd){ watch_sigchld_fd, POLLIN, 0 };
      for (size_t i = 0; i < u.ct; i++)
         f[4 + i] = (struct pollfd){ u.w[i].fd, POLLIN, 0 };
      long left = linger_end < 0 ? -1 : (long)(linger_end - now_ms());
      int n = poll(f, nf, watch_timeout(left < 0 && linger_end >= 0 ? 0 : left, false));
      if (n < 0 && errno != EINTR)
         holder_end(fuse, lfd);   /* can't watch: don't leave squashfuse behind */
      if (n < 0) {
         free(f);
         continue;
      }
      if (f[3].revents)
         watch_sigchld_drain();
      if (watch_ended(&fw, f[1].revents))
         holder_end(fuse, lfd);
      if (f[2].revents) {   /* drain squashfuse's stderr, so it can't block */
         char junk[512];
         ssize_t k = read(errr, junk, sizeof(junk));
         err_open = k > 0 || (k < 0 && errno == EINTR);
      }
      size_t kept = 0;
      for (size_t i = 0; i < u.ct; i++) {
         if (watch_ended(&u.w[i], f[4 + i].revents))
            watch_close(&u.w[i]);
         else
            u.w[kept++] = u.w[i];
      }
      u.ct = kept;
      bool incoming = f[0].revents != 0;
      free(f);
      if (incoming) {
         int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
         if (c >= 0) {
            serve_one(&u, c, &r, nsu, nsm);
            close(c);
         }
      }
      if (u.ct > 0)
         linger_end = -1;
      else if (linger_end < 0)
         linger_end = now_ms() + p->squash_linger_ms;
      else if (now_ms() >= linger_end)
         holder_end(fuse, lfd);
   }
}

/** A launch: finding the holder **/

static int h_userns = -1, h_mntns = -1;
static struct reply h_rep;

static void nap_ms(int ms)
{
   struct timespec ts = { 0, ms * 1000000L };
   nanosleep(&ts, NULL);
}

/* The namespace descriptor FD must be of TYPE, and a user namespace ours. */
static bool ns_ok(int fd, int type)
{
   uid_t owner;
   if (ioctl(fd, NS_GET_NSTYPE) != type)
      return false;
   return type != CLONE_NEWUSER || (ioctl(fd, NS_GET_OWNER_UID, &owner) == 0 && owner == getuid());
}

/* The holder's answer on S, by DEADLINE: 1 it holds our image (namespaces
   kept), 0 it ended first (retiring, or failed: try again), -1 not ours. */
static int receive(int s, const uint64_t id[ID_CT], long long deadline, const struct plan *p)
{
   struct pollfd pf = { s, POLLIN, 0 };
   for (;;) {
      long long left = deadline - now_ms();
      if (left <= 0)
         FATAL_NOERR("can't mount %s: its SquashFUSE holder did not answer within %.1f s "
                     "(CH_RUN_SQUASH_TIMEOUT)", p->squash_image, p->squash_timeout_ms / 1000.0);
      int n = poll(&pf, 1, (int)left);
      if (n > 0)
         break;
      T_(n == 0 || errno == EINTR, "can't poll SquashFUSE holder of %s", p->squash_image);
   }
   struct reply r;
   char ctl[CMSG_SPACE(2 * sizeof(int))];
   struct iovec iov = { &r, sizeof(r) };
   struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
   ssize_t got = recvmsg(s, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
   if (got < 0 && errno != ECONNRESET)
      FATAL("can't read SquashFUSE holder's answer for %s", p->squash_image);
   struct cmsghdr *cm = got > 0 ? CMSG_FIRSTHDR(&m) : NULL;
   int fds[2] = { -1, -1 };
   if (cm != NULL && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS
       && cm->cmsg_len == CMSG_LEN(sizeof(fds)))
      memcpy(fds, CMSG_DATA(cm), sizeof(fds));
   else if (cm != NULL && cm->cmsg_type == SCM_RIGHTS)   /* close whatever came */
      for (int *fd = (int *)CMSG_DATA(cm); (char *)fd < (char *)cm + cm->cmsg_len; fd++)
         close(*fd);
   if (got <= 0)
      return 0;
   bool ok = got == sizeof(r) && r.magic == HOLDER_MAGIC && !memcmp(r.id, id, sizeof(r.id)) && fds[0] >= 0
             && ns_ok(fds[0], CLONE_NEWUSER) && ns_ok(fds[1], CLONE_NEWNS);
   if (!ok) {
      if (fds[0] >= 0) close(fds[0]);
      if (fds[1] >= 0) close(fds[1]);
      return -1;
   }
   h_userns = fds[0];
   h_mntns = fds[1];
   h_rep = r;
   return 1;
}

enum { ATTACHED, TAKEN };

/* Name N: attach to its holder, or become its creator and then attach. */
static int attach_name(const struct plan *p, const uint64_t id[ID_CT], int n, int imgfd, long long deadline)
{
   struct sockaddr_un a;
   socklen_t al = sock_name(&a, id, n);
   for (int in_use = 0, retired = 0, created = 0;;) {
      int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      T_(s >= 0, "can't create socket for SquashFUSE holder");
      if (connect(s, (struct sockaddr *)&a, al) == 0) {
         struct ucred cr;
         socklen_t l = sizeof(cr);
         Z_(getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &l), "can't check SquashFUSE holder");
         int got = cr.uid != getuid() ? -1 : receive(s, id, deadline, p);
         close(s);
         if (got != 0)
            return got > 0 ? ATTACHED : TAKEN;
         if (++retired > 100)   /* holders that keep ending before answering: give up */
            FATAL_NOERR("can't mount %s: its SquashFUSE holder keeps ending", p->squash_image);
         nap_ms(2);
         continue;
      }
      T_(errno == ECONNREFUSED || errno == ENOENT || errno == EAGAIN,
         "can't connect to SquashFUSE holder of %s", p->squash_image);
      close(s);
      int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      T_(l >= 0, "can't create socket for SquashFUSE holder");
      if (bind(l, (struct sockaddr *)&a, al) == 0) {
         if (++created > 3)   /* each mounted, then ended before answering: don't loop */
            FATAL_NOERR("can't mount %s: its SquashFUSE holder ended right after mounting, %d times",
                        p->squash_image, created - 1);
         Z_(listen(l, SOMAXCONN), "can't listen for SquashFUSE users");
         squash_holder_start(p, l, imgfd);   /* mounted, or exits saying why */
         continue;
      }
      T_(errno == EADDRINUSE, "can't bind SquashFUSE holder's name");
      close(l);
      /* Bound, not listening: one of ours between bind and listen, or a
         plant. Not for long: then it is taken. */
      if (++in_use > 100 || now_ms() > deadline)
         return TAKEN;
      nap_ms(5);
   }
}

bool squash_attach(const struct plan *p)
{
   int imgfd = open(p->squash_image, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
   T_(imgfd >= 0, "can't open SquashFS image %s", p->squash_image);
   struct stat st;
   Z_(fstat(imgfd, &st), "can't stat SquashFS image %s", p->squash_image);
   if (!S_ISREG(st.st_mode))
      FATAL_NOERR("can't use image %s: not a regular file", p->squash_image);
   uint64_t id[ID_CT];
   identity(id, imgfd, squash_mount_point(p));
   watch_choose();
   long long deadline = now_ms() + p->squash_timeout_ms + 10000;
   for (int n = 0; n < NAMES_MAX; n++) {
      if (attach_name(p, id, n, imgfd, deadline) == ATTACHED) {
         close(imgfd);
         DEBUG("SquashFS %s: shared mount (holder name %d)", p->squash_image, n);
         return true;
      }
      if (n == 0)
         WARN("SquashFS %s: the shared mount's name is taken by another process; trying others",
              p->squash_image);
   }
   WARN("SquashFS %s: all %d shared-mount names taken; mounting privately", p->squash_image, NAMES_MAX);
   close(imgfd);
   return false;
}

void squash_detach(void)
{
   close(h_userns);
   close(h_mntns);
   h_userns = h_mntns = -1;
}

int squash_enter(const struct plan *p)
{
   Z_(setns(h_userns, CLONE_NEWUSER), "can't enter user namespace of SquashFUSE holder of %s",
      p->squash_image);
   Z_(setns(h_mntns, CLONE_NEWNS), "can't enter mount namespace of SquashFUSE holder of %s",
      p->squash_image);
   squash_detach();
   /* Ours: the container's binds and pivot_root must not reach the holder. */
   Z_(unshare(CLONE_NEWNS), "can't create mount namespace");
   Z_(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "can't make / private");
   /* The shared mount, by path in our copy of the holder's namespace: it
      must be the root of a FUSE mount of the holder's superblock (only the
      one mount of it is in that namespace: a path renamed to lead
      elsewhere can't pass). */
   int root = open(p->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
   T_(root >= 0, "can't open SquashFS mount of %s at %s", p->squash_image, p->root);
   struct stat st, up;
   struct statfs sf;
   int upfd = openat(root, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
   T_(upfd >= 0 && fstat(root, &st) == 0 && fstat(upfd, &up) == 0 && fstatfs(root, &sf) == 0,
      "can't use SquashFS mount of %s at %s", p->squash_image, p->root);
   close(upfd);
   if (st.st_dev != h_rep.root_dev || st.st_ino != h_rep.root_ino || up.st_dev == st.st_dev
       || (long)sf.f_type != FUSE_SUPER_MAGIC)
      FATAL_NOERR("can't mount %s: mount point %s changed while mounting (renamed by someone who can "
                  "write to its directory?)", p->squash_image, p->root);
   INFO("SquashFS %s mounted at %s (shared)", p->squash_image, p->root);
   return root;
}

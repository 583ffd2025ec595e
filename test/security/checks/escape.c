/* Escape battery, run INSIDE a ch-run container. Built statically by
   test/security/escape.test.js and copied into a test image.

   Usage: escape VICTIM_PID SECRET_PATH HOST_UID HOST_GID SYSFS_ROOT_ONLY
   SYSFS_ROOT_ONLY: a sysfs file only root may read, found by the test on
   this kernel (which exist varies), or "-" if it found none.
   Also: escape --suid-probe, run installed setuid (see check_suid).

   Prints one line per check: "ok NAME: detail", "FAIL NAME: detail" or
   "skip NAME: reason". Every check is an attempt to do something the
   container must not be able to do; "ok" means the kernel refused (or the
   attempt had no effect). Exit status 0 unless the program itself broke. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int fails = 0;

static void report(const char *status, const char *name, const char *fmt, ...)
{
   va_list ap;
   printf("%s %s: ", status, name);
   va_start(ap, fmt);
   vprintf(fmt, ap);
   va_end(ap);
   printf("\n");
   fflush(stdout);
   if (!strcmp(status, "FAIL"))
      fails++;
}

/* A syscall result R (with errno) is "denied" when R < 0 and errno is one of
   the refusals we accept for NAME. */
static void expect_denied_(const char *name, long r, int err, const int *ok_errnos)
{
   if (r >= 0) {
      report("FAIL", name, "succeeded (returned %ld)", r);
      return;
   }
   for (const int *e = ok_errnos; *e; e++)
      if (err == *e) {
         report("ok", name, "denied: %s", strerrorname_np(err));
         return;
      }
   report("FAIL", name, "failed, but with unexpected %s (%s)", strerrorname_np(err), strerror(err));
}

/* Evaluate the call first, then read errno (argument order is unspecified). */
#define expect_denied(name, call, err_ignored, oks) \
   do { long r_ = (long)(call); int e_ = errno; expect_denied_((name), r_, e_, (oks)); } while (0)

static const int PERM[] = { EPERM, EACCES, 0 };
static const int PERM_RO[] = { EPERM, EACCES, EROFS, 0 };

static int file_has(const char *path, const char *needle)
{
   char buf[4096];
   int fd = open(path, O_RDONLY);
   if (fd < 0) return 0;
   ssize_t n = read(fd, buf, sizeof(buf) - 1);
   close(fd);
   if (n < 0) return 0;
   buf[n] = '\0';
   return strstr(buf, needle) != NULL;
}

/* The image root is marked by /etc/os-release naming the test image. */
#define IMAGE_MARK "ch-toolkit busybox test image"

static void check_chroot(void)
{
   struct stat before, after;
   if (stat("/", &before) != 0) { report("FAIL", "chroot-escape", "stat /: %s", strerror(errno)); return; }
   pid_t pid = fork();
   if (pid == 0) {
      /* Classic escape: chroot into a subdir keeping cwd outside, climb. */
      char dir[64];
      snprintf(dir, sizeof(dir), "/tmp/.chk-chroot-%d", getpid());
      mkdir(dir, 0700);
      int outside = open("/", O_RDONLY | O_DIRECTORY);
      if (chroot(dir) != 0) {
         rmdir(dir);
         _exit(errno == EPERM ? 10 : 11);  /* no CAP_SYS_CHROOT: can't even try */
      }
      rmdir(dir);   /* absolute path lookups now start in DIR; fine, it's gone */
      if (fchdir(outside) != 0) _exit(12);
      for (int i = 0; i < 256; i++)
         if (chdir("..") != 0) _exit(13);
      if (chroot(".") != 0) _exit(14);
      struct stat st;
      if (stat("/", &st) != 0) _exit(15);
      if (st.st_dev != before.st_dev || st.st_ino != before.st_ino) _exit(20);
      if (!file_has("/etc/os-release", IMAGE_MARK)) _exit(21);
      if (access("/var/tmp", F_OK) == 0 && access("/bin/busybox", F_OK) != 0) _exit(22);
      _exit(0);
   }
   int status;
   waitpid(pid, &status, 0);
   int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
   if (rc == 0)
      report("ok", "chroot-escape", "chroot + chdir(..)x256 + chroot(.) still lands at the image root");
   else if (rc == 10)
      report("ok", "chroot-escape", "chroot denied (EPERM)");
   else if (rc == 20 || rc == 21 || rc == 22)
      report("FAIL", "chroot-escape", "escaped the image root (code %d)", rc);
   else
      report("FAIL", "chroot-escape", "unexpected failure code %d", rc);
   (void)after;
}

static void check_open_denied(const char *name, const char *path, int flags)
{
   if (access(path, F_OK) != 0 && errno == ENOENT) {
      report("skip", name, "%s does not exist on this machine", path);
      return;
   }
   int fd = open(path, flags);
   int e = errno;
   if (fd >= 0) {
      /* Some procfs files open but refuse the read itself. */
      char b[64];
      ssize_t n = read(fd, b, sizeof(b));
      e = errno;
      close(fd);
      if (n < 0 && (e == EPERM || e == EACCES)) {
         report("ok", name, "open succeeded, read denied: %s", strerrorname_np(e));
         return;
      }
      report("FAIL", name, "%s readable (%zd bytes)", path, n);
      return;
   }
   expect_denied_(name, fd, e, PERM_RO);
}

static void check_mknod(void)
{
   char path[64];
   snprintf(path, sizeof(path), "/tmp/.chk-null-%d", getpid());
   int r = mknod(path, S_IFCHR | 0666, makedev(1, 3));
   int e = errno;
   if (r == 0) {
      int fd = open(path, O_RDWR);
      int oe = errno;
      unlink(path);
      if (fd >= 0) { close(fd); report("FAIL", "mknod", "created and opened a char device"); }
      else report("ok", "mknod", "created but unusable: %s", strerrorname_np(oe));
      return;
   }
   expect_denied_("mknod", r, e, PERM_RO);
   r = mknod("/dev/.chk-mem", S_IFCHR | 0666, makedev(1, 1));
   expect_denied("mknod-dev", r, errno, PERM_RO);
   if (r == 0) unlink("/dev/.chk-mem");
}

/* Binding a privileged port: below net.ipv4.ip_unprivileged_port_start
   (Linux 4.11; 1024 before, and by default), a setting of the host's network
   namespace, which the container shares. */
static void check_port(void)
{
   int start = 1024;
   FILE *f = fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "r");
   if (f != NULL) {
      if (fscanf(f, "%d", &start) != 1) start = 1024;
      fclose(f);
   }
   if (start <= 1) {
      report("skip", "bind-privileged-port", "the host lets anyone bind any port "
             "(net.ipv4.ip_unprivileged_port_start=%d)", start);
      return;
   }
   int s = socket(AF_INET, SOCK_STREAM, 0);
   if (s < 0) { report("FAIL", "bind-privileged-port", "socket: %s", strerror(errno)); return; }
   struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(start - 1) };
   a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
   int r = bind(s, (struct sockaddr *)&a, sizeof(a));
   expect_denied("bind-privileged-port", r, errno, PERM);
   close(s);
}

/* The image root itself, as statvfs(2) sees it: read-only and nosuid. */
static void check_root_flags(void)
{
   struct statvfs sv;
   if (statvfs("/", &sv) != 0) { report("FAIL", "image-root-ro", "statvfs /: %s", strerror(errno)); return; }
   if (sv.f_flag & ST_RDONLY) report("ok", "image-root-ro", "/ is mounted read-only");
   else report("FAIL", "image-root-ro", "/ is mounted read-write");
   if (sv.f_flag & ST_NOSUID) report("ok", "image-root-nosuid", "/ is mounted nosuid");
   else report("FAIL", "image-root-nosuid", "/ is mounted without nosuid");
}

static void check_mounts(int fake_root)
{
   int r;
   /* Mounting anything: denied without capabilities. Fake root owns its
      inner mount namespace, so the kernel lets it mount a fresh tmpfs there;
      what matters is that it can't touch the locked mounts (below). */
   r = mount("none", "/mnt/0", "tmpfs", 0, NULL);
   if (fake_root) {
      if (r == 0) { umount("/mnt/0"); report("ok", "mount-tmpfs", "fake root may mount in its own namespace (allowed by design)"); }
      else report("ok", "mount-tmpfs", "denied: %s", strerrorname_np(errno));
   } else {
      expect_denied("mount-tmpfs", r, errno, PERM);
   }
   r = mount("/tmp", "/mnt/1", NULL, MS_BIND, NULL);
   if (!fake_root) expect_denied("mount-bind", r, errno, PERM);
   else if (r == 0) umount("/mnt/1");

   r = mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL);
   expect_denied("remount-root-rw-bind", r, errno, PERM);
   r = mount(NULL, "/", NULL, MS_REMOUNT, NULL);
   expect_denied("remount-root-rw-sb", r, errno, PERM);
   r = mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_RELATIME, NULL);
   expect_denied("remount-root-rw-keepflags", r, errno, PERM);
   r = mount(NULL, "/etc/hosts", NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_RELATIME, NULL);
   expect_denied("remount-hosts-rw", r, errno, PERM);
   r = mount(NULL, "/etc/passwd", NULL, MS_REMOUNT | MS_BIND | MS_RELATIME, NULL);
   expect_denied("remount-passwd-rw", r, errno, PERM);
   /* Re-asserting rdonly is harmless; dropping nosuid is not. */
   r = mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_RELATIME, NULL);
   if (r == 0) {
      report("FAIL", "remount-root-suid", "could drop nosuid from the image root");
   } else {
      report("ok", "remount-root-suid", "denied: %s", strerrorname_np(errno));
   }
   static const int UMOUNT_DENIED[] = { EPERM, EINVAL, EACCES, 0 };
   const char *binds[] = { "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/resolv.conf", "/tmp", "/proc", "/dev",
                           "/sys", "/", NULL };
   for (const char **b = binds; *b; b++) {
      char name[64];
      snprintf(name, sizeof(name), "umount-%s", *b);
      expect_denied(name, umount2(*b, MNT_DETACH), errno, UMOUNT_DENIED);
   }
   /* Still what the container should see. */
   if (!file_has("/etc/os-release", IMAGE_MARK))
      report("FAIL", "mounts-intact", "image root no longer visible");
   else
      report("ok", "mounts-intact", "image root still in place after the attempts");
   r = syscall(SYS_pivot_root, "/tmp", "/tmp");
   static const int PIVOT_DENIED[] = { EPERM, EINVAL, EBUSY, 0 };
   expect_denied("pivot_root", r, errno, PIVOT_DENIED);
   r = mount("/", "/mnt/2", NULL, MS_MOVE, NULL);
   expect_denied("mount-move-root", r, errno, PIVOT_DENIED);
}

static void check_ids(uid_t host_uid, gid_t host_gid)
{
   static const int DENIED[] = { EPERM, EINVAL, 0 };
   gid_t g[1] = { 0 };
   expect_denied("setgroups", setgroups(1, g), errno, DENIED);
   uid_t me = getuid();
   uid_t other = me == 0 ? 1 : 0;
   if (me != 4242) other = 4242;
   expect_denied("setuid-other", setuid(other), errno, DENIED);
   expect_denied("seteuid-other", seteuid(other), errno, DENIED);
   expect_denied("setreuid-root", setreuid(0 == me ? 4242 : 0, 0 == me ? 4242 : 0), errno, DENIED);
   expect_denied("setgid-other", setgid(getgid() == 4242 ? 4243 : 4242), errno, DENIED);
   if (getuid() != me) report("FAIL", "uid-unchanged", "uid changed to %u", getuid());

   /* Exactly one mapping: the invoking user's uid (gid) on the host. */
   char buf[256];
   const char *maps[] = { "/proc/self/uid_map", "/proc/self/gid_map" };
   unsigned want[] = { host_uid, host_gid };
   for (int i = 0; i < 2; i++) {
      int fd = open(maps[i], O_RDONLY);
      ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
      if (fd >= 0) close(fd);
      if (n < 0) { report("FAIL", maps[i] + 11, "can't read"); continue; }
      buf[n] = '\0';
      unsigned in, out, ct;
      int lines = 0;
      for (char *p = buf; *p; p++) if (*p == '\n') lines++;
      if (lines == 1 && sscanf(buf, "%u %u %u", &in, &out, &ct) == 3 && out == want[i] && ct == 1)
         report("ok", maps[i] + 11, "one mapping: %u -> host %u", in, out);
      else
         report("FAIL", maps[i] + 11, "unexpected map: %s", buf);
   }
}

static void check_status(void)
{
   char buf[8192];
   int fd = open("/proc/self/status", O_RDONLY);
   ssize_t n = read(fd, buf, sizeof(buf) - 1);
   close(fd);
   buf[n > 0 ? n : 0] = '\0';
   if (strstr(buf, "NoNewPrivs:\t1"))
      report("ok", "no-new-privs", "NoNewPrivs: 1");
   else
      report("FAIL", "no-new-privs", "NoNewPrivs not set");
   if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
      report("FAIL", "no-new-privs-prctl", "PR_GET_NO_NEW_PRIVS != 1");
}

/* /bin/suid-probe is this program, owned by the invoking user (the one uid
   mapped in the container, so the kernel could honour its setuid bit; a
   root-owned one is unmapped, and ignored whatever the mount says), mode
   4755. A setuid bit the kernel honours clears personality flags such as
   ADDR_NO_RANDOMIZE even when the uid does not change: set it, run the
   probe, and see whether it survived. Only nosuid and no_new_privs stand in
   the way. */
static int suid_probe(void)
{
   uid_t r, e, s;
   gid_t rg, eg, sg;
   getresuid(&r, &e, &s);
   getresgid(&rg, &eg, &sg);
   printf("%u %u %u %u %u %d\n", r, e, s, rg, eg, personality(0xffffffff));
   return 0;
}

static void check_suid(void)
{
   struct stat st;
   if (stat("/bin/suid-probe", &st) != 0 || !(st.st_mode & S_ISUID) || st.st_uid != getuid()) {
      report("FAIL", "setuid-binary", "/bin/suid-probe missing, not setuid, or not the user's");
      return;
   }
   int p[2];
   if (pipe(p) != 0) return;
   pid_t pid = fork();
   if (pid == 0) {
      dup2(p[1], 1);
      if (personality(ADDR_NO_RANDOMIZE) < 0) _exit(126);
      execl("/bin/suid-probe", "suid-probe", "--suid-probe", (char *)NULL);
      _exit(127);
   }
   close(p[1]);
   char buf[256];
   ssize_t n = read(p[0], buf, sizeof(buf) - 1);
   close(p[0]);
   waitpid(pid, NULL, 0);
   buf[n > 0 ? n : 0] = '\0';
   unsigned r, e, s, rg, eg;
   int pers;
   if (sscanf(buf, "%u %u %u %u %u %d", &r, &e, &s, &rg, &eg, &pers) != 6) {
      report("FAIL", "setuid-binary", "bad output: %s", buf);
      return;
   }
   if (!(pers & ADDR_NO_RANDOMIZE))
      report("FAIL", "setuid-binary", "the kernel honoured the setuid bit (personality cleared)");
   else if (e != r || s != r || eg != rg || e != getuid())
      report("FAIL", "setuid-binary", "ids changed: ruid %u euid %u suid %u rgid %u egid %u", r, e, s, rg, eg);
   else
      report("ok", "setuid-binary", "setuid bit of the user's own binary ignored (ids and personality kept)");
}

static void check_writes(void)
{
   char path[64];
   snprintf(path, sizeof(path), "/.chk-write-%d", getpid());
   int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
   if (fd >= 0) { close(fd); unlink(path); }
   expect_denied("write-image-root-create", fd, errno, PERM_RO);
   fd = open("/etc/os-release", O_WRONLY | O_APPEND);
   if (fd >= 0) close(fd);
   expect_denied("write-image-file", fd, errno, PERM_RO);
   expect_denied("mkdir-image-root", mkdir("/.chk-dir", 0755), errno, PERM_RO);
   fd = open("/etc/hosts", O_WRONLY | O_APPEND);
   if (fd >= 0) close(fd);
   expect_denied("write-etc-hosts", fd, errno, PERM_RO);
   fd = open("/etc/resolv.conf", O_WRONLY | O_APPEND);
   if (fd >= 0) close(fd);
   expect_denied("write-etc-resolv.conf", fd, errno, PERM_RO);
   fd = open("/etc/passwd", O_WRONLY | O_APPEND);
   if (fd >= 0) close(fd);
   expect_denied("write-etc-passwd", fd, errno, PERM_RO);
   expect_denied("chmod-image-file", chmod("/etc/os-release", 0666), errno, PERM_RO);
   expect_denied("sethostname", sethostname("pwned", 5), errno, PERM);
   fd = open("/proc/sys/kernel/hostname", O_WRONLY);
   if (fd >= 0) close(fd);
   expect_denied("write-proc-sys", fd, errno, PERM_RO);
}

static void check_victim(pid_t victim)
{
   expect_denied("kill-other-user", kill(victim, SIGKILL), errno, PERM);
   expect_denied("kill-other-user-sig0", kill(victim, 0), errno, PERM);
   expect_denied("kill-init", kill(1, SIGKILL), errno, PERM);
   expect_denied("ptrace-other-user", ptrace(PTRACE_ATTACH, victim, NULL, NULL), errno, PERM);
   char path[64];
   snprintf(path, sizeof(path), "/proc/%d/mem", victim);
   check_open_denied("read-other-proc-mem", path, O_RDONLY);
   snprintf(path, sizeof(path), "/proc/%d/environ", victim);
   check_open_denied("read-other-proc-environ", path, O_RDONLY);
}

static void check_handle(void)
{
   struct { struct file_handle fh; unsigned char data[128]; } h;
   h.fh.handle_bytes = 128;
   int mnt;
   if (name_to_handle_at(AT_FDCWD, "/etc/os-release", &h.fh, &mnt, 0) != 0) {
      report("skip", "open_by_handle_at", "name_to_handle_at: %s", strerror(errno));
      return;
   }
   int fd = open_by_handle_at(AT_FDCWD, &h.fh, O_RDONLY);
   if (fd >= 0) close(fd);
   expect_denied("open_by_handle_at", fd, errno, PERM);
}

int main(int argc, char **argv)
{
   if (argc == 2 && !strcmp(argv[1], "--suid-probe"))
      return suid_probe();
   if (argc != 6) { fprintf(stderr, "usage: escape VICTIM_PID SECRET HOST_UID HOST_GID SYSFS_ROOT_ONLY\n"); return 2; }
   pid_t victim = atoi(argv[1]);
   const char *secret = argv[2];
   uid_t host_uid = strtoul(argv[3], NULL, 10);
   gid_t host_gid = strtoul(argv[4], NULL, 10);
   int fake_root = getuid() == 0;
   setvbuf(stdout, NULL, _IOLBF, 0);
   printf("# uid %u gid %u euid %u\n", getuid(), getgid(), geteuid());

   check_chroot();
   check_open_denied("read-dev-mem", "/dev/mem", O_RDONLY);
   check_open_denied("read-dev-kmem", "/dev/kmem", O_RDONLY);
   check_open_denied("read-dev-port", "/dev/port", O_RDONLY);
   check_open_denied("read-cpu_dma_latency", "/dev/cpu_dma_latency", O_RDONLY);
   check_open_denied("read-proc-kcore", "/proc/kcore", O_RDONLY);
   check_open_denied("read-proc-kmsg", "/proc/kmsg", O_RDONLY);
   check_open_denied("read-proc-vmallocinfo", "/proc/vmallocinfo", O_RDONLY);
   check_open_denied("read-proc-1-environ", "/proc/1/environ", O_RDONLY);
   if (strcmp(argv[5], "-") != 0)
      check_open_denied("read-sysfs-root-only", argv[5], O_RDONLY);
   else
      report("skip", "read-sysfs-root-only", "the test found no sysfs file only root may read on this kernel");
   check_open_denied("read-host-secret", secret, O_RDONLY);
   check_open_denied("read-block-device", "/dev/vda", O_RDONLY);
   check_mknod();
   check_port();
   check_root_flags();
   check_mounts(fake_root);
   check_ids(host_uid, host_gid);
   check_status();
   check_suid();
   check_writes();
   check_victim(victim);
   check_handle();
   printf("# %d failed\n", fails);
   return 0;
}

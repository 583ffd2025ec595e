// The confined writer (see writer.h).

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "writer.h"

namespace chtar {
namespace {

int sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
   struct open_how how;
   memset(&how, 0, sizeof(how));
   how.flags = flags;
   how.resolve = resolve;
   return syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

bool openat2_works(int rootfd)
{
   int fd = sys_openat2(rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
   if (fd >= 0) {
      close(fd);
      return true;
   }
   return false;   // ENOSYS (old kernel), EPERM (seccomp), ...
}

}  // namespace

// Validate a member name; return its components (empty: the root itself).
std::vector<std::string> split_name(const std::string &name, const char *what)
{
   if (name.find('\0') != std::string::npos)
      throw XErr(std::string(what) + " contains a NUL byte");
   if (name.size() >= PATH_MAX)
      throw XErr(std::string(what) + " too long (" + std::to_string(name.size()) + " bytes)");
   if (!name.empty() && name[0] == '/')
      throw XErr(std::string("absolute ") + what + " refused");
   if (name.empty())
      throw XErr(std::string("empty ") + what);
   std::vector<std::string> out;
   size_t i = 0;
   while (i <= name.size()) {
      size_t j = name.find('/', i);
      if (j == std::string::npos)
         j = name.size();
      std::string c = name.substr(i, j - i);
      if (c == "..")
         throw XErr(std::string("'..' in ") + what + " refused");
      if (c.size() > NAME_MAX)
         throw XErr(std::string(what) + " component too long (" + std::to_string(c.size()) + " bytes)");
      if (!c.empty() && c != ".")
         out.push_back(c);
      i = j + 1;
   }
   return out;
}

std::string join(const std::vector<std::string> &c, size_t n)
{
   std::string s;
   for (size_t i = 0; i < n; i++) {
      if (i)
         s += '/';
      s += c[i];
   }
   return s;
}

void write_all(int fd, const char *p, size_t k, const std::string &name)
{
   size_t done = 0;
   while (done < k) {
      ssize_t r = ::write(fd, p + done, k - done);
      if (r < 0 && errno == EINTR)
         continue;
      if (r < 0)
         throw XErr(name + ": can't write", errno);
      done += r;
   }
}

Writer::Writer(int r, bool use_openat2, mode_t um) : root(r), umask_(um)
{
   beneath = use_openat2 && openat2_works(r);
}

void Writer::invalidate()
{
   cached.reset();
   cached_path.clear();
}

// Open directory C[0..N) under root without creating anything; -errno on failure.
int Writer::open_dir(const std::vector<std::string> &c, size_t n)
{
   if (n == 0)
      return fcntl(root, F_DUPFD_CLOEXEC, 0);
   if (beneath) {
      int fd = sys_openat2(root, join(c, n).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC,
                           RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
      return fd >= 0 ? fd : -errno;
   }
   int fd = fcntl(root, F_DUPFD_CLOEXEC, 0);
   for (size_t i = 0; i < n && fd >= 0; i++) {
      int nfd = openat(fd, c[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      int e = errno;
      if (nfd < 0) {
         // O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR: report it as the refusal it is.
         struct stat st;
         if (e == ENOTDIR && fstatat(fd, c[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            e = ELOOP;
         close(fd);
         return -e;
      }
      close(fd);
      fd = nfd;
   }
   return fd;
}

// The parent directory of C, created (0755) where missing. Returned fd is
// owned by the cache; valid until the next call or invalidate().
int Writer::parent(const std::vector<std::string> &c, const std::string &name)
{
   size_t n = c.size() - 1;
   std::string p = join(c, n);
   if (cached.fd >= 0 && p == cached_path)
      return cached.fd;
   int fd = open_dir(c, n);
   if (fd == -ENOENT) {
      // Create missing ancestors one by one, each under a safely opened parent.
      for (size_t i = 1; i <= n; i++) {
         int a = open_dir(c, i);
         if (a >= 0) {
            close(a);
            continue;
         }
         if (a != -ENOENT)
            fail_resolve(name, -a);
         Fd pa(open_dir(c, i - 1));
         if (pa.fd < 0)
            fail_resolve(name, -pa.fd);
         if (mkdirat(pa.fd, c[i - 1].c_str(), 0755) != 0 && errno != EEXIST)
            throw XErr(name + ": can't create directory " + join(c, i), errno);
      }
      fd = open_dir(c, n);
   }
   if (fd < 0)
      fail_resolve(name, -fd);
   cached.reset(fd);
   cached_path = p;
   return fd;
}

void Writer::fail_resolve(const std::string &name, int e)
{
   if (!beneath && e == ELOOP)
      throw XErr(name + ": refused: path goes through a symlink (without openat2, symlinks in parent paths"
                 " are not followed)", e);
   if (e == EXDEV || e == ELOOP)
      throw XErr(name + ": refused: path leaves the destination through a symlink or '..'", e);
   if (e == ENOTDIR)
      throw XErr(name + ": a parent is not a directory", e);
   throw XErr(name + ": can't open parent directory", e);
}

// Remove a non-directory at PFD/BASE so a new entry can take its place.
void Writer::unlink_old(int pfd, const std::string &base, const std::string &name)
{
   int rc = unlinkat(pfd, base.c_str(), 0);
   int e = errno;
   invalidate();   // a cached path might have resolved through what went away (closes PFD)
   errno = e;
   if (rc != 0 && errno != ENOENT) {
      if (errno == EISDIR || errno == EPERM)
         throw XErr(name + ": can't replace an existing directory", EISDIR);
      throw XErr(name + ": can't remove existing entry", errno);
   }
}

int Writer::create_file(const std::vector<std::string> &c, const std::string &name, uint32_t mode)
{
   int pfd = parent(c, name);
   const std::string &base = c.back();
   mode_t m = clean_mode(mode);
   int fd = openat(pfd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, m);
   if (fd < 0 && errno == EEXIST) {
      unlink_old(pfd, base, name);
      pfd = parent(c, name);
      fd = openat(pfd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, m);
   }
   if (fd < 0)
      throw XErr(name + ": can't create file", errno);
   if ((m & umask_) && fchmod(fd, m) != 0) {
      int e = errno;
      close(fd);
      throw XErr(name + ": can't set mode", e);
   }
   return fd;
}

void Writer::make_dir(const std::vector<std::string> &c, const std::string &name, uint32_t mode)
{
   int pfd = parent(c, name);
   const std::string &base = c.back();
   mode_t m = clean_mode(mode) | 0700;
   if (mkdirat(pfd, base.c_str(), m) != 0) {
      if (errno != EEXIST)
         throw XErr(name + ": can't create directory", errno);
      struct stat st;
      if (fstatat(pfd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
         throw XErr(name + ": can't stat", errno);
      if (!S_ISDIR(st.st_mode)) {
         unlink_old(pfd, base, name);
         pfd = parent(c, name);
         if (mkdirat(pfd, base.c_str(), m) != 0)
            throw XErr(name + ": can't create directory", errno);
      } else if ((st.st_mode & 07777) == m) {
         return;
      } else {
         // An existing directory (made for an earlier entry inside it): the archive's mode wins.
         if (fchmodat(pfd, base.c_str(), m, 0) != 0)
            throw XErr(name + ": can't set mode", errno);
         return;
      }
   }
   if ((m & umask_) && fchmodat(pfd, base.c_str(), m, 0) != 0)
      throw XErr(name + ": can't set mode", errno);
}

void Writer::make_symlink(const std::vector<std::string> &c, const std::string &name, const std::string &target)
{
   if (target.find('\0') != std::string::npos)
      throw XErr(name + ": symlink target contains a NUL byte");
   if (target.empty() || target.size() >= PATH_MAX)
      throw XErr(name + ": symlink target empty or too long");
   int pfd = parent(c, name);
   const std::string &base = c.back();
   if (symlinkat(target.c_str(), pfd, base.c_str()) != 0) {
      if (errno != EEXIST)
         throw XErr(name + ": can't create symlink", errno);
      unlink_old(pfd, base, name);
      pfd = parent(c, name);
      if (symlinkat(target.c_str(), pfd, base.c_str()) != 0)
         throw XErr(name + ": can't create symlink", errno);
   }
   invalidate();   // a new symlink may change how cached paths resolve
}

void Writer::make_hardlink(const std::vector<std::string> &c, const std::string &name, const std::string &target)
{
   std::vector<std::string> t = split_name(target, "hardlink target");
   if (t.empty())
      throw XErr(name + ": hardlink to the root refused");
   Fd tfd(open_dir(t, t.size() - 1));
   if (tfd.fd < 0) {
      if (tfd.fd == -ENOENT)
         throw XErr(name + ": hardlink target " + target + " not in archive", ENOENT);
      fail_resolve(name + " (hardlink target " + target + ")", -tfd.fd);
   }
   int pfd = parent(c, name);
   const std::string &base = c.back();
   // flags 0: never follows a symlink at the target; the link stays inside.
   if (linkat(tfd.fd, t.back().c_str(), pfd, base.c_str(), 0) != 0) {
      if (errno == ENOENT)
         throw XErr(name + ": hardlink target " + target + " not in archive", ENOENT);
      if (errno != EEXIST)
         throw XErr(name + ": can't create hardlink to " + target, errno);
      unlink_old(pfd, base, name);
      pfd = parent(c, name);
      if (linkat(tfd.fd, t.back().c_str(), pfd, base.c_str(), 0) != 0)
         throw XErr(name + ": can't create hardlink to " + target, errno);
   }
}

}  // namespace chtar

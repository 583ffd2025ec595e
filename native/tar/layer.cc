// OCI layer mode (see layer.h).

#include <cerrno>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layer.h"

namespace chtar {
namespace {

const std::string WH = ".wh.";
const std::string OPAQUE = ".wh..wh..opq";

std::string sub(const std::string &dir, const std::string &name) { return dir.empty() ? name : dir + "/" + name; }

// The entries of the directory open as FD (read through a fresh descriptor).
std::vector<std::string> entries(int fd, const std::string &what)
{
   int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
   if (dfd < 0)
      throw XErr(what + ": can't open directory", errno);
   DIR *d = fdopendir(dfd);
   if (!d) {
      int e = errno;
      close(dfd);
      throw XErr(what + ": can't read directory", e);
   }
   std::vector<std::string> out;
   errno = 0;
   while (struct dirent *de = readdir(d)) {
      std::string n = de->d_name;
      if (n != "." && n != "..")
         out.push_back(n);
      errno = 0;
   }
   int e = errno;
   closedir(d);
   if (e)
      throw XErr(what + ": can't read directory", e);
   return out;
}

}  // namespace

void remove_tree(int dfd, const std::string &name, const std::string &what)
{
   struct stat st;
   if (fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT)
         return;
      throw XErr(what + ": can't stat", errno);
   }
   if (S_ISDIR(st.st_mode)) {
      Fd fd(openat(dfd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (fd.fd < 0)
         throw XErr(what + ": can't open directory", errno);
      for (const std::string &e : entries(fd.fd, what))
         remove_tree(fd.fd, e, what + "/" + e);
   }
   if (unlinkat(dfd, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0 && errno != ENOENT)
      throw XErr(what + ": can't remove", errno);
}

bool Layer::before(const std::vector<std::string> &c, const std::string &name, char type)
{
   const std::string &base = c.back();
   std::string dir = join(c, c.size() - 1);
   if (base == OPAQUE) {
      opaque(c, name);
      whiteouts++;
      return true;
   }
   if (base.compare(0, WH.size(), WH) == 0) {
      std::string victim = base.substr(WH.size());
      if (victim.compare(0, WH.size(), WH) == 0)
         return true;   // AUFS bookkeeping (.wh..wh.plnk, ...)
      if (victim.empty() || victim == "." || victim == "..")
         throw XErr(name + ": bad whiteout name");
      whiteouts++;
      if (mine.count(sub(dir, victim)))
         return true;   // this layer's own entry: not a lower layer's
      Fd pfd(w.open_dir(c, c.size() - 1));
      if (pfd.fd == -ENOENT)
         return true;   // nothing there to hide
      if (pfd.fd < 0)
         w.fail_resolve(name, -pfd.fd);
      remove_tree(pfd.fd, victim, sub(dir, victim));
      w.invalidate();
      return true;
   }
   bool replaced = mine.count(join(c, c.size())) != 0;
   for (size_t i = 1; i <= c.size(); i++)
      mine.insert(join(c, i));
   if (type != '5' && !replaced) {
      // A non-directory over a lower layer's directory replaces the whole tree.
      int pfd = w.parent(c, name);
      struct stat st;
      if (fstatat(pfd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
         remove_tree(pfd, base, join(c, c.size()));
         w.invalidate();
      }
   }
   return false;
}

// DIR/.wh..wh..opq: DIR keeps only what this layer put in it.
void Layer::opaque(const std::vector<std::string> &c, const std::string &name)
{
   Fd dfd(w.open_dir(c, c.size() - 1));
   if (dfd.fd == -ENOENT)
      return;
   if (dfd.fd < 0)
      w.fail_resolve(name, -dfd.fd);
   clear_lower(dfd.fd, join(c, c.size() - 1), name);
   w.invalidate();
}

// Remove from DFD (path DIR) everything not written by this layer, descending
// into this layer's directories, which may hold lower layers' entries too.
void Layer::clear_lower(int dfd, const std::string &dir, const std::string &name)
{
   for (const std::string &e : entries(dfd, dir.empty() ? "/" : dir)) {
      std::string p = sub(dir, e);
      if (!mine.count(p)) {
         remove_tree(dfd, e, p);
         continue;
      }
      struct stat st;
      if (fstatat(dfd, e.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
         throw XErr(p + ": can't stat", errno);
      if (!S_ISDIR(st.st_mode))
         continue;
      Fd fd(openat(dfd, e.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (fd.fd < 0)
         throw XErr(p + ": can't open directory", errno);
      clear_lower(fd.fd, p, name);
   }
}

}  // namespace chtar

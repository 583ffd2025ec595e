// The confined writer: creates entries under a destination directory so that
// no name, symlink or hardlink can make a write land outside it.
//
// Every parent directory is opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_MAGICLINKS) relative to the destination, so neither "..", nor an
// absolute symlink, nor a symlink planted by an earlier entry can lead out. On
// kernels without openat2 (< 5.6) the parent is walked one component at a
// time with openat(O_NOFOLLOW), refusing any symlink on the way. The final
// component is always created with O_CREAT|O_EXCL|O_NOFOLLOW (or symlinkat,
// linkat, mkdirat, which never follow it), after unlinking whatever
// non-directory was there, so a write never goes through an existing symlink
// or hardlink. Ownership is not restored; setuid/setgid bits are dropped;
// directories are made user-writable (u+rwx) so the user can delete the image.

#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

#include "common.h"

namespace chtar {

// Validate a member name; return its components (empty: the root itself).
// WHAT names it in errors ("name", "hardlink target", "path").
std::vector<std::string> split_name(const std::string &name, const char *what);

// The first N components of C joined by '/'.
std::string join(const std::vector<std::string> &c, size_t n);

struct Writer {
   int root;
   bool beneath;   // openat2 available
   mode_t umask_;
   std::string cached_path;
   Fd cached;

   Writer(int r, bool use_openat2, mode_t um);

   void invalidate();
   int open_dir(const std::vector<std::string> &c, size_t n);
   int parent(const std::vector<std::string> &c, const std::string &name);
   [[noreturn]] void fail_resolve(const std::string &name, int e);
   void unlink_old(int pfd, const std::string &base, const std::string &name);
   static mode_t clean_mode(uint32_t mode) { return mode & 01777; }   // no setuid/setgid

   // Each returns after creating entry C (NAME in errors); create_file returns its fd.
   int create_file(const std::vector<std::string> &c, const std::string &name, uint32_t mode);
   void make_dir(const std::vector<std::string> &c, const std::string &name, uint32_t mode);
   void make_symlink(const std::vector<std::string> &c, const std::string &name, const std::string &target);
   void make_hardlink(const std::vector<std::string> &c, const std::string &name, const std::string &target);
};

}  // namespace chtar

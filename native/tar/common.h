// ch-tar2dir's native extractor: what every part shares. Errors are thrown as
// XErr (a message for the user plus an errno, 0 if none) and become the
// result's "error" at the N-API boundary (napi.cc).

#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cstring>
#include <unistd.h>

namespace chtar {

struct XErr : std::runtime_error {
   int err;
   XErr(const std::string &what, int e = 0) : std::runtime_error(what), err(e) {}
};

// "ENOENT" for ENOENT: the name users search for.
inline std::string errname(int e)
{
   const char *n = strerrorname_np(e);
   return n ? n : "EUNKNOWN";
}

// A file descriptor closed when it goes out of scope.
struct Fd {
   int fd = -1;
   Fd() {}
   explicit Fd(int f) : fd(f) {}
   Fd(const Fd &) = delete;
   Fd &operator=(const Fd &) = delete;
   ~Fd() { reset(); }
   void reset(int f = -1)
   {
      if (fd >= 0)
         close(fd);
      fd = f;
   }
};

// Write all K bytes at P to FD; NAME is the member, for errors.
void write_all(int fd, const char *p, size_t k, const std::string &name);

}  // namespace chtar

// Choosing the decoder, and the two that need no library: the plain tarball
// and, for a compression this build has no library for, the decompression
// program (gzip, xz, zstd) run as GNU tar runs it.

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <string>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "source.h"

extern char **environ;

namespace chtar {
namespace {

struct PlainSource : Source {
   RawFile &in;
   std::string pre;   // bytes read to sniff the magic
   size_t prepos = 0;
   PlainSource(RawFile &i, std::string p) : in(i), pre(std::move(p)) {}
   size_t read(char *buf, size_t n) override
   {
      if (prepos < pre.size()) {
         size_t k = std::min(n, pre.size() - prepos);
         memcpy(buf, pre.data() + prepos, k);
         prepos += k;
         return k;
      }
      return in.read(buf, n);
   }
};


// PROGRAM -dc with the tarball on its standard input and its output on a pipe
// we read. The child shares the tarball's open file description, so its
// offset is the progress. Its exit status is checked at the end of its
// output: a truncated or corrupt stream is an error, as with the libraries.
struct ProgramSource : Source {
   RawFile &in;
   std::string prog;
   pid_t pid = -1;
   Fd out;

   ProgramSource(RawFile &i, const std::string &kind, const char *program, const char *lib, const char *dev)
      : in(i), prog(program)
   {
      // The program would read the file to its current end, not wait for more.
      if (in.complete)
         throw XErr(kind + " data: this build of ch-toolkit has no " + lib + ": can't unpack it while it downloads");
      // The magic number was read already: the program reads from the start.
      if (lseek(in.fd, 0, SEEK_SET) != 0)
         throw XErr("can't rewind the tarball for " + prog, errno);
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0)
         throw XErr("can't create a pipe for " + prog, errno);
      Fd rd(p[0]), wr(p[1]);
      spawn(wr.fd, kind, lib, dev);
      out.reset(rd.fd);
      rd.fd = -1;
   }

   ~ProgramSource() override
   {
      out.reset();   // a program still writing gets EPIPE
      if (pid > 0) {
         kill(pid, SIGTERM);
         reap();
      }
   }

   // Start PROG -dc reading the tarball, writing to pipe end WR.
   void spawn(int wr, const std::string &kind, const char *lib, const char *dev)
   {
      posix_spawn_file_actions_t fa;
      posix_spawnattr_t at;
      // Node ignores SIGPIPE and its threads may block signals; the child gets defaults.
      sigset_t none, pipe;
      sigemptyset(&none);
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      int rc = posix_spawn_file_actions_init(&fa);
      if (rc != 0)
         throw XErr("can't prepare to run " + prog, rc);
      if ((rc = posix_spawnattr_init(&at)) != 0)
         posix_spawn_file_actions_destroy(&fa);
      if (rc == 0) {
         // dup2 clears close-on-exec on the copies.
         if ((rc = posix_spawn_file_actions_adddup2(&fa, in.fd, 0)) == 0
             && (rc = posix_spawn_file_actions_adddup2(&fa, wr, 1)) == 0
             && (rc = posix_spawnattr_setsigmask(&at, &none)) == 0
             && (rc = posix_spawnattr_setsigdefault(&at, &pipe)) == 0
             && (rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) == 0) {
            char *argv[] = {const_cast<char *>(prog.c_str()), const_cast<char *>("-dc"), nullptr};
            rc = posix_spawnp(&pid, prog.c_str(), &fa, &at, argv, environ);
            if (rc != 0)
               pid = -1;
         }
         posix_spawn_file_actions_destroy(&fa);
         posix_spawnattr_destroy(&at);
      }
      if (rc == ENOENT)
         throw XErr(kind + " data: this build of ch-toolkit has no " + lib + ", and the " + prog
                    + " program is not on PATH: install " + prog + ", or install " + dev
                    + " and rebuild (node tools/build.js native)", rc);
      if (rc != 0)
         throw XErr("can't run " + prog, rc);
   }

   // Wait for the program; its exit status.
   int reap()
   {
      int st = 0;
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
         ;
      pid = -1;
      return st;
   }

   size_t read(char *buf, size_t n) override
   {
      if (out.fd < 0)
         return 0;
      ssize_t r;
      while ((r = ::read(out.fd, buf, n)) < 0 && errno == EINTR)
         ;
      if (r < 0)
         throw XErr("can't read from " + prog, errno);
      off_t pos = lseek(in.fd, 0, SEEK_CUR);
      if (pos >= 0)
         in.progress->store(pos, std::memory_order_relaxed);
      if (r == 0) {
         out.reset();
         int st = reap();
         if (WIFSIGNALED(st))
            throw XErr("'" + prog + " -dc' was killed by signal " + std::to_string(WTERMSIG(st)));
         // gzip's 2 is a warning: "decompression OK, trailing garbage
         // ignored", as the library decoders ignore it.
         if (WEXITSTATUS(st) != 0 && !(WEXITSTATUS(st) == 2 && prog == "gzip"))
            throw XErr("corrupt or truncated compressed data: '" + prog + " -dc' exited with status "
                       + std::to_string(WEXITSTATUS(st)));
      }
      return r;
   }
};

}  // namespace

std::unique_ptr<Source> open_source(RawFile &raw, std::string &kind)
{
   std::string pre(6, '\0');
   size_t got = 0;
   while (got < 6) {
      size_t r = raw.read(&pre[got], 6 - got);
      if (r == 0)
         break;
      got += r;
   }
   pre.resize(got);
   auto m = [&](const char *magic, size_t n) { return got >= n && memcmp(pre.data(), magic, n) == 0; };
   if (m("\x1f\x8b", 2)) {
      kind = "gzip";
#ifdef CH_HAVE_GZIP_LIB   // ISA-L's igzip.cc or zlib's gzip.cc
      return gzip_source(raw, pre);
#else
      return std::make_unique<ProgramSource>(raw, kind, "gzip", "zlib", "zlib's headers (zlib1g-dev / zlib-devel)");
#endif
   }
   if (m("\xfd" "7zXZ\0", 6)) {
      kind = "xz";
#ifdef CH_HAVE_LZMA
      return xz_source(raw, pre);
#else
      return std::make_unique<ProgramSource>(raw, kind, "xz", "liblzma", "liblzma's headers (liblzma-dev / xz-devel)");
#endif
   }
   if (m("\x28\xb5\x2f\xfd", 4)) {
      kind = "zstd";
#ifdef CH_HAVE_ZSTD
      return zstd_source(raw, pre);
#else
      return std::make_unique<ProgramSource>(raw, kind, "zstd", "libzstd", "libzstd's headers (libzstd-dev / libzstd-devel)");
#endif
   }
   kind = "tar";
   return std::make_unique<PlainSource>(raw, pre);
}

}  // namespace chtar

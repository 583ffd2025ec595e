// ch-tar2dir's native extractor: reads a tarball (plain, gzip, xz or zstd,
// found by magic number), parses the tar format (ustar, GNU long names, pax)
// and writes the tree under a destination directory, on a worker thread.
//
// Safety is by construction, not by checking strings and hoping: every parent
// directory is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
// relative to the destination, so neither "..", nor an absolute symlink, nor a
// symlink planted by an earlier entry can make a write land outside it. On
// kernels without openat2 (< 5.6) the parent is walked one component at a time
// with openat(O_NOFOLLOW), refusing any symlink on the way. The final component
// is always created with O_CREAT|O_EXCL|O_NOFOLLOW (or symlinkat/linkat/mkdirat,
// which never follow it), after unlinking whatever non-directory was there, so
// a write never goes through an existing symlink or hardlink. Names are checked
// besides ("..", absolute, NUL, over-long) so that hostile input is refused
// with a clear message rather than an errno.
//
// Device nodes and fifos are skipped and counted (an unprivileged user can't
// create them). Ownership is not restored; setuid/setgid bits are dropped;
// directories are made user-writable (u+rwx) so the user can delete the image.

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

namespace {

// An error for the user: WHAT plus an errno (0 if none).
struct XErr : std::runtime_error {
   int err;
   XErr(const std::string &what, int e = 0) : std::runtime_error(what), err(e) {}
};

std::string errname(int e)
{
   const char *n = strerrorname_np(e);
   return n ? n : "EUNKNOWN";
}

// ---------------------------------------------------------------- input ----

struct RawFile {
   int fd = -1;
   std::atomic<uint64_t> *progress;
   explicit RawFile(int fd_, std::atomic<uint64_t> *p) : fd(fd_), progress(p) {}
   size_t read(char *buf, size_t n)
   {
      for (;;) {
         ssize_t r = ::read(fd, buf, n);
         if (r < 0 && errno == EINTR)
            continue;
         if (r < 0)
            throw XErr("can't read tarball", errno);
         progress->fetch_add(r, std::memory_order_relaxed);
         return r;
      }
   }
};

// A decompressed byte stream. read() returns 0 only at the clean end.
struct Source {
   virtual ~Source() {}
   virtual size_t read(char *buf, size_t n) = 0;
};

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

constexpr size_t INBUF = 1 << 20;

struct GzipSource : Source {
   RawFile &in;
   z_stream z{};
   std::unique_ptr<char[]> ibuf{new char[INBUF]};
   bool ended = false, eof = false;
   GzipSource(RawFile &i, const std::string &pre) : in(i)
   {
      if (inflateInit2(&z, 15 + 16) != Z_OK)
         throw XErr("can't initialize zlib");
      memcpy(ibuf.get(), pre.data(), pre.size());
      z.next_in = (Bytef *)ibuf.get();
      z.avail_in = pre.size();
   }
   ~GzipSource() override { inflateEnd(&z); }
   bool refill()
   {
      if (eof)
         return false;
      size_t r = in.read(ibuf.get(), INBUF);
      if (r == 0) {
         eof = true;
         return false;
      }
      z.next_in = (Bytef *)ibuf.get();
      z.avail_in = r;
      return true;
   }
   size_t read(char *buf, size_t n) override
   {
      z.next_out = (Bytef *)buf;
      z.avail_out = n;
      while (z.avail_out == n) {
         if (ended) {
            // Another gzip member may follow (concatenated .gz); anything
            // else after the end is trailing garbage, ignored as gzip does.
            if (z.avail_in == 0 && !refill())
               return 0;
            if (z.avail_in < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b)
               return 0;
            inflateReset(&z);
            ended = false;
         }
         if (z.avail_in == 0 && !refill())
            throw XErr("truncated gzip data: input ends inside the compressed stream");
         int rc = inflate(&z, Z_NO_FLUSH);
         if (rc == Z_STREAM_END)
            ended = true;
         else if (rc == Z_BUF_ERROR)
            continue;
         else if (rc != Z_OK)
            throw XErr(std::string("corrupt gzip data: ") + (z.msg ? z.msg : "inflate failed"));
      }
      return n - z.avail_out;
   }
};

struct XzSource : Source {
   RawFile &in;
   lzma_stream z = LZMA_STREAM_INIT;
   std::unique_ptr<uint8_t[]> ibuf{new uint8_t[INBUF]};
   bool ended = false;
   XzSource(RawFile &i, const std::string &pre) : in(i)
   {
      if (lzma_stream_decoder(&z, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK)
         throw XErr("can't initialize liblzma");
      memcpy(ibuf.get(), pre.data(), pre.size());
      z.next_in = ibuf.get();
      z.avail_in = pre.size();
   }
   ~XzSource() override { lzma_end(&z); }
   size_t read(char *buf, size_t n) override
   {
      if (ended)
         return 0;
      z.next_out = (uint8_t *)buf;
      z.avail_out = n;
      while (z.avail_out == n) {
         lzma_action act = LZMA_RUN;
         if (z.avail_in == 0) {
            size_t r = in.read((char *)ibuf.get(), INBUF);
            z.next_in = ibuf.get();
            z.avail_in = r;
            if (r == 0)
               act = LZMA_FINISH;
         }
         lzma_ret rc = lzma_code(&z, act);
         if (rc == LZMA_STREAM_END) {
            ended = true;
            break;
         }
         if (rc == LZMA_BUF_ERROR || (rc == LZMA_OK && act == LZMA_FINISH && z.avail_out == n))
            throw XErr("truncated xz data: input ends inside the compressed stream");
         if (rc != LZMA_OK)
            throw XErr("corrupt xz data (liblzma error " + std::to_string(rc) + ")");
      }
      return n - z.avail_out;
   }
};

struct ZstdSource : Source {
   RawFile &in;
   ZSTD_DStream *z;
   std::unique_ptr<char[]> ibuf{new char[INBUF]};
   ZSTD_inBuffer ib{nullptr, 0, 0};
   size_t last = 0;   // last ZSTD_decompressStream hint: 0 = frame complete
   bool eof = false;
   ZstdSource(RawFile &i, const std::string &pre) : in(i)
   {
      z = ZSTD_createDStream();
      if (!z)
         throw XErr("can't initialize libzstd");
      memcpy(ibuf.get(), pre.data(), pre.size());
      ib = {ibuf.get(), pre.size(), 0};
      last = 1;
   }
   ~ZstdSource() override { ZSTD_freeDStream(z); }
   size_t read(char *buf, size_t n) override
   {
      ZSTD_outBuffer ob{buf, n, 0};
      while (ob.pos == 0) {
         if (ib.pos == ib.size) {
            if (eof)
               return 0;
            size_t r = in.read(ibuf.get(), INBUF);
            if (r == 0) {
               eof = true;
               if (last != 0)
                  throw XErr("truncated zstd data: input ends inside a frame");
               return 0;
            }
            ib = {ibuf.get(), r, 0};
         }
         last = ZSTD_decompressStream(z, &ob, &ib);
         if (ZSTD_isError(last))
            throw XErr(std::string("corrupt zstd data: ") + ZSTD_getErrorName(last));
      }
      return ob.pos;
   }
};

// A window onto the decompressed stream, so file data is written straight from
// the decompressor's output buffer.
//
// An uncompressed tarball is mapped instead (map()): file data then goes from
// the page cache to the new files with one copy, not two.
struct Stream {
   Source &src;
   static constexpr size_t CAP = 4 << 20;
   std::unique_ptr<char[]> own{new char[CAP]};
   char *buf = own.get();
   size_t pos = 0, len = 0;
   uint64_t offset = 0;   // of buf[pos] in the tar stream
   void *map_base = nullptr;
   size_t map_len = 0;
   std::atomic<uint64_t> *progress = nullptr;
   explicit Stream(Source &s) : src(s) {}
   ~Stream()
   {
      if (map_base)
         munmap(map_base, map_len);
   }
   // Use the whole of regular file FD (size SIZE) as the stream; false if it can't be mapped.
   bool map(int fd, size_t size, std::atomic<uint64_t> *p)
   {
      if (size == 0)
         return false;
      void *m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (m == MAP_FAILED)
         return false;
      madvise(m, size, MADV_SEQUENTIAL);
      madvise(m, size, MADV_WILLNEED);
      map_base = m;
      map_len = size;
      buf = (char *)m;
      pos = 0;
      len = size;
      progress = p;
      return true;
   }
   void report()
   {
      if (progress)
         progress->store(offset, std::memory_order_relaxed);
   }
   // Make at least one byte available; false at end of stream.
   bool fill()
   {
      if (pos < len)
         return true;
      if (map_base)
         return false;
      pos = len = 0;
      while (len < CAP) {   // fill generously: fewer, larger writes
         size_t r = src.read(buf + len, CAP - len);
         if (r == 0)
            break;
         len += r;
         if (len >= (1 << 20))
            break;
      }
      return len > 0;
   }
   // Copy exactly N bytes; returns bytes copied (< N only at end of stream).
   size_t get(char *out, size_t n)
   {
      size_t got = 0;
      while (got < n && fill()) {
         size_t k = std::min(n - got, len - pos);
         memcpy(out + got, buf + pos, k);
         pos += k;
         got += k;
         offset += k;
      }
      return got;
   }
};

// ----------------------------------------------------------- the writer ----

struct Stats {
   uint64_t files = 0, dirs = 0, symlinks = 0, hardlinks = 0, devices = 0, other = 0, bytes = 0, entries = 0;
};

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

struct Writer {
   int root;
   bool beneath;   // openat2 available
   mode_t umask_;
   std::string cached_path;
   Fd cached;

   Writer(int r, bool use_openat2, mode_t um) : root(r), umask_(um) { beneath = use_openat2 && openat2_works(r); }

   void invalidate()
   {
      cached.reset();
      cached_path.clear();
   }

   // Open directory C[0..N) under root without creating anything; -errno on failure.
   int open_dir(const std::vector<std::string> &c, size_t n)
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
   int parent(const std::vector<std::string> &c, const std::string &name)
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

   [[noreturn]] void fail_resolve(const std::string &name, int e)
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
   void unlink_old(int pfd, const std::string &base, const std::string &name)
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

   static mode_t clean_mode(uint32_t mode) { return mode & 01777; }   // no setuid/setgid

   int create_file(const std::vector<std::string> &c, const std::string &name, uint32_t mode)
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

   void make_dir(const std::vector<std::string> &c, const std::string &name, uint32_t mode)
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

   void make_symlink(const std::vector<std::string> &c, const std::string &name, const std::string &target)
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

   void make_hardlink(const std::vector<std::string> &c, const std::string &name, const std::string &target)
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
};


// ------------------------------------------------------- parallel writes ----
//
// Creating and filling files is most of the kernel's work; with several
// threads doing it the extraction beats GNU tar's single thread. The parser
// (the AsyncWorker's thread) copies each regular file's data into a job; jobs
// go to a writer chosen by a hash of the path, so entries for the same path
// stay in archive order. Every writer has its own Writer (same root, same
// openat2 resolution, same O_EXCL|O_NOFOLLOW creation): safety is unchanged.
// Before an entry that could interact with a queued file (a symlink or
// hardlink at, above or to a pending path; a directory where a file is
// pending), the parser waits for all writers to finish (drain).

struct Job {
   std::vector<std::string> c;
   std::string name;
   uint32_t mode;
   uint64_t mtime;
   std::string data;             // copied data, or:
   const char *ptr = nullptr;    // data in the mapped tarball (lives until the end)
   size_t len = 0;
   size_t size() const { return ptr ? len : data.size(); }
};

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

struct Pool {
   static constexpr size_t MAX_INFLIGHT = 64 << 20;
   std::vector<std::unique_ptr<Writer>> writers;
   std::vector<std::deque<Job>> queues;
   std::vector<std::thread> threads;
   std::mutex m;
   std::condition_variable cv_work, cv_done;
   size_t inflight = 0, pending = 0;
   bool stop = false;
   std::string err;
   int errn = 0;
   std::unordered_set<std::string> names, dirs;   // pending files and their ancestors

   Pool(int n, int root, bool openat2, mode_t um) : queues(n)
   {
      for (int i = 0; i < n; i++)
         writers.emplace_back(new Writer(root, openat2, um));
      for (int i = 0; i < n; i++)
         threads.emplace_back([this, i] { loop(i); });
   }
   ~Pool()
   {
      {
         std::lock_guard<std::mutex> g(m);
         stop = true;
      }
      cv_work.notify_all();
      for (auto &t : threads)
         t.join();
   }
   void loop(int i)
   {
      Writer &w = *writers[i];
      std::unique_lock<std::mutex> g(m);
      for (;;) {
         cv_work.wait(g, [&] { return stop || !queues[i].empty(); });
         if (queues[i].empty())
            return;
         Job j = std::move(queues[i].front());
         queues[i].pop_front();
         bool skip = !err.empty();
         g.unlock();
         std::string e;
         int en = 0;
         if (!skip) {
            try {
               Fd fd(w.create_file(j.c, j.name, j.mode));
               if (j.ptr)
                  write_all(fd.fd, j.ptr, j.len, j.name);
               else
                  write_all(fd.fd, j.data.data(), j.data.size(), j.name);
               struct timespec ts[2] = {{(time_t)j.mtime, 0}, {(time_t)j.mtime, 0}};
               futimens(fd.fd, ts);
            } catch (XErr &x) {
               e = x.what();
               en = x.err;
            } catch (std::exception &x) {
               e = std::string("internal error: ") + x.what();
            }
         }
         g.lock();
         if (!e.empty() && err.empty()) {
            err = e;
            errn = en;
         }
         inflight -= j.data.size();   // mapped data costs no memory
         pending--;
         cv_done.notify_all();
      }
   }
   void check_locked()
   {
      if (!err.empty())
         throw XErr(err, errn);
   }
   void submit(Job &&j, const std::string &path)
   {
      names.insert(path);
      for (size_t k = 1; k < j.c.size(); k++)
         dirs.insert(join(j.c, k));
      // By parent directory: same path, same writer (archive order kept), and
      // each writer's cached parent fd keeps hitting.
      size_t q = std::hash<std::string>()(join(j.c, j.c.size() - 1)) % queues.size();
      std::unique_lock<std::mutex> g(m);
      cv_done.wait(g, [&] { return inflight < MAX_INFLIGHT || !err.empty(); });
      check_locked();
      inflight += j.data.size();
      pending++;
      queues[q].push_back(std::move(j));
      g.unlock();
      cv_work.notify_all();
   }
   void drain()
   {
      std::unique_lock<std::mutex> g(m);
      cv_done.wait(g, [&] { return pending == 0; });
      names.clear();
      dirs.clear();
      check_locked();
   }
   bool conflicts(const std::string &path, bool as_dir_too) const
   {
      return names.count(path) || (as_dir_too && dirs.count(path));
   }
};

// ------------------------------------------------------------ tar parser ----

uint64_t parse_num(const char *f, size_t n, const std::string &name, const char *what)
{
   if ((unsigned char)f[0] & 0x80) {   // GNU base-256
      uint64_t v = (unsigned char)f[0] & 0x3f;
      if ((unsigned char)f[0] & 0x40)
         throw XErr(name + ": negative " + what + " in header");
      for (size_t i = 1; i < n; i++) {
         if (v >> 56)
            throw XErr(name + ": " + what + " too large");
         v = (v << 8) | (unsigned char)f[i];
      }
      return v;
   }
   uint64_t v = 0;
   size_t i = 0;
   while (i < n && (f[i] == ' ' || f[i] == '\0'))
      i++;
   for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
      if (v >> 60)
         throw XErr(name + ": " + what + " too large");
      v = v * 8 + (f[i] - '0');
   }
   for (; i < n; i++)
      if (f[i] != ' ' && f[i] != '\0')
         throw XErr("corrupt archive: bad " + std::string(what) + " field in header of " + name);
   return v;
}

std::string field(const char *f, size_t n)
{
   size_t l = strnlen(f, n);
   return std::string(f, l);
}

struct Extractor {
   Stream &in;
   Writer &w;
   Stats st;
   std::string top;   // common first component of all entries
   bool multi = false;
   // Bounds on what a header may claim, since headers are hostile input.
   static constexpr uint64_t META_MAX = 1 << 20;           // a pax extended header
   static constexpr uint64_t MAX_MEMBER = INT64_MAX;       // any member's size
   static constexpr uint64_t JOB_COPY_MAX = 1 << 20;       // a file copied for the writer pool

   Pool *pool = nullptr;   // parallel writers, if any

   std::atomic<uint64_t> *cancel = nullptr;   // set non-zero by JS (a signal): stop

   Extractor(Stream &s, Writer &wr, Pool *p) : in(s), w(wr), pool(p) {}

   // Wait for queued files that ENTRY (and TARGET, for hardlinks) might interact with.
   void sync_with(const std::vector<std::string> &c, bool as_dir_too, const std::string *target = nullptr)
   {
      if (!pool)
         return;
      std::string p = join(c, c.size());
      if (pool->conflicts(p, as_dir_too) || (target && pool->conflicts(*target, false)))
         pool->drain();
   }

   void skip(uint64_t n)
   {
      while (n > 0) {
         if (!in.fill())
            throw XErr("truncated archive: ends inside member data");
         size_t k = std::min<uint64_t>(n, in.len - in.pos);
         in.pos += k;
         in.offset += k;
         n -= k;
      }
   }
   static uint64_t pad(uint64_t size) { return (512 - size % 512) % 512; }

   // The data of a metadata entry, at most MAX bytes (checked before allocating).
   std::string read_meta(uint64_t size, const std::string &what, uint64_t max)
   {
      if (size > max)
         throw XErr("corrupt archive: " + what + " too long (" + std::to_string(size) + " bytes, at most "
                    + std::to_string(max) + ")");
      std::string s(size, '\0');
      if (in.get(&s[0], size) != size)
         throw XErr("truncated archive: ends inside " + what);
      skip(pad(size));
      return s;
   }

   // GNU long name/link: NUL-terminated; a NUL inside is a hostile name.
   static std::string gnu_long(std::string s, const char *what)
   {
      while (!s.empty() && s.back() == '\0')
         s.pop_back();
      if (s.find('\0') != std::string::npos)
         throw XErr(std::string(what) + " contains a NUL byte");
      return s;
   }

   void parse_pax(const std::string &d, std::string &path, std::string &link, bool &have_path, bool &have_link,
                  uint64_t &size, bool &have_size)
   {
      size_t i = 0;
      while (i < d.size()) {
         size_t sp = d.find(' ', i);
         if (sp == std::string::npos)
            throw XErr("corrupt archive: bad pax header record");
         uint64_t len = 0;
         for (size_t k = i; k < sp; k++) {
            if (d[k] < '0' || d[k] > '9' || len > META_MAX)
               throw XErr("corrupt archive: bad pax header record length");
            len = len * 10 + (d[k] - '0');
         }
         if (len == 0 || i + len > d.size() || d[i + len - 1] != '\n')
            throw XErr("corrupt archive: bad pax header record");
         std::string rec = d.substr(sp + 1, i + len - 1 - (sp + 1));
         size_t eq = rec.find('=');
         if (eq == std::string::npos)
            throw XErr("corrupt archive: bad pax header record");
         std::string key = rec.substr(0, eq), val = rec.substr(eq + 1);
         if (key == "path") {
            path = val;
            have_path = true;
         } else if (key == "linkpath") {
            link = val;
            have_link = true;
         } else if (key == "size") {
            size = 0;
            for (char ch : val) {
               if (ch < '0' || ch > '9' || size > (UINT64_MAX / 10 - 10))
                  throw XErr("corrupt archive: bad pax size");
               size = size * 10 + (ch - '0');
            }
            have_size = true;
         } else if (key.compare(0, 11, "GNU.sparse.") == 0) {
            throw XErr("sparse files (GNU.sparse pax) are not supported");
         }
         i += len;
      }
   }

   void track_top(const std::vector<std::string> &c)
   {
      if (multi)
         return;
      if (top.empty())
         top = c[0];
      else if (top != c[0])
         multi = true;
   }

   void write_data(int fd, uint64_t size, const std::string &name)
   {
      uint64_t left = size;
      while (left > 0) {
         if (!in.fill())
            throw XErr("truncated archive: ends inside data of " + name);
         size_t k = std::min<uint64_t>(left, in.len - in.pos);
         const char *p = in.buf + in.pos;
         size_t done = 0;
         while (done < k) {
            ssize_t r = ::write(fd, p + done, k - done);
            if (r < 0 && errno == EINTR)
               continue;
            if (r < 0)
               throw XErr(name + ": can't write", errno);
            done += r;
         }
         in.pos += k;
         in.offset += k;
         left -= k;
      }
      st.bytes += size;
      skip(pad(size));
   }

   void run()
   {
      char h[512];
      std::string longname, longlink, paxpath, paxlink;
      bool have_long = false, have_llink = false, have_ppath = false, have_plink = false, have_psize = false;
      uint64_t psize = 0;
      for (;;) {
         uint64_t hoff = in.offset;
         in.report();
         if (cancel && cancel->load(std::memory_order_relaxed))
            throw XErr("interrupted", EINTR);
         size_t got = in.get(h, 512);
         if (got == 0)
            throw XErr("truncated archive: no end-of-archive marker");
         if (got < 512)
            throw XErr("truncated archive: ends inside a header");
         bool zero = true;
         for (int i = 0; i < 512 && zero; i++)
            zero = h[i] == 0;
         if (zero)
            break;   // end of archive (one zero block is enough, as for GNU tar)

         // Checksum: the header's bytes with the checksum field as spaces.
         uint64_t want;
         try {
            want = parse_num(h + 148, 8, "", "checksum");
         } catch (XErr &) {
            throw XErr("corrupt archive: header checksum mismatch at offset " + std::to_string(hoff)
                       + " (not a tar file, or damaged)");
         }
         uint64_t us = 0;
         int64_t ss = 0;
         for (int i = 0; i < 512; i++) {
            unsigned char ch = (i >= 148 && i < 156) ? ' ' : (unsigned char)h[i];
            us += ch;
            ss += (signed char)((i >= 148 && i < 156) ? ' ' : h[i]);
         }
         if (want != us && (int64_t)want != ss)
            throw XErr("corrupt archive: header checksum mismatch at offset " + std::to_string(hoff)
                       + " (not a tar file, or damaged)");

         char type = h[156];
         bool posix = memcmp(h + 257, "ustar\0", 6) == 0;
         std::string name;
         if (have_ppath)
            name = paxpath;
         else if (have_long)
            name = longname;
         else {
            name = field(h, 100);
            if (posix && h[345]) {
               std::string prefix = field(h + 345, 155);
               name = prefix + "/" + name;
            }
         }
         uint64_t size = parse_num(h + 124, 12, name, "size");
         if (have_psize)
            size = psize;
         if (size > MAX_MEMBER)   // also keeps size + padding from overflowing
            throw XErr("corrupt archive: size of " + printable(name) + " too large (" + std::to_string(size)
                       + " bytes)");
         std::string link = have_plink ? paxlink : have_llink ? longlink : field(h + 157, 100);

         // Metadata entries apply to the next header.
         if (type == 'L') {
            longname = gnu_long(read_meta(size, "GNU long name", PATH_MAX), "name");
            have_long = true;
            continue;
         }
         if (type == 'K') {
            longlink = gnu_long(read_meta(size, "GNU long link", PATH_MAX), "link target");
            have_llink = true;
            continue;
         }
         if (type == 'x') {
            std::string d = read_meta(size, "pax header", META_MAX);
            parse_pax(d, paxpath, paxlink, have_ppath, have_plink, psize, have_psize);
            continue;
         }
         if (type == 'g') {   // nothing in it is used: skipped, never held in memory
            skip(size + pad(size));
            continue;
         }
         have_long = have_llink = have_ppath = have_plink = have_psize = false;

         st.entries++;
         std::vector<std::string> c;
         try {
            c = split_name(name, "name");
         } catch (XErr &e) {
            throw XErr(std::string(e.what()) + ": " + printable(name), e.err);
         }
         uint32_t mode = parse_num(h + 100, 8, name, "mode");
         uint64_t mtime = parse_num(h + 136, 12, name, "mtime");
         if (c.empty()) {   // "." or "./": the destination itself
            skip(type == '5' ? 0 : size + pad(size));
            continue;
         }
         switch (type) {
         case '0':
         case '\0':
         case '7': {
            track_top(c);
            // Without a map, a pooled job holds a copy of the data: only small
            // files go to the pool, so the header's size (hostile input) never
            // decides how much is allocated. Larger files are streamed here.
            bool pooled = pool && (in.map_base || size <= JOB_COPY_MAX);
            if (pool && !pooled)
               sync_with(c, true);
            if (pooled) {
               Job j{c, name, mode, mtime, std::string()};
               if (in.map_base) {
                  if (in.len - in.pos < size)
                     throw XErr("truncated archive: ends inside data of " + name);
                  j.ptr = in.buf + in.pos;
                  j.len = size;
                  skip(size);
               } else {
                  j.data.resize(size);
                  if (in.get(&j.data[0], size) != size)
                     throw XErr("truncated archive: ends inside data of " + name);
               }
               skip(pad(size));
               st.bytes += size;
               pool->submit(std::move(j), join(c, c.size()));
            } else {
               Fd fd(w.create_file(c, name, mode));
               write_data(fd.fd, size, name);
               struct timespec ts[2] = {{(time_t)mtime, 0}, {(time_t)mtime, 0}};
               futimens(fd.fd, ts);   // best effort, as tar's mtime restoration
            }
            st.files++;
            break;
         }
         case '5':
            track_top(c);
            sync_with(c, false);
            w.make_dir(c, name, mode);
            skip(size + pad(size));
            st.dirs++;
            break;
         case '2':
            track_top(c);
            sync_with(c, true);
            w.make_symlink(c, name, link);
            skip(size + pad(size));
            st.symlinks++;
            break;
         case '1':
            track_top(c);
            if (pool) {
               std::vector<std::string> t = split_name(link, "hardlink target");
               std::string tp = join(t, t.size());
               sync_with(c, true, &tp);
            }
            w.make_hardlink(c, name, link);
            skip(size + pad(size));
            st.hardlinks++;
            break;
         case '3':
         case '4':
         case '6':
            skip(size + pad(size));
            st.devices++;
            break;
         case 'S':
            throw XErr(name + ": GNU sparse files are not supported");
         default:
            skip(size + pad(size));
            st.other++;
         }
      }
   }

   static std::string printable(const std::string &s)
   {
      std::string o;
      for (unsigned char ch : s.substr(0, 200)) {
         if (ch < 32 || ch == 127) {
            char b[8];
            snprintf(b, sizeof b, "\\x%02x", ch);
            o += b;
         } else
            o += ch;
      }
      if (s.size() > 200)
         o += "...";
      return o;
   }
};

// --------------------------------------------------------------- N-API -----

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
      return std::make_unique<GzipSource>(raw, pre);
   }
   if (m("\xfd" "7zXZ\0", 6)) {
      kind = "xz";
      return std::make_unique<XzSource>(raw, pre);
   }
   if (m("\x28\xb5\x2f\xfd", 4)) {
      kind = "zstd";
      return std::make_unique<ZstdSource>(raw, pre);
   }
   kind = "tar";
   return std::make_unique<PlainSource>(raw, pre);
}

class ExtractWorker : public Napi::AsyncWorker {
public:
   ExtractWorker(Napi::Env env, std::string tarball, std::string dest, bool openat2, mode_t um,
                 Napi::ArrayBuffer progress, int threads)
      : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), tarball(std::move(tarball)),
        dest(std::move(dest)), use_openat2(openat2), um(um), threads(threads)
   {
      progressRef = Napi::Persistent(progress);
      counter = reinterpret_cast<std::atomic<uint64_t> *>(progress.Data());
   }
   Napi::Promise Promise() { return deferred.Promise(); }

   void Execute() override
   {
      try {
         Fd in(open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
         if (in.fd < 0)
            throw XErr("can't open " + tarball, errno);
         posix_fadvise(in.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
         Fd root(open(dest.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
         if (root.fd < 0)
            throw XErr("can't open destination " + dest, errno);
         RawFile raw(in.fd, counter);
         auto src = open_source(raw, kind);
         Stream s(*src);
         struct stat sb;
         if (kind == "tar" && getenv("CH_TAR2DIR_NO_MMAP") == nullptr && fstat(in.fd, &sb) == 0
             && S_ISREG(sb.st_mode))
            s.map(in.fd, sb.st_size, counter);
         Writer w(root.fd, use_openat2, um);
         beneath = w.beneath;
         std::unique_ptr<Pool> pool;
         if (threads > 0)
            pool.reset(new Pool(threads, root.fd, use_openat2, um));
         Extractor x(s, w, pool.get());
         x.cancel = counter + 1;
         try {
            x.run();
            if (pool)
               pool->drain();
         } catch (...) {
            pool.reset();   // joins the writers before the fds they use go
            throw;
         }
         st = x.st;
         top = x.multi ? "" : x.top;
      } catch (XErr &e) {
         msg = e.what();
         err = e.err;
      } catch (std::exception &e) {
         msg = std::string("internal error: ") + e.what();
      }
   }

   void OnOK() override
   {
      Napi::Env env = Env();
      Napi::Object r = Napi::Object::New(env);
      r.Set("kind", kind);
      r.Set("openat2", beneath);
      if (!msg.empty()) {
         r.Set("error", msg);
         if (err) {
            r.Set("errno", err);
            r.Set("code", errname(err));
            r.Set("why", std::string(strerror(err)));
         }
      } else {
         r.Set("files", (double)st.files);
         r.Set("dirs", (double)st.dirs);
         r.Set("symlinks", (double)st.symlinks);
         r.Set("hardlinks", (double)st.hardlinks);
         r.Set("devices", (double)st.devices);
         r.Set("other", (double)st.other);
         r.Set("bytes", (double)st.bytes);
         r.Set("entries", (double)st.entries);
         r.Set("top", top);
      }
      deferred.Resolve(r);
   }
   void OnError(const Napi::Error &e) override { deferred.Reject(e.Value()); }

private:
   Napi::Promise::Deferred deferred;
   std::string tarball, dest;
   bool use_openat2, beneath = false;
   mode_t um;
   int threads;
   Napi::Reference<Napi::ArrayBuffer> progressRef;
   std::atomic<uint64_t> *counter;
   Stats st;
   std::string top, kind, msg;
   int err = 0;
};

// extract(tarball, dest, {openat2, umask, threads, progress: ArrayBuffer(16)}) -> Promise<result>.
// progress holds two uint64: bytes of the tarball read (written here), and a
// cancel flag (written by JS, e.g. on SIGINT; checked before every entry).
Napi::Value Extract(const Napi::CallbackInfo &info)
{
   Napi::Env env = info.Env();
   if (info.Length() != 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject()) {
      Napi::TypeError::New(env, "extract(tarball, dest, opts)").ThrowAsJavaScriptException();
      return env.Undefined();
   }
   Napi::Object o = info[2].As<Napi::Object>();
   Napi::Value pv = o.Get("progress");
   if (!pv.IsArrayBuffer() || pv.As<Napi::ArrayBuffer>().ByteLength() < 16) {
      Napi::TypeError::New(env, "opts.progress must be an ArrayBuffer of 16 bytes: [bytes read, cancel]")
         .ThrowAsJavaScriptException();
      return env.Undefined();
   }
   bool oa2 = o.Get("openat2").ToBoolean();
   mode_t um = o.Get("umask").IsNumber() ? o.Get("umask").As<Napi::Number>().Uint32Value() : 022;
   int threads = o.Get("threads").IsNumber() ? o.Get("threads").As<Napi::Number>().Int32Value() : 0;
   threads = std::max(0, std::min(threads, 16));
   auto *w = new ExtractWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>(), oa2, um,
                               pv.As<Napi::ArrayBuffer>(), threads);
   Napi::Promise p = w->Promise();
   w->Queue();
   return p;
}

Napi::Value ThrowErrno(Napi::Env env, const std::string &what, int e)
{
   Napi::Error er = Napi::Error::New(env, what + ": " + strerror(e) + " (" + errname(e) + ")");
   er.Set("code", errname(e));
   er.Set("why", std::string(strerror(e)));
   er.ThrowAsJavaScriptException();
   return env.Undefined();
}

// fixup(root, ops, {openat2}): after extraction, make paths safely inside ROOT.
// ops: [{op: 'dir'|'file'|'write', path, content?}]. 'dir' makes a directory
// unless something is there already (a symlink is left alone: ch-run resolves
// it inside the image). 'file' makes an empty regular file unless one exists
// (a symlink there is replaced: ch-run binds onto it). 'write' replaces the
// file with CONTENT. Returns the ops that failed: [{path, message, code?}].
Napi::Value Fixup(const Napi::CallbackInfo &info)
{
   Napi::Env env = info.Env();
   std::string rootp = info[0].As<Napi::String>();
   Napi::Array ops = info[1].As<Napi::Array>();
   bool oa2 = info[2].As<Napi::Object>().Get("openat2").ToBoolean();
   Napi::Array failed = Napi::Array::New(env);
   Fd root(open(rootp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
   if (root.fd < 0)
      return ThrowErrno(env, "can't open " + rootp, errno);
   Writer w(root.fd, oa2, 0);
   for (uint32_t i = 0; i < ops.Length(); i++) {
      Napi::Object op = ops.Get(i).As<Napi::Object>();
      std::string kind = op.Get("op").As<Napi::String>();
      std::string cur = op.Get("path").As<Napi::String>();
      try {
         std::vector<std::string> c = split_name(cur, "path");
         if (c.empty())
            continue;
         int pfd = w.parent(c, cur);
         struct stat sb;
         bool exists = fstatat(pfd, c.back().c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0;
         if (kind == "dir") {
            if (!exists)
               w.make_dir(c, cur, 0755);
            else if (!S_ISDIR(sb.st_mode) && !S_ISLNK(sb.st_mode))
               throw XErr(cur + ": exists and is not a directory");
         } else if (kind == "file") {
            if (exists && S_ISDIR(sb.st_mode))
               throw XErr(cur + ": is a directory");
            if (!exists || !S_ISREG(sb.st_mode))
               Fd fd(w.create_file(c, cur, 0644));
         } else {
            std::string content = op.Get("content").As<Napi::String>();
            Fd fd(w.create_file(c, cur, 0644));
            write_all(fd.fd, content.data(), content.size(), cur);
         }
      } catch (XErr &e) {
         Napi::Object f = Napi::Object::New(env);
         f.Set("path", cur);
         f.Set("message", std::string(e.what()) + (e.err ? std::string(": ") + strerror(e.err) + " (" + errname(e.err) + ")" : ""));
         failed.Set(failed.Length(), f);
      }
      w.invalidate();
   }
   return failed;
}


// rename2(from, to, 'noreplace'|'exchange'): renameat2(2), which Node lacks.
Napi::Value Rename2(const Napi::CallbackInfo &info)
{
   Napi::Env env = info.Env();
   std::string a = info[0].As<Napi::String>(), b = info[1].As<Napi::String>(), how = info[2].As<Napi::String>();
   unsigned flags = how == "exchange" ? RENAME_EXCHANGE : RENAME_NOREPLACE;
   if (renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), flags) != 0)
      return ThrowErrno(env, "can't rename " + a + " to " + b, errno);
   return env.Undefined();
}

// Wait for an exclusive flock(2) on PATH (created if needed) on a worker
// thread; resolves with the fd, which holds the lock until closed or exit.
class LockWorker : public Napi::AsyncWorker {
public:
   LockWorker(Napi::Env env, std::string p, bool wait)
      : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), path(std::move(p)), wait(wait) {}
   Napi::Promise Promise() { return deferred.Promise(); }
   void Execute() override
   {
      fd = open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) {
         err = errno;
         return;
      }
      while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
         if (errno == EINTR)
            continue;
         err = errno;
         close(fd);
         fd = -1;
         return;
      }
   }
   void OnOK() override
   {
      Napi::Env env = Env();
      if (err) {
         Napi::Error er = Napi::Error::New(env, std::string("can't lock ") + path + ": " + strerror(err));
         er.Set("code", errname(err));
         er.Set("why", std::string(strerror(err)));
         deferred.Reject(er.Value());
      } else
         deferred.Resolve(Napi::Number::New(env, fd));
   }

private:
   Napi::Promise::Deferred deferred;
   std::string path;
   bool wait;
   int fd = -1, err = 0;
};

Napi::Value Lock(const Napi::CallbackInfo &info)
{
   auto *w = new LockWorker(info.Env(), info[0].As<Napi::String>(), info[1].ToBoolean());
   Napi::Promise p = w->Promise();
   w->Queue();
   return p;
}

// pipe(): a real pipe(2), [readFd, writeFd], both close-on-exec. Node's child
// stdio "pipes" are socketpairs, on which open("/dev/stdout") fails with ENXIO
// (podman export writes to /dev/stdout).
Napi::Value Pipe(const Napi::CallbackInfo &info)
{
   int fds[2];
   if (pipe2(fds, O_CLOEXEC) != 0)
      return ThrowErrno(info.Env(), "can't create pipe", errno);
   Napi::Array a = Napi::Array::New(info.Env(), 2);
   a.Set(0u, fds[0]);
   a.Set(1u, fds[1]);
   return a;
}

}  // namespace

void InitExtract(Napi::Env env, Napi::Object exports)
{
   exports.Set("extract", Napi::Function::New(env, Extract));
   exports.Set("fixup", Napi::Function::New(env, Fixup));
   exports.Set("rename2", Napi::Function::New(env, Rename2));
   exports.Set("lock", Napi::Function::New(env, Lock));
   exports.Set("pipe", Napi::Function::New(env, Pipe));
}

static Napi::Object InitModule(Napi::Env env, Napi::Object exports)
{
   InitExtract(env, exports);
   return exports;
}

NODE_API_MODULE(ch_tar, InitModule)

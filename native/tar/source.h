// The extractor's input: the tarball's bytes (RawFile), decompressed
// (Source: a library decoder, or the gzip/xz/zstd program where this build
// lacks the library), seen through a window the parser reads from (Stream).

#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

namespace chtar {

struct RawFile {
   int fd = -1;
   std::atomic<uint64_t> *progress;
   // A file still being written (ch-pull applies a layer while it downloads):
   // its end is the end of the data only once *complete is non-zero; until
   // then a read at its end waits for more, or stops when *cancel is set.
   std::atomic<uint64_t> *complete = nullptr, *cancel = nullptr;
   std::atomic<bool> quit{false};   // set when nobody reads any more (threaded.cc)
   explicit RawFile(int fd_, std::atomic<uint64_t> *p) : fd(fd_), progress(p) {}
   size_t read(char *buf, size_t n)
   {
      for (;;) {
         // Read before the read: complete then means every byte was written before it.
         bool done = !complete || complete->load(std::memory_order_acquire);
         ssize_t r = ::read(fd, buf, n);
         if (r < 0 && errno == EINTR)
            continue;
         if (r < 0)
            throw XErr("can't read tarball", errno);
         if (r == 0 && !done) {
            if ((cancel && cancel->load(std::memory_order_relaxed)) || quit.load())
               throw XErr("interrupted", EINTR);
            usleep(2000);   // the download is on Node's main thread: polled, not signalled
            continue;
         }
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
constexpr size_t INBUF = 1 << 20;   // compressed bytes read at a time

// The decoders this build has, each from its own file, compiled only where
// binding.gyp found the library (tools/probe.js). PRE: the bytes already
// read to sniff the magic number.
std::unique_ptr<Source> gzip_source(RawFile &in, const std::string &pre);
std::unique_ptr<Source> xz_source(RawFile &in, const std::string &pre);
std::unique_ptr<Source> zstd_source(RawFile &in, const std::string &pre);

// Open the decompressed stream of IN, by magic number; KIND: "tar", "gzip", "xz" or "zstd".
std::unique_ptr<Source> open_source(RawFile &in, std::string &kind);

// S read ahead on a thread of its own (threaded.cc); RAW: what S reads.
std::unique_ptr<Source> threaded_source(std::unique_ptr<Source> s, RawFile &raw);

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
}  // namespace chtar

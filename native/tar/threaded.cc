// Decompression on its own thread, overlapped with the writes: a reader
// thread fills a ring of 1 MiB buffers from the decoder while the extractor
// (the caller of read()) parses and writes from the ring. With a free core
// the inflate and the file writes run side by side (at best the slower of
// the two instead of their sum); more than two cores add nothing (one
// decoder stream, one writer). Where the caller asks: lib/tar/native.ts decodeThread.

#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "source.h"

namespace chtar {
namespace {

struct ThreadedSource : Source {
   static constexpr size_t SLOTS = 4, SLOT = 1 << 20;
   std::unique_ptr<Source> inner;
   RawFile &raw;
   std::unique_ptr<char[]> mem{new char[SLOTS * SLOT]};
   size_t lens[SLOTS] = {};
   uint64_t head = 0, tail = 0;   // slots filled, slots consumed
   size_t pos = 0;                // in slot TAIL
   bool stop = false;
   std::exception_ptr err;
   std::mutex m;
   std::condition_variable cv;
   std::thread th;

   ThreadedSource(std::unique_ptr<Source> s, RawFile &r) : inner(std::move(s)), raw(r)
   {
      th = std::thread([this] { produce(); });
   }
   ~ThreadedSource() override
   {
      {
         std::lock_guard<std::mutex> l(m);
         stop = true;
      }
      raw.quit.store(true);   // a read waiting for a download to grow gives up
      cv.notify_all();
      th.join();
   }
   char *slot(uint64_t i) { return mem.get() + (i % SLOTS) * SLOT; }

   // The thread: fill slot HEAD while fewer than SLOTS are waiting; a slot of
   // length 0 is the end; an error is handed over after the data before it.
   void produce()
   {
      try {
         for (;;) {
            {
               std::unique_lock<std::mutex> l(m);
               cv.wait(l, [&] { return stop || head - tail < SLOTS; });
               if (stop)
                  return;
            }
            char *b = slot(head);   // not the consumer's: head - tail < SLOTS
            size_t len = 0;
            while (len < SLOT) {
               size_t r = inner->read(b + len, SLOT - len);
               if (r == 0)
                  break;
               len += r;
            }
            {
               std::lock_guard<std::mutex> l(m);
               lens[head % SLOTS] = len;
               head++;
            }
            cv.notify_all();
            if (len == 0)
               return;
         }
      } catch (...) {
         std::lock_guard<std::mutex> l(m);
         err = std::current_exception();
         cv.notify_all();
      }
   }

   size_t read(char *buf, size_t n) override
   {
      size_t len;
      {
         std::unique_lock<std::mutex> l(m);
         cv.wait(l, [&] { return head > tail || err; });
         if (head == tail)
            std::rethrow_exception(err);
         len = lens[tail % SLOTS];
      }
      if (len == 0)
         return 0;
      size_t k = std::min(n, len - pos);
      memcpy(buf, slot(tail) + pos, k);
      pos += k;
      if (pos == len) {
         {
            std::lock_guard<std::mutex> l(m);
            tail++;
         }
         pos = 0;
         cv.notify_all();
      }
      return k;
   }
};

}  // namespace

std::unique_ptr<Source> threaded_source(std::unique_ptr<Source> s, RawFile &raw)
{
   return std::make_unique<ThreadedSource>(std::move(s), raw);
}

}  // namespace chtar

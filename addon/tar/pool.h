// Parallel writes (CH_TAR2DIR_THREADS=N, off by default).
// Creating and filling files is most of the kernel's work; with several
// threads doing it the extraction beats GNU tar's single thread. The parser
// (the AsyncWorker's thread) copies each regular file's data into a job; jobs
// go to a writer chosen by a hash of the path, so entries for the same path
// stay in archive order. Every writer has its own Writer (same root, same
// openat2 resolution, same O_EXCL|O_NOFOLLOW creation): safety is unchanged.
// Before an entry that could interact with a queued file (a symlink or
// hardlink at, above or to a pending path; a directory where a file is
// pending), the parser waits for all writers to finish (drain).

#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "writer.h"

namespace chtar {

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

   Pool(int n, int root, bool openat2, mode_t um);
   ~Pool();
   void loop(int i);
   void check_locked();
   // Queue J (the file at PATH); waits while too much copied data is in flight.
   void submit(Job &&j, const std::string &path);
   // Wait until every queued file is written; throws the first writer's error.
   void drain();
   // Is PATH a pending file (or, AS_DIR_TOO, the ancestor of one)?
   bool conflicts(const std::string &path, bool as_dir_too) const;
};

}  // namespace chtar

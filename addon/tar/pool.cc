// Parallel writes (see pool.h).

#include <sys/stat.h>

#include "pool.h"

namespace chtar {

Pool::Pool(int n, int root, bool openat2, mode_t um) : queues(n)
{
   for (int i = 0; i < n; i++)
      writers.emplace_back(new Writer(root, openat2, um));
   for (int i = 0; i < n; i++)
      threads.emplace_back([this, i] { loop(i); });
}

Pool::~Pool()
{
   {
      std::lock_guard<std::mutex> g(m);
      stop = true;
   }
   cv_work.notify_all();
   for (auto &t : threads)
      t.join();
}

void Pool::loop(int i)
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

void Pool::check_locked()
{
   if (!err.empty())
      throw XErr(err, errn);
}

void Pool::submit(Job &&j, const std::string &path)
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

void Pool::drain()
{
   std::unique_lock<std::mutex> g(m);
   cv_done.wait(g, [&] { return pending == 0; });
   names.clear();
   dirs.clear();
   check_locked();
}

bool Pool::conflicts(const std::string &path, bool as_dir_too) const
{
   return names.count(path) || (as_dir_too && dirs.count(path));
}

}  // namespace chtar

// File-system helpers for ch-tar2dir and the other commands, as N-API
// functions: fixup (make paths inside an unpacked image through the confined
// writer), stripSetid (clear setuid/setgid bits in a tree, following no
// link), rename2 (renameat2, which Node lacks), lock (flock on a worker
// thread), pipe (a real pipe(2)).

#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "writer.h"

namespace chtar {
namespace {

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


// chmod the inode open as O_PATH descriptor FD. fchmod() refuses O_PATH
// descriptors; /proc/self/fd/N is a magic link to that very inode, never
// resolved again by name (as glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does it).
void chmod_fd(int fd, mode_t m, const std::string &where)
{
   char p[64];
   snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
   if (chmod(p, m) != 0)
      throw XErr(where + ": can't change mode", errno);
}

// Open the directory behind O_PATH descriptor FD for reading (the same inode:
// reopened through its magic link). A directory its owner can't read (mode
// 0300, say) gets u+rx while it is walked; *RESTORE is then its mode to put back.
int open_dir_of(int fd, const struct stat &st, const std::string &where, mode_t *restore)
{
   char p[64];
   snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
   int d = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
   if (d < 0 && errno == EACCES && st.st_uid == geteuid()) {
      *restore = st.st_mode & 07777 & ~(mode_t)06000;
      chmod_fd(fd, *restore | 0500, where);
      d = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
   }
   if (d < 0)
      throw XErr(where + ": can't open directory", errno);
   return d;
}

// Clear S_ISUID and S_ISGID on the entry open as O_PATH descriptor FD (ST its
// stat) and, for a directory, on everything below it. Links are never
// followed: each entry is opened O_PATH|O_NOFOLLOW relative to its parent's
// descriptor, and a symlink is left alone. Returns the number of entries changed.
unsigned long strip_setid(int fd, const struct stat &st, const std::string &where)
{
   unsigned long n = 0;
   if (S_ISLNK(st.st_mode))
      return 0;
   if (st.st_mode & 06000) {
      chmod_fd(fd, st.st_mode & 07777 & ~(mode_t)06000, where);
      n++;
   }
   if (!S_ISDIR(st.st_mode))
      return n;
   mode_t restore = (mode_t)-1;
   DIR *d = fdopendir(open_dir_of(fd, st, where, &restore));
   if (d == nullptr)
      throw XErr(where + ": can't read directory", errno);
   try {
      for (;;) {
         errno = 0;
         struct dirent *e = readdir(d);
         if (e == nullptr) {
            if (errno != 0)
               throw XErr(where + ": can't read directory", errno);
            break;
         }
         if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
         std::string w = where + "/" + e->d_name;
         Fd c(openat(dirfd(d), e->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
         struct stat cst;
         if (c.fd < 0)
            throw XErr(w + ": can't open", errno);
         if (fstat(c.fd, &cst) != 0)
            throw XErr(w + ": can't stat", errno);
         n += strip_setid(c.fd, cst, w);
      }
   } catch (...) {
      closedir(d);
      throw;
   }
   closedir(d);
   if (restore != (mode_t)-1)
      chmod_fd(fd, restore, where);
   return n;
}

// stripSetid(root): clear every setuid and setgid bit in the tree at ROOT
// (ROOT itself too; ROOT must not be a symlink). No tool of ours leaves a
// setuid or setgid file: an image's bits would be the converting user's
// privilege, handed to whoever can reach the file. Returns how many entries
// had them; throws naming the first entry that can't be changed.
Napi::Value StripSetid(const Napi::CallbackInfo &info)
{
   Napi::Env env = info.Env();
   std::string rootp = info[0].As<Napi::String>();
   Fd root(open(rootp.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
   struct stat st;
   if (root.fd < 0)
      return ThrowErrno(env, "can't open " + rootp, errno);
   if (fstat(root.fd, &st) != 0)
      return ThrowErrno(env, "can't stat " + rootp, errno);
   if (!S_ISDIR(st.st_mode))
      return ThrowErrno(env, "can't clear setuid/setgid bits under " + rootp, ENOTDIR);
   try {
      return Napi::Number::New(env, (double)strip_setid(root.fd, st, rootp));
   } catch (XErr &e) {
      return ThrowErrno(env, e.what(), e.err ? e.err : EIO);
   }
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
      // O_NONBLOCK: a FIFO planted under the name must not block the open (the caller refuses it).
      fd = open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
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

void InitFsOps(Napi::Env env, Napi::Object exports)
{
   exports.Set("fixup", Napi::Function::New(env, Fixup));
   exports.Set("stripSetid", Napi::Function::New(env, StripSetid));
   exports.Set("rename2", Napi::Function::New(env, Rename2));
   exports.Set("lock", Napi::Function::New(env, Lock));
   exports.Set("pipe", Napi::Function::New(env, Pipe));
}

}  // namespace chtar

// ch-run's N-API addon: what Node itself can't do on ch-run's launch path.
// Kept to this one job, and apart from ch-tar2dir's extractor (ch_tar.node,
// which links zlib, liblzma and libzstd): it is loaded on every launch.
//
// execCore(corePath, plan): hand a plan to ch-run's C core by execve(2) in
// place. The plan goes in an anonymous memfd inherited as the core's only
// argument, so environment size never meets argv limits twice. Node's own
// descriptors are all close-on-exec; only the memfd crosses. On success this
// never returns: the Node process becomes the core, then the user's command.

#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

namespace {

Napi::Value Fail(Napi::Env env, const std::string &what, int err)
{
   Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
   e.Set("errno", Napi::Number::New(env, err));
   e.Set("code", Napi::String::New(env, strerrorname_np(err) ? strerrorname_np(err) : "EUNKNOWN"));
   e.ThrowAsJavaScriptException();
   return env.Undefined();
}

Napi::Value ExecCore(const Napi::CallbackInfo &info)
{
   Napi::Env env = info.Env();
   if (info.Length() != 2 || !info[0].IsString() || !info[1].IsBuffer()) {
      Napi::TypeError::New(env, "execCore(corePath: string, plan: Buffer)").ThrowAsJavaScriptException();
      return env.Undefined();
   }
   std::string core = info[0].As<Napi::String>();
   Napi::Buffer<char> plan = info[1].As<Napi::Buffer<char>>();

   int fd = memfd_create("ch-run-plan", 0);   // no MFD_CLOEXEC: the core inherits it
   if (fd < 0)
      return Fail(env, "can't create plan memfd", errno);
   size_t off = 0;
   while (off < plan.Length()) {
      ssize_t w = write(fd, plan.Data() + off, plan.Length() - off);
      if (w < 0 && errno == EINTR)
         continue;
      if (w <= 0) {
         int e = errno;
         close(fd);
         return Fail(env, "can't write plan", e);
      }
      off += w;
   }
   if (lseek(fd, 0, SEEK_SET) != 0) {
      int e = errno;
      close(fd);
      return Fail(env, "can't rewind plan", e);
   }
   // Node marks fds 0-2 close-on-exec at start-up; left so, the core and the
   // command would start with no stdin, stdout or stderr.
   for (int i = 0; i <= 2; i++) {
      int fl = fcntl(i, F_GETFD);
      if (fl >= 0 && (fl & FD_CLOEXEC) && fcntl(i, F_SETFD, fl & ~FD_CLOEXEC) != 0) {
         int e = errno;
         close(fd);
         return Fail(env, "can't clear FD_CLOEXEC on fd " + std::to_string(i), e);
      }
   }
   std::string fdstr = std::to_string(fd);
   char *argv[] = { const_cast<char *>("ch-run"), const_cast<char *>(fdstr.c_str()), nullptr };
   execve(core.c_str(), argv, environ);
   int e = errno;
   close(fd);
   return Fail(env, "can't execve(2) core " + core, e);
}

}  // namespace

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports)
{
   exports.Set("execCore", Napi::Function::New(env, ExecCore));
   return exports;
}

}  // namespace

NODE_API_MODULE(ch_run, Init)

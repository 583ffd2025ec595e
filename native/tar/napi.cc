// ch_tar.node: ch-tar2dir's native extractor, as N-API functions. extract()
// runs on a worker thread: open the tarball and the destination, pick the
// decoder (source.cc), parse (parser.cc) and write (writer.cc).
// The file-system helpers other commands use are in fsops.cc.

#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layer.h"
#include "parser.h"

namespace chtar {

void InitFsOps(Napi::Env env, Napi::Object exports);

namespace {

class ExtractWorker : public Napi::AsyncWorker {
public:
   ExtractWorker(Napi::Env env, std::string tarball, std::string dest, bool openat2, mode_t um,
                 Napi::ArrayBuffer progress, bool layer, uint64_t max_bytes, bool follow, bool decode_thread)
      : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), tarball(std::move(tarball)),
        dest(std::move(dest)), use_openat2(openat2), as_layer(layer), follow(follow), decode_thread(decode_thread),
        um(um), max_bytes(max_bytes)
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
         if (follow) {
            raw.cancel = counter + 1;
            raw.complete = counter + 2;
         }
         auto src = open_source(raw, kind);
         // Decompression on a thread of its own, overlapped with the writes
         // (threaded.cc), where the caller asks (lib/tar/native.ts decodeThread).
         if (kind != "tar" && decode_thread)
            src = threaded_source(std::move(src), raw);
         Stream s(*src);
         struct stat sb;
         if (kind == "tar" && !follow && fstat(in.fd, &sb) == 0 && S_ISREG(sb.st_mode))
            s.map(in.fd, sb.st_size, counter);
         Writer w(root.fd, use_openat2, um);
         beneath = w.beneath;
         Extractor x(s, w);
         x.cancel = counter + 1;
         x.max_bytes = max_bytes;
         Layer layer(w);
         if (as_layer)
            x.layer = &layer;
         x.run();
         // The tar's end-of-archive marker may come before the compressed
         // stream's end: decode the rest, so that every decoder checks the
         // trailer's CRC and length, and a broken stream is an error
         // whatever its buffering (bytes that are no gzip member are still
         // ignored, as gzip does). At most 16 MiB of it: record padding is
         // kilobytes, and a bomb after the marker must not cost hours of CPU.
         if (kind != "tar") {
            std::unique_ptr<char[]> rest(new char[1 << 16]);
            size_t r, n = 0;
            while (n < (16 << 20) && (r = src->read(rest.get(), 1 << 16)) > 0)
               n += r;
         }
         whiteouts = layer.whiteouts;
         st = x.st;
         top = x.multi ? "" : x.top;
      } catch (LimitErr &e) {
         msg = e.what();
         over_limit = true;
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
         if (over_limit)
            r.Set("overLimit", true);
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
         r.Set("whiteouts", (double)whiteouts);
      }
      deferred.Resolve(r);
   }
   void OnError(const Napi::Error &e) override { deferred.Reject(e.Value()); }

private:
   Napi::Promise::Deferred deferred;
   std::string tarball, dest;
   bool use_openat2, as_layer, follow, decode_thread, beneath = false, over_limit = false;
   mode_t um;
   uint64_t max_bytes;
   uint64_t whiteouts = 0;
   Napi::Reference<Napi::ArrayBuffer> progressRef;
   std::atomic<uint64_t> *counter;
   Stats st;
   std::string top, kind, msg;
   int err = 0;
};

// extract(tarball, dest, {openat2, umask, progress: ArrayBuffer(16), layer?, maxBytes?}) -> Promise<result>.
// layer: apply the tarball as an OCI layer on top of what DEST holds (layer.h).
// maxBytes: at most this much file data written; a member that would pass it
// fails the extraction with overLimit set and error naming the member.
// progress holds two uint64: bytes of the tarball read (written here), and a
// cancel flag (written by JS, e.g. on SIGINT; checked before every entry).
// follow: the tarball is still being written (a layer downloading); progress
// then holds a third uint64, set non-zero by JS once it is complete: until
// then the extractor waits at its end (RawFile). The whole stream is read,
// never mapped.
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
   bool follow = o.Get("follow").ToBoolean();
   if (follow && pv.As<Napi::ArrayBuffer>().ByteLength() < 24) {
      Napi::TypeError::New(env, "opts.progress must be an ArrayBuffer of 24 bytes with follow: [bytes read, cancel, complete]")
         .ThrowAsJavaScriptException();
      return env.Undefined();
   }
   bool oa2 = o.Get("openat2").ToBoolean();
   mode_t um = o.Get("umask").IsNumber() ? o.Get("umask").As<Napi::Number>().Uint32Value() : 022;
   uint64_t max_bytes = UINT64_MAX;
   Napi::Value mb = o.Get("maxBytes");
   if (mb.IsNumber()) {
      double d = mb.As<Napi::Number>().DoubleValue();
      if (!(d >= 0) || d > 9007199254740991.0) {
         Napi::TypeError::New(env, "opts.maxBytes must be a safe integer >= 0").ThrowAsJavaScriptException();
         return env.Undefined();
      }
      max_bytes = (uint64_t)d;
   }
   auto *w = new ExtractWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>(), oa2, um,
                               pv.As<Napi::ArrayBuffer>(), o.Get("layer").ToBoolean(), max_bytes, follow,
                               o.Get("decodeThread").ToBoolean());
   Napi::Promise p = w->Promise();
   w->Queue();
   return p;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports)
{
   exports.Set("extract", Napi::Function::New(env, Extract));
   // The decoders built in (the others run their program, which can't follow a growing file).
   Napi::Object dec = Napi::Object::New(env);
#ifdef CH_HAVE_GZIP_LIB
   dec.Set("gzip", true);
#endif
#ifdef CH_HAVE_LZMA
   dec.Set("xz", true);
#endif
#ifdef CH_HAVE_ZSTD
   dec.Set("zstd", true);
#endif
   exports.Set("decoders", dec);
   InitFsOps(env, exports);
   return exports;
}

}  // namespace
}  // namespace chtar

static Napi::Object Init(Napi::Env env, Napi::Object exports)
{
   return chtar::InitModule(env, exports);
}

NODE_API_MODULE(ch_tar, Init)

// ch_host.node's bundle compiler (tools/ch-run-loader.cjs): ch-run's
// front end compiled from its code cache without node:vm and without
// reading the bundle into a string of Node's.
//
// Why: on a launch that plans, requiring node:vm (not in Node's start-up
// snapshot: compiled from source) cost ~0.4 ms, and reading the 118 KB
// bundle through readFileSync ~0.3; here the bundle is read into memory V8
// is given as an external one-byte string (no copy into V8's heap, no
// UTF-8 decoding) and the cache is mapped and consumed straight from the
// mapping. The function V8 compiles is the module wrapper Node's CommonJS
// loader would make (the same five parameters, as vm.compileFunction makes
// it: so the loader's fallback uses the same cache); it is handed to
// JavaScript under Symbol.for('ch-toolkit.compiled') on the global object,
// so no V8 handle crosses N-API. V8's C++ API is used only where Node's
// module version is the one this was built for: the loader checks v8abi
// against process.versions.modules.

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <node_api.h>
#undef NAPI_VERSION   /* node_version.h's own, after ours (binding.gyp) has done its work */
#include <node_version.h>
#include <v8.h>

// Written against V8 11 to 13 (Node 20 to 24). Another V8's API may differ:
// there the compiler is left out (V8_KNOWN 0), compile() says it can't, and
// the loader compiles with node:vm, as it does without the addon; the rest
// of ch_host.node builds all the same.
#define V8_KNOWN (V8_MAJOR_VERSION >= 11 && V8_MAJOR_VERSION <= 13)

#if V8_KNOWN
namespace {

// A file's bytes: mapped (the cache: V8 reads it while it compiles, then
// it goes), or read into memory of its own (the source, which V8 reads again
// whenever it compiles a function lazily: a mapping would be a SIGBUS there
// if the file were cut short in place meanwhile, say by cp over it).
struct Bytes {
   const char *at = nullptr;
   size_t len = 0;
   bool mapped = false;
   bool load(const char *path, size_t max, bool map)
   {
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
         return false;
      struct stat st;
      bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && (size_t)st.st_size <= max;
      size_t n = ok ? st.st_size : 0;
      char *p = nullptr;
      if (ok && map) {
         void *m = mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0);
         p = m == MAP_FAILED ? nullptr : static_cast<char *>(m);
      } else if (ok && (p = static_cast<char *>(malloc(n))) != nullptr) {
         size_t got = 0;
         ssize_t r = 1;
         while (got < n && ((r = read(fd, p + got, n - got)) > 0 || (r < 0 && errno == EINTR)))
            got += r > 0 ? r : 0;
         if (got != n) {   /* changed while read: not this bundle */
            free(p);
            p = nullptr;
         }
      }
      close(fd);
      if (p == nullptr)
         return false;
      at = p;
      len = n;
      mapped = map;
      return true;
   }
   void release()
   {
      if (at != nullptr && mapped)
         munmap(const_cast<char *>(at), len);
      else
         free(const_cast<char *>(at));
      at = nullptr;
   }
};

// The bundle's source as V8 keeps it, for as long as the string lives (the
// process's life: a compiled function refers to it).
class BundleSource : public v8::String::ExternalOneByteStringResource {
 public:
   explicit BundleSource(Bytes b) : b_(b) {}
   ~BundleSource() override { b_.release(); }
   const char *data() const override { return b_.at; }
   size_t length() const override { return b_.len; }
 private:
   Bytes b_;
};

// Functions compiled while the build makes the caches (keep), by file,
// with the stamp of the very bytes compiled: ch-run's three bundles at most.
struct Kept {
   char file[PATH_MAX + 1];
   char stamp[512];
   size_t slen;
   v8::Global<v8::Function> *fn;   // never freed: no destructor at exit
};
Kept kept[8];

bool ascii(const char *p, size_t n)
{
   for (size_t i = 0; i < n; i++)
      if (static_cast<unsigned char>(p[i]) >= 0x80)
         return false;
   return true;
}

// The cache's first line for the bundle at M, in OUT (N bytes): its length
// and first line (CHCODECACHE2 LENGTH FIRSTLINE\n); its length, 0 if it
// doesn't fit.
size_t stamp_of(const Bytes &m, char *out, size_t n)
{
   const char *nl = static_cast<const char *>(memchr(m.at, '\n', m.len));
   int first = nl ? nl - m.at : m.len;
   int len = snprintf(out, n, "CHCODECACHE2 %zu %.*s\n", m.len, first, m.at);
   return len > 0 && (size_t)len < n ? len : 0;
}

napi_value str(napi_env env, const char *s)
{
   napi_value r = nullptr;
   napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
   return r;
}

bool path_arg(napi_env env, napi_value v, char *out, size_t n)
{
   size_t len;
   return napi_get_value_string_utf8(env, v, out, n, &len) == napi_ok && len < n - 1 && strlen(out) == len;
}

}  // namespace

// compile(file, keep): compile bundle FILE (an ASCII file) as a CommonJS
// module's function, from FILE.cache where that was made for it; the
// function goes to globalThis[Symbol.for('ch-toolkit.compiled')]. Returns
// what became of the cache ('used', 'rejected by V8', 'none'), or
// undefined where this can't compile it (the loader then uses node:vm).
// KEEP: the build's cache run, which asks for the cache later (cacheOf).
extern "C" napi_value ch_compile(napi_env env, napi_callback_info info)
{
   size_t argc = 2;
   napi_value argv[2];
   char file[PATH_MAX + 1];
   bool keep = false;
   if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1
       || !path_arg(env, argv[0], file, sizeof(file) - 8))
      return nullptr;
   if (argc > 1)
      napi_get_value_bool(env, argv[1], &keep);
   Bytes src;
   if (!src.load(file, 64u << 20, false))
      return nullptr;
   if (!ascii(src.at, src.len)) {
      src.release();
      return nullptr;
   }
   char stamp[512], cpath[PATH_MAX + 8];
   size_t slen = stamp_of(src, stamp, sizeof(stamp));
   if (slen == 0) {
      src.release();
      return nullptr;
   }
   snprintf(cpath, sizeof(cpath), "%s.cache", file);
   Bytes cache;
   if (cache.load(cpath, 1u << 30, true) && (cache.len <= slen || memcmp(cache.at, stamp, slen) != 0))
      cache.release();

   // V8's handles here live in the scope of this call (N-API's, as for any
   // function V8 calls), where the result is made too: no scope of our own,
   // which would close over that result.
   v8::Isolate *iso = v8::Isolate::GetCurrent();
   v8::Local<v8::Context> ctx = iso->GetCurrentContext();
   v8::Local<v8::String> source;
   if (!v8::String::NewExternalOneByte(iso, new BundleSource(src)).ToLocal(&source)) {
      cache.release();
      return nullptr;   // too long (never ours); the bytes are V8's now, left as they are
   }
   v8::Local<v8::String> name = v8::String::NewFromUtf8(iso, file).ToLocalChecked();
#if V8_MAJOR_VERSION > 12 || (V8_MAJOR_VERSION == 12 && V8_MINOR_VERSION >= 1)
   v8::ScriptOrigin origin(name);   /* V8 12.1 dropped the isolate (12.6 its constructor) */
#else
   v8::ScriptOrigin origin(iso, name);
#endif
   v8::ScriptCompiler::CachedData *cached = cache.at == nullptr ? nullptr
      : new v8::ScriptCompiler::CachedData(reinterpret_cast<const uint8_t *>(cache.at) + slen,
                                           static_cast<int>(cache.len - slen));
   v8::ScriptCompiler::Source s(source, origin, cached);   // owns CACHED, not its bytes
   static const char *const names[] = { "exports", "require", "module", "__filename", "__dirname" };
   v8::Local<v8::String> params[5];
   for (int i = 0; i < 5; i++)
      params[i] = v8::String::NewFromUtf8(iso, names[i], v8::NewStringType::kInternalized).ToLocalChecked();
   v8::TryCatch tc(iso);
   v8::Local<v8::Function> fn;
   bool ok = v8::ScriptCompiler::CompileFunction(ctx, &s, 5, params, 0, nullptr,
                                                 cached ? v8::ScriptCompiler::kConsumeCodeCache
                                                        : v8::ScriptCompiler::kNoCompileOptions)
                .ToLocal(&fn);
   const char *status = cached == nullptr ? "none" : s.GetCachedData()->rejected ? "rejected by V8" : "used";
   cache.release();
   if (!ok)
      return nullptr;   // the loader compiles it again, and throws what V8 says
   v8::Local<v8::Value> key = v8::Symbol::For(iso, v8::String::NewFromUtf8Literal(iso, "ch-toolkit.compiled"));
   if (!ctx->Global()->Set(ctx, key, fn).FromMaybe(false))
      return nullptr;
   if (keep)
      for (Kept &k : kept)
         if (k.file[0] == '\0' || !strcmp(k.file, file)) {
            snprintf(k.file, sizeof(k.file), "%s", file);
            memcpy(k.stamp, stamp, slen);
            k.slen = slen;
            if (k.fn == nullptr)
               k.fn = new v8::Global<v8::Function>();
            k.fn->Reset(iso, fn);
            break;
         }
   return str(env, status);
}

// cacheOf(file): the code cache of bundle FILE, compiled by compile(file,
// true) and run since: what it compiled meanwhile is in it; its first line
// the stamp compile() checks, of the bytes it compiled. Undefined if FILE
// wasn't kept.
extern "C" napi_value ch_cache_of(napi_env env, napi_callback_info info)
{
   size_t argc = 1;
   napi_value argv[1];
   char file[PATH_MAX + 1];
   if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1
       || !path_arg(env, argv[0], file, sizeof(file)))
      return nullptr;
   Kept *k = nullptr;
   for (Kept &c : kept)
      if (c.fn != nullptr && !strcmp(c.file, file))
         k = &c;
   if (k == nullptr)
      return nullptr;
   v8::Isolate *iso = v8::Isolate::GetCurrent();   // the call's own handle scope, as in ch_compile
   v8::ScriptCompiler::CachedData *data = v8::ScriptCompiler::CreateCodeCacheForFunction(k->fn->Get(iso));
   if (data == nullptr)
      return nullptr;
   void *bytes;
   napi_value r = nullptr;
   if (napi_create_buffer(env, k->slen + data->length, &bytes, &r) == napi_ok) {
      memcpy(bytes, k->stamp, k->slen);
      memcpy(static_cast<char *>(bytes) + k->slen, data->data, data->length);
   }
   delete data;
   return r;
}

#else
extern "C" napi_value ch_compile(napi_env, napi_callback_info) { return nullptr; }
extern "C" napi_value ch_cache_of(napi_env, napi_callback_info) { return nullptr; }
#endif

// The module version this was built against: V8's C++ API above is used
// only where the running Node's is the same (process.versions.modules).
extern "C" int ch_v8abi(void)
{
   return NODE_MODULE_VERSION;
}

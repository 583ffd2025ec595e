// The zstd decoder (libzstd), compiled only where binding.gyp found it.

#include <cstring>
#include <memory>
#include <string>

#include <zstd.h>

#include "source.h"

namespace chtar {
namespace {

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

}  // namespace

std::unique_ptr<Source> zstd_source(RawFile &in, const std::string &pre)
{
   return std::make_unique<ZstdSource>(in, pre);
}

}  // namespace chtar

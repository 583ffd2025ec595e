// The xz decoder (liblzma), compiled only where binding.gyp found it.

#include <cstring>
#include <memory>
#include <string>

#include <lzma.h>

#include "source.h"

namespace chtar {
namespace {

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

}  // namespace

std::unique_ptr<Source> xz_source(RawFile &in, const std::string &pre)
{
   return std::make_unique<XzSource>(in, pre);
}

}  // namespace chtar

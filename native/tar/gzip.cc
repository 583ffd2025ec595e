// The gzip decoder (zlib), compiled only where binding.gyp found it.

#include <cstring>
#include <memory>
#include <string>

#include <zlib.h>

#include "source.h"

namespace chtar {
namespace {


struct GzipSource : Source {
   RawFile &in;
   z_stream z{};
   std::unique_ptr<char[]> ibuf{new char[INBUF]};
   bool ended = false, eof = false;
   GzipSource(RawFile &i, const std::string &pre) : in(i)
   {
      if (inflateInit2(&z, 15 + 16) != Z_OK)
         throw XErr("can't initialize zlib");
      memcpy(ibuf.get(), pre.data(), pre.size());
      z.next_in = (Bytef *)ibuf.get();
      z.avail_in = pre.size();
   }
   ~GzipSource() override { inflateEnd(&z); }
   bool refill()
   {
      if (eof)
         return false;
      size_t r = in.read(ibuf.get(), INBUF);
      if (r == 0) {
         eof = true;
         return false;
      }
      z.next_in = (Bytef *)ibuf.get();
      z.avail_in = r;
      return true;
   }
   size_t read(char *buf, size_t n) override
   {
      z.next_out = (Bytef *)buf;
      z.avail_out = n;
      while (z.avail_out == n) {
         if (ended) {
            // Another gzip member may follow (concatenated .gz); anything
            // else after the end is trailing garbage, ignored as gzip does.
            if (z.avail_in == 0 && !refill())
               return 0;
            if (z.avail_in < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b)
               return 0;
            inflateReset(&z);
            ended = false;
         }
         if (z.avail_in == 0 && !refill())
            throw XErr("truncated gzip data: input ends inside the compressed stream");
         int rc = inflate(&z, Z_NO_FLUSH);
         if (rc == Z_STREAM_END)
            ended = true;
         else if (rc == Z_BUF_ERROR)
            continue;
         else if (rc != Z_OK)
            throw XErr(std::string("corrupt gzip data: ") + (z.msg ? z.msg : "inflate failed"));
      }
      return n - z.avail_out;
   }
};

}  // namespace

std::unique_ptr<Source> gzip_source(RawFile &in, const std::string &pre)
{
   return std::make_unique<GzipSource>(in, pre);
}

}  // namespace chtar

// The tar parser: reads headers (ustar, GNU long names, pax) from a Stream
// and has the Writer create each entry. Headers are
// hostile input: a size they claim is checked before it is used, and never
// sizes an allocation except for metadata bounded below.

#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "source.h"
#include "writer.h"

namespace chtar {

struct Stats {
   uint64_t files = 0, dirs = 0, symlinks = 0, hardlinks = 0, devices = 0, other = 0, bytes = 0, entries = 0;
};

struct Layer;

// The file data written would pass Extractor::max_bytes (what() names the member).
struct LimitErr : XErr {
   using XErr::XErr;
};

struct Extractor {
   Stream &in;
   Writer &w;
   Stats st;
   std::string top;   // common first component of all entries
   bool multi = false;
   // Bounds on what a header may claim, since headers are hostile input.
   static constexpr uint64_t META_MAX = 1 << 20;           // a pax extended header
   static constexpr uint64_t MAX_MEMBER = INT64_MAX;       // any member's size

   std::atomic<uint64_t> *cancel = nullptr;   // set non-zero by JS (a signal): stop
   // At most this many bytes of file data written in all (ch-pull's bound on unpacked
   // size): a member that would pass it is refused before it is created.
   uint64_t max_bytes = UINT64_MAX;
   Layer *layer = nullptr;   // OCI layer mode (layer.h): whiteouts applied, lower trees replaced

   Extractor(Stream &s, Writer &wr) : in(s), w(wr) {}

   void run();

private:
   // Metadata headers (GNU long name and link, pax) that apply to the next entry.
   struct Pending {
      std::string longname, longlink, paxpath, paxlink;
      bool have_long = false, have_llink = false, have_ppath = false, have_plink = false, have_psize = false;
      uint64_t psize = 0;
   };
   bool next_header(char *h, uint64_t &hoff, bool &ustar);
   void check_sum(const char *h, uint64_t hoff, bool ustar);
   static std::string entry_name(const char *h, const Pending &p);
   bool take_meta(char type, uint64_t size, Pending &p);
   void entry(const char *h, char type, const std::string &name, const std::string &link, uint64_t size);
   void skip(uint64_t n);
   static uint64_t pad(uint64_t size) { return (512 - size % 512) % 512; }
   std::string read_meta(uint64_t size, const std::string &what, uint64_t max);
   static std::string gnu_long(std::string s, const char *what);
   void parse_pax(const std::string &d, std::string &path, std::string &link, bool &have_path, bool &have_link,
                  uint64_t &size, bool &have_size);
   void track_top(const std::vector<std::string> &c);
   void write_data(int fd, uint64_t size, const std::string &name);
   static std::string printable(const std::string &s);
};

}  // namespace chtar

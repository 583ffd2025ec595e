// The tar parser (see parser.h).

#include <climits>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "layer.h"
#include "parser.h"

namespace chtar {
namespace {

uint64_t parse_num(const char *f, size_t n, const std::string &name, const char *what)
{
   if ((unsigned char)f[0] & 0x80) {   // GNU base-256
      uint64_t v = (unsigned char)f[0] & 0x3f;
      if ((unsigned char)f[0] & 0x40)
         throw XErr(name + ": negative " + what + " in header");
      for (size_t i = 1; i < n; i++) {
         if (v >> 56)
            throw XErr(name + ": " + what + " too large");
         v = (v << 8) | (unsigned char)f[i];
      }
      return v;
   }
   uint64_t v = 0;
   size_t i = 0;
   while (i < n && (f[i] == ' ' || f[i] == '\0'))
      i++;
   for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
      if (v >> 60)
         throw XErr(name + ": " + what + " too large");
      v = v * 8 + (f[i] - '0');
   }
   for (; i < n; i++)
      if (f[i] != ' ' && f[i] != '\0')
         throw XErr("corrupt archive: bad " + std::string(what) + " field in header of " + name);
   return v;
}

std::string field(const char *f, size_t n)
{
   size_t l = strnlen(f, n);
   return std::string(f, l);
}

}  // namespace

void Extractor::skip(uint64_t n)
{
   while (n > 0) {
      if (!in.fill())
         throw XErr("truncated archive: ends inside member data");
      size_t k = std::min<uint64_t>(n, in.len - in.pos);
      in.pos += k;
      in.offset += k;
      n -= k;
   }
}

// The data of a metadata entry, at most MAX bytes (checked before allocating).
std::string Extractor::read_meta(uint64_t size, const std::string &what, uint64_t max)
{
   if (size > max)
      throw XErr("corrupt archive: " + what + " too long (" + std::to_string(size) + " bytes, at most "
                 + std::to_string(max) + ")");
   std::string s(size, '\0');
   if (in.get(&s[0], size) != size)
      throw XErr("truncated archive: ends inside " + what);
   skip(pad(size));
   return s;
}

// GNU long name/link: NUL-terminated; a NUL inside is a hostile name.
std::string Extractor::gnu_long(std::string s, const char *what)
{
   while (!s.empty() && s.back() == '\0')
      s.pop_back();
   if (s.find('\0') != std::string::npos)
      throw XErr(std::string(what) + " contains a NUL byte");
   return s;
}

void Extractor::parse_pax(const std::string &d, std::string &path, std::string &link, bool &have_path, bool &have_link,
               uint64_t &size, bool &have_size)
{
   size_t i = 0;
   while (i < d.size()) {
      size_t sp = d.find(' ', i);
      if (sp == std::string::npos)
         throw XErr("corrupt archive: bad pax header record");
      uint64_t len = 0;
      for (size_t k = i; k < sp; k++) {
         if (d[k] < '0' || d[k] > '9' || len > META_MAX)
            throw XErr("corrupt archive: bad pax header record length");
         len = len * 10 + (d[k] - '0');
      }
      if (len == 0 || i + len > d.size() || d[i + len - 1] != '\n')
         throw XErr("corrupt archive: bad pax header record");
      std::string rec = d.substr(sp + 1, i + len - 1 - (sp + 1));
      size_t eq = rec.find('=');
      if (eq == std::string::npos)
         throw XErr("corrupt archive: bad pax header record");
      std::string key = rec.substr(0, eq), val = rec.substr(eq + 1);
      if (key == "path") {
         path = val;
         have_path = true;
      } else if (key == "linkpath") {
         link = val;
         have_link = true;
      } else if (key == "size") {
         size = 0;
         for (char ch : val) {
            if (ch < '0' || ch > '9' || size > (UINT64_MAX / 10 - 10))
               throw XErr("corrupt archive: bad pax size");
            size = size * 10 + (ch - '0');
         }
         have_size = true;
      } else if (key.compare(0, 11, "GNU.sparse.") == 0) {
         throw XErr("sparse files (GNU.sparse pax) are not supported");
      }
      i += len;
   }
}

void Extractor::track_top(const std::vector<std::string> &c)
{
   if (multi)
      return;
   if (top.empty())
      top = c[0];
   else if (top != c[0])
      multi = true;
}

void Extractor::write_data(int fd, uint64_t size, const std::string &name)
{
   uint64_t left = size;
   while (left > 0) {
      if (!in.fill())
         throw XErr("truncated archive: ends inside data of " + name);
      size_t k = std::min<uint64_t>(left, in.len - in.pos);
      write_all(fd, in.buf + in.pos, k, name);
      in.pos += k;
      in.offset += k;
      left -= k;
   }
   st.bytes += size;
   skip(pad(size));
}

void Extractor::run()
{
   char h[512];
   Pending p;
   uint64_t hoff;
   bool ustar;
   while (next_header(h, hoff, ustar)) {
      check_sum(h, hoff, ustar);
      char type = h[156];
      std::string name = entry_name(h, p);
      uint64_t size = parse_num(h + 124, 12, name, "size");
      if (p.have_psize)
         size = p.psize;
      if (size > MAX_MEMBER)   // also keeps size + padding from overflowing
         throw XErr("corrupt archive: size of " + printable(name) + " too large (" + std::to_string(size)
                    + " bytes)");
      std::string link = p.have_plink ? p.paxlink : p.have_llink ? p.longlink : field(h + 157, 100);
      if (take_meta(type, size, p))
         continue;   // metadata entries apply to the next header
      p = Pending();
      entry(h, type, name, link, size);
   }
}

// The next header into H (at input offset HOFF; USTAR: it has the magic);
// false at the end of the archive. Checks for cancellation first.
bool Extractor::next_header(char *h, uint64_t &hoff, bool &ustar)
{
   hoff = in.offset;
   in.report();
   if (cancel && cancel->load(std::memory_order_relaxed))
      throw XErr("interrupted", EINTR);
   size_t got = in.get(h, 512);
   if (got == 0)
      throw XErr("truncated archive: no end-of-archive marker");
   // At the very start, no tar header (no "ustar" magic) means the input
   // is not a tar archive at all: say so, not "truncated" or "corrupt".
   ustar = got >= 263 && memcmp(h + 257, "ustar", 5) == 0;
   if (got < 512 && hoff == 0 && !ustar)
      throw XErr("not a tar archive (shorter than one tar header)");
   if (got < 512)
      throw XErr("truncated archive: ends inside a header");
   for (int i = 0; i < 512; i++)
      if (h[i] != 0)
         return true;
   return false;   // end of archive (one zero block is enough, as for GNU tar)
}

// Header H's checksum: its bytes with the checksum field as spaces, summed
// unsigned or (old tars) signed.
void Extractor::check_sum(const char *h, uint64_t hoff, bool ustar)
{
   auto bad_sum = [&]() {
      return hoff == 0 && !ustar ? std::string("not a tar archive (no tar header at its start)")
         : "corrupt archive: header checksum mismatch at offset " + std::to_string(hoff)
            + " (not a tar file, or damaged)";
   };
   uint64_t want;
   try {
      want = parse_num(h + 148, 8, "", "checksum");
   } catch (XErr &) {
      throw XErr(bad_sum());
   }
   uint64_t us = 0;
   int64_t ss = 0;
   for (int i = 0; i < 512; i++) {
      unsigned char ch = (i >= 148 && i < 156) ? ' ' : (unsigned char)h[i];
      us += ch;
      ss += (signed char)((i >= 148 && i < 156) ? ' ' : h[i]);
   }
   if (want != us && (int64_t)want != ss)
      throw XErr(bad_sum());
}

// The entry's name: a pax path, else a GNU long name, else the header's
// (with its ustar prefix).
std::string Extractor::entry_name(const char *h, const Pending &p)
{
   if (p.have_ppath)
      return p.paxpath;
   if (p.have_long)
      return p.longname;
   std::string name = field(h, 100);
   bool posix = memcmp(h + 257, "ustar\0", 6) == 0;
   if (posix && h[345])
      name = field(h + 345, 155) + "/" + name;
   return name;
}

// A metadata header of TYPE (its content SIZE bytes) read into P, for the
// next entry; false if TYPE is an entry's.
bool Extractor::take_meta(char type, uint64_t size, Pending &p)
{
   switch (type) {
   case 'L':
      p.longname = gnu_long(read_meta(size, "GNU long name", PATH_MAX), "name");
      p.have_long = true;
      return true;
   case 'K':
      p.longlink = gnu_long(read_meta(size, "GNU long link", PATH_MAX), "link target");
      p.have_llink = true;
      return true;
   case 'x':
      parse_pax(read_meta(size, "pax header", META_MAX), p.paxpath, p.paxlink, p.have_ppath, p.have_plink, p.psize,
                p.have_psize);
      return true;
   case 'g':   // nothing in it is used: skipped, never held in memory
      skip(size + pad(size));
      return true;
   default:
      return false;
   }
}

// Entry NAME of TYPE (header H; LINK its target, SIZE its data) created
// through the writer, or skipped and counted.
void Extractor::entry(const char *h, char type, const std::string &name, const std::string &link, uint64_t size)
{
   st.entries++;
   std::vector<std::string> c;
   try {
      c = split_name(name, "name");
   } catch (XErr &e) {
      throw XErr(std::string(e.what()) + ": " + printable(name), e.err);
   }
   uint32_t mode = parse_num(h + 100, 8, name, "mode");
   uint64_t mtime = parse_num(h + 136, 12, name, "mtime");
   if (c.empty()) {   // "." or "./": the destination itself
      skip(type == '5' ? 0 : size + pad(size));
      return;
   }
   if (layer && layer->before(c, name, type)) {
      skip(size + pad(size));
      return;
   }
   switch (type) {
   case '0':
   case '\0':
   case '7': {
      track_top(c);
      if (size > max_bytes - st.bytes)   // st.bytes <= max_bytes always: no wrap
         throw LimitErr(printable(name));
      {
         // Streamed from the decoder's buffer (or the map): the header's size
         // never decides how much is allocated.
         Fd fd(w.create_file(c, name, mode));
         write_data(fd.fd, size, name);
         struct timespec ts[2] = {{(time_t)mtime, 0}, {(time_t)mtime, 0}};
         futimens(fd.fd, ts);   // best effort, as tar's mtime restoration
      }
      st.files++;
      break;
   }
   case '5':
      track_top(c);
      w.make_dir(c, name, mode);
      skip(size + pad(size));
      st.dirs++;
      break;
   case '2':
      track_top(c);
      w.make_symlink(c, name, link);
      skip(size + pad(size));
      st.symlinks++;
      break;
   case '1':
      track_top(c);
      w.make_hardlink(c, name, link);
      skip(size + pad(size));
      st.hardlinks++;
      break;
   case '3':
   case '4':
   case '6':
      skip(size + pad(size));
      st.devices++;
      break;
   case 'S':
      throw XErr(name + ": GNU sparse files are not supported");
   default:
      skip(size + pad(size));
      st.other++;
   }
}

std::string Extractor::printable(const std::string &s)
{
   std::string o;
   for (unsigned char ch : s.substr(0, 200)) {
      if (ch < 32 || ch == 127) {
         char b[8];
         snprintf(b, sizeof b, "\\x%02x", ch);
         o += b;
      } else
         o += ch;
   }
   if (s.size() > 200)
      o += "...";
   return o;
}

}  // namespace chtar

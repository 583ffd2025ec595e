// OCI layer mode of the extractor: a layer is unpacked on top of the layers
// before it, so an entry may replace a lower layer's directory, and whiteouts
// delete what lower layers made (image-spec layer.md):
//   DIR/.wh.NAME       remove DIR/NAME;
//   DIR/.wh..wh..opq   remove DIR's contents from lower layers (opaque dir);
//   other .wh..wh.*    AUFS bookkeeping: ignored.
// What this layer itself wrote is never removed by its own whiteouts. Every
// path is resolved through the confined Writer, and removals never follow a
// link, so a whiteout can no more reach outside the image than a file can.

#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "writer.h"

namespace chtar {

struct Layer {
   Writer &w;
   uint64_t whiteouts = 0;
   std::unordered_set<std::string> mine;   // paths this layer created (and their parents)

   explicit Layer(Writer &wr) : w(wr) {}

   // Before entry C (NAME in errors, tar TYPE) is written: apply it if it is a
   // whiteout (returns true: nothing more to write), else make room for it.
   bool before(const std::vector<std::string> &c, const std::string &name, char type);

private:
   void opaque(const std::vector<std::string> &c, const std::string &name);
   void clear_lower(int dfd, const std::string &dir, const std::string &name);
};

// Remove NAME in directory DFD, a whole tree if it is a directory, never
// following a symlink; nothing there is fine. WHAT names it in errors.
void remove_tree(int dfd, const std::string &name, const std::string &what);

}  // namespace chtar

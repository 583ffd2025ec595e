{
  # ch_tar: ch-tar2dir's native extractor (native/tar/). zlib, liblzma and libzstd are used
  #   where tools/probe.js finds their headers; without one, that compression is
  #   decompressed by its program (gzip, xz, zstd) as GNU tar does.
  # ch_host: the front end's frequent reads (stat, readFile, getpwuid) as an addon.
  # ch-run-core: ch-run's single-threaded C core, a separate executable because
  #   unshare(CLONE_NEWUSER) fails with EINVAL in a multithreaded process (docs/design.md).
  # ch-run: the launcher, which becomes the container: it forks the Node front
  #   end, takes its plan from a memfd and execs the core (docs/design.md).
  # The core is linked -static where a static libc exists (one fewer ld.so start
  # per launch), dynamically elsewhere (RHEL-family: no glibc-static). The
  # launcher is always dynamic: checking a memoized plan asks NSS for the user
  # name (getpwuid), which a static glibc can do only with the very glibc it
  # was linked against at run time; measured, the difference is lost in the
  # noise of an exec (1.42 vs 1.45 ms, static vs dynamic, getpwuid included).
  # gzip: ISA-L's igzip inflater where found (~2-3x zlib's speed, streaming),
  #   else zlib, else the gzip program.
  # CH_TOOLKIT_WITHOUT=isal,zlib,lzma,zstd,static-libc pretends any of these absent.
  "variables": {
    "have_zlib": "<!(node tools/probe.js zlib)",
    "have_isal": "<!(node tools/probe.js isal)",
    "have_lzma": "<!(node tools/probe.js lzma)",
    "have_zstd": "<!(node tools/probe.js zstd)",
    "have_static_libc": "<!(node tools/probe.js static-libc)",
    # protocol.h, made from protocol.json (tools/protocol.js): the plan's and
    # the memo record's form, the launcher's variables and exit statuses.
    "protocol_dir": "<!(node tools/protocol.js c)",
    # The core's sources, linked into ch-run-core and into ch-run (which runs
    # a memoized plan in process).
    "core_sources": ["native/core/main.c", "native/core/plan.c", "native/core/misc.c",
                     "native/core/mounts.c", "native/core/join.c", "native/core/userns.c",
                     "native/core/lookup.c", "native/core/seccomp.c", "native/core/squash.c",
                     "native/core/watch.c", "native/core/holder.c",
                     "native/core/overlay.c"]
  },
  "targets": [
    {
      "target_name": "ch_tar",
      "sources": ["native/tar/napi.cc", "native/tar/fsops.cc", "native/tar/source.cc",
                  "native/tar/parser.cc", "native/tar/writer.cc",
                  "native/tar/layer.cc", "native/tar/threaded.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17"],
      "cflags_cc!": ["-fno-exceptions"],
      "conditions": [
        ["have_isal==1", {"sources": ["native/tar/igzip.cc"], "defines": ["CH_HAVE_GZIP_LIB"], "libraries": ["-lisal"]}],
        ["have_isal!=1 and have_zlib==1", {"sources": ["native/tar/gzip.cc"], "defines": ["CH_HAVE_GZIP_LIB"], "libraries": ["-lz"]}],
        ["have_lzma==1", {"sources": ["native/tar/xz.cc"], "defines": ["CH_HAVE_LZMA"], "libraries": ["-llzma"]}],
        ["have_zstd==1", {"sources": ["native/tar/zstd.cc"], "defines": ["CH_HAVE_ZSTD"], "libraries": ["-lzstd"]}]
      ]
    },
    {
      # ch_host: the reads ch-run's front end makes most, in C from their first
      #   call (native/host/hostfs.c says why), and the front end's compiler
      #   (native/host/compile.cc: V8's API, checked against the running Node);
      #   small and with no library Node hasn't loaded, so that opening it costs
      #   a launch little.
      "target_name": "ch_host",
      "sources": ["native/host/hostfs.c", "native/host/compile.cc"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "cflags_c": ["-std=gnu11"],
      "cflags_cc": ["-std=gnu++17", "-fno-exceptions", "-fno-rtti"],
      "ldflags": ["-Wl,--as-needed"]
    },
    {
      "target_name": "ch-run-core",
      "type": "executable",
      "sources": ["<@(core_sources)"],
      "include_dirs": ["<(protocol_dir)"],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "cflags!": ["-fno-exceptions"],
      "conditions": [["have_static_libc==1", {"ldflags": ["-static"]}]]
    },
    {
      "target_name": "ch-run",
      "type": "executable",
      "sources": ["native/launcher/launcher.c",
                  "native/launcher/memo/memo.c", "native/launcher/memo/store.c", "native/launcher/memo/record.c",
                  "native/launcher/memo/deps.c", "native/launcher/memo/rebuild.c", "native/launcher/memo/verify.c",
                  "native/launcher/memo/later.c", "native/launcher/memo/buf.c",
                  "<@(core_sources)"],
      "include_dirs": ["<(protocol_dir)"],
      "defines": ["_GNU_SOURCE", "CH_CORE_IN_LAUNCHER"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"]
    }
  ]
}

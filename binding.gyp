{
  # ch_run: the N-API addon on ch-run's launch path (plan hand-off by execve), small on purpose.
  # ch_tar: ch-tar2dir's native extractor (links zlib, liblzma, libzstd).
  # ch-run-core: ch-run's single-threaded C core, a separate executable because
  #   unshare(CLONE_NEWUSER) fails with EINVAL in a multithreaded process (see DESIGN.md).
  # ch-run: the launcher (records RLIMIT_NOFILE before Node raises it).
  "targets": [
    {
      "target_name": "ch_run",
      "sources": ["addon/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17"]
    },
    {
      "target_name": "ch_tar",
      "sources": ["addon/extract.cc"],
      "libraries": ["-lz", "-llzma", "-lzstd"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17"],
      "cflags_cc!": ["-fno-exceptions"]
    },
    {
      "target_name": "ch-run-core",
      "type": "executable",
      "sources": ["addon/core/main.c", "addon/core/plan.c", "addon/core/misc.c",
                  "addon/core/mounts.c", "addon/core/join.c", "addon/core/userns.c",
                  "addon/core/squash.c", "addon/core/overlay.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-static"]
    },
    {
      "target_name": "ch-run",
      "type": "executable",
      "sources": ["addon/launcher.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "ldflags": ["-static"]
    }
  ]
}

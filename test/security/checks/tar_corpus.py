#!/usr/bin/env python3
"""Hostile and broken tarballs for ch-tar2dir.

Usage: tar_corpus.py OUTDIR CANARY
Writes OUTDIR/<case>.tar[.gz] and prints a JSON manifest on stdout:
[{"name", "file", "expect": "ok" | "error" | "either", "why"}].
CANARY is an absolute host directory the escapes aim at; it holds a file
"file", the unpacking user can write to it, and it is "../../canary" seen
from the directory the tarball is unpacked into (DEST/CASE/.NAME.ch-tmp.PID
or DEST/CASE/NAME), so relative escapes reach it too. Nothing here may ever
land in (or change) CANARY: every escape must be refused ("error").
"""

import gzip
import io
import json
import os
import sys
import tarfile

out, canary = sys.argv[1], sys.argv[2]
# Relative escapes count on the layout above.
rel = "../../canary"
assert os.path.basename(canary) == "canary"
manifest = []


def ti(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, size=None, pax=None):
    t = tarfile.TarInfo(name)
    t.type = kind
    t.mode = mode
    t.linkname = link
    t.size = len(data) if size is None else size
    t.mtime = 1700000000
    if pax:
        t.pax_headers = pax
    return t, data


def write(case, members, expect, why, fmt=tarfile.PAX_FORMAT, gz=False, encoding="utf-8"):
    fname = f"{case}.tar.gz" if gz else f"{case}.tar"
    path = os.path.join(out, fname)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding=encoding, errors="surrogateescape") as tf:
        for t, data in members:
            tf.addfile(t, io.BytesIO(data) if t.isreg() else None)
    raw = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if gz else raw)
    manifest.append({"name": case, "file": fname, "expect": expect, "why": why})
    return raw


def raw(case, data, expect, why, ext=".tar"):
    fname = case + ext
    with open(os.path.join(out, fname), "wb") as f:
        f.write(data)
    manifest.append({"name": case, "file": fname, "expect": expect, "why": why})


D = tarfile.DIRTYPE
S = tarfile.SYMTYPE
H = tarfile.LNKTYPE
base = [ti("bin", D, mode=0o755), ti("etc", D, mode=0o755), ti("etc/os-release", data=b"ID=corpus\n")]
up = "../" * 24

# A good one, so the harness knows success looks like success.
write("good", base + [ti("bin/hello", data=b"#!/bin/sh\necho hi\n", mode=0o755)], "ok", "well-formed tarball")
write("good-gz", base, "ok", "well-formed tar.gz", gz=True)

# Path traversal.
write("traversal-dotdot", base + [ti(rel + "/pwned", data=b"PWNED")], "error", "../ out of the destination")
write("traversal-deep", base + [ti(up + canary.lstrip("/") + "/pwned", data=b"PWNED")], "error", "many ../ to the host root")
write("traversal-inner", base + [ti("etc/../../../canary/pwned", data=b"PWNED")], "error", ".. inside a path")
write("absolute", base + [ti(canary + "/pwned", data=b"PWNED")], "error", "absolute member name")
write("pax-path-traversal", base + [ti("innocent", data=b"PWNED", pax={"path": rel + "/pwned"})], "error",
      "PAX path header overriding an innocent ustar name")
write("gnu-longname-traversal", base + [ti("x/" * 60 + up + canary.lstrip("/") + "/pwned", data=b"PWNED")], "error",
      "GNU long name with traversal", fmt=tarfile.GNU_FORMAT)

# Symlink escapes.
write("symlink-abs-then-write", base + [ti("evil", S, link=canary), ti("evil/pwned", data=b"PWNED")], "error",
      "write through an absolute symlink to the host")
write("symlink-rel-then-write", base + [ti("evil", S, link=rel), ti("evil/pwned", data=b"PWNED")], "error",
      "write through a relative symlink out of the destination")
write("symlink-chain", base + [ti("a", S, link="b"), ti("b", S, link="c"), ti("c", S, link=rel),
                               ti("a/pwned", data=b"PWNED")], "error", "chain of symlinks ending outside")
write("symlink-replaces-dir", base + [ti("d", D, mode=0o755), ti("d/ok", data=b"ok"), ti("d", S, link=canary),
                                      ti("d/pwned", data=b"PWNED")], "either",
      "a directory replaced by a symlink mid-archive, then written through")
write("symlink-overwrite-file", base + [ti("f", S, link=canary + "/file"), ti("f", data=b"PWNED")], "either",
      "regular file over a symlink to a host file")
write("symlink-parent-dir", base + [ti("etc2", S, link="/etc"), ti("etc2/ch-pwned", data=b"PWNED")], "error",
      "symlink to the host's /etc (absolute: must stay inside the image)")
write("symlink-loop", base + [ti("loop", S, link="loop"), ti("loop/x", data=b"x")], "either", "self-referencing symlink")

# Hardlink escapes.
write("hardlink-abs", base + [ti("h", H, link=canary + "/file"), ti("h", data=b"PWNED")], "error",
      "hardlink to an absolute host file, then overwrite it")
write("hardlink-rel", base + [ti("h", H, link=rel + "/file"), ti("h", data=b"PWNED")], "error",
      "hardlink out of the destination by ../")
write("hardlink-via-symlink", base + [ti("l", S, link=canary), ti("h", H, link="l/file"), ti("h2", data=b"x")],
      "error", "hardlink whose target passes through an escaping symlink")
write("hardlink-self", base + [ti("h", H, link="h")], "either", "hardlink to itself")

# Type confusion.
write("dir-over-file", base + [ti("x", data=b"file"), ti("x", D, mode=0o755), ti("x/y", data=b"y")], "either",
      "a directory entry where a file was")
write("file-over-dir", base + [ti("x", D, mode=0o755), ti("x/y", data=b"y"), ti("x", data=b"file")], "either",
      "a file entry where a non-empty directory was")
write("device-nodes", base + [ti("dev", D, mode=0o755), ti("dev/null", tarfile.CHRTYPE), ti("dev/sda", tarfile.BLKTYPE),
                              ti("fifo", tarfile.FIFOTYPE)], "either", "device nodes (can't be made unprivileged)")
write("setuid-file", base + [ti("bin/suid", data=b"x", mode=0o4755)], "either", "setuid bit in the tarball")

# Non-UTF-8 names.
write("non-utf8-names", base + [ti("caf\udce9", data=b"latin1"), ti("dir\udcff", D, mode=0o755),
                                ti("dir\udcff/f\udcfe", data=b"x")], "either", "names that aren't UTF-8",
      fmt=tarfile.GNU_FORMAT)

# Sizes that lie.
good = write("size-base", base + [ti("f", data=b"A" * 1000)], "ok", "(base for the size cases)")
# PAX size lying: the PAX header says 999999999, the ustar size the truth.
lying = io.BytesIO()
with tarfile.open(fileobj=lying, mode="w", format=tarfile.PAX_FORMAT) as tf:
    for t, d in base:
        tf.addfile(t, None)
    t = tarfile.TarInfo("f")
    t.size = 1000
    t.pax_headers = {"size": "999999999"}
    # tarfile would honour the PAX size when writing: write the header by hand.
    buf = t.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    tf.fileobj.write(buf)
    tf.fileobj.write(b"A" * 1000 + b"\0" * (512 - 1000 % 512))
    tf.offset += len(buf) + 1024
raw("pax-size-lie", lying.getvalue(), "error", "PAX header claims 999999999 bytes; the archive ends long before")
# Huge: a header claiming 1 TiB of data that isn't there.
huge = tarfile.TarInfo("huge")
huge.size = 1 << 40
raw("huge-entry-truncated", b"".join(t.tobuf(tarfile.GNU_FORMAT) for t, _ in base) + huge.tobuf(tarfile.GNU_FORMAT)
    + b"B" * 4096, "error", "entry claims 1 TiB, archive ends after 4 KiB")

# Broken containers.
raw("zero-length-gz", b"", "error", "empty .tar.gz", ext=".tar.gz")
raw("zero-length-tar", b"", "error", "empty .tar")
gz = gzip.compress(good)
raw("truncated-gz", gz[: len(gz) // 2], "error", "gzip stream cut in half", ext=".tar.gz")
with tarfile.open(fileobj=io.BytesIO(good)) as tf:
    f_data = tf.getmember("f").offset_data
raw("truncated-tar", good[: f_data + 500], "error", "tar cut inside a member's data (500 of 1000 bytes)")
raw("garbage", os.urandom(8192), "error", "random bytes", ext=".tar")
raw("gz-of-garbage", gzip.compress(os.urandom(8192)), "error", "valid gzip of random bytes", ext=".tar.gz")
raw("bad-checksum", good[:148] + b"99999999" + good[156:], "error", "header checksum wrong")

# A tarbomb: 100 k entries (empty files in 100 directories), gzipped.
with gzip.open(os.path.join(out, "tarbomb-100k.tar.gz"), "wb", compresslevel=1) as g:
    with tarfile.open(fileobj=g, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for t, _ in base:
            tf.addfile(t)
        for d in range(100):
            tf.addfile(ti(f"bomb/{d:03d}", D, mode=0o755)[0])
            for i in range(1000):
                tf.addfile(ti(f"bomb/{d:03d}/{i:04d}")[0])
manifest.append({"name": "tarbomb-100k", "file": "tarbomb-100k.tar.gz", "expect": "either",
                 "why": "100 k entries"})

json.dump(manifest, sys.stdout, indent=1)

#!/usr/bin/env node
// Build-time probe, run by binding.gyp: prints 1 if FEATURE can be built
// with, 0 if not, and says on stderr what doing without it means.
//
//   zlib, lzma, zstd  the library's development headers and library link
//                     (without them ch-tar2dir runs gzip/xz/zstd as GNU tar does)
//   isal              ISA-L's igzip inflater (libisal-dev / isa-l-devel): .tar.gz
//                     decoded with it instead of zlib (~2-3x faster)
//   static-libc       a static C library (glibc-static): ch-run's launcher and
//                     core are then linked -static, else dynamically
//
// CH_TOOLKIT_WITHOUT=lzma,zstd,... pretends the listed features are absent,
// so the fallbacks can be built and tested on a machine that has everything.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const FEATURES = {
  zlib: { src: '#include <zlib.h>\nint main(void){return zlibVersion()==0;}\n', flags: ['-lz'],
    without: 'zlib headers (zlib1g-dev / zlib-devel) not found: .tar.gz will be unpacked through the gzip program' },
  isal: { src: '#include <isa-l/igzip_lib.h>\nint main(void){struct inflate_state s; isal_inflate_init(&s); return isal_inflate(&s)==1;}\n',
    flags: ['-lisal'],
    without: 'ISA-L headers (libisal-dev / isa-l-devel) not found: .tar.gz will be decoded with zlib (slower)' },
  lzma: { src: '#include <lzma.h>\nint main(void){return lzma_version_number()==0;}\n', flags: ['-llzma'],
    without: 'liblzma headers (liblzma-dev / xz-devel) not found: .tar.xz will be unpacked through the xz program' },
  zstd: { src: '#include <zstd.h>\nint main(void){return ZSTD_versionNumber()==0;}\n', flags: ['-lzstd'],
    without: 'libzstd headers (libzstd-dev / libzstd-devel) not found: .tar.zst will be unpacked through the zstd program' },
  'static-libc': { src: '#include <stdio.h>\nint main(void){puts("");return 0;}\n', flags: ['-static'],
    without: 'no static C library (glibc-static): ch-run and ch-run-core are linked dynamically' },
};

function probe(name) {
  const f = FEATURES[name];
  if (!f) throw new Error(`probe.js: unknown feature ${name} (known: ${Object.keys(FEATURES).join(' ')})`);
  const without = (process.env.CH_TOOLKIT_WITHOUT ?? '').split(',').map((s) => s.trim());
  if (without.includes(name)) return false;
  const dir = mkdtempSync(join(tmpdir(), 'ch-toolkit-probe-'));
  try {
    writeFileSync(join(dir, 't.c'), f.src);
    execFileSync(process.env.CC || 'cc', [join(dir, 't.c'), '-o', join(dir, 't'), ...f.flags], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const name = process.argv[2];
const ok = probe(name);
if (!ok) process.stderr.write(`ch-toolkit: ${FEATURES[name].without}\n`);
process.stdout.write(ok ? '1\n' : '0\n');

// ch-tar2dir and sizes claimed by hostile headers (#16 item 5). A header's
// size field, a pax "size" record or a GNU long-name header is input from
// whoever made the tarball: none of them may decide how much memory the
// extractor allocates. (It did with writer threads, since removed: each file's
// data was copied into a buffer of the header's size.) Each case runs on a
// plain, a gzip, an xz and a zstd tarball under a 1 GiB data limit (prlimit
// --data), so an allocation sized from the header fails loudly (bad_alloc)
// instead of going unnoticed on a large machine. Every failure must be a
// clear error and leave nothing in the destination directory.

import test from 'ava';
import { execa } from 'execa';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { asUser, BIN, TEST_DIR, testUser, userEnv } from './helpers/env.js';

const BASE = join(TEST_DIR, 'tar2dir-sizes');
const DATA_LIMIT = 1 << 30;
let n = 0;

function octal(v, len) { return v.toString(8).padStart(len - 1, '0') + '\0'; }

/** A ustar header; sizeField (12 bytes) overrides the octal size. */
function header({ name, type = '0', size = 0, sizeField }) {
  const h = Buffer.alloc(512);
  Buffer.from(name).copy(h, 0, 0, 100);
  h.write(octal(0o644, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  if (sizeField) sizeField.copy(h, 124);
  else h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(1700000000, 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(type, 156, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

/** GNU base-256 size field for V (a BigInt). */
function base256(v) {
  const f = Buffer.alloc(12);
  for (let i = 11; i >= 1; i--, v >>= 8n) f[i] = Number(v & 0xffn);
  f[0] = 0x80;
  return f;
}

const pad = (b) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
const END = Buffer.alloc(1024);

function paxRecord(k, v) {
  const rec = ` ${k}=${v}\n`;
  let len = rec.length + 1;
  while (String(len).length + rec.length !== len) len++;
  return len + rec;
}

const GiB8 = 8 * 2 ** 30;

// Each case: the tar bytes, and what the error must say (null: must succeed).
const CASES = {
  'octal size of 8 GiB, data missing': {
    tar: Buffer.concat([header({ name: 'a/big', size: GiB8 })]),
    error: /truncated archive: ends inside data of a\/big/,
  },
  'base-256 size of 2^62, data missing': {
    tar: header({ name: 'a/big', sizeField: base256(2n ** 62n) }),
    error: /truncated archive: ends inside data of a\/big/,
  },
  'base-256 size of 2^64-1 on a directory (size + padding would wrap to 0)': {
    tar: Buffer.concat([header({ name: 'a/', type: '5', sizeField: base256(2n ** 64n - 1n) }), END]),
    error: /size of a\/ too large/,
  },
  'pax size of 8 GiB, data missing': {
    tar: Buffer.concat([
      header({ name: 'PaxHeader', type: 'x', size: paxRecord('size', GiB8).length }),
      pad(Buffer.from(paxRecord('size', GiB8))),
      header({ name: 'a/big', size: 0 }),
    ]),
    error: /truncated archive: ends inside data of a\/big/,
  },
  'GNU long name header claiming 8 GiB': {
    tar: Buffer.concat([header({ name: '././@LongLink', type: 'L', size: GiB8 }), Buffer.alloc(512, 0x61)]),
    error: /GNU long name too long \(8589934592 bytes, at most 4096\)/,
  },
  'GNU long name of 8 KiB, longer than any path': {
    tar: Buffer.concat([header({ name: '././@LongLink', type: 'L', size: 8192 }), Buffer.alloc(8192, 0x61),
      header({ name: 'x' }), END]),
    error: /GNU long name too long \(8192 bytes/,
  },
  'GNU long link header claiming 8 GiB': {
    tar: Buffer.concat([header({ name: '././@LongLink', type: 'K', size: GiB8 })]),
    error: /GNU long link too long/,
  },
  'pax header claiming 8 GiB': {
    tar: Buffer.concat([header({ name: 'PaxHeader', type: 'x', size: GiB8 })]),
    error: /pax header too long/,
  },
  'pax global header claiming 8 GiB, data missing': {
    tar: Buffer.concat([header({ name: 'GlobalHead', type: 'g', size: GiB8 })]),
    error: /truncated archive: ends inside member data/,
  },
  'file of 3 MiB, complete': {
    tar: Buffer.concat([header({ name: 'a/big', size: 3 << 20 }), pad(Buffer.alloc(3 << 20, 0x5a)), END]),
    check: (img) => readFileSync(join(img, 'big')).equals(Buffer.alloc(3 << 20, 0x5a)),
  },
  'small file, then a 3 MiB file at the same path: the later entry wins': {
    tar: Buffer.concat([header({ name: 'a/f', size: 5 }), pad(Buffer.from('small')),
      header({ name: 'a/f', size: 3 << 20 }), pad(Buffer.alloc(3 << 20, 0x42)), END]),
    check: (img) => readFileSync(join(img, 'f')).equals(Buffer.alloc(3 << 20, 0x42)),
  },
};

const COMPRESSIONS = {
  '.tar': (b) => b,
  '.tar.gz': (b) => gzipSync(b),
  '.tar.xz': (b) => execFileSync('xz', ['-c', '-0'], { input: b, maxBuffer: 1 << 26 }),
  '.tar.zst': (b) => execFileSync('zstd', ['-c', '-q'], { input: b, maxBuffer: 1 << 26 }),
};

async function run(tarball, dir) {
  const argv = [...asUser(), 'prlimit', `--data=${DATA_LIMIT}`, '--', join(BIN, 'ch-tar2dir'), tarball, dir];
  return execa(argv[0], argv.slice(1), {
    reject: false, env: userEnv(), extendEnv: false, cwd: '/',
  });
}

test.before(() => {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(BASE, { recursive: true, mode: 0o755 });
});

for (const [what, c] of Object.entries(CASES)) {
  for (const [ext, compress] of Object.entries(COMPRESSIONS)) {
    test(`${what} (${ext})`, async (t) => {
      const d = join(BASE, `case${n++}`);
      mkdirSync(d, { mode: 0o755 });
      const tb = join(d, `img${ext}`);
      writeFileSync(tb, compress(c.tar));
      const dest = join(d, 'dest');
      mkdirSync(dest);
      const u = testUser();
      chownSync(dest, u.uid, u.gid);
      const r = await run(tb, dest);
      if (c.error) {
        t.is(r.exitCode, 1, r.stderr);
        t.regex(r.stderr, /^ch-tar2dir\[\d+\]: error: /m);
        t.regex(r.stderr, c.error);
        t.notRegex(r.stderr, /internal error|bad_alloc/);
        t.deepEqual(readdirSync(dest), [], 'nothing left in the destination');
      } else {
        t.is(r.exitCode, 0, r.stderr);
        t.deepEqual(readdirSync(dest), ['img']);
        t.true(c.check(join(dest, 'img')), 'content as in the archive');
      }
    });
  }
}

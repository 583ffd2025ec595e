// glibc's ld.so.cache, read and written here (format "glibc-ld.so.cache1.1",
// the only one glibc >= 2.32 writes; glibc has read it since 2.2).
//
// Why write the cache ourselves: `--gpu` must make an unmodified program find
// libcuda.so.1 with no LD_LIBRARY_PATH in a read-only image. The loader's
// search order is LD_LIBRARY_PATH, then /etc/ld.so.cache, then its built-in
// system directories; ld.so.conf is read by ldconfig only. So the container
// gets a cache made of the image's own entries plus the injected libraries
// (pointing into a tmpfs at /run/ch-toolkit/lib), bound read-only over the
// image's /etc/ld.so.cache. The image's ldconfig can't run (read-only image,
// and it would need a second container start); the host's `ldconfig -r ROOT`
// chroots (root only). Building it here costs about a millisecond (measured
// and reported by test/gpu.test.js).
//
// Layout: header (48 bytes), nlibs entries of 24 bytes {int32 flags, uint32
// key, uint32 value, uint32 osversion, uint64 hwcap}, then the strings; key
// and value are offsets from the start of the file. Entries are sorted in
// DEScending _dl_cache_libcmp order (the loader's binary search relies on
// it); among equal names the first acceptable one wins, so ours go first.

import { isAscii } from 'node:buffer';
import type { Host } from '../container/host.js';

const MAGIC = 'glibc-ld.so.cache1.1';
const OLD_MAGIC = 'ld.so-1.7.0';
const HEADER = 48;
const ENTRY = 24;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Does BUF hold the ASCII string S at AT? */
function asciiAt(buf: Buffer, at: number, s: string): boolean {
  if (at + s.length > buf.length) return false;
  for (let i = 0; i < s.length; i++) if (buf[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

export interface CacheEntry { flags: number; key: string; value: string; hwcap: bigint }

/** glibc's _dl_cache_libcmp: runs of digits compare numerically. */
export function libcmp(a: string, b: string): number {
  let i = 0, j = 0;
  const digit = (c: number) => c >= 48 && c <= 57;
  while (i < a.length) {
    const c1 = a.charCodeAt(i), c2 = j < b.length ? b.charCodeAt(j) : 0;
    if (digit(c1)) {
      if (!digit(c2)) return 1;
      let v1 = 0, v2 = 0;
      while (i < a.length && digit(a.charCodeAt(i))) v1 = v1 * 10 + a.charCodeAt(i++) - 48;
      while (j < b.length && digit(b.charCodeAt(j))) v2 = v2 * 10 + b.charCodeAt(j++) - 48;
      if (v1 !== v2) return v1 - v2;
    } else if (digit(c2)) {
      return -1;
    } else if (c1 !== c2) {
      return c1 - c2;
    } else {
      i++; j++;
    }
  }
  return 0 - (j < b.length ? b.charCodeAt(j) : 0);
}

/**
 * Parse a cache file's contents; null if it is in no format we know.
 * Written for the interpreter (ch-run's front end runs with --jitless, and
 * a host's cache has ~600-2000 entries): the entries read through one
 * Int32Array rather than a Buffer method per field, a zero hwcap (nearly
 * all) without a BigInt made for it. Measured on a 642-entry cache:
 * 2.2-6 ms -> 1.2-2.6.
 */
export function parseCache(buf: Buffer): CacheEntry[] | null {
  // Fields through a DataView and magics by char codes: Node's Buffer
  // methods (readUInt32LE, toString with an encoding) are each compiled from
  // source at their first call under ch-run's flags (docs/design.md).
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const u32 = (at: number) => (at + 4 <= buf.length ? view.getUint32(at, true) : -1);
  let base = 0;
  if (asciiAt(buf, 0, OLD_MAGIC)) {
    // Old format first (glibc < 2.32 "compat"): 12-byte entries, then the new one, 8-aligned.
    const n = u32(OLD_MAGIC.length + 1);
    if (n < 0) return null;
    base = (OLD_MAGIC.length + 1 + 4 + n * 12 + 7) & ~7;
  }
  if (buf.length < base + HEADER || !asciiAt(buf, base, MAGIC)) return null;
  const nlibs = u32(base + 20);
  if (base + HEADER + nlibs * ENTRY > buf.length) return null;
  // Entry I is words 6I..6I+5: flags, key, value, osversion, hwcap (low, high); little-endian, as x86 and arm64 are.
  const from = base + HEADER, bytes = nlibs * ENTRY;
  const words = (buf.byteOffset + from) % 4 === 0 && LITTLE_ENDIAN
    ? new Int32Array(buf.buffer, buf.byteOffset + from, bytes / 4)
    : Int32Array.from({ length: bytes / 4 }, (_, i) => view.getInt32(from + 4 * i, true));
  // In the combined format, offsets are relative to the new header. The
  // string table (after the entries, len_strings bytes) as one Latin-1
  // string, searched and sliced by V8's own builtins (a Buffer method per
  // string cost a 642-entry cache ~1.5 ms under the interpreter): where the
  // table is ASCII, as caches' are, that is its UTF-8 too. A string outside
  // it, or not ended within it, is read as before.
  const strFrom = from + bytes, strTo = Math.min(buf.length, strFrom + u32(base + 24));
  // (toString() with no argument: UTF-8, which an ASCII table is, without
  // the encoding lookup's compile.)
  const text = strTo > strFrom && isAscii(buf.subarray(strFrom, strTo)) ? buf.subarray(strFrom, strTo).toString() : null;
  const cstr = (off: number): string => {
    const at = base + off - strFrom;
    const end = text !== null && at >= 0 ? text.indexOf('\0', at) : -1;
    if (end >= 0) return text!.slice(at, end);
    const nul = buf.indexOf(0, base + off);
    return buf.toString('utf8', base + off, nul < 0 ? buf.length : nul);
  };
  const out: CacheEntry[] = new Array(nlibs);
  for (let i = 0, w = 0; i < nlibs; i++, w += 6) {
    const key = words[w + 1] >>> 0, value = words[w + 2] >>> 0, lo = words[w + 4], hi = words[w + 5];
    if (base + key >= buf.length || base + value >= buf.length) return null;
    out[i] = { flags: words[w], key: cstr(key), value: cstr(value),
      hwcap: lo === 0 && hi === 0 ? 0n : (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0) };
  }
  return out;
}

export function readCache(host: Host, path: string): CacheEntry[] | null {
  let buf: Buffer;
  try { buf = host.readFile(path); } catch { return null; }
  return parseCache(buf);
}

/**
 * A cache holding FIRST (injected) then REST (the image's), sorted as the
 * loader wants, FIRST winning among equal names. Entries of REST with a
 * hwcap (optimized variants, glibc-hwcaps subdirectories) are dropped: their
 * index points into an extension section we don't copy, and the plain entry
 * of the same name still serves.
 */
export function buildCache(first: CacheEntry[], rest: CacheEntry[]): Buffer {
  const all = [...first.map((e, i) => ({ e, rank: i })),
    ...rest.filter((e) => e.hwcap === 0n).map((e, i) => ({ e, rank: first.length + i }))];
  all.sort((x, y) => libcmp(y.e.key, x.e.key) || x.rank - y.rank);
  // The strings, each once, NUL-terminated, as one string encoded once; the
  // file in one buffer, its fields through a DataView (a Buffer method per
  // string and per field cost ~1 ms under the interpreter, and each method's
  // first call a compile).
  const strings: string[] = [];
  const offsets = new Map<string, number>();
  let strOff = HEADER + all.length * ENTRY;
  const strAt = (s: string) => {
    let o = offsets.get(s);
    if (o === undefined) {
      o = strOff;
      strings.push(s, '\0');
      strOff += Buffer.byteLength(s) + 1;
      offsets.set(s, o);
    }
    return o;
  };
  const offs = all.map(({ e }) => [strAt(e.key), strAt(e.value)]);
  const text = Buffer.from(strings.join(''));
  const out = Buffer.alloc(HEADER + all.length * ENTRY + text.length);
  const view = new DataView(out.buffer, out.byteOffset, out.length);
  all.forEach(({ e }, i) => {
    const at = HEADER + i * ENTRY;
    view.setInt32(at, e.flags, true);
    view.setUint32(at + 4, offs[i][0], true);
    view.setUint32(at + 8, offs[i][1], true);
    view.setBigUint64(at + 16, e.hwcap, true);
  });
  for (let i = 0; i < MAGIC.length; i++) out[i] = MAGIC.charCodeAt(i);
  view.setUint32(20, all.length, true);
  view.setUint32(24, text.length, true);
  out[28] = 2;   // cache_file_new_flags_endian_little
  // extension_offset (32) and unused[3]: 0
  out.set(text, HEADER + all.length * ENTRY);
  return out;
}

/** The loader's flags for a 64-bit ELF library of this architecture (glibc's ldconfig.h). */
export function defaultFlags(): number {
  const arch: Record<string, number> = { x64: 0x0303, arm64: 0x0a03, ppc64: 0x0503, riscv64: 0x1003, s390x: 0x0403 };
  return arch[process.arch] ?? 0x0003;
}

/** `ldconfig -p` architecture tag of this machine's native libraries. */
export function ldconfigArch(): string {
  const arch: Record<string, string> = { x64: 'x86-64', arm64: 'AArch64', ppc64: '64bit', s390x: '64bit', riscv64: 'riscv64' };
  return arch[process.arch] ?? '';
}

/** Parse `ldconfig -p`: name -> path, first of this machine's architecture wins. */
export function parseLdconfigP(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const arch = ldconfigArch();
  for (const line of text.split('\n')) {
    const m = /^\s+(\S+) \(([^)]*)\) => (\S.*)$/.exec(line);
    if (!m) continue;
    const tags = m[2].split(',');
    if (arch && process.arch !== 'ia32' && !tags.some((t) => t.trim() === arch)) continue;
    if (!out.has(m[1])) out.set(m[1], m[3].trim());
  }
  return out;
}

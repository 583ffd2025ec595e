// What COPY and ADD take: files of the build context (less what
// .dockerignore excludes), of an earlier stage's tree (--from), or of a
// tarball ADD unpacked. A source path is resolved inside its root only: a
// symlink on the way is followed only while it stays inside (an absolute
// target means the root's path, as Docker does), and one that leads out is
// refused. Below a source directory nothing is followed: symlinks are copied
// as symlinks, regular files read through O_NOFOLLOW descriptors, other
// kinds (FIFOs, sockets, devices) skipped. The selected entries are hashed
// (names, types, modes, link targets, content: the cache key) and written as
// a tar stream that the confined extractor unpacks into the image.

import { createHash } from 'node:crypto';
import { closeSync, constants as C, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync,
  writeSync, type Stats } from 'node:fs';
import { posix } from 'node:path';
import { Header } from 'tar/header';
import { Pax } from 'tar/pax';
import { ChError } from '../util/log.js';

export const EXIT_FAIL = 1;

/** One thing to put in the image: NAME (relative to the image root) from host path SRC. */
export interface Entry { name: string; type: 'file' | 'dir' | 'symlink'; mode: number; src: string; target?: string; mtime: number }

/** .dockerignore's patterns, compiled: [regex, exclude?] in order (the last match wins). */
export type Ignore = [RegExp, boolean][];

function globRegex(pat: string): string {
  let r = '';
  for (let i = 0; i < pat.length; i++) {
    const c = pat[i];
    if (c === '*' && pat[i + 1] === '*') { r += '.*'; i++; if (pat[i + 1] === '/') i++; }
    else if (c === '*') r += '[^/]*';
    else if (c === '?') r += '[^/]';
    else if (c === '[') { const e = pat.indexOf(']', i); if (e < 0) r += '\\['; else { r += pat.slice(i, e + 1).replace('[!', '[^'); i = e; } }
    else if (c === '\\' && i + 1 < pat.length) r += '\\' + pat[++i];
    else r += c.replace(/[.+^${}()|]/g, '\\$&');
  }
  return r;
}

/** CONTEXT's .dockerignore (TEXT), compiled. */
export function parseIgnore(text: string): Ignore {
  const out: Ignore = [];
  for (let line of text.split('\n')) {
    line = line.trim();
    if (!line || line.startsWith('#')) continue;
    const keep = line.startsWith('!');
    let p = posix.normalize(keep ? line.slice(1).trim() : line).replace(/^\/+/, '').replace(/\/+$/, '');
    if (p === '.' || p === '') p = '**';
    out.push([new RegExp(`^${globRegex(p)}$`), !keep]);
  }
  return out;
}

/** Is REL (a path in the context) excluded: the last pattern matching it or a directory above it excludes. */
export function ignored(ign: Ignore, rel: string): boolean {
  let ex = false;
  const parts = rel.split('/');
  for (const [re, exclude] of ign) {
    for (let n = 1; n <= parts.length; n++) {
      if (re.test(parts.slice(0, n).join('/'))) { ex = exclude; break; }
    }
  }
  return ex;
}

/** Read CONTEXT/.dockerignore (not followed if a link) or none. */
export function readIgnore(context: string): Ignore {
  let fd: number;
  try { fd = openSync(`${context}/.dockerignore`, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK); } catch { return []; }
  try {
    if (!fstatSync(fd).isFile()) return [];
    return parseIgnore(readFileSync(fd, 'utf8'));
  } finally { closeSync(fd); }
}

/** A source root: the context (with its .dockerignore) or a stage's tree. */
export interface Root { path: string; what: string; ignore: Ignore }

/**
 * SRC (as written in the Dockerfile) resolved inside ROOT: the relative
 * path it leads to, symlinks followed only inside ROOT; ChError if it leads
 * out or doesn't exist.
 */
export function resolveIn(root: Root, src: string): string {
  let todo = posix.normalize(src).split('/').filter((p) => p && p !== '.');
  const done: string[] = [];
  let hops = 0;
  while (todo.length) {
    const c = todo.shift()!;
    if (c === '..') {
      if (!done.length) throw new ChError(`${src}: leads out of the ${root.what}; refused`, EXIT_FAIL);
      done.pop();
      continue;
    }
    const rel = [...done, c].join('/');
    let st: Stats;
    try { st = lstatSync(`${root.path}/${rel}`); } catch {
      throw new ChError(`${src}: not found in the ${root.what}`, EXIT_FAIL);
    }
    if (!st.isSymbolicLink()) { done.push(c); continue; }
    if (++hops > 40) throw new ChError(`${src}: too many levels of symbolic links in the ${root.what}`, EXIT_FAIL);
    const t = readlinkSync(`${root.path}/${rel}`);
    if (t.startsWith('/') && root.what === 'build context')
      throw new ChError(`${src}: a symbolic link to ${t}, outside the build context; refused`, EXIT_FAIL);
    if (t.startsWith('/')) done.length = 0;
    const next = posix.normalize([...(t.startsWith('/') ? [] : done), t].join('/')).split('/').filter((p) => p && p !== '.');
    // A relative link may climb only as far as the root.
    let depth = 0;
    for (const p of next) { depth += p === '..' ? -1 : 1; if (depth < 0) throw new ChError(`${src}: a symbolic link leading out of the ${root.what} (${t}); refused`, EXIT_FAIL); }
    todo = [...next, ...todo];
    done.length = 0;
  }
  return done.join('/');
}

/** Names matching glob SRC's last component in its directory (resolved), or [SRC] if it has no wildcard. */
export function expandGlob(root: Root, src: string): string[] {
  const base = posix.basename(src);
  if (!/[*?[]/.test(base)) return [src];
  const dir = posix.dirname(src);
  const rel = resolveIn(root, dir);
  const re = new RegExp(`^${globRegex(base)}$`);
  const found = readdirSync(`${root.path}/${rel}`).filter((e) => re.test(e)).sort().map((e) => posix.join(dir, e));
  if (!found.length) throw new ChError(`${src}: no file in the ${root.what} matches`, EXIT_FAIL);
  return found;
}

/** A name an entry may not have: the extractor's layer mode would take it as an OCI whiteout. */
function refuseWhiteout(name: string, root: Root): void {
  if (posix.basename(name).startsWith('.wh.'))
    throw new ChError(`${name}: names starting with '.wh.' can't be copied (OCI whiteouts; in the ${root.what}); refused`, EXIT_FAIL);
}

/** Entries for source REL of ROOT (resolved) copied to DEST (a name in the image, relative, no leading /). */
export function collect(root: Root, rel: string, dest: string, out: Entry[], warn: (m: string) => void): void {
  const path = rel ? `${root.path}/${rel}` : root.path;
  const st = lstatSync(path);
  if (rel && root.ignore.length && ignored(root.ignore, rel)) return;
  if (st.isDirectory()) {
    for (const e of readdirSync(path).sort()) {
      const r = rel ? `${rel}/${e}` : e;
      if (root.ignore.length && ignored(root.ignore, r)) continue;
      const est = lstatSync(`${root.path}/${r}`);
      const name = `${dest}/${e}`;
      refuseWhiteout(e, root);
      if (est.isDirectory()) {
        out.push({ name, type: 'dir', mode: est.mode & 0o7777, src: `${root.path}/${r}`, mtime: est.mtimeMs / 1000 });
        collect(root, r, name, out, warn);
      } else add(root, r, name, est, out, warn);
    }
    return;
  }
  refuseWhiteout(dest, root);
  add(root, rel, dest, st, out, warn);
}

function add(root: Root, rel: string, name: string, st: Stats, out: Entry[], warn: (m: string) => void): void {
  const src = `${root.path}/${rel}`;
  const mtime = st.mtimeMs / 1000;
  if (st.isFile()) out.push({ name, type: 'file', mode: st.mode & 0o7777, src, mtime });
  else if (st.isSymbolicLink()) out.push({ name, type: 'symlink', mode: 0o777, src, target: readlinkSync(src), mtime });
  else warn(`${rel}: not a regular file, directory or symlink; not copied`);
}

/** Open regular file E.src without following a link; its fd and size. */
function openEntry(e: Entry): { fd: number; size: number } {
  const fd = openSync(e.src, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  const st = fstatSync(fd);
  if (!st.isFile()) { closeSync(fd); throw new ChError(`${e.src}: no longer a regular file; refused`, EXIT_FAIL); }
  return { fd, size: st.size };
}

/** sha256 of ENTRIES' names, types, modes, targets and contents (not times): the cache's view of a COPY. */
export function hashEntries(entries: Entry[]): string {
  const h = createHash('sha256');
  const buf = Buffer.alloc(1 << 20);
  for (const e of entries) {
    h.update(`${e.type} ${e.mode.toString(8)} ${e.name}\0${e.target ?? ''}\0`);
    if (e.type !== 'file') continue;
    const { fd } = openEntry(e);
    try {
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
    } finally { closeSync(fd); }
    h.update('\0');
  }
  return h.digest('hex');
}

function header(e: Entry, size: number): Buffer {
  const fields = { path: e.type === 'dir' ? `${e.name}/` : e.name, mode: e.mode, uid: 0, gid: 0, size,
    mtime: new Date(Math.floor(e.mtime) * 1000), linkpath: e.target ?? '',
    type: ({ file: 'File', dir: 'Directory', symlink: 'SymbolicLink' } as const)[e.type] };
  const h = new Header(fields);
  if (h.encode() || !h.block) {
    // A name or target too long for ustar: a pax header carries it.
    const pax = new Pax({ path: fields.path, linkpath: e.target, mtime: fields.mtime } as any).encode();
    const short = new Header({ ...fields, path: fields.path.slice(-99), linkpath: (e.target ?? '').slice(0, 99) });
    short.encode();
    return Buffer.concat([pax, short.block!]);
  }
  return h.block;
}

/** Write ENTRIES as a tar stream to FD. */
export function writeTar(entries: Entry[], fd: number): void {
  const buf = Buffer.alloc(1 << 20);
  for (const e of entries) {
    if (e.type !== 'file') { writeSync(fd, header(e, 0)); continue; }
    const f = openEntry(e);
    try {
      writeSync(fd, header(e, f.size));
      let left = f.size;
      while (left > 0) {
        const n = readSync(f.fd, buf, 0, Math.min(buf.length, left), null);
        if (n === 0) break;
        writeSync(fd, buf, 0, n);
        left -= n;
      }
      if (left > 0) writeSync(fd, Buffer.alloc(left));   // shrank while read: padded, as tar does
      const pad = (512 - (f.size % 512)) % 512;
      if (pad) writeSync(fd, Buffer.alloc(pad));
    } finally { closeSync(f.fd); }
  }
  writeSync(fd, Buffer.alloc(1024));
}

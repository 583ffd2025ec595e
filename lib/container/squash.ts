// ch-run IMAGE.sqfs: what the front end decides for a SquashFS image. The C
// core (native/core/squash.c) mounts it with SquashFUSE inside the
// container's namespaces; here we check the file and FUSE up front for
// clear errors, choose the mount point, and give the planner a view of the
// image's tree (it is not mounted anywhere the front end could look).

import type { Stats } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { ChError, why } from '../util/log.js';
import type { Kind } from './image.js';
import { constants as C, type Host, varsOf } from './host.js';
import { storageDir } from '../util/paths.js';

/** Unprivileged FUSE needs this device readable and writable. */
export const FUSE_DEV = '/dev/fuse';

/** A SquashFS superblock begins "hsqs"; bytes_used (LE u64) is at offset 40. */
const MAGIC = Buffer.from('hsqs');   // ASCII; no encoding named (plan-output.ts says why)
const SUPERBLOCK = 96;

export interface SquashImage {
  timeoutMs: number;    // how long squashfuse may take to serve the mount
  lingerMs: number;     // the shared mount's life after its last user; 0: a private mount per launch
  threads: number;      // squashfuse's worker threads: 0 auto (single-threaded on <= 2 CPUs, else squashfuse's default), 1 single-threaded (-s), N max_threads=N
  file: string;         // the .sqfs, as given
  mountPoint: string;   // where the core mounts it (in the container's namespace only)
  squashfuse: string;   // absolute path of the program
  view: SquashView;
}

/** Is IMAGE a file (not a directory)? Then it must be SquashFS. */
export function isImageFile(host: Host, image: string): boolean {
  try { return host.stat(image).isFile(); } catch { return false; }
}

function statOf(host: Host, p: string): Stats {
  const fd = host.open(p, C.O_RDONLY | C.O_NONBLOCK);
  try { return host.fstat(fd); } finally { host.close(fd); }
}

/** Check FILE is a whole SquashFS image: magic, and as long as its superblock says. */
export function checkSquashFile(host: Host, file: string): void {
  let fd: number;
  try {
    fd = host.open(file, C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY);
  } catch (err) {
    throw new ChError(`can't use image ${file}: ${why(err)}`);
  }
  try {
    const st = host.fstat(fd);
    if (!st.isFile()) throw new ChError(`can't use image ${file}: not a directory or a regular file`);
    const sb = Buffer.alloc(SUPERBLOCK);
    const n = host.read(fd, sb, 0, SUPERBLOCK, 0);
    if (n < 4 || !sb.subarray(0, 4).equals(MAGIC))
      throw new ChError(`can't use image ${file}: not a directory, and not a SquashFS image (no "hsqs" magic; `
        + 'a tarball? unpack it with ch-tar2dir or convert it with ch-convert)');
    if (n < SUPERBLOCK)
      throw new ChError(`can't use image ${file}: SquashFS image truncated (${st.size} bytes, shorter than its superblock)`);
    const used = sb.readBigUInt64LE(40);
    if (BigInt(st.size) < used)
      throw new ChError(`can't use image ${file}: SquashFS image truncated (${st.size} bytes, superblock says ${used})`);
  } finally {
    host.close(fd);
  }
}

/** PROG's absolute path on $PATH, or null. */
export function onPath(host: Host, prog: string | readonly string[]): string | null {
  for (const dir of (host.env('PATH') ?? '/usr/bin:/bin').split(delimiter)) {
    if (!dir.startsWith('/')) continue;   // never a relative (cwd-dependent) directory
    for (const name of typeof prog === 'string' ? [prog] : prog) {
      const p = join(dir, name);
      try { host.access(p, C.X_OK); if (statOf(host, p).isFile()) return p; } catch { /* next */ }
    }
  }
  return null;
}

/**
 * SquashFUSE's programs, in order of preference within one PATH directory:
 * squashfuse_ll (the same engine on libfuse's low-level API, in the same
 * Debian package) served a shared mount's 32 readers about 3x faster than
 * squashfuse (docs/design.md, "SquashFUSE: squashfuse_ll"). The first PATH
 * directory holding either decides, so a squashfuse of one's own earlier on
 * PATH is still the one used.
 */
export const SQUASHFUSE = ['squashfuse_ll', 'squashfuse'] as const;

/** FUSE must be usable by us: a clear error naming what isn't. */
export function checkFuse(host: Host, file: string): string {
  try {
    host.access(FUSE_DEV, C.R_OK | C.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ChError(`can't mount SquashFS image ${file}: FUSE unusable: ${FUSE_DEV}: ${why(err)}`
      + (code === 'ENOENT' ? ' (no FUSE in this kernel or container; load the fuse module)'
        : ' (distributions make it mode 0666; ask your admin to, or convert the image to a directory with ch-convert)'));
  }
  const prog = onPath(host, SQUASHFUSE);
  if (prog === null)
    throw new ChError(`can't mount SquashFS image ${file}: squashfuse not found on PATH `
      + '(install squashfuse, or convert the image to a directory with ch-convert)');
  return prog;
}

/**
 * Our own directory (the storage directory, /var/tmp/$USER.ch unless
 * CH_IMAGE_STORAGE says otherwise; /var/tmp is writable by everyone):
 * created 0700, and refused unless it is a real directory (not a symlink),
 * ours, and closed to others. Inside it, mnt/: the default mount point, as
 * Charliecloud's (/var/tmp/$USER.ch/mnt). The mount itself exists only in
 * the container's namespace, so concurrent containers share the point.
 * Someone else's directory at the default name (planted: the victim can't
 * remove it from a sticky /var/tmp) doesn't stop .sqfs launches where the
 * user has a runtime directory ($XDG_RUNTIME_DIR): chtk/ in it serves instead.
 */
export function defaultMountPoint(host: Host): string {
  const base = ownDir(host);
  checkedDir(host, `${base}/mnt`, 'remove it');
  return `${base}/mnt`;
}

const ADVICE = 'set CH_IMAGE_STORAGE to a directory of yours, or give -m DIR';

/** The storage directory or its stand-in (above), created if need be, checked as ours and closed to others. */
function ownDir(host: Host): string {
  const base = storageDir(varsOf(host), () => host.user().username);
  try {
    checkedDir(host, base, ADVICE);
    return base;
  } catch (err) {
    const xdg = host.env('XDG_RUNTIME_DIR');
    if (host.env('CH_IMAGE_STORAGE') || !xdg?.startsWith('/') || !isOwnPrivateDir(host, xdg)) throw err;
    checkedDir(host, `${xdg}/chtk`, 'remove it');
    return `${xdg}/chtk`;
  }
}

/** Is P a real directory of the caller's, closed to others? */
function isOwnPrivateDir(host: Host, p: string): boolean {
  try {
    const st = host.lstat(p);
    return st.isDirectory() && st.uid === host.uid() && (st.mode & 0o077) === 0;
  } catch { return false; }
}

/** P, created 0700 if missing, must be a real directory of the caller's closed to others; else an error saying to ADVICE. */
function checkedDir(host: Host, p: string, advice: string): void {
  const me = host.user();
  try { host.mkdir(p, { mode: 0o700 }); } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ChError(`can't create ${p}: ${why(err)}`);
  }
  let st: Stats;
  try { st = host.lstat(p); } catch (err) { throw new ChError(`can't use ${p}: ${why(err)}`); }
  if (st.isSymbolicLink()) throw new ChError(`can't use ${p}: it is a symlink (someone else's?); ${advice}`);
  if (!st.isDirectory()) throw new ChError(`can't use ${p}: not a directory; ${advice}`);
  if (st.uid !== me.uid) throw new ChError(`can't use ${p}: owned by uid ${st.uid}, not you (uid ${me.uid}); ${advice}`);
  if (st.mode & 0o077) throw new ChError(`can't use ${p}: mode ${(st.mode & 0o7777).toString(8)} lets others in (want 0700)`);
}

/**
 * -m DIR: the user's choice. As the default's: a directory of the caller's
 * own, not a symlink, which no one else may write to (0755, what mkdir
 * makes, will do: Charliecloud's own tests pass one; nothing in it is ever
 * read). The core opens it once and checks the same (native/core/squash.c),
 * so a name someone else renames later can't lead it elsewhere.
 */
function chosenMountPoint(host: Host, dir: string): string {
  const me = host.user().uid;
  let st: Stats;
  try { st = host.lstat(dir); } catch (err) { throw new ChError(`--mount: can't use ${dir}: ${why(err)}`); }
  if (st.isSymbolicLink()) throw new ChError(`--mount: can't use ${dir}: it is a symlink; give the directory itself`);
  if (!st.isDirectory()) throw new ChError(`--mount: can't use ${dir}: not a directory`);
  if (st.uid !== me)
    throw new ChError(`--mount: can't use ${dir}: owned by uid ${st.uid}, not you (uid ${me}); use a directory of your own`);
  if (st.mode & 0o022)
    throw new ChError(`--mount: can't use ${dir}: mode ${(st.mode & 0o7777).toString(8)} lets others write to it (chmod go-w it)`);
  return dir;
}

export function prepareSquash(host: Host, file: string, mountDir: string | null): SquashImage {
  checkSquashFile(host, file);
  const squashfuse = checkFuse(host, file);
  const mountPoint = mountDir !== null ? chosenMountPoint(host, mountDir) : defaultMountPoint(host);
  const env = varsOf(host);
  return { file, mountPoint, squashfuse, timeoutMs: squashTimeoutMs(env), lingerMs: squashLingerMs(env),
    threads: squashThreads(env), view: new SquashView(host, file, mountPoint) };
}

/** Ours, read here and put in the plan: never the command's. */
export const SQUASH_VARS = ['CH_RUN_SQUASH_TIMEOUT', 'CH_RUN_SQUASH_LINGER', 'CH_RUN_SQUASH_THREADS'];

/**
 * CH_RUN_SQUASH_LINGER: seconds a shared SquashFS mount stays after its
 * last container ends (default 30), so the next launch of the same image
 * by the same user on the node reuses it (native/core/holder.c). 0: a
 * private mount per launch that ends with the command, as before.
 */
export function squashLingerMs(env: NodeJS.ProcessEnv): number {
  const s = env.CH_RUN_SQUASH_LINGER;
  if (s === undefined || s === '') return 30_000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s) || Number(s) > 86400)
    throw new ChError(`CH_RUN_SQUASH_LINGER: want seconds >= 0, got '${s}'`);
  return Math.round(Number(s) * 1000);
}

/**
 * CH_RUN_SQUASH_THREADS: squashfuse's worker threads; 1 single-threaded (-s), N at most N
 * (-o max_threads=N), 0 or unset: the core decides, single-threaded where it may use at
 * most 2 CPUs (measured faster there with 8 and 32 readers), else squashfuse's own default.
 */
export function squashThreads(env: NodeJS.ProcessEnv): number {
  const s = env.CH_RUN_SQUASH_THREADS;
  if (s === undefined || s === '') return 0;
  if (!/^[0-9]+$/.test(s) || Number(s) > 1024)
    throw new ChError(`CH_RUN_SQUASH_THREADS: want a number of threads 0-1024, got '${s}'`);
  return Number(s);
}

/** CH_RUN_SQUASH_TIMEOUT: seconds squashfuse may take to serve the mount (default 60). */
export function squashTimeoutMs(env: NodeJS.ProcessEnv): number {
  const s = env.CH_RUN_SQUASH_TIMEOUT;
  if (s === undefined || s === '') return 60_000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s) || Number(s) <= 0 || Number(s) > 86400)
    throw new ChError(`CH_RUN_SQUASH_TIMEOUT: want seconds > 0, got '${s}'`);
  return Math.max(1, Math.round(Number(s) * 1000));
}

interface Entry { kind: 'dir' | 'file' | 'link' | 'other'; target?: string }

/**
 * The image's tree as the planner needs it (which paths exist, what they
 * are, where symlinks point), read from `unsquashfs -lln` once, on first
 * use. Paths here are the container's; `root` stands for its top, as an
 * image directory's path does for resolveInImage() callers.
 */
export class SquashView {
  private tree: Map<string, Entry> | null = null;
  constructor(private readonly host: Host, readonly file: string, readonly root: string) {}

  private entries(): Map<string, Entry> {
    if (this.tree) return this.tree;
    // Listing costs a spawn (~5-10 ms); launches after the first read it
    // from our own directory, keyed by the file's identity and mtime.
    const cache = this.cacheFile();
    const host = this.host;
    if (cache !== null) {
      try {
        return (this.tree = new Map(JSON.parse(host.readFile(cache, 'utf8')) as [string, Entry][]));
      } catch { /* missing or bad: list again */ }
    }
    const tree = this.list();
    if (cache !== null) {
      try {
        const tmp = `${cache}.${host.pid()}`;
        host.writeFile(tmp, JSON.stringify([...tree]), { mode: 0o600, flag: 'wx' });
        host.rename(tmp, cache);
        // A new listing: the oldest go beyond LISTINGS_MAX (the Host's upkeep: pruning is no input of the plan).
        host.pruneListings(dirname(cache));
      } catch { /* a cache only */ }
    }
    return (this.tree = tree);
  }

  /** Where this image's listing is cached (in the storage directory: ownDir()), or null.
      "list-v2-": what the parser before parseListing()'s checks cached (list-DEV-...) is not read. */
  private cacheFile(): string | null {
    try {
      const st = this.host.stat(this.file);
      return `${ownDir(this.host)}/list-v2-${st.dev}-${st.ino}-${st.size}-${Math.trunc(st.mtimeMs)}-${Math.trunc(st.ctimeMs)}.json`;
    } catch {
      return null;
    }
  }

  private list(): Map<string, Entry> {
    const prog = unsquashfs(this.host);
    const listing = (opt: string): Buffer => {
      // Its output depends on nothing else.
      const r = this.host.spawn(prog, [opt, '-d', '', this.file], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30 },
        [this.file, prog]);
      if (r.error || r.status !== 0)
        throw new ChError(`can't read SquashFS image ${this.file}: `
          + (r.error ? why(r.error) : `unsquashfs: ${r.stderr.toString().trim().split('\n').pop()}`));
      return r.stdout;
    };
    return parseListing(listing('-lln'), listing('-l'), this.file);
  }

  /** PATH resolved inside the image ('/a/b'), or null if missing; FOLLOW: the last component too. */
  private resolve(path: string, follow: boolean): string | null {
    const tree = this.entries();
    const todo = path.split('/').filter((c) => c !== '' && c !== '.').reverse();
    const done: string[] = [];
    let links = 0;
    while (todo.length > 0) {
      const comp = todo.pop()!;
      if (comp === '..') { done.pop(); continue; }
      const here = '/' + [...done, comp].join('/');
      const e = tree.get(here);
      if (e === undefined) return null;
      if (e.kind === 'link' && (follow || todo.length > 0)) {
        if (++links > 40) return null;
        if (e.target!.startsWith('/')) done.length = 0;
        todo.push(...e.target!.split('/').filter((c) => c !== '' && c !== '.').reverse());
        continue;
      }
      done.push(comp);
    }
    return '/' + done.join('/');
  }

  /** As resolveInImage(): ROOT/PATH with symlinks followed inside the image. */
  resolveInImage(path: string): string | null {
    const p = this.resolve(path, true);
    return p === null ? null : (this.root + p).replace(/\/+$/, '') || this.root;
  }

  kind(path: string): Kind {
    const p = this.resolve(path, true);
    if (p === null) return null;
    const e = this.entries().get(p === '/' ? '' : p);
    return e === undefined ? null : e.kind === 'link' ? null : e.kind;
  }

  /** Text of regular file PATH in the image (resolved inside it), at most 1 MiB. */
  readFile(path: string, what: string): string {
    const p = this.resolve(path, true);
    if (p === null || this.entries().get(p)?.kind !== 'file') throw new ChError(`${what}: not a regular file in the image`);
    const prog = unsquashfs(this.host);
    const r = this.host.spawn(prog, ['-cat', '-no-wildcards', this.file, p],
      { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 20 }, [this.file, prog]);
    if (r.error || r.status !== 0)
      throw new ChError(`${what}: ${r.error ? why(r.error) : r.stderr.toString('utf8').trim().split('\n').pop()}`);
    return r.stdout.toString('utf8');
  }
}

// A line of `unsquashfs -lln -d ''`: type and permissions, UID/GID, size
// (or device numbers), date, time, then the path ('' for the root, else
// '/'-rooted) and, for a symlink, " -> TARGET".
const LISTING_LINE = /^([-dlcbps])[-rwxsStT]{9} \d+\/\d+ +(\d+|\d+, *\d+) \d{4,}-\d\d-\d\d \d\d:\d\d (.*)$/s;

/**
 * The image's tree from unsquashfs's listings of FILE: LONG (-lln: type,
 * size, path, link target) and NAMES (-l: paths alone). unsquashfs prints
 * names and link targets as they are, newlines included, so a newline could
 * forge a line. Here none can: a name can't hold a '/' and every real line
 * of LONG has one (in UID/GID) before its path, so what follows a newline in
 * a name never parses; a newline in a link target adds a line to LONG and not
 * to NAMES, so the two differ; and a link's size is its target's length.
 * Line by line, LONG must describe exactly the path NAMES gives. Anything
 * else refuses the image (we never guess which entry is real).
 */
function parseListing(long: Buffer, names: Buffer, file: string): Map<string, Entry> {
  const refuse: (why: string) => never = (why) => {
    throw new ChError(`can't read SquashFS image ${file}: ${why}; refusing it (unsquashfs can't list such a name or target unambiguously)`);
  };
  const utf8 = (s: string) => Buffer.from(s, 'latin1').toString('utf8');
  const near = (l: string) => ` (near "${utf8(l).slice(0, 80).replace(/[\x00-\x1f\x7f]/g, '?')}")`;
  // latin1: one char per byte, so lengths are byte counts and no byte is lost.
  const lines = long.toString('latin1').split('\n'), paths = names.toString('latin1').split('\n');
  if (lines.pop() !== '' || paths.pop() !== '') refuse('its listing is cut short');
  if (lines.length !== paths.length) refuse('a symlink target in it contains a newline');
  const tree = new Map<string, Entry>();
  lines.forEach((l, i) => {
    const m = LISTING_LINE.exec(l);
    const path = paths[i];
    if (m === null || !m[3].startsWith(path) || (i === 0) !== (path === '') || (i > 0 && !path.startsWith('/')))
      refuse(`a name in it contains a newline${near(l)}`);
    const [, t, size, rest] = m;
    if (t === 'l') {
      const target = rest.slice(path.length + 4);
      if (rest.slice(path.length, path.length + 4) !== ' -> ' || target.length !== Number(size))
        refuse(`a symlink target in it contains a newline${near(l)}`);
      tree.set(utf8(path), { kind: 'link', target: utf8(target) });
    } else {
      if (rest !== path) refuse(`a name in it contains a newline${near(l)}`);
      tree.set(utf8(path), { kind: t === 'd' ? 'dir' : t === '-' ? 'file' : 'other' });
    }
  });
  if (tree.get('')?.kind !== 'dir') refuse('its listing has no root directory');
  return tree;
}

function unsquashfs(host: Host): string {
  const p = onPath(host, 'unsquashfs');
  if (p === null) throw new ChError('can\'t read SquashFS image: unsquashfs (squashfs-tools) not found on PATH');
  return p;
}

// The Host's most frequent reads (container/host.ts, and the recorder, run/memo.ts):
// stat, lstat, fstat, exists, access, readFile, readlink, the user's passwd
// entry and the host name; and the writes of ch-run's hand-over to its
// launcher (run/main.ts). Made by our addon, ch_host.node (native/host/),
// where it is built, with the results and errors node:fs and node:os give;
// else by node:fs and node:os themselves.
//
// Why: a launch that plans runs once, so Node compiles each of its own fs
// and os functions from source at their first call, and requiring node:os
// compiles that module: 1.5-2 ms of the first launch of a command line
// (docs/design.md, "Second round"). The addon's functions are C from
// the first call. ch-run's loader (tools/ch-run-loader.cjs) opens it before
// anything else, to read the code cache with it, and hands it over here;
// other commands open it on first use.
//
// What the addon can't take (a path that isn't a plain string, holds a NUL
// or is too long for it, an encoding other than UTF-8) goes to node:fs, whose
// errors are then the ones thrown. CH_HOST_FS=node: node:fs and node:os
// only (the tests compare the two).

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import type { UserInfo } from 'node:os';
import { HOST_ADDON_KEY, HOST_ADDON_PATH } from './paths.js';

/** ch_host.node's functions (native/host/hostfs.c): raw results, -errno on failure, undefined for "not mine". */
interface Addon {
  stat(path: string, follow: boolean, exact: boolean): Float64Array | BigInt64Array | number | undefined;
  fstat(fd: number, exact: boolean): Float64Array | BigInt64Array | number;
  access(path: string, mode: number): number | undefined;
  readlink(path: string): string | number | undefined;
  readFile(path: string, utf8: boolean): [0, BigInt64Array, string | Buffer] | [number, string, BigInt64Array?] | undefined;
  user(): [number, number, string, string | null, string | null] | number;
  hostname(): string | number;
  errname(code: number): [string, string];
  writeAll(fd: number, data: Buffer): number | undefined;
  close(fd: number): number;
  detach(parent: number): number;
}

let addon: Addon | null | undefined;
let missing = '';   // why node:fs serves, where it does

function native(): Addon | null {
  if (addon !== undefined) return addon;
  if (process.env.CH_HOST_FS === 'node') {
    missing = 'CH_HOST_FS=node';
    return (addon = null);
  }
  addon = (globalThis as Record<symbol, Addon | undefined>)[HOST_ADDON_KEY] ?? null;
  if (addon === null) {
    const mod = { exports: {} as Addon };
    try {
      process.dlopen(mod, HOST_ADDON_PATH);
      addon = mod.exports;
    } catch (err) {
      missing = `${HOST_ADDON_PATH}: ${(err as Error).message.split('\n')[0]}`;   // not built
    }
  }
  return addon;
}

/** Who makes these reads, for -vv and the tests: "ch_host.node", or "node:fs" and why. */
export function backend(): string {
  return native() ? 'ch_host.node' : `node:fs (${missing})`;
}

/** The error node:fs throws for libuv error CODE (negative) in SYSCALL on PATH. */
function fsError(a: Addon, code: number, syscall: string, path?: string): NodeJS.ErrnoException {
  const [name, desc] = a.errname(code);
  const err: NodeJS.ErrnoException = new Error(`${name}: ${desc}, ${syscall}${path === undefined ? '' : ` '${path}'`}`);
  err.errno = code;
  err.code = name;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  return err;
}

const S_IFMT = 0o170000;
const ms = (s: number, ns: number) => s * 1e3 + ns / 1e6;

/** A stat as fs.Stats has it: the same numbers, the same type tests, its times as Dates when asked. */
class HostStats implements fs.Stats {
  dev: number; mode: number; nlink: number; uid: number; gid: number; rdev: number; blksize: number;
  ino: number; size: number; blocks: number; atimeMs: number; mtimeMs: number; ctimeMs: number; birthtimeMs: number;
  constructor(f: Float64Array) {
    this.dev = f[0]; this.mode = f[1]; this.nlink = f[2]; this.uid = f[3];
    this.gid = f[4]; this.rdev = f[5]; this.blksize = f[6]; this.ino = f[7];
    this.size = f[8]; this.blocks = f[9];
    this.atimeMs = ms(f[10], f[11]); this.mtimeMs = ms(f[12], f[13]);
    this.ctimeMs = ms(f[14], f[15]); this.birthtimeMs = ms(f[16], f[17]);
  }
  // As node:fs makes them (lib/internal/fs/utils.js dateFromMs): rounded to the millisecond.
  get atime(): Date { return new Date(Math.round(this.atimeMs)); }
  get mtime(): Date { return new Date(Math.round(this.mtimeMs)); }
  get ctime(): Date { return new Date(Math.round(this.ctimeMs)); }
  get birthtime(): Date { return new Date(Math.round(this.birthtimeMs)); }
  private is(type: number): boolean { return (this.mode & S_IFMT) === type; }
  isFile(): boolean { return this.is(fs.constants.S_IFREG); }
  isDirectory(): boolean { return this.is(fs.constants.S_IFDIR); }
  isSymbolicLink(): boolean { return this.is(fs.constants.S_IFLNK); }
  isFIFO(): boolean { return this.is(fs.constants.S_IFIFO); }
  isSocket(): boolean { return this.is(fs.constants.S_IFSOCK); }
  isCharacterDevice(): boolean { return this.is(fs.constants.S_IFCHR); }
  isBlockDevice(): boolean { return this.is(fs.constants.S_IFBLK); }
}

/**
 * What the recorder compares to say a file is the one it read: device,
 * inode, type and size, and times to the nanosecond (fs.BigIntStats has
 * these too: node:fs's answer).
 */
export interface ExactStats {
  readonly dev: bigint; readonly ino: bigint; readonly mode: bigint; readonly size: bigint;
  readonly nlink: bigint; readonly uid: bigint; readonly gid: bigint; readonly rdev: bigint;
  readonly mtimeNs: bigint; readonly ctimeNs: bigint;
  isFile(): boolean; isDirectory(): boolean;
}

class NativeExact implements ExactStats {
  readonly dev: bigint; readonly ino: bigint; readonly mode: bigint; readonly size: bigint;
  readonly nlink: bigint; readonly uid: bigint; readonly gid: bigint; readonly rdev: bigint;
  readonly mtimeNs: bigint; readonly ctimeNs: bigint;
  constructor(f: BigInt64Array) {
    this.dev = f[0]; this.mode = f[1]; this.nlink = f[2]; this.uid = f[3]; this.gid = f[4]; this.rdev = f[5];
    this.ino = f[7]; this.size = f[8];
    this.mtimeNs = f[12] * 1_000_000_000n + f[13];
    this.ctimeNs = f[14] * 1_000_000_000n + f[15];
  }
  isFile(): boolean { return (Number(this.mode) & S_IFMT) === fs.constants.S_IFREG; }
  isDirectory(): boolean { return (Number(this.mode) & S_IFMT) === fs.constants.S_IFDIR; }
}

/** A raw stat, or the error. */
function raw<T extends Float64Array | BigInt64Array>(a: Addon, r: T | number, syscall: string, path?: string): T {
  if (typeof r === 'number') throw fsError(a, r, syscall, path);
  return r;
}

/** Like fs.statSync(P) (FOLLOW) or fs.lstatSync(P). */
export function stat(p: fs.PathLike, follow = true): fs.Stats {
  const a = native();
  const r = a && typeof p === 'string' ? a.stat(p, follow, false) as Float64Array | number | undefined : undefined;
  if (r === undefined) return follow ? fs.statSync(p) : fs.lstatSync(p);
  return new HostStats(raw(a!, r, follow ? 'stat' : 'lstat', p as string));
}

export const lstat = (p: fs.PathLike): fs.Stats => stat(p, false);

/** A descriptor the addon takes; node:fs validates (and rejects) anything else. */
const plainFd = (fd: unknown): fd is number => Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= 0x7fffffff;

/** Like fs.fstatSync(FD). */
export function fstat(fd: number): fs.Stats {
  const a = native();
  return a && plainFd(fd) ? new HostStats(raw(a, a.fstat(fd, false) as Float64Array | number, 'fstat')) : fs.fstatSync(fd);
}

/** P's exact identity, as fs.statSync(P, { bigint: true }) (lstat unless FOLLOW). */
export function exactStat(p: string, follow: boolean): ExactStats {
  const a = native();
  const r = a ? a.stat(p, follow, true) as BigInt64Array | number | undefined : undefined;
  if (r === undefined) return (follow ? fs.statSync : fs.lstatSync)(p, { bigint: true });
  return new NativeExact(raw(a!, r, follow ? 'stat' : 'lstat', p));
}

/** FD's exact identity, as fs.fstatSync(FD, { bigint: true }). */
export function exactFstat(fd: number): ExactStats {
  const a = native();
  return a && plainFd(fd) ? new NativeExact(raw(a, a.fstat(fd, true) as BigInt64Array | number, 'fstat')) : fs.fstatSync(fd, { bigint: true });
}

/** Like fs.accessSync(P, MODE). */
export function access(p: fs.PathLike, mode: number = fs.constants.F_OK): void {
  const a = native();
  const r = a && typeof p === 'string' ? a.access(p, mode) : undefined;
  if (r === undefined) return fs.accessSync(p, mode);
  if (r !== 0) throw fsError(a!, r, 'access', p as string);
}

/** Like fs.existsSync(P). */
export function exists(p: fs.PathLike): boolean {
  const a = native();
  const r = a && typeof p === 'string' ? a.access(p, fs.constants.F_OK) : undefined;
  return r === undefined ? fs.existsSync(p) : r === 0;
}

/** Like fs.readlinkSync(P) (a string). */
export function readlink(p: fs.PathLike): string {
  const a = native();
  const r = a && typeof p === 'string' ? a.readlink(p) : undefined;
  if (r === undefined) return fs.readlinkSync(p, 'utf8');
  if (typeof r === 'number') throw fsError(a!, r, 'readlink', p as string);
  return r;
}

const EINVAL = 22;   // Linux's, as libuv reports it (negated)

/**
 * What readlink(2) says of P, for a walk of a path component by component
 * (the recorder's kernelPath): the link's target; '' if P is there but is
 * no link (EINVAL); null if the lookup fails (missing, not a directory, no
 * permission). One call, and no Stats or Error made: a walk meets a few new
 * components each launch, some missing.
 */
export function linkTarget(p: string): string | null {
  const a = native();
  const r = a ? a.readlink(p) : undefined;
  if (r === undefined) {
    try {
      return fs.readlinkSync(p, 'utf8');
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EINVAL' ? '' : null;
    }
  }
  return typeof r === 'string' ? r : r === -EINVAL ? '' : null;
}

/** Is O readFileSync's default or UTF-8 and nothing else (what the addon reads)? Null: something it doesn't. */
function utf8Option(o: unknown): boolean | null {
  if (o === undefined || o === null) return false;
  if (o === 'utf8' || o === 'utf-8') return true;
  if (typeof o !== 'object') return null;
  const { encoding, flag, ...rest } = o as { encoding?: unknown; flag?: unknown };
  if (Object.keys(rest).length > 0 || (flag !== undefined && flag !== 'r')) return null;
  return encoding === undefined || encoding === null ? false : encoding === 'utf8' || encoding === 'utf-8' ? true : null;
}

/**
 * fs.readFileSync(P, O), and the exact identity of what was opened (read
 * through one descriptor), or of what couldn't be read once opened (null
 * if the open failed). ERROR: the error readFileSync would have thrown.
 */
export function readIdentified(p: string, o?: unknown):
    { data: string | Buffer; st: ExactStats } | { error: unknown; st: ExactStats | null } {
  const a = native();
  const utf8 = utf8Option(o);
  const r = a && utf8 !== null ? a.readFile(p, utf8) : undefined;
  if (r === undefined) return nodeReadIdentified(p, o);
  if (r[0] === 0) return { data: r[2] as string | Buffer, st: new NativeExact(r[1] as BigInt64Array) };
  const syscall = r[1] as string, st = r[2] as BigInt64Array | undefined;
  return { error: fsError(a!, r[0], syscall, syscall === 'open' ? p : undefined), st: st ? new NativeExact(st) : null };
}

function nodeReadIdentified(p: string, o?: unknown): { data: string | Buffer; st: ExactStats } | { error: unknown; st: ExactStats | null } {
  let fd: number;
  try {
    fd = fs.openSync(p, 'r');
  } catch (error) {
    return { error, st: null };
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    try {
      return { data: fs.readFileSync(fd, o as never) as string | Buffer, st };
    } catch (error) {
      return { error, st };
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Like fs.readFileSync(P, O) for a path. */
export function readFile(p: fs.PathOrFileDescriptor, o?: unknown): string | Buffer {
  if (typeof p !== 'string') return fs.readFileSync(p, o as never) as string | Buffer;
  const r = readIdentified(p, o);
  if ('error' in r) throw r.error;
  return r.data;
}

/** A file's bytes, for ch-run's loader's code cache: null if it can't be read. */
export function readBytes(p: string): Buffer | null {
  const r = readIdentified(p);
  return 'data' in r ? r.data as Buffer : null;
}

/** All of DATA written to FD, as a loop of fs.writeSync does it (its errors too). */
export function writeAll(fd: number, data: Buffer): void {
  const a = native();
  const r = a && plainFd(fd) ? a.writeAll(fd, data) : undefined;
  if (r === undefined) {
    for (let off = 0; off < data.length;) off += fs.writeSync(fd, data, off, data.length - off);
    return;
  }
  if (r < 0) throw fsError(a!, r, 'write');
}

/** Like fs.closeSync(FD). */
export function close(fd: number): void {
  const a = native();
  if (!a || !plainFd(fd)) return fs.closeSync(fd);
  const r = a.close(fd);
  if (r !== 0) throw fsError(a, r, 'close');
}

/**
 * No longer die with the parent (the parent-death signal the launcher's
 * waiter set), and leave the caller's stdio (now /dev/null): ch-run's front
 * end records its plan while the container starts (run/main.ts). False if
 * that failed, the parent is gone already, or there is no addon (node:process
 * has no prctl or dup2).
 */
export function detach(): boolean {
  const a = native();
  return a !== null && a.detach(process.ppid) === 0;
}

/** Like os.userInfo(). */
export function userInfo(): UserInfo<string> {
  const a = native();
  if (a === null) return nodeOs().userInfo();
  const r = a.user();
  if (typeof r === 'number') {
    const [name, desc] = a.errname(r);
    throw Object.assign(new Error(`A system error occurred: uv_os_get_passwd returned ${name} (${desc})`),
      { code: 'ERR_SYSTEM_ERROR', errno: r, syscall: 'uv_os_get_passwd' });
  }
  return { uid: r[0], gid: r[1], username: r[2], homedir: r[3] ?? '', shell: r[4] };
}

/** Like os.hostname(). */
export function hostname(): string {
  const a = native();
  const r = a === null ? nodeOs().hostname() : a.hostname();
  if (typeof r === 'number') throw fsError(a!, r, 'uv_os_gethostname');
  return r;
}

/** node:os, loaded only when asked for: requiring it compiles it (~0.3 ms a launch). */
export function nodeOs(): typeof import('node:os') {
  return createRequire(import.meta.url)('node:os') as typeof import('node:os');
}

// Memoized plans, the recording half (the launcher, native/launcher/memo/, keeps and
// checks them). The planner reads the host only through a Host (host.ts);
// recordingHost() (recording-host.ts) is the one that, while it reads,
// records here what the plan depended on, as the planner observed it:
//   - environment variables read (value, or only whether set), and the set of names
//     when the planner enumerated them (--unset-env GLOB);
//   - file-system calls, each as the call it was and what it returned that
//     the planner looked at: a stat's fields as they were read from the
//     Stats object (isDirectory() records the type only, .uid the owner), a
//     file read by its identity (device, inode, size, mtime, ctime), a
//     directory listing by its names, a readlink or realpath by its result;
//   - the user name (getpwuid), host name and, for --join, the caller's PID.
// The environment part of the plan is recorded as the planner's edits (set,
// unset, in order), replayed by the launcher on its live environment, so a
// launch from a memoized plan passes through the variables the planner never
// looked at exactly as a fresh plan would.
//
// Paths are recorded as given (made absolute), not normalized: the launcher
// looks them up again, and the kernel resolves ".." after a symlink from the
// link's target. A file's content is identified by an fstat of the
// descriptor it was read through, not by a second lookup of its name.
//
// What can't be recorded makes the plan unstorable rather than wrong: a path
// whose lookup passes through /proc (/proc/self/fd/N, /dev/fd/N, /dev/stdin:
// what they name depends on the process), content read from something other
// than a regular file (a FIFO, socket or device), a subprocess that can't
// declare its inputs, a Stats field like atime, the kernel release. The
// Host's PID (a temp name) never reaches a plan, nor the log prefix's
// (log lines are replayed with the launcher's PID). Writes during planning are caches and ensured directories
// (SquashFS listing cache, /var/tmp/$USER.ch/mnt): a memoized launch skips
// them, and the lstat that follows each is a dependency.
//
// A file changed less than FRESH_NS before planning began is not memoized:
// a later change within the same timestamp tick (jiffy-coarse on Linux)
// could leave the identity unchanged ("racy git").
//
// Nothing global: the front end (main.ts) makes the Recorder and its Host
// and hands the Host to the planner, and the device bundle it loads on
// demand (dist/ch-run-devices.cjs) is given the same Host; what the planner
// says is recorded through its Log's tap (tapLog).

import { isAscii } from 'node:buffer';
import type fs from 'node:fs';
import * as hostFs from '../util/host-fs.js';
import type { ExactStats } from '../util/host-fs.js';
import { ENV_TESTS, FILE_TYPE, FNV, LAUNCHER, RECORD, STAT_FIELD } from '../util/protocol.gen.js';

/** 16 hex digits, unpredictable enough to name a placeholder no plan holds otherwise. */
const randomHex = () => Array.from({ length: 4 }, () => Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')).join('');
const FRESH_NS = 1_000_000_000n;
/** Variables of the launcher's, never the planner's decision. */
export const LAUNCHER_VARS: readonly string[] = [LAUNCHER.planFd, LAUNCHER.doneFd, LAUNCHER.memoFd, LAUNCHER.memoMiss,
  LAUNCHER.memoTail, LAUNCHER.memoLater, LAUNCHER.caCerts];

/** Stat fields as the launcher compares them (protocol.json), in the order it prints them. */
const F = STAT_FIELD;
type Field = (typeof F)[keyof typeof F];
const FIELD_ORDER = Object.values(F) as Field[];
const CONTENT: Field[] = [F.type, F.size, F.dev, F.ino, F.mtime, F.ctime];
const EXACT: Field[] = [F.dev, F.ino, F.mtime, F.ctime];
const ENOENT = 2;
const PROP_FIELD: Record<string, Field> = {
  dev: F.dev, ino: F.ino, mode: F.mode, nlink: F.nlink, uid: F.uid, gid: F.gid, rdev: F.rdev, size: F.size,
  mtime: F.mtime, mtimeMs: F.mtime, mtimeNs: F.mtime, ctime: F.ctime, ctimeMs: F.ctime, ctimeNs: F.ctime,
};
/** A record's words (protocol.json): the first token of each entry is one. */
type RecordWord = (typeof RECORD)[keyof typeof RECORD];
const TYPE_METHODS = new Set(['isFile', 'isDirectory', 'isSymbolicLink', 'isFIFO', 'isSocket',
  'isCharacterDevice', 'isBlockDevice']);
const UNRECORDABLE = new Set(['atime', 'atimeMs', 'atimeNs', 'birthtime', 'birthtimeMs', 'birthtimeNs',
  'blocks', 'blksize']);

/** ST: what the planner's own call returned; EXACT: the exact identity, for fields a double can't hold exactly (times in ns). */
interface StatDep { kind: 'stat' | 'lstat'; path: string; errno: number; st: fs.Stats | ExactStats | null;
  exact: ExactStats | null; fields: Set<Field> }
type Dep =
  | StatDep
  | { kind: 'access'; path: string; mode: number; errno: number }
  | { kind: 'link' | 'real' | 'data' | 'list'; path: string; result: string; typed?: boolean }
  | { kind: 'env'; name: string; value: string | undefined; presence: boolean }
  | { kind: 'envnames' | 'user' | 'host' | 'ppid'; value: string }
  | { kind: 'envcond'; name: string; test: (typeof ENV_TESTS)[number]; holds: boolean };

/** Is B (the exact identity of what was opened) the file A described: same device, inode, type, size and, if A has them exactly, times? */
function sameFile(a: fs.Stats | ExactStats, b: ExactStats): boolean {
  const same = (x: number | bigint, y: bigint) => BigInt(x) === y;
  if (!same(a.dev, b.dev) || !same(a.ino, b.ino) || !same(a.mode, b.mode) || !same(a.size, b.size)) return false;
  return typeof a.dev !== 'bigint' || ((a as ExactStats).mtimeNs === b.mtimeNs && (a as ExactStats).ctimeNs === b.ctimeNs);
}

/** What a failed call's errno was, as a number (the launcher compares numbers). */
function errnoOf(err: unknown): number {
  const e = (err as NodeJS.ErrnoException)?.errno;
  return typeof e === 'number' ? Math.abs(e) : -1;
}

/** FNV-1a, 64 bits, as the launcher computes it: names the environment's variables, not a secret. */
export function fnv64(data: Buffer): string {
  let h: bigint = FNV.offset;
  for (const b of data) h = BigInt.asUintN(64, (h ^ BigInt(b)) * FNV.prime);
  return h.toString(16).padStart(16, '0');
}

/**
 * Sort names by their bytes, as strcmp() does in the launcher. ASCII names
 * (nearly all) sort so by JavaScript's own order; others through their
 * UTF-8 bytes (a Buffer per name: ~0.4 ms for /dev's, under the interpreter).
 */
function byteSort(names: string[]): string[] {
  if (isAscii(Buffer.from(names.join('')))) return [...names].sort();
  return names.map((n) => Buffer.from(n)).sort(Buffer.compare).map((b) => b.toString());
}

const DIRENT_TYPE: [string, string][] = [['isDirectory', FILE_TYPE.dir], ['isFile', FILE_TYPE.file],
  ['isSymbolicLink', FILE_TYPE.symlink], ['isCharacterDevice', FILE_TYPE.char], ['isBlockDevice', FILE_TYPE.block],
  ['isFIFO', FILE_TYPE.fifo], ['isSocket', FILE_TYPE.socket]];

export class Recorder {
  private readonly deps = new Map<string, Dep>();
  private readonly edits: string[][] = [];
  private readonly logs: string[] = [];
  private unstorable: string | null = null;
  private incomplete = false;
  /** When planning began, wall-clock ns (file times are wall-clock). */
  readonly start = BigInt(Date.now()) * 1_000_000n;

  constructor(readonly rawEnv: NodeJS.ProcessEnv) {}

  /** The plan can't be stored: WHY, said under -v. INCOMPLETE: some dependency went unrecorded. */
  refuse(why: string, incomplete = true): void {
    // An unrecordable input is said rather than a passing one (a file just changed).
    if (this.unstorable === null || (incomplete && !this.incomplete)) this.unstorable = why;
    this.incomplete ||= incomplete;
  }

  get refused(): string | null { return this.unstorable; }

  /**
   * P as the launcher will look it up again: absolute, but otherwise as
   * given, since the kernel resolves ".." after a symlink from the link's
   * target, not lexically (lnk/../env is real/env when lnk -> real/sub).
   * Null (and the plan unstorable) if P isn't a path, or its lookup passes
   * through procfs: /proc/self/fd/N, /dev/fd/N, /dev/stdin name what the
   * process that looks them up holds, not a file. FOLLOW: the last
   * component is followed (not by lstat, readlink, O_NOFOLLOW).
   */
  private pathOf(p: unknown, follow = true): string | null {
    const s = typeof p === 'string' ? p : Buffer.isBuffer(p) ? p.toString() : p instanceof URL ? p.pathname : null;
    if (s === null || s.includes('\0') || s === '') { this.refuse('a file-system call on a non-path'); return null; }
    const abs = s.startsWith('/') ? s : `${process.cwd()}/${s}`;
    if (this.kernelPath(abs, follow).proc) { this.refuse(`read ${abs} (process state, under /proc)`); return null; }
    return abs;
  }

  /** Prefixes looked up by kernelPath: a link's target, '' for no link, null for none there. */
  private readonly lookups = new Map<string, string | null>();

  /**
   * Where the kernel's lookup of absolute path ABS leads, links followed as
   * it follows them (the last one only with FOLLOW): REAL, and whether the
   * way passes through procfs (PROC).
   */
  kernelPath(abs: string, follow = true): { real: string; proc: boolean } {
    const rest = abs.split('/');
    let done = '', links = 0;
    while (rest.length > 0) {
      const c = rest.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') { done = done.slice(0, done.lastIndexOf('/')); continue; }
      const next = `${done}/${c}`;
      if (next === '/proc' || next.startsWith('/proc/')) return { real: next, proc: true };
      if (rest.length === 0 && !follow) return { real: next, proc: false };
      let target = this.lookups.get(next);
      if (target === undefined) {
        target = hostFs.linkTarget(next);
        this.lookups.set(next, target);
      }
      if (target === null || ++links > 40) return { real: [next, ...rest].join('/'), proc: false };   // the lookup fails here
      if (target === '') { links--; done = next; continue; }
      rest.unshift(...target.split('/'));
      if (target.startsWith('/')) done = '';
    }
    return { real: done || '/', proc: false };
  }

  /** Is P a pseudo file (sysfs: its size and times say nothing of its content)? */
  isPseudo(p: unknown): boolean {
    if (typeof p !== 'string' || p === '') return false;
    const { real } = this.kernelPath(p.startsWith('/') ? p : `${process.cwd()}/${p}`);
    return real === '/sys' || real.startsWith('/sys/');
  }

  private add(key: string, make: () => Dep): Dep {
    let d = this.deps.get(key);
    if (d === undefined) this.deps.set(key, d = make());
    return d;
  }

  /** CALL's outcome, given to RECORD: errno 0 and the result, or the errno it failed with (rethrown). */
  private observed<T>(call: () => T, record: (errno: number, r?: T) => void): T {
    let r: T;
    try {
      r = call();
    } catch (err) {
      record(errnoOf(err));
      throw err;
    }
    record(0, r);
    return r;
  }

  /** The planner's own stat or lstat of P (CALL): its result, recorded. */
  statCall<T>(kind: 'stat' | 'lstat', p: unknown, call: () => T): T {
    const path = this.pathOf(p, kind === 'stat');
    if (path === null) return call();
    let d: StatDep | null = null;
    const st = this.observed(call, (errno, r) => {
      // An absent result (throwIfNoEntry: false, exists): ENOENT.
      d = this.add(`${kind}\0${path}`, () => ({ kind, path, errno: errno || (r ? 0 : ENOENT),
        st: (r as fs.Stats | undefined) ?? null, exact: null, fields: new Set<Field>() })) as StatDep;
    });
    return st ? this.watch(st as object, d) as T : st;
  }

  /** PATH is read (a file's content, a subprocess's input): its identity, taken now, before the read. */
  statDep(kind: 'stat' | 'lstat', p: unknown, content = false): StatDep | null {
    const path = this.pathOf(p, kind === 'stat');
    if (path === null) return null;
    const d = this.add(`${kind}\0${path}`, () => {
      const exact = this.exactStat(kind, path);
      return { kind, path, errno: exact.errno, st: exact.st, exact: exact.st, fields: new Set<Field>() };
    }) as StatDep;
    if (content && d.errno === 0) this.content(d, this.exactOf(d));
    return d;
  }

  /**
   * The planner opened P for reading (the last component followed unless
   * FOLLOW is false: O_NOFOLLOW) and what it opened is ST, by fstat of the
   * descriptor, not a second lookup of the path: what it read is what the
   * kernel opened. ST null: the open failed; 'unknown': the fstat did.
   */
  opened(p: unknown, follow: boolean, st: ExactStats | null | 'unknown'): void {
    if (st === null) { this.statDep(follow ? 'stat' : 'lstat', p, true); return; }
    const path = this.pathOf(p, follow);
    if (path === null) return;
    if (st === 'unknown') {
      this.refuse(`can't identify what ${path} opened`);
      return;
    }
    const kind = follow ? 'stat' : 'lstat';
    const d = this.add(`${kind}\0${path}`, () => ({ kind, path, errno: 0, st, exact: st, fields: new Set<Field>() })) as StatDep;
    // What an earlier call saw of it (an exists() saw no fields).
    const seen = d.exact ?? (d.st !== null && d.st.ino !== undefined ? d.st : null);
    if (d.errno !== 0 || (seen !== null && !sameFile(seen, st))) {
      this.refuse(`${path} changed while planning`, false);
      return;
    }
    d.exact = st;
    this.content(d, st);
  }

  /** D's content was read (ST: its exact identity, or null if that changed): its identity is a dependency. */
  private content(d: StatDep, st: ExactStats | null): void {
    for (const f of CONTENT) d.fields.add(f);
    if (st !== null && !st.isFile() && !st.isDirectory()) {
      // A FIFO, socket or device: what was read has no identity to check again.
      this.refuse(`read ${d.path}, which is not a regular file`);
      return;
    }
    const fresh = this.start - FRESH_NS;
    if (st === null || st.mtimeNs > fresh || st.ctimeNs > fresh) this.refuse(`${d.path} changed less than 1 s ago`, false);
  }

  private exactStat(kind: 'stat' | 'lstat', path: string): { st: ExactStats | null; errno: number } {
    try {
      return { st: hostFs.exactStat(path, kind === 'stat'), errno: 0 };
    } catch (err) {
      return { st: null, errno: errnoOf(err) };
    }
  }

  /** D's BigInt stat, taken when first needed; null (and the plan unstorable) if it no longer matches. */
  exactOf(d: StatDep): ExactStats | null {
    if (d.exact === null && d.errno === 0) {
      const now = this.exactStat(d.kind, d.path);
      if (now.st === null || (d.st !== null && d.st.ino !== undefined && (Number(now.st.ino) !== Number(d.st.ino) || Number(now.st.mode) !== Number(d.st.mode)
          || Number(now.st.size) !== Number(d.st.size)))) {
        this.refuse(`${d.path} changed while planning`, false);
        return null;
      }
      d.exact = now.st;
    }
    return d.exact;
  }

  /** STATS, as the planner sees it: each field it reads becomes part of DEP. */
  watch<T extends object>(stats: T, dep: StatDep | null): T {
    if (dep === null) return stats;
    const rec = this;
    return new Proxy(stats, {
      get(target, prop) {
        if (typeof prop === 'string') {
          if (TYPE_METHODS.has(prop)) {
            dep.fields.add(F.type);
            return (target as Record<string, () => boolean>)[prop].bind(target);
          }
          const f = PROP_FIELD[prop];
          if (f) dep.fields.add(f);
          else if (UNRECORDABLE.has(prop)) rec.refuse(`read ${prop} of ${dep.path}`);
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }

  /** A call whose result is its whole dependency: access(), readlink(), realpath(), a listing, pseudo-file content. */
  resultDep(kind: 'access' | 'link' | 'real' | 'data' | 'list', p: unknown, call: () => unknown,
    describe: (r: unknown) => string, mode = 0, typed = false): unknown {
    const path = this.pathOf(p, kind !== 'link');
    if (path === null) return call();
    return this.observed(call, (errno, r) => this.add(`${kind}\0${mode}\0${path}`, () => (kind === 'access'
      ? { kind, path, mode, errno } : { kind, path, result: errno ? RECORD.failed + errno : RECORD.value + describe(r), typed })));
  }

  /** Variable NAME read; PRESENCE: only whether it is set was asked (Map.has, `in`). */
  env(name: string, value: string | undefined, presence = false): void {
    if (LAUNCHER_VARS.includes(name)) return;
    const d = this.add(`env\0${name}`, () => ({ kind: 'env', name, value, presence }));
    if (!presence && d.kind === 'env') d.presence = false;   // its value now matters too
  }

  /** Only whether variable NAME passes TEST is a dependency (its value is filled in later: joinTemplate). */
  envCondition(name: string, test: (typeof ENV_TESTS)[number], holds: boolean): void {
    this.add(`envcond\0${test}\0${name}`, () => ({ kind: 'envcond', name, test, holds }));
  }

  /**
   * --join's tag is TEMPLATE with ${NAME} filled in from the launch's own
   * environment: the plan carries a placeholder the launcher replaces.
   */
  joinTemplate(template: string): void {
    this.joinTag = { template, placeholder: `\u0001jointag-${randomHex()}\u0001` };
  }

  joinTag: { template: string; placeholder: string } | null = null;

  /**
   * The command's arguments after its name, where the launcher's key left
   * them out (LAUNCHER.memoTail): 'slot', the plan holds for any (the
   * launcher appends its own to the plan's command); or the arguments it
   * holds for alone. Null where the key holds them all.
   */
  args: 'slot' | string[] | null = null;

  /** The planner enumerated the variables: the set of names is a dependency. */
  envNames(): void {
    const names = Object.keys(this.rawEnv).filter((n) => !LAUNCHER_VARS.includes(n));
    this.add('envnames', () => ({ kind: 'envnames', value: fnv64(Buffer.from(byteSort(names).join(RECORD.namesSep))) }));
  }

  value(kind: 'user' | 'host' | 'ppid', value: string): void {
    this.add(kind, () => ({ kind, value }));
  }

  /** A subprocess whose output depends only on these files (and its arguments, which the planner chose). */
  subprocess(files: string[]): void {
    for (const f of files) this.statDep('stat', f, true);
  }

  /**
   * The planner wrote PATH (a cache, an ensured directory). A dependency on
   * it recorded before then no longer holds: the plan can't be kept this
   * time (the next launch reads what was written).
   */
  wrote(p: unknown): void {
    this.lookups.clear();   // what was written may be on the way to another path
    const path = this.pathOf(p, false);
    if (path === null) return;
    const real = this.kernelPath(path, false).real;
    for (const d of this.deps.values())
      if ('path' in d && (d.path === path || this.kernelPath(d.path, false).real === real)) {
        this.refuse(`wrote ${path} while planning`, false);
        return;
      }
  }

  edit(op: 'set' | 'unset', name: string, value?: string): void {
    this.edits.push(op === 'set' ? [RECORD.set, name, value!] : [RECORD.unset, name]);
  }

  log(line: string): void { this.logs.push(line); }

  /**
   * The record the launcher stores (native/launcher/memo/ reads it): NUL-terminated
   * tokens, "CHMEMO1", then records, then "plan" and the plan without its
   * environment. "nostore WHY" first when it must not be kept.
   */
  serialize(plan: Buffer, verbose: number): Buffer {
    // Times, devices and inodes exactly, where the planner looked at them.
    // (Whether anything changed while planning, the launcher checks: it checks
    // the whole record right after, before keeping it.)
    for (const d of this.deps.values())
      if ((d.kind === 'stat' || d.kind === 'lstat') && d.errno === 0 && EXACT.some((f) => d.fields.has(f))) this.exactOf(d);
    const depTokens = [...this.deps.values()].map((d) => depTokensOf(d));
    const t: string[] = [RECORD.magic];
    if (this.unstorable !== null) t.push(this.incomplete ? RECORD.incomplete : RECORD.nostore, this.unstorable);
    t.push(RECORD.verbose, String(verbose));
    if (this.joinTag) t.push(RECORD.jointag, this.joinTag.placeholder, this.joinTag.template);
    if (this.args === 'slot') t.push(RECORD.argslot);
    else if (this.args !== null) t.push(RECORD.args, String(this.args.length), ...this.args);
    for (const d of depTokens) t.push(...d);
    for (const e of this.edits) t.push(e[0], ...e.slice(1));
    for (const l of this.logs) t.push(RECORD.log, l);
    t.push(RECORD.plan);
    for (const x of t)
      if (x.includes('\0')) return Buffer.alloc(0);   // the plan itself refuses NULs; nothing to keep
    return Buffer.concat([Buffer.from(t.join('\0') + '\0'), plan]);
  }
}

/** The fields as the launcher prints them: integers, exact (EXACT ones from the BigInt stat). */
function statResult(d: StatDep): string {
  if (d.errno !== 0) return RECORD.failed + d.errno;
  const st = d.st!, x = d.exact;
  const v = (f: Field): string => {
    switch (f) {
      case F.type: return String(Number(st.mode) & 0o170000);
      case F.mode: return String(st.mode);
      case F.uid: return String(st.uid);
      case F.gid: return String(st.gid);
      case F.size: return String(st.size);
      case F.nlink: return String(st.nlink);
      case F.rdev: return String(st.rdev);
      case F.dev: return String(x!.dev);
      case F.ino: return String(x!.ino);
      case F.mtime: return String(x!.mtimeNs);
      case F.ctime: return String(x!.ctimeNs);
    }
  };
  return FIELD_ORDER.filter((f) => d.fields.has(f)).map(v).join(RECORD.fieldSep);
}

function depTokensOf(d: Dep): [RecordWord, ...string[]] {
  switch (d.kind) {
    case 'stat': case 'lstat':
      return [d.kind, d.path, FIELD_ORDER.filter((f) => d.fields.has(f)).join(''), statResult(d)];
    case 'access': return [RECORD.access, d.path, String(d.mode), String(d.errno)];
    case 'list': return [RECORD.list, d.path, d.typed ? RECORD.yes : RECORD.no, d.result];
    case 'link': case 'real': case 'data': return [d.kind, d.path, d.result];
    case 'envcond': return [RECORD.envcond, d.name, d.test, d.holds ? RECORD.yes : RECORD.no];
    case 'env': return d.presence ? [RECORD.envhas, d.name, d.value === undefined ? RECORD.no : RECORD.yes]
      : [RECORD.env, d.name, d.value === undefined ? RECORD.failed : RECORD.value + d.value];
    default: return [d.kind, d.value];
  }
}

/** A listing as recorded: names sorted by bytes, each after its type letter when TYPED, joined by "/". */
export function listing(r: unknown, typed: boolean): string {
  const ents = r as (string | Buffer | fs.Dirent)[];
  if (!typed) return byteSort(ents.map(String)).join(RECORD.listSep);
  const named = (ents as fs.Dirent[]).map((e): [string, string] => [e.name, DIRENT_TYPE.find(([m]) => (e as unknown as Record<string, () => boolean>)[m]())?.[1] ?? FILE_TYPE.unknown]);
  const order = byteSort(named.map(([n]) => n));
  const type = new Map(named);
  return order.map((n) => type.get(n) + n).join(RECORD.listSep);
}

// The host as ch-run's planner sees it: every file, variable, user name and
// subprocess the planner's decision depends on is read through one Host.
// Planning modules (test/structure.test.js lists them) import no node:fs,
// node:os or node:child_process and never touch process.env: they are given
// a Host. Two implementations: liveHost() (below) reads the host; the
// recording one (ch-run's, run/recording-host.ts) reads it the same way and records each read as a
// dependency of the plan, so that what a memoized plan depends on is all
// that planning could read.

import * as fs from 'node:fs';
import type { UserInfo } from 'node:os';
import { createRequire } from 'node:module';
import type { SpawnSyncOptions, SpawnSyncReturns, ExecFileSyncOptions } from 'node:child_process';
import { Env } from './env-map.js';
import { boundListings } from './listing-cache.js';
import * as hostFs from '../util/host-fs.js';

/** Flags and modes (numbers, not reads): planning modules take them from here. */
export { constants } from 'node:fs';

/** What only whether a variable passes is a dependency (--join's tag): set, set and non-empty, all digits. */
export type EnvTest = 'set' | 'nonempty' | 'digits';

/** A subprocess's inputs: the files its output depends on, or why it can't say. */
export type Inputs = string[] | { unknown: string };

export interface Host {
  // Look-ups by path: each is a dependency (what the call returned, as the planner looked at it).
  stat(p: fs.PathLike): fs.Stats;
  lstat(p: fs.PathLike): fs.Stats;
  exists(p: fs.PathLike): boolean;
  access(p: fs.PathLike, mode?: number): void;
  readFile: typeof fs.readFileSync;
  open: typeof fs.openSync;
  readdir: typeof fs.readdirSync;
  readlink(p: fs.PathLike): string;
  realpath: typeof fs.realpathSync;
  // Writes (caches, ensured directories): a dependency read before one no longer holds.
  mkdir: typeof fs.mkdirSync;
  writeFile: typeof fs.writeFileSync;
  rename: typeof fs.renameSync;
  // Our own descriptors (what open() returned): not look-ups.
  fstat(fd: number): fs.Stats;
  read: typeof fs.readSync;
  close: typeof fs.closeSync;
  /** What our own descriptor FD names (/proc/self/fd/FD): process state, not an input. */
  fdPath(fd: number): string;
  /** Upkeep of the SquashFS listing cache in DIR (oldest beyond its bound removed): no input of the plan, never recorded. */
  pruneListings(dir: string): void;

  /** Variable NAME's value. */
  env(name: string): string | undefined;
  /** The host's environment as the planner's starting point: reads of it are dependencies, changes the plan's. */
  environment(): Env;
  /** Whether variable NAME passes TEST: only that is a dependency. */
  envTest(name: string, test: EnvTest): boolean;
  /**
   * TEMPLATE with each ${NAME} filled in from the environment. The values are
   * no dependency: a memoized plan carries a placeholder that the launcher
   * fills in from its own environment (--join's tag).
   */
  envFilled(template: string): string;

  /** os.userInfo() of the caller (its name is the dependency). */
  user(): UserInfo<string>;
  hostname(): string;
  /** The kernel's release (--feature only: not part of a plan). */
  release(): string;
  cwd(): string;
  uid(): number;
  gid(): number;
  /** Our own PID, for temporary names: never part of a plan. */
  pid(): number;
  /** The process that started ch-run: the launcher's parent (PID null if it can't be found), and where that was looked up. */
  callerPid(): { pid: number | null; from: string };

  /**
   * Run FILE ARGS and return what spawnSync returns. INPUTS: every file its
   * output depends on (besides its arguments), or why it can't say, which
   * makes a recorded plan unstorable.
   */
  spawn(file: string, args: string[], opts: SpawnSyncOptions, inputs: Inputs): SpawnSyncReturns<Buffer>;
  /** The CommonJS module at PATH, loaded (code the plan depends on: its content). */
  load<T>(path: string): T;
  /** As execFileSync (throws on failure), with INPUTS as for spawn(). */
  execFile(file: string, args: string[], opts: ExecFileSyncOptions & { encoding: 'utf8' }, inputs: Inputs): string;
}

/** node:child_process, loaded only when a subprocess runs: it is not in Node's
    start-up snapshot, and requiring it cost every launch ~1.5 ms (design.md). */
export function childProcess(): typeof import('node:child_process') {
  return createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
}

/** Fill ${NAME} in TEMPLATE from GET. */
export function fillTemplate(template: string, get: (name: string) => string | undefined): string {
  return template.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, n: string) => get(n) ?? '');
}

/** The parent of process PID, from /proc/PID/stat, or null. */
export function parentOf(pid: number): number | null {
  try {
    const stat = hostFs.readFile(`/proc/${pid}/stat`, 'utf8') as string;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : null;
  } catch {
    return null;
  }
}

/** The host read as it is, recording nothing. */
export function liveHost(vars: NodeJS.ProcessEnv = process.env): Host {
  return {
    // The frequent reads by our addon where it is built (host-fs.ts says why), with node:fs's results.
    stat: (p) => hostFs.stat(p), lstat: hostFs.lstat, exists: hostFs.exists,
    access: hostFs.access, readFile: hostFs.readFile as typeof fs.readFileSync, open: fs.openSync,
    readdir: fs.readdirSync, readlink: hostFs.readlink,
    realpath: fs.realpathSync, mkdir: fs.mkdirSync, writeFile: fs.writeFileSync, rename: fs.renameSync,
    fstat: hostFs.fstat, read: fs.readSync, close: fs.closeSync,
    fdPath: (fd) => fs.readlinkSync(`/proc/self/fd/${fd}`),
    pruneListings: (dir) => boundListings(dir),
    env: (name) => vars[name],
    environment: () => Env.from(vars),
    envTest: (name, test) => envPasses(vars[name], test),
    envFilled: (template) => fillTemplate(template, (n) => vars[n]),
    user: () => hostFs.userInfo(),
    hostname: () => hostFs.hostname(),
    release: () => hostFs.nodeOs().release(),
    cwd: () => process.cwd(),
    uid: () => process.getuid!(),
    gid: () => process.getgid!(),
    pid: () => process.pid,
    callerPid: () => {
      // Our parent is the launcher's waiter (launcher.c front_end_waiter); its parent, the launcher.
      const launcher = parentOf(process.ppid);
      return launcher === null ? { pid: null, from: `/proc/${process.ppid}/stat` }
        : { pid: parentOf(launcher), from: `/proc/${launcher}/stat` };
    },
    spawn: (file, args, opts) => childProcess().spawnSync(file, args, opts) as SpawnSyncReturns<Buffer>,
    execFile: (file, args, opts) => childProcess().execFileSync(file, args, opts) as string,
    load: <T>(path: string) => {
      // In ch-run, its loader runs our bundle from the code cache made for it (tools/ch-run-loader.cjs).
      const cached = (globalThis as Record<symbol, ((p: string) => unknown) | undefined>)[Symbol.for('ch-toolkit.load')];
      return (cached ? cached(path) : createRequire(import.meta.url)(path)) as T;
    },
  };
}

/**
 * HOST's variables as an object whose properties read them one by one (each
 * a read of host.env()), for functions that take an environment object.
 * Only reads by name: enumerating it finds nothing.
 */
export function varsOf(host: Host): NodeJS.ProcessEnv {
  return new Proxy({}, { get: (_, k) => (typeof k === 'string' ? host.env(k) : undefined) });
}

export function envPasses(v: string | undefined, test: EnvTest): boolean {
  return test === 'set' ? v !== undefined : test === 'nonempty' ? v !== undefined && v !== '' : v !== undefined && /^[0-9]+$/.test(v);
}

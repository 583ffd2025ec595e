// The recording Host (host.ts): reads the host as liveHost() does and
// records each read in a Recorder (memo.ts), as the planner observed it.
// The calls, the records and their order are those the earlier design got by
// patching node:fs, os and process.env (design.md), so the launcher's checker
// (native/launcher/memo/) reads them unchanged.

import fs from 'node:fs';
import type { Log } from '../util/log.js';
import { Env } from '../container/env-map.js';
import { envPasses, fillTemplate, Host, Inputs, liveHost } from '../container/host.js';
import * as hostFs from '../util/host-fs.js';
import { listing, Recorder } from './memo.js';
import { RECORD } from '../util/protocol.gen.js';

/**
 * The planner's environment, recorded: a read of a variable the planner
 * didn't decide itself is a dependency (Map.has: only whether it is set, as
 * the ranks of a step differ in PMIX_RANK's value), enumerating the
 * variables makes their set of names one, and each change is an edit of the
 * plan, replayed by the launcher on its live environment.
 */
class RecordingEnv extends Env {
  rec!: Recorder;
  /** Names the planner set or unset: reading them later reads its own decision, not the host's. */
  private readonly decided = new Set<string>();

  override get(name: string): string | undefined {
    const v = super.get(name);
    if (!this.decided.has(name)) this.rec.env(name, v);
    return v;
  }

  override has(name: string): boolean {
    const v = super.get(name);
    if (!this.decided.has(name)) this.rec.env(name, v, true);
    return v !== undefined;
  }

  override set(name: string, value: string): this {
    super.set(name, value);
    this.decided.add(name);
    this.rec.edit('set', name, value);
    return this;
  }

  override delete(name: string): boolean {
    const r = super.delete(name);
    this.decided.add(name);
    this.rec.edit('unset', name);
    return r;
  }

  override keys(): MapIterator<string> { this.rec.envNames(); return super.keys(); }
  override entries(): MapIterator<[string, string]> { this.rec.envNames(); return super.entries(); }
  override values(): MapIterator<string> { this.rec.envNames(); return super.values(); }
  override forEach(fn: (v: string, k: string, m: Map<string, string>) => void, self?: unknown): void {
    this.rec.envNames();
    super.forEach(fn, self);
  }
}

/** A subprocess's inputs: the files its output depends on, or why it can't say (the plan is then not stored). */
function ranWith(rec: Recorder, inputs: Inputs): void {
  if (Array.isArray(inputs)) rec.subprocess(inputs);
  else rec.refuse(inputs.unknown);
}

/** readFile, recorded: what was read (identity of the file opened), or the data of a pseudo file. */
function recordingReadFile(rec: Recorder, open: typeof fs.openSync): typeof fs.readFileSync {
  return ((p: fs.PathOrFileDescriptor, o?: unknown) => {
    if (typeof p === 'number') return fs.readFileSync(p, o as never);
    if (rec.isPseudo(p)) return rec.resultDep('data', p, () => hostFs.readFile(p, o),
      (r) => Buffer.from(r as string | Buffer).toString('hex'));
    const flag = typeof o === 'object' && o !== null ? (o as { flag?: unknown }).flag : undefined;
    if (flag !== undefined && flag !== 'r') {
      rec.statDep('stat', p, true);
      return fs.readFileSync(p, o as never);
    }
    // Read through one descriptor, so that what is recorded is what was read:
    // ch_host.node's for a path; for a Buffer or a URL, the recording open's.
    if (typeof p !== 'string') {
      const fd = open(p, 'r');
      try {
        return fs.readFileSync(fd, o as never);
      } finally {
        fs.closeSync(fd);
      }
    }
    const r = hostFs.readIdentified(p, o);
    rec.opened(p, true, r.st);
    if ('error' in r) throw r.error;
    return r.data;
  }) as typeof fs.readFileSync;
}

/** open, recorded: a write as a write, a pseudo file as unstorable, else the identity of what was opened. */
function recordingOpen(rec: Recorder): typeof fs.openSync {
  return ((p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
    const n = typeof flags === 'number' ? flags : flags === undefined || flags === 'r' ? 0 : -1;
    const writes = n === -1 || (n & (fs.constants.O_WRONLY | fs.constants.O_RDWR | fs.constants.O_CREAT)) !== 0;
    if (writes) {
      rec.wrote(p);
      return fs.openSync(p, flags as fs.OpenMode, mode);
    }
    if (rec.isPseudo(p)) {
      rec.refuse(`opened ${String(p)} (pseudo file)`);
      return fs.openSync(p, flags as fs.OpenMode, mode);
    }
    const follow = (n & fs.constants.O_NOFOLLOW) === 0;
    let fd: number;
    try {
      fd = fs.openSync(p, flags as fs.OpenMode, mode);
    } catch (err) {
      rec.opened(p, follow, null);
      throw err;
    }
    let st: hostFs.ExactStats | undefined;
    try {
      st = hostFs.exactFstat(fd);
    } catch { /* said below */ }
    rec.opened(p, follow, st ?? 'unknown');
    return fd;
  }) as typeof fs.openSync;
}

type FsCalls = 'stat' | 'lstat' | 'exists' | 'access' | 'readFile' | 'open' | 'writeFile' | 'rename' | 'mkdir' | 'readdir'
  | 'readlink' | 'realpath';

/** The Host's file-system calls, each recorded as the planner looked at what it returned. */
function recordingFs(rec: Recorder): Pick<Host, FsCalls> {
  const stat = (p: fs.PathLike) => rec.statCall('stat', p, () => hostFs.stat(p));
  const lstat = (p: fs.PathLike) => rec.statCall('lstat', p, () => hostFs.lstat(p));
  // exists: a stat whose fields don't matter (absent: recorded as ENOENT, the usual why).
  const exists = (p: fs.PathLike) => {
    const yes = hostFs.exists(p);
    rec.statCall('stat', p, () => (yes ? {} : undefined));
    return yes;
  };
  const access = (p: fs.PathLike, mode?: number) => {
    rec.resultDep('access', p, () => hostFs.access(p, mode), () => '', mode ?? fs.constants.F_OK);
  };
  const open = recordingOpen(rec);
  const readFile = recordingReadFile(rec, open);
  // Writes: caches and ensured directories; what they change was perhaps
  // read before. Counted once done (an mkdir that found the directory there
  // changed nothing).
  const writeFile = (p: fs.PathOrFileDescriptor, data: unknown, o?: unknown) => {
    fs.writeFileSync(p, data as never, o as never);
    if (typeof p !== 'number') rec.wrote(p);
  };
  const rename = (from: fs.PathLike, to: fs.PathLike) => {
    fs.renameSync(from, to);
    rec.wrote(from); rec.wrote(to);
  };
  const mkdir = ((p: fs.PathLike, o?: unknown) => {
    const r = fs.mkdirSync(p, o as never);
    rec.wrote(p);
    return r;
  }) as typeof fs.mkdirSync;
  const readdir = ((p: fs.PathLike, o?: unknown) => {
    const typed = typeof o === 'object' && o !== null && (o as { withFileTypes?: boolean }).withFileTypes === true;
    if (typeof o === 'object' && o !== null && ((o as { recursive?: boolean }).recursive || (o as { encoding?: string }).encoding === 'buffer'))
      rec.refuse('a recursive or binary directory listing');
    return rec.resultDep('list', p, () => fs.readdirSync(p, o as never), (r) => listing(r, typed), 0, typed);
  }) as typeof fs.readdirSync;
  const readlink = (p: fs.PathLike) => rec.resultDep('link', p, () => hostFs.readlink(p), (r) => String(r)) as string;
  const real = (impl: (p: fs.PathLike, o?: never) => unknown) => (p: fs.PathLike, o?: unknown) =>
    rec.resultDep('real', p, () => impl(p, o as never), (r) => String(r));
  const realpath = real(fs.realpathSync) as typeof fs.realpathSync;
  realpath.native = real(fs.realpathSync.native) as typeof fs.realpathSync.native;

  return { stat, lstat, exists, access, readFile, open, writeFile, rename, mkdir, readdir, readlink, realpath };
}

/**
 * The Host the planner reads while REC records (host.ts): each call reads
 * the host as liveHost() does and records what it returned, as the planner
 * looked at it. VARS: the host's environment.
 */
export function recordingHost(rec: Recorder, vars: NodeJS.ProcessEnv = rec.rawEnv): Host {
  const live = liveHost(vars);
  const files = recordingFs(rec);
  return {
    ...live,
    ...files,
    env: (name) => { const v = vars[name]; rec.env(name, v); return v; },
    environment: () => { const env = RecordingEnv.from(vars); env.rec = rec; return env; },
    envTest: (name, test) => {
      const holds = envPasses(vars[name], test);
      rec.envCondition(name, test, holds);
      return holds;
    },
    // The plan carries a placeholder the launcher replaces with TEMPLATE filled in (main.ts).
    envFilled: (template) => { rec.joinTemplate(template); return fillTemplate(template, (n) => vars[n]); },
    user: () => {
      try {
        const u = hostFs.userInfo();
        rec.value('user', RECORD.value + String(u.username));
        return u;
      } catch (err) {
        rec.value('user', RECORD.failed);
        throw err;
      }
    },
    hostname: () => { const h = hostFs.hostname(); rec.value('host', h); return h; },
    release: () => { rec.refuse('read the kernel release'); return hostFs.nodeOs().release(); },
    // Our own parent's state is not a dependency: the launcher compares its parent's PID instead.
    callerPid: () => { const c = live.callerPid(); if (c.pid !== null) rec.value('ppid', String(c.pid)); return c; },
    spawn: (file, args, opts, inputs) => { ranWith(rec, inputs); return live.spawn(file, args, opts, inputs); },
    execFile: (file, args, opts, inputs) => { ranWith(rec, inputs); return live.execFile(file, args, opts, inputs); },
    // As Node's loader reads it: where the path leads, then what is there.
    load: <T>(path: string) => { files.realpath(path); rec.statDep('stat', path, true); return live.load<T>(path); },
  };
}

/** Record what LOG says while REC records (the launcher replays it); UNTAP to stop. */
export function tapLog(rec: Recorder, log: Log): { untap(): void } {
  log.tap = (line) => rec.log(line);
  return { untap: () => { log.tap = null; } };
}

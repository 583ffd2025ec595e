// The plan: everything the C core needs to build the container and exec the
// command, decided here. Serialized as NUL-terminated tokens (addon/core/plan.c
// reads it): plain data, no policy on the C side.

import { ChError } from '../util/log.js';

export type MountFlag = 'rec' | 'ro' | 'nosuid' | 'nodev' | 'noexec' | 'optional' | 'srcopt'
  | 'hex';   // file: content is hex (binary content, e.g. a generated ld.so.cache)

export type MountOp =
  | { kind: 'bind'; src: string; dst: string; flags: MountFlag[] }
  | { kind: 'tmpfs'; options: string; dst: string; flags: MountFlag[] }
  | { kind: 'file'; content: string; dst: string; flags: MountFlag[] }
  | { kind: 'mkdir'; mode: number; dst: string; flags: MountFlag[] }
  // Inside a tmpfs we mounted: an empty file (a mount point for a file bind),
  // or a symlink to TARGET.
  | { kind: 'mkfile'; mode: number; dst: string; flags: MountFlag[] }
  | { kind: 'symlink'; target: string; dst: string; flags: MountFlag[] };

export interface Plan {
  verbose: number;
  root: string;
  writable: boolean;
  seccomp: boolean;           // root emulation filter (addon/core/seccomp.c)
  joinPid: number | null;     // --join-pid: enter PID's namespaces instead of building a container
  execHint: string | null;    // said after "command not found"
  uid: number; gid: number;
  cwd: string;
  cwdFallback: boolean;       // cwd is a wish (host cwd): fall back to / quietly
  stageDir: string;           // image dir to stage generated files over
  join: { tag: string; count: number; timeoutMs: number } | null;
  squash?: { file: string; squashfuse: string; timeoutMs: number };   // mount this SquashFS image at root
  writeFake?: string;          // -W: tmpfs overlay over root, of this size ('' default)
  mounts: MountOp[];
  env: string[];
  argv: string[];
}

/** What the front end hands the launcher when there is no container to run
    (--help, --version): 8 bytes, like the plan's magic (addon/launcher.c). */
export const NOTHING_TO_RUN = Buffer.from('CHNOCMD\0', 'latin1');

/** The plan as the core reads it; without WITHENV, no environment (a memoized plan's, replayed as edits). */
export function serializePlan(p: Plan, withEnv = true): Buffer {
  const t: string[] = ['CHPLAN1'];
  const add = (...xs: (string | number)[]) => { for (const x of xs) t.push(String(x)); };
  add('verbose', p.verbose, 'root', p.root, 'write', p.writable ? 1 : 0, 'seccomp', p.seccomp ? 1 : 0, 'uid', p.uid, 'gid', p.gid);
  add(p.cwdFallback ? 'cwd-try' : 'cwd', p.cwd, 'stage-dir', p.stageDir);
  if (p.join) add('join', p.join.tag, p.join.count, p.join.timeoutMs);
  if (p.joinPid !== null) add('join-pid', p.joinPid);
  if (p.execHint !== null) add('exec-hint', p.execHint);
  if (p.squash) add('squash', p.squash.file, p.squash.squashfuse, p.squash.timeoutMs);
  if (p.writeFake !== undefined) add('write-fake', p.writeFake);
  for (const m of p.mounts) {
    const src = m.kind === 'bind' ? m.src : m.kind === 'tmpfs' ? m.options
      : m.kind === 'file' ? m.content : m.kind === 'symlink' ? m.target : m.mode.toString(8);
    add('mount', m.kind, m.flags.join(','), src, m.dst);
  }
  for (const a of p.argv) add('arg', a);
  // Last before "end": a memoized plan's environment goes there (addon/memo/).
  if (withEnv) for (const e of p.env) add('env', e);
  add('end');
  for (const x of t)
    if (x.includes('\0')) throw new ChError(`plan: value contains a NUL byte: ${JSON.stringify(x.slice(0, 60))}`);
  return Buffer.from(t.join('\0') + '\0', 'utf8');
}

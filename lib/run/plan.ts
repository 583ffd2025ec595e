// The plan: everything the C core needs to build the container and exec the
// command, decided here. Serialized as NUL-terminated tokens (native/core/plan.c
// reads it): plain data, no policy on the C side.

import { ChError } from '../util/log.js';
import { MOUNT_FLAGS, MOUNT_KINDS, PLAN } from '../util/protocol.gen.js';

// Their names are protocol.json's. hex, for a file: content is hex (binary
// content, e.g. a generated ld.so.cache).
export type MountFlag = (typeof MOUNT_FLAGS)[number];

/** The kinds of mount operation (protocol.json); MountOp's kinds must be among them. */
type MountKind = (typeof MOUNT_KINDS)[number];

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
  seccomp: boolean;           // root emulation filter (native/core/seccomp.c)
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
    (--help, --version): 8 bytes, like the plan's magic (native/launcher/launcher.c). */
export const NOTHING_TO_RUN = Buffer.from(`${PLAN.nothingToRun}\0`, 'latin1');

/** The plan as the core reads it; without WITHENV, no environment (a memoized plan's, replayed as edits). */
export function serializePlan(p: Plan, withEnv = true): Buffer {
  const t: string[] = [PLAN.magic];
  const add = (...xs: (string | number)[]) => { for (const x of xs) t.push(String(x)); };
  add(PLAN.verbose, p.verbose, PLAN.root, p.root, PLAN.write, p.writable ? 1 : 0, PLAN.seccomp, p.seccomp ? 1 : 0,
    PLAN.uid, p.uid, PLAN.gid, p.gid);
  add(p.cwdFallback ? PLAN.cwdTry : PLAN.cwd, p.cwd, PLAN.stageDir, p.stageDir);
  if (p.join) add(PLAN.join, p.join.tag, p.join.count, p.join.timeoutMs);
  if (p.joinPid !== null) add(PLAN.joinPid, p.joinPid);
  if (p.execHint !== null) add(PLAN.execHint, p.execHint);
  if (p.squash) add(PLAN.squash, p.squash.file, p.squash.squashfuse, p.squash.timeoutMs);
  if (p.writeFake !== undefined) add(PLAN.writeFake, p.writeFake);
  for (const m of p.mounts) {
    const src = m.kind === 'bind' ? m.src : m.kind === 'tmpfs' ? m.options
      : m.kind === 'file' ? m.content : m.kind === 'symlink' ? m.target : m.mode.toString(8);
    const kind: MountKind = m.kind;
    add(PLAN.mount, kind, m.flags.join(PLAN.flagSep), src, m.dst);
  }
  for (const a of p.argv) add(PLAN.arg, a);
  // Last before the end: a memoized plan's environment goes there (native/launcher/memo/).
  if (withEnv) for (const e of p.env) add(PLAN.env, e);
  add(PLAN.end);
  for (const x of t)
    if (x.includes('\0')) throw new ChError(`plan: value contains a NUL byte: ${JSON.stringify(x.slice(0, 60))}`);
  return Buffer.from(t.join('\0') + '\0', 'utf8');
}

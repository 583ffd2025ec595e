// The plan as ch-run's front end hands it on: serialized as NUL-terminated
// tokens for the core (native/core/plan.c reads them), or the word that says
// there is nothing to run.

import { ChError } from '../util/log.js';
import { PLAN } from '../util/protocol.gen.js';
import type { MountKind, Plan } from '../container/plan.js';

/** What the front end hands the launcher when there is no container to run
    (--help, --version): 8 bytes, like the plan's magic (native/launcher/launcher.c). */
// Buffer.from without an encoding: naming one (even 'utf8') compiles Node's
// getEncodingOps at a launch's first call, ~0.12 ms of a launch that plans.
export const NOTHING_TO_RUN = Buffer.from(`${PLAN.nothingToRun}\0`);   // ASCII

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
  if (p.squash) add(PLAN.squash, p.squash.file, p.squash.squashfuse, p.squash.timeoutMs, p.squash.lingerMs, p.squash.threads);
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
  return Buffer.from(t.join('\0') + '\0');   // UTF-8
}

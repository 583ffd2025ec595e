// The plan: everything the C core needs to build the container and exec the
// command, decided here. Serialized (plan-output.ts) as NUL-terminated tokens
// (native/core/plan.c reads it): plain data, no policy on the C side.

import type { MOUNT_FLAGS, MOUNT_KINDS } from '../util/protocol.gen.js';

// Their names are protocol.json's. hex, for a file: content is hex (binary
// content, e.g. a generated ld.so.cache).
export type MountFlag = (typeof MOUNT_FLAGS)[number];

/** The kinds of mount operation (protocol.json); MountOp's kinds must be among them. */
export type MountKind = (typeof MOUNT_KINDS)[number];

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
  squash?: { file: string; squashfuse: string; timeoutMs: number; lingerMs: number; threads: number };   // mount this SquashFS image at root (squash.ts)
  writeFake?: string;          // -W: tmpfs overlay over root, of this size ('' default)
  mounts: MountOp[];
  env: string[];
  argv: string[];
}

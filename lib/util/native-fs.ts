// File-system calls Node lacks, which ch_tar.node also exports
// (native/tar/fsops.cc): renameat2, flock waited on off the main thread, and
// a real pipe(2). Typed here, under a name that says what they are; the tar
// half of the addon is lib/tar/native.ts's. Loaded on first use.

import { loadNative, TAR_ADDON_PATH } from './paths.js';

interface FsAddon {
  rename2(from: string, to: string, how: 'noreplace' | 'exchange'): void;
  lock(path: string, wait: boolean): Promise<number>;
  pipe(): [number, number];
}

let addon: FsAddon | undefined;

function fsAddon(): FsAddon {
  addon ??= loadNative<FsAddon>(TAR_ADDON_PATH, 1);
  return addon;
}

/** renameat2(2) FROM to TO: RENAME_NOREPLACE, or RENAME_EXCHANGE with what is at TO. */
export function rename2(from: string, to: string, how: 'noreplace' | 'exchange'): void {
  fsAddon().rename2(from, to, how);
}

/**
 * An exclusive flock(2) on PATH (created if needed), taken on a worker
 * thread; WAIT false fails at once (EWOULDBLOCK) if held. Resolves with the
 * fd, which holds the lock until closed.
 */
export function flockPath(path: string, wait: boolean): Promise<number> {
  return fsAddon().lock(path, wait);
}

/** pipe(2): [read end, write end] (Node's child pipes are socketpairs, which some programs can't open as /dev/stdout). */
export function pipe(): [number, number] {
  return fsAddon().pipe();
}

// ch_tar.node's tar half, typed: extract (native/tar/napi.cc), fixup and
// stripSetid (native/tar/fsops.cc). Its file-system calls (rename2, lock,
// pipe) are lib/util/native-fs.ts's. Loaded on first use.

import { availableParallelism } from 'node:os';
import { loadNative, TAR_ADDON_PATH } from '../util/paths.js';

export interface ExtractResult {
  kind: 'tar' | 'gzip' | 'xz' | 'zstd';
  openat2: boolean;
  error?: string; errno?: number; code?: string; why?: string;
  /** The error is opts.maxBytes being reached (error: the member that would have passed it). */
  overLimit?: boolean;
  files: number; dirs: number; symlinks: number; hardlinks: number;
  devices: number; other: number; bytes: number; entries: number;
  /** The first component shared by every entry, '' if they differ. */
  top: string;
  /** Whiteouts applied (layer mode). */
  whiteouts?: number;
}

export interface FixupOp { op: 'dir' | 'file' | 'write'; path: string; content?: string }

export interface TarAddon {
  /**
   * follow: TARBALL is still being written; PROGRESS (24 bytes) then holds
   * [bytes read, cancel, complete], complete set non-zero once it is whole.
   */
  extract(tarball: string, dest: string, opts: { openat2: boolean; umask: number; progress: ArrayBuffer; layer?: boolean;
    maxBytes?: number; follow?: boolean; decodeThread?: boolean }): Promise<ExtractResult>;
  /** The decoders built in (a compression without one is decoded by its program, which can't follow a growing file). */
  decoders: { gzip?: boolean; xz?: boolean; zstd?: boolean };
  /** The ops that failed. */
  fixup(root: string, ops: FixupOp[], opts: { openat2: boolean }): { path: string; message: string }[];
  /** Clear every setuid/setgid bit in the tree at ROOT, following no link: how many entries had them. */
  stripSetid(root: string): number;
}

/**
 * Confine extraction and fixups with openat2(RESOLVE_BENEATH)? Unless
 * CH_TAR2DIR_OPENAT2=0, which forces the openat(O_NOFOLLOW) walk of old
 * kernels (ch-tar2dir and ch-pull alike).
 */
export function useOpenat2(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.CH_TAR2DIR_OPENAT2 !== '0';
}

/**
 * Decompress on a thread of its own, overlapped with the writes
 * (native/tar/threaded.cc)? Where this process may run on two CPUs or more
 * (its affinity, as a Slurm step's cgroup and binding leave it), unless
 * CH_TAR2DIR_DECODE_THREAD is 0 (or 1, to have it anyway). The Debian tree's
 * .tar.gz onto tmpfs, medians of 7: 0.438 -> 0.317 s with the second core
 * free, 0.443 -> 0.456 with it busy (docs/design.md).
 */
export function decodeThread(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.CH_TAR2DIR_DECODE_THREAD === '1') return true;
  if (env.CH_TAR2DIR_DECODE_THREAD === '0') return false;
  return availableParallelism() >= 2;
}

let addon: TarAddon | undefined;

export function tarAddon(): TarAddon {
  addon ??= loadNative<TarAddon>(TAR_ADDON_PATH, 1);
  return addon;
}

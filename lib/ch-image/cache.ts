// The build cache: STORAGE/build-cache/KEY, one entry per instruction
// result, KEY = sha256 of the parent's key, the instruction as expanded, the
// build arguments in scope and (COPY/ADD) the content copied. An entry holds
// state.json (the image config after the instruction, and which entry holds
// its tree) and, if the instruction changed the file tree, tree/ (a snapshot:
// snapshot.ts). Entries are made in a temporary and renamed into place, so a
// KEY is always complete. The cache is bounded (CH_IMAGE_CACHE_MAX, default
// 10G): after each build, and with `ch-image gc`, the least recently used
// entries go first until it fits.

import { createHash } from 'node:crypto';
import { closeSync, lstatSync, readdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Log } from '../util/log.js';
import { at, makeTempDir, removeOwned } from '../util/owned-fs.js';
import { parseSize } from '../pull/pull.js';
import type { Storage } from '../pull/cache.js';
import { copyTree, removeTree, run, treeBytes } from './snapshot.js';
import type { OciConfig } from './config.js';

export const CACHE_DIR = 'build-cache';
const DEFAULT_MAX = '10G';
const TMP_PREFIX = '.tmp.';
/** Work trees of builds in progress. */
export const WORK_PREFIX = '.work.';

export interface State {
  key: string;
  /** The entry whose tree/ is this state's file tree. */
  tree: string;
  config: OciConfig;
  /** The instruction that made it, for messages. */
  what: string;
  /** Bytes of tree/ if this entry has one. */
  bytes?: number;
  /**
   * A FROM's entry: the base image's directory in storage, which is its
   * tree (not copied into the cache; the key names the base's marker, so a
   * replaced base makes a new key).
   */
  external?: string;
}

/** sha256 hex of PARTS, each length-prefixed so no two lists collide. */
export function keyOf(parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(`${Buffer.byteLength(p)}:${p}\n`);
  return h.digest('hex');
}

/** The cache bound in bytes: $CH_IMAGE_CACHE_MAX (K, M, G, T), default 10G. */
export function cacheMax(env: NodeJS.ProcessEnv = process.env): number {
  return parseSize(env.CH_IMAGE_CACHE_MAX || DEFAULT_MAX, 'CH_IMAGE_CACHE_MAX');
}

export class BuildCache {
  readonly fd: number;
  readonly path: string;
  constructor(storage: Storage) {
    this.fd = storage.dir(CACHE_DIR);
    this.path = join(storage.path, CACHE_DIR);
  }

  close(): void { closeSync(this.fd); }

  /** The path of the tree entry KEY holds (its tree/, or the storage image a FROM's entry names). */
  treePath(key: string): string {
    const own = join(this.path, key, 'tree');
    try { lstatSync(own); return own; } catch { /* a FROM's entry, or gone */ }
    try {
      const s = JSON.parse(readFileSync(join(this.path, key, 'state.json'), 'utf8')) as State;
      if (s.external) return s.external;
    } catch { /* gone */ }
    return own;
  }

  /** Entry KEY's state if it is complete and its tree is still there (marked used); else null. */
  get(key: string): State | null {
    try {
      const s = JSON.parse(readFileSync(join(this.path, key, 'state.json'), 'utf8')) as State;
      if (s.key !== key || !lstatSync(this.treePath(s.tree)).isDirectory()) return null;
      const now = new Date();
      utimesSync(join(this.path, key, 'state.json'), now, now);
      if (s.tree !== key) utimesSync(join(this.path, s.tree, 'state.json'), now, now);
      return s;
    } catch {
      return null;
    }
  }

  /** A new work directory for a build (its path; the tree goes in PATH/tree). */
  workDir(): string {
    const { tmpName, tmpFd } = makeTempDir(this.fd, this.path, WORK_PREFIX);
    closeSync(tmpFd);
    return join(this.path, tmpName);
  }

  /**
   * Store STATE as entry STATE.key. TREE (a directory of ours, e.g. a work
   * tree) becomes its tree/ by a rename when STATE.tree is its own key.
   */
  async put(state: State, tree?: string): Promise<void> {
    const { tmpName, tmpFd } = makeTempDir(this.fd, this.path, TMP_PREFIX);
    closeSync(tmpFd);
    const tmp = join(this.path, tmpName);
    try {
      if (tree) {
        renameSync(tree, join(tmp, 'tree'));
        state.bytes = await treeBytes(join(tmp, 'tree'));
      }
      writeFileSync(join(tmp, 'state.json'), JSON.stringify(state) + '\n', { mode: 0o600 });
      try { renameSync(tmp, join(this.path, state.key)); } catch {
        // There already: made meanwhile by another build (the same content),
        // or stale (the tree it names was collected): then replaced.
        if (this.get(state.key) === null) {
          await removeTree(join(this.path, state.key));
          renameSync(tmp, join(this.path, state.key));
        }
      }
    } finally {
      await removeTree(tmp).catch(() => {});
    }
  }

  /**
   * A copy of STATE's tree at DEST (not existing). LINK: the caller only
   * replaces entries (the confined writer never writes into an existing
   * file: COPY, ADD), so a tree of the cache's own may be hard-linked
   * (`cp -al`) instead; never a base in storage, which `ch-run -w` may change
   * in place.
   */
  async materialize(state: State, dest: string, link: boolean, signal?: AbortSignal): Promise<void> {
    const from = this.treePath(state.tree);
    if (link && from === join(this.path, state.tree, 'tree')) await run(['cp', '-al', '--no-target-directory', from, dest], signal);
    else await copyTree(from, dest, signal);
  }

  /**
   * Remove least recently used entries until the trees total at most MAX
   * bytes (all of them with MAX 0), and temporaries of builds that died
   * (older than a day: a build running now keeps its own). Returns [entries
   * removed, bytes freed, bytes kept].
   */
  async gc(log: Log, max: number): Promise<[number, number, number]> {
    const entries: { key: string; bytes: number; used: number }[] = [];
    for (const e of readdirSync(`/proc/self/fd/${this.fd}`)) {
      if (e.startsWith('.')) {
        let old = true;
        try { old = Date.now() - lstatSync(at(this.fd, e)).mtimeMs > 86400e3 || max === 0; } catch { continue; }
        if (old) await removeTree(join(this.path, e)).catch((err) => log.warn((err as Error).message));
        continue;
      }
      try {
        const st = lstatSync(join(this.path, e, 'state.json'));
        const s = JSON.parse(readFileSync(join(this.path, e, 'state.json'), 'utf8')) as State;
        entries.push({ key: e, bytes: s.bytes ?? 0, used: st.mtimeMs });
      } catch {
        removeOwned(this.fd, e, join(this.path, e));   // incomplete: not an entry
      }
    }
    entries.sort((a, b) => a.used - b.used);
    let total = entries.reduce((n, e) => n + e.bytes, 0);
    let removed = 0, freed = 0;
    for (const e of entries) {
      if (total <= max && max > 0) break;
      await removeTree(join(this.path, e.key));
      total -= e.bytes; freed += e.bytes; removed++;
    }
    return [removed, freed, total];
  }
}

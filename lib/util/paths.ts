// Where the package's own pieces are, found from this module's location so the
// tree works from a git checkout, node_modules, or a PREFIX install alike, and
// from the bundled launch path (dist/ch-run.cjs) as well as dist/util/.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChError } from './log.js';

/** Where ch-run's loader (tools/ch-run-loader.cjs) leaves the ch_host.node it opened (lib/util/host-fs.ts). */
export const HOST_ADDON_KEY = Symbol.for('ch-toolkit.hostfs');

/**
 * existsSync(P), by ch_host.node where ch-run's loader opened it: on a
 * launch that plans, node:fs's first existsSync is compiled from source
 * (host-fs.ts says why that matters).
 */
function exists(p: string): boolean {
  const addon = (globalThis as Record<symbol, { access(p: string, mode: number): number | undefined } | undefined>)[HOST_ADDON_KEY];
  const r = addon?.access(p, 0);
  return r === undefined ? existsSync(p) : r === 0;
}

/** The package root: the first directory at or above this module's with a package.json (EXISTS: how to look). */
export function packageRoot(exists_: (p: string) => boolean = exists): string {
  // import.meta.filename: a bundle's own file, without a URL made and parsed (Node < 20.11: the URL).
  const self = import.meta.filename ?? fileURLToPath(import.meta.url);
  let dir = dirname(self);
  for (let i = 0; i < 4; i++, dir = dirname(dir))
    if (exists_(join(dir, 'package.json'))) return dir;
  throw new Error(`ch-toolkit: can't find package root above ${self}`);
}

export const PKG_ROOT = packageRoot();
/** Where the native programs are: $CH_TOOLKIT_BUILD_DIR (ENV), else build/Release. */
export function buildDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.CH_TOOLKIT_BUILD_DIR ?? join(PKG_ROOT, 'build', 'Release');
}
export const BUILD_DIR = buildDir();
export const CORE_PATH = join(BUILD_DIR, 'ch-run-core');
/** ch-run's launcher: what other commands run as ch-run (bin/ch-run is a copy the build makes, for npm). */
export const LAUNCHER_PATH = join(BUILD_DIR, 'ch-run');
/** ch-run's addon (launch path), and ch-tar2dir's extractor. */
export const TAR_ADDON_PATH = join(BUILD_DIR, 'ch_tar.node');
/** The front end's frequent reads (lib/util/host-fs.ts). */
export const HOST_ADDON_PATH = join(BUILD_DIR, 'ch_host.node');
export const SHARE_DIR = join(PKG_ROOT, 'share');

/**
 * The image storage directory, as Charliecloud's: $CH_IMAGE_STORAGE, else
 * /var/tmp/$USER.ch. One definition for ch-pull, ch-run's image names and
 * its SquashFS mount point. The default sits in a directory everyone can
 * write: its users check it is the caller's own before trusting it, and
 * say to set CH_IMAGE_STORAGE when someone else took the name.
 */
export function storageDir(env: NodeJS.ProcessEnv = process.env,
  userName: () => string = () => (createRequire(import.meta.url)('node:os') as typeof import('node:os')).userInfo().username): string {
  if (env.CH_IMAGE_STORAGE) return env.CH_IMAGE_STORAGE;
  let user = env.USER;
  if (!user) { try { user = userName(); } catch { user = String(process.getuid!()); } }
  return `/var/tmp/${user}.ch`;
}

/**
 * Load the native addon at PATH (our own build). If it was never built (npm
 * skipped the install script, or a tree copied without build/), say how to
 * build it rather than show a module-resolution stack; EXITCODE: the command's failure status.
 */
export function loadNative<T>(path: string, exitCode: number): T {
  try {
    return createRequire(import.meta.url)(path) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND' || existsSync(path)) throw err;
    throw new ChError(`ch-toolkit's native part is not built (${path} missing): `
      + `build it with: node ${join(PKG_ROOT, 'tools', 'build.js')} native`, exitCode);
  }
}

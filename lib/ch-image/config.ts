// The image config a build carries from instruction to instruction (the
// OCI image config's "config" object), where it starts (a stored image's
// /ch/metadata.json, or ch-image's marker, which keeps the whole object),
// and the /ch files it ends as: written by ch-pull's own code
// (lib/pull/config.ts chFilesOf), so ch-run treats a built image and a
// pulled one alike.

import { closeSync, constants as C, fstatSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chFilesOf } from '../pull/config.js';

/** The OCI config fields ch-image sets (Docker's names). */
export interface OciConfig {
  Env: string[];
  Cmd: string[] | null;
  Entrypoint: string[] | null;
  WorkingDir: string;
  User: string;
  Labels: Record<string, string>;
  Shell?: string[];
  ExposedPorts?: Record<string, object>;
  Volumes?: Record<string, object>;
  Healthcheck?: { Test: string[]; [k: string]: unknown };
  StopSignal?: string;
}

export function emptyConfig(): OciConfig {
  return { Env: [], Cmd: null, Entrypoint: null, WorkingDir: '', User: '', Labels: {} };
}

/** The shell of RUN's shell form (SHELL changes it). */
export function shellOf(c: OciConfig): string[] {
  return c.Shell?.length ? c.Shell : ['/bin/sh', '-c'];
}

/** ENV as a map, in order. */
export function envMap(c: OciConfig): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of c.Env) {
    const eq = kv.indexOf('=');
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return m;
}

/** C with NAME=VALUE set in ENV (replacing an earlier value in place). */
export function setEnv(c: OciConfig, name: string, value: string): OciConfig {
  const m = envMap(c);
  m.set(name, value);
  return { ...c, Env: [...m].map(([k, v]) => `${k}=${v}`) };
}

/**
 * /ch/NAME of the image at ROOT, read without following a link (a
 * metadata.json that is a link to one of the user's files must not become the
 * image's config), at most 1 MiB; null if it can't be read so.
 */
function chFile(root: string, name: string): string | null {
  let dir: number | undefined, fd: number | undefined;
  try {
    dir = openSync(join(root, 'ch'), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    fd = openSync(`/proc/self/fd/${dir}/${name}`, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
    const st = fstatSync(fd);
    return st.isFile() && st.size <= 1 << 20 ? readFileSync(fd, 'utf8') : null;
  } catch {
    return null;
  } finally {
    if (fd !== undefined) closeSync(fd);
    if (dir !== undefined) closeSync(dir);
  }
}

/** The config of the stored image at ROOT: ch-image's marker's if it has one, else /ch/metadata.json's fields. */
export function configOfImage(root: string): OciConfig {
  const c = emptyConfig();
  try {
    const m = JSON.parse(chFile(root, '.ch-image.json') ?? '');
    if (m?.tool === 'ch-image' && m.config && typeof m.config === 'object') return { ...c, ...m.config };
  } catch { /* not ours: metadata.json */ }
  let j: Record<string, unknown>;
  try { j = JSON.parse(chFile(root, 'metadata.json') ?? ''); } catch { return c; }
  const f = chFilesOf({ config: j }, root).config;
  return { ...c, ...f };
}

/** /ch/environment and /ch/metadata.json for C, as ch-pull writes them; skipped: ENV names that can't be written. */
export function chFiles(c: OciConfig): { files: { path: string; content: string }[]; skipped: string[] } {
  const f = chFilesOf({ config: c }, 'built image');
  return { files: [{ path: 'ch/environment', content: f.environment }, { path: 'ch/metadata.json', content: f.metadata }],
    skipped: f.skipped };
}

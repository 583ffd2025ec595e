// What the front end needs to know about an image directory before planning:
// that it is one, which paths exist inside it (resolved as the container will
// see them: symlinks followed but never above the image root), and its
// recorded metadata (/ch/metadata.json: ENTRYPOINT, CMD, WorkingDir, ...).
//
// These checks give early, precise errors; the C core resolves every mount
// destination again, race-free, with openat2(RESOLVE_IN_ROOT).

import type { Stats } from 'node:fs';
import { constants, type Host } from './host.js';
import { ChError, why } from '../util/log.js';
import type { MountOp } from './plan.js';
import { readTextFile } from './textfile.js';

export interface ImageMetadata {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string | null;
  Env?: string[];
  Labels?: Record<string, string>;
  User?: string;
}

/** Check IMAGE is a usable image directory; return its absolute host path. */
export function checkImage(host: Host, image: string): string {
  let st: Stats;
  try {
    st = host.stat(image);
  } catch (err) {
    throw new ChError(`can't use image ${image}: ${why(err)}`);
  }
  if (!st.isDirectory()) {
    if (st.isFile())
      throw new ChError(`can't use image ${image}: not a directory (a tarball? unpack it with ch-tar2dir)`);
    throw new ChError(`can't use image ${image}: not a directory`);
  }
  // Without this, an unreadable image looks empty: "it has no /dev directory".
  try {
    host.access(image, constants.R_OK | constants.X_OK);
  } catch (err) {
    throw new ChError(`can't use image ${image}: ${why(err)}`);
  }
  return image;
}

/**
 * An image the front end can't look into as a directory (a SquashFS file,
 * mounted only in the container's namespace) registers a view of its tree
 * under its root, the path the container's root will have.
 */
export interface ImageView {
  resolveInImage(path: string): string | null;
  kind(path: string): Kind;
  readFile(path: string, what: string): string;
}
const views = new Map<string, ImageView>();
export function registerImageView(root: string, view: ImageView): void { views.set(root, view); }
export function imageView(root: string): ImageView | undefined { return views.get(root); }

/**
 * Resolve PATH (absolute, container view) inside ROOT. Returns the host path
 * of what it names, or null if some component doesn't exist. Symlinks are
 * followed as inside the container: absolute targets restart at ROOT, ".."
 * stops at ROOT.
 */
export function resolveInImage(host: Host, root: string, path: string): string | null {
  const view = views.get(root);
  if (view) return view.resolveInImage(path);
  const todo = path.split('/').filter((c) => c !== '' && c !== '.').reverse();
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const comp = todo.pop()!;
    if (comp === '..') {
      done.pop();
      continue;
    }
    const at = `${root}/${[...done, comp].join('/')}`;
    let st: Stats;
    try {
      st = host.lstat(at);
    } catch {
      return null;
    }
    if (st.isSymbolicLink()) {
      if (++links > 40) return null;
      const target = host.readlink(at);
      if (target.startsWith('/')) done.length = 0;
      todo.push(...target.split('/').filter((c) => c !== '' && c !== '.').reverse());
      continue;
    }
    done.push(comp);
  }
  return `${root}/${done.join('/')}`.replace(/\/+$/, '') || root;
}

export type Kind = 'dir' | 'file' | 'other' | null;

export function kindInImage(host: Host, root: string, path: string): Kind {
  const view = views.get(root);
  if (view) return view.kind(path);
  const found = resolveInImage(host, root, path);
  if (found === null) return null;
  try {
    const st = host.stat(found);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  } catch {
    return null;
  }
}

/**
 * Create PATH inside a writable image as a directory (or an empty file when
 * FILE), parents too. Refuses to go through symlinks: with -w we only create
 * what lies plainly inside the image.
 */
export function createInImage(host: Host, root: string, path: string, file: boolean): void {
  const comps = path.split('/').filter((c) => c !== '' && c !== '.');
  if (comps.includes('..')) throw new ChError(`can't create ${path} in image: '..' not allowed`);
  let at = root;
  comps.forEach((comp, i) => {
    at += '/' + comp;
    const last = i === comps.length - 1;
    let st: Stats | null = null;
    try { st = host.lstat(at); } catch { /* missing: create below */ }
    if (st?.isSymbolicLink())
      throw new ChError(`can't create ${path} in image: ${comps.slice(0, i + 1).join('/')} is a symlink`);
    if (st) return;
    try {
      if (last && file) host.writeFile(at, '', { flag: 'wx', mode: 0o644 });
      else host.mkdir(at, { mode: 0o755 });
    } catch (err) {
      throw new ChError(`can't create ${path} in image: ${why(err)}`);
    }
  });
}

/**
 * Plan operations for the core to create PATH in the container's root (a -w
 * image, or the -W overlay), resolved inside it as every mount destination
 * is: a directory for each component (existing ones are kept), then the last
 * as a directory or an empty FILE. Planning itself writes nothing.
 */
export function createOps(host: Host, path: string, file: boolean, plainIn?: string): MountOp[] {
  const comps = path.split('/').filter((c) => c !== '' && c !== '.');
  if (comps.includes('..')) throw new ChError(`can't create ${path} in image: '..' not allowed`);
  // With -w (PLAININ: the image directory) only what lies plainly inside the
  // image is created: a symlink on the way is refused here, read-only. (The
  // core would resolve it inside the root anyway; this says so clearly.)
  if (plainIn !== undefined) {
    let at = plainIn;
    for (let i = 0; i < comps.length; i++) {
      at += '/' + comps[i];
      let st: Stats;
      try { st = host.lstat(at); } catch { break; }   // missing from here on: created by the core
      if (st.isSymbolicLink())
        throw new ChError(`can't create ${path} in image: ${comps.slice(0, i + 1).join('/')} is a symlink`);
    }
  }
  return comps.map((_, i) => {
    const dst = '/' + comps.slice(0, i + 1).join('/');
    return i === comps.length - 1 && file ? { kind: 'mkfile', mode: 0o644, dst, flags: [] }
      : { kind: 'mkdir', mode: 0o755, dst, flags: [] };
  });
}

/** Is V absent, null, or an array of strings? */
function isArgv(v: unknown): boolean {
  return v === undefined || v === null || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array with a non-string item' : `a ${typeof v}`;
}

/**
 * Check the fields ch-run uses. A string Entrypoint would otherwise be
 * spread into characters and run "/"; say which file and field instead.
 */
function checkMetadata(m: Record<string, unknown>, file: string): ImageMetadata {
  for (const f of ['Entrypoint', 'Cmd'])
    if (!isArgv(m[f]))
      throw new ChError(`bad ${file}: ${f} must be an array of strings or null, not ${typeName(m[f])}`);
  if (m.WorkingDir !== undefined && m.WorkingDir !== null && typeof m.WorkingDir !== 'string')
    throw new ChError(`bad ${file}: WorkingDir must be a string, not ${typeName(m.WorkingDir)}`);
  return m as ImageMetadata;
}

/** The image's /ch/metadata.json, or null if it has none. Read inside the image only. */
export function readMetadata(host: Host, root: string): ImageMetadata | null {
  const file = `${root}/ch/metadata.json`;
  const found = resolveInImage(host, root, '/ch/metadata.json');
  if (found === null) return null;
  const view = views.get(root);
  const text = view ? view.readFile('/ch/metadata.json', `can't read ${file}`)
    : readTextFile(host, found, `can't read ${file}`, root);
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new ChError(`can't parse ${file}: ${(err as Error).message}`);
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m))
    throw new ChError(`can't parse ${file}: not a JSON object`);
  return checkMetadata(m as Record<string, unknown>, file);
}

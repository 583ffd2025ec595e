// ch-convert's formats: their names, and which one SRC or DST is when -i or
// -o does not say (from the name; a directory SRC from what it is).

import { statSync, type Stats } from 'node:fs';
import { basename } from 'node:path';
import { EXIT_USAGE } from '../util/cli.js';
import { ChError, why } from '../util/log.js';
import { SQUASH_EXTS, TAR_EXTS } from '../image/names.js';

export const PROG = 'ch-convert';
export const EXIT_FAIL = 1;

export type Format = 'dir' | 'tar' | 'squash' | 'docker' | 'podman' | 'buildah' | 'registry';
export const FORMATS: Format[] = ['dir', 'tar', 'squash', 'docker', 'podman', 'buildah', 'registry'];
/** The transport prefix skopeo and podman give registry references: the only sign that makes SRC one. */
export const REGISTRY_PREFIX = 'docker://';
export const BUILDERS = new Set<Format>(['docker', 'podman', 'buildah']);

export function formatOf(name: string, what: string): Format {
  if (!(FORMATS as string[]).includes(name)) throw new ChError(`${what}: unknown format '${name}' (want ${FORMATS.join(', ')})`, EXIT_USAGE);
  return name as Format;
}

/** The format a file name says, or null. */
export function formatFromName(p: string): Format | null {
  if (TAR_EXTS.some((e) => p.endsWith(e))) return 'tar';
  if (SQUASH_EXTS.some((e) => p.endsWith(e))) return 'squash';
  return null;
}

export function inferIn(src: string): Format {
  if (src.startsWith(REGISTRY_PREFIX)) return 'registry';
  let st: Stats;
  try { st = statSync(src); } catch (err) {
    // Never a registry reference or builder image by guess (a typo'd file
    // name would become a network request): a name that looks like one gets a hint.
    const hint = looksLikeReference(src) ? ` (a registry reference? say ${REGISTRY_PREFIX}${src}, or -i registry;`
      + ` an image of a builder? say -i podman, -i docker or -i buildah)` : '';
    throw new ChError(`can't read ${src}: ${why(err)}${hint}`, EXIT_FAIL);
  }
  if (st.isDirectory()) return 'dir';
  const f = formatFromName(src);
  if (f === null) throw new ChError(`${src}: can't tell its format from the name (use -i)`, EXIT_USAGE);
  return f;
}

/** Could SRC (no such file) be an image reference, as HOST[:PORT]/NAME[:TAG] or NAME:TAG, e.g. localhost/hello? */
export function looksLikeReference(src: string): boolean {
  return /[/:@]/.test(src) && formatFromName(src) === null
    && /^[a-z0-9][\w.-]*(:[0-9]+)?(\/[\w.-]+)*(:\w[\w.-]*)?(@sha256:[0-9a-f]+)?$/i.test(src);
}

export function inferOut(dst: string): Format {
  if (dst.startsWith(REGISTRY_PREFIX)) return 'registry';
  const f = formatFromName(dst);
  if (f !== null) return f;
  if (/\.[a-z0-9]+$/i.test(basename(dst)) && !/^\./.test(basename(dst)))
    throw new ChError(`${dst}: unknown extension (use -o, or one of ${[...TAR_EXTS, ...SQUASH_EXTS].join(' ')}, or no extension for a directory)`, EXIT_USAGE);
  return 'dir';
}

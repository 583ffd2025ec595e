// Image names and the file names that hold them, in one place: a builder's
// or registry's image reference as a file name, an image name as its
// directory in the storage directory (ch-pull writes it, ch-run finds it),
// a tarball's file name back to an image name, and the extensions that say
// a file is a tarball (and its compression) or a SquashFS image.

import { join } from 'node:path';
import { ChError } from '../util/log.js';

/**
 * Tarball extensions and the compression each names (as tar's option),
 * longest first so ".tar.gz" wins over ".gz". ch-tar2dir detects the
 * compression from the content; ch-convert writes what the name says.
 */
export const TAR_COMPRESSION: readonly (readonly [string, 'gzip' | 'xz' | 'zstd' | null])[] = [
  ['.tar.gz', 'gzip'], ['.tar.xz', 'xz'], ['.tar.zst', 'zstd'], ['.tar.zstd', 'zstd'],
  ['.tgz', 'gzip'], ['.txz', 'xz'], ['.tzst', 'zstd'], ['.tar', null],
];

/** Tarball extensions ch-tar2dir and ch-convert accept, longest first. */
export const TAR_EXTS = TAR_COMPRESSION.map(([e]) => e);

/** SquashFS image extensions (ch-convert's; ch-run takes any regular file as one). */
export const SQUASH_EXTS = ['.sqfs', '.squashfs', '.squash'];

/** Charliecloud's file-name spelling of an image name: '/' becomes '%', ':' becomes '+'; nothing checked. */
export function spellAsFile(image: string): string {
  return image.replaceAll('/', '%').replaceAll(':', '+');
}

/** NAME for IMAGE: '/' becomes '%', ':' becomes '+' (Charliecloud's convention); refused if unusable as a file name. */
export function imageFileName(image: string): string {
  if (image === '') throw new ChError('image name is empty', 2);
  if (/[\0\n]/.test(image)) throw new ChError('image name contains a NUL or newline', 2);
  const name = spellAsFile(image);
  if (name === '.' || name === '..' || name.startsWith('-'))
    throw new ChError(`image name '${image}' can't be used as a file name`, 2);
  if (Buffer.byteLength(name) > 200) throw new ChError(`image name '${image}' too long`, 2);
  return name;
}

/** The storage directory's subdirectory of image directories (STORAGE/img/NAME, as Charliecloud's). */
export const STORAGE_IMAGES = 'img';

/**
 * Image IMAGE's directory in storage directory STORAGE, as ch-run resolves a
 * name (Charliecloud's): tag "latest" if none, then spelled as a file name.
 */
export function storedImageDir(storage: string, image: string): string {
  const tagged = /:[^/]*$/.test(image) ? image : `${image}:latest`;
  return join(storage, STORAGE_IMAGES, spellAsFile(tagged));
}

/**
 * Split a tarball's base name into [name, extension]; null if no known extension.
 * A name of '.' or '..' ("..tar", "...tar.gz") would make DIR/NAME the
 * destination itself or its parent, which ch-tar2dir would then replace if it
 * had made it: refused (exit 1, as for any unusable tarball).
 */
export function splitTarName(base: string): [string, string] | null {
  for (const ext of TAR_EXTS) {
    if (base.length > ext.length && base.endsWith(ext)) {
      const name = base.slice(0, -ext.length);
      if (name === '.' || name === '..')
        throw new ChError(`${base}: image name would be '${name}'; rename the tarball`, 1);
      return [name, ext];
    }
  }
  return null;
}

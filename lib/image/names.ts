// Image names: from a builder's image reference to a file name, and from a
// tarball's file name back to an image name.

import { ChError } from '../util/log.js';

/** Tarball extensions ch-tar2dir accepts, longest first so ".tar.gz" wins over ".gz". */
export const TAR_EXTS = ['.tar.gz', '.tar.xz', '.tar.zst', '.tar.zstd', '.tgz', '.txz', '.tzst', '.tar'];

/** NAME for IMAGE: '/' becomes '%', ':' becomes '+' (Charliecloud's convention). */
export function imageFileName(image: string): string {
  if (image === '') throw new ChError('image name is empty', 2);
  if (/[\0\n]/.test(image)) throw new ChError('image name contains a NUL or newline', 2);
  const name = image.replaceAll('/', '%').replaceAll(':', '+');
  if (name === '.' || name === '..' || name.startsWith('-'))
    throw new ChError(`image name '${image}' can't be used as a file name`, 2);
  if (Buffer.byteLength(name) > 200) throw new ChError(`image name '${image}' too long`, 2);
  return name;
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

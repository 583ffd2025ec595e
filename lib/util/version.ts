import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PKG_ROOT } from './paths.js';

/** The package version; read only when asked, to keep it off the launch path. */
export function version(): string {
  return JSON.parse(readFileSync(join(PKG_ROOT, 'package.json'), 'utf8')).version;
}

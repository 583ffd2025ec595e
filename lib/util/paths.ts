// Where the package's own pieces are, found from this module's location so the
// tree works from a git checkout, node_modules, or a PREFIX install alike.

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: dist/util/paths.js -> ../.. */
export const PKG_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUILD_DIR = process.env.CH_TOOLKIT_BUILD_DIR ?? join(PKG_ROOT, 'build', 'Release');
export const CORE_PATH = join(BUILD_DIR, 'ch-run-core');
export const ADDON_PATH = join(BUILD_DIR, 'ch_addon.node');
export const SHARE_DIR = join(PKG_ROOT, 'share');

// The N-API addon, loaded on first use (it is only needed at the very end of a
// launch, and some commands never need it).

import { createRequire } from 'node:module';
import { ADDON_PATH } from './paths.js';

export interface Addon {
  execCore(corePath: string, plan: Buffer): never;
}

let addon: Addon | undefined;

export function native(): Addon {
  addon ??= createRequire(import.meta.url)(ADDON_PATH) as Addon;
  return addon;
}

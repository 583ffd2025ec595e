// The N-API addon, loaded on first use (it is only needed at the very end of a
// launch, and some commands never need it).

import { EXIT_ERR } from './log.js';
import { ADDON_PATH, loadNative } from './paths.js';

export interface Addon {
  execCore(corePath: string, plan: Buffer): never;
}

let addon: Addon | undefined;

export function native(): Addon {
  addon ??= loadNative<Addon>(ADDON_PATH, EXIT_ERR);
  return addon;
}

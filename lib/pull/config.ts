// The image config blob -> /ch/environment and /ch/metadata.json, written
// exactly as ch-builder2tar writes them (same selection of fields, same
// normalisation, same formatting), so ch-run treats a pulled image and a
// built one alike.

import { readFileSync } from 'node:fs';
import { ChError } from '../util/log.js';
import { configFromInspect, environmentFile, type ImageConfig } from '../image/builder.js';
import type { Platform } from './manifest.js';

export const EXIT_FAIL = 1;

export interface ChFiles { environment: string; metadata: string; skipped: string[]; config: ImageConfig; platform: Platform }

export function readConfig(path: string, digest: string): ChFiles {
  let j: any;
  try { j = JSON.parse(readFileSync(path, 'utf8')); } catch (err) {
    throw new ChError(`image config ${digest}: not JSON: ${(err as Error).message}`, EXIT_FAIL);
  }
  if (!j || typeof j !== 'object') throw new ChError(`image config ${digest}: not a JSON object`, EXIT_FAIL);
  // A builder's inspect output carries the same OCI "config" object as Config.
  const config = configFromInspect('podman', { Config: j.config ?? {} });
  const env = environmentFile(config.Env);
  return {
    environment: env.text,
    metadata: JSON.stringify(config, null, 2) + '\n',
    skipped: env.skipped,
    config,
    platform: { os: String(j.os ?? ''), architecture: String(j.architecture ?? ''), variant: j.variant },
  };
}

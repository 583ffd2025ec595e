// The image config blob -> /ch/environment and /ch/metadata.json, written
// exactly as ch-builder2tar writes them (same selection of fields, same
// normalisation, same formatting), so ch-run treats a pulled image and a
// built one alike.
//
// The config is the registry's, so no control character of it is stored
// raw (text.ts): an ENV entry with one (in its name, or in its value other
// than TAB) is not written to /ch/environment, which has no way to escape
// it, and is reported instead; metadata.json keeps every value, with each
// control character as a JSON \u escape (the same value, read back).

import { readFileSync } from 'node:fs';
import { ChError } from '../util/log.js';
import { configFromInspect, environmentFile, type ImageConfig } from '../image/builder.js';
import type { Platform } from './manifest.js';
import { CONTROL, printable } from './text.js';

export const EXIT_FAIL = 1;

/** skipped: ENV names (printable) not written to /ch/environment, as they hold a control character. */
export interface ChFiles { environment: string; metadata: string; skipped: string[]; config: ImageConfig; platform: Platform }

/** Can ENV entry KV be written to /ch/environment: no control character but TAB in its value? */
function storable(kv: string): boolean {
  const eq = kv.indexOf('=');
  return eq > 0 && !CONTROL.test(kv.slice(0, eq)) && !CONTROL.test(kv.slice(eq + 1).replace(/\t/g, ' '));
}

/** JSON with DEL and the C1 controls escaped too (JSON.stringify escapes only C0). */
function jsonText(v: unknown): string {
  return JSON.stringify(v, null, 2).replace(/[\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function readConfig(path: string, digest: string): ChFiles {
  let j: any;
  try { j = JSON.parse(readFileSync(path, 'utf8')); } catch (err) {
    throw new ChError(`image config ${digest}: not JSON: ${printable((err as Error).message)}`, EXIT_FAIL);
  }
  return chFilesOf(j, digest);
}

/** The /ch files of image config J (an OCI image config object; DIGEST names it in errors): ch-pull's and ch-image's. */
export function chFilesOf(j: any, digest: string): ChFiles {
  if (!j || typeof j !== 'object') throw new ChError(`image config ${digest}: not a JSON object`, EXIT_FAIL);
  // A builder's inspect output carries the same OCI "config" object as Config.
  const config = configFromInspect('podman', { Config: j.config ?? {} });
  const env = environmentFile(config.Env.filter(storable));
  const refused = config.Env.filter((kv) => !storable(kv)).map((kv) => printable(kv.slice(0, Math.max(kv.indexOf('='), 0)) || kv));
  return {
    environment: env.text,
    metadata: jsonText(config) + '\n',
    skipped: [...refused, ...env.skipped.map(printable)],
    config,
    platform: { os: String(j.os ?? ''), architecture: String(j.architecture ?? ''), variant: j.variant },
  };
}

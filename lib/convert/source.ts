// What ch-convert converts (Source), and a registry SRC pulled as an
// intermediate tree with ch-pull's code.

import { mkdirSync } from 'node:fs';
import { ChError, isChError, type Log } from '../util/log.js';
import { withImage, type PullOptions } from '../pull/pull.js';
import type { Format } from './formats.js';

/** What to convert: SRC in format FMT (a registry reference: PULL); SIGNAL aborts a pull. */
export interface Source { fmt: Format; path: string; pull?: PullOptions; signal: AbortSignal }

/** Pull FROM (a registry image) into the new directory TREE, without ch-pull's marker: an intermediate. */
export async function pullTree(log: Log, from: Source, tree: string): Promise<string> {
  mkdirSync(tree, { mode: 0o700 });   // finishImage makes it 0755 once complete
  await pulling(from, () => withImage(from.pull!, log, from.signal, (img) => img.build(tree, false)));
  return tree;
}

/** PULL's failures name the image (ch-pull's say "registry HOST unreachable", say of what), status kept. */
export async function pulling<T>(from: Source, pull: () => Promise<T>): Promise<T> {
  try {
    return await pull();
  } catch (err) {
    if (!isChError(err) || err.message.includes(from.pull!.ref.canonical)) throw err;
    throw new ChError(`${from.path}: can't pull: ${err.message}`, err.exitCode);
  }
}

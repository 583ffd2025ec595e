// ch-convert -o registry (or a docker:// DST): SRC pushed to a registry by
// lib/push's pushImage, with ch-pull's credentials, TLS rules and
// --insecure. A directory SRC is pushed as it is; any other is first made
// into a tree in a private work directory ($TMPDIR, workdir.ts: removed
// after, or by the next run if this one is killed), as for a builder DST
// (a registry SRC pulled by ch-pull's code).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Log } from '../util/log.js';
import type { Reference } from '../pull/reference.js';
import { pushImage, type Compression } from '../push/push.js';
import { PROG } from './formats.js';
import { checkInterrupted } from './signals.js';
import { pullTree, type Source } from './source.js';
import { produce } from './tools.js';
import { withWorkDir } from './workdir.js';

export interface RegistryDst { ref: Reference; insecure: boolean; compression?: Compression }

/** SRC pushed to DST.ref. */
export async function toRegistry(log: Log, from: Source, dst: RegistryDst): Promise<number> {
  const { fmt: inFmt, path: src } = from;
  const push = async (tree: string) => {
    log.info(`converting ${src} (${inFmt}) to ${dst.ref.canonical} (registry)`);
    const r = await pushImage({ image: tree, ref: dst.ref, insecure: dst.insecure, compression: dst.compression, log, signal: from.signal });
    if (log.verbosity >= 0)
      process.stderr.write(`${PROG}[${process.pid}]: ${r.ref}: pushed (${r.digest}; ${r.uploaded ? `${(r.uploaded / 1048576).toFixed(1)} MiB sent` : 'the registry had every blob'})\n`);
  };
  if (!from.pull && inFmt === 'dir') await push(src);
  else await withWorkDir(log, async (work) => {
    const tree = join(work, 'tree');
    if (from.pull) {
      await pullTree(log, from, tree);
    } else {
      mkdirSync(tree, { mode: 0o755 });
      await produce(log, inFmt, src, 'dir', tree, 'tree', work);
    }
    await checkInterrupted(from.signal);
    await push(tree);
  });
  return 0;
}

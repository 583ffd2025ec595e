// ch-pull --cache-list and --cache-prune[=SIZE]: what is cached in the
// storage directory (ch-pull's blobs, ch-run's SquashFS listings), least
// recently used first, and pruning it (cache-bound.ts's rules: only the
// user's own files, never through a link, nothing a running pull uses).

import { listings, type Cached } from '../container/listing-cache.js';
import { type Log } from '../util/log.js';
import { storageDir } from '../util/paths.js';
import { Storage } from './cache.js';
import { blobs, prune } from './cache-bound.js';
import { blobCacheMax } from './pull.js';

function mib(n: number): string { return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 1048576).toFixed(1)} MiB`; }

function summary(items: Cached[]): string {
  const of = (k: Cached['kind']) => items.filter((c) => c.kind === k);
  const part = (k: Cached['kind'], what: string) => `${of(k).length} ${what} (${mib(of(k).reduce((n, c) => n + c.size, 0))})`;
  return `${part('blob', 'blob(s)')}, ${part('partial', 'partial download(s)')}, ${part('listing', 'SquashFS listing(s)')}`;
}

/** LIST: print what is cached to stdout; PRUNE (bytes): remove the least recently used until at most that much is left. */
export async function cacheCommand(log: Log, o: { list: boolean; prune?: number }): Promise<number> {
  const storage = Storage.open(storageDir());
  const b = await blobs(log, storage);
  try {
    const all = () => [...b.items, ...listings(storage.fd, storage.path)].sort((x, y) => x.used - y.used);
    if (o.prune !== undefined) {
      const [n, freed] = await prune(all(), o.prune);
      b.items.splice(0, b.items.length, ...(await blobs(log, storage).then((x) => { x.close(); return x.items; })));
      if (log.verbosity >= 0)
        process.stderr.write(`${log.prog}[${process.pid}]: ${storage.path}: removed ${n} cached file(s), ${mib(freed)}; left ${summary(all())}\n`);
    }
    if (o.list) {
      const items = all();
      process.stdout.write(`# ${storage.path}, least recently used first; blobs bounded by CH_PULL_CACHE_MAX (${mib(blobCacheMax())})\n`);
      for (const c of items)
        process.stdout.write(`${c.kind.padEnd(8)} ${String(c.size).padStart(12)}  ${new Date(c.used).toISOString()}${c.inUse ? ' (in use)' : ''}  ${c.path}\n`);
      process.stdout.write(`# ${summary(items)}\n`);
    }
    return 0;
  } finally {
    b.close();
    storage.close();
  }
}

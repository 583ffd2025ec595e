// ch-spank-stage IMAGE: the SPANK plugin's stager (native/spank/ch_spank.c
// runs it as the job's user, with the job's environment, in the job's
// working directory). Prints on stdout the image to hand ch-run: IMAGE
// itself for a directory or SquashFS file, else the cached import of a
// tarball or registry reference (lib/stage/stage.ts). Errors name the option
// and the input, on stderr, which is the job's. Not a user command.
//
// Environment: CH_SPANK_CACHE (the cache; default STORAGE/spank, STORAGE
// being $CH_IMAGE_STORAGE or /var/tmp/$USER.ch), CH_SPANK_CACHE_SIZE (its
// limit, default 20G), CH_SPANK_CACHE_KEEP (seconds an image used that
// recently is kept whatever the limit, default 600: a running step may have
// it mounted), CH_SPANK_LOCK_TIMEOUT (seconds to wait for another stager of
// the same image, default 3600), and ch-pull's and ch-tar2dir's own variables.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ChError, Log, runMain } from '../util/log.js';
import { PKG_ROOT, storageDir } from '../util/paths.js';
import { lockWaitMs } from '../image/shared-install.js';
import { EXIT_STAGE, KEEP_DEFAULT_S, parseLimit, stage } from './stage.js';

const PROG = 'ch-spank';

/** ch-tar2dir TARBALL DIR, quietly; its own messages (on failure) go to the job's stderr. */
function tar2dir(tarball: string, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(PKG_ROOT, 'bin', 'ch-tar2dir'), '-q', tarball, dir],
      { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('error', (err) => reject(new ChError(`can't run ch-tar2dir: ${err.message}`, EXIT_STAGE)));
    p.on('exit', (code, sig) => code === 0 ? resolve()
      : reject(new ChError(`--ch-image=${tarball}: ch-tar2dir failed (${sig ?? `exit ${code}`})`, EXIT_STAGE)));
  });
}

async function main(argv: string[], log: Log): Promise<number> {
  if (argv[0] === '-v') { log.verbosity++; argv = argv.slice(1); }
  if (argv.length !== 1 || argv[0] === '')
    throw new ChError('usage: ch-spank-stage [-v] IMAGE (run by the SPANK plugin, not by users)', 2);
  const env = process.env;
  const cache = env.CH_SPANK_CACHE || join(storageDir(), 'spank');
  const got = await stage({ image: argv[0], cache, limit: parseLimit(env.CH_SPANK_CACHE_SIZE),
    keepMs: lockWaitMs('CH_SPANK_CACHE_KEEP', KEEP_DEFAULT_S), cwd: env.PWD || process.cwd(), tar2dir }, log);
  process.stdout.write(`${got.path}\n`);
  return 0;
}

const log = new Log(PROG);
void runMain(log, () => main(process.argv.slice(2), log));

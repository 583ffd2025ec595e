// ch-pull [OPTIONS] REF [DEST]: an image straight from an OCI registry into a
// directory ch-run can use (or a tarball as ch-builder2tar writes), every
// blob verified against its digest and kept in a content-addressed cache.
// The pieces: reference.ts (REF), registry.ts/auth.ts/http.ts (the registry),
// manifest.ts (platform, layers), cache.ts (storage, blobs), apply.ts
// (layers), config.ts (/ch files), image-dir.ts (atomic DEST), pull.ts (all of
// them together, shared with ch-convert).

import { closeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { ChError, isChError, Log, runMain, why } from '../util/log.js';
import { all, applyVerbosity, command, last, parseCommand, type CommandSpec, verbosityOptions } from '../util/cli.js';
import { openDir } from '../util/owned-fs.js';
import { INTERRUPTS } from '../util/proc.js';
import { parseReference, storageName, EXIT_USAGE } from './reference.js';
import { hostPlatform, parsePlatform } from './manifest.js';
import { PROG } from './image-dir.js';
import { JOBS_DEFAULT, parseSize, pullToDir, pullToTar, withImage, type PullOptions } from './pull.js';
import { printable } from './text.js';
import { cacheCommand } from './cache-cmd.js';
import { STORAGE_IMAGES } from '../image/names.js';

const EXIT_FAIL = 1;

const SPEC: CommandSpec = {
  prog: PROG,
  synopsis: '[-a ARCH] [--platform OS/ARCH] [--tar FILE] [--force] [--insecure] [-j N] [--max-unpacked SIZE] [-q] [-v] REF [DEST]',
  valueShorts: 'aj',
  description: `Pull image REF from an OCI registry (Distribution API v2) and unpack it into
directory DEST, ready for \`ch-run DEST\`. Without DEST the image goes into the
storage directory, as STORAGE/img/NAME (NAME: REF with '/' as '%' and ':' as
'+'). With --tar FILE a tarball is written instead, laid out as
ch-builder2tar writes it.

REF is in Docker's syntax: alpine:3.20, registry:5000/team/app:v1,
app@sha256:HEX. A first component without '.' or ':' (and not "localhost")
means Docker Hub (docker.io/library/NAME for one-component names). Manifest
lists and OCI indexes are resolved to this machine's platform unless --arch or
--platform says otherwise.

Every blob is checked against its digest as it arrives; one that doesn't
match is discarded and the pull fails. Blobs are cached in STORAGE/blobs/,
shared by later pulls and by pulls running at once; an interrupted download
is resumed (HTTP Range) by the next pull. Layers download in parallel
(--jobs) and are applied in order with OCI whiteouts, each while it
downloads, by the same confined extractor as ch-tar2dir: nothing is written
outside the image, and the image is complete only once every digest is
verified. The cache is bounded: after each
pull, the least recently used blobs go until it holds at most
CH_PULL_CACHE_MAX (default 10G); a blob a running pull uses never goes.
\`ch-pull --cache-list\` (no REF) shows the cache (and ch-run's SquashFS listings, of which it
keeps the 64 most recently used), least recently used first; --cache-prune
removes all of them that no run is using, --cache-prune=SIZE the least
recently used until at most SIZE is left. The image's ENV goes into /ch/environment and its
ENTRYPOINT, CMD, ENV, WORKDIR, USER and labels into /ch/metadata.json.

What a registry serves is bounded: a manifest or index, and the image's
config, at most 4 MiB each (refused before more is fetched); every blob at
most the size its manifest gives; with --max-unpacked SIZE (or
CH_PULL_MAX_UNPACKED), the file data the layers unpack to. Control
characters in what a registry says (error messages, header values, names)
are printed as \\xHH; an ENV entry holding one (TAB in a value aside) is not
written to /ch/environment, with a warning.

DEST appears only once complete. An existing DEST is reused if ch-pull made
it from the same manifest (unless --force), replaced if it is an image you
made with ch-pull, ch-tar2dir, ch-convert or ch-image (their marker
/ch/.ch-image.json), and refused otherwise. Its directory may
be shared with others: links there are never followed and only your own
entries are ever removed.

Registries: HTTPS, certificates checked against the system's CA store (plus
NODE_EXTRA_CA_CERTS or SSL_CERT_FILE); plain HTTP only for a registry on this
machine (localhost, 127.x, ::1) or with --insecure. Anonymous, basic and
bearer-token authentication; credentials from CH_PULL_USER/CH_PULL_PASSWORD,
else $XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json.
Credentials go only to the registry REF names (and to the token server its
own challenge names); a host it redirects to gets none, and asking for them
is an error. http_proxy, https_proxy, all_proxy and no_proxy are honoured.`,
  epilog: `Environment:
  CH_IMAGE_STORAGE      storage directory (default /var/tmp/$USER.ch); made
                        mode 0700, refused if not yours or open to others
  CH_PULL_USER, CH_PULL_PASSWORD  registry credentials
  CH_PULL_RETRIES       retries of a failed request (default 4; backoff from
                        0.5 s, doubling): 5xx, 429, broken connections (a
                        connection refused at first contact is not retried)
  CH_PULL_LOCK_TIMEOUT  seconds to wait for another ch-pull of yours on the
                        same DEST or blob (default 3600)
  CH_PULL_MAX_UNPACKED  default for --max-unpacked (default: no bound)
  CH_PULL_CACHE_MAX     bound of the blob cache, a SIZE (default 10G)

Exit status:
  0  image pulled, or DEST already up to date
  1  failure: unknown image or tag, authentication refused, no manifest for
     the platform, registry unreachable, digest mismatch, disk full, hostile
     layer, oversized manifest or config, over --max-unpacked, DEST or --tar
     FILE not yours, ...
  2  usage error: unknown option, missing value, bad REF, --arch, --platform,
     --jobs or --max-unpacked (or CH_PULL_MAX_UNPACKED, CH_PULL_CACHE_MAX),
     --cache-prune SIZE, --arch with --platform, DEST with --tar, REF with
     --cache-list or --cache-prune
  128+N  interrupted by signal N (SIGINT, SIGTERM, SIGHUP); nothing left that
     looks complete (after SIGKILL, the next pull removes the temporary)`,
};

interface Options extends PullOptions { dest?: string; tar?: string; force: boolean }
interface CacheOptions { list: boolean; prune?: number }

function usageError(msg: string): ChError {
  return new ChError(`${msg}\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
}

async function parse(argv: string[], log: Log): Promise<Options | CacheOptions | null> {
  const y = verbosityOptions(command(SPEC)
    .option('arch', { alias: 'a', type: 'string', requiresArg: true, description: "ARCH: architecture to pull from a multi-arch image (e.g. amd64, arm64, arm/v7); default: this machine's" })
    .option('platform', { type: 'string', requiresArg: true, description: 'OS/ARCH: platform to pull, OS/ARCH[/VARIANT] (e.g. linux/arm64)' })
    .option('tar', { type: 'string', requiresArg: true, description: 'FILE: write a gzipped image tarball FILE (as ch-builder2tar does) instead of a directory' })
    .option('force', { type: 'boolean', description: 'rebuild DEST even if it already holds this very image' })
    .option('insecure', { type: 'boolean', description: 'allow plain HTTP and unverified TLS certificates for any registry' })
    .option('jobs', { alias: 'j', type: 'string', requiresArg: true, description: `N: download at most N blobs at a time (default ${JOBS_DEFAULT})` })
    .option('max-unpacked', { type: 'string', requiresArg: true, description: 'SIZE: refuse an image whose layers unpack to more than SIZE bytes of file data (K, M, G, T: powers of 1024; 0: no bound); nothing is left' })
    .option('cache-list', { type: 'boolean', description: 'list the cached blobs and SquashFS listings (stdout), least recently used first' })
    .option('cache-prune', { type: 'string', description: '[=SIZE]: remove cached blobs and listings no run is using, least recently used first, until at most SIZE is left (default 0)' }));
  const a = await parseCommand(y, SPEC, argv);
  if (!a) return null;
  applyVerbosity(log, a);
  const pruneArg = last(a['cache-prune']);
  if (a['cache-list'] === true || pruneArg !== undefined) {
    if (all(a._).length > 0) throw usageError('--cache-list and --cache-prune take no REF or DEST');
    return { list: a['cache-list'] === true, prune: pruneArg === undefined ? undefined : pruneArg === '' ? 0 : parseSize(pruneArg, '--cache-prune') };
  }
  const arch = last(a.arch), plat = last(a.platform), tar = last(a.tar), jobsArg = last(a.jobs);
  const maxArg = last(a['max-unpacked']);
  // argp let the later of the two win; yargs can't tell which came later, so both is an error.
  if (arch !== undefined && plat !== undefined) throw usageError('give either --arch or --platform, not both');
  const platform = arch !== undefined ? parsePlatform(arch, true) : plat !== undefined ? parsePlatform(plat, false) : undefined;
  if (tar === '') throw usageError('--tar: empty file name');
  let jobs = JOBS_DEFAULT;
  if (jobsArg !== undefined) {
    if (!/^[1-9][0-9]?$/.test(jobsArg)) throw usageError(`--jobs '${jobsArg}': want a number from 1 to 99`);
    jobs = Number(jobsArg);
  }
  const pos = all(a._);
  if (pos.length < 1 || pos.length > 2) throw usageError(`expected REF [DEST], got ${pos.length} argument(s)`);
  if (tar && pos.length === 2) throw usageError('give either DEST or --tar FILE, not both');
  return { ref: parseReference(pos[0]), dest: pos[1], tar, platform: platform ?? hostPlatform(),
    force: a.force === true, insecure: a.insecure === true, jobs,
    maxUnpacked: maxArg === undefined ? undefined : parseSize(maxArg, '--max-unpacked') };
}

async function pull(argv: string[], log: Log): Promise<number> {
  const o = await parse(argv, log);
  if (!o) return 0;
  if (!('ref' in o)) return cacheCommand(log, o);
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(); };
  for (const s of INTERRUPTS) process.on(s, onSignal);
  try {
    return await withImage(o, log, abort.signal, async (img) => {
      if (o.tar) {
        await pullToTar(img, log, o.tar);
        if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${o.ref.canonical} -> ${o.tar}\n`);
        return 0;
      }
      let dirFd: number, dir: string, name: string;
      if (o.dest) {
        const d = o.dest.replace(/\/+$/, '') || '/';
        dir = dirname(d);
        name = basename(d);
        if (name === '' || name === '.' || name === '..' || name === '/')
          throw usageError(`DEST '${o.dest}': name a new directory, not '.' or '..'`);
        try { dirFd = openDir(dir); } catch (err) { throw new ChError(`${dir}: can't use as DEST's directory: ${why(err)}`, EXIT_FAIL); }
      } else {
        dirFd = img.storage.dir(STORAGE_IMAGES);
        dir = join(img.storage.path, STORAGE_IMAGES);
        name = storageName(o.ref);
      }
      const target = join(dir, name);
      try {
        const r = await pullToDir(img, log, { dirFd, dir, name }, o.force, abort.signal);
        if (log.verbosity >= 0)
          process.stderr.write(`${PROG}[${process.pid}]: ${target}: ${r === 'current' ? 'already up to date' : 'pulled'} (${o.ref.canonical}, ${img.digest})\n`);
      } finally {
        closeSync(dirFd);
      }
      return 0;
    });
  } catch (err) {
    if (caught) throw new ChError(`${o.ref.canonical}: interrupted by ${caught}; nothing left that looks complete`, 128 + osConstants.signals[caught]);
    // Messages quote what a registry sent; those places make it printable, and so does this, whatever the path.
    if (isChError(err)) err.message = err.message.split('\n').map(printable).join('\n');
    throw err;
  } finally {
    for (const s of INTERRUPTS) process.off(s, onSignal);
  }
}

const log = new Log(PROG);
void runMain(log, () => pull(process.argv.slice(2), log));

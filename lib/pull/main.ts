// ch-pull [OPTIONS] REF [DEST]: an image straight from an OCI registry into a
// directory ch-run can use (or a tarball as ch-builder2tar writes), every
// blob verified against its digest and kept in a content-addressed cache.
// The pieces: reference.ts (REF), registry.ts/auth.ts/http.ts (the registry),
// manifest.ts (platform, layers), cache.ts (storage, blobs), apply.ts
// (layers), config.ts (/ch files), install.ts (atomic DEST).

import { spawn } from 'node:child_process';
import { closeSync, openSync, renameSync, unlinkSync, constants as C } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { constants as osConstants } from 'node:os';
import { ChError, Log, runMain, why } from '../util/log.js';
import { all, command, type CommandSpec, count, last, parseCommand } from '../util/cli.js';
import { openDir, removeOwned } from '../util/owned-fs.js';
import { parseReference, manifestKey, storageName, EXIT_USAGE, type Reference } from './reference.js';
import { Registry } from './registry.js';
import { hostPlatform, imageManifest, isIndex, parsePlatform, platformText, selectPlatform,
  type Descriptor, type ImageManifest, type Platform } from './manifest.js';
import { BlobCache, fsWhy, Storage, storagePath, type BlobResult } from './cache.js';
import { applyLayer } from './apply.js';
import { readConfig } from './config.js';
import { finishImage, install, makeTemp, MARKER, PROG } from './install.js';

const EXIT_FAIL = 1;
const JOBS_DEFAULT = 3;

const SPEC: CommandSpec = {
  prog: PROG,
  synopsis: '[-a ARCH] [--platform OS/ARCH] [--tar FILE] [--force] [--insecure] [-j N] [-q] [-v] REF [DEST]',
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
is resumed (HTTP Range) by the next pull. Layers are applied in order with
OCI whiteouts, by the same confined extractor as ch-tar2dir: nothing is
written outside the image. The image's ENV goes into /ch/environment and its
ENTRYPOINT, CMD, ENV, WORKDIR, USER and labels into /ch/metadata.json.

DEST appears only once complete. An existing DEST is reused if ch-pull made
it from the same manifest (unless --force), replaced if it is an image
ch-pull or ch-tar2dir of yours made, and refused otherwise. Its directory may
be shared with others: links there are never followed and only your own
entries are ever removed.

Registries: HTTPS, certificates checked against the system's CA store (plus
NODE_EXTRA_CA_CERTS or SSL_CERT_FILE); plain HTTP only for a registry on this
machine (localhost, 127.x, ::1) or with --insecure. Anonymous, basic and
bearer-token authentication; credentials from CH_PULL_USER/CH_PULL_PASSWORD,
else $XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json.
http_proxy, https_proxy, all_proxy and no_proxy are honoured.`,
  epilog: `Environment:
  CH_IMAGE_STORAGE      storage directory (default /var/tmp/$USER.ch); made
                        mode 0700, refused if not yours or open to others
  CH_PULL_USER, CH_PULL_PASSWORD  registry credentials
  CH_PULL_RETRIES       retries of a failed request (default 4; backoff from
                        0.5 s, doubling): 5xx, 429, broken connections
  CH_PULL_LOCK_TIMEOUT  seconds to wait for another ch-pull of yours on the
                        same DEST or blob (default 3600)

Exit status:
  0  image pulled, or DEST already up to date
  1  failure: unknown image or tag, authentication refused, no manifest for
     the platform, registry unreachable, digest mismatch, disk full, hostile
     layer, DEST not yours, ...
  2  usage error: unknown option, missing value, bad REF, --arch, --platform
     or --jobs, --arch with --platform, DEST with --tar
  128+N  interrupted by signal N (SIGINT, SIGTERM, SIGHUP); nothing left that
     looks complete (after SIGKILL, the next pull removes the temporary)`,
};

interface Options { ref: Reference; dest?: string; tar?: string; platform: Platform; force: boolean; insecure: boolean; jobs: number }

function usageError(msg: string): ChError {
  return new ChError(`${msg}\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
}

async function parse(argv: string[], log: Log): Promise<Options | null> {
  const y = command(SPEC)
    .option('arch', { alias: 'a', type: 'string', requiresArg: true, description: "ARCH: architecture to pull from a multi-arch image (e.g. amd64, arm64, arm/v7); default: this machine's" })
    .option('platform', { type: 'string', requiresArg: true, description: 'OS/ARCH: platform to pull, OS/ARCH[/VARIANT] (e.g. linux/arm64)' })
    .option('tar', { type: 'string', requiresArg: true, description: 'FILE: write a gzipped image tarball FILE (as ch-builder2tar does) instead of a directory' })
    .option('force', { type: 'boolean', description: 'rebuild DEST even if it already holds this very image' })
    .option('insecure', { type: 'boolean', description: 'allow plain HTTP and unverified TLS certificates for any registry' })
    .option('jobs', { alias: 'j', type: 'string', requiresArg: true, description: `N: download at most N blobs at a time (default ${JOBS_DEFAULT})` })
    .option('quiet', { alias: 'q', type: 'boolean', description: 'print only errors' })
    .option('verbose', { alias: 'v', type: 'count', description: 'print more (repeatable)' });
  const a = await parseCommand(y, SPEC, argv);
  if (!a) return null;
  if (a.quiet === true) log.verbosity = -1;
  log.verbosity += count(a.verbose);
  const arch = last(a.arch), plat = last(a.platform), tar = last(a.tar), jobsArg = last(a.jobs);
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
    force: a.force === true, insecure: a.insecure === true, jobs };
}

/** Progress: per layer on a terminal (one line, redrawn), one line per layer otherwise, nothing with -q. */
class PullProgress {
  private readonly tty: boolean;
  private readonly done: number[];
  private last = 0;
  constructor(private readonly log: Log, private readonly layers: Descriptor[]) {
    this.tty = log.verbosity >= 0 && Boolean(process.stderr.isTTY);
    this.done = layers.map(() => 0);
  }
  update(i: number, n: number): void {
    this.done[i] = n;
    if (!this.tty || Date.now() - this.last < 100) return;
    this.last = Date.now();
    const parts = this.layers.map((l, k) => `${k + 1}:${l.size ? Math.floor((100 * this.done[k]) / l.size) : 100}%`);
    const mib = this.done.reduce((a, b) => a + b, 0) / 1048576;
    const line = `${PROG}: layers ${parts.join(' ')} (${mib.toFixed(1)} MiB)`;
    process.stderr.write(`\r${line.slice(0, Math.max(40, process.stderr.columns || 80) - 1)}\x1b[K`);
  }
  layer(i: number, r: BlobResult, applied: boolean): void {
    const l = this.layers[i];
    const how = r.cached ? 'cached' : r.resumedFrom ? `downloaded (resumed at ${(r.resumedFrom / 1048576).toFixed(1)} MiB)` : 'downloaded';
    const msg = `layer ${i + 1}/${this.layers.length} ${l.digest.slice(0, 19)} ${(l.size / 1048576).toFixed(1)} MiB ${how}${applied ? ', applied' : ''}`;
    if (this.tty) process.stderr.write(`\r\x1b[K${PROG}: ${msg}\n`);
    else if (this.log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${msg}\n`);
  }
}

/** At most N of FNS run at once; results in order, as promises. */
function bounded<T>(n: number, fns: (() => Promise<T>)[]): Promise<T>[] {
  let running = 0;
  const queue: (() => void)[] = [];
  return fns.map((fn) => new Promise<T>((res, rej) => {
    const go = () => {
      running++;
      fn().then(res, rej).finally(() => { running--; queue.shift()?.(); });
    };
    if (running < n) go(); else queue.push(go);
  }));
}

async function resolveImage(reg: Registry, o: Options, log: Log): Promise<ImageManifest> {
  const what = o.ref.canonical;
  let m = await reg.manifest(manifestKey(o.ref), what);
  if (isIndex(m)) {
    const d = selectPlatform(m, o.platform, what);
    log.info(`${what}: ${platformText(o.platform)} is ${d.digest}`);
    m = await reg.manifest(d.digest, `${what} (${platformText(o.platform)})`);
  }
  return imageManifest(m, what);
}

/** Download (bounded in parallel) and apply every layer into ROOT; the /ch files and marker last. */
async function buildImage(root: string, o: Options, reg: Registry, cache: BlobCache, img: ImageManifest,
  log: Log, signal: AbortSignal, marker: boolean): Promise<void> {
  const bar = new PullProgress(log, img.layers);
  const jobs = [() => cache.get(reg, img.config, log, () => {}, signal),
    ...img.layers.map((l, i) => () => cache.get(reg, l, log, (n) => bar.update(i, n), signal))];
  const blobs = bounded(o.jobs, jobs);
  for (const b of blobs) b.catch(() => {});   // each is awaited below; none left unhandled
  const cfg = readConfig((await blobs[0]).path, img.config.digest);
  if (cfg.platform.architecture && cfg.platform.architecture !== o.platform.architecture)
    log.warn(`image is for ${cfg.platform.os}/${cfg.platform.architecture}, not ${platformText(o.platform)}`);
  for (const s of cfg.skipped) log.warn(`ENV ${s}: value can't be written to /ch/environment (newline or NUL); skipped`);
  let whiteouts = 0;
  for (let i = 0; i < img.layers.length; i++) {
    const b = await blobs[i + 1];
    const r = await applyLayer(b.path, root, `layer ${i + 1} (${img.layers[i].digest})`, signal);
    whiteouts += r.whiteouts ?? 0;
    if (r.devices) log.warn(`layer ${i + 1}: skipped ${r.devices} device node(s)/fifo(s)`);
    bar.layer(i, b, true);
  }
  log.debug(`${whiteouts} whiteout(s) applied`);
  const files = [{ path: 'ch/environment', content: cfg.environment }, { path: 'ch/metadata.json', content: cfg.metadata }];
  if (marker) files.push({ path: MARKER, content: JSON.stringify({ tool: PROG, reference: o.ref.canonical,
    manifest: img.digest, platform: platformText(o.platform), created: new Date().toISOString() }, null, 1) + '\n' });
  finishImage(root, files);
}

/** --tar FILE: build in the storage directory, then write FILE (through a temporary beside it). */
async function writeTar(file: string, build: (root: string) => Promise<void>, storage: Storage, log: Log): Promise<void> {
  const tmpDirFd = storage.dir('tmp');
  const { tmpName, tmpFd } = makeTemp(tmpDirFd, join(storage.path, 'tmp'), 'tar');
  const out = resolve(file);
  const part = join(dirname(out), `.${basename(out)}.ch-pull-tmp.${randomBytes(6).toString('hex')}`);
  let written = false;
  try {
    const root = `/proc/self/fd/${tmpFd}/.`;
    await build(root);
    let outFd: number;
    try { outFd = openSync(part, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o644); } catch (err) {
      throw new ChError(`${file}: can't write beside it: ${fsWhy(err)}`, EXIT_FAIL);
    }
    written = true;
    let code: number | null;
    try {
      code = await new Promise<number | null>((res, rej) => {
        // The image directory is tar's fd 3 and the new file its stdout: no path in a shared
        // directory is looked up twice.
        const p = spawn('tar', ['-C', '/proc/self/fd/3/.', '--numeric-owner', '--owner=0', '--group=0', '-czf', '-', '.'],
          { stdio: ['ignore', outFd, 'pipe', tmpFd] });
        let err = '';
        p.stderr!.on('data', (d) => { err += d; });
        p.on('error', rej);
        p.on('close', (c) => { if (c !== 0) log.error(err.trim()); res(c); });
      });
    } finally {
      closeSync(outFd);
    }
    if (code !== 0) throw new ChError(`${file}: tar failed (exit ${code})`, EXIT_FAIL);
    renameSync(part, out);
    written = false;
  } finally {
    closeSync(tmpFd);
    if (written) try { unlinkSync(part); } catch { /* gone */ }
    removeOwned(tmpDirFd, tmpName, join(storage.path, 'tmp', tmpName));
    closeSync(tmpDirFd);
  }
}

async function pull(argv: string[], log: Log): Promise<number> {
  const o = await parse(argv, log);
  if (!o) return 0;
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(); };
  const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of SIGNALS) process.on(s, onSignal);
  const storage = Storage.open(storagePath());
  const cache = new BlobCache(storage);
  try {
    const reg = new Registry(o.ref, { insecure: o.insecure, log, signal: abort.signal });
    await reg.connect();
    const img = await resolveImage(reg, o, log);
    log.info(`${o.ref.canonical}: manifest ${img.digest}, ${img.layers.length} layer(s)`);
    const build = (root: string, marker: boolean) => buildImage(root, o, reg, cache, img, log, abort.signal, marker);
    if (o.tar) {
      await writeTar(o.tar, (root) => build(root, false), storage, log);
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
      dirFd = storage.dir('img');
      dir = join(storage.path, 'img');
      name = storageName(o.ref);
    }
    const target = join(dir, name);
    try {
      const r = await install(log, { dirFd, dir, name, force: o.force,
        upToDate: (m) => m.tool === PROG && m.manifest === img.digest,
        build: (root) => build(root, true) }, abort.signal);
      if (log.verbosity >= 0)
        process.stderr.write(`${PROG}[${process.pid}]: ${target}: ${r === 'current' ? 'already up to date' : 'pulled'} (${o.ref.canonical}, ${img.digest})\n`);
    } finally {
      closeSync(dirFd);
    }
    return 0;
  } catch (err) {
    if (caught) throw new ChError(`${o.ref.canonical}: interrupted by ${caught}; nothing left that looks complete`, 128 + osConstants.signals[caught]);
    throw err;
  } finally {
    cache.close();
    storage.close();
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}

const log = new Log(PROG);
void runMain(log, () => pull(process.argv.slice(2), log));

// ch-image [-s DIR] SUBCOMMAND ...: build images from Dockerfiles with no
// builder installed (build.ts), change one as fake root (modify), and manage
// the images in the storage directory ch-pull and ch-run use (list, delete,
// reset) and the build cache (gc), and push one to a registry (push.ts,
// through lib/push as ch-convert -o registry).

import { basename, join, resolve } from 'node:path';
import { constants as osConstants } from 'node:os';
import { ChError, Log, runMain } from '../util/log.js';
import { all, applyVerbosity, command, last, parseCommand, verbosityOptions, type CommandSpec, EXIT_USAGE } from '../util/cli.js';
import { INTERRUPTS } from '../util/proc.js';
import { stripToolState } from '../image/shared-install.js';
import { Builder } from './build.js';
import { push, PUSH_SPEC } from './push.js';
import { BuildCache, cacheMax } from './cache.js';
import { chFiles, configOfImage, envMap } from './config.js';
import { runFakeRoot } from './fakeroot.js';
import { copyTree, removeTree, userWritableDirs } from './snapshot.js';
import { closeStorage, deleteImage, finishTree, imageMarker, installTag, listImages, noSuchImage, openStorage,
  PROG, resetStorage, storagePath, tagDir } from './store.js';

const EXIT_FAIL = 1;

const COMMON = `The storage directory is -s DIR, else $CH_IMAGE_STORAGE, else
/var/tmp/$USER.ch (made mode 0700; refused if not yours alone): images in
STORAGE/img/NAME, where \`ch-run NAME\` finds them, the build cache in
STORAGE/build-cache.`;

const EXIT_TEXT = `Exit status:
  0    success
  1    failure: a RUN failed, a source not found or outside the context,
       a refused instruction, storage not yours, ...
  2    usage error
  130  interrupted (SIGINT; 143 SIGTERM): storage as it was, the previous
       image of TAG intact`;

const SPECS: Record<string, CommandSpec> = {
  build: {
    prog: `${PROG} build`,
    synopsis: '[-t TAG] [-f DOCKERFILE] [--build-arg K=V]... [--target STAGE] [--no-cache] [--insecure] [-q] [-v] CONTEXT',
    valueShorts: 'tf',
    description: `Build image TAG (default: CONTEXT's directory name) from DOCKERFILE (default
CONTEXT/Dockerfile), with no builder installed: RUN runs as fake root in the
image through ch-run (-w -u0 -g0 --seccomp, the image's own /etc/passwd, a
root PATH with sbin), so apt-get, dpkg -i and useradd work in Debian images.
Everything runs as you; nothing setuid is made.

FROM takes \`scratch\`, an image in storage, or a registry reference (pulled
into storage as ch-pull does); AS NAME and multi-stage builds. COPY and ADD
copy from CONTEXT (less .dockerignore), COPY --from=STAGE from an earlier
stage; a source path never leads out of its context (symlinks out are
refused; links below a copied directory are copied as links); --chown is
accepted and ignored (your files are root's inside). ADD unpacks local
tarballs through the confined extractor; URLs are refused. ENV, ARG (and the
proxy variables, from --build-arg or the environment), WORKDIR, USER, CMD,
ENTRYPOINT, LABEL, SHELL, EXPOSE, VOLUME, HEALTHCHECK and STOPSIGNAL are
supported; ONBUILD is refused. USER is recorded for ch-run; RUN stays root.

Each instruction's result is cached (keyed by the parent, the instruction,
the build arguments and, for COPY/ADD, the content copied) and reused by
later builds: each step says "cache hit" or "cache miss". The image lands in
storage as /ch/metadata.json and /ch/environment written as ch-pull writes
them, only once complete. ${COMMON}`,
    epilog: `Environment:
  CH_IMAGE_STORAGE   storage directory
  CH_IMAGE_CACHE_MAX build cache bound (default 10G; K, M, G, T)

${EXIT_TEXT}

Example: ${PROG} build -t hello --build-arg V=1 .`,
  },
  modify: {
    prog: `${PROG} modify`,
    synopsis: '[-q] [-v] IMAGE [-- CMD [ARG...]]',
    description: `Run CMD (default: /bin/sh) as fake root in image IMAGE of storage, with the
settings RUN uses (ch-run -w -u0 -g0 --seccomp, the image's /etc/passwd, its
ENV, a root PATH with sbin), and keep what it changed. The change is made
in a copy, which replaces IMAGE only if CMD exits 0. ${COMMON}`,
    epilog: `${EXIT_TEXT}\n  N    CMD's non-zero exit status (IMAGE unchanged)\n\nExample: ${PROG} modify debian -- useradd alice`,
  },
  list: { prog: `${PROG} list`, synopsis: '', description: `List the images in storage. ${COMMON}`, epilog: EXIT_TEXT },
  delete: { prog: `${PROG} delete`, synopsis: 'IMAGE...', description: `Delete images from storage. ${COMMON}`, epilog: EXIT_TEXT },
  push: PUSH_SPEC,
  reset: { prog: `${PROG} reset`, synopsis: '', description: `Remove everything in the storage directory that is yours: images, build cache, blobs. ${COMMON}`, epilog: EXIT_TEXT },
  gc: {
    prog: `${PROG} gc`, synopsis: '[--all]',
    description: `Shrink the build cache to CH_IMAGE_CACHE_MAX (default 10G), least recently
used entries first, or empty it (--all). ${COMMON}`, epilog: EXIT_TEXT,
  },
};

const USAGE = `Usage: ${PROG} [-s DIR] SUBCOMMAND [OPTION...] ARG...
Subcommands: build, modify, list, delete, push, reset, gc ('${PROG} SUBCOMMAND --help').
Build images from Dockerfiles, manage the image storage directory, push images to a registry.
  -s, --storage=DIR  storage directory (default: $CH_IMAGE_STORAGE, else /var/tmp/$USER.ch)
  -h, --help         print this help; -V, --version: the version`;

function usage(msg: string): ChError {
  return new ChError(`${msg}\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
}

/** Run WORK with an AbortSignal that SIGINT/SIGTERM/SIGHUP trigger; interrupted runs exit 128+N. */
async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const on = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(); };
  for (const s of INTERRUPTS) process.on(s, on);
  try {
    return await work(abort.signal);
  } catch (err) {
    if (caught) throw new ChError(`interrupted by ${caught}; storage left as it was`, 128 + osConstants.signals[caught]);
    throw err;
  } finally {
    for (const s of INTERRUPTS) process.off(s, on);
  }
}

async function build(argv: string[], log: Log, storage?: string): Promise<number> {
  const y = verbosityOptions(command(SPECS.build)
    .option('tag', { alias: 't', type: 'string', requiresArg: true, description: 'TAG: the image name' })
    .option('file', { alias: 'f', type: 'string', requiresArg: true, description: 'DOCKERFILE: the Dockerfile (default CONTEXT/Dockerfile)' })
    .option('build-arg', { type: 'string', requiresArg: true, description: 'K=V: a build argument (repeatable); K alone takes $K' })
    .option('target', { type: 'string', requiresArg: true, description: 'STAGE: build up to this stage' })
    .option('no-cache', { type: 'boolean', description: 'run every instruction (results are still cached)' })
    .option('insecure', { type: 'boolean', description: "FROM's registry: allow plain HTTP and unverified TLS" }));
  const a = await parseCommand(y, SPECS.build, argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const pos = all(a._);
  if (pos.length !== 1) throw usage(`build: expected one CONTEXT, got ${pos.length} argument(s)`);
  const context = pos[0];
  const buildArgs = new Map<string, string>();
  for (const kv of all(a['build-arg'])) {
    const eq = kv.indexOf('=');
    if (eq === 0) throw usage(`--build-arg '${kv}': want K=V`);
    if (eq < 0) { if (process.env[kv] !== undefined) buildArgs.set(kv, process.env[kv]!); } else buildArgs.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  const tag = last(a.tag) ?? basename(resolve(context));
  tagDir(tag);   // a usable name, before anything runs
  const file = last(a.file) ?? join(context, 'Dockerfile');
  const st = openStorage(storage);
  try {
    const state = await interruptible((signal) => new Builder(log, { tag, file, context, buildArgs, target: last(a.target),
      noCache: a['no-cache'] === true, insecure: a.insecure === true, signal }, st).build());
    if (log.verbosity >= 0) process.stderr.write(`${PROG}: built ${tag} (${tagDir(tag, st.storage.path)}; cache ${state.key.slice(0, 12)})\n`);
    return 0;
  } finally {
    closeStorage(st);
  }
}

async function modify(argv: string[], log: Log, storage?: string): Promise<number> {
  const dd = argv.indexOf('--');
  const cmd = dd >= 0 ? argv.slice(dd + 1) : ['/bin/sh'];
  const y = verbosityOptions(command(SPECS.modify));
  const a = await parseCommand(y, SPECS.modify, dd >= 0 ? argv.slice(0, dd) : argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const pos = all(a._);
  if (pos.length !== 1) throw usage(`modify: expected IMAGE [-- CMD...], got ${pos.length} argument(s) before --`);
  const tag = pos[0];
  const st = openStorage(storage);
  const cache = new BuildCache(st.storage);
  const work = cache.workDir();
  try {
    const m = imageMarker(st.imgFd, st.imgDir, tag);
    if (!m) throw noSuchImage(tag, st.storage.path);
    const dir = tagDir(tag, st.storage.path);
    const config = configOfImage(dir);
    return await interruptible(async (signal) => {
      const tree = join(work, 'tree');
      await copyTree(dir, tree, signal);
      stripToolState(tree);   // the image's own marker: a new one is written for the new directory
      const code = await runFakeRoot({ root: tree, argv: cmd, env: [...envMap(config)], cwd: config.WorkingDir || '/', scratch: work, signal });
      if (signal.aborted) throw new ChError('interrupted', 130);
      if (code !== 0) {
        log.error(`${cmd.join(' ')}: exit ${code}; ${tag} left unchanged`);
        return code;
      }
      await userWritableDirs(tree);   // removable later, as every image of ours
      const { files } = chFiles(config);
      await installTag(log, st.imgFd, st.imgDir, tag, { config, modified: new Date().toISOString(), from: m.tool },
        async (root) => {
          const { copyInto } = await import('./build.js');
          await copyInto(tree, root, signal);
          finishTree(log, root, files);
        }, signal);
      if (log.verbosity >= 0) process.stderr.write(`${PROG}: modified ${tag}\n`);
      return 0;
    });
  } finally {
    await removeTree(work).catch(() => {});
    cache.close();
    closeStorage(st);
  }
}

async function simple(name: string, argv: string[], log: Log, storage?: string): Promise<number> {
  let y = verbosityOptions(command(SPECS[name]));
  if (name === 'gc') y = y.option('all', { type: 'boolean', description: 'empty the build cache' });
  const a = await parseCommand(y, SPECS[name], argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const pos = all(a._);
  if (name !== 'delete' && pos.length) throw usage(`${name}: takes no arguments`);
  if (name === 'delete' && !pos.length) throw usage('delete: name at least one IMAGE');
  const st = openStorage(storage);
  try {
    if (name === 'list') {
      for (const t of listImages(st.imgFd)) process.stdout.write(`${t}\n`);
    } else if (name === 'delete') {
      for (const t of pos) {
        if (!(await deleteImage(log, st.imgFd, st.imgDir, t))) throw noSuchImage(t, st.storage.path);
        if (log.verbosity >= 0) process.stderr.write(`${PROG}: deleted ${t}\n`);
      }
    } else if (name === 'reset') {
      const removed = resetStorage(st.storage);
      if (log.verbosity >= 0) process.stderr.write(`${PROG}: ${st.storage.path}: removed ${removed.join(', ') || 'nothing'}\n`);
    } else {
      const cache = new BuildCache(st.storage);
      try {
        const [n, freed, kept] = await cache.gc(log, a.all === true ? 0 : cacheMax());
        if (log.verbosity >= 0) process.stderr.write(`${PROG}: build cache: removed ${n} entr${n === 1 ? 'y' : 'ies'} (${freed} bytes); ${kept} bytes kept\n`);
      } finally { cache.close(); }
    }
    return 0;
  } finally {
    closeStorage(st);
  }
}

/** ARGV's global options (-s DIR) and the subcommand with its arguments. */
function split(argv: string[]): { storage?: string; sub?: string; rest: string[] } {
  let storage: string | undefined;
  let i = 0;
  for (; i < argv.length; i++) {
    const x = argv[i];
    if (x === '-s' || x === '--storage') { if (i + 1 >= argv.length) throw usage(`${x}: needs DIR`); storage = argv[++i]; }
    else if (x.startsWith('--storage=')) storage = x.slice(10);
    else if (x.startsWith('-s') && x.length > 2) storage = x.slice(2);
    else break;
  }
  if (storage === '') throw usage('--storage: DIR must not be empty');
  return { storage, sub: argv[i], rest: argv.slice(i + 1) };
}

export async function main(argv: string[], log: Log): Promise<number> {
  const { storage, sub, rest } = split(argv);
  if (sub === undefined) throw usage('no subcommand given');
  if (sub === '-h' || sub === '--help' || sub === '-?') { process.stdout.write(`${USAGE}\n`); return 0; }
  if (sub === '-V' || sub === '--version') {
    const { version } = await import('../util/version.js');
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (storage !== undefined) process.env.CH_IMAGE_STORAGE = storagePath(storage);
  if (sub === 'build') return build(rest, log, storage);
  if (sub === 'modify') return modify(rest, log, storage);
  if (sub === 'push') return push(rest, log, storage, interruptible);
  if (SPECS[sub]) return simple(sub, rest, log, storage);
  throw usage(`unknown subcommand '${sub}' (build, modify, list, delete, push, reset, gc)`);
}

const log = new Log(PROG);
void runMain(log, () => main(process.argv.slice(2), log));

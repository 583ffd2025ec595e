// ch-convert [-i FMT] [-o FMT] SRC DST: convert an image between formats:
// a directory, a tarball (.tar, .tar.gz, .tar.xz, .tar.zst), a SquashFS file
// (.sqfs), and a builder's image (docker, podman, buildah): as input through
// ch-builder2tar, as output loaded into its storage (to-builder.ts); and, as
// input, an image in an OCI registry, pulled by ch-pull's code
// (lib/pull/pull.ts) through its blob cache; as output, pushed there by
// lib/push (to-registry.ts). Formats are inferred from the names unless given.
//
// The output is written under a temporary name beside DST (mode 0700) and
// renamed into place only when complete. DST's directory may be shared
// (/var/tmp, a project directory): nothing there is followed through a link,
// and an existing DST is replaced only if it is the caller's own (a
// directory: an image one of our tools made, shared-install.ts). No
// output has a setuid or setgid bit (docs/design.md, "No tool ever creates
// a setuid or setgid file"); a SquashFS input is unpacked into the private
// stage and walked with no-follow descriptors, its listing never read.
//
// Its parts: formats.ts (names, inference), tools.ts (the conversions),
// staging.ts (DST written beside it, locked, renamed into place),
// to-builder.ts (into a builder's storage), to-registry.ts (pushed), source.ts (what is converted;
// a registry SRC pulled), signals.ts (interrupted: nothing left).

import { statSync, type Stats } from 'node:fs';
import { resolve } from 'node:path';
import { all, applyVerbosity, command, EXIT_USAGE, last, parseCommand, type CommandSpec, verbosityOptions } from '../util/cli.js';
import { ChError, isChError, Log, runMain, why } from '../util/log.js';
import { checkReference, toBuilder } from './to-builder.js';
import { toRegistry } from './to-registry.js';
import type { BuilderName } from '../image/builder.js';
import { hostPlatform, parsePlatform } from '../pull/manifest.js';
import { parseReference } from '../pull/reference.js';
import { JOBS_DEFAULT, type PullOptions } from '../pull/pull.js';
import { requireMountPoints } from '../container/mounts.js';
import { liveHost } from '../container/host.js';
import { SQUASH_EXTS, TAR_EXTS } from '../image/names.js';
import { BUILDERS, EXIT_FAIL, FORMATS, formatOf, inferIn, inferOut, PROG, REGISTRY_PREFIX, type Format } from './formats.js';
import { interruptible } from './signals.js';
import { registryToDir, toFile } from './staging.js';
import type { Source } from './source.js';


const SPEC: CommandSpec = {
  prog: PROG,
  synopsis: '[OPTION...] SRC DST',
  valueShorts: 'ioa',
  description: `Convert image SRC to DST; formats (below) are inferred from the names unless
-i/-o say. DST appears only when complete. An existing DST is replaced only
if it is yours; a directory only if it is an image you made with ch-convert,
ch-tar2dir, ch-pull or ch-image (their marker /ch/.ch-image.json, which a
directory DST gets too), or, as Charliecloud's ch-convert, if it is empty or
looks like an image (bin, dev and usr); links are never followed. Device nodes can't be created without privilege: they are skipped.
No output has setuid or setgid bits, whatever the input and whoever runs it
(files, tarball members and SquashFS entries alike; as ch-tar2dir), nor
extended attributes. DST is made in a stage beside it,
DIR/.NAME.ch-convert-RANDOM; conversions to the same DST wait for each
other (lock file DIR/.NAME.ch-convert.lock, there only while held; another
user's is refused; CH_CONVERT_LOCK_TIMEOUT=S waits at most S seconds,
default 3600), and a stage of yours left by a killed conversion is removed
by the next one to that DST (another user's is left alone).`,
  epilog: `Formats:
  dir     a directory (an existing directory, or a name without extension)
  tar     ${TAR_EXTS.join(' ')}
  squash  ${SQUASH_EXTS.join(' ')} (mksquashfs: zstd if it has it, else
          gzip; all cores)
  docker, podman, buildah  an image of that builder, SRC or DST its name
          (never inferred: say -i or -o). As output: loaded into the
          builder's storage with the configuration in SRC's /ch/metadata.json
          (ENTRYPOINT, CMD, WORKDIR, USER, LABEL) and /ch/environment (ENV),
          files owned by root; DST gets the name only once fully loaded
  registry  an image in an OCI registry, SRC or DST a reference as
          ch-pull takes it, e.g. docker://registry:5000/team/app:v1 (inferred
          only from the docker:// prefix; with -i or -o registry the prefix
          may be left out). As input: pulled as ch-pull pulls it (see
          ch-pull --help: --arch, --platform, --insecure; credentials;
          CH_IMAGE_STORAGE), its blobs kept in ch-pull's cache; a directory
          DST is installed as ch-pull installs one (an existing one replaced
          only if one of our image tools made it, as above). As output:
          pushed, with ch-pull's credentials and --insecure, as one layer (a
          reproducible tarball: sorted, owned by root, no setuid or setgid
          bit, no xattrs; gzip, or zstd with --compress zstd), an OCI config
          made from SRC's /ch/metadata.json and /ch/environment, and an OCI
          manifest tagged DST's tag (latest if none); blobs the registry
          has already are not sent again, and an unchanged tree pushed
          again is not packed again. The layer is uploaded as it is packed;
          CH_PUSH_CHUNK_SIZE=SIZE packs it first, then sends it in chunks of
          SIZE (0: in one request)

Exit status:
  0  converted
  1  failure: SRC unreadable or not of its format, DST not yours or not
     writable, a tool (tar, mksquashfs, unsquashfs, ch-builder2tar) failed,
     the builder missing or not working, the lock on DST not yours or held
     too long, the registry unreachable or
     without the image or tag (any of ch-pull's failures), or refusing the
     push (credentials, a read-only registry)
  2  usage error: unknown option, missing value, not two arguments, unknown
     format or extension, DST not an image name for a builder output, a
     bad registry reference (a digest as registry DST), --arch/--platform
     without a registry SRC, --insecure without a registry SRC or DST,
     --compress without a registry DST
  128+N  interrupted by signal N (SIGINT, SIGTERM, SIGHUP); DST as it was,
     no temporary left`,
};

export async function convert(argv: string[], log: Log): Promise<number> {
  const y = verbosityOptions(command(SPEC)
    .option('in-fmt', { alias: 'i', type: 'string', requiresArg: true, description: `FMT: input format: ${FORMATS.join(', ')} (default: from SRC)` })
    .option('out-fmt', { alias: 'o', type: 'string', requiresArg: true, description: `FMT: output format: ${FORMATS.join(', ')} (default: from DST)` })
    .option('arch', { alias: 'a', type: 'string', requiresArg: true, description: 'ARCH: registry SRC: the architecture to pull (as ch-pull --arch)' })
    .option('platform', { type: 'string', requiresArg: true, description: 'OS/ARCH: registry SRC: the platform to pull (as ch-pull --platform)' })
    .option('insecure', { type: 'boolean', description: 'registry SRC or DST: allow plain HTTP and unverified TLS certificates (as ch-pull --insecure)' })
    .option('compress', { type: 'string', requiresArg: true, description: 'gzip|zstd: registry DST: the layer\'s compression (default gzip)' }));
  const a = await parseCommand(y, SPEC, argv);
  if (!a) return 0;
  applyVerbosity(log, a);
  const arch = last(a.arch), plat = last(a.platform);
  const inArg = last(a['in-fmt']), outArg = last(a['out-fmt']);
  let inFmt: Format | null = inArg === undefined ? null : formatOf(inArg, '-i');
  let outFmt: Format | null = outArg === undefined ? null : formatOf(outArg, '-o');
  const pos = all(a._);
  if (pos.length !== 2) throw new ChError(`expected SRC and DST, got ${pos.length} argument(s)\nTry '${PROG} --help' for more information.`, EXIT_USAGE);
  const [srcArg, dstArg] = pos;
  if (dstArg === '' || srcArg === '') throw new ChError('SRC and DST must not be empty', EXIT_USAGE);
  inFmt ??= inferIn(srcArg);
  outFmt ??= inferOut(dstArg);
  let pullOpts: PullOptions | undefined;
  if (inFmt === 'registry') {
    if (arch !== undefined && plat !== undefined) throw new ChError('give either --arch or --platform, not both', EXIT_USAGE);
    pullOpts = { ref: parseReference(srcArg.startsWith(REGISTRY_PREFIX) ? srcArg.slice(REGISTRY_PREFIX.length) : srcArg),
      platform: arch !== undefined ? parsePlatform(arch, true) : plat !== undefined ? parsePlatform(plat, false) : hostPlatform(),
      insecure: a.insecure === true, jobs: JOBS_DEFAULT };
  } else {
    for (const [opt, v] of [['--arch', arch], ['--platform', plat], ...(outFmt === 'registry' ? [] : [['--insecure', a.insecure]])] as const)
      if (v !== undefined && v !== false) throw new ChError(`${opt}: only for a registry SRC (-i registry, or ${REGISTRY_PREFIX}REF)`
        + `${opt === '--insecure' ? ' or DST (-o registry)' : ''}`, EXIT_USAGE);
  }
  const compress = last(a.compress);
  if (compress !== undefined && outFmt !== 'registry') throw new ChError(`--compress: only for a registry DST (-o registry, or ${REGISTRY_PREFIX}REF)`, EXIT_USAGE);
  if (compress !== undefined && compress !== 'gzip' && compress !== 'zstd') throw new ChError(`--compress '${compress}': want gzip or zstd`, EXIT_USAGE);
  const pushRef = outFmt === 'registry' ? parseReference(dstArg.startsWith(REGISTRY_PREFIX) ? dstArg.slice(REGISTRY_PREFIX.length) : dstArg) : undefined;
  if (pushRef?.digest) throw new ChError(`${dstArg}: push to a tag, not a digest (a digest names content, not a place)`, EXIT_USAGE);
  const src = BUILDERS.has(inFmt) ? srcArg : pullOpts ? pullOpts.ref.canonical : resolve(srcArg);
  if (BUILDERS.has(outFmt)) checkReference(outFmt as BuilderName, dstArg);
  if (!BUILDERS.has(inFmt) && !pullOpts) checkSource(src, inFmt);
  if (inFmt === 'dir' && (outFmt === 'dir' || outFmt === 'squash')) checkRunnable(src, dstArg);
  return interruptible((signal) => {
    const from: Source = { fmt: inFmt!, path: src, pull: pullOpts, signal };
    if (BUILDERS.has(outFmt!)) return toBuilder(log, from, outFmt as BuilderName, dstArg);
    if (pushRef) return toRegistry(log, from, { ref: pushRef, insecure: a.insecure === true, compression: compress as 'gzip' | 'zstd' | undefined });
    if (pullOpts && outFmt === 'dir') return registryToDir(log, from, pullOpts, dstArg);
    return toFile(log, from, outFmt!, dstArg);
  });
}

function checkSource(src: string, fmt: Format): void {
  let st: Stats;
  try { st = statSync(src); } catch (err) { throw new ChError(`can't read ${src}: ${why(err)}`, EXIT_FAIL); }
  if (fmt === 'dir' ? !st.isDirectory() : !st.isFile())
    throw new ChError(`${src}: not a ${fmt === 'dir' ? 'directory' : 'regular file'} (format ${fmt})`, EXIT_FAIL);
}

/**
 * A directory SRC converted to what ch-run runs as it is (a directory, a
 * .sqfs) must pass ch-run's own check: otherwise DST would be written, then
 * refused at every launch. (A tarball is left alone: ch-tar2dir makes the
 * mount points; a builder makes its own.)
 */
function checkRunnable(src: string, dst: string): void {
  try { requireMountPoints(liveHost(), src); } catch (err) {
    if (!isChError(err)) throw err;
    throw new ChError(`${err.message}; ch-run would refuse ${dst}, so it is not written`, EXIT_FAIL);
  }
}

const log = new Log(PROG);
void runMain(log, () => convert(process.argv.slice(2), log));
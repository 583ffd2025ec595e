// ch-convert -o docker|podman|buildah: put a flattened image into a builder's
// storage with its configuration (ENTRYPOINT, CMD, ENV, WORKDIR, USER,
// LABEL), taken from the tree's /ch/metadata.json and /ch/environment
// (lib/image/metadata.ts, which also makes the config a push sends).
//
// The image goes in as a docker-archive (what `docker save` writes: one
// layer, a config, a manifest), loaded by the builder's own `load` (`buildah
// pull docker-archive:`). The config is JSON we write, so no value passes
// through Dockerfile syntax (`import --change 'ENV A=$B'` would expand $B,
// quote and split). Atomic as the user sees it: the archive is loaded under a
// random temporary name, and only a complete image is tagged with the
// target name; on any failure the temporary name is removed and the target
// name is untouched.

import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChError, type Log, why } from '../util/log.js';
import { probe, type BuilderName } from '../image/builder.js';
import { imageConfig, metadataOf, type Metadata } from '../image/metadata.js';
import { PROG } from './formats.js';
import { checkInterrupted } from './signals.js';
import { pullTree, type Source } from './source.js';
import { produce } from './tools.js';
import { withWorkDir } from './workdir.js';

const EXIT_FAIL = 1;
const EXIT_USAGE = 2;

// A reference as docker and podman accept it: [HOST[:PORT]/]PATH[:TAG],
// PATH lowercase components joined by '/'. No digest: a digest names content,
// not a place to put it.
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
// HOST is a first component with a '.' or a port, or "localhost" (else it is
// part of PATH, and lowercase).
const HOST = '(?:localhost|[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+(?=:))(?::[0-9]+)?';
const REFERENCE = new RegExp(`^(?:${HOST}/)?${COMPONENT}(?:/${COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`);

/** DST must be an image reference: checked before any work (exit 2 if not). */
export function checkReference(builder: BuilderName, dst: string): void {
  if (!REFERENCE.test(dst) || dst.length > 255)
    throw new ChError(`-o ${builder}: '${dst}' is not an image name (NAME[:TAG], lowercase; no digest)`, EXIT_USAGE);
}

/** The builder must be there and working (docker: its daemon too). */
export function checkBuilder(builder: BuilderName): void {
  const p = probe(builder);
  if (!p.ok) throw new ChError(`-o ${builder}: ${builder} unusable: ${p.why}`, EXIT_FAIL);
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 1 << 20 }).on('error', reject).on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')));
  });
}

function run(log: Log, argv: string[], what: string): string {
  log.debug(`running: ${argv.join(' ')}`);
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.error) throw new ChError(`${what}: can't run ${argv[0]}: ${why(r.error)}`, EXIT_FAIL);
  if (r.status !== 0) {
    const err = (r.stderr ?? '').trim().split('\n').slice(-3).join('; ');
    throw new ChError(`${what}: ${argv.slice(0, 2).join(' ')} failed (${r.signal ?? `exit ${r.status}`})${err ? `: ${err}` : ''}`, EXIT_FAIL);
  }
  return r.stdout;
}

/**
 * Write TREE as a docker-archive at WORK/image.tar, tagged TAG, its files
 * owned by root (an image for a builder, as `ch-image push` makes them),
 * with no setuid or setgid bit (no conversion of ours makes such a file).
 */
async function dockerArchive(log: Log, tree: string, meta: Metadata, tag: string, work: string): Promise<string> {
  const dir = join(work, 'archive');
  mkdirSync(dir, { mode: 0o700 });
  const layerTmp = join(work, 'layer.tar');
  run(log, ['tar', '--create', '--file', layerTmp, '--directory', tree, '--numeric-owner', '--owner=0', '--group=0', '--mode=ug-s', '.'],
    `can't pack ${tree}`);
  const diffId = await sha256File(layerTmp);
  mkdirSync(join(dir, diffId));
  renameSync(layerTmp, join(dir, diffId, 'layer.tar'));
  const created = new Date().toISOString();
  const config = imageConfig(meta, [`sha256:${diffId}`], { created, createdBy: `ch-convert ${tree}` });
  const text = JSON.stringify(config);
  const configName = `${createHash('sha256').update(text).digest('hex')}.json`;
  writeFileSync(join(dir, configName), text);
  writeFileSync(join(dir, 'manifest.json'),
    JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: [`${diffId}/layer.tar`] }]));
  const archive = join(work, 'image.tar');
  run(log, ['tar', '--create', '--file', archive, '--directory', dir, 'manifest.json', configName, diffId],
    'can\'t write the docker-archive');
  return archive;
}

/**
 * Load TREE into BUILDER's storage as DST. The tree is read as it is (the
 * caller made it from SRC); WORK is a private scratch directory.
 */
export async function treeToBuilder(log: Log, builder: BuilderName, tree: string, dst: string, work: string): Promise<void> {
  const meta = metadataOf(tree, log);
  const tmp = `localhost/ch-convert-tmp-${process.pid}-${randomBytes(6).toString('hex')}:latest`;
  const archive = await dockerArchive(log, tree, meta, tmp, work);
  const load = builder === 'buildah' ? ['buildah', 'pull', '-q', `docker-archive:${archive}`]
    : [builder, 'load', '-q', '-i', archive];
  let loaded = false;
  try {
    log.info(`loading into ${builder} as ${tmp}`);
    run(log, load, `can't load the image into ${builder}`);
    loaded = true;
    run(log, [builder, 'tag', tmp, dst], `can't name the image ${dst}`);
  } finally {
    // The temporary name goes in every case (a load that failed late may
    // have made it); the image itself stays only under DST.
    const r = spawnSync(builder, ['rmi', tmp], { stdio: 'ignore' });
    if (loaded && r.status !== 0) log.warn(`can't remove temporary image name ${tmp}: ${builder} rmi failed`);
  }
}

/** SRC into BUILDER's storage as image DST: through a directory tree, unless SRC is one. */
export async function toBuilder(log: Log, from: Source, builder: BuilderName, dst: string): Promise<number> {
  const { fmt: inFmt, path: src } = from;
  checkBuilder(builder);
  await withWorkDir(log, async (work) => {
    let tree = src;
    if (from.pull) {
      tree = await pullTree(log, from, join(work, 'tree'));
    } else if (inFmt !== 'dir') {
      tree = join(work, 'tree');
      mkdirSync(tree, { mode: 0o755 });
      await produce(log, inFmt, src, 'dir', tree, 'tree', work);
    }
    log.info(`converting ${src} (${inFmt}) to ${dst} (${builder})`);
    await checkInterrupted(from.signal);
    await treeToBuilder(log, builder, tree, dst, work);
  });
  if (log.verbosity >= 0) process.stderr.write(`${PROG}[${process.pid}]: ${dst}: written (${builder})\n`);
  return 0;
}

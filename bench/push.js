#!/usr/bin/env node
// bench/push: ch-convert DIR docker://REF (lib/push: pack the tree, gzip,
// upload) against `skopeo copy oci:LAYOUT docker://REF` of the same image,
// to the same loopback registry (Debian's docker-registry), in one run.
// skopeo starts from an OCI layout holding the tree as one uncompressed tar
// layer (made once, not timed; skopeo gzips it on the way, as ch-convert
// does); the time GNU tar takes to make that layer is shown apart, so
// "tar + skopeo" is the whole job from a directory. Cold: a new repository
// each run (every blob uploaded); warm: the same repository again (blobs
// found by HEAD, not sent). Each figure is the median of RUNS interleaved
// runs; both are timed as whole commands (process start-up included).
// skopeo runs as the bench user (CH_BENCH_USER) with a fresh HOME per
// repository: root's skopeo shares /var/lib/containers/cache, whose record
// of where each blob went would make a "cold" push a cross-repository mount.
//
//   node bench/push.js [--runs N] [--tree DIR]
//
// The tree: the debootstrap image the tests cache (CH_TEST_CACHE), else DIR.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addImage, startRegistry, writeLayout } from '../test/helpers/registry.js';
import { isRoot, median, opt, repo, userPrefix } from './common.js';

const RUNS = opt('--runs', 3);
const i = process.argv.indexOf('--tree');
const tree = i > 0 ? process.argv[i + 1] : join(process.env.CH_TEST_CACHE ?? '/var/tmp/ch-toolkit-cache', 'debian-bookworm');
if (!existsSync(tree)) {
  console.error(`no tree at ${tree}: run test/setup.js (debootstrap) or pass --tree DIR`);
  process.exit(1);
}
// Readable by the bench user (skopeo reads the layout from here).
const work = `/var/tmp/ch-bench-push-${process.pid}`;
mkdirSync(work, { recursive: true, mode: 0o755 });

function timed(argv, env = {}) {
  execFileSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env: { ...process.env, HOME: work, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return s;
}

// ---- skopeo's input: the tree as one uncompressed layer in an OCI layout ----
const layerTar = join(work, 'layer.tar');
const tarArgs = ['--create', '--file', layerTar, '--directory', tree, '--sort=name', '--numeric-owner', '--owner=0', '--group=0', '.'];
const tarTimes = [];
for (let k = 0; k < RUNS; k++) tarTimes.push(timed(['tar', ...tarArgs]));
const lay = join(work, 'layout');
writeLayout(lay, 'v1', [addImage(lay, { layers: [readFileSync(layerTar)], gzip: false,
  arch: { x64: 'amd64', arm64: 'arm64' }[process.arch] ?? process.arch, config: { Cmd: ['/bin/bash'] } })]);
rmSync(layerTar);

const reg = await startRegistry(join(work, 'registry'));
const storage = join(work, 'storage');
console.log(`tree ${tree} -> ${reg.host}; ${RUNS} runs each\n`);
const chPush = (name) => timed([process.execPath, join(repo, 'bin', 'ch-convert'), '-q', tree, `docker://${reg.host}/${name}:v1`],
  { CH_IMAGE_STORAGE: storage });
const skopeo = (name) => {
  const home = join(work, `home-${name.replace('/', '-')}`);
  mkdirSync(home, { recursive: true });
  if (isRoot) execFileSync('chown', [userPrefix()[1].split('=')[1], home]);
  return timed([...userPrefix(), 'skopeo', 'copy', '-q', '--dest-tls-verify=false', `oci:${lay}:v1`, `docker://${reg.host}/${name}:v1`],
    { HOME: home, XDG_RUNTIME_DIR: home, XDG_DATA_HOME: join(home, 'data') });
};

const t = { chCold: [], chWarm: [], skCold: [], skWarm: [] };
for (let k = 0; k < RUNS; k++) {
  t.chCold.push(chPush(`bench/ch${k}`));
  t.skCold.push(skopeo(`bench/sk${k}`));
  t.chWarm.push(chPush(`bench/ch${k}`));
  t.skWarm.push(skopeo(`bench/sk${k}`));
}
const m = (k) => median(t[k]);
const tarS = median(tarTimes);
console.log(`tar of the tree (skopeo's layer, untimed below): ${tarS.toFixed(2)} s`);
console.log(`cold: ch-convert ${m('chCold').toFixed(2)} s, skopeo ${m('skCold').toFixed(2)} s, tar + skopeo ${(tarS + m('skCold')).toFixed(2)} s`
  + ` (x${((tarS + m('skCold')) / m('chCold')).toFixed(2)})`);
console.log(`warm: ch-convert ${m('chWarm').toFixed(2)} s, skopeo ${m('skWarm').toFixed(2)} s, tar + skopeo ${(tarS + m('skWarm')).toFixed(2)} s`
  + ` (x${((tarS + m('skWarm')) / m('chWarm')).toFixed(2)})`);
const layerSize = async (name) => (await (await fetch(`http://${reg.host}/v2/${name}/manifests/v1`,
  { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()).layers[0].size;
console.log(`layer sent: ch-convert ${((await layerSize('bench/ch0')) / 1048576).toFixed(1)} MiB (zlib level 4),`
  + ` skopeo ${((await layerSize('bench/sk0')) / 1048576).toFixed(1)} MiB`);
console.log('\n(xN: (tar + skopeo) time / ch-convert time; > 1 means ch-convert is faster)');
await reg.stop();
rmSync(work, { recursive: true, force: true });

#!/usr/bin/env node
// bench/pull: ch-pull against `skopeo copy` to an OCI layout followed by GNU
// tar extracting its layers in order, the same multi-layer image from the
// same loopback registry (Debian's docker-registry), in one run; cold cache
// (nothing downloaded yet) and warm (blobs already local: ch-pull's cache,
// skopeo's existing layout). Each figure is the median of RUNS interleaved
// runs, with `sync` before each.
//
//   node bench/pull.js [--runs N] [--tree DIR] [--fs tmpfs|disk]
//
// The image: the debootstrap tree the tests cache (CH_TEST_CACHE), else DIR,
// split into three gzip layers (usr/; the rest; a small top layer with a
// whiteout). GNU tar ignores whiteouts (it would need a post-pass): it does
// strictly less work than ch-pull, which also verifies every digest. Both
// are timed as whole commands (process start-up included).

import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { push, startRegistry, tarOf, writeLayout } from '../test/helpers/registry.js';
import { median } from './common.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const RUNS = Number(opt('--runs', 3));
const only = opt('--fs', null);
const cache = process.env.CH_TEST_CACHE ?? '/var/tmp/ch-toolkit-cache';
const tree = opt('--tree', join(cache, 'debian-bookworm'));
if (!existsSync(tree)) {
  console.error(`no tree at ${tree}: run test/setup.js (debootstrap) or pass --tree DIR`);
  process.exit(1);
}
const work = join(repo, '.bench', `pull-${process.pid}`);
const targets = { tmpfs: `/dev/shm/ch-bench-pull-${process.pid}`, disk: join(work, 'out') };
mkdirSync(work, { recursive: true });

// ---- the image: three layers in an OCI layout, pushed once ----
const sha = (b) => createHash('sha256').update(b).digest('hex');
const lay = join(work, 'layout');
mkdirSync(join(lay, 'blobs', 'sha256'), { recursive: true });
function gzLayer(members) {
  const tmp = join(work, 'layer.tar.gz');
  execFileSync('tar', ['-C', tree, '--numeric-owner', '-czf', tmp, ...members]);
  const data = readFileSync(tmp);
  writeFileSync(join(lay, 'blobs', 'sha256', sha(data)), data);
  return data;
}
console.log(`making layers of ${tree} ...`);
const top = readdirSync(tree).filter((e) => e !== 'usr');
const l1 = gzLayer(['usr']);
const l2 = gzLayer(top);
const l3 = tarOf([{ name: 'etc/.wh.motd', data: '' }, { name: 'etc/bench', data: 'top layer\n' }]);
const blob = (b) => { writeFileSync(join(lay, 'blobs', 'sha256', sha(b)), b); return { digest: `sha256:${sha(b)}`, size: b.length }; };
const l3gz = gzipSync(l3);
blob(l3gz);
const config = Buffer.from(JSON.stringify({ architecture: { x64: 'amd64', arm64: 'arm64' }[process.arch] ?? process.arch, os: 'linux',
  config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/bash'] },
  rootfs: { type: 'layers', diff_ids: [l1, l2, l3gz].map((g) => `sha256:${sha(gunzipSync(g))}`) } }));
const man = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...blob(config) },
  layers: [l1, l2, l3gz].map((d) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha(d)}`, size: d.length })) };
const mb = Buffer.from(JSON.stringify(man));
writeLayout(lay, 'v1', [{ mediaType: man.mediaType, ...blob(mb) }]);
const reg = await startRegistry(join(work, 'registry'));
await push(reg, lay, 'v1', 'bench/debian');
const ref = `${reg.host}/bench/debian:v1`;
console.log(`image ${ref}: layers ${man.layers.map((l) => (l.size / 1e6).toFixed(1) + ' MB').join(', ')}; ${RUNS} runs each\n`);

function timed(argv, env = {}) {
  execFileSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return s;
}

function chPull(dest, storage) {
  return timed([process.execPath, join(repo, 'bin', 'ch-pull'), '-q', ref, dest], { CH_IMAGE_STORAGE: storage });
}

/** skopeo copy into LAYOUT (reusing its blobs if present), then tar -xzf each layer in manifest order. */
function skopeoTar(layout, dest) {
  execFileSync('sync');
  const t0 = process.hrtime.bigint();
  execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${ref}`, `oci:${layout}:v1`], { env: { ...process.env, HOME: work } });
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const d = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'v1').digest;
  const m = JSON.parse(readFileSync(join(layout, 'blobs', 'sha256', d.slice(7)), 'utf8'));
  mkdirSync(dest, { recursive: true });
  for (const l of m.layers) execFileSync('tar', ['-C', dest, '--no-same-owner', '-xzf', join(layout, 'blobs', 'sha256', l.digest.slice(7))]);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const results = [];
for (const [fs, base] of Object.entries(targets)) {
  if (only && only !== fs) continue;
  const t = { chCold: [], chWarm: [], skCold: [], skWarm: [] };
  for (let i = 0; i < RUNS; i++) {
    rmSync(base, { recursive: true, force: true });
    mkdirSync(base, { recursive: true });
    const storage = join(work, `storage-${fs}-${i}`), layout = join(work, `oci-${fs}-${i}`);
    t.chCold.push(chPull(join(base, 'ch-cold'), storage));
    t.skCold.push(skopeoTar(layout, join(base, 'sk-cold')));
    t.chWarm.push(chPull(join(base, 'ch-warm'), storage));
    t.skWarm.push(skopeoTar(layout, join(base, 'sk-warm')));
    rmSync(storage, { recursive: true, force: true });
    rmSync(layout, { recursive: true, force: true });
  }
  const row = (k) => median(t[k]).toFixed(2);
  results.push(`${fs.padEnd(6)} cold: ch-pull ${row('chCold')} s, skopeo+tar ${row('skCold')} s (x${(median(t.skCold) / median(t.chCold)).toFixed(2)})`
    + `   warm: ch-pull ${row('chWarm')} s, skopeo+tar ${row('skWarm')} s (x${(median(t.skWarm) / median(t.chWarm)).toFixed(2)})`);
  console.log(results.at(-1));
  rmSync(base, { recursive: true, force: true });
}
await reg.stop();
rmSync(work, { recursive: true, force: true });
console.log('\n(xN: skopeo+tar time / ch-pull time; > 1 means ch-pull is faster)');

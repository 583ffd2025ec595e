#!/usr/bin/env node
// bench/pull: ch-pull against `skopeo copy` to an OCI layout followed by GNU
// tar extracting its layers in order, the same multi-layer image from the
// same loopback registry (Debian's docker-registry), in one run; cold cache
// (nothing downloaded yet) and warm (blobs already local: ch-pull's cache,
// skopeo's existing layout). Each figure is the median of RUNS interleaved
// runs, with `sync` before each, the tools taking turns to go first; also
// the median of each run's own ratio. On disk every tree stays until the
// last run, and what a file creation costs there is printed before and
// after: on ext4 without a journal (this machine's), files removed in the
// last minutes slow every creation (bench/common.js fileCreation); the disk
// runs wait (up to 7 minutes) until it is back to normal, unless --no-settle.
//
//   node bench/pull.js [--runs N] [--tree DIR] [--fs tmpfs|disk|link] [--link DELAY_MS,MBIT] [--baseline PKG] [--no-settle]
//
// link: onto tmpfs, but through a slow link to the registry (bench/slowlink.js,
// a relay with a one-way delay and a bandwidth per direction; default 10 ms,
// 200 Mbit/s), where a pull's time is the download's, and what the unpacking
// adds to it shows. (`tc netem` in a network namespace would be the kernel's
// way: it needs root and CONFIG_NET_SCH_NETEM, which this machine's kernel
// lacks; the relay needs neither.)
// --baseline PKG: also time PKG/bin/ch-pull (an older build of ch-toolkit,
// e.g. `git archive REV | tar -x -C PKG` then `node tools/build.js` there),
// for a before/after in the same run.
//
// The image: the debootstrap tree the tests cache (CH_TEST_CACHE), else DIR,
// split into three gzip layers (usr/; the rest; a small top layer with a
// whiteout). GNU tar ignores whiteouts (it would need a post-pass): it does
// strictly less work than ch-pull, which also verifies every digest. Both
// are timed as whole commands (process start-up included).

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { push, startRegistry, tarOf, writeLayout } from '../test/helpers/registry.js';
import { fileCreation, median, settledCreation } from './common.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const RUNS = Number(opt('--runs', 3));
const only = opt('--fs', null);
const [linkDelay, linkMbit] = opt('--link', '10,200').split(',').map(Number);
const baseline = opt('--baseline', null);
const cache = process.env.CH_TEST_CACHE ?? '/var/tmp/ch-toolkit-cache';
const tree = opt('--tree', join(cache, 'debian-bookworm'));
if (!existsSync(tree)) {
  console.error(`no tree at ${tree}: run test/setup.js (debootstrap) or pass --tree DIR`);
  process.exit(1);
}
const work = join(repo, '.bench', `pull-${process.pid}`);
const targets = { tmpfs: `/dev/shm/ch-bench-pull-${process.pid}`, disk: join(work, 'out'), link: `/dev/shm/ch-bench-pull-link-${process.pid}` };
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
const directRef = `${reg.host}/bench/debian:v1`;
console.log(`image ${directRef}: layers ${man.layers.map((l) => (l.size / 1e6).toFixed(1) + ' MB').join(', ')}; ${RUNS} runs each\n`);
let ref = directRef;

/** The slow link (bench/slowlink.js) in front of the registry: {ref, stop()}. */
async function slowLink() {
  const p = spawn(process.execPath, [join(repo, 'bench', 'slowlink.js'), String(reg.port), String(linkDelay), String(linkMbit)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((res) => p.stdout.once('data', (d) => res(Number(String(d).trim()))));
  return { ref: `127.0.0.1:${port}/bench/debian:v1`, stop: () => p.kill() };
}

function timed(argv, env = {}) {
  execFileSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return s;
}

function chPull(dest, storage, pkg = repo) {
  return timed([process.execPath, join(pkg, 'bin', 'ch-pull'), '-q', ref, dest], { CH_IMAGE_STORAGE: storage });
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

/** XS rotated left by N. */
const rotate = (xs, n) => xs.map((_, k) => xs[(k + n) % xs.length]);

const results = [];
for (const [fs, base] of Object.entries(targets)) {
  if (only && only !== fs) continue;
  const link = fs === 'link' ? await slowLink() : null;
  if (fs === 'disk') {
    mkdirSync(base, { recursive: true });
    const c = await settledCreation(base);
    console.log(`disk (${base}): file creation at the start: ${c}`);
  }
  ref = link?.ref ?? directRef;
  const t = { chCold: [], chWarm: [], skCold: [], skWarm: [], ...(baseline ? { baseCold: [], baseWarm: [] } : {}) };
  for (let i = 0; i < RUNS; i++) {
    // On disk, every run's trees stay until the last run is done: a removed
    // tree would slow the next run's file creations (fileCreation, bench/common.js).
    const out = fs === 'disk' ? join(base, `run-${i}`) : base;
    if (fs !== 'disk') rmSync(base, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    const storage = join(work, `storage-${fs}-${i}`), layout = join(work, `oci-${fs}-${i}`), bstore = join(work, `base-${fs}-${i}`);
    // Who goes first turns each run: on a disk whose writeback slows as a
    // run goes on (this machine's: a second 500 MB write takes 7x the first),
    // a fixed order would favour whoever always went first.
    const order = [
      () => t.chCold.push(chPull(join(out, 'ch-cold'), storage)),
      () => t.skCold.push(skopeoTar(layout, join(out, 'sk-cold'))),
      ...(baseline ? [() => t.baseCold.push(chPull(join(out, 'base-cold'), bstore, baseline))] : []),
    ];
    const warm = [
      () => t.chWarm.push(chPull(join(out, 'ch-warm'), storage)),
      () => t.skWarm.push(skopeoTar(layout, join(out, 'sk-warm'))),
      ...(baseline ? [() => t.baseWarm.push(chPull(join(out, 'base-warm'), bstore, baseline))] : []),
    ];
    for (const step of [...rotate(order, i), ...rotate(warm, i)]) step();
    for (const d of [storage, layout, bstore]) rmSync(d, { recursive: true, force: true });
    if (fs !== 'disk') rmSync(base, { recursive: true, force: true });
  }
  link?.stop();
  if (fs === 'disk') {
    console.log(`  file creation at the end: ${fileCreation(base)}`);
    rmSync(base, { recursive: true, force: true });
  }
  const m = (k) => median(t[k]);
  // Where the machine drifts during a run (this VM's disk), a run's two
  // figures, taken seconds apart, compare better than two medians.
  const paired = (a, b) => median(t[a].map((x, i) => x / t[b][i])).toFixed(2);
  const row = (k) => m(k).toFixed(2);
  const name = fs === 'link' ? `link (${linkDelay} ms, ${linkMbit} Mbit/s)` : fs;
  results.push(`${name}\n  cold: ch-pull ${row('chCold')} s, skopeo+tar ${row('skCold')} s: ch-pull/skopeo+tar ${(m('chCold') / m('skCold')).toFixed(2)}x`
    + (baseline ? `; baseline ch-pull ${row('baseCold')} s (${(m('baseCold') / m('skCold')).toFixed(2)}x)` : '')
    + `\n  warm: ch-pull ${row('chWarm')} s, skopeo+tar ${row('skWarm')} s: ch-pull/skopeo+tar ${(m('chWarm') / m('skWarm')).toFixed(2)}x`
    + (baseline ? `; baseline ch-pull ${row('baseWarm')} s (${(m('baseWarm') / m('skWarm')).toFixed(2)}x)` : '')
    + `\n  paired (each run's ch-pull over the skopeo+tar beside it, median): cold ${paired('chCold', 'skCold')}x, warm ${paired('chWarm', 'skWarm')}x`
    + `\n  all runs: ${Object.entries(t).map(([k, v]) => `${k} [${v.map((x) => x.toFixed(2)).join(' ')}]`).join('  ')}`);
  console.log(results.at(-1));
}
await reg.stop();
rmSync(work, { recursive: true, force: true });
console.log('\n(ch-pull/skopeo+tar < 1 means ch-pull is faster)');

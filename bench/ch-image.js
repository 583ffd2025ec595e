#!/usr/bin/env node
// bench/ch-image: `ch-image build` against `podman build --isolation=chroot`
// of the same Dockerfile on the same base (the debootstrap'd Debian tree the
// tests cache), in one run: cold (no build cache: ch-image's emptied with
// `gc --all`, podman's --no-cache) and warm (a rebuild, every step cached).
// The base is already local to both (ch-image's storage, pulled once from a
// loopback registry; podman's, imported once): only the build is timed.
// ch-image runs as the bench user (CH_BENCH_USER, its use case: no
// privilege), podman as root (rootless podman needs subuid set up).
//
//   node bench/ch-image.js [--runs N]

import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { push, startRegistry, writeLayout, addImage } from '../test/helpers/registry.js';
import { isRoot, median, opt, repo, userPrefix } from './common.js';

const RUNS = opt('--runs', 3);
const cache = process.env.CH_TEST_CACHE ?? '/var/tmp/ch-toolkit-cache';
const tree = join(cache, 'debian-bookworm');
if (!isRoot) { console.error('run as root (podman builds as root; ch-image as CH_BENCH_USER)'); process.exit(1); }
if (!existsSync(tree)) { console.error(`no Debian tree at ${tree}: run test/setup.js first`); process.exit(1); }
const work = `/var/tmp/ch-bench-image-${process.pid}`;
mkdirSync(work, { mode: 0o755 });
const as = userPrefix();
const uid = Number(as[1]?.split('=')[1] ?? process.getuid());

// ---- the base, in a loopback registry (for ch-image) and in podman's storage ----
const tarball = join(work, 'base.tar');
execFileSync('tar', ['-C', tree, '--numeric-owner', '-cf', tarball, '.']);
const { readFileSync } = await import('node:fs');
const lay = join(work, 'layout');
writeLayout(lay, 'v1', [addImage(lay, { layers: [readFileSync(tarball)], gzip: false,
  config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/bash'] } })]);
const reg = await startRegistry(join(work, 'registry'));
await push(reg, lay, 'v1', 'bench/debian');
const ref = `${reg.host}/bench/debian:v1`;
execFileSync('podman', ['import', tarball, 'localhost/chbench-base:v1'], { stdio: 'ignore' });

// ---- the context: files to COPY, a .deb to dpkg -i, a user to add, files to make ----
const ctx = join(work, 'ctx');
mkdirSync(join(ctx, 'files'), { recursive: true });
for (let i = 0; i < 200; i++) writeFileSync(join(ctx, 'files', `f${i}`), `${'x'.repeat(4096)}${i}\n`);
const pkg = join(work, 'pkg');
mkdirSync(join(pkg, 'DEBIAN'), { recursive: true });
mkdirSync(join(pkg, 'usr/share/chbench'), { recursive: true });
writeFileSync(join(pkg, 'DEBIAN/control'), 'Package: chbench\nVersion: 1.0\nArchitecture: all\nMaintainer: b <b@example.invalid>\nDescription: bench\n');
writeFileSync(join(pkg, 'usr/share/chbench/hello'), 'hello\n');
execFileSync('dpkg-deb', ['--root-owner-group', '-b', pkg, join(ctx, 'chbench.deb')], { stdio: 'ignore' });
const dockerfile = (base) => `FROM ${base}
COPY files/ /opt/files/
COPY chbench.deb /root/
RUN dpkg -i /root/chbench.deb && rm /root/chbench.deb
RUN useradd -m bench
RUN for i in $(seq 1 500); do echo $i > /opt/n$i; done
ENV APP=/opt
CMD ["/bin/bash"]
`;
writeFileSync(join(ctx, 'Dockerfile.ch'), dockerfile(ref));
writeFileSync(join(ctx, 'Dockerfile.podman'), dockerfile('localhost/chbench-base:v1'));
execFileSync('chown', ['-R', String(uid), work]);
chmodSync(work, 0o755);

const storage = join(work, 'storage');
const chEnv = { PATH: process.env.PATH, CH_IMAGE_STORAGE: storage, HOME: work };
function timed(argv, env) {
  execFileSync('sync');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'], cwd: work });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return s;
}
const chImage = (...a) => [...as, process.execPath, join(repo, 'bin', 'ch-image'), ...a];
spawnSync(chImage('build', '-q', '-t', 'chbench-warmup', '-f', join(ctx, 'Dockerfile.ch'), ctx)[0],
  chImage('build', '-q', '-t', 'chbench-warmup', '-f', join(ctx, 'Dockerfile.ch'), ctx).slice(1), { env: chEnv });   // pulls the base
const podman = (...a) => ['podman', 'build', '--isolation=chroot', '--pull=never', '-q', '-t', 'localhost/chbench:v1',
  '-f', join(ctx, 'Dockerfile.podman'), ...a, ctx];

const t = { chCold: [], chWarm: [], pdCold: [], pdWarm: [] };
for (let i = 0; i < RUNS; i++) {
  timed(chImage('gc', '-q', '--all'), chEnv);
  t.chCold.push(timed(chImage('build', '-q', '-t', 'chbench', '-f', join(ctx, 'Dockerfile.ch'), ctx), chEnv));
  t.pdCold.push(timed(podman('--no-cache'), process.env));
  t.chWarm.push(timed(chImage('build', '-q', '-t', 'chbench', '-f', join(ctx, 'Dockerfile.ch'), ctx), chEnv));
  t.pdWarm.push(timed(podman(), process.env));
}
const m = (k) => median(t[k]).toFixed(2);
console.log(`Debian base (${RUNS} runs, medians): cold: ch-image ${m('chCold')} s, podman ${m('pdCold')} s`
  + `   warm: ch-image ${m('chWarm')} s, podman ${m('pdWarm')} s`);
await reg.stop();
spawnSync('podman', ['rmi', '-f', 'localhost/chbench:v1', 'localhost/chbench-base:v1'], { stdio: 'ignore' });
spawnSync('podman', ['image', 'prune', '-f'], { stdio: 'ignore' });
rmSync(work, { recursive: true, force: true });

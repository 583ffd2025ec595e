#!/usr/bin/env node
// bench/tar2dir: ch-tar2dir against GNU tar on the same Debian-sized tarball,
// on tmpfs and on disk, ratios from one run (each measurement is the median
// of RUNS interleaved runs, with `sync` before each so one run's writeback
// doesn't land on the next). On disk every tree stays until the last run,
// and what a file creation costs there is printed before and after
// (bench/common.js fileCreation: removed files slow it on ext4 without a
// journal); the disk runs first wait until it is normal, unless --no-settle.
//
//   node bench/tar2dir.js [--runs N] [--tree DIR] [--fs tmpfs|disk] [--keep-env] [--baseline-build DIR] [--no-settle]
//
// --baseline-build DIR: also time ch-tar2dir .tar.gz with the native files in
// DIR (CH_TOOLKIT_BUILD_DIR), e.g. a build without ISA-L
// (CH_TOOLKIT_WITHOUT=isal), for a before/after in the same run.
//
// Tree: the debootstrap image the tests cache (CH_TEST_CACHE), else DIR.
// GNU tar runs with --no-same-owner, as it does for an unprivileged user;
// ch-tar2dir is timed as a whole command (Node start-up included).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileCreation, median, settledCreation } from './common.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const RUNS = Number(opt('--runs', 3));
const only = opt('--fs', null);   // tmpfs or disk
const baseline = opt('--baseline-build', null);
const cache = process.env.CH_TEST_CACHE ?? '/var/tmp/ch-toolkit-cache';
const tree = opt('--tree', join(cache, 'debian-bookworm'));
if (!existsSync(tree)) {
  console.error(`no tree at ${tree}: run test/setup.js (debootstrap) or pass --tree DIR`);
  process.exit(1);
}
const targets = { tmpfs: `/dev/shm/ch-bench-tar2dir-${process.pid}`, disk: join(repo, '.bench', `tar2dir-${process.pid}`) };

const work = join(repo, '.bench', `tarballs-${process.pid}`);
mkdirSync(work, { recursive: true });
const tar = join(work, 'deb.tar');
const tgz = join(work, 'deb.tar.gz');
console.log(`making tarballs of ${tree} ...`);
execFileSync('tar', ['-C', tree, '-cf', tar, '.']);
execFileSync('sh', ['-c', `gzip -6 -c '${tar}' > '${tgz}'`]);
execFileSync('sh', ['-c', `cat '${tar}' '${tgz}' > /dev/null`]);   // in page cache for everyone
const files = Number(execFileSync('sh', ['-c', `tar -tf '${tar}' | wc -l`]).toString().trim());
console.log(`tarball: ${(statSync(tar).size / 1e6).toFixed(0)} MB, ${files} entries; gz ${(statSync(tgz).size / 1e6).toFixed(0)} MB; ${RUNS} runs each\n`);

// The extractor alone, in a Node process already started: what the addon
// costs without Node's start-up (~70 ms here), reported by the child itself.
// The decode on its thread or not as ch-tar2dir decides (lib/tar/native.ts).
const CORE = `import { createRequire } from 'node:module';
import { decodeThread } from ${JSON.stringify(join(repo, 'dist/tar/native.js'))};
const a = createRequire(import.meta.url)(${JSON.stringify(join(repo, 'build/Release/ch_tar.node'))});
const t0 = performance.now();
const r = await a.extract(process.argv[1], process.argv[2], { openat2: true, umask: process.umask(), progress: new ArrayBuffer(16),
  decodeThread: decodeThread() });
if (r.error) { console.error(r.error); process.exit(1); }
console.log((performance.now() - t0) / 1000);`;

// NODE_EXTRA_CA_CERTS makes every Node start-up parse a certificate bundle
// (measured here: `node -e 0` 0.06-0.07 s with it, 0.02 s without). It is an
// artefact of the machine's environment, not something ch-tar2dir needs; timed
// commands run without it unless --keep-env.
const ENV = { ...process.env };
if (!args.includes('--keep-env') && ENV.NODE_EXTRA_CA_CERTS !== undefined) {
  delete ENV.NODE_EXTRA_CA_CERTS;
  console.log('note: NODE_EXTRA_CA_CERTS removed from the timed commands\' environment (--keep-env keeps it)');
}

function timeIt(argv) {
  if (argv[0] === 'CORE') {
    spawnSync('sync');
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', CORE, argv[1], argv[2]], { encoding: 'utf8', env: ENV });
    if (r.status !== 0) throw new Error(`core extraction failed: ${r.stderr}`);
    return Number(r.stdout.trim());
  }
  spawnSync('sync');
  // CPU seconds too (user + system, children included), by GNU time where
  // there is one: on a machine shared with other work, wall times say as
  // much about the others as about the command.
  const cmd = hasTime ? ['/usr/bin/time', '-f', 'CH-BENCH-CPU %U %S', ...argv] : argv;
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0], cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: ENV, encoding: 'utf8' });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
  const m = /CH-BENCH-CPU ([0-9.]+) ([0-9.]+)/.exec(r.stderr);
  if (m) cpu.at(-1).push(Number(m[1]) + Number(m[2]));
  return s;
}
const hasTime = spawnSync('/usr/bin/time', ['-f', '%e', 'true']).status === 0;
let cpu = [];   // per case: CPU seconds of each run (whole commands only)

// pigz: what a user who cares about speed unpacks .tar.gz with (apt-get install pigz).
const hasPigz = spawnSync('pigz', ['--version']).status === 0;
if (!hasPigz) console.log('note: pigz not installed: no `tar -I pigz` figures');

const results = {};
for (const [fs, base] of Object.entries(targets)) {
  if (only && fs !== only) continue;
  mkdirSync(base, { recursive: true });
  if (fs === 'disk')
    console.log(`disk (${base}): file creation at the start: ${await settledCreation(base)}`);
  const cases = {
    'tar xf': (d) => ['tar', '--no-same-owner', '-C', d, '-xf', tar],
    'ch-tar2dir .tar': (d) => [join(repo, 'bin/ch-tar2dir'), '-q', tar, d],
    'addon only .tar': (d) => ['CORE', tar, d],
    'tar xzf': (d) => ['tar', '--no-same-owner', '-C', d, '-xzf', tgz],
    ...(hasPigz ? { 'tar -I pigz': (d) => ['tar', '--no-same-owner', '-I', 'pigz', '-C', d, '-xf', tgz] } : {}),
    'ch-tar2dir .tar.gz': (d) => [join(repo, 'bin/ch-tar2dir'), '-q', tgz, d],
    'addon only .tar.gz': (d) => ['CORE', tgz, d],
    // The default decodes on a thread of its own where two CPUs may be used; this, in line.
    'ch-tar2dir .tar.gz decode in line': (d) => ['env', 'CH_TAR2DIR_DECODE_THREAD=0', join(repo, 'bin/ch-tar2dir'), '-q', tgz, d],
    ...(baseline ? { 'baseline .tar.gz': (d) => ['env', `CH_TOOLKIT_BUILD_DIR=${baseline}`, join(repo, 'bin/ch-tar2dir'), '-q', tgz, d] } : {}),
  };
  const times = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  const cpus = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  for (let i = 0; i < RUNS; i++) {
    for (const [k, mk] of Object.entries(cases)) {
      // On disk every tree stays until the last run: a removed tree would slow
      // the file creations of whatever runs next (bench/common.js fileCreation).
      const d = join(base, fs === 'disk' ? `x-${i}-${Object.keys(cases).indexOf(k)}` : 'x');
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
      cpu = [cpus[k]];
      times[k].push(timeIt(mk(d)));
      if (fs !== 'disk') rmSync(d, { recursive: true, force: true });
    }
  }
  if (fs === 'disk') console.log(`  file creation at the end: ${fileCreation(base)}`);
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  results[fs] = { times, median: m,
    ratio_tar: m['ch-tar2dir .tar'] / m['tar xf'], ratio_tgz: m['ch-tar2dir .tar.gz'] / m['tar xzf'],
    ratio_core_tar: m['addon only .tar'] / m['tar xf'], ratio_core_tgz: m['addon only .tar.gz'] / m['tar xzf'],
    ...(hasPigz ? { ratio_pigz: m['ch-tar2dir .tar.gz'] / m['tar -I pigz'] } : {}) };
  rmSync(base, { recursive: true, force: true });
  console.log(`${fs} (${base}):`);
  for (const [k, v] of Object.entries(times)) {
    const c = cpus[k].length ? `   CPU median ${median(cpus[k]).toFixed(2)} s` : '';
    console.log(`  ${k.padEnd(20)} median ${m[k].toFixed(3)} s   [${v.map((x) => x.toFixed(3)).join(' ')}]${c}`);
  }
  results[fs].cpu = Object.fromEntries(Object.entries(cpus).filter(([, v]) => v.length).map(([k, v]) => [k, median(v)]));
  console.log(`  ratio ch-tar2dir / GNU tar: .tar ${results[fs].ratio_tar.toFixed(2)}x   .tar.gz ${results[fs].ratio_tgz.toFixed(2)}x`);
  console.log(`  ratio addon only / GNU tar: .tar ${results[fs].ratio_core_tar.toFixed(2)}x   .tar.gz ${results[fs].ratio_core_tgz.toFixed(2)}x`);
  if (hasPigz) console.log(`  ratio ch-tar2dir .tar.gz / tar -I pigz: ${results[fs].ratio_pigz.toFixed(2)}x`);
  if (baseline && hasPigz) console.log(`  baseline build: / tar xzf ${(m['baseline .tar.gz'] / m['tar xzf']).toFixed(2)}x, / tar -I pigz ${(m['baseline .tar.gz'] / m['tar -I pigz']).toFixed(2)}x`);
  console.log('');
}
rmSync(work, { recursive: true, force: true });
const out = join(repo, '.bench', 'tar2dir.json');
writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), tree, files, runs: RUNS, results }, null, 1) + '\n');
console.log(`written ${out}`);

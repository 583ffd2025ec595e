#!/usr/bin/env node
// bench/squash: SquashFS images against the same image as a directory, in
// the same run (issue #10). Prints:
//   1. launch of `ch-run IMG -- /bin/true` from .sqfs (zstd, gzip) vs the
//      directory, planned every launch and from a memoized plan: medians of
//      sequential runs, round-robin so the machine's other load falls on all
//      alike (targets, issue #23: a .sqfs with its shared mount live <= 1.2x
//      the directory; a first launch, which starts the holder, no slower
//      than a private mount per launch as before);
//   2. (root) start-up of a Python program importing a few hundred stdlib
//      modules from the .sqfs vs from the directory, both kept on a "shared
//      path" stand-in: bench/slowfs, a FUSE passthrough over a directory on the
//      local disk that waits a round trip (--latency-us) before serving each
//      request, remounted and with the page cache dropped before every cold
//      run. It counts the requests that reach the shared path: what an NFS or
//      Lustre server would be asked (getattr, open, readdir, ... and read);
//   3. (root) read throughput of one large file of random data in a .sqfs by
//      1 and several concurrent readers (disjoint parts), with a cold cache and
//      with the .sqfs file in the page cache (squashfuse alone): squashfuse as
//      ch-run runs it (multithreaded, the default) and squashfuse run by hand
//      multithreaded and single-threaded (-s; ch-run's CH_RUN_SQUASH_THREADS=1).
// Runs ch-run as an unprivileged user (as root: CH_BENCH_USER, default chtest);
// needs squashfuse, mksquashfs, and /dev/fuse usable by that user; part 2
// builds bench/slowfs.c with cc and libfuse3-dev (apt-get'ed as root if missing).
//
// Usage: node bench/squash.js [--runs N] [--py-runs N] [--latency-us N,M,...] [--tp-reps N] [--tp-mib N] [--readers N,M,...]
//                             [--only launch|python|throughput]

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync,
  realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { buildBusybox } from '../test/helpers/images.js';
import { isRoot, median, opt, repo, user, userPrefix } from './common.js';

const runs = opt('--runs', 50);
const pyRuns = opt('--py-runs', 5);
const tpReps = opt('--tp-reps', 5);
const tpMiB = opt('--tp-mib', 1024);
const latencies = (process.argv.includes('--latency-us') ? process.argv[process.argv.indexOf('--latency-us') + 1] : '0,250,1000')
  .split(',').map(Number).filter((n) => n >= 0);
const readerCounts = (process.argv.includes('--readers') ? process.argv[process.argv.indexOf('--readers') + 1] : '1,8,32')
  .split(',').map(Number).filter((n) => n > 0);
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : null;


const pre = userPrefix();
const dir = mkdtempSync('/var/tmp/ch-bench-sq-');
chmodSync(dir, 0o755);
const img = join(dir, 'img');
buildBusybox(img);
spawnSync('chmod', ['-R', 'a+rwX', dir]);
// zstd: what ch-convert writes; gzip: mksquashfs's default (decompression
// is most of the difference: every launch is a new mount, a cold page cache).
function squash(comp, from = img, sq = join(dir, `img-${comp}.sqfs`)) {
  const argv = [...pre, 'mksquashfs', from, sq, '-noappend', '-quiet', '-no-progress', '-comp', comp];
  const mk = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  if (mk.status !== 0) throw new Error(`mksquashfs: ${mk.stderr}`);
  return sq;
}
const chrun = join(repo, 'bin', 'ch-run');
const env = { PATH: '/usr/bin:/bin', HOME: '/', USER: user, LANG: 'C.UTF-8' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sh = (cmd, args, o = {}) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...o });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr ?? ''}`);
  return r.stdout;
};
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/** ARGV as the unprivileged user, cwd /, clean environment; wall ms (and stdout if asked). */
function once(argv, out = false, runEnv = env) {
  const all = [...pre, ...argv];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(all[0], all.slice(1), { stdio: ['ignore', out ? 'pipe' : 'ignore', 'pipe'], env: runEnv, cwd: '/', encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return out ? { ms, stdout: r.stdout } : ms;
}

/** SIGKILL the squashfuse processes that hold FILE open (a shared mount's, lingering), and only those. */
function killServing(file) {
  for (const pid of readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
    try {
      if (!/^squashfuse(_ll)?\0/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'))) continue;
      if (readdirSync(`/proc/${pid}/fd`).some((fd) => { try { return realpathSync(`/proc/${pid}/fd/${fd}`) === file; } catch { return false; } })) {
        process.kill(Number(pid), 'SIGKILL');
        for (let i = 0; i < 250 && existsSync(`/proc/${pid}/fd`); i++) spawnSync('sleep', ['0.02']);   // gone, file closed
      }
    } catch { /* gone */ }
  }
}

/** once(), without waiting: resolves when ARGV has run (rejects if it failed). */
function onceAsync(argv, runEnv = env) {
  const all = [...pre, ...argv];
  return new Promise((resolve, reject) => {
    const p = spawn(all[0], all.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: runEnv, cwd: '/' });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} failed (${code}): ${err}`))));
  });
}

/** Empty the page cache (and dentries, inodes): the next read goes to the disk. */
function dropCaches() {
  sh('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

const mounted = (mnt) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);

/** Run a FUSE server in the foreground as our child and wait until MNT is a mount. */
async function fuseStart(argv, mnt, log = null) {
  const out = log ? openSync(log, 'w') : 'ignore';
  const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out] });
  if (log) closeSync(out);
  let exited = null;
  p.on('exit', (code, sig) => { exited = { code, sig }; });
  for (const until = Date.now() + 10000; !mounted(mnt); await sleep(10)) {
    if (exited) throw new Error(`${argv.join(' ')} exited (${exited.code ?? exited.sig}) before mounting ${mnt}`);
    if (Date.now() > until) { p.kill('SIGKILL'); throw new Error(`${argv.join(' ')}: ${mnt} not mounted after 10 s`); }
  }
  return { p, done: () => exited !== null };
}

/** Unmount MNT and wait for its server to exit (killed after 10 s). */
async function fuseStop(f, mnt) {
  sh('umount', [mnt]);
  for (const until = Date.now() + 10000; !f.done(); await sleep(10))
    if (Date.now() > until) { f.p.kill('SIGKILL'); break; }
}

// ---- 1. launch of /bin/true --------------------------------------------------
// .sqfs launches three ways (issue #23): with the shared mount live (the
// default: a holder keeps it CH_RUN_SQUASH_LINGER s after its last user, so
// every launch but the first finds it), the first launch (linger 1 ms: the
// holder is gone before the next launch, so each one starts squashfuse and
// a holder), and a private mount per launch as before (CH_RUN_SQUASH_LINGER=0).
function launchBench() {
  const zstd = squash('zstd'), gzip = squash('gzip');
  const variants = {
    'ch-run DIR -- /bin/true': { argv: [chrun, img, '--', '/bin/true'] },
    'IMG.sqfs (zstd), shared mount live': { argv: [chrun, zstd, '--', '/bin/true'] },
    'IMG.sqfs (zstd), first launch (holder)': { argv: [chrun, zstd, '--', '/bin/true'], env: { CH_RUN_SQUASH_LINGER: '0.001' } },
    'IMG.sqfs (zstd), private mount (LINGER=0)': { argv: [chrun, zstd, '--', '/bin/true'], env: { CH_RUN_SQUASH_LINGER: '0' } },
    'IMG.sqfs (gzip), shared mount live': { argv: [chrun, gzip, '--', '/bin/true'] },
  };
  // Both ways ch-run launches: planning every time, and from a memoized plan
  // (issue #14), which keeps no plan whose files are under 1 s old and none
  // on a .sqfs's first launch (it caches the image's listing): age, then prime.
  spawnSync('sleep', ['1.2']);
  const modes = { 'planned every launch (CH_RUN_NO_CACHE=1)': { ...env, CH_RUN_NO_CACHE: '1' }, 'memoized plan (the same argv again)': env };
  console.log(`1. launch of /bin/true, ${runs} sequential runs round-robin (load ${loadavg()})`);
  for (const [mode, modeEnv] of Object.entries(modes)) {
    const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    const go = (v) => once(v.argv, false, { ...modeEnv, ...v.env });
    for (let i = 0; i < 3; i++) for (const v of Object.values(variants)) go(v);   // warm caches
    for (let i = 0; i < runs; i++)
      for (const [k, v] of Object.entries(variants)) times[k].push(go(v));
    const [d, shared, first, priv, g] = Object.keys(variants).map((k) => median(times[k]));
    console.log(`  ${mode}:`);
    for (const k of Object.keys(variants))
      console.log(`    ${k.padEnd(42)} median ${median(times[k]).toFixed(1)} ms  (min ${Math.min(...times[k]).toFixed(1)})`);
    console.log(`    shared .sqfs / directory: zstd ${(shared / d).toFixed(2)}x (target <= 1.2x: ${shared / d <= 1.2 ? 'PASS' : 'MISS'}), gzip ${(g / d).toFixed(2)}x`);
    console.log(`    first launch / private mount (as before): ${(first / priv).toFixed(2)}x (target <= 1.0x: ${first / priv <= 1.0 ? 'PASS' : 'MISS'});`
      + ` private / directory ${(priv / d).toFixed(2)}x`);
  }
  console.log(`  (load ${loadavg()})`);
}

// ---- 2. Python start-up from a shared path -----------------------------------
// The image: the busybox test image plus this host's python3 (its binary, its
// standard library with Debian's .pyc files, and every shared library the
// binary and its extension modules link), at the same paths.
const PICK = `import contextlib, importlib, io, os
root = os.path.dirname(os.__file__)
skip = {'test', 'idlelib', 'tkinter', 'turtledemo', 'turtle', 'lib2to3', 'ensurepip', 'venv', 'antigravity', 'this',
        '__phello__', '__hello__', 'pydoc_data', 'site-packages', 'dist-packages', 'lib-dynload'}
names = []
for path, dirs, files in os.walk(root):
    rel = os.path.relpath(path, root)
    parts = [] if rel == '.' else rel.split(os.sep)
    if parts and (parts[0] in skip or '-' in parts[0] or 'tests' in parts or '__pycache__' in parts
                  or '__init__.py' not in files):
        dirs[:] = []
        continue
    dirs.sort()
    for f in sorted(files):
        if not f.endswith('.py') or f == '__main__.py' or (not parts and f[:-3] in skip):
            continue
        names.append('.'.join(parts + ([] if f == '__init__.py' else [f[:-3]])))
names += sorted(f.split('.')[0] for f in os.listdir(os.path.join(root, 'lib-dynload')))
for n in names:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            importlib.import_module(n)
        print(n)
    except BaseException:
        pass
`;
const IMPORTS = `import importlib, sys
mods = open('/bench/mods.txt').read().split()
for n in mods:
    importlib.import_module(n)
print('imported', len(mods), 'modules;', len(sys.modules), 'in sys.modules')
`;

function copyAt(root, file) {
  const to = join(root, file);
  mkdirSync(dirname(to), { recursive: true });
  if (!existsSync(to)) copyFileSync(file, to);   // follows symlinks: the library under its soname
}

function buildPython(at) {
  const py = realpathSync('/usr/bin/python3');
  const stdlib = dirname(sh(py, ['-I', '-S', '-c', 'import os; print(os.__file__)']).trim());
  buildBusybox(at);
  copyAt(at, py);
  symlinkSync(py.split('/').pop(), join(at, 'usr/bin/python3'));
  mkdirSync(join(at, dirname(stdlib)), { recursive: true });
  sh('cp', ['-a', stdlib, join(at, stdlib)]);
  rmSync(join(at, stdlib, 'test'), { recursive: true, force: true });
  const dyn = join(stdlib, 'lib-dynload');
  for (const obj of [py, ...readdirSync(dyn).map((f) => join(dyn, f))])
    for (const m of sh('ldd', [obj]).matchAll(/(?:=> )?(\/\S+) \(0x/g)) copyAt(at, m[1]);
  mkdirSync(join(at, 'bench'));
  writeFileSync(join(at, 'bench/pick.py'), PICK);
  writeFileSync(join(at, 'bench/imports.py'), IMPORTS);
  return { py, stdlib };
}

/** Build bench/slowfs.c (libfuse 3; libfuse3-dev installed with apt-get if root and missing); its path or { reason }. */
function buildSlowfs() {
  const flags = () => spawnSync('pkg-config', ['--cflags', '--libs', 'fuse3'], { encoding: 'utf8' });
  let f = flags();
  if (f.status !== 0) {
    console.log('  set-up: installing libfuse3-dev with apt-get (to build bench/slowfs.c)');
    const a = spawnSync('apt-get', ['install', '-y', '-q', 'libfuse3-dev', 'pkg-config'], { encoding: 'utf8',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (a.status !== 0) return { reason: `apt-get install libfuse3-dev failed: ${(a.stderr || a.stdout).trim().split('\n').pop()}` };
    f = flags();
  }
  const out = join(dir, 'slowfs');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-o', out, join(repo, 'bench/slowfs.c'), ...f.stdout.trim().split(/\s+/)], { encoding: 'utf8' });
  return cc.status === 0 ? { path: out } : { reason: `cc bench/slowfs.c: ${cc.stderr}` };
}

const METADATA = ['getattr', 'readlink', 'open', 'opendir', 'readdir', 'statfs', 'access'];

async function pythonBench() {
  console.log('\n2. Python start-up from a shared path (stand-in: bench/slowfs, a FUSE passthrough over the local disk '
    + 'that waits LATENCY per request), cold cache');
  if (!isRoot) { console.log('  not measured: needs root (FUSE with allow_other, drop_caches)'); return; }
  const slowfs = buildSlowfs();
  if (slowfs.reason) { console.log(`  not measured: ${slowfs.reason}`); return; }
  const backing = join(dir, 'backing'), shared = join(dir, 'shared');
  mkdirSync(backing); mkdirSync(shared);
  const pyimg = join(backing, 'py');
  const { py, stdlib } = buildPython(pyimg);
  spawnSync('chmod', ['-R', 'a+rX', backing]);
  // Which modules import here: asked of the image's own python, in the container.
  const picked = once([chrun, pyimg, '--', '/usr/bin/python3', '-I', '/bench/pick.py'], true).stdout.split('\n').filter(Boolean);
  writeFileSync(join(pyimg, 'bench/mods.txt'), `${picked.join('\n')}\n`);
  chmodSync(join(pyimg, 'bench/mods.txt'), 0o644);
  chmodSync(backing, 0o777);   // mksquashfs runs as the user
  const sqfs = squash('zstd', pyimg, join(backing, 'py.sqfs'));
  chmodSync(backing, 0o755);
  const files = sh('find', [pyimg, '-type', 'f']).split('\n').filter(Boolean).length;
  const du = sh('du', ['-sm', pyimg]).split('\t')[0];
  console.log(`  image: busybox + ${py} and ${stdlib} from this host, ${files} files, ${du} MB; .sqfs (zstd) `
    + `${(readFileSync(sqfs).length / 2 ** 20).toFixed(0)} MB; the program imports ${picked.length} modules`);
  const variants = {
    'directory on shared path': join(shared, 'py'),
    '.sqfs on shared path': join(shared, 'py.sqfs'),
  };
  const argv = (image) => [chrun, image, '--', '/usr/bin/python3', '-I', '/bench/imports.py'];
  const countsFile = join(dir, 'slowfs.counts');
  // One cold launch (fresh mount of the stand-in, empty page cache: what it
  // serves is counted), then a warm one on the same mount (the kernel's
  // caches hold what FUSE lets them: entries and attributes for 1 s).
  const coldWarm = async (image, latency) => {
    dropCaches();
    const f = await fuseStart([slowfs.path, backing, shared, String(latency), countsFile], shared, join(dir, 'slowfs.log'));
    let c;
    try {
      c = once(argv(image), true);
      if (!/^imported \d+ modules/m.test(c.stdout)) throw new Error(`python in ${image} said: ${c.stdout}`);
      c.warm = once(argv(image));
    } finally { killServing(image); await fuseStop(f, shared); }
    return c;
  };
  // Counts of N cold launches at once (N ranks of a node; N = 1: one alone), with ENV.
  const coldOps = async (image, n = 1, runEnv = env) => {
    dropCaches();
    const f = await fuseStart([slowfs.path, backing, shared, '0', countsFile], shared, join(dir, 'slowfs.log'));
    try {
      if (n === 1) once(argv(image), false, runEnv);
      else await Promise.all(Array.from({ length: n }, () => onceAsync(argv(image), runEnv)));
      // A shared mount's holder keeps the .sqfs open for its linger: end it before unmounting.
      killServing(image);
    } finally { await fuseStop(f, shared); }
    return Object.fromEntries(readFileSync(countsFile, 'utf8').trim().split('\n').map((l) => l.split(' ')).map(([k, n]) => [k, Number(n)]));
  };
  console.log(`  wall time of ch-run IMG -- python3 -I imports.py, median of ${pyRuns} round-robin (ms; x: .sqfs / directory):`);
  for (const latency of latencies) {
    const t = Object.fromEntries(Object.keys(variants).map((k) => [k, { cold: [], warm: [] }]));
    await coldWarm(Object.values(variants)[0], latency);   // untimed
    for (let i = 0; i < pyRuns; i++)
      for (const [k, image] of Object.entries(variants)) {
        const r = await coldWarm(image, latency);
        t[k].cold.push(r.ms); t[k].warm.push(r.warm);
      }
    const [d, q] = Object.keys(variants).map((k) => ({ cold: median(t[k].cold), warm: median(t[k].warm) }));
    console.log(`    latency ${String(latency).padStart(5)} us   directory cold ${d.cold.toFixed(0).padStart(5)} warm ${d.warm.toFixed(0).padStart(5)}`
      + `   .sqfs cold ${q.cold.toFixed(0).padStart(5)} (${(q.cold / d.cold).toFixed(2)}x) warm ${q.warm.toFixed(0).padStart(5)} (${(q.warm / d.warm).toFixed(2)}x)`);
  }
  console.log('  requests reaching the shared path in one cold launch (slowfs counts; lookups arrive as getattr):');
  for (const [k, image] of Object.entries(variants)) {
    const o = await coldOps(image);
    const meta = METADATA.reduce((s, op) => s + (o[op] ?? 0), 0);
    const detail = Object.entries(o).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([op, n]) => `${op} ${n}`).join(', ');
    console.log(`    ${k.padEnd(26)} metadata ${String(meta).padStart(6)}, read ${String(o.read ?? 0).padStart(5)}   (${detail})`);
  }
  // 8 ranks of one node start at once (issue #23): with the shared mount,
  // one squashfuse reads the .sqfs for all of them.
  console.log('  requests reaching the shared path when 8 ranks launch at once (vs 1 rank):');
  const sum = (o) => ({ meta: METADATA.reduce((s, op) => s + (o[op] ?? 0), 0), read: o.read ?? 0 });
  for (const [k, image, runEnv] of [['directory', variants['directory on shared path'], env],
    ['.sqfs, shared mount', variants['.sqfs on shared path'], env],
    ['.sqfs, private mounts (LINGER=0)', variants['.sqfs on shared path'], { ...env, CH_RUN_SQUASH_LINGER: '0' }]]) {
    const one = sum(await coldOps(image, 1, runEnv)), eight = sum(await coldOps(image, 8, runEnv));
    console.log(`    ${k.padEnd(34)} 1 rank: metadata ${String(one.meta).padStart(6)}, read ${String(one.read).padStart(5)}`
      + `   8 ranks: metadata ${String(eight.meta).padStart(6)} (${(eight.meta / Math.max(1, one.meta)).toFixed(2)}x), `
      + `read ${String(eight.read).padStart(5)} (${(eight.read / Math.max(1, one.read)).toFixed(2)}x)`);
  }
}

// ---- 3. read throughput, multithreaded vs single-threaded squashfuse ----------
// The readers: N dd processes, each its own part of the file; the time
// taken from /proc/uptime (busybox date has no sub-second format), so ch-run's
// own launch and mount are outside the measured span in every variant.
const readersScript = (file, readers) => {
  const part = Math.floor(tpMiB / readers);
  const dds = Array.from({ length: readers }, (_, k) =>
    `/bin/busybox dd if=${file} bs=1M skip=${k * part} count=${part} of=/dev/null 2>>/tmp/dd.$$ &`).join(' ');
  return `read t0 rest </proc/uptime; ${dds} wait; read t1 rest </proc/uptime; `
    + `echo "span $t0 $t1 $(grep -c "^${part}+0 records out" /tmp/dd.$$)"; rm -f /tmp/dd.$$`;
};

function span(stdout, readers) {
  const m = /^span ([\d.]+) ([\d.]+) (\d+)$/m.exec(stdout);
  if (!m) throw new Error(`readers said: ${stdout}`);
  if (Number(m[3]) !== readers) throw new Error(`only ${m[3]} of ${readers} readers read their whole part: ${stdout}`);
  return Number(m[2]) - Number(m[1]);
}

async function throughputBench() {
  console.log(`\n3. read throughput: one ${tpMiB} MiB file of random data in a .sqfs (zstd), concurrent readers`);
  if (!isRoot) { console.log('  not measured: needs root (drop_caches, squashfuse by hand)'); return; }
  const tpimg = join(dir, 'tp');
  buildBusybox(tpimg);
  sh('sh', ['-c', `head -c ${tpMiB}M /dev/urandom > ${join(tpimg, 'big')}`]);
  spawnSync('chmod', ['-R', 'a+rX', tpimg]);
  chmodSync(dir, 0o777);
  const sqfs = squash('zstd', tpimg, join(dir, 'tp.sqfs'));
  chmodSync(dir, 0o755);
  rmSync(tpimg, { recursive: true, force: true });
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  // Cold: the page cache dropped, the .sqfs comes from the disk. Cached: the
  // .sqfs file read once beforehand, so what is measured is squashfuse and
  // FUSE alone (each mount is new: nothing of the mounted file is cached).
  let cold = true;
  const prepare = () => (cold ? dropCaches() : sh('cat', [sqfs], { stdio: ['ignore', 'ignore', 'pipe'] }));
  const byHand = async (flags, n) => {
    prepare();
    const f = await fuseStart(['squashfuse', '-f', ...flags, sqfs, mnt], mnt);
    try { return span(sh('/bin/busybox', ['sh', '-c', readersScript(join(mnt, 'big'), n)]), n); } finally { await fuseStop(f, mnt); }
  };
  const variants = {
    // What the disk gives without FUSE: the same readers on the .sqfs file itself.
    'the .sqfs file itself, no FUSE': (n) => {
      prepare();
      return span(sh('/bin/busybox', ['sh', '-c', readersScript(sqfs, n)]), n);
    },
    'ch-run IMG.sqfs (squashfuse multithreaded)': (n) => {
      prepare();
      return span(once([chrun, sqfs, '--', '/bin/sh', '-c', readersScript('/big', n)], true).stdout, n);
    },
    'squashfuse by hand, multithreaded': (n) => byHand([], n),
    'squashfuse by hand, -s (single-threaded)': (n) => byHand(['-s'], n),
  };
  const sq = spawnSync('squashfuse', ['--version'], { encoding: 'utf8' });
  console.log(`  ${/^squashfuse \S+/m.exec(`${sq.stdout}${sq.stderr}`)?.[0] ?? 'squashfuse'}, ${availableParallelism()} CPUs; `
    + `median of ${tpReps} round-robin; MiB/s over the readers' span (launch and mount excluded)`);
  for (const c of [true, false]) for (const n of readerCounts) {
    cold = c;
    const t = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    for (let i = 0; i < tpReps; i++)
      for (const [k, run] of Object.entries(variants)) t[k].push(await run(n));
    const st = median(t['squashfuse by hand, -s (single-threaded)']);
    console.log(`  ${n} reader${n > 1 ? 's' : ''}, ${cold ? 'cold cache (the .sqfs read from disk)' : 'the .sqfs file in the page cache'}:`);
    for (const k of Object.keys(variants)) {
      const s = median(t[k]);
      console.log(`    ${k.padEnd(44)} ${s.toFixed(2).padStart(6)} s  ${(tpMiB / s).toFixed(0).padStart(6)} MiB/s  ${(st / s).toFixed(2)}x single-threaded`
        + `   (range ${Math.min(...t[k]).toFixed(2)}-${Math.max(...t[k]).toFixed(2)} s)`);
    }
  }
}

try {
  console.log(`bench/squash ${new Date().toISOString()}, load average ${loadavg()}`);
  if (!only || only === 'launch') launchBench();
  if (!only || only === 'python') await pythonBench();
  if (!only || only === 'throughput') await throughputBench();
  console.log(`load average at the end: ${loadavg()}`);
} finally {
  if (mounted(join(dir, 'shared'))) spawnSync('umount', [join(dir, 'shared')]);
  if (mounted(join(dir, 'mnt'))) spawnSync('umount', [join(dir, 'mnt')]);
  rmSync(dir, { recursive: true, force: true });
}

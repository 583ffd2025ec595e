// Shared bits of the security suite: a scratch area under the staging dir,
// root-side helpers, checksums of host canaries, leak snapshots.

import { execa, execaSync } from 'execa';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { image, isRoot, TEST_DIR, testUser } from '../helpers/env.js';

export const CHECKS = join(fileURLToPath(new URL('.', import.meta.url)), 'checks');

/** A fresh scratch directory for one test file, world-traversable. */
export function scratch(name) {
  const d = join(TEST_DIR, 'sec', name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true, mode: 0o755 });
  execaSync('chmod', ['755', join(TEST_DIR, 'sec'), d]);
  return d;
}

/** Copy the busybox test image to DST (cp -a, as whoever we are). */
/** A fresh shared directory BASE/LABEL-KIND: 'sticky' (mode 1777, like /var/tmp) or 'open' (0777, no sticky bit). */
export function sharedDir(base, label, kind) {
  const d = join(base, `${label}-${kind}`);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d);
  chmodSync(d, kind === 'sticky' ? 0o1777 : 0o777);
  return d;
}

export async function copyBusybox(dst) {
  await execa('cp', ['-a', image('busybox'), dst]);
  return dst;
}

/** Compile a check program statically (runs in any image). */
export async function compileStatic(src, out) {
  await execa('gcc', ['-static', '-O', '-Wall', '-o', out, join(CHECKS, src)]);
  return out;
}

/** sha256 over a tree: names, types, modes, owners, link targets, contents. */
export function treeSum(root, { exclude = [] } = {}) {
  const h = createHash('sha256');
  const walk = (p, rel) => {
    if (exclude.includes(rel)) return;
    const st = lstatSync(p);
    h.update(`${rel}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0`);
    if (st.isSymbolicLink()) h.update(readlinkSync(p));
    else if (st.isFile()) h.update(readFileSync(p));
    else if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n), `${rel}/${n}`);
  };
  if (existsSync(root) || isLink(root)) walk(root, '');
  else h.update('<absent>');
  return h.digest('hex');
}

/**
 * The content of an image ch-tar2dir made: its tree without the unpack marker
 * (which records when it was unpacked), after checking the marker is there
 * and names its source.
 */
export const TAR2DIR_MARKER = '/ch/.ch-image.json';
export function imageSum(root) {
  if (existsSync(root)) {
    const m = JSON.parse(readFileSync(join(root, TAR2DIR_MARKER), 'utf8'));
    if (m.tool !== 'ch-tar2dir' || !m.source?.path) throw new Error(`${root}: bad unpack marker`);
  }
  return treeSum(root, { exclude: [TAR2DIR_MARKER] });
}

function isLink(p) { try { return lstatSync(p).isSymbolicLink(); } catch { return false; } }

/**
 * Processes of UID still alive (excluding zombies being reaped). With MARK
 * ("NAME=value"), only those whose environment holds it: other runs of the
 * suite on this machine may use the same user at the same time.
 */
export function processesOf(uid, mark = null) {
  const out = [];
  for (const pid of readdirSync('/proc').filter((n) => /^[0-9]+$/.test(n))) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const m = status.match(/^Uid:\s+(\d+)/m);
      if (!m || Number(m[1]) !== uid || /^State:\s+Z/m.test(status)) continue;
      if (mark && !readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(mark)) continue;
      out.push(`${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')}`);
    } catch { /* gone */ }
  }
  return out;
}

/** What must look the same before and after a batch of launches by UID.
    Host mounts: those naming IMAGE (or a generated ch-run file); other test
    files may mount and unmount things of their own meanwhile. */
export function leakSnapshot(uid, image = '/nonexistent', mark = null) {
  const owned = (d, re = /./) => {
    try {
      return readdirSync(d).filter((n) => re.test(n)).filter((n) => {
        try { return lstatSync(join(d, n)).uid === uid; } catch { return false; }
      }).sort();
    } catch { return []; }
  };
  return {
    processes: processesOf(uid, mark),
    hostMounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
      .filter((l) => l.includes(image) || l.includes('ch-run.')),
    // --join files live in per-user directories /dev/shm/.chtk-join.UID[.N]; an
    // empty one left between groups is no leak, a file in it is. The plan
    // records' directory (.chtk-plans.UID) is a cache, kept on purpose.
    shm: owned('/dev/shm').filter((n) => !/^\.chtk-plans\.\d+(\.\d+)?$/.test(n)).flatMap((n) => {
      const p = join('/dev/shm', n);
      if (!/^\.chtk-join\.\d+(\.\d+)?$/.test(n) || !lstatSync(p).isDirectory()) return [n];
      try { return readdirSync(p).map((f) => `${n}/${f}`); } catch { return []; }
    }),
    tmpGenerated: owned('/tmp', /^ch-run\./),
  };
}

/** A dedicated unprivileged user (created when root), so leak counts aren't
    disturbed by other test runs sharing the usual test user. */
export async function ensureUser(name) {
  if (!isRoot) return testUser();
  const r = await execa('id', ['-u', name], { reject: false });
  if (r.exitCode !== 0) await execa('useradd', ['--create-home', '--shell', '/bin/sh', name], { reject: false });
  const uid = Number((await execa('id', ['-u', name])).stdout);
  const gid = Number((await execa('id', ['-g', name])).stdout);
  return { name, uid, gid };
}

/** Run ch-run (or any staged command) as USER. */
export function runAs(user, cmd, args, opts = {}) {
  const { env = {}, ...rest } = opts;
  const pre = isRoot ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--'] : [];
  const argv = [...pre, cmd, ...args];
  return execa(argv[0], argv.slice(1), {
    reject: false, extendEnv: false, cwd: '/',
    env: { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: '/', USER: user.name, LANG: 'C.UTF-8', ...env },
    ...rest,
  });
}

export { isRoot, testUser };

/** Poll PRED until it returns something truthy; throw naming WHAT after MS (never wait forever). */
export async function waitFor(pred, what, ms = 120_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 2));
  }
}

/** /proc/PID/stat's state letter (R, S, T, Z, ...), or null once PID is gone. */
export function procState(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ')[0];
  } catch { return null; }
}

/** Where PID is: { exe, comm, userns } from /proc, or null once it is gone. */
export function whereIs(pid) {
  try {
    return { exe: readlinkSync(`/proc/${pid}/exe`), comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
      userns: readlinkSync(`/proc/${pid}/ns/user`) };
  } catch { return null; }
}

/**
 * Wait until PID is at the point PRED(whereIs(pid)) describes, stop it there
 * (SIGSTOP, then wait for state T), and return where it is once stopped, so
 * the caller can check the point was really reached before it signals.
 * Returns null if PID ended before reaching it.
 */
export async function stopAt(pid, pred, what) {
  const at = await waitFor(() => {
    const w = whereIs(pid);
    if (w === null || procState(pid) === 'Z') return { gone: true };
    return pred(w) ? w : null;
  }, what);
  if (at.gone) return null;
  process.kill(pid, 'SIGSTOP');
  await waitFor(() => ['T', 'Z', null].includes(procState(pid)), `${what}: stopped`);
  return whereIs(pid);
}

/**
 * Where USER's --join group file for TAG is (no $XDG_RUNTIME_DIR, as the
 * suite runs): in the first of the per-user directories /dev/shm/.chtk-join.UID,
 * .chtk-join.UID.1, ... that is a directory of UID's (the core skips names
 * others planted); the first candidate if none.
 */
export function joinFile(uid, tag) {
  for (let i = 0; i < 1000; i++) {
    const dir = i === 0 ? `/dev/shm/.chtk-join.${uid}` : `/dev/shm/.chtk-join.${uid}.${i}`;
    try {
      const st = lstatSync(dir);
      if (st.isDirectory() && st.uid === uid && (st.mode & 0o777) === 0o700) return `${dir}/${tag}`;
    } catch { return `${dir}/${tag}`; }
  }
  return `/dev/shm/.chtk-join.${uid}/${tag}`;
}

/**
 * The --join group file of USER's TAG, as the core keeps it (native/core/join.c,
 * struct join_shared: u64 magic, i32 winner, state, ct, arrived; little-endian
 * here): { winner, state: 'setup'|'ready'|'failed', ct, arrived }, or null.
 * Read-only, as root or as USER; the peers read the same to decide.
 */
export function joinGroup(uid, tag) {
  let b;
  const path = joinFile(uid, tag);
  try { b = readFileSync(path); } catch { return null; }
  if (b.length < 24) return null;
  return { winner: b.readInt32LE(8), state: { 1: 'setup', 2: 'ready', 3: 'failed' }[b.readInt32LE(12)] ?? 'bad',
    ct: b.readInt32LE(16), arrived: b.readInt32LE(20) };
}

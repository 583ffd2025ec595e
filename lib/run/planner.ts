// ch-run's planner: from the command line and what it reads of the host
// (through a Host only: host.ts), the container: mounts, identity,
// environment, command. main.ts hands it a live or a recording Host and
// hands its plan on.

import { join, resolve } from 'node:path';
import { ChError, Log, why } from '../util/log.js';
import { ownerName } from '../util/owned-fs.js';
import { PKG_ROOT, storageDir } from '../util/paths.js';
import { STORAGE_IMAGES, storedImageDir } from '../image/names.js';
import { applyEnvActions, Env, fixPath, serializeEnv } from '../container/env.js';
import type { Host } from '../container/host.js';
import { varsOf } from '../container/host.js';
import { checkImage, kindInImage, readMetadata, registerImageView, resolveInImage } from '../container/image.js';
import { isImageFile, prepareSquash, SQUASH_VARS, SquashImage } from '../container/squash.js';
import { joinCount, joinTag, joinTimeoutMs } from '../container/join.js';
import { launcherEnv } from '../container/mpi-env.js';
import { defaultMounts, requireMountPoints } from '../container/mounts.js';
import type { RunOptions } from './options.js';
import { identity } from '../container/passwd.js';
import type { Plan } from '../container/plan.js';
import { LAUNCHER_VARS } from './memo.js';
import { LAUNCHER } from '../util/protocol.gen.js';

/** ch-run must never be a privilege boundary. */
export function refuseSetid(host: Host, files: string[]): void {
  for (const f of files) {
    let mode: number;
    try { mode = host.stat(f).mode; } catch { continue; }
    if (mode & 0o6000)
      throw new ChError(`${f} is setuid or setgid; refusing to run (ch-run needs no privileges: chmod ug-s it)`);
  }
}

function command(host: Host, log: Log, opts: RunOptions, root: string): { argv: string[]; workdir: string | null } {
  if (opts.command.length > 0) return { argv: opts.command, workdir: null };
  const meta = readMetadata(host, root);
  const argv = [...(meta?.Entrypoint ?? []), ...(meta?.Cmd ?? [])];
  if (argv.length === 0)
    throw new ChError(`no command given, and image ${root} records no ENTRYPOINT or CMD`
      + `${meta ? ' in /ch/metadata.json' : ' (no /ch/metadata.json)'}`);
  log.info(`running image's default command: ${JSON.stringify(argv)}`);
  return { argv, workdir: meta?.WorkingDir || null };
}

/**
 * IMAGE as the user gave it: a path (it exists, or looks like one), else an
 * image name in ch-image storage, as Charliecloud resolves it: STORAGE/img/
 * NAME, "/" spelled "%" and ":" "+", tag "latest" if none. Storage is trusted
 * only if it is the caller's own: a directory (not a link) owned by the
 * caller that no one else can write, or another user could plant an image
 * (and its /ch/environment, its entry point) under a name the caller runs.
 * A bare IMAGE that is also a relative path is that path, as in
 * Charliecloud, when the path is the caller's (or root's); when another user
 * owns it, it never silently wins: refused if storage holds the name too
 * (the attacker's "localhost:5120/ok" in a shared working directory), else
 * used with a warning. "./IMAGE" always means the path.
 */
export function resolveImage(host: Host, log: Log, opts: RunOptions): string {
  const img = opts.image;
  if (img.includes('/') && (img.startsWith('/') || img.startsWith('.'))) return img;
  const isName = opts.storage !== null || /^[A-Za-z0-9._-]+([:/][A-Za-z0-9._+-]+)*$/.test(img);
  let here = false;
  try { host.lstat(img); here = true; } catch { /* not a path: a name */ }
  if (here && !isName) return img;
  const storage = opts.storage ?? storageDir(varsOf(host), () => host.user().username);
  const dir = storedImageDir(storage, img);
  if (here) {
    let stored = false;
    try { stored = host.lstat(dir).isDirectory(); } catch { /* not in storage */ }
    const other = othersPath(host, img);
    if (other === null) {
      if (stored) log.info(`image ${img}: using directory ./${img} (yours), not ${dir} in storage`);
      return img;
    }
    if (stored)
      throw new ChError(`can't use image ${img}: it names both directory ./${img}, which is not yours (${other}), `
        + `and ${dir} in your storage; give ./${img} to run the directory, or run from elsewhere to use storage's`);
    log.warn(`image ${img}: using directory ./${img}, which is not yours (${other}); give ./${img} to say so`);
    return img;
  }
  for (const p of [storage, join(storage, STORAGE_IMAGES), dir]) {
    let st;
    try {
      st = host.lstat(p);
    } catch (err) {
      throw new ChError(`can't use image ${img}: not a path, and not in storage ${storage}: ${p}: ${why(err)}`);
    }
    if (!st.isDirectory())
      throw new ChError(`can't use image ${img}: storage path ${p} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}`);
    if (st.uid !== host.uid())
      throw new ChError(`can't use image ${img}: storage path ${p} is owned by uid ${st.uid}, not you `
        + '(only your own storage is trusted; give the image as a path)');
    if (p !== dir && st.mode & 0o022)
      throw new ChError(`can't use image ${img}: storage path ${p} is writable by others (mode `
        + `${(st.mode & 0o7777).toString(8)}); only your own storage is trusted`);
  }
  log.info(`image ${img} from storage: ${dir}`);
  return dir;
}

/**
 * Which part of relative path P (from the current directory) belongs to
 * another user than the caller or root, as "NAME owned by USER (uid N)"; null
 * if none does. The components are looked at as found, links not followed,
 * and what P finally names as well.
 */
function othersPath(host: Host, p: string): string | null {
  const me = host.uid();
  const comps = p.split('/').filter((c) => c !== '' && c !== '.');
  const whose = (path: string, uid: number) => (uid === me || uid === 0 ? null : `${path} owned by ${ownerName(uid, (f) => host.readFile(f, 'utf8'))}, not you`);
  for (let i = 1; i <= comps.length; i++) {
    const part = comps.slice(0, i).join('/');
    let uid: number;
    try { uid = host.lstat(part).uid; } catch { return null; }
    const bad = whose(`./${part}`, uid);
    if (bad) return bad;
  }
  try { return whose(`what ./${p} leads to`, host.stat(p).uid); } catch { return null; }
}

/**
 * The hint for a command not found: the image records a PATH in
 * /ch/environment that differs from the one the command gets, and the user
 * didn't ask for that file (bare --set-env). Null if there is nothing to say.
 */
function pathHint(host: Host, opts: RunOptions, root: string, argv0: string, env: Env): string | null {
  if (argv0.includes('/') || opts.envActions.some((a) => a.kind === 'set-file' && a.path === null)) return null;
  const found = resolveInImage(host, root, '/ch/environment');
  if (found === null) return null;
  let text: string;
  try { text = host.readFile(found, 'utf8').slice(0, 1 << 20); } catch { return null; }
  const line = text.split('\n').find((l) => l.startsWith('PATH='));
  if (!line || line.slice(5) === env.get('PATH')) return null;
  return `image ${root} records ${line.slice(0, 200)} in /ch/environment, which --set-env would apply`;
}

/** A SquashFS image: checked, its mount point chosen, its view registered; else null. */
function squashImage(host: Host, opts: RunOptions, image: string): SquashImage | null {
  if (!isImageFile(host, image)) return null;
  const sq = prepareSquash(host, resolve(host.cwd(), image), opts.mountDir ?? null);
  const no = (what: string, hint: string) => new ChError(`${what} with a SquashFS image is not supported (${hint})`);
  if (opts.writable) throw no('-w', 'it is read-only: use -W for a writable overlay');
  if (opts.gpu !== false || opts.ib) throw no('--gpu/--ib', 'convert it to a directory with ch-convert');
  registerImageView(sq.mountPoint, sq.view);
  return sq;
}

/** --join's count and tag: given, else the defaults; -v says which, in Charliecloud's words. */
function joinCountOf(host: Host, log: Log, opts: RunOptions): number {
  if (opts.joinCt === null) return joinCount(host, (m) => log.info(m));
  log.info('join: peer group size from command line');
  return opts.joinCt;
}

function joinTagOf(host: Host, log: Log, opts: RunOptions): string {
  if (opts.joinTag === null) return joinTag(host, (m) => log.info(m));
  log.info('join: peer group tag from command line');
  return opts.joinTag;
}

export async function buildPlan(host: Host, log: Log, opts: RunOptions): Promise<Plan> {
  const image = resolveImage(host, log, opts);
  const squash = squashImage(host, opts, image);
  const root = squash ? squash.mountPoint : checkImage(host, image);
  requireMountPoints(host, root);
  const id = identity(host, opts.uid, opts.gid);
  // Charliecloud's words, and like it only under -v: nothing is wrong.
  if (id.dummyUser) log.info(`UID ${id.uid} not found; using dummy info`);
  if (id.dummyGroup) log.info(`GID ${id.gid} not found; using dummy info`);
  if (opts.unsafe) log.info('--unsafe: accepted; there is nothing unsafe to enable');
  const env = host.environment();
  for (const v of LAUNCHER_VARS) env.delete(v);   // the launcher's, not the user's
  env.delete(LAUNCHER.memoVerify);       // the test suite's (native/launcher/memo/), not the command's
  if (opts.verbosity >= 1) env.trace = (line) => log.info(line);
  for (const v of SQUASH_VARS) env.delete(v);   // ours, not the command's

  // GPU/InfiniBand injection: loaded only when asked for, from its own
  // bundle (dist/ch-run-devices.cjs). Inlined in the launch bundle it cost
  // every launch ~1.5 ms (it needs node:child_process, which Node's start-up
  // snapshot lacks); loaded as ESM modules it cost --gpu ~17 ms.
  const injected = opts.gpu !== false || opts.ib || opts.devices.length > 0
    ? host.load<typeof import('../devices/inject.js')>(join(PKG_ROOT, 'dist', 'ch-run-devices.cjs'))
      .inject(host, root, { gpu: opts.gpu, ib: opts.ib, ibHcas: opts.ibHcas, devices: opts.devices,
        cdiDirs: opts.cdiDirs }, env, log)
    : null;
  const mounts = defaultMounts({ host, root, opts, id, log, env, devices: injected?.mounts });

  // Environment: Charliecloud's fix-ups first, then the user's, then CH_RUNNING.
  if (opts.home) {
    env.set('HOME', `/home/${id.user}`);
  } else {
    const home = env.get('HOME');
    // Where binds really land: a --bind SRC without DST may go to /mnt/N.
    const bound = mounts.some((m) => m.kind === 'bind' && m.dst === home);
    if (!home || (!bound && kindInImage(host, root, home) !== 'dir'))
      env.set('HOME', kindInImage(host, root, '/root') === 'dir' ? '/root' : '/');
  }
  fixPath(env, (m) => log.warn(m));
  if (injected) {
    for (const [k, v] of injected.env) env.set(k, env.get(k) ? `${v}:${env.get(k)}` : v);
    for (const [k, v] of injected.set) env.set(k, v);
    if (injected.pathPrepend) env.set('PATH', `${injected.pathPrepend}:${env.get('PATH') ?? '/usr/bin:/bin'}`);
  }
  env.delete('TMPDIR');   // a host path; the host's temp dir is /tmp inside
  launcherEnv(env, mounts, opts.join);   // MPI/PMIx defaults (mpi-env.ts says why)
  applyEnvActions(host, env, opts.envActions, root);
  env.set('CH_RUNNING', 'Weird Al Yankovic');

  const { argv, workdir } = command(host, log, opts, root);
  const cwd = opts.cd ?? workdir ?? host.cwd();

  return {
    verbose: opts.verbosity,
    root,
    writable: opts.writable,
    seccomp: opts.seccomp,
    joinPid: opts.joinPid,
    execHint: pathHint(host, opts, root, argv[0], env),
    uid: id.uid, gid: id.gid,
    cwd,
    cwdFallback: opts.cd === null && workdir === null,
    // Generated files are staged on a tmpfs over the image's /dev (required,
    // and covered by the host's /dev anyway): never visible on the host.
    stageDir: '/dev',
    join: opts.join
      ? { tag: joinTagOf(host, log, opts), count: joinCountOf(host, log, opts),
          timeoutMs: joinTimeoutMs(host) }
      : null,
    mounts,
    ...(squash ? { squash: { file: squash.file, squashfuse: squash.squashfuse, timeoutMs: squash.timeoutMs, lingerMs: squash.lingerMs, threads: squash.threads } } : {}),
    ...(opts.writeFake !== undefined ? { writeFake: opts.writeFake } : {}),
    env: serializeEnv(env),
    argv,
  };
}


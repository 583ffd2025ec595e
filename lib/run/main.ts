// ch-run's front end: parse the command line, decide the container (mounts,
// identity, environment, command), hand the plan to the C core by exec.

import './memo-start.js';   // first: records what planning reads (memo.ts)
import { closeSync, lstatSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { ChError, EXIT_ERR, Log, runMain, why } from '../util/log.js';
import { formatHelp } from '../util/argp.js';
import { CORE_PATH, LAUNCHER_PATH, PKG_ROOT, storageDir } from '../util/paths.js';
import { ownerName } from '../util/owned-fs.js';
import { STORAGE_IMAGES, storedImageDir } from '../image/names.js';
import { applyEnvActions, Env, envFromProcess, fixPath, serializeEnv } from './env.js';
import { checkImage, kindInImage, readMetadata, registerImageView, resolveInImage } from './image.js';
import { FEATURES } from './features.js';
import { isImageFile, prepareSquash, SquashImage } from './squash.js';
import { joinCount, joinTag, joinTimeoutMs } from './join.js';
import { launcherEnv } from './mpi-env.js';
import { defaultMounts, requireMountPoints } from './mounts.js';
import { parseRunArgs, RUN_OPTIONS, RUN_USAGE, RunOptions } from './options.js';
import { identity } from './passwd.js';
import { NOTHING_TO_RUN, Plan, serializePlan } from './plan.js';
import { LAUNCHER_VARS, Recorder, recorder, stopLogTap } from './memo.js';

/** A Log that remembers its warnings, for --warnings. */
class RunLog extends Log {
  readonly warnings: string[] = [];
  override warn(msg: string): void {
    this.warnings.push(msg);
    super.warn(msg);
  }
}
const log = new RunLog('ch-run');

/** Load the CommonJS bundle dist/REL, whether this code runs bundled or not. */
function requireDist<T>(rel: string): T {
  return createRequire(import.meta.url)(join(PKG_ROOT, 'dist', rel)) as T;
}

/** ch-run must never be a privilege boundary. */
function refuseSetid(files: string[]): void {
  for (const f of files) {
    let mode: number;
    try { mode = statSync(f).mode; } catch { continue; }
    if (mode & 0o6000)
      throw new ChError(`${f} is setuid or setgid; refusing to run (ch-run needs no privileges: chmod ug-s it)`);
  }
}

function command(opts: RunOptions, root: string): { argv: string[]; workdir: string | null } {
  if (opts.command.length > 0) return { argv: opts.command, workdir: null };
  const meta = readMetadata(root);
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
export function resolveImage(opts: RunOptions, env: NodeJS.ProcessEnv = process.env): string {
  const img = opts.image;
  if (img.includes('/') && (img.startsWith('/') || img.startsWith('.'))) return img;
  const isName = opts.storage !== null || /^[A-Za-z0-9._-]+([:/][A-Za-z0-9._+-]+)*$/.test(img);
  let here = false;
  try { lstatSync(img); here = true; } catch { /* not a path: a name */ }
  if (here && !isName) return img;
  const storage = opts.storage ?? storageDir(env);
  const dir = storedImageDir(storage, img);
  if (here) {
    let stored = false;
    try { stored = lstatSync(dir).isDirectory(); } catch { /* not in storage */ }
    const other = othersPath(img);
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
      st = lstatSync(p);
    } catch (err) {
      throw new ChError(`can't use image ${img}: not a path, and not in storage ${storage}: ${p}: ${why(err)}`);
    }
    if (!st.isDirectory())
      throw new ChError(`can't use image ${img}: storage path ${p} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}`);
    if (st.uid !== process.getuid!())
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
function othersPath(p: string): string | null {
  const me = process.getuid!();
  const comps = p.split('/').filter((c) => c !== '' && c !== '.');
  const whose = (path: string, uid: number) => (uid === me || uid === 0 ? null : `${path} owned by ${ownerName(uid)}, not you`);
  for (let i = 1; i <= comps.length; i++) {
    const part = comps.slice(0, i).join('/');
    let uid: number;
    try { uid = lstatSync(part).uid; } catch { return null; }
    const bad = whose(`./${part}`, uid);
    if (bad) return bad;
  }
  try { return whose(`what ./${p} leads to`, statSync(p).uid); } catch { return null; }
}

/**
 * The hint for a command not found: the image records a PATH in
 * /ch/environment that differs from the one the command gets, and the user
 * didn't ask for that file (bare --set-env). Null if there is nothing to say.
 */
function pathHint(opts: RunOptions, root: string, argv0: string, env: Env): string | null {
  if (argv0.includes('/') || opts.envActions.some((a) => a.kind === 'set-file' && a.path === null)) return null;
  const host = resolveInImage(root, '/ch/environment');
  if (host === null) return null;
  let text: string;
  try { text = readFileSync(host, 'utf8').slice(0, 1 << 20); } catch { return null; }
  const line = text.split('\n').find((l) => l.startsWith('PATH='));
  if (!line || line.slice(5) === env.get('PATH')) return null;
  return `image ${root} records ${line.slice(0, 200)} in /ch/environment, which --set-env would apply`;
}

/** A SquashFS image: checked, its mount point chosen, its view registered; else null. */
function squashImage(opts: RunOptions, image: string): SquashImage | null {
  if (!isImageFile(image)) return null;
  const sq = prepareSquash(resolve(image), opts.mountDir ?? null);
  const no = (what: string, hint: string) => new ChError(`${what} with a SquashFS image is not supported (${hint})`);
  if (opts.writable) throw no('-w', 'it is read-only: use -W for a writable overlay');
  if (opts.join) throw no('--join', 'convert it to a directory with ch-convert');
  if (opts.gpu !== false || opts.ib) throw no('--gpu/--ib', 'convert it to a directory with ch-convert');
  registerImageView(sq.mountPoint, sq.view);
  return sq;
}

/** --join's count and tag: given, else the defaults; -v says which, in Charliecloud's words. */
function joinCountOf(opts: RunOptions): number {
  if (opts.joinCt === null) return joinCount(process.env, (m) => log.info(m));
  log.info('join: peer group size from command line');
  return opts.joinCt;
}

function joinTagOf(opts: RunOptions): string {
  if (opts.joinTag === null) return joinTag(process.env, (m) => log.info(m));
  log.info('join: peer group tag from command line');
  return opts.joinTag;
}

export async function buildPlan(opts: RunOptions): Promise<Plan> {
  const image = resolveImage(opts);
  const squash = squashImage(opts, image);
  const root = squash ? squash.mountPoint : checkImage(image);
  requireMountPoints(root);
  const id = identity(opts.uid, opts.gid);
  // Charliecloud's words, and like it only under -v: nothing is wrong.
  if (id.dummyUser) log.info(`UID ${id.uid} not found; using dummy info`);
  if (id.dummyGroup) log.info(`GID ${id.gid} not found; using dummy info`);
  if (opts.unsafe) log.info('--unsafe: accepted; there is nothing unsafe to enable');
  const env = envFromProcess();
  for (const v of LAUNCHER_VARS) env.delete(v);   // the launcher's, not the user's
  env.delete('CH_RUN_MEMO_VERIFY');      // the test suite's (addon/memo.c), not the command's
  if (opts.verbosity >= 1) env.trace = (line) => log.info(line);
  env.delete('CH_RUN_SQUASH_TIMEOUT');   // ours, not the command's

  // GPU/InfiniBand injection: loaded only when asked for, from its own
  // bundle (dist/ch-run-devices.cjs). Inlined in the launch bundle it cost
  // every launch ~1.5 ms (it needs node:child_process, which Node's start-up
  // snapshot lacks); loaded as ESM modules it cost --gpu ~17 ms.
  const injected = opts.gpu !== false || opts.ib || opts.devices.length > 0
    ? requireDist<typeof import('../devices/inject.js')>('ch-run-devices.cjs')
      .inject(root, { gpu: opts.gpu, ib: opts.ib, ibHcas: opts.ibHcas, devices: opts.devices,
        cdiDirs: opts.cdiDirs }, env, log)
    : null;
  const mounts = defaultMounts({ root, opts, id, log, env, devices: injected?.mounts });

  // Environment: Charliecloud's fix-ups first, then the user's, then CH_RUNNING.
  if (opts.home) {
    env.set('HOME', `/home/${id.user}`);
  } else {
    const home = env.get('HOME');
    // Where binds really land: a --bind SRC without DST may go to /mnt/N.
    const bound = mounts.some((m) => m.kind === 'bind' && m.dst === home);
    if (!home || (!bound && kindInImage(root, home) !== 'dir'))
      env.set('HOME', kindInImage(root, '/root') === 'dir' ? '/root' : '/');
  }
  fixPath(env, (m) => log.warn(m));
  if (injected) {
    for (const [k, v] of injected.env) env.set(k, env.get(k) ? `${v}:${env.get(k)}` : v);
    for (const [k, v] of injected.set) env.set(k, v);
    if (injected.pathPrepend) env.set('PATH', `${injected.pathPrepend}:${env.get('PATH') ?? '/usr/bin:/bin'}`);
  }
  env.delete('TMPDIR');   // a host path; the host's temp dir is /tmp inside
  launcherEnv(env, mounts, opts.join);   // MPI/PMIx defaults (mpi-env.ts says why)
  applyEnvActions(env, opts.envActions, root);
  env.set('CH_RUNNING', 'Weird Al Yankovic');

  const { argv, workdir } = command(opts, root);
  const cwd = opts.cd ?? workdir ?? process.cwd();

  return {
    verbose: opts.verbosity,
    root,
    writable: opts.writable,
    seccomp: opts.seccomp,
    joinPid: opts.joinPid,
    execHint: pathHint(opts, root, argv[0], env),
    uid: id.uid, gid: id.gid,
    cwd,
    cwdFallback: opts.cd === null && workdir === null,
    // Generated files are staged on a tmpfs over the image's /dev (required,
    // and covered by the host's /dev anyway): never visible on the host.
    stageDir: '/dev',
    join: opts.join
      ? { tag: joinTagOf(opts), count: joinCountOf(opts),
          timeoutMs: joinTimeoutMs(process.env) }
      : null,
    mounts,
    ...(squash ? { squash: { file: squash.file, squashfuse: squash.squashfuse, timeoutMs: squash.timeoutMs } } : {}),
    ...(opts.writeFake !== undefined ? { writeFake: opts.writeFake } : {}),
    env: serializeEnv(env),
    argv,
  };
}

/**
 * The launcher (addon/launcher.c) runs this front end in a child process and
 * names in CH_RUN_PLAN_FD a memfd for its decision: a plan, which the
 * launcher hands to the core from a process Node never ran in, or
 * NOTHING_TO_RUN (help, version). DONE_BYTE on CH_RUN_DONE_FD says the
 * decision is whole: with a plan, the launcher then kills this process
 * rather than wait for Node's exit, and goes on. Without a decision, and
 * without our own exit status 31, the launcher reports the front end as
 * failed: a Node that isn't ours (CH_RUN_NODE=/bin/true) can't pass for
 * success.
 */
/** Written to CH_RUN_DONE_FD: the decision is whole (EOF alone may be a death). */
const DONE_BYTE = 'k';

function launcherFd(name: string): number {
  const v = process.env[name];
  if (v === undefined || !/^[0-9]+$/.test(v))
    throw new ChError(`${name} ${v === undefined ? 'not set' : `bad: '${v}'`}: `
      + 'the front end runs only under ch-run\'s launcher (bin/ch-run)');
  return Number(v);
}

function writeAll(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length;)
    off += writeSync(fd, buf, off, buf.length - off);
}

/** Hand over BUF, the decision; and MEMO, the record to keep for later launches, if the launcher asked. */
function handOff(buf: Buffer, memo?: Buffer): void {
  const [plan, done] = ['CH_RUN_PLAN_FD', 'CH_RUN_DONE_FD'].map(launcherFd);
  try {
    if (memo !== undefined && memo.length > 0) writeAll(launcherFd('CH_RUN_MEMO_FD'), memo);
    writeAll(plan, buf);
    writeSync(done, DONE_BYTE);
    closeSync(done);
  } catch (err) {
    throw new ChError(`can't hand the plan to ch-run's launcher: ${why(err)}`);
  }
}

function help(): string {
  return `${RUN_USAGE}
Run a command in a Charliecloud-style unprivileged container. IMAGE is a
directory, or a SquashFS file (mounted with SquashFUSE, in the container only).

${formatHelp(RUN_OPTIONS)}

Exit status: the command's own; 128+N if it died of signal N; ${EXIT_ERR} if
ch-run itself failed; 49 if the command could not be executed; 64 if the
command line could not be parsed (unknown option, missing argument).
`;
}

/**
 * --warnings=N: before ch-run's own error, reprint its last N warnings, so
 * they aren't lost above a long error. Only ch-run's own failures can do
 * this: once the command runs, ch-run is the command (exec in place) and no
 * code of ours is left to run at its exit.
 */
function reprintWarnings(n: number): void {
  const last = n > 0 ? log.warnings.slice(-n) : [];
  if (last.length === 0) return;
  log.warn(`reprinting last ${last.length} warning(s)`);
  log.warnings.length = 0;
  for (const w of last) log.warn(w);
}

/** A -vv line that isn't part of what a memoized launch replays. */
function unrecordedDebug(rec: Recorder | null, msg: string): void {
  if (rec) rec.unrecorded(() => log.debug(msg));
  else log.debug(msg);
}

/**
 * The record the launcher keeps of this plan (memo.ts), and under -v what
 * became of it. Said outside the recording: not part of what a memoized
 * launch replays.
 */
function memoRecord(rec: Recorder, plan: Plan): Buffer {
  // Which build planned: a changed front end, core or launcher is a miss.
  rec.subprocess([process.argv[1], join(PKG_ROOT, 'dist', 'ch-run-main.cjs'), CORE_PATH, LAUNCHER_PATH]);
  // --join's tag as the launcher fills it in (memo.ts joinTemplate: only a
  // tag joinTag() made has one; a tag the user gave stays as is).
  const tagged = plan.join && rec.joinTag ? { ...plan, join: { ...plan.join, tag: rec.joinTag.placeholder } } : plan;
  const memo = rec.serialize(serializePlan(tagged, false), plan.verbose);
  stopLogTap();
  if (rec.refused !== null) log.info(`plan memo: not stored: ${rec.refused}`);
  return memo;
}

async function main(): Promise<number> {
  ['CH_RUN_PLAN_FD', 'CH_RUN_DONE_FD'].forEach(launcherFd);   // fail early without the launcher
  const opts = parseRunArgs(process.argv.slice(2));
  log.verbosity = opts.verbosity;
  const rec = recorder();
  const codeCache = (globalThis as Record<symbol, unknown>)[Symbol.for('ch-toolkit.codecache')];
  if (codeCache !== undefined) unrecordedDebug(rec, `code cache: ${String(codeCache)}`);
  // Why no memoized plan served (addon/memo.c), said outside the recording.
  const miss = (rec?.rawEnv ?? process.env).CH_RUN_MEMO_MISS;
  if (miss) (rec ?? { unrecorded: (f: () => void) => f() }).unrecorded(() => log.info(`plan memo: ${rec ? 'miss' : 'off'} (${miss})`));
  if (opts.action === 'feature') {
    const check = FEATURES[opts.feature!];
    if (check === undefined)
      throw new ChError(`--feature: unknown feature '${opts.feature}' (known: ${Object.keys(FEATURES).join(', ')})`);
    const whyNot = check();
    if (whyNot !== null) log.info(`feature ${opts.feature} unsupported: ${whyNot}`);
    handOff(NOTHING_TO_RUN);
    return whyNot === null ? 0 : 1;
  }
  if (opts.action !== 'run') {
    if (opts.action === 'help') process.stdout.write(help());
    else if (opts.action === 'usage') process.stdout.write(RUN_USAGE + '\n');
    else process.stdout.write((await import('../util/version.js')).version() + '\n');
    handOff(NOTHING_TO_RUN);
    return 0;
  }
  refuseSetid([process.argv[1], join(PKG_ROOT, 'dist', 'ch-run-main.cjs'), CORE_PATH]);
  let plan: Plan;
  try {
    plan = await buildPlan(opts);
  } catch (err) {
    reprintWarnings(opts.warnings);
    throw err;
  }
  log.debug(`plan: ${plan.mounts.length} mounts, cwd ${plan.cwd}, argv ${JSON.stringify(plan.argv)}`);
  handOff(serializePlan(plan), rec ? memoRecord(rec, plan) : undefined);
  return 0;
}

void runMain(log, main);

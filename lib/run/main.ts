// ch-run's front end: parse the command line, have the planner decide the
// container (planner.ts) reading the host through a Host, live or recording
// (host.ts, memo.ts), and hand the plan to the launcher.

// The launcher's descriptors are written here, not in planning code.
import { join } from 'node:path';
import { ChError, EXIT_ERR, Log, runMain, why } from '../util/log.js';
import { formatHelp } from '../util/argp.js';
import * as hostFs from '../util/host-fs.js';
import { buildDir, CORE_PATH, HOST_ADDON_PATH, LAUNCHER_PATH, packageRoot, PKG_ROOT } from '../util/paths.js';
import { FEATURES } from './features.js';
import { Host, liveHost, varsOf } from '../container/host.js';
import { parseRunArgs, RUN_OPTIONS, RUN_USAGE } from './options.js';
import type { RunOptions } from './options.js';
import { buildPlan, refuseSetid } from './planner.js';
import type { Plan } from '../container/plan.js';
import { NOTHING_TO_RUN, serializePlan } from './plan-output.js';
import { Recorder } from './memo.js';
import { recordingHost, tapLog } from './recording-host.js';
import { EXIT, LAUNCHER } from '../util/protocol.gen.js';

/** A Log that remembers its warnings, for --warnings. */
class RunLog extends Log {
  readonly warnings: string[] = [];
  override warn(msg: string): void {
    this.warnings.push(msg);
    super.warn(msg);
  }
}
const log = new RunLog('ch-run');

/**
 * The launcher (native/launcher/launcher.c) runs this front end in a child process and
 * names in CH_RUN_PLAN_FD a memfd for its decision: a plan, which the
 * launcher hands to the core from a process Node never ran in, or
 * NOTHING_TO_RUN (help, version). LAUNCHER.doneByte on CH_RUN_DONE_FD says the
 * decision is whole: with a plan, the launcher then kills this process
 * rather than wait for Node's exit, and goes on. Without a decision, and
 * without our own exit status 31, the launcher reports the front end as
 * failed: a Node that isn't ours (CH_RUN_NODE=/bin/true) can't pass for
 * success.
 */

function launcherFd(name: string): number {
  const v = process.env[name];
  // Digits only; no regular expression: compiling one costs a launch ~0.1 ms.
  if (v === undefined || v === '' || [...v].some((c) => c < '0' || c > '9'))
    throw new ChError(`${name} ${v === undefined ? 'not set' : `bad: '${v}'`}: `
      + 'the front end runs only under ch-run\'s launcher (bin/ch-run)');
  return Number(v);
}

/** Hand over BUF, the decision; and MEMO, the record to keep for later launches, if the launcher asked. */
function handOff(buf: Buffer, memo?: Buffer): void {
  write(buf, memo);
  say(LAUNCHER.doneByte);
}

/** The decision BUF and the record MEMO (handOff), written; BUF null: written already. */
function write(buf: Buffer | null, memo?: Buffer): void {
  try {
    // By ch_host.node where it is built: node:fs's first writeSync is compiled from source (host-fs.ts).
    if (memo !== undefined && memo.length > 0) hostFs.writeAll(launcherFd(LAUNCHER.memoFd), memo);
    if (buf !== null) hostFs.writeAll(launcherFd(LAUNCHER.planFd), buf);
  } catch (err) {
    throw new ChError(`can't hand the plan to ch-run's launcher: ${why(err)}`);
  }
}

/** BYTE on the done pipe, which is then closed: what was written is whole (LAUNCHER.laterByte: the record follows). */
function say(byte: string): void {
  const done = launcherFd(LAUNCHER.doneFd);
  try {
    hostFs.writeAll(done, Buffer.from(byte));   // ASCII; no encoding named (plan-output.ts says why)
    hostFs.close(done);
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
ch-run itself failed; ${EXIT.cmd} if the command could not be executed; ${EXIT.usage} if the
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

/**
 * The record the launcher keeps of this plan (memo.ts), and under -v what
 * became of it. Said outside the recording: not part of what a memoized
 * launch replays.
 */
function memoRecord(rec: Recorder, plan: Plan, opts: RunOptions, untap: () => void): Buffer {
  // Which build planned: a changed front end, its addon, core or launcher is a miss.
  rec.subprocess([process.argv[1], join(PKG_ROOT, 'dist', 'ch-run-main.cjs'), HOST_ADDON_PATH, CORE_PATH, LAUNCHER_PATH]);
  // --join's tag as the launcher fills it in (memo.ts joinTemplate: only a
  // tag joinTag() made has one; a tag the user gave stays as is).
  const tagged = plan.join && rec.joinTag ? { ...plan, join: { ...plan.join, tag: rec.joinTag.placeholder } } : plan;
  const memo = rec.serialize(serializePlan(commandArgs(rec, tagged, opts), false), plan.verbose);
  untap();
  if (rec.refused !== null) log.info(`plan memo: not stored: ${rec.refused}`);
  return memo;
}

/**
 * The launcher's key left out the command line's last LAUNCHER.memoTail
 * arguments (what follows the first "--" and the word after it,
 * native/launcher/memo/store.c): does this plan hold for any arguments
 * there? It does when they are the command's own after its name, which the
 * planner passes through unread (the name it reads: the hint for a command
 * not found, planner.ts): the record then leaves them to the launch that
 * uses it, and PLAN's command ends with its name. Not when that "--" was
 * an option's value, or the command began before it (ch-run IMAGE CMD -- ARG):
 * then the plan holds for these arguments alone. So a job's steps that
 * differ only in their command's arguments plan once.
 */
function commandArgs(rec: Recorder, plan: Plan, opts: RunOptions): Plan {
  const n = process.env[LAUNCHER.memoTail];
  if (n === undefined) return plan;
  const args = process.argv.slice(2);
  const tail = args.slice(args.length - Number(n));
  if (opts.commandFrom === null || opts.commandFrom !== args.indexOf('--') + 1 || plan.argv !== opts.command
      || opts.command.length !== tail.length + 1) {
    rec.args = tail;
    return plan;
  }
  rec.args = 'slot';
  return { ...plan, argv: plan.argv.slice(0, 1) };
}

/**
 * The Host planning reads: a recording one when the launcher asked for a
 * memoizable plan (CH_RUN_MEMO_FD). First, which build plans (the package
 * root and build directory this code found when it loaded: paths.ts) is a
 * dependency of the plan.
 */
function plannerHost(): { host: Host; rec: Recorder | null } {
  if (process.env[LAUNCHER.memoFd] === undefined) return { host: liveHost(), rec: null };
  const rec = new Recorder(process.env);
  const host = recordingHost(rec);
  packageRoot(host.exists);
  buildDir(varsOf(host));
  return { host, rec };
}

/**
 * NODE_EXTRA_CA_CERTS back as the caller set it, where it was among the
 * variables (the plan keeps their order): the launcher renamed it for Node's
 * start-up, which loads the certificates (native/launcher/launcher.c,
 * hide_ca_certs). Before anything reads the environment. A variable set
 * anew goes last, so those after it are set again after it.
 */
function restoreCaCerts(env: NodeJS.ProcessEnv): void {
  const names = Object.keys(env);
  const at = names.indexOf(LAUNCHER.caCerts);
  if (at < 0) return;
  const after = names.slice(at + 1).map((n) => [n, env[n]] as const);
  const certs = env[LAUNCHER.caCerts];
  for (const n of names.slice(at)) delete env[n];
  env.NODE_EXTRA_CA_CERTS = certs;
  for (const [n, v] of after) env[n] = v;
}

/** What became of each bundle's code cache, by file name (tools/ch-run-loader.cjs); undefined without the loader. */
function codeCaches(): Record<string, string> | undefined {
  return (globalThis as Record<symbol, Record<string, string> | undefined>)[Symbol.for('ch-toolkit.codecache')];
}

/**
 * May the record come after the plan (recordLater)? Where the launcher
 * takes it so (LAUNCHER.memoLater: not in the test suite's modes, which
 * keep it before the command runs) and -v isn't given (what is said of the
 * record belongs before the command's output); and then only if this
 * process can detach (main).
 */
function recordsLater(opts: RunOptions): boolean {
  return opts.action === 'run' && opts.verbosity === 0 && process.env[LAUNCHER.memoFd] !== undefined
    && process.env[LAUNCHER.memoLater] !== undefined;
}

/**
 * The record of PLAN, already handed over: kept by the launcher's storer
 * while the container starts (native/launcher/memo/later.c), which waits
 * for LAUNCHER.doneByte on its pipe (LAUNCHER.memoLater). Its serialization
 * and the storer's check of it no longer delay the launch.
 */
function recordLater(rec: Recorder, plan: Plan, opts: RunOptions, untap: () => void): void {
  const storer = launcherFd(LAUNCHER.memoLater);
  hostFs.writeAll(launcherFd(LAUNCHER.memoFd), memoRecord(rec, plan, opts, untap));
  hostFs.writeAll(storer, Buffer.from(LAUNCHER.doneByte));
  hostFs.close(storer);
}

async function main(): Promise<number> {
  restoreCaCerts(process.env);
  const { host, rec } = plannerHost();
  [LAUNCHER.planFd, LAUNCHER.doneFd].forEach(launcherFd);   // fail early without the launcher
  const opts = parseRunArgs(process.argv.slice(2));
  log.verbosity = opts.verbosity;
  // Said outside the recording: not part of what a memoized launch replays.
  const caches = codeCaches();
  if (caches !== undefined) log.debug(`code cache: ${caches['ch-run-main.cjs']}`);
  log.debug(`host reads: ${hostFs.backend()}`);
  // Why no memoized plan served (native/launcher/memo/).
  const miss = process.env[LAUNCHER.memoMiss];
  if (miss) log.info(`plan memo: ${rec ? 'miss' : 'off'} (${miss})`);
  // From here, what the planner says is part of the plan: a memoized launch says it again.
  const tap = rec ? tapLog(rec, log) : null;
  if (opts.action === 'feature') {
    const check = FEATURES[opts.feature!];
    if (check === undefined)
      throw new ChError(`--feature: unknown feature '${opts.feature}' (known: ${Object.keys(FEATURES).join(', ')})`);
    const whyNot = check(host);
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
  // The launcher too: bin/ch-run (npm's) is a copy, and build/Release/ch-run may be run directly.
  refuseSetid(host, [process.argv[1], join(PKG_ROOT, 'dist', 'ch-run-main.cjs'), CORE_PATH, LAUNCHER_PATH]);
  let plan: Plan;
  try {
    plan = await buildPlan(host, log, opts);
  } catch (err) {
    reprintWarnings(opts.warnings);
    throw err;
  }
  // No argv here: a memoized plan's may be another launch's (commandArgs); the core's -v says it.
  log.debug(`plan: ${plan.mounts.length} mounts, cwd ${plan.cwd}`);
  const untap = () => tap?.untap();
  // The plan, then detached (the launcher's waiter, killed once the plan is
  // read, no longer takes us along; the caller's stdio let go), or the
  // record now.
  const later = rec !== null && recordsLater(opts);
  if (later) write(serializePlan(plan));
  if (later && hostFs.detach()) {
    say(LAUNCHER.laterByte);
    try {
      recordLater(rec!, plan, opts, untap);
    } catch {
      // No record this time; nothing to say (stdio is /dev/null now), nobody waits for our status.
    }
    // Nor for a clean exit: V8's teardown is CPU other launches want (200
    // cold launches 8 at a time, 2 CPUs: 4107 -> 3854 ms), as the launcher's
    // SIGKILL spares a front end that records first. Unless something waits
    // for 'exit' (the build's loader, writing its code cache).
    if (process.listenerCount('exit') === 0) process.kill(process.pid, 'SIGKILL');
    return 0;
  }
  const memo = rec ? memoRecord(rec, plan, opts, untap) : undefined;
  // Outside the recording too: a memoized launch loads no bundle.
  for (const [bundle, status] of Object.entries(caches ?? {}))
    if (bundle !== 'ch-run-main.cjs') log.debug(`code cache (${bundle}): ${status}`);
  write(later ? null : serializePlan(plan), memo);
  say(LAUNCHER.doneByte);
  return 0;
}

void runMain(log, main);

// ch-run's command line: Charliecloud 0.2x options, same names and meanings.

import { ChError } from '../util/log.js';
import { OptionSpec, parseArgs } from '../util/argp.js';
import { EXIT } from '../util/protocol.gen.js';
// A --bind, a --set-env/--unset-env and a peer count are the container policy's (mounts.ts, env.ts, join.ts).
import type { Bind } from '../container/mounts.js';
import type { EnvAction } from '../container/env.js';
import { countOf } from '../container/join.js';

export const RUN_OPTIONS: OptionSpec[] = [
  { name: 'bind', short: 'b', arg: 'required', argName: 'SRC[:DST[:ro]]',
    help: 'mount SRC at guest DST (default: SRC\'s own path if the image has it, else the next free /mnt/N); repeatable' },
  { name: 'cd', short: 'c', arg: 'required', argName: 'DIR', help: 'initial working directory in container' },
  { name: 'cdi-dirs', arg: 'required', argName: 'DIR[:DIR...]',
    help: 'CDI spec directories, later ones win (default: $CH_RUN_CDI_DIRS, else /etc/cdi:/var/run/cdi)' },
  { name: 'device', arg: 'required', argName: 'KIND=NAME[,...]',
    help: 'inject CDI device(s), e.g. nvidia.com/gpu=0, nvidia.com/gpu=all, amd.com/gpu=1; repeatable' },
  { name: 'env-no-expand', arg: 'none', help: 'don\'t expand $VAR in --set-env values (all of them, as Charliecloud)' },
  { name: 'feature', arg: 'required', argName: 'FEAT',
    help: 'exit 0 if feature FEAT is supported here, 1 if not: extglob, seccomp, squash, overlayfs' },
  { name: 'gid', short: 'g', arg: 'required', argName: 'GID', help: 'run as group GID within container' },
  { name: 'gpu', arg: 'optional', argName: 'VENDOR[,...]',
    help: 'inject host GPU devices, driver libraries and tools: nvidia, amd (default: every vendor found); '
      + 'from the vendor\'s CDI spec when there is one' },
  { name: 'home', arg: 'none', help: 'bind-mount your host $HOME at guest /home/$USER' },
  { name: 'ib', arg: 'optional', argName: 'HCA[,...]',
    help: 'inject host InfiniBand devices and verbs libraries; only these HCAs (e.g. mlx5_0), else $CH_IB_HCAS, else all' },
  { name: 'join', short: 'j', arg: 'none', help: 'use the same container (namespaces) as peer ch-run invocations' },
  { name: 'join-pid', arg: 'required', argName: 'PID',
    help: 'join the namespaces (container) of existing process PID, one of your own ch-run commands' },
  { name: 'join-ct', arg: 'required', argName: 'N', help: 'number of ch-run peers (implies --join)' },
  { name: 'join-tag', arg: 'required', argName: 'TAG', help: 'label for ch-run peer group (implies --join)' },
  { name: 'mount', short: 'm', arg: 'required', argName: 'DIR',
    help: 'SquashFS image mount point: a directory of yours, not a symlink, not writable by others '
      + '(default: mnt in the storage directory, $CH_IMAGE_STORAGE or /var/tmp/$USER.ch; the mount exists only in the container)' },
  { name: 'no-passwd', arg: 'none', help: 'don\'t bind-mount generated /etc/passwd and /etc/group' },
  { name: 'private-tmp', short: 't', arg: 'none', help: 'use container-private /tmp (a tmpfs)' },
  { name: 'quiet', short: 'q', arg: 'none', help: 'print less (only errors)' },
  { name: 'storage', short: 's', arg: 'required', argName: 'DIR',
    help: 'image storage directory, for IMAGE given as a name (default: $CH_IMAGE_STORAGE, else /var/tmp/$USER.ch)' },
  { name: 'seccomp', arg: 'none',
    help: 'fake success of privileged system calls that would fail (chown, device mknod, set*id, '
      + 'setgroups): lets fake root (-u 0) install packages; kexec/reboot are refused' },
  { name: 'set-env', arg: 'optional', argName: 'FILE|VAR=VALUE',
    help: 'set environment variables from FILE (a regular file of at most 1 MiB), or one VAR=VALUE '
      + '(no argument: image\'s /ch/environment, read inside the image)' },
  { name: 'set-env0', arg: 'optional', argName: 'FILE|VAR=VALUE',
    help: 'like --set-env, but FILE is NUL-separated (values may hold newlines)' },
  { name: 'uid', short: 'u', arg: 'required', argName: 'UID', help: 'run as user UID within container' },
  { name: 'unsafe', arg: 'none', help: 'accepted for Charliecloud compatibility; enables nothing here' },
  { name: 'unset-env', arg: 'required', argName: 'GLOB', help: 'unset environment variables whose names match GLOB' },
  { name: 'verbose', short: 'v', arg: 'none', help: 'be more verbose (repeatable)' },
  { name: 'warnings', arg: 'required', argName: 'N',
    help: 'if ch-run itself fails, first reprint its last N warnings (default 0)' },
  { name: 'write', short: 'w', arg: 'none', help: 'mount image read-write (default: read-only)' },
  { name: 'write-fake', short: 'W', arg: 'optional', argName: 'SIZE',
    help: 'make the image writable through a tmpfs overlay of SIZE (default: half of memory); '
      + 'writes vanish on exit, the image is untouched' },
  { name: 'help', short: '?', arg: 'none', help: 'print this help and exit' },
  { name: 'usage', arg: 'none', help: 'print a short usage message and exit' },
  { name: 'version', short: 'V', arg: 'none', help: 'print version and exit' },
];
// No -h: Charliecloud's ch-run (argp) has none, and scripts may rely on
// "invalid option -- 'h'" (exit 64) as they do on every other argp error.

/** argp's exit status for a command-line it can't parse (sysexits.h EX_USAGE). */
export const EXIT_USAGE = EXIT.usage;

export const FEATURES = ['extglob', 'seccomp', 'squash', 'overlayfs'] as const;
export type Feature = typeof FEATURES[number];

export interface RunOptions {
  image: string;
  command: string[];          // empty: the image's ENTRYPOINT/CMD
  /** Where COMMAND begins in the arguments parsed when it is all of what follows "--" (IMAGE alone before it); else null. */
  commandFrom: number | null;
  binds: Bind[];
  cd: string | null;
  uid: number | null;
  gid: number | null;
  envActions: EnvAction[];
  noPasswd: boolean;
  privateTmp: boolean;
  seccomp: boolean;
  writable: boolean;
  home: boolean;
  gpu: ('nvidia' | 'amd')[] | null | false;   // false: off; null: every vendor found
  ib: boolean;
  ibHcas: string[] | null;    // --ib=HCA,...: only these; null: all (or $CH_IB_HCAS)
  devices: string[];          // --device, as given (lib/devices/cdi.ts checks them)
  cdiDirs: string | null;
  join: boolean;
  joinPid: number | null;
  joinCt: number | null;
  joinTag: string | null;
  verbosity: number;
  storage: string | null;
  unsafe: boolean;
  warnings: number;
  feature: Feature | null;
  action: 'run' | 'help' | 'usage' | 'version' | 'feature';
  mountDir?: string;            // -m: SquashFS mount point
  writeFake?: string;           // -W: tmpfs overlay; its size ('' for the default)
}

function id(what: string, s: string): number {
  if (!/^[0-9]+$/.test(s) || Number(s) > 4294967294)
    throw new ChError(`invalid ${what}: '${s}' (must be a number 0..4294967294)`);
  return Number(s);
}

export function parseBind(spec: string): Bind {
  if (spec === '') throw new ChError('--bind: empty argument');
  const parts = spec.split(':');
  let readonly = false;
  if (parts.length === 3) {
    if (parts[2] !== 'ro' && parts[2] !== 'rw')
      throw new ChError(`--bind: bad option '${parts[2]}' in '${spec}' (want SRC[:DST[:ro|rw]])`);
    readonly = parts[2] === 'ro';
  } else if (parts.length > 3) {
    throw new ChError(`--bind: too many colons in '${spec}' (want SRC[:DST[:ro|rw]])`);
  }
  const [src, dst] = parts;
  if (src === '') throw new ChError(`--bind: empty source in '${spec}'`);
  if (dst === '') throw new ChError(`--bind: empty destination in '${spec}'`);
  if (dst !== undefined && !dst.startsWith('/'))
    throw new ChError(`--bind: destination must be absolute: '${dst}' in '${spec}'`);
  return { src, dst: dst ?? null, readonly, spec };
}

/** Each option's effect on the options (VALUE: its argument; EXPAND: --set-env's expansion, global; NAME: as given). */
type Setter = (o: RunOptions, value: string | undefined, expand: boolean, name: string) => void;

function setGpu(o: RunOptions, value: string | undefined): void {
  if (value === undefined) { o.gpu = null; return; }
  o.gpu = [];
  for (const v of value.split(',')) {
    if (v !== 'nvidia' && v !== 'amd') throw new ChError(`--gpu: unknown vendor '${v}' (want nvidia, amd)`);
    if (!o.gpu.includes(v)) o.gpu.push(v);
  }
}

function setJoinCt(o: RunOptions, value: string | undefined): void {
  // Charliecloud's words for what its parse_int() refuses, then ours.
  const n = countOf(value!);
  if (typeof n === 'string' && n !== 'not positive') throw new ChError(`--join-ct: ${n}: '${value}'`);
  if (typeof n === 'string' || n > 1 << 20)
    throw new ChError(`--join-ct: must be a positive integer: '${value}'`);
  o.joinCt = n; o.join = true;
}

function setEnv(o: RunOptions, value: string | undefined, expand: boolean, name: string): void {
  if (value !== undefined && value.includes('='))
    o.envActions.push({ kind: 'set-var', assignment: value, expand });
  else if (value === '')
    throw new ChError(`--${name}: empty argument`);
  else
    o.envActions.push({ kind: 'set-file', path: value ?? null, expand, nul: name === 'set-env0' });
}

/** What each option does; --help, --usage and --version end the parse (parseRunArgs). */
const SETTERS: Record<string, Setter> = {
  'bind': (o, value) => { o.binds.push(parseBind(value!)); },
  'cd': (o, value) => {
    if (!value!.startsWith('/')) throw new ChError(`--cd: must be an absolute path: '${value}'`);
    o.cd = value!;
  },
  'cdi-dirs': (o, value) => {
    if (value === '') throw new ChError('--cdi-dirs: must not be empty');
    o.cdiDirs = value!;
  },
  'device': (o, value) => {
    if (!/^[^=]+=[^=]+$/.test(value!)) throw new ChError(`--device: bad device '${value}' (want KIND=NAME, e.g. nvidia.com/gpu=0)`);
    o.devices.push(value!);
  },
  'env-no-expand': () => {},   // global: applied by parseRunArgs
  'gid': (o, value) => { o.gid = id('GID', value!); },
  'gpu': setGpu,
  'feature': (o, value) => {
    if (!(FEATURES as readonly string[]).includes(value!))
      throw new ChError(`--feature: unknown feature '${value}' (want ${FEATURES.join(', ')})`);
    o.feature = value as Feature; o.action = 'feature';
  },
  'home': (o) => { o.home = true; },
  'ib': (o, value) => {
    o.ib = true;
    if (value !== undefined) {
      o.ibHcas = value.split(',');
      if (!o.ibHcas.every((h) => /^[A-Za-z0-9_.-]+$/.test(h))) throw new ChError(`--ib: bad HCA list '${value}' (want e.g. mlx5_0,mlx5_1)`);
    }
  },
  'join': (o) => { o.join = true; },
  'join-pid': (o, value) => {
    if (!/^[0-9]+$/.test(value!) || Number(value) < 1 || Number(value) > 4194304)
      throw new ChError(`--join-pid: must be a process ID: '${value}'`);
    o.joinPid = Number(value);
  },
  'join-ct': setJoinCt,
  'join-tag': (o, value) => {
    if (value === '') throw new ChError('--join-tag: must not be empty');
    o.joinTag = value!; o.join = true;
  },
  'no-passwd': (o) => { o.noPasswd = true; },
  'private-tmp': (o) => { o.privateTmp = true; },
  'seccomp': (o) => { o.seccomp = true; },
  'quiet': (o) => { o.verbosity = Math.min(o.verbosity, 0) - 1; },
  'set-env': setEnv,
  'set-env0': setEnv,
  'storage': (o, value) => {
    if (value === '') throw new ChError('--storage: DIR must not be empty');
    o.storage = value!;
  },
  'uid': (o, value) => { o.uid = id('UID', value!); },
  'unsafe': (o) => { o.unsafe = true; },
  'warnings': (o, value) => {
    if (!/^[0-9]+$/.test(value!) || Number(value) > 1000)
      throw new ChError(`--warnings: must be a number 0..1000: '${value}'`);
    o.warnings = Number(value);
  },
  'unset-env': (o, value) => {
    if (value === '') throw new ChError('--unset-env: GLOB must not be empty');
    o.envActions.push({ kind: 'unset', glob: value! });
  },
  'verbose': (o) => { o.verbosity = Math.max(o.verbosity, 0) + 1; },
  'write': (o) => { o.writable = true; },
  'write-fake': (o, value) => {
    if (value !== undefined && !/^[0-9]+[kmgKMG%]?$/.test(value))
      throw new ChError(`--write-fake: bad size '${value}' (want a number, with k, m, g or %)`);
    o.writeFake = value ?? '';
  },
  'mount': (o, value) => {
    if (value === '') throw new ChError('--mount: DIR must not be empty');
    o.mountDir = value!;
  },
  'help': (o) => { o.action = 'help'; },
  'usage': (o) => { o.action = 'usage'; },
  'version': (o) => { o.action = 'version'; },
};

/** The options before any is given. */
function defaults(): RunOptions {
  return {
    image: '', command: [], commandFrom: null, binds: [], cd: null, uid: null, gid: null, envActions: [],
    noPasswd: false, privateTmp: false, seccomp: false, writable: false, home: false, gpu: false, ib: false, ibHcas: null,
    devices: [], cdiDirs: null, join: false, joinCt: null,
    joinTag: null, verbosity: 0, action: 'run',
    joinPid: null, storage: null, unsafe: false, warnings: 0, feature: null,
  };
}

/** Options that can't go together. */
function checkCombinations(o: RunOptions): void {
  if (o.joinPid !== null && o.join)
    throw new ChError('--join-pid: can\'t be combined with --join, --join-ct or --join-tag');
  // The container exists already: these would change nothing in it, and -b/-w
  // could still create mount points in the image on the way.
  if (o.joinPid !== null && (o.binds.length > 0 || o.home || o.writable))
    throw new ChError('--join-pid: can\'t be combined with --bind, --home or -w (the container exists already)');
}

export function parseRunArgs(argv: string[]): RunOptions {
  let parsed;
  try {
    parsed = parseArgs('ch-run', RUN_OPTIONS, argv);
  } catch (err) {
    if (err instanceof ChError) throw new ChError(err.message, EXIT_USAGE);
    throw err;
  }
  const o = defaults();
  // --env-no-expand anywhere applies to every --set-env, as in Charliecloud.
  const expand = !parsed.options.some((x) => x.name === 'env-no-expand');
  for (const { name, value } of parsed.options) {
    SETTERS[name]?.(o, value, expand, name);
    // --help, --usage, --version: what follows is not looked at.
    if (o.action === 'help' || o.action === 'usage' || o.action === 'version') return o;
  }
  checkCombinations(o);
  if (o.action === 'feature') return o;   // no IMAGE needed
  const words = [...parsed.positional, ...(parsed.rest ?? [])];
  if (o.writable && o.writeFake !== undefined) throw new ChError('--write and --write-fake are exclusive');
  if (words.length === 0) throw new ChError("no IMAGE specified\nTry 'ch-run --help' for more information.");
  o.image = words[0];
  if (o.image === '') throw new ChError('IMAGE must not be an empty string');
  o.command = words.slice(1);
  if (parsed.rest !== null && parsed.positional.length === 1) o.commandFrom = argv.length - parsed.rest.length;
  return o;
}

export const RUN_USAGE = 'Usage: ch-run [OPTION...] IMAGE -- CMD [ARG...]';

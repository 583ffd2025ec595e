// Running a command in an image directory as fake root, shared by RUN and
// `ch-image modify`: ch-run's launcher with the image writable (-w), uid and
// gid 0 in the container (-u0 -g0), --seccomp root emulation (chown, mknod of
// devices, set*id faked: docs/design.md, "--seccomp: root emulation"), the
// image's own /etc/passwd and /etc/group (--no-passwd: ch-run's generated
// ones would hide the users a package adds, and useradd can't write them),
// and only the environment given (a root-like PATH with sbin unless the image
// sets one). The command is the user's process: the build runs as the user.

import { spawn } from 'node:child_process';
import { closeSync, openSync, unlinkSync, writeSync, constants as C } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { LAUNCHER_PATH } from '../util/paths.js';
import { ChError } from '../util/log.js';
import { require_os_signal } from '../util/proc.js';

/** Docker's PATH for root when the image sets none: with the sbin directories useradd and dpkg live in. */
export const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** ch-run's options for fake root: RUN's and modify's. */
// --private-tmp: a RUN's /tmp is a tmpfs of its own, neither the host's (which
// a build would litter, and could read) nor the image's (ch-run mounts over it).
export const FAKE_ROOT_OPTIONS = ['-w', '-u0', '-g0', '--seccomp', '--no-passwd', '--private-tmp', '--env-no-expand', '--unset-env=*'];

export interface FakeRootRun {
  /** The image root, a directory of the user's. */
  root: string;
  argv: string[];
  /** The environment inside, in order (PATH added if missing). */
  env: [string, string][];
  /** Working directory inside ('' : /). */
  cwd: string;
  /** A private directory to write the environment file in. */
  scratch: string;
  signal?: AbortSignal;
  /** stdio for the command (default: inherit). */
  stdio?: 'inherit' | 'pipe';
}

/** ch-run's command line for R, its environment file being ENVFILE. */
export function fakeRootArgv(r: FakeRootRun, envFile: string): string[] {
  return [LAUNCHER_PATH, ...FAKE_ROOT_OPTIONS, `--set-env0=${envFile}`, ...(r.cwd ? [`--cd=${r.cwd}`] : []), r.root, '--', ...r.argv];
}

/** R's environment with a root-like PATH if it has none. */
export function withPath(env: [string, string][]): [string, string][] {
  return env.some(([k]) => k === 'PATH') ? env : [['PATH', ROOT_PATH], ...env];
}

/** Run R; resolves to its exit status (128+N for signal N). */
export async function runFakeRoot(r: FakeRootRun): Promise<number> {
  const envFile = join(r.scratch, `env.${randomBytes(6).toString('hex')}`);
  const fd = openSync(envFile, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  try {
    for (const [k, v] of withPath(r.env)) writeSync(fd, `${k}=${v}\0`);
  } finally {
    closeSync(fd);
  }
  try {
    const argv = fakeRootArgv(r, envFile);
    return await new Promise<number>((resolve, reject) => {
      const p = spawn(argv[0], argv.slice(1), { stdio: r.stdio ?? 'inherit', signal: r.signal, killSignal: 'SIGKILL' });
      p.on('error', (e: NodeJS.ErrnoException) => {
        if (e.name === 'AbortError') return;   // 'close' follows with the signal
        reject(new ChError(`can't run ch-run (${argv[0]}): ${e.message}`, 1));
      });
      p.on('close', (code, sig) => resolve(code ?? 128 + (sig ? require_os_signal(sig) : 0)));
    });
  } finally {
    try { unlinkSync(envFile); } catch { /* gone */ }
  }
}

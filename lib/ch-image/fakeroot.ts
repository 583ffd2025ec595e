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
  /** In a process group of its own, without stdin (RUN); else in ours, with the terminal (modify). */
  detach?: boolean;
}

/** ch-run's command line for R, its environment file being ENVFILE. */
export function fakeRootArgv(r: FakeRootRun, envFile: string): string[] {
  return [LAUNCHER_PATH, ...FAKE_ROOT_OPTIONS, `--set-env0=${envFile}`, ...(r.cwd ? [`--cd=${r.cwd}`] : []), r.root, '--', ...r.argv];
}

/** R's environment with root's PATH and HOME (as Docker's RUN has them) unless it sets them. */
export function withPath(env: [string, string][]): [string, string][] {
  const add: [string, string][] = [];
  if (!env.some(([k]) => k === 'PATH')) add.push(['PATH', ROOT_PATH]);
  if (!env.some(([k]) => k === 'HOME')) add.push(['HOME', '/root']);
  return [...add, ...env];
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
      // CH_RUN_NO_CACHE: each launch is one of a kind (a work tree, an
      // environment file), not worth a memoized plan that would evict others.
      // A build's RUN (detach) has a process group of its own, killed whole
      // when the build is interrupted: nothing it started outlives the build.
      // modify's command stays in the terminal's group, to be interactive.
      const p = spawn(argv[0], argv.slice(1), { stdio: r.detach ? ['ignore', 'inherit', 'inherit'] : 'inherit',
        detached: r.detach ?? false, env: { ...process.env, CH_RUN_NO_CACHE: '1' } });
      const kill = () => { try { process.kill(r.detach ? -p.pid! : p.pid!, 'SIGKILL'); } catch { /* gone */ } };
      if (r.signal?.aborted) kill();
      r.signal?.addEventListener('abort', kill);
      p.on('error', (e: NodeJS.ErrnoException) => reject(new ChError(`can't run ch-run (${argv[0]}): ${e.message}`, 1)));
      p.on('close', (code, sig) => {
        r.signal?.removeEventListener('abort', kill);
        resolve(code ?? 128 + (sig ? require_os_signal(sig) : 0));
      });
    });
  } finally {
    try { unlinkSync(envFile); } catch { /* gone */ }
  }
}

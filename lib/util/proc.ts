// Running helper programs (builders): capture output, or stream it.

import { spawn, type SpawnOptions } from 'node:child_process';
import { constants } from 'node:os';
import { ChError } from './log.js';

/** The signals a command catches to remove what it made before exiting 128+N (ch-tar2dir, ch-pull, ch-convert). */
export const INTERRUPTS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface Captured { code: number; stdout: string; stderr: string }

/** Run ARGV, capturing stdout and stderr; ENOENT becomes a ChError. */
export function capture(argv: string[], opts: SpawnOptions = {}): Promise<Captured> {
  return new Promise((resolve, reject) => {
    const c = spawn(argv[0], argv.slice(1), { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [], err: Buffer[] = [];
    c.stdout!.on('data', (d) => out.push(d));
    c.stderr!.on('data', (d) => err.push(d));
    c.on('error', (e: NodeJS.ErrnoException) =>
      reject(new ChError(`can't run ${argv[0]}: ${e.code === 'ENOENT' ? 'not found' : e.message} (${e.code})`)));
    c.on('close', (code, sig) => resolve({
      code: code ?? 128 + (sig ? require_os_signal(sig) : 0),
      stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(),
    }));
  });
}

export function require_os_signal(sig: NodeJS.Signals): number {
  return (constants.signals as Record<string, number>)[sig] ?? 0;
}

/** The last line of a command's stderr, for error messages. */
export function lastLine(s: string): string {
  return s.trim().split('\n').pop() ?? '';
}

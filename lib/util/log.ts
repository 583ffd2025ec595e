// Messages in the form the whole toolkit uses: "PROG[PID]: error: what: why".
// Errors that should end the program are thrown as ChError and reported once,
// at the top, with their exit status.

import { EXIT } from './protocol.gen.js';

export const EXIT_ERR = EXIT.chrun;   // ch-run's own failures (Charliecloud's value)

export class ChError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT_ERR) {
    super(message);
    this.name = 'ChError';
  }
}

export class Log {
  /** Also given every line said, less its prefix: ch-run's memoized plans replay what planning said (lib/run/recording-host.ts tapLog). */
  tap: ((line: string) => void) | null = null;

  constructor(readonly prog: string, public verbosity = 0) {}

  private line(kind: string, msg: string): void {
    process.stderr.write(`${this.prog}[${process.pid}]: ${kind}${msg}\n`);
    this.tap?.(`${kind}${msg}`);
  }
  error(msg: string): void { this.line('error: ', msg); }
  warn(msg: string): void { if (this.verbosity >= 0) this.line('warning: ', msg); }
  info(msg: string): void { if (this.verbosity >= 1) this.line('', msg); }
  debug(msg: string): void { if (this.verbosity >= 2) this.line('', msg); }
}

/** Describe a Node system error as "why (ECODE)". */
export function why(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    const text = e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ .*$/, '');
    return `${text} (${e.code})`;
  }
  return String((e as Error)?.message ?? e);
}

/**
 * Is ERR a ChError? By name and status, not instanceof: a command's code can
 * span bundles (ch-run loads dist/ch-run-devices.cjs on demand), each with its
 * own copy of the class.
 */
export function isChError(err: unknown): err is ChError {
  return err instanceof Error && err.name === 'ChError' && typeof (err as ChError).exitCode === 'number';
}

/** Run MAIN; report a ChError (or anything else) once and exit with its status. */
export async function runMain(log: Log, main: () => Promise<number | void> | number | void): Promise<void> {
  try {
    const rc = await main();
    process.exitCode = typeof rc === 'number' ? rc : 0;
  } catch (err) {
    if (isChError(err)) {
      log.error(err.message);
      process.exit(err.exitCode);
    }
    log.error(`internal error: ${(err as Error)?.stack ?? err}`);
    process.exit(EXIT_ERR);
  }
}

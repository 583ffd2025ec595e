// SIGINT, SIGTERM and SIGHUP during a conversion: caught, so that what it
// made is removed before ch-convert exits 128+N.

import { constants as osConstants } from 'node:os';
import { ChError } from '../util/log.js';
import { INTERRUPTS } from '../util/proc.js';

/**
 * Run CONVERSION with SIGINT, SIGTERM and SIGHUP caught: they abort it
 * (a pull at once; a tool we run when it returns) so that its finally
 * clauses remove the temporaries, then the status is 128+N.
 */
export async function interruptible(conversion: (signal: AbortSignal) => Promise<number>): Promise<number> {
  const abort = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { caught ??= sig; abort.abort(new ChError(`interrupted by ${sig}`, 128 + osConstants.signals[sig])); };
  for (const s of INTERRUPTS) process.on(s, onSignal);
  try {
    return await conversion(abort.signal);
  } catch (err) {
    await signalsDelivered();   // a tool killed by the signal fails before its handler has run
    if (caught) throw new ChError(`interrupted by ${caught}; nothing written, no temporary left`, 128 + osConstants.signals[caught]);
    throw err;
  } finally {
    for (const s of INTERRUPTS) process.off(s, onSignal);
  }
}

/**
 * Let the event loop read the signals that came while a tool ran
 * synchronously: their handlers run in its poll phase. One setImmediate is
 * not enough when we are already in a poll-phase callback (after awaiting
 * the addon's lock, a thread-pool completion): the immediate then runs in
 * this iteration's check phase, before the next poll. A second one always
 * comes after a poll phase.
 */
async function signalsDelivered(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise((res) => setImmediate(res));
}

/** Throw if a signal came; after letting the event loop run, as a tool run synchronously holds its handlers back. */
export async function checkInterrupted(signal: AbortSignal): Promise<void> {
  await signalsDelivered();
  if (signal.aborted) throw signal.reason;
}

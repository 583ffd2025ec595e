// Defaults for --join, as Charliecloud computes them: the peer count from
// the launcher's local task count, the group tag from the Slurm step (or the
// parent process, which all ranks of one mpirun share on a node).

import { ChError } from '../util/log.js';
import type { Host } from './host.js';

/** Expand Slurm's compressed task list ("2(x3),1") and pick this node's entry. */
export function tasksOnThisNode(list: string, nodeId: number): number | null {
  const counts: number[] = [];
  for (const part of list.split(',')) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return null;
    for (let i = 0; i < Number(m[2] ?? 1); i++) counts.push(Number(m[1]));
  }
  return counts[nodeId] ?? counts[0] ?? null;
}

/**
 * A peer count as Charliecloud's parse_int() judges it, in its words: the
 * count, or why not ("no digits found", "out of range", "extra characters
 * after digits"; "not positive" where it says "no valid peer group size").
 */
export function countOf(s: string): number | string {
  const m = /^\s*([+-]?)(\d+)(.*)$/s.exec(s);
  if (!m) return 'no digits found';
  const n = Number(m[1] + m[2]);
  if (n < -(2 ** 31) || n > 2 ** 31 - 1) return 'out of range';
  if (m[3] !== '') return 'extra characters after digits';
  if (n <= 0) return 'not positive';
  return n;
}

/** SAID gets Charliecloud's -v line naming where a --join default came from. */
export type Say = (line: string) => void;

export function joinCount(host: Host, said: Say = () => {}): number {
  const bad: string[] = [];
  const from = (v: string, n: number) => { said(`join: peer group size from ${v}`); return n; };
  const usable = (v: string): number | null => {
    const c = countOf(host.env(v)!);
    if (typeof c === 'number') return c;
    bad.push(`${v}: ${c}: '${host.env(v)}'`);
    return null;
  };
  const set = (v: string) => host.env(v) !== undefined && host.env(v) !== '';
  if (set('OMPI_COMM_WORLD_LOCAL_SIZE')) {
    const n = usable('OMPI_COMM_WORLD_LOCAL_SIZE');
    if (n) return from('OMPI_COMM_WORLD_LOCAL_SIZE', n);
  }
  if (set('SLURM_STEP_TASKS_PER_NODE')) {
    const n = tasksOnThisNode(host.env('SLURM_STEP_TASKS_PER_NODE')!, Number(host.env('SLURM_NODEID') ?? 0));
    if (n) return from('SLURM_STEP_TASKS_PER_NODE', n);
    bad.push(`SLURM_STEP_TASKS_PER_NODE: no count for this node: '${host.env('SLURM_STEP_TASKS_PER_NODE')}'`);
  }
  if (set('SLURM_CPUS_ON_NODE')) {
    const n = usable('SLURM_CPUS_ON_NODE');
    if (n) return from('SLURM_CPUS_ON_NODE', n);
  }
  const vars = ['OMPI_COMM_WORLD_LOCAL_SIZE', 'SLURM_STEP_TASKS_PER_NODE', 'SLURM_CPUS_ON_NODE'];
  // "join: no valid peer group size found" is Charliecloud's message.
  throw new ChError('--join: no valid peer group size found: give --join-ct, or run under mpirun or srun '
    + (bad.length > 0 ? `(unusable: ${bad.join('; ')})` : `(${vars.join(', ')} all unset)`));
}

export function joinTag(host: Host, said: Say = () => {}): string {
  // The values are no dependency of a memoized plan: the tag is a template
  // (host.envFilled) the launcher fills in from its own environment, so the
  // ranks of every step of a job hit, not only those of the step that
  // planned. What the tag's form depends on (is there a step, is the node
  // id a number) is, in that order.
  if (host.envTest('SLURM_STEP_ID', 'nonempty')) {
    // The node id too: several slurmd on one host (multiple-slurmd, fake nodes)
    // share /dev/shm, and their tasks of one step must form one group per node.
    const numeric = host.envTest('SLURM_NODEID', 'digits');
    const job = host.envTest('SLURM_JOB_ID', 'set');
    said('join: peer group tag from SLURM_STEP_ID (with SLURM_JOB_ID and SLURM_NODEID)');
    return host.envFilled(`slurm-${job ? '${SLURM_JOB_ID}' : 'nojob'}.\${SLURM_STEP_ID}${numeric ? '.${SLURM_NODEID}' : ''}`);
  }
  said('join: peer group tag from getppid(2)');
  return `ppid-${callerPid(host)}`;
}

/**
 * The process that started ch-run: the parent of ch-run's launcher, whose
 * grandchild this front end is (native/launcher/launcher.c forks a waiter,
 * which forks Node). Ranks that one mpirun started on a node share it. The
 * launcher waits for us, so it is there to ask.
 */
export function callerPid(host: Host): number {
  const { pid, from } = host.callerPid();
  if (pid !== null) return pid;
  throw new ChError(`--join: can't find the process that started ch-run (${from}); give --join-tag`);
}

export function joinTimeoutMs(host: Host): number {
  const s = host.env('CH_RUN_JOIN_TIMEOUT');
  if (s === undefined || s === '') return 30_000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s) || Number(s) <= 0)
    throw new ChError(`CH_RUN_JOIN_TIMEOUT: want seconds > 0, got '${s}'`);
  return Math.round(Number(s) * 1000);
}

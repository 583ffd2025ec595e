// Defaults for --join, as Charliecloud computes them: the peer count from
// the launcher's local task count, the group tag from the Slurm step (or the
// parent process, which all ranks of one mpirun share on a node).

import { readFileSync } from 'node:fs';
import { ChError } from '../util/log.js';
import { recordCallerPid, recorder, unrecorded } from './memo.js';
import { countOf } from './options.js';

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

/** SAID gets Charliecloud's -v line naming where a --join default came from. */
export type Say = (line: string) => void;

export function joinCount(env: NodeJS.ProcessEnv, said: Say = () => {}): number {
  const bad: string[] = [];
  const from = (v: string, n: number) => { said(`join: peer group size from ${v}`); return n; };
  const usable = (v: string): number | null => {
    const c = countOf(env[v]!);
    if (typeof c === 'number') return c;
    bad.push(`${v}: ${c}: '${env[v]}'`);
    return null;
  };
  const set = (v: string) => env[v] !== undefined && env[v] !== '';
  if (set('OMPI_COMM_WORLD_LOCAL_SIZE')) {
    const n = usable('OMPI_COMM_WORLD_LOCAL_SIZE');
    if (n) return from('OMPI_COMM_WORLD_LOCAL_SIZE', n);
  }
  if (set('SLURM_STEP_TASKS_PER_NODE')) {
    const n = tasksOnThisNode(env.SLURM_STEP_TASKS_PER_NODE!, Number(env.SLURM_NODEID ?? 0));
    if (n) return from('SLURM_STEP_TASKS_PER_NODE', n);
    bad.push(`SLURM_STEP_TASKS_PER_NODE: no count for this node: '${env.SLURM_STEP_TASKS_PER_NODE}'`);
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

export function joinTag(env: NodeJS.ProcessEnv, said: Say = () => {}): string {
  // Read without making the values dependencies of a memoized plan: the
  // tag is recorded as a template the launcher fills in from its own
  // environment (memo.ts), so the ranks of every step of a job hit, not
  // only those of the step that planned. What the tag's form depends on
  // (is there a step, is the node id a number) is recorded instead.
  const [step, job, node] = unrecorded(() => [env.SLURM_STEP_ID, env.SLURM_JOB_ID, env.SLURM_NODEID]);
  const rec = recorder();
  rec?.envCondition('SLURM_STEP_ID', 'nonempty', step !== undefined && step !== '');
  if (step !== undefined && step !== '') {
    // The node id too: several slurmd on one host (multiple-slurmd, fake nodes)
    // share /dev/shm, and their tasks of one step must form one group per node.
    const numeric = node !== undefined && /^[0-9]+$/.test(node);
    rec?.envCondition('SLURM_NODEID', 'digits', numeric);
    rec?.envCondition('SLURM_JOB_ID', 'set', job !== undefined);
    const fill = (name: string) => '${' + name + '}';   // filled in by the launcher
    rec?.joinTemplate(`slurm-${job !== undefined ? fill('SLURM_JOB_ID') : 'nojob'}.${fill('SLURM_STEP_ID')}`
      + (numeric ? `.${fill('SLURM_NODEID')}` : ''));
    said('join: peer group tag from SLURM_STEP_ID (with SLURM_JOB_ID and SLURM_NODEID)');
    return `slurm-${job ?? 'nojob'}.${step}${numeric ? `.${node}` : ''}`;
  }
  said('join: peer group tag from getppid(2)');
  return `ppid-${callerPid()}`;
}

/**
 * The process that started ch-run: the parent of ch-run's launcher, whose
 * child this front end is (addon/launcher.c forks it). Ranks that one mpirun
 * started on a node share it. The launcher waits for us, so it is there to ask.
 */
export function callerPid(): number {
  try {
    // Our own parent's state, not a dependency: the launcher compares its parent's PID instead.
    const stat = unrecorded(() => readFileSync(`/proc/${process.ppid}/stat`, 'utf8'));
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (Number.isInteger(ppid) && ppid > 0) { recordCallerPid(ppid); return ppid; }
  } catch { /* below */ }
  throw new ChError(`--join: can't find the process that started ch-run (/proc/${process.ppid}/stat); give --join-tag`);
}

export function joinTimeoutMs(env: NodeJS.ProcessEnv): number {
  const s = env.CH_RUN_JOIN_TIMEOUT;
  if (s === undefined || s === '') return 30_000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s) || Number(s) <= 0)
    throw new ChError(`CH_RUN_JOIN_TIMEOUT: want seconds > 0, got '${s}'`);
  return Math.round(Number(s) * 1000);
}

// What MPI launchers (Slurm's PMIx plugin, mpirun) need from the container,
// decided here so users add no binds or variables of their own: the host
// directories the launcher hands the ranks by path (mounts.ts makes them
// visible at that path), and environment defaults, consulted by main.ts
// after the mounts are known. A variable the user (or the host environment)
// already set is left alone.

import type { Host } from './host.js';
import { dirname, isAbsolute, join } from 'node:path';
import type { MountOp } from './plan.js';

/** A host directory the ranks get the path of from their launcher: it must be at that path inside. */
export interface LauncherDir {
  path: string;
  what: string;
  /** It can't be shown inside: set environment defaults that do without it; say what they do. */
  ifHidden: (env: Map<string, string>) => string;
}

/** Is host path P visible at the same path inside, through one of the binds? */
function visibleInside(p: string, mounts: MountOp[]): boolean {
  return mounts.some((m) => m.kind === 'bind' && m.src === m.dst
    && (p === m.src || p.startsWith(m.src.endsWith('/') ? m.src : m.src + '/')));
}

/** P without trailing slashes, if it is a plain absolute path (no "." or ".." components); else null. */
function plainPath(p: string | undefined): string | null {
  if (!p || !isAbsolute(p)) return null;
  const q = p.replace(/\/+$/, '') || '/';
  return q.split('/').some((c) => c === '.' || c === '..') ? null : q;
}

/**
 * The value of KEY in slurm.conf FILE (keys are case-insensitive, the last
 * one wins, Include files are read where they stand), or null. Slurm's own
 * parser is the authority; this reads the simple KEY=VALUE lines sites write.
 */
export function slurmConfValue(host: Host, file: string, key: string, depth = 0): string | null {
  let text: string;
  try { text = host.readFile(file, 'utf8'); } catch { return null; }
  let value: string | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const inc = /^include\s+(\S+)$/i.exec(line);
    if (inc && depth < 4) {
      const v = slurmConfValue(host, isAbsolute(inc[1]) ? inc[1] : join(dirname(file), inc[1]), key, depth + 1);
      if (v !== null) value = v;
      continue;
    }
    for (const m of line.matchAll(/(\w+)=("[^"]*"|\S+)/g))
      if (m[1].toLowerCase() === key.toLowerCase()) value = m[2].replace(/^"(.*)"$/, '$1');
  }
  return value;
}

/**
 * Where Slurm's PMIx plugin puts its clients' directory on this node:
 * $SLURM_PMIX_TMPDIR if the job set it, else slurm.conf's TmpFS (%n: this
 * node's name, %h: its host name), else /tmp (Slurm's default).
 */
function slurmPmixBase(host: Host, env: Map<string, string>): string | null {
  const set = env.get('SLURM_PMIX_TMPDIR');
  if (set) return plainPath(set);
  const conf = env.get('SLURM_CONF') ?? '/etc/slurm/slurm.conf';
  const tmpfs = slurmConfValue(host, conf, 'TmpFS');
  if (tmpfs === null) return '/tmp';
  const node = env.get('SLURMD_NODENAME') ?? host.hostname().split('.')[0];
  return plainPath(tmpfs.replaceAll('%n', node).replaceAll('%h', host.hostname().split('.')[0]));
}

/**
 * The directories the step's launcher handed the ranks by path:
 * - PMIx server's (PMIX_SERVER_TMPDIR, under SlurmdSpoolDir with srun): its
 *   shared-memory data store (gds ds12/ds21); without it, the hash store.
 * - Slurm PMIx clients' (TmpFS/spmix_appdir_UID_JOB.STEP; before Slurm
 *   22.05 without UID): Open MPI 4.1 makes its session directory there and
 *   fails in MPI_Init (orte/util/session_dir.c) when it can't.
 * The clients' directory lies in TmpFS, which every user can write: it is
 * used only if it is a directory (not a link) owned by UID, which no one
 * else can then swap.
 */
function isDir(host: Host, p: string): boolean {
  try { return host.stat(p).isDirectory(); } catch { return false; }
}

export function launcherDirs(host: Host, env: Map<string, string>, uid: number, log?: (msg: string) => void): LauncherDir[] {
  const dirs: LauncherDir[] = [];
  const srv = plainPath(env.get('PMIX_SERVER_TMPDIR'));
  // Only one that exists: a stale or foreign PMIX_SERVER_TMPDIR (a rank started
  // by hand, a variable left over) is no reason to fail; PMIx then has no
  // data store to attach anyway and launcherEnv picks the hash store.
  if (srv && isDir(host, srv)) dirs.push({ path: srv, what: 'PMIx server directory (PMIX_SERVER_TMPDIR)',
    ifHidden: () => 'PMIx uses its hash store instead (PMIX_MCA_gds=hash)' });   // set by launcherEnv
  else if (srv) log?.(`PMIx server directory ${srv} (PMIX_SERVER_TMPDIR) doesn't exist here; not shown`);
  // Only under PMIx: the step's id is then a dependency of the plan (a memoized
  // plan, memo.ts, holds for every step of a job that doesn't use PMIx).
  const pmix = env.has('PMIX_NAMESPACE');
  const job = pmix ? env.get('SLURM_JOB_ID') : undefined, step = pmix ? env.get('SLURM_STEP_ID') : undefined;
  if (pmix && job && step && /^\d+$/.test(job)) {
    const base = slurmPmixBase(host, env);
    const node = env.get('SLURMD_NODENAME') || host.hostname().split('.')[0];
    const names = [`spmix_appdir_${uid}_${job}.${step}`, `spmix_appdir_${job}.${step}`];
    const found = base === null ? undefined : names.map((n) => join(base, n)).find((p) => {
      try {
        const st = host.lstat(p);
        return st.isDirectory() && st.uid === uid;
      } catch { return false; }
    });
    if (found) dirs.push({ path: found, what: 'Slurm PMIx client directory (in TmpFS)',
      ifHidden: (e) => sessionElsewhere(e, `/tmp/ompi.${node}.${uid}`) });
    // Not found (a planted link, an unreadable slurm.conf, another Slurm's naming): Open MPI can still
    // make its session directory in /tmp.
    else log?.(`no Slurm PMIx client directory ${names[0]} of this step in ${base ?? '(TmpFS unusable)'}; `
      + sessionElsewhere(env, `/tmp/ompi.${node}.${uid}`));
  }
  return dirs;
}

/**
 * The PMIx clients' directory can't be shown (the image lacks a top-level
 * directory of TmpFS, say /local, and is read-only): Open MPI, which makes
 * its session directory there, is told to make it in the container's /tmp
 * instead, at the place its own mpirun uses (/tmp/ompi.NODE.UID; it removes
 * what it made there at MPI_Finalize). Open MPI 4 only: 5 has no such
 * parameter and ignores it; other PMIx clients may fail.
 */
function sessionElsewhere(env: Map<string, string>, dir: string): string {
  const k = 'OMPI_MCA_orte_top_session_dir';
  if (env.has(k)) return `Open MPI's session directory is ${env.get(k)}, as $${k} says`;
  env.set(k, dir);
  return `Open MPI's session directory goes to ${dir} in the container instead (${k}); other PMIx clients may fail`;
}

export function launcherEnv(env: Map<string, string>, mounts: MountOp[], joined: boolean): void {
  const setDefault = (k: string, v: string) => { if (!env.has(k)) env.set(k, v); };
  // PMIx clients attach the server's shared-memory data store (gds ds12/ds21)
  // in PMIX_SERVER_TMPDIR. mounts.ts binds it at its own path where the image
  // allows; where it doesn't, use the hash store, which goes over the
  // server's TCP socket instead (DESIGN.md: "MPI and Slurm facts").
  const srv = plainPath(env.get('PMIX_SERVER_TMPDIR'));
  if (srv && !visibleInside(srv, mounts)) setDefault('PMIX_MCA_gds', 'hash');
  // Ranks in sibling user namespaces can't process_vm_readv() each other, so
  // Open MPI's CMA single copy fails (with a warning, then an error on large
  // messages); ranks joined into one namespace (--join) can use it.
  if (!joined && (env.has('PMIX_RANK') || env.has('OMPI_COMM_WORLD_RANK')))
    setDefault('OMPI_MCA_btl_vader_single_copy_mechanism', 'none');
}

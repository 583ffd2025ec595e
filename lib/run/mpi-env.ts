// What MPI launchers (Slurm's PMIx plugin, mpirun) need from the container,
// decided here so users add no binds or variables of their own. Consulted by
// main.ts after the mounts are known. Only environment defaults: a variable
// the user (or the host environment) already set is left alone.

import type { MountOp } from './plan.js';

/** Is host path P visible at the same path inside, through one of the binds? */
function visibleInside(p: string, mounts: MountOp[]): boolean {
  return mounts.some((m) => m.kind === 'bind' && m.src === m.dst
    && (p === m.src || p.startsWith(m.src.endsWith('/') ? m.src : m.src + '/')));
}

export function launcherEnv(env: Map<string, string>, mounts: MountOp[], joined: boolean): void {
  const setDefault = (k: string, v: string) => { if (!env.has(k)) env.set(k, v); };
  // PMIx clients attach the server's shared-memory data store (gds ds12/ds21)
  // in PMIX_SERVER_TMPDIR (under SlurmdSpoolDir for srun). When that directory
  // is not visible in the container (spool elsewhere than /var/spool/slurmd,
  // which mounts.ts binds), use the hash store, which goes over the server's
  // TCP socket instead (DESIGN.md: "MPI and Slurm facts").
  const srv = env.get('PMIX_SERVER_TMPDIR');
  if (srv && !visibleInside(srv.replace(/\/+$/, ''), mounts)) setDefault('PMIX_MCA_gds', 'hash');
  // Ranks in sibling user namespaces can't process_vm_readv() each other, so
  // Open MPI's CMA single copy fails (with a warning, then an error on large
  // messages); ranks joined into one namespace (--join) can use it.
  if (!joined && (env.has('PMIX_RANK') || env.has('OMPI_COMM_WORLD_RANK')))
    setDefault('OMPI_MCA_btl_vader_single_copy_mechanism', 'none');
}

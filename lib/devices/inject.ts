// `ch-run --gpu[=nvidia|amd]` and `--ib`: what to inject (policy, from the
// data files in share/), found on the host, turned into plain mount
// operations for the C core. Imported dynamically, only when asked for, so
// ch-run's ordinary launch path loads none of this.
//
// Container layout:
//   /dev                    a tmpfs rebuilt from the host's /dev: every entry
//                           bound or linked as it is, except the requested
//                           kinds' device nodes, which come from the device
//                           root filtered by *_VISIBLE_DEVICES
//   /run                    a tmpfs (the image's subdirectories re-created empty)
//   /run/ch-toolkit/lib     injected libraries, each bound read-only
//   /run/ch-toolkit/bin     injected executables, read-only, put first on PATH
//   /run/ch-toolkit/etc     ICD/vendor files, read-only, named in their env var
//   /etc/ld.so.cache        image's entries + injected ones (see ldcache.ts)
//
// CDI (cdi.ts, cdi-apply.ts): --device=KIND=NAME takes devices from the CDI
// specs; --gpu takes a vendor's GPUs from its spec when there is one
// (nvidia.com/gpu, amd.com/gpu), from the .conf files below otherwise.
//
// Knobs (environment; supported, documented in README):
//   CH_GPU_LDCACHE   a loader cache to list host libraries from (ldconfig -p -C)
//   CH_GPU_DEVROOT   where device nodes are, instead of /dev
//   CH_GPU_HOSTROOT  prefix for the host paths of `icd` and `dir` entries
//   CH_GPU_PATH      where to look for executables, instead of $PATH
//   CH_GPU_CONF, CH_IB_CONF  extra config files (colon-separated), same format
//   CH_GPU_LIBS, CH_IB_LIBS  extra library name prefixes (comma/colon-separated)
//   CH_RUN_CDI_DIRS  CDI spec directories (default /etc/cdi:/var/run/cdi)
//   CH_IB_HCAS       HCAs --ib injects (comma/colon-separated), as --ib=HCA,...
//   CH_GPU_SYSROOT, CH_IB_SYSROOT  where sysfs is read from, instead of /sys

import type { Dirent } from 'node:fs';
import { constants, type Host } from '../container/host.js';
import { basename, dirname, join } from 'node:path';
import { ChError, Log, why } from '../util/log.js';
import { SHARE_DIR } from '../util/paths.js';
import { globToRegExp } from '../container/glob.js';
import { kindInImage, resolveInImage } from '../container/image.js';
import type { MountOp } from '../container/plan.js';
import { buildCache, CacheEntry, defaultFlags, parseLdconfigP, readCache } from './ldcache.js';
import { GPU_VENDORS, type Kind, loadConf, perPlan } from './conf.js';
import { cdiDirs, loadRegistry, parseDeviceArg } from './cdi.js';
import { CdiPlan, planEdits, select, Selection, Vendor, VENDOR_KIND, VISIBLE_VARS } from './cdi-apply.js';

// ch-fromhost reads the same data through this bundle.
export { loadConf };

const INJECT = '/run/ch-toolkit';

/**
 * Device paths (relative to ROOT) matching a pattern of one or more components,
 * each an fnmatch(3) pattern as --unset-env takes them (container/glob.ts). Matched
 * against one directory entry at a time, so no wildcard ever spans a '/'.
 */
function globDev(host: Host, root: string, pattern: string): string[] {
  let found = [''];
  for (const comp of pattern.split('/')) {
    const re = globToRegExp(comp), next: string[] = [];
    for (const dir of found) {
      const ents = sortedListing(host, join(root, dir));
      if (ents === null) continue;
      for (const e of ents) if (re.test(e)) next.push(dir ? `${dir}/${e}` : e);
    }
    found = next;
  }
  return found;
}

/**
 * DIR's names, sorted; null if it can't be read. Read once per plan (per
 * Host): a conf's device patterns all list /dev, and hiding, then the
 * patterns again (devNodeMounts), each recorded listing of a /dev of ~100
 * names costing ~0.1 ms; a plan sees one /dev.
 */
const listings = new WeakMap<Host, Map<string, string[] | null>>();
function sortedListing(host: Host, dir: string): string[] | null {
  return perPlan(listings, host, dir, () => { try { return host.readdir(dir).sort(); } catch { return null; } });
}

/** GPU indexes allowed by NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES (AMD: ROCR_, HIP_); null: all. */
export function visibleIndexes(env: Map<string, string>, log: Log, vendor: Vendor = 'nvidia'): { which: string; set: number[] } | null {
  for (const v of VISIBLE_VARS[vendor]) {
    const val = env.get(v);
    if (val === undefined || val === 'all') continue;
    if (val === '' || val === 'none' || val === 'void') return { which: v, set: [] };
    const parts = val.split(',').map((s) => s.trim());
    if (!parts.every((p) => /^[0-9]+$/.test(p))) {
      log.warn(`${v}=${val}: only numeric indexes can be mapped to device nodes without NVML or a CDI spec; binding all GPUs`);
      return null;
    }
    return { which: v, set: [...new Set(parts.map(Number))] };
  }
  return null;
}

export function findExecutable(host: Host, name: string, env: Map<string, string>): string | null {
  const path = env.get('CH_GPU_PATH') ?? env.get('PATH') ?? '/usr/bin:/bin';
  for (const d of path.split(':').filter(Boolean)) {
    const p = join(d, name);
    try { host.access(p, constants.X_OK); if (host.stat(p).isFile()) return p; } catch { /* next */ }
  }
  return null;
}

export interface Injection {
  mounts: MountOp[];
  env: [string, string][];        // prepended to a list variable's value
  set: [string, string][];        // replace the value
  pathPrepend: string | null;
}

const hostCaches = new Map<string, { how: string; libs: Map<string, string> }>();

/** Host libraries: name -> path, from `ldconfig -p` (or a given cache), or nvidia-container-cli. */
export function hostLibraries(host: Host, kind: Kind, env: Map<string, string>, searched: string[]): Map<string, string> {
  const cache = env.get('CH_GPU_LDCACHE');
  if (!cache && kind === 'nvidia') {
    const cli = findExecutable(host, 'nvidia-container-cli', env);
    if (cli) {
      searched.push(`${cli} list --libraries`);
      try {
        // What it consults is its own business: a plan that used it is not kept.
        const out = host.execFile(cli, ['list', '--libraries'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
          { unknown: 'nvidia-container-cli lists libraries' });
        return new Map(out.split('\n').filter((l) => l.startsWith('/')).map((l) => [basename(l), l]));
      } catch { /* fall back on ldconfig */ }
    }
  }
  // What `ldconfig -p` prints, read straight from the cache file: no process
  // to spawn (measured: ~5 ms per spawnSync from Node, 0.3 ms to parse).
  // `ldconfig -p` itself only for a cache in a format we don't read.
  const file = cache ?? '/etc/ld.so.cache';
  const have = hostCaches.get(file);
  if (have) { searched.push(have.how); return have.libs; }
  const parsed = readCache(host, file);
  if (parsed) {
    const flags = defaultFlags(), libs = new Map<string, string>();
    for (const e of parsed) if (e.flags === flags && e.hwcap === 0n && !libs.has(e.key)) libs.set(e.key, e.value);
    hostCaches.set(file, { how: `loader cache ${file} (as ldconfig -p)`, libs });
    searched.push(`loader cache ${file} (as ldconfig -p)`);
    return libs;
  }
  const args = cache ? ['-p', '-C', cache] : ['-p'];
  searched.push(`ldconfig ${args.join(' ')}`);
  for (const ldconfig of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      // ldconfig -p prints the cache.
      const inputs = ldconfig.startsWith('/') ? [ldconfig, file] : { unknown: `${ldconfig} found on PATH` };
      const libs = parseLdconfigP(host.execFile(ldconfig, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }, inputs));
      hostCaches.set(file, { how: `ldconfig ${args.join(' ')}`, libs });
      return libs;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new ChError(`can't list host libraries: ${ldconfig} ${args.join(' ')}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new ChError('can\'t list host libraries: no ldconfig found');
}

interface Found { hostRoot: string; renumber?: [string, string]; kind: Kind; devs: string[]; libs: Map<string, string>; bins: Map<string, string>;
  icds: { path: string; env: string }[]; dirs: string[]; searched: string[] }

/**
 * The GPU index of DRM card node REL (dri/cardN): that of the render node
 * (renderD128 + index) on the same PCI device, by sysfs. A BMC's VGA card
 * usually takes card0, so cardN is not GPU N. Null: not a card, or sysfs
 * doesn't say (then the conf's numbering rule applies). CH_GPU_SYSROOT: where
 * sysfs is read from (tests), instead of /sys.
 */
function cardIndex(host: Host, rel: string, env: Map<string, string>): number | null {
  const m = /^dri\/(card[0-9]+)$/.exec(rel);
  if (!m) return null;
  const drm = `${(env.get('CH_GPU_SYSROOT') ?? '/sys').replace(/\/+$/, '')}/class/drm`;
  const dev = (n: string) => { try { return host.realpath(`${drm}/${n}/device`); } catch { return null; } };
  const mine = dev(m[1]);
  if (mine === null) return null;
  let ents: string[];
  try { ents = host.readdir(drm); } catch { return null; }
  for (const e of ents) {
    const r = /^renderD([0-9]+)$/.exec(e);
    if (r && dev(e) === mine) return Number(r[1]) - 128;
  }
  return null;
}

/**
 * The libraries of ALL (name -> path) whose names begin with one of
 * PREFIXES, in ALL's order. A host lists ~600-2000 and the NVIDIA conf has
 * 32 prefixes: each name is tried against those that share its first four
 * characters (and any shorter ones), not all 32 (measured under --jitless,
 * 642 names: 0.8-1.5 ms -> 0.2-0.7).
 */
function librariesNamed(all: Map<string, string>, prefixes: string[]): Map<string, string> {
  const HEAD = 4;
  const short = prefixes.filter((p) => p.length < HEAD), byHead = new Map<string, string[]>();
  for (const p of prefixes) if (p.length >= HEAD) byHead.set(p.slice(0, HEAD), [...byHead.get(p.slice(0, HEAD)) ?? [], p]);
  const libs = new Map<string, string>();
  for (const [name, path] of all) {
    const some = byHead.get(name.slice(0, HEAD));
    if ((some !== undefined && some.some((p) => name.startsWith(p))) || short.some((p) => name.startsWith(p))) libs.set(name, path);
  }
  return libs;
}

function discover(host: Host, kind: Kind, devroot: string, env: Map<string, string>, log: Log): Found {
  const conf = loadConf(host, kind, env);
  const searched = [`config ${conf.sources.join(', ')}`, `devices ${devroot}/{${conf.devs.map((d) => d.pattern).join(',')}}`];
  const vis = kind !== 'ib' ? visibleIndexes(env, log, kind) : null;
  const devs: string[] = [];
  for (const d of conf.devs)
    for (const rel of globDev(host, devroot, d.pattern)) {
      if (d.indexed && vis) {
        const m = /([0-9]+)$/.exec(rel);
        const index = cardIndex(host, rel, env) ?? (m ? Number(m[1]) - d.base : null);
        if (index !== null && !vis.set.includes(index)) { log.info(`--gpu: ${devroot}/${rel} hidden by ${vis.which}`); continue; }
      }
      if (!devs.includes(rel)) devs.push(rel);
    }
  const libs = conf.libs.length ? librariesNamed(hostLibraries(host, kind, env, searched), conf.libs) : new Map<string, string>();
  const bins = new Map<string, string>();
  for (const b of conf.bins) { const p = findExecutable(host, b, env); if (p) bins.set(b, p); }
  searched.push(`executables {${conf.bins.join(',')}} on ${env.get('CH_GPU_PATH') ? 'CH_GPU_PATH' : 'PATH'}`);
  const hostRoot = (env.get('CH_GPU_HOSTROOT') ?? '').replace(/\/+$/, '');
  const icds = conf.icds.filter((i) => { try { return host.stat(hostRoot + i.path).isFile(); } catch { return false; } });
  const dirs = conf.dirs.filter((d) => { try { return host.stat(hostRoot + d).isDirectory(); } catch { return false; } });
  if (hostRoot) searched.push(`files and directories under CH_GPU_HOSTROOT=${hostRoot}`);
  // Only the chosen GPUs exist inside, so CUDA numbers them from 0: an index
  // list from CUDA_VISIBLE_DEVICES is renumbered to match (as Slurm does
  // under ConstrainDevices); ROCm's likewise. NVIDIA_VISIBLE_DEVICES is not
  // CUDA's; it stays.
  const renumber: [string, string] | undefined = vis && vis.which !== 'NVIDIA_VISIBLE_DEVICES' && vis.set.length > 0
    ? [vis.which, vis.set.map((_, i) => i).join(',')] : undefined;
  return { hostRoot, renumber, kind, devs, libs, bins, icds, dirs, searched };
}

/** Rebuild /dev as a tmpfs: host entries as they are, minus the top names we inject. */
function devMounts(host: Host, root: string, skipTop: Set<string>): MountOp[] {
  const ops: MountOp[] = [{ kind: 'tmpfs', options: 'mode=0755', dst: '/dev', flags: [] }];
  let ents: Dirent[];
  try { ents = host.readdir('/dev', { withFileTypes: true }); } catch (err) { throw new ChError(`can't list /dev: ${why(err)}`); }
  for (const e of ents) {
    if (skipTop.has(e.name)) continue;
    const dst = `/dev/${e.name}`;
    if (e.isSymbolicLink()) {
      ops.push({ kind: 'symlink', target: host.readlink(dst), dst, flags: [] });
    } else if (e.isDirectory()) {
      ops.push({ kind: 'mkdir', mode: host.lstat(dst).mode & 0o7777, dst, flags: [] });
      ops.push({ kind: 'bind', src: dst, dst, flags: ['rec'] });
    } else {
      ops.push({ kind: 'mkfile', mode: 0o600, dst, flags: [] });
      ops.push({ kind: 'bind', src: dst, dst, flags: [] });
    }
  }
  void root;
  return ops;
}

const IB_CLASSES = ['infiniband', 'infiniband_verbs', 'infiniband_mad'];

/**
 * Keep only HCAS of --ib's device nodes (uverbsN, umadN, issmN belong to the
 * HCA their sysfs "ibdev" names; rdma_cm is shared), and mounts that make
 * /sys/class/infiniband* list only them: a tmpfs over each class directory
 * holding the host's links for the chosen HCAs. CH_IB_SYSROOT: where sysfs
 * is read from (tests), instead of /sys.
 */
function chooseHcas(host: Host, f: Found, hcas: string[], how: string, env: Map<string, string>, log: Log): MountOp[] {
  const sys = (env.get('CH_IB_SYSROOT') ?? '/sys').replace(/\/+$/, '');
  const list = (d: string) => { try { return host.readdir(d).sort(); } catch { return []; } };
  const have = list(`${sys}/class/infiniband`);
  const missing = hcas.filter((h) => !have.includes(h));
  if (missing.length > 0)
    throw new ChError(`${how}: no InfiniBand HCA ${missing.join(', ')} (${sys}/class/infiniband has: ${have.join(', ') || 'none'})`);
  const owner = new Map<string, string>();   // uverbs0 -> mlx5_0
  for (const cls of IB_CLASSES.slice(1))
    for (const e of list(`${sys}/class/${cls}`)) {
      try { owner.set(e, host.readFile(`${sys}/class/${cls}/${e}/ibdev`, 'utf8').trim()); } catch { /* no ibdev: not per-HCA */ }
    }
  f.devs = f.devs.filter((rel) => {
    const hca = owner.get(basename(rel));
    if (hca === undefined || hcas.includes(hca)) return true;
    log.info(`--ib: /dev/${rel} (${hca}) hidden by ${how}`);
    return false;
  });
  const ops: MountOp[] = [];
  for (const cls of IB_CLASSES) {
    const dir = `/sys/class/${cls}`;
    if (!host.exists(dir)) continue;   // the container's /sys is the host's
    ops.push({ kind: 'tmpfs', options: 'mode=0755', dst: dir, flags: [] });
    for (const e of list(dir)) {
      const hca = cls === 'infiniband' ? e : owner.get(e);
      if (hca !== undefined && !hcas.includes(hca)) continue;
      try { ops.push({ kind: 'symlink', target: host.readlink(`${dir}/${e}`), dst: `${dir}/${e}`, flags: [] }); } catch { /* not a link */ }
    }
    log.info(`--ib: ${dir} lists only ${hcas.join(', ')}`);
  }
  return ops;
}

export interface DeviceRequest {
  gpu: Kind[] | null | false;     // false: off; null: every vendor found
  ib: boolean;
  ibHcas?: string[] | null;       // --ib=HCA,...; null: $CH_IB_HCAS, else all
  devices: string[];              // --device arguments, KIND=NAME[,NAME...]
  cdiDirs: string | null;         // --cdi-dirs
}

/** CDI's part of a request: null when it asks nothing of CDI. */
function cdiSelection(host: Host, req: DeviceRequest, env: Map<string, string>, log: Log): Selection | null {
  if (req.devices.length === 0 && req.gpu === false) return null;
  const explicit = req.devices.map((a) => ({ ...parseDeviceArg(a), arg: a }));
  const reg = loadRegistry(host, cdiDirs(req.cdiDirs, env), log);
  const vendors = (req.gpu === false ? [] : req.gpu ?? GPU_VENDORS) as Vendor[];
  // A vendor asked for with --device only is not asked for again by --gpu.
  return select(reg, explicit, vendors, env, log);
}

/** Vendor files whose container paths name an environment variable (ICD lists). */
function icdPaths(host: Host, env: Map<string, string>): Map<string, string> {
  const m = new Map<string, string>();
  for (const k of GPU_VENDORS) for (const i of loadConf(host, k, env).icds) m.set(i.path, i.env);
  return m;
}

/** --gpu's vendors found by discovery (those CDI doesn't give), or why none: the error names every place searched. */
function gpuFound(host: Host, req: DeviceRequest, sel: Selection | null, devroot: string, env: Map<string, string>, log: Log): Found[] {
  const { gpu } = req;
  if (gpu === false) return [];
  const asked = (gpu ?? GPU_VENDORS).filter((k) => !sel?.vendors.has(k as Vendor));
  const per = asked.map((k) => discover(host, k, devroot, env, log));
  const useful = per.filter((f) => f.devs.length > 0 || (gpu !== null && (f.libs.size > 0 || f.bins.size > 0)));
  const withLibs = useful.filter((f) => f.libs.size > 0 || gpu === null);
  if (withLibs.length === 0 && (asked.length > 0 && gpu !== null || !sel?.vendors.size))
    throw new ChError(`--gpu${gpu ? '=' + gpu.join(',') : ''}: no GPU found; searched:\n`
      + per.map((f) => `  ${f.kind}: ${f.searched.join('; ')}`
        + `\n    found ${f.devs.length} device nodes, ${f.libs.size} libraries, ${f.bins.size} executables`).join('\n')
      + `\n  CDI specs for ${asked.map((k) => VENDOR_KIND[k as Vendor]).join(', ')} in ${cdiDirs(req.cdiDirs, env).join(':')}: none`);
  for (const v of sel?.vendors ?? []) log.info(`--gpu: ${v} GPUs from CDI spec ${VENDOR_KIND[v]}`);
  return useful;
}

/** --ib's devices and libraries, and the mounts that show only the chosen HCAs (if any are chosen). */
function ibFound(host: Host, req: DeviceRequest, devroot: string, env: Map<string, string>, log: Log): { f: Found; sys: MountOp[] } {
  const f = discover(host, 'ib', devroot, env, log);
  if (f.devs.length === 0 && f.libs.size === 0)
    throw new ChError(`--ib: no InfiniBand found; searched: ${f.searched.join('; ')}`);
  const hcas = req.ibHcas ?? (env.get('CH_IB_HCAS') ? env.get('CH_IB_HCAS')!.split(/[,:]/).filter(Boolean) : null);
  return { f, sys: hcas ? chooseHcas(host, f, hcas, req.ibHcas ? '--ib' : 'CH_IB_HCAS', env, log) : [] };
}

/** /dev: only when some device node is injected; then the host's nodes of every kind we inject are left out and the chosen ones bound. */
function devNodeMounts(host: Host, root: string, found: Found[], cdi: CdiPlan | null, sel: Selection | null,
  devroot: string, env: Map<string, string>, log: Log): MountOp[] {
  const nodes: { src: string; dst: string }[] = [];
  for (const f of found)
    for (const rel of f.devs)
      if (!nodes.some((n) => n.dst === `/dev/${rel}`)) nodes.push({ src: `${devroot}/${rel}`, dst: `/dev/${rel}` });
  for (const n of cdi?.nodes ?? []) if (!nodes.some((x) => x.dst === n.dst)) nodes.push(n);
  if (nodes.length === 0) return [];
  // The host's nodes of every kind we inject are left out, so that only
  // the chosen ones (bound below) exist inside. Where every one of them is
  // chosen (a node the job has whole; no CDI spec, the host's own /dev),
  // nothing is to be hidden: /dev stays the host's, bound whole as without
  // --gpu (mounts.ts), with the chosen nodes where they are; no tmpfs and
  // no bind per host entry (145 here: ~4 ms of a first launch, ~2 of every
  // memoized one). Then names the conf's patterns don't match in a
  // directory they reach into (dri/by-path) stay too, as without --gpu.
  const chosen = new Set(nodes.map((n) => n.dst.slice('/dev/'.length)));
  let hides = cdi !== null || (sel?.vendors.size ?? 0) > 0 || devroot !== '/dev';
  const skip = new Set<string>(cdi?.hideDev ?? []);
  for (const k of new Set([...found.map((f) => f.kind), ...(sel?.vendors ?? [])]))
    for (const d of loadConf(host, k, env).devs) {
      const all = globDev(host, '/dev', d.pattern);
      if (d.pattern.includes('/')) skip.add(d.pattern.split('/')[0]);
      else for (const e of all) skip.add(e);
      hides ||= all.some((rel) => !chosen.has(rel));
    }
  if (!hides) {
    log.info(`--gpu: every host device node of ${[...new Set(found.map((f) => f.kind))].join(', ')} is chosen: /dev as without --gpu`);
    return [];
  }
  const mounts = devMounts(host, root, skip);
  const made = new Set<string>();
  for (const { src, dst } of nodes) {
    const parts = dst.split('/').slice(2);
    for (let i = 1; i < parts.length; i++) {
      const dir = `/dev/${parts.slice(0, i).join('/')}`;
      if (!made.has(dir)) { made.add(dir); mounts.push({ kind: 'mkdir', mode: 0o755, dst: dir, flags: [] }); }
    }
    mounts.push({ kind: 'mkfile', mode: 0o600, dst, flags: [] });
    mounts.push({ kind: 'bind', src, dst, flags: [] });
    log.info(`inject device ${src} -> ${dst}`);
  }
  return mounts;
}

/** /run: a tmpfs holding what we inject, with the image's own /run directories made again in it. */
function runTmpfs(host: Host, root: string, found: Found[], cdi: CdiPlan | null): MountOp[] {
  if (kindInImage(host, root, '/run') !== 'dir')
    throw new ChError(`can't inject ${[...found.map((f) => f.kind), ...(cdi ? ['CDI devices'] : [])].join(', ')} into image ${root}: it has no /run directory `
      + '(injected files go in a tmpfs there: add an empty /run to the image, or inject permanently with ch-fromhost)');
  const mounts: MountOp[] = [{ kind: 'tmpfs', options: 'mode=0755', dst: '/run', flags: [] }];
  const runHost = resolveInImage(host, root, '/run')!;
  try {
    for (const e of host.readdir(runHost, { withFileTypes: true }))
      if (e.isDirectory())
        mounts.push({ kind: 'mkdir', mode: host.stat(join(runHost, e.name)).mode & 0o7777, dst: `/run/${e.name}`, flags: [] });
  } catch { /* unreadable: nothing to re-create */ }
  for (const d of [INJECT, `${INJECT}/lib`, `${INJECT}/bin`, `${INJECT}/etc`])
    mounts.push({ kind: 'mkdir', mode: 0o755, dst: d, flags: [] });
  if (cdi) mounts.push(...cdi.runOps);
  return mounts;
}

/** The libraries, bound into INJECT/lib and found through the image's ld.so.cache with ours added (else LD_LIBRARY_PATH). */
function libraryMounts(host: Host, root: string, found: Found[], cdi: CdiPlan | null, log: Log):
  { mounts: MountOp[]; env: [string, string][] } {
  const mounts: MountOp[] = [], env: [string, string][] = [];
  const libs = new Map<string, string>();
  for (const f of found) for (const [n, p] of f.libs) if (!libs.has(n)) libs.set(n, p);
  const entries: CacheEntry[] = [];
  const image = imageCache(host, root);
  const flags = image?.find((e) => e.key === 'libc.so.6')?.flags ?? defaultFlags();
  for (const [name, path] of libs) {
    let real: string;
    try { real = host.realpath(path); } catch (err) { log.warn(`skipping library ${path}: ${why(err)}`); continue; }
    const dst = `${INJECT}/lib/${name}`;
    mounts.push({ kind: 'mkfile', mode: 0o644, dst, flags: [] });
    mounts.push({ kind: 'bind', src: real, dst, flags: ['ro', 'nosuid', 'nodev'] });
    entries.push({ flags, key: name, value: dst, hwcap: 0n });
    log.info(`inject library ${path}${real !== path ? ` (${real})` : ''} -> ${dst}`);
  }
  for (const c of cdi?.cache ?? []) entries.push({ flags, key: c.key, value: c.value, hwcap: 0n });
  if (entries.length > 0) {
    if (image) {
      mounts.push({ kind: 'file', content: buildCache(entries, image).toString('hex'), dst: '/etc/ld.so.cache',
        flags: ['ro', 'hex'] });
      log.info(`inject /etc/ld.so.cache: image's ${image.length} entries + ${entries.length} injected`);
    } else {
      env.push(['LD_LIBRARY_PATH', `${INJECT}/lib`]);
      log.info(`image has no usable /etc/ld.so.cache: injected libraries found through LD_LIBRARY_PATH`);
    }
  }
  return { mounts, env };
}

/** The executables, bound into INJECT/bin; how many. */
function binMounts(host: Host, found: Found[], log: Log): { mounts: MountOp[]; count: number } {
  const mounts: MountOp[] = [];
  const bins = new Map<string, string>();
  for (const f of found) for (const [n, p] of f.bins) bins.set(n, p);
  for (const [name, path] of bins) {
    const dst = `${INJECT}/bin/${name}`;
    mounts.push({ kind: 'mkfile', mode: 0o755, dst, flags: [] });
    mounts.push({ kind: 'bind', src: host.realpath(path), dst, flags: ['ro', 'nosuid', 'nodev'] });
    log.info(`inject executable ${path} -> ${dst}`);
  }
  return { mounts, count: bins.size };
}

/** The ICD files (Vulkan, EGL, OpenCL), bound into INJECT/etc and listed in their variables, CDI's too. */
function icdMounts(found: Found[], cdi: CdiPlan | null, log: Log): { mounts: MountOp[]; env: [string, string][] } {
  const mounts: MountOp[] = [];
  const icdEnv = new Map<string, string[]>();
  for (const f of found)
    for (const i of f.icds) {
      const dst = `${INJECT}/etc/${f.kind}-${basename(dirname(i.path))}-${basename(i.path)}`;
      mounts.push({ kind: 'mkfile', mode: 0o644, dst, flags: [] });
      mounts.push({ kind: 'bind', src: f.hostRoot + i.path, dst, flags: ['ro', 'nosuid', 'nodev'] });
      icdEnv.set(i.env, [...(icdEnv.get(i.env) ?? []), dst]);
      log.info(`inject ${f.hostRoot}${i.path} -> ${dst} (in $${i.env})`);
    }
  for (const [v, p] of cdi?.prepend ?? []) icdEnv.set(v, [...(icdEnv.get(v) ?? []), p]);
  return { mounts, env: [...icdEnv].map(([v, paths]) => [v, paths.join(':')]) };
}

/** The conf files' directories (e.g. /etc/libibverbs.d), bound read-only where the image has them. */
function dirMounts(host: Host, root: string, found: Found[], log: Log): MountOp[] {
  const mounts: MountOp[] = [];
  for (const f of found)
    for (const d of f.dirs) {
      if (kindInImage(host, root, d) !== 'dir') { log.info(`not injecting ${d}: image has no such directory`); continue; }
      mounts.push({ kind: 'bind', src: f.hostRoot + d, dst: d, flags: ['rec', 'ro', 'nosuid', 'nodev'] });
      log.info(`inject directory ${f.hostRoot}${d} -> ${d} (read-only)`);
    }
  return mounts;
}

/**
 * Everything --gpu/--ib/--device asks for, as mounts and environment. The
 * steps run in this order, which is the mounts' order and the order the
 * host is read in (a memoized plan's record lists its reads in order).
 */
export function inject(host: Host, root: string, req: DeviceRequest, env: Map<string, string>, log: Log): Injection {
  const devroot = (env.get('CH_GPU_DEVROOT') ?? '/dev').replace(/(.)\/+$/, '$1');
  const sel = cdiSelection(host, req, env, log);
  const cdi: CdiPlan | null = sel && sel.specs.length > 0 ? planEdits(host, root, sel, icdPaths(host, env), log) : null;
  const found = gpuFound(host, req, sel, devroot, env, log);
  const ib = req.ib ? ibFound(host, req, devroot, env, log) : null;
  if (ib) found.push(ib.f);

  const mounts: MountOp[] = [...devNodeMounts(host, root, found, cdi, sel, devroot, env, log), ...runTmpfs(host, root, found, cdi)];
  const libs = libraryMounts(host, root, found, cdi, log);
  const bins = binMounts(host, found, log);
  const icds = icdMounts(found, cdi, log);
  mounts.push(...libs.mounts, ...bins.mounts, ...icds.mounts);
  const set: [string, string][] = [...(cdi?.set ?? []), ...(sel?.set ?? [])];
  for (const f of found) if (f.renumber && f.devs.length > 0) {
    set.push(f.renumber);
    log.info(`${f.renumber[0]} inside: ${f.renumber[1]} (only the chosen GPUs exist there)`);
  }
  mounts.push(...dirMounts(host, root, found, log));
  if (cdi) mounts.push(...cdi.imageOps);
  mounts.push(...ib?.sys ?? []);
  return { mounts, env: [...libs.env, ...icds.env], set, pathPrepend: bins.count > 0 || cdi?.bins ? `${INJECT}/bin` : null };
}

function imageCache(host: Host, root: string): CacheEntry[] | null {
  const p = resolveInImage(host, root, '/etc/ld.so.cache');
  return p === null ? null : readCache(host, p);
}

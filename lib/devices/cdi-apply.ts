// CDI devices chosen, and their containerEdits turned into what an
// unprivileged container can do: no mknod, no hooks run, no extra groups.
//
//   deviceNodes   the host's node bound into the /dev tmpfs (inject.ts)
//   mounts        read-only binds (nosuid; nodev/noexec/rbind from the
//                 spec's options). A path the image has, or one under /run
//                 (our tmpfs), is bound where the spec says. Any other file
//                 would need a mount point the read-only image lacks, so its
//                 host directory is bound ONCE at /run/ch-toolkit/cdi/N and
//                 the file linked from /run/ch-toolkit/{lib,bin,etc}: a real
//                 NVIDIA spec mounts ~40 files from 2-3 directories, which
//                 then cost 2-3 mounts instead of 40.
//   env           set
//   hooks         interpreted: NVIDIA's update-ldcache by the generated
//                 /etc/ld.so.cache (libraries are listed there under their
//                 ELF SONAME, as ldconfig would), create-symlinks by links
//                 in our tmpfs, chmod ignored; anything else: a warning
//   additionalGids, intelRdt, netDevices   unsupported unprivileged: warning

import type { Host } from '../container/host.js';
import { basename, dirname, posix } from 'node:path';
import { ChError, Log, why } from '../util/log.js';
import { kindInImage, resolveInImage } from '../container/image.js';
import type { MountFlag, MountOp } from '../container/plan.js';
import { Edits, Found, lookup, Registry, Spec } from './cdi.js';

const INJECT = '/run/ch-toolkit';

export type Vendor = 'nvidia' | 'amd';
export const VENDOR_KIND: Record<Vendor, string> = { nvidia: 'nvidia.com/gpu', amd: 'amd.com/gpu' };
/** Variables that choose GPUs by index, first wins (CUDA/ROCm conventions). */
export const VISIBLE_VARS: Record<Vendor, string[]> = {
  nvidia: ['NVIDIA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES'],
  amd: ['ROCR_VISIBLE_DEVICES', 'HIP_VISIBLE_DEVICES'],
};

export interface Selection {
  chosen: Found[];                 // devices, in request order, no duplicates
  specs: Spec[];                   // specs whose spec-wide edits apply
  vendors: Set<Vendor>;            // GPU vendors served by CDI (not by share/gpu/*.conf)
  set: [string, string][];         // index variables renumbered for inside
}

/**
 * Which CDI devices: every --device, and for each --gpu vendor with a spec,
 * the GPUs its *_VISIBLE_DEVICES names (indexes, UUIDs), else "all".
 */
export function select(reg: Registry, explicit: { kind: string; names: string[]; arg: string }[], gpu: Vendor[],
  env: Map<string, string>, log: Log): Selection {
  const sel: Selection = { chosen: [], specs: [], vendors: new Set(), set: [] };
  const add = (f: Found) => {
    if (!sel.chosen.some((c) => c.kind === f.kind && c.name === f.name)) sel.chosen.push(f);
    if (!sel.specs.includes(f.spec)) sel.specs.push(f.spec);
  };
  for (const e of explicit) for (const n of e.names) add(lookup(reg, e.kind, n, `--device=${e.arg}`));
  for (const v of gpu) {
    const kind = VENDOR_KIND[v], specs = reg.kinds.get(kind);
    if (!specs) continue;
    sel.vendors.add(v);
    for (const s of specs) if (!sel.specs.includes(s)) sel.specs.push(s);
    const byHand = explicit.some((e) => e.kind === kind);
    const which = VISIBLE_VARS[v].find((x) => env.get(x) !== undefined);
    const val = which ? env.get(which)!.trim() : 'all';
    let ids: string[];
    if (byHand) ids = [];
    else if (val === 'all') ids = reg.devices.has(`${kind}=all`) ? ['all']
      : specs.flatMap((s) => s.devices.map((d) => d.name));
    else if (val === '' || val === 'none' || val === 'void') ids = [];
    else ids = val.split(',').map((s) => s.trim());
    for (const id of ids) add(lookup(reg, kind, id, `--gpu (${which}=${val})`));
    // Only the chosen GPUs exist inside, numbered from 0 there.
    if (which && which !== 'NVIDIA_VISIBLE_DEVICES' && /^[0-9]+(,[0-9]+)*$/.test(val)) {
      const n = byHand ? sel.chosen.filter((c) => c.kind === kind && /^[0-9]+$/.test(c.name)).length
        : new Set(ids).size;
      sel.set.push([which, [...Array(n).keys()].join(',')]);
      log.info(`${which} inside: ${sel.set[sel.set.length - 1][1]} (only the chosen GPUs exist there)`);
    }
  }
  // A broken spec of a kind in use may be the one meant to win: say so.
  for (const b of reg.broken)
    if (b.kind !== null && sel.specs.some((s) => s.kind === b.kind))
      log.warn(`CDI: ignoring invalid spec ${b.file} (${b.kind}): ${b.error}`);
  return sel;
}

export interface CdiPlan {
  nodes: { src: string; dst: string; why: string }[];
  hideDev: Set<string>;            // top-level names of the host's /dev to leave out
  runOps: MountOp[];               // into the /run tmpfs, after its directories exist
  imageOps: MountOp[];             // onto paths the image has
  cache: { key: string; value: string }[];
  set: [string, string][];
  prepend: [string, string][];
  bins: boolean;
}

/** ELF DT_SONAME of a 64-bit little-endian shared object; null if none or not one. */
export function elfSoname(host: Host, path: string): string | null {
  let fd: number;
  try { fd = host.open(path, 'r'); } catch { return null; }
  try {
    const at = (pos: number, len: number) => { const b = Buffer.alloc(len); return host.read(fd, b, 0, len, pos) === len ? b : null; };
    const h = at(0, 64);
    if (!h || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return null;
    const phoff = Number(h.readBigUInt64LE(32)), phentsize = h.readUInt16LE(54), phnum = h.readUInt16LE(56);
    const ph = at(phoff, phentsize * phnum);
    if (!ph) return null;
    const loads: { vaddr: number; off: number; size: number }[] = [];
    let dyn: { off: number; size: number } | null = null;
    for (let i = 0; i < phnum; i++) {
      const p = i * phentsize, type = ph.readUInt32LE(p);
      const off = Number(ph.readBigUInt64LE(p + 8)), vaddr = Number(ph.readBigUInt64LE(p + 16));
      const filesz = Number(ph.readBigUInt64LE(p + 32));
      if (type === 1) loads.push({ vaddr, off, size: filesz });
      if (type === 2) dyn = { off, size: filesz };
    }
    if (!dyn || dyn.size > 1 << 20) return null;
    const d = at(dyn.off, dyn.size);
    if (!d) return null;
    let strtab = -1, soname = -1;
    for (let p = 0; p + 16 <= d.length; p += 16) {
      const tag = Number(d.readBigInt64LE(p)), val = Number(d.readBigUInt64LE(p + 8));
      if (tag === 0) break;
      if (tag === 5) strtab = val;
      if (tag === 14) soname = val;
    }
    if (strtab < 0 || soname < 0) return null;
    const seg = loads.find((l) => strtab >= l.vaddr && strtab < l.vaddr + l.size);
    const s = seg ? at(seg.off + strtab - seg.vaddr + soname, 256) : null;
    if (!s) return null;
    const end = s.indexOf(0);
    return end > 0 ? s.toString('utf8', 0, end) : null;
  } finally {
    host.close(fd);
  }
}

const isLib = (name: string) => /^lib.*\.so(\.[0-9][0-9.]*)?$/.test(name) || /\.so(\.[0-9][0-9.]*)?$/.test(name);
const MOUNT_OPTS: Record<string, MountFlag | null> = { ro: null, rw: null, bind: null, rbind: 'rec', nosuid: null,
  nodev: 'nodev', noexec: 'noexec', rprivate: null, private: null, rslave: null, slave: null, z: null, Z: null };

/** Where planEdits has put things so far, and its ways of putting more: shared by its steps and the hooks. */
interface EditState extends HookCtx {
  host: Host;
  icds: Map<string, string>;
  /** Bind host directory DIR once, read-only; where it is inside. */
  hostDir: (dir: string) => string;
}

/** An empty plan, and the state its steps share. */
function editState(host: Host, root: string, icds: Map<string, string>, log: Log): EditState {
  const plan: CdiPlan = { nodes: [], hideDev: new Set(), runOps: [], imageOps: [], cache: [], set: [], prepend: [],
    bins: false };
  const runDirs = new Set<string>([INJECT, `${INJECT}/lib`, `${INJECT}/bin`, `${INJECT}/etc`]);
  const hostDirs = new Map<string, string>();         // host directory -> where it is bound inside
  const placed = new Map<string, string>();           // container path -> where it really is inside
  const libDirs = new Set<string>();                  // container dirs whose libraries went to INJECT/lib
  const varRun = resolveInImage(host, root, '/var/run') !== null && resolveInImage(host, root, '/var/run') === resolveInImage(host, root, '/run');

  const mkdirs = (dir: string) => {
    const parts = dir.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const d = '/' + parts.slice(0, i).join('/');
      if (d === '/run' || runDirs.has(d)) continue;
      runDirs.add(d);
      plan.runOps.push({ kind: 'mkdir', mode: 0o755, dst: d, flags: [] });
    }
  };
  const link = (target: string, dst: string) => {
    if (placed.has(dst)) return;
    placed.set(dst, dst);
    plan.runOps.push({ kind: 'symlink', target, dst, flags: [] });
  };
  const hostDir = (dir: string) => {
    let at = hostDirs.get(dir);
    if (!at) {
      at = `${INJECT}/cdi/${hostDirs.size}`;
      hostDirs.set(dir, at);
      mkdirs(at);
      plan.runOps.push({ kind: 'bind', src: dir, dst: at, flags: ['ro', 'nosuid', 'nodev'] });
      log.info(`CDI: host directory ${dir} -> ${at} (read-only, once for all its files)`);
    }
    return at;
  };
  const inRun = (p: string) => {
    if (varRun && (p === '/var/run' || p.startsWith('/var/run/'))) p = p.slice(4);
    return p.startsWith('/run/') ? p : null;
  };
  return { host, root, icds, log, plan, placed, libDirs, link, mkdirs, hostDir, inRun };
}

/** The edits to apply: the specs' own (spec-wide), then each chosen device's, with whose they are. */
function editsToApply(sel: Selection): { edits: Edits; spec: Spec; who: string }[] {
  const editsOf = (f: Found) => f.spec.devices.find((d) => d.name === f.name)!.containerEdits;
  return [
    ...sel.specs.filter((s) => s.containerEdits).map((s) => ({ edits: s.containerEdits!, spec: s, who: `${s.kind} (spec-wide edits)` })),
    ...sel.chosen.map((f) => ({ edits: editsOf(f), spec: f.spec, who: `${f.kind}=${f.name}` })),
  ];
}

/** Every /dev entry any device of the selected specs has, chosen or not: the host's are left out of /dev. */
function hideDevices(plan: CdiPlan, sel: Selection): void {
  for (const s of sel.specs)
    for (const e of [s.containerEdits, ...s.devices.map((d) => d.containerEdits)])
      for (const n of e?.deviceNodes ?? []) {
        const top = posix.normalize(n.path).split('/')[2];
        if (top) plan.hideDev.add(top);
      }
}

type Fail = (msg: string) => ChError;
type CdiMount = NonNullable<Edits['mounts']>[number];

function addDeviceNodes(st: EditState, edits: Edits, who: string, fail: Fail): void {
  for (const n of edits.deviceNodes ?? []) {
    const dst = posix.normalize(n.path), src = n.hostPath ?? n.path;
    if (!dst.startsWith('/dev/')) throw fail(`device node ${n.path}: not under /dev`);
    try { st.host.stat(src); } catch (err) { throw fail(`device node ${src}: ${why(err)}`); }
    if (!st.plan.nodes.some((x) => x.dst === dst)) st.plan.nodes.push({ src, dst, why: who });
  }
}

/** A CDI mount's options as our flags: always read-only and nosuid. */
function mountFlags(m: CdiMount, cp: string, spec: Spec, log: Log): MountFlag[] {
  const flags: MountFlag[] = ['ro', 'nosuid'];
  for (const o of m.options ?? []) {
    const f = MOUNT_OPTS[o];
    if (f === undefined) log.warn(`CDI spec ${spec.file}: mount ${cp}: option '${o}' ignored`);
    else if (f && !flags.includes(f)) flags.push(f);
    if (o === 'rw') log.info(`CDI: ${cp} bound read-only although the spec asks rw`);
  }
  return flags;
}

/** One CDI mount: under /run (our tmpfs), onto the image's own path, or, where the image lacks it, placed in INJECT. */
function addMount(st: EditState, m: CdiMount, spec: Spec, who: string, fail: Fail): void {
  const { host, root, plan, placed, log } = st;
  const cp = posix.normalize(m.containerPath);
  if (!cp.startsWith('/')) throw fail(`mount ${m.hostPath}: containerPath ${m.containerPath} is not absolute`);
  if (m.type && m.type !== 'bind' && m.type !== 'none') {
    log.warn(`CDI spec ${spec.file}: device ${who}: mount of type ${m.type} at ${cp} not supported; skipped`);
    return;
  }
  const flags = mountFlags(m, cp, spec, log);
  let real: string, isDir: boolean, exec: boolean;
  try {
    real = host.realpath(m.hostPath);
    const s = host.stat(real);
    isDir = s.isDirectory();
    exec = (s.mode & 0o111) !== 0;
  } catch (err) {
    throw fail(`mount ${m.hostPath}: ${why(err)}`);
  }
  if (placed.has(cp)) return;
  const run = st.inRun(cp);
  const inImage = run ? null : kindInImage(host, root, cp);
  if (run) {
    st.mkdirs(dirname(run));
    plan.runOps.push(isDir ? { kind: 'mkdir', mode: 0o755, dst: run, flags: [] } : { kind: 'mkfile', mode: 0o644, dst: run, flags: [] });
    plan.runOps.push({ kind: 'bind', src: real, dst: run, flags });
    placed.set(cp, run);
  } else if (inImage === (isDir ? 'dir' : 'file')) {
    plan.imageOps.push({ kind: 'bind', src: real, dst: cp, flags });
    placed.set(cp, cp);
    log.info(`CDI: ${m.hostPath} -> ${cp} (read-only)`);
  } else if (isDir) {
    placed.set(cp, st.hostDir(real));
    log.info(`CDI: image has no directory ${cp}: ${m.hostPath} is at ${placed.get(cp)}`);
  } else {
    placeFile(st, m.hostPath, cp, real, exec, spec);
  }
}

/**
 * A file at CP that the image lacks: linked from INJECT (lib/, bin/ or etc/,
 * by what it is) to its host directory's one bind; a library gets its SONAME
 * link and a line in the ld.so cache, a Vulkan/EGL ICD a place in its
 * variable.
 */
function placeFile(st: EditState, hostPath: string, cp: string, real: string, exec: boolean, spec: Spec): void {
  const { plan, placed, log } = st;
  const name = basename(cp), icd = st.icds.get(cp);
  const lib = isLib(name), bin = !lib && exec && /\/s?bin$/.test(dirname(cp));
  const at = lib ? `${INJECT}/lib/${name}` : bin ? `${INJECT}/bin/${name}`
    : icd ? `${INJECT}/etc/${basename(dirname(cp))}-${name}` : `${INJECT}/etc/${name}`;
  if (placed.has(at)) {
    log.warn(`CDI spec ${spec.file}: ${cp}: another file of that name is already at ${at}; skipped`);
    return;
  }
  st.link(`${st.hostDir(dirname(real))}/${basename(real)}`, at);
  placed.set(cp, at);
  if (lib) {
    st.libDirs.add(dirname(cp));
    // What ldconfig (update-ldcache) makes: a SONAME link, listed in the cache.
    const soname = elfSoname(st.host, real);
    if (soname && soname !== name && !placed.has(`${INJECT}/lib/${soname}`)) {
      st.link(name, `${INJECT}/lib/${soname}`);
      plan.cache.push({ key: soname, value: `${INJECT}/lib/${soname}` });
    } else if (!soname || soname === name) {
      plan.cache.push({ key: name, value: at });
    }
  } else if (bin) {
    plan.bins = true;
  } else if (icd) {
    plan.prepend.push([icd, at]);
  } else {
    log.info(`CDI: image has no ${dirname(cp)}: ${hostPath} is at ${at}`);
  }
  log.info(`CDI: ${hostPath} -> ${at}`);
}

function addEnv(plan: CdiPlan, edits: Edits, fail: Fail): void {
  for (const e of edits.env ?? []) {
    const i = e.indexOf('=');
    if (i <= 0) throw fail(`env entry '${e}' is not VAR=VALUE`);
    plan.set.push([e.slice(0, i), e.slice(i + 1)]);
  }
}

/** What CDI can ask that an unprivileged container can't give: said, not done. */
function warnUnsupported(log: Log, edits: Edits, who: string): void {
  if (edits.additionalGids?.length)
    log.warn(`CDI ${who}: additionalGids ${edits.additionalGids.join(',')} not supported unprivileged `
      + '(only your own group is mapped); the device may need group access you already have');
  if (edits.intelRdt) log.warn(`CDI ${who}: intelRdt not supported (needs resctrl, root); ignored`);
  if (edits.netDevices?.length) log.warn(`CDI ${who}: netDevices not supported (the container shares the host's network); ignored`);
}

/** Turn the chosen devices' and their specs' containerEdits into mounts, links and environment. */
export function planEdits(host: Host, root: string, sel: Selection, icds: Map<string, string>, log: Log): CdiPlan {
  const st = editState(host, root, icds, log);
  hideDevices(st.plan, sel);
  const hooks: { h: NonNullable<Edits['hooks']>[number]; spec: Spec; who: string }[] = [];
  for (const { edits, spec, who } of editsToApply(sel)) {
    const fail = (msg: string) => new ChError(`CDI spec ${spec.file}: device ${who}: ${msg}`);
    addDeviceNodes(st, edits, who, fail);
    for (const m of edits.mounts ?? []) addMount(st, m, spec, who, fail);
    addEnv(st.plan, edits, fail);
    warnUnsupported(log, edits, who);
    for (const h of edits.hooks ?? []) hooks.push({ h, spec, who });
  }
  // Hooks last: they act on what the mounts placed (links, ldconfig's cache).
  for (const { h, spec, who } of hooks) interpretHook(h, spec, who, st);
  return st.plan;
}

interface HookCtx {
  root: string; plan: CdiPlan; placed: Map<string, string>; libDirs: Set<string>; log: Log;
  link: (target: string, dst: string) => void; mkdirs: (dir: string) => void; inRun: (p: string) => string | null;
}

/** Values of OPT in ARGS (--opt V and --opt=V). */
function optValues(args: string[], opt: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === opt && i + 1 < args.length) out.push(args[i + 1]);
    else if (a.startsWith(opt + '=')) out.push(a.slice(opt.length + 1));
  });
  return out;
}

function interpretHook(h: NonNullable<Edits['hooks']>[number], spec: Spec, who: string, c: HookCtx): void {
  const args = h.args ?? [basename(h.path)];
  const tool = basename(h.path);
  let rest = args.slice(1);
  if (tool === 'nvidia-ctk' && rest[0] === 'hook') rest = rest.slice(1);
  const sub = tool === 'nvidia-cdi-hook' || tool === 'nvidia-ctk' ? rest[0] : undefined;
  const desc = `${h.hookName} hook ${[h.path, ...args.slice(1)].join(' ')}`;
  if (sub === 'update-ldcache') {
    c.log.info(`CDI ${who}: ${desc}: served by the generated /etc/ld.so.cache `
      + `(folders ${optValues(rest, '--folder').join(', ') || 'none'})`);
  } else if (sub === 'create-symlinks') {
    for (const l of optValues(rest, '--link')) {
      const sep = l.indexOf('::');
      if (sep <= 0) { c.log.warn(`CDI spec ${spec.file}: ${desc}: bad --link '${l}'; skipped`); continue; }
      const target = l.slice(0, sep), at = posix.normalize(l.slice(sep + 2));
      const where = createLinkAt(at, c);
      if (!where) { c.log.info(`CDI ${who}: link ${at} not made: not in a directory the injection made`); continue; }
      let t = target;
      if (t.startsWith('/')) t = c.placed.get(posix.normalize(t))
        ?? (c.libDirs.has(dirname(t)) ? `${INJECT}/lib/${basename(t)}` : t);
      c.link(t, where);
      if (where.startsWith(`${INJECT}/lib/`) && isLib(basename(where)))
        c.plan.cache.push({ key: basename(where), value: where });
      c.log.info(`CDI ${who}: link ${at} -> ${target} made at ${where}`);
    }
  } else if (sub === 'chmod') {
    c.log.debug(`CDI ${who}: ${desc}: ignored (device nodes are bound with the host's modes)`);
  } else {
    c.log.warn(`CDI spec ${spec.file}: device ${who}: ${desc}: not run (hooks are interpreted, and this one is unknown)`);
  }
}

/** Where a create-symlinks link at container path AT can be made in our tmpfs, if anywhere. */
function createLinkAt(at: string, c: HookCtx): string | null {
  if (c.libDirs.has(dirname(at))) return `${INJECT}/lib/${basename(at)}`;
  const run = c.inRun(at);
  if (run) { c.mkdirs(dirname(run)); return run; }
  return null;   // the image's own directory, read-only: its content is the image's
}

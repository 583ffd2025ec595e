// CDI, the Container Device Interface (cncf-tags/container-device-interface,
// SPEC.md, versions 0.3.0 to 1.1.0): reading the vendors' spec files and
// choosing devices from them. What the chosen devices' containerEdits become
// inside an unprivileged container is decided in cdi-apply.ts.
//
// Spec files: *.json, *.yaml, *.yml in the spec directories, later
// directories winning over earlier ones for the same device. A spec is data
// that decides mounts and environment (LD_PRELOAD, say) of the user's
// container, so a directory or file another user could write is not read.

import type { Stats } from 'node:fs';
import type { Host } from '../container/host.js';
import { join } from 'node:path';
import { ChError, Log, why } from '../util/log.js';
import { PKG_ROOT } from '../util/paths.js';

export const DEFAULT_CDI_DIRS = '/etc/cdi:/var/run/cdi';

/** Released spec versions this reader knows (SPEC.md's table); a newer one is refused. */
const VERSIONS = ['0.3.0', '0.4.0', '0.5.0', '0.6.0', '0.7.0', '0.8.0', '1.0.0', '1.1.0'];

export interface DeviceNode { path: string; hostPath?: string; type?: string; major?: number; minor?: number;
  fileMode?: number; permissions?: string; uid?: number; gid?: number }
export interface Mount { hostPath: string; containerPath: string; type?: string; options?: string[] }
export interface Hook { hookName: string; path: string; args?: string[]; env?: string[]; timeout?: number }
export interface Edits { env?: string[]; deviceNodes?: DeviceNode[]; hooks?: Hook[]; mounts?: Mount[];
  intelRdt?: Record<string, unknown>; additionalGids?: number[]; netDevices?: { hostInterfaceName: string; name: string }[] }
export interface Spec { file: string; cdiVersion: string; kind: string; annotations?: Record<string, string>;
  devices: { name: string; annotations?: Record<string, string>; containerEdits: Edits }[]; containerEdits?: Edits }

// --- Validation: the spec's fields and nothing else ("spec loading fails on
// unknown fields"), with the JSON types the reference Go structs have.

type Shape = 'string' | 'uint' | 'int' | 'bool' | 'strings' | 'uints' | 'strmap'
  | { fields: Record<string, Shape>; required: string[] } | { list: Shape };

const obj = (fields: Record<string, Shape>, ...required: string[]): Shape => ({ fields, required });
const NODE = obj({ path: 'string', hostPath: 'string', type: 'string', major: 'int', minor: 'int', fileMode: 'uint',
  permissions: 'string', uid: 'uint', gid: 'uint' }, 'path');
const MOUNT = obj({ hostPath: 'string', containerPath: 'string', type: 'string', options: 'strings' },
  'hostPath', 'containerPath');
const HOOK = obj({ hookName: 'string', path: 'string', args: 'strings', env: 'strings', timeout: 'int' }, 'hookName', 'path');
const RDT = obj({ closID: 'string', l3CacheSchema: 'string', memBwSchema: 'string', schemata: 'strings',
  enableMonitoring: 'bool', enableCMT: 'bool', enableMBM: 'bool' });
const EDITS = obj({ env: 'strings', deviceNodes: { list: NODE }, hooks: { list: HOOK }, mounts: { list: MOUNT },
  intelRdt: RDT, additionalGids: 'uints', netDevices: { list: obj({ hostInterfaceName: 'string', name: 'string' },
    'hostInterfaceName', 'name') } });
const DEVICE = obj({ name: 'string', annotations: 'strmap', containerEdits: EDITS }, 'name', 'containerEdits');
const SPEC = obj({ cdiVersion: 'string', kind: 'string', annotations: 'strmap', devices: { list: DEVICE },
  containerEdits: EDITS }, 'cdiVersion', 'kind', 'devices');

function check(v: unknown, shape: Shape, at: string): void {
  const bad = (want: string) => { throw new Error(`${at}: must be ${want}, not ${JSON.stringify(v)}`); };
  if (typeof shape === 'string') {
    switch (shape) {
      case 'string': if (typeof v !== 'string') bad('a string'); return;
      case 'bool': if (typeof v !== 'boolean') bad('true or false'); return;
      case 'int': if (!Number.isSafeInteger(v)) bad('an integer'); return;
      case 'uint': if (!Number.isSafeInteger(v) || (v as number) < 0 || (v as number) > 0xffffffff) bad('an unsigned integer'); return;
      case 'strings': if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) bad('a list of strings'); return;
      case 'uints': if (!Array.isArray(v)) bad('a list of unsigned integers');
        (v as unknown[]).forEach((x, i) => check(x, 'uint', `${at}[${i}]`)); return;
      case 'strmap': if (v === null || typeof v !== 'object' || Array.isArray(v)
        || !Object.values(v).every((x) => typeof x === 'string')) bad('a map of strings'); return;
    }
  }
  if ('list' in shape) {
    if (!Array.isArray(v)) bad('a list');
    (v as unknown[]).forEach((x, i) => check(x, shape.list, `${at}[${i}]`));
    return;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad('an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(k in shape.fields)) throw new Error(`${at ? at + '.' : ''}${k}: unknown field`);
    if (o[k] !== null) check(o[k], shape.fields[k], `${at ? at + '.' : ''}${k}`);
  }
  for (const k of shape.required)
    if (o[k] === undefined || o[k] === null || o[k] === '') throw new Error(`${at ? at + '.' : ''}${k}: required`);
}

const VENDOR_RE = /^[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]$|^[A-Za-z]$/;
const CLASS_RE = /^[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]$|^[A-Za-z]$/;
const NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$/;

export function splitKind(kind: string): { vendor: string; cls: string } | null {
  const i = kind.indexOf('/');
  if (i < 0) return null;
  const vendor = kind.slice(0, i), cls = kind.slice(i + 1);
  return VENDOR_RE.test(vendor) && CLASS_RE.test(cls) ? { vendor, cls } : null;
}

const vcmp = (a: string, b: string) => {
  const x = a.split('.').map(Number), y = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
};

/** The oldest spec version that has every feature SPEC uses, and which feature forces it. */
function minimumVersion(s: Spec): [string, string] {
  const edits = [s.containerEdits, ...s.devices.map((d) => d.containerEdits)].filter((e): e is Edits => !!e);
  const checks: [string, string, boolean][] = [
    ['1.1.0', 'netDevices', edits.some((e) => e.netDevices?.length)],
    ['1.1.0', 'intelRdt.schemata/enableMonitoring', edits.some((e) => e.intelRdt?.schemata || e.intelRdt?.enableMonitoring)],
    ['0.7.0', 'intelRdt', edits.some((e) => e.intelRdt)],
    ['0.7.0', 'additionalGids', edits.some((e) => e.additionalGids?.length)],
    ['0.6.0', 'annotations', !!s.annotations || s.devices.some((d) => d.annotations)],
    ['0.6.0', 'a dot in the class of kind', (splitKind(s.kind)?.cls ?? '').includes('.')],
    ['0.5.0', 'deviceNodes[].hostPath', edits.some((e) => e.deviceNodes?.some((n) => n.hostPath))],
    ['0.5.0', 'a device name starting with a digit', s.devices.some((d) => /^[0-9]/.test(d.name))],
    ['0.4.0', 'mounts[].type', edits.some((e) => e.mounts?.some((m) => m.type))],
  ];
  const hit = checks.find(([, , used]) => used);
  return hit ? [hit[0], hit[1]] : ['0.3.0', ''];
}

/**
 * The YAML parser, loaded through HOST when a YAML spec is read: evaluating
 * it costs ~5 ms (measured), which --device with JSON specs and --gpu
 * without specs need not pay, and it is its own bundle, dist/ch-run-yaml.cjs
 * (yaml.ts), so that the devices bundle, which ch-run reads at every first
 * --gpu, --ib or --device launch, is 56 KB rather than 318 (~1 ms of such
 * a launch, measured).
 */
function parseYaml(host: Host, text: string, opts: object): unknown {
  return host.load<typeof import('./yaml.js')>(join(PKG_ROOT, 'dist', 'ch-run-yaml.cjs')).parse(text, opts);
}

/** Parse and validate one spec file's text; errors name what is wrong, the caller adds the file. */
export function parseSpec(host: Host, text: string, file: string): Spec {
  let data: unknown;
  if (/\.json$/.test(file)) {
    try { data = JSON.parse(text); } catch (err) { throw new Error(`not valid JSON: ${(err as Error).message}`); }
  } else {
    try { data = parseYaml(host, text, { uniqueKeys: true, prettyErrors: false }); } catch (err) {
      throw new Error(`not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  check(data, SPEC, '');
  const s = { ...(data as Omit<Spec, 'file'>), file };
  if (!VERSIONS.includes(s.cdiVersion))
    throw new Error(`cdiVersion: unsupported version '${s.cdiVersion}' (known: ${VERSIONS.join(', ')})`);
  if (!splitKind(s.kind)) throw new Error(`kind: '${s.kind}' is not VENDOR/CLASS (e.g. nvidia.com/gpu)`);
  const seen = new Set<string>();
  s.devices.forEach((d, i) => {
    if (!NAME_RE.test(d.name)) throw new Error(`devices[${i}].name: invalid device name '${d.name}'`);
    if (seen.has(d.name)) throw new Error(`devices[${i}].name: device '${d.name}' defined twice`);
    seen.add(d.name);
  });
  const [need, what] = minimumVersion(s);
  if (vcmp(need, s.cdiVersion) > 0)
    throw new Error(`cdiVersion ${s.cdiVersion} is too old for what the spec uses (${what} needs ${need})`);
  return s;
}

// --- The registry: every device of every readable spec.

export interface Found { kind: string; name: string; spec: Spec }
export interface Registry {
  dirs: string[];
  devices: Map<string, Found>;            // "kind=name"
  kinds: Map<string, Spec[]>;             // the specs that provide each kind
  broken: { file: string; kind: string | null; error: string }[];
}

/** Writable by someone other than root and us? Then it is not ours to trust. */
function foreignWritable(st: Stats): string | null {
  const me = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== me) return `owned by uid ${st.uid}`;
  if (st.mode & 0o002) return 'writable by all users';
  if (st.mode & 0o020 && st.gid !== 0) return 'writable by its group';
  return null;
}

export function cdiDirs(flag: string | null, env: Map<string, string>): string[] {
  return (flag ?? env.get('CH_RUN_CDI_DIRS') ?? DEFAULT_CDI_DIRS).split(':').filter(Boolean);
}

export function loadRegistry(host: Host, dirs: string[], log: Log): Registry {
  const reg: Registry = { dirs, devices: new Map(), kinds: new Map(), broken: [] };
  for (const dir of dirs) {
    let names: string[];
    try { names = host.readdir(dir).filter((n) => /\.(json|ya?ml)$/.test(n)).sort(); } catch (err) {
      log.debug(`CDI: no spec directory ${dir}: ${why(err)}`);
      continue;
    }
    const dirBad = foreignWritable(host.stat(dir));
    if (dirBad) { log.warn(`CDI: not reading specs in ${dir}: ${dirBad}`); continue; }
    const here = new Map<string, string>();   // same directory: a device defined twice is a conflict
    for (const n of names) {
      const file = join(dir, n);
      let text: string;
      try {
        const st = host.stat(file);
        if (!st.isFile()) continue;
        const bad = foreignWritable(st);
        if (bad) { log.warn(`CDI: not reading spec ${file}: ${bad}`); continue; }
        text = host.readFile(file, 'utf8');
      } catch (err) {
        reg.broken.push({ file, kind: null, error: `can't read: ${why(err)}` });
        continue;
      }
      let spec: Spec;
      try { spec = parseSpec(host, text, file); } catch (err) {
        const kind = /"?kind"?\s*:\s*"?([^"\s,]+)/.exec(text)?.[1] ?? null;
        reg.broken.push({ file, kind, error: (err as Error).message });
        log.debug(`CDI: ignoring invalid spec ${file}: ${(err as Error).message}`);
        continue;
      }
      reg.kinds.set(spec.kind, [...(reg.kinds.get(spec.kind) ?? []), spec]);
      for (const d of spec.devices) {
        const q = `${spec.kind}=${d.name}`;
        const other = here.get(q);
        if (other) {
          reg.broken.push({ file, kind: spec.kind, error: `device ${q} also defined in ${other}` });
          continue;
        }
        here.set(q, file);
        reg.devices.set(q, { kind: spec.kind, name: d.name, spec });
      }
    }
  }
  return reg;
}

/** "KIND=NAME[,NAME...]" of --device, checked for form only. */
export function parseDeviceArg(arg: string): { kind: string; names: string[] } {
  const i = arg.indexOf('=');
  const kind = i < 0 ? arg : arg.slice(0, i);
  const names = i < 0 ? [] : arg.slice(i + 1).split(',');
  if (!splitKind(kind) || names.length === 0 || !names.every((n) => NAME_RE.test(n)))
    throw new ChError(`--device: bad device '${arg}' (want VENDOR/CLASS=NAME[,NAME...], e.g. nvidia.com/gpu=0)`);
  return { kind, names };
}

/** The registry's entry for KIND=NAME, or an error that says why there is none. */
export function lookup(reg: Registry, kind: string, name: string, asked: string): Found {
  const f = reg.devices.get(`${kind}=${name}`);
  if (f) return f;
  const broken = reg.broken.filter((b) => b.kind === kind || b.kind === null);
  const specs = reg.kinds.get(kind);
  throw new ChError(`${asked}: no CDI device ${kind}=${name}`
    + (specs ? `; ${kind} has: ${specs.flatMap((s) => s.devices.map((d) => d.name)).join(', ')} (${specs.map((s) => s.file).join(', ')})`
      : `; no spec for ${kind} in ${reg.dirs.join(':')}`)
    + broken.map((b) => `\n  invalid spec ${b.file}: ${b.error}`).join(''));
}

// What --gpu and --ib inject, as data: share/gpu/VENDOR.conf and
// share/ib.conf (plus CH_GPU_CONF/CH_IB_CONF files and CH_*_LIBS), one
// directive a line: `dev PATTERN [indexed [BASE]]`, `lib PREFIX`, `bin NAME`,
// `icd PATH ENVVAR`, `dir PATH`. Parsed here; found on the host and turned
// into mounts by inject.ts.

import { join } from 'node:path';
import type { Host } from '../container/host.js';
import { ChError, why } from '../util/log.js';
import { SHARE_DIR } from '../util/paths.js';

export type Kind = 'nvidia' | 'amd' | 'ib';
export const GPU_VENDORS: Kind[] = ['nvidia', 'amd'];

export interface Conf {
  devs: { pattern: string; indexed: boolean; base: number }[];
  libs: string[];
  bins: string[];
  icds: { path: string; env: string }[];
  dirs: string[];
  sources: string[];
}

function emptyConf(): Conf { return { devs: [], libs: [], bins: [], icds: [], dirs: [], sources: [] }; }

export function parseConf(text: string, source: string, into: Conf = emptyConf()): Conf {
  into.sources.push(source);
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const [word, ...args] = line.split(/\s+/);
    const bad = () => new ChError(`${source}:${i + 1}: bad line: ${raw.trim()}`);
    switch (word) {
      case 'dev':
        if (args.length < 1 || args.length > 3 || (args[1] !== undefined && args[1] !== 'indexed')
            || (args[2] !== undefined && !/^[0-9]+$/.test(args[2]))
            || args[0].startsWith('/') || args[0].split('/').includes('..')) throw bad();
        into.devs.push({ pattern: args[0], indexed: args[1] === 'indexed', base: Number(args[2] ?? 0) });
        break;
      case 'lib': if (args.length !== 1) throw bad(); into.libs.push(args[0]); break;
      case 'bin': if (args.length !== 1 || args[0].includes('/')) throw bad(); into.bins.push(args[0]); break;
      case 'icd':
        if (args.length !== 2 || !args[0].startsWith('/') || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(args[1])) throw bad();
        into.icds.push({ path: args[0], env: args[1] });
        break;
      case 'dir': if (args.length !== 1 || !args[0].startsWith('/')) throw bad(); into.dirs.push(args[0]); break;
      default: throw bad();
    }
  });
  return into;
}

export function readText(host: Host, path: string, what: string): string {
  try { return host.readFile(path, 'utf8'); } catch (err) { throw new ChError(`can't read ${what} ${path}: ${why(err)}`); }
}

/**
 * MAKE()'s result for KEY, made once per plan (per Host: a plan has one,
 * whose reads are recorded the first time), kept in TABLE.
 */
export function perPlan<T>(table: WeakMap<Host, Map<string, T>>, host: Host, key: string, make: () => T): T {
  let mine = table.get(host);
  if (mine === undefined) table.set(host, mine = new Map());
  if (!mine.has(key)) mine.set(key, make());
  return mine.get(key)!;
}

export function loadConf(host: Host, kind: Kind, env: Map<string, string>): Readonly<Conf> {
  const pre = kind === 'ib' ? 'CH_IB' : 'CH_GPU';
  // Read and parsed once per plan for the same variables: an injection asks
  // for a kind's conf three times (~0.15 ms each).
  return perPlan(confs, host, `${kind}\0${env.get(`${pre}_CONF`) ?? ''}\0${env.get(`${pre}_LIBS`) ?? ''}`, () => {
    const file = kind === 'ib' ? join(SHARE_DIR, 'ib.conf') : join(SHARE_DIR, 'gpu', `${kind}.conf`);
    const conf = parseConf(readText(host, file, 'configuration'), file);
    for (const f of (env.get(`${pre}_CONF`) ?? '').split(':').filter(Boolean))
      parseConf(readText(host, f, `${pre}_CONF file`), f, conf);
    for (const l of (env.get(`${pre}_LIBS`) ?? '').split(/[:,]/).filter(Boolean)) conf.libs.push(l);
    return conf;
  });
}
const confs = new WeakMap<Host, Map<string, Conf>>();

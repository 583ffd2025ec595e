// Image builders (docker, podman, buildah): which one to use, and how to ask
// each for the few things ch-build and ch-builder2tar need.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ChError } from '../util/log.js';
import { PKG_ROOT } from '../util/paths.js';

export type BuilderName = 'docker' | 'podman' | 'buildah' | 'ch-image';
export const BUILDERS: BuilderName[] = ['docker', 'podman', 'buildah'];
/** Our own builder (lib/ch-image): always there, used when none of BUILDERS works. */
export const OWN_BUILDER: BuilderName = 'ch-image';

/** The command that runs builder NAME: ch-image is the package's own. */
export function builderCommand(name: BuilderName): string {
  return name === OWN_BUILDER ? join(PKG_ROOT, 'bin', 'ch-image') : name;
}

/** How to check that a builder is installed *and working* (docker needs a running engine). */
const PROBES: Record<BuilderName, string[]> = {
  docker: ['info', '--format', '{{.ServerVersion}}'],
  podman: ['version', '--format', '{{.Client.Version}}'],
  buildah: ['version'],
  'ch-image': ['--version'],
};

export interface Probe { name: BuilderName; ok: boolean; why: string }

export function probe(name: BuilderName, env: NodeJS.ProcessEnv = process.env): Probe {
  const r = spawnSync(builderCommand(name), PROBES[name], { env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30000, encoding: 'utf8' });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    return { name, ok: false, why: code === 'ENOENT' ? 'not found' : `${r.error.message}` };
  }
  if (r.status !== 0) {
    const last = (r.stderr ?? '').trim().split('\n').pop() ?? '';
    return { name, ok: false, why: `\`${name} ${PROBES[name][0]}\` failed (exit ${r.status ?? r.signal})${last ? `: ${last}` : ''}` };
  }
  return { name, ok: true, why: 'works' };
}

export function checkName(name: string, from: string): BuilderName {
  if (!([...BUILDERS, OWN_BUILDER] as string[]).includes(name))
    throw new ChError(`unknown builder '${name}' (from ${from}); known: ${[...BUILDERS, OWN_BUILDER].join(', ')}`, 2);
  return name as BuilderName;
}

/**
 * The builder to use: EXPLICIT (-b), else $CH_BUILDER, else the first of
 * docker, podman, buildah found working. Errors list what was tried and why.
 */
export function selectBuilder(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env,
  debug: (msg: string) => void = () => {}): BuilderName {
  if (explicit) return checkName(explicit, '-b');
  if (env.CH_BUILDER) return checkName(env.CH_BUILDER, '$CH_BUILDER');
  const tried: Probe[] = [];
  for (const b of BUILDERS) {
    const p = probe(b, env);
    debug(`builder ${b}: ${p.why}`);
    if (p.ok) return b;
    tried.push(p);
  }
  // None installed and working (a bare cluster login node): our own builder.
  const own = probe(OWN_BUILDER, env);
  if (own.ok) {
    debug(`no working docker, podman or buildah (tried: ${tried.map((p) => `${p.name} (${p.why})`).join(', ')}); using ${OWN_BUILDER}`);
    return OWN_BUILDER;
  }
  tried.push(own);
  throw new ChError(`no working builder found; tried: ${tried.map((p) => `${p.name} (${p.why})`).join(', ')}`
    + '; install one, or name one with -b or $CH_BUILDER', 1);
}

/** Proxy variables passed to builds as build arguments. */
export const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'FTP_PROXY', 'NO_PROXY', 'ALL_PROXY',
  'http_proxy', 'https_proxy', 'ftp_proxy', 'no_proxy', 'all_proxy'];

/** argv for building TAG from DOCKERFILE in CONTEXT with BUILDER. */
export function buildArgv(builder: BuilderName, tag: string, dockerfile: string | undefined, extra: string[],
  context: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const proxies = PROXY_VARS.filter((v) => env[v] !== undefined).flatMap((v) => ['--build-arg', `${v}=${env[v]}`]);
  const sub = builder === 'buildah' ? ['bud'] : ['build'];
  return [builderCommand(builder), ...sub, '-t', tag, ...(dockerfile ? ['-f', dockerfile] : []), ...proxies, ...extra, context];
}

/** The image configuration fields ch-run uses, from `inspect` of any builder. */
export interface ImageConfig {
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  Env: string[];
  WorkingDir: string;
  Labels: Record<string, string>;
  User: string;
}

/** Pick the OCI config out of a builder's inspect output. */
export function configFromInspect(builder: BuilderName, json: unknown): ImageConfig {
  let c: Record<string, unknown> | undefined;
  const first = Array.isArray(json) ? json[0] : json;
  if (!first || typeof first !== 'object') throw new ChError(`${builder} inspect: unexpected output`);
  const o = first as Record<string, any>;
  if (builder === 'buildah') c = o.OCIv1?.config ?? o.Docker?.config ?? {};
  else c = o.Config ?? {};
  const arr = (v: unknown) => (Array.isArray(v) && v.length ? v.map(String) : null);
  return {
    Entrypoint: arr(c!.Entrypoint),
    Cmd: arr(c!.Cmd),
    Env: (arr(c!.Env) ?? []),
    WorkingDir: typeof c!.WorkingDir === 'string' ? c!.WorkingDir : '',
    Labels: (c!.Labels && typeof c!.Labels === 'object' ? c!.Labels : {}) as Record<string, string>,
    User: typeof c!.User === 'string' ? c!.User : '',
  };
}

/**
 * /ch/environment: one VAR=value per line, as ch-run --set-env reads it. A
 * value wrapped in single quotes would lose them there, so such a value is
 * quoted once more; a value with a newline can't be written (returned in skipped).
 */
export function environmentFile(env: string[]): { text: string; skipped: string[] } {
  const lines: string[] = [];
  const skipped: string[] = [];
  for (const kv of env) {
    const eq = kv.indexOf('=');
    if (eq <= 0 || kv.includes('\n') || kv.includes('\0')) { skipped.push(kv.slice(0, Math.max(eq, 0)) || kv); continue; }
    const k = kv.slice(0, eq), v = kv.slice(eq + 1);
    lines.push(v.length >= 2 && v.startsWith("'") && v.endsWith("'") ? `${k}='${v}'` : `${k}=${v}`);
  }
  return { text: lines.length ? lines.join('\n') + '\n' : '', skipped };
}

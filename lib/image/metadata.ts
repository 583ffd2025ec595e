// An image's configuration as /ch/metadata.json and /ch/environment record
// it (ch-builder2tar and ch-pull write them), read back from an image tree,
// and the OCI image config made from it: shared by ch-convert's output to a
// builder (a docker-archive) and by pushing to a registry (lib/push), so
// both give a builder or registry the same ENTRYPOINT, CMD, ENV, WORKDIR,
// USER and labels.

import { lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChError, type Log, why } from '../util/log.js';

const EXIT_FAIL = 1;

/** The configuration fields a builder keeps, as ch-builder2tar records them in /ch/metadata.json. */
export interface Metadata {
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  Env: string[];
  WorkingDir: string;
  User: string;
  Labels: Record<string, string>;
}

/** A file of the tree at REL (e.g. "ch/environment"), never through a link; null if absent. */
function readTreeFile(tree: string, rel: string): string | null {
  const parts = rel.split('/');
  for (let i = 1; i <= parts.length; i++) {
    const p = join(tree, ...parts.slice(0, i));
    let st;
    try { st = lstatSync(p); } catch { return null; }
    const last = i === parts.length;
    if (st.isSymbolicLink()) throw new ChError(`${p}: a symlink; not following it for the image's configuration`, EXIT_FAIL);
    if (last ? !st.isFile() : !st.isDirectory()) return null;
  }
  try { return readFileSync(join(tree, rel), 'utf8'); } catch (err) { throw new ChError(`can't read ${join(tree, rel)}: ${why(err)}`, EXIT_FAIL); }
}

/** /ch/environment as ch-run reads it: NAME=value lines, one pair of single quotes around a value stripped. */
export function parseEnvironment(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const v = line.slice(eq + 1);
    out.push(`${line.slice(0, eq)}=${v.length >= 2 && v.startsWith("'") && v.endsWith("'") ? v.slice(1, -1) : v}`);
  }
  return out;
}

const strings = (v: unknown): string[] | null =>
  Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string') ? v as string[] : null;

/** The image's configuration from TREE's /ch: metadata.json, and environment (which ch-run uses) for ENV. */
export function metadataOf(tree: string, log: Log): Metadata {
  const m: Metadata = { Entrypoint: null, Cmd: null, Env: [], WorkingDir: '', User: '', Labels: {} };
  const json = readTreeFile(tree, 'ch/metadata.json');
  if (json !== null) {
    let o: Record<string, unknown>;
    try { o = JSON.parse(json); } catch (err) { throw new ChError(`${join(tree, 'ch/metadata.json')}: not JSON: ${why(err)}`, EXIT_FAIL); }
    if (o === null || typeof o !== 'object' || Array.isArray(o))
      throw new ChError(`${join(tree, 'ch/metadata.json')}: not a JSON object`, EXIT_FAIL);
    m.Entrypoint = strings(o.Entrypoint);
    m.Cmd = strings(o.Cmd);
    m.Env = strings(o.Env) ?? [];
    if (typeof o.WorkingDir === 'string') m.WorkingDir = o.WorkingDir;
    if (typeof o.User === 'string') m.User = o.User;
    if (o.Labels && typeof o.Labels === 'object' && !Array.isArray(o.Labels))
      for (const [k, v] of Object.entries(o.Labels)) if (typeof v === 'string') m.Labels[k] = v;
  } else {
    log.info(`${tree}: no /ch/metadata.json; no ENTRYPOINT, CMD or WORKDIR`);
  }
  const env = readTreeFile(tree, 'ch/environment');
  if (env !== null) m.Env = parseEnvironment(env);
  return m;
}

/** GOARCH of this machine: what a builder expects in the config. */
export function goArch(): string {
  const map: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return map[process.arch] ?? process.arch;
}

/** What the config says of its making: when (an ISO date) and by what (history's created_by). */
export interface ConfigOrigin { created: string; createdBy: string; architecture?: string }

/**
 * The OCI (and Docker v2) image config for META over layers whose
 * uncompressed digests are DIFFIDS: only fields that are set, so a builder
 * or registry sees no empty ENTRYPOINT or USER that the image lacks.
 */
export function imageConfig(meta: Metadata, diffIds: string[], origin: ConfigOrigin): Record<string, unknown> {
  return {
    architecture: origin.architecture ?? goArch(),
    os: 'linux',
    created: origin.created,
    config: {
      ...(meta.User ? { User: meta.User } : {}),
      Env: meta.Env,
      ...(meta.Entrypoint ? { Entrypoint: meta.Entrypoint } : {}),
      ...(meta.Cmd ? { Cmd: meta.Cmd } : {}),
      ...(meta.WorkingDir ? { WorkingDir: meta.WorkingDir } : {}),
      ...(Object.keys(meta.Labels).length ? { Labels: meta.Labels } : {}),
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map(() => ({ created: origin.created, created_by: origin.createdBy })),
  };
}

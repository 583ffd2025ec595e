// What each metadata instruction does to the image config (ENV, LABEL,
// WORKDIR, USER, CMD, ENTRYPOINT, SHELL, EXPOSE, VOLUME, HEALTHCHECK,
// STOPSIGNAL), and the instructions ch-image refuses. RUN, COPY, ADD, ARG and
// FROM, which touch the tree or the build's variables, are build.ts's.

import { posix } from 'node:path';
import { ChError } from '../util/log.js';
import type { Instr } from './dockerfile.js';
import { setEnv, shellOf, type OciConfig } from './config.js';
import { expand, type Vars } from './subst.js';

export const EXIT_FAIL = 1;

/** Instructions that change only the config. */
export const METADATA = new Set(['ENV', 'LABEL', 'WORKDIR', 'USER', 'CMD', 'ENTRYPOINT', 'SHELL', 'EXPOSE', 'VOLUME',
  'HEALTHCHECK', 'STOPSIGNAL', 'MAINTAINER']);

/** The command of a CMD/ENTRYPOINT/RUN: its exec form, or the shell form through C's SHELL. */
export function commandOf(i: Instr, c: OciConfig): string[] {
  return i.json ?? [...shellOf(c), i.text];
}

/** A refusal of I (WHERE: FILE:LINE) for REASON. */
export function refuse(where: string, i: Instr, reason: string): ChError {
  return new ChError(`${where}: ${i.keyword}: ${reason}`, EXIT_FAIL);
}

/** C after metadata instruction I, variables VARS in scope. */
export function applyMetadata(i: Instr, c: OciConfig, vars: Vars, where: string): OciConfig {
  const x = (s: string) => expand(s, vars);
  switch (i.keyword) {
    case 'ENV': {
      if (!i.props.length) throw refuse(where, i, 'want NAME=VALUE ...');
      for (const [k, v] of i.props) c = setEnv(c, k, x(v ?? ''));
      return c;
    }
    case 'LABEL':
      return { ...c, Labels: { ...c.Labels, ...Object.fromEntries(i.props.map(([k, v]) => [x(k), x(v ?? '')])) } };
    case 'MAINTAINER':
      return { ...c, Labels: { ...c.Labels, maintainer: x(i.text) } };
    case 'WORKDIR':
      if (!i.text) throw refuse(where, i, 'want a directory');
      return { ...c, WorkingDir: posix.resolve(c.WorkingDir || '/', x(i.text)) };
    case 'USER':
      return { ...c, User: x(i.text) };
    case 'CMD':
      return { ...c, Cmd: commandOf(i, c) };
    case 'ENTRYPOINT':
      // As Docker: a new ENTRYPOINT drops the CMD an earlier stage or the base set.
      return { ...c, Entrypoint: commandOf(i, c), Cmd: null };
    case 'SHELL':
      if (!i.json?.length) throw refuse(where, i, 'want the JSON form, e.g. SHELL ["/bin/bash", "-c"]');
      return { ...c, Shell: i.json };
    case 'EXPOSE': {
      const ports = { ...(c.ExposedPorts ?? {}) };
      for (const a of i.args) { const p = x(a); ports[p.includes('/') ? p : `${p}/tcp`] = {}; }
      return { ...c, ExposedPorts: ports };
    }
    case 'VOLUME': {
      const vols = { ...(c.Volumes ?? {}) };
      for (const v of i.json ?? i.args) vols[x(v)] = {};
      return { ...c, Volumes: vols };
    }
    case 'HEALTHCHECK': {
      if (i.args[0]?.toUpperCase() === 'NONE') return { ...c, Healthcheck: { Test: ['NONE'] } };
      const rest = i.text.replace(/^\s*CMD\s+/i, '');
      let test: string[];
      try { const j = JSON.parse(rest); test = Array.isArray(j) ? ['CMD', ...j.map(String)] : ['CMD-SHELL', rest]; } catch { test = ['CMD-SHELL', rest]; }
      return { ...c, Healthcheck: { Test: test, ...Object.fromEntries(Object.entries(i.flags).map(([k, v]) => [k, v])) } };
    }
    case 'STOPSIGNAL':
      return { ...c, StopSignal: x(i.text) };
  }
  throw refuse(where, i, 'not a metadata instruction');
}

/** Instructions refused, and why. */
export const REFUSED: Record<string, string> = {
  ONBUILD: 'not supported: ch-image records no triggers for later builds; put the instructions in the Dockerfiles that need them',
};

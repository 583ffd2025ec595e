// Which of Node's own modules a run loads (issue #27: each one more than a
// plain script loads cost a launch that plans 0.25-0.5 ms, or ~1.3 ms for
// node:module with the ES module loader it brings). test/startup.test.js
// and test/gpu.test.js ask it of ch-run's front end.

import { execa } from 'execa';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PKG } from './env.js';

// As the launcher runs Node (protocol.json nodeFlags): the code caches were made under them.
const { NODE_FLAGS } = await import(join(PKG, 'dist', 'util', 'protocol.gen.js'));

/** In DIR: list.cjs, which writes at exit what the run loaded to $MODULES_OUT, and plain.cjs, an empty script. */
export function writeModuleProbe(dir) {
  writeFileSync(join(dir, 'list.cjs'),
    "process.on('exit', () => require('fs').writeFileSync(process.env.MODULES_OUT, process.moduleLoadList.join('\\n')));\n");
  writeFileSync(join(dir, 'plain.cjs'), '\n');
}

/**
 * What a run of SCRIPT ARGS loaded (the probe in DIR, its list in DIR/NAME.txt),
 * under ch-run's Node flags, with the launcher's descriptors 3-5 as pipes:
 * { r, loaded }. PRE: what runs Node (asUser()); ENV: the whole environment.
 */
export async function modulesOf(dir, name, script, args, { pre = [], env = {} } = {}) {
  const out = join(dir, `${name}.txt`);
  const argv = [...pre, process.execPath, ...NODE_FLAGS, '-r', join(dir, 'list.cjs'), script, ...args];
  const r = await execa(argv[0], argv.slice(1), { reject: false, extendEnv: false, cwd: '/',
    env: { ...env, MODULES_OUT: out }, stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'] });
  return { r, loaded: new Set(readFileSync(out, 'utf8').split('\n')) };
}

/** Node's own modules and bindings in LOADED that PLAIN (a plain script's) lacks, less ALLOWED. */
export function beyondPlain(loaded, plain, allowed) {
  return [...loaded].filter((m) => m.startsWith('NativeModule ') || m.startsWith('Internal Binding '))
    .filter((m) => !plain.has(m) && !allowed.includes(m));
}

/** Copies of the staged package's FILES (package.json, dist/...) in DIR: the loader and bundles, without what else is there. */
export function copyFromPackage(dir, files) {
  mkdirSync(join(dir, 'dist'), { recursive: true });
  for (const f of files) writeFileSync(join(dir, f), readFileSync(join(PKG, f)));
}

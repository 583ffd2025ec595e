// The protocol between ch-run's front end and its launcher and core is defined
// once, in protocol.json (tools/protocol.js makes its C and TypeScript forms):
// the FNV-1a hash that both sides compute (to name a key, check an entry and
// hash the environment's names) gives the spec's test vector in each
// language, and no value of the spec is written out again in either.

import test from 'ava';
import { execa } from 'execa';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PKG } from './helpers/env.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const spec = JSON.parse(readFileSync(join(REPO, 'protocol.json'), 'utf8'));

test('FNV-1a, TypeScript: the spec\'s test vector', async (t) => {
  const { fnv64 } = await import(join(PKG, 'dist', 'run', 'memo.js'));
  t.is(fnv64(Buffer.from(spec.fnv.testInput)), spec.fnv.testHash);
});

test('FNV-1a, C (native/launcher/memo/buf.c): the spec\'s test vector', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ch-protocol-test-'));
  try {
    // The launcher's own fnv64() from FNV_INIT, on FNV_TEST_INPUT (its NUL included: sizeof - 1).
    writeFileSync(join(dir, 'vector.c'), `#include <stdio.h>
#include <string.h>
#include "internal.h"
int main(void)
{
   printf("%016llx\\n", (unsigned long long)fnv64(FNV_INIT, FNV_TEST_INPUT, sizeof(FNV_TEST_INPUT) - 1));
   return strcmp(FNV_TEST_HASH, ${JSON.stringify(spec.fnv.testHash)}) != 0;
}
`);
    await execa('node', [join(REPO, 'tools', 'protocol.js'), 'c'], { cwd: REPO });
    await execa('cc', ['-std=gnu11', '-D_GNU_SOURCE', `-I${join(REPO, 'build', 'gen')}`,
      `-I${join(REPO, 'native', 'launcher', 'memo')}`, '-o', join(dir, 'vector'), join(dir, 'vector.c'),
      join(REPO, 'native', 'launcher', 'memo', 'buf.c')]);
    const r = await execa(join(dir, 'vector'), { reject: false });
    t.is(r.exitCode, 0, 'the header carries the spec\'s vector');
    t.is(r.stdout.trim(), spec.fnv.testHash);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Files under DIR (relative to the repository) whose name matches RE. */
function sources(dir, re) {
  const out = [];
  for (const e of readdirSync(join(REPO, dir), { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p, re));
    else if (re.test(e.name) && !e.name.endsWith('.gen.ts')) out.push(p);
  }
  return out;
}

test('no value of the spec that is a name (magics, the launcher\'s variables) is written in C or TypeScript', (t) => {
  const launcher = Object.entries(spec.launcher).filter(([k]) => !k.startsWith('_')).map(([, v]) => v);
  const names = [spec.plan.magic, spec.plan.nothingToRun, spec.record.magic, ...launcher]
    .filter((v) => typeof v === 'string' && v.length > 3);
  const found = [];
  for (const f of [...sources('native', /\.[ch]$/), ...sources('lib', /\.ts$/)]) {
    const text = readFileSync(join(REPO, f), 'utf8');
    for (const n of names) {
      // As a literal: quoted, or in a template; a comment may name it.
      const code = text.split('\n').filter((l) => !/^\s*(\/\/|\/?\*)/.test(l)).join('\n');
      if (new RegExp(`["'\`]${n}["'\`\\\\]`).test(code)) found.push(`${f}: ${n}`);
    }
  }
  t.deepEqual(found, []);
});

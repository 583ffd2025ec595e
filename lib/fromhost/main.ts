// ch-fromhost: copy host files (GPU driver libraries, tools, anything) into a
// writable image directory, permanently, then run the image's ldconfig
// through ch-run -w. Charliecloud-compatible options:
//   --path PATH / --cmd CMD / --file FILE   what to inject (repeatable)
//   --nvidia       NVIDIA's driver files (nvidia-container-cli list, else the
//                  libraries and tools share/gpu/nvidia.conf names, found as
//                  ch-run --gpu finds them)
//   --cdi KIND=NAME[,NAME...]   the files a CDI device's spec mounts (and its
//                  spec-wide ones), each copied to its containerPath; the
//                  spec's create-symlinks links made; its env appended to
//                  /ch/environment (ch-run --set-env reads it). Device nodes
//                  are per host and stay ch-run's (--device). --cdi-dirs as
//                  ch-run's.
//   --dest DIR     put everything in DIR inside the image
//   --lib-path     print the image directory shared libraries go to, and exit
//   --no-ldconfig  don't run ldconfig afterwards
// Without --dest, shared libraries (*.so, *.so.N) go to the first directory
// the image's own `ldconfig -Nv` searches; other executables go to /usr/bin;
// any other file needs --dest.

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, lstatSync, readFileSync, renameSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { all, command, type CommandSpec, count, EXIT_USAGE, last, parseCommand } from '../util/cli.js';
import { ChError, Log, runMain, why } from '../util/log.js';
import { LAUNCHER_PATH } from '../util/paths.js';
import { checkImage, createInImage, kindInImage, resolveInImage } from '../container/image.js';
import { liveHost } from '../container/host.js';

/** The host as ch-run's planning code reads it (nothing recorded here). */
const host = liveHost();

const log = new Log('ch-fromhost');

const SPEC: CommandSpec = {
  prog: 'ch-fromhost',
  synopsis: '[OPTION...] (--path PATH | --cmd CMD | --file FILE | --nvidia | --cdi KIND=NAME)... IMGDIR',
  valueShorts: 'cfpd',
  description: `Copy host files (GPU driver libraries and tools, or anything else) into the
writable image directory IMGDIR, permanently, then run the image's own
ldconfig through ch-run -w so the libraries are found.

Without --dest, shared libraries (*.so, *.so.N) go to the first directory the
image's own \`ldconfig -Nv\` searches; other executables go to /usr/bin; any
other file needs --dest. A symlink in the image where a file goes is replaced,
never written through. --path, --cmd and --file may be repeated and mixed.`,
  epilog: `Exit status:
  0   files injected (or --lib-path printed)
  2   usage error: unknown option, missing value, no or several IMGDIR,
      relative --dest, nothing to inject
  31  failure: IMGDIR not an image, a file missing or not regular, nowhere to
      put it, copy failed, ch-run or the image's ldconfig failed, --nvidia
      found no NVIDIA libraries

Examples:
  ch-fromhost --nvidia /var/tmp/img
  ch-fromhost --path /opt/site/lib/libfoo.so.1 --path /opt/site/bin/tool /var/tmp/img
  ch-fromhost --cmd 'ls /opt/site/lib/*.so*' --dest /opt/site/lib /var/tmp/img`,
};

function usage(msg: string): ChError {
  return new ChError(`${msg}\nTry 'ch-fromhost --help' for more information.`, EXIT_USAGE);
}

const CH_RUN = LAUNCHER_PATH;

function chRun(args: string[]): string {
  const r = spawnSync(CH_RUN, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new ChError(`can't run ch-run: ${why(r.error)}`);
  if (r.status !== 0)
    throw new ChError(`ch-run ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
  return r.stdout;
}

/** The image's first-priority library directory, by its own ldconfig. */
function libPath(image: string): string {
  const out = chRun([image, '--', '/sbin/ldconfig', '-Nv']);
  for (const line of out.split('\n')) {
    const m = /^(\/[^:]*):/.exec(line);
    if (m && kindInImage(host, image, m[1]) === 'dir') return m[1];
  }
  throw new ChError(`can't find a library directory in image ${image} (its ldconfig -Nv listed none that exists)`);
}

const isLib = (p: string) => /\.so(\.[0-9.]+)?$/.test(basename(p));

async function nvidiaFiles(): Promise<string[]> {
  try {
    const out = execFileSync('nvidia-container-cli', ['list', '--binaries', '--libraries'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    log.info('--nvidia: files from nvidia-container-cli list');
    return out.split('\n').filter((l) => l.startsWith('/'));
  } catch { /* not installed: our own discovery */ }
  const { loadConf, hostLibraries, findExecutable } = await import('../devices/inject.js');
  const env = new Map(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  const conf = loadConf(host, 'nvidia', env);
  const searched: string[] = [];
  const files: string[] = [];
  for (const [name, path] of hostLibraries(host, 'nvidia', env, searched))
    if (conf.libs.some((p) => name.startsWith(p))) files.push(path);
  for (const b of conf.bins) { const p = findExecutable(host, b, env); if (p) files.push(p); }
  if (!files.some(isLib))
    throw new ChError(`--nvidia: no NVIDIA libraries found; searched: ${searched.join('; ')}`);
  return files;
}

interface CdiInjection { copies: { src: string; dst: string }[]; links: { target: string; at: string }[]; env: string[] }

/** What the CDI devices ARGS would have ch-run mount, as files to copy, links and environment. */
async function cdiInjection(args: string[], dirs: string | null): Promise<CdiInjection> {
  const cdi = await import('../devices/cdi.js');
  const env = new Map(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  const reg = cdi.loadRegistry(host, cdi.cdiDirs(dirs, env), log);
  const out: CdiInjection = { copies: [], links: [], env: [] };
  const specs = new Set<import('../devices/cdi.js').Spec>();
  const edits: { e: import('../devices/cdi.js').Edits; who: string; file: string }[] = [];
  for (const a of args) {
    const { kind, names } = cdi.parseDeviceArg(a);
    for (const n of names) {
      const f = cdi.lookup(reg, kind, n, `--cdi=${a}`);
      if (!specs.has(f.spec) && f.spec.containerEdits)
        edits.push({ e: f.spec.containerEdits, who: `${kind} (spec-wide edits)`, file: f.spec.file });
      specs.add(f.spec);
      edits.push({ e: f.spec.devices.find((d) => d.name === n)!.containerEdits, who: `${kind}=${n}`, file: f.spec.file });
    }
  }
  for (const { e, who, file } of edits) {
    for (const m of e.mounts ?? []) {
      const dst = posix.normalize(m.containerPath);
      if (/^\/(run|var\/run|dev|proc|sys|tmp)(\/|$)/.test(dst)) {
        log.info(`CDI ${who}: ${dst} not copied (runtime state of the host: ch-run --device binds it)`);
        continue;
      }
      let st;
      try { st = statSync(m.hostPath); } catch (err) { throw new ChError(`CDI spec ${file}: device ${who}: mount ${m.hostPath}: ${why(err)}`); }
      if (!st.isFile()) { log.warn(`CDI ${who}: ${m.hostPath} is not a regular file; not copied (ch-run --device binds it)`); continue; }
      if (!out.copies.some((c) => c.dst === dst)) out.copies.push({ src: m.hostPath, dst });
    }
    for (const n of e.deviceNodes ?? []) log.info(`CDI ${who}: device node ${n.path} not copied (per host: use ch-run --device)`);
    out.env.push(...(e.env ?? []));
    for (const h of e.hooks ?? []) {
      const args = h.args ?? [];
      const links = args.flatMap((x, i) => (args[i - 1] === '--link' ? [x] : x.startsWith('--link=') ? [x.slice(7)] : []));
      if (args.includes('create-symlinks'))
        for (const l of links) {
          const sep = l.indexOf('::');
          if (sep > 0) out.links.push({ target: l.slice(0, sep), at: posix.normalize(l.slice(sep + 2)) });
        }
      else if (!args.includes('update-ldcache'))   // that one is the image's ldconfig, run below
        log.info(`CDI ${who}: hook ${[h.path, ...args.slice(1)].join(' ')} not run`);
    }
  }
  return out;
}

/**
 * Create directory DIR in IMAGE. Its existing part may go through the image's
 * own links (merged /usr: /lib -> usr/lib), resolved inside the image; the
 * rest is made plainly.
 */
function makeImageDir(image: string, dir: string): void {
  const comps = dir.split('/').filter(Boolean);
  let n = comps.length;
  while (n > 0 && kindInImage(host, image, '/' + comps.slice(0, n).join('/')) === null) n--;
  const have = resolveInImage(host, image, '/' + comps.slice(0, n).join('/'));
  if (have === null || !(have === image || have.startsWith(image + '/')))
    throw new ChError(`can't create ${dir} in image: ${'/' + comps.slice(0, n).join('/')} resolves outside it`);
  createInImage(host, image, have.slice(image.length) + '/' + comps.slice(n).join('/'), false);
}

/** Copy host file SRC to DIR/NAME in IMAGE, never writing through a link the image holds. */
function place(image: string, src: string, dir: string, name: string): void {
  if (kindInImage(host, image, dir) === null) makeImageDir(image, dir);
  const hostDir = resolveInImage(host, image, dir);
  if (hostDir === null || kindInImage(host, image, dir) !== 'dir') throw new ChError(`can't use ${dir} in image: not a directory`);
  const target = join(hostDir, name);
  // Never write through a link the image holds (it could point anywhere on the host).
  try { if (lstatSync(target).isSymbolicLink()) unlinkSync(target); } catch { /* absent */ }
  try {
    copyFileSync(src, target);
  } catch (err) {
    throw new ChError(`can't copy ${src} to ${dir} in image: ${why(err)}`);
  }
  log.info(`injected ${src} -> ${dir}/${name}`);
}

/** Add VAR=VALUE lines to the image's /ch/environment: a new file renamed over it, no link followed. */
function appendEnvironment(image: string, lines: string[]): void {
  if (kindInImage(host, image, '/ch') === null) createInImage(host, image, '/ch', false);
  const ch = resolveInImage(host, image, '/ch');
  if (ch === null || kindInImage(host, image, '/ch') !== 'dir') throw new ChError(`can't use /ch in image ${image}: not a directory`);
  let old = '';
  try {
    if (lstatSync(join(ch, 'environment')).isFile()) old = readFileSync(join(ch, 'environment'), 'utf8');
  } catch { /* absent */ }
  const tmp = join(ch, `.environment.${process.pid}`);
  try {
    writeFileSync(tmp, old + (old && !old.endsWith('\n') ? '\n' : '') + lines.map((l) => l + '\n').join(''), { flag: 'wx', mode: 0o644 });
    renameSync(tmp, join(ch, 'environment'));
  } catch (err) {
    throw new ChError(`can't write /ch/environment in image ${image}: ${why(err)}`);
  }
  log.info(`/ch/environment: added ${lines.join(' ')} (ch-run --set-env reads it)`);
}

void runMain(log, async () => {
  const y = command(SPEC)
    .option('path', { alias: 'p', type: 'string', requiresArg: true, description: 'PATH: inject the file at PATH' })
    .option('cmd', { alias: 'c', type: 'string', requiresArg: true, description: 'CMD: inject the files CMD (run by /bin/sh) prints, one per line' })
    .option('file', { alias: 'f', type: 'string', requiresArg: true, description: 'FILE: inject the files listed in FILE, one per line' })
    .option('nvidia', { type: 'boolean', description: "inject the host's NVIDIA driver libraries and tools (nvidia-container-cli list, else share/gpu/nvidia.conf)" })
    .option('cdi', { type: 'string', requiresArg: true, description: "KIND=NAME[,...]: inject the files a CDI device's spec mounts, at their container paths (e.g. nvidia.com/gpu=all); repeatable" })
    .option('cdi-dirs', { type: 'string', requiresArg: true, description: "DIR[:DIR...]: CDI spec directories (as ch-run's --cdi-dirs)" })
    .option('dest', { alias: 'd', type: 'string', requiresArg: true, description: 'DIR: place files in DIR (absolute) inside the image' })
    .option('lib-path', { type: 'boolean', description: "print the image's directory for shared libraries, and exit" })
    .option('no-ldconfig', { type: 'boolean', description: "don't run the image's ldconfig afterwards" })
    .option('verbose', { alias: 'v', type: 'count', description: 'be more verbose (repeatable)' });
  const a = await parseCommand(y, SPEC, process.argv.slice(2));
  if (!a) return 0;
  log.verbosity += count(a.verbose);
  const files = [...all(a.path)];
  // Where each listed name came from, for an error about it ("--file F, line N").
  const origin = new Map<string, string>();
  const listed = (text: string, from: (line: number) => string) => text.split('\n').forEach((l, i) => {
    const f = l.trim();
    if (f === '') return;
    files.push(f);
    if (!origin.has(f)) origin.set(f, from(i + 1));
  });
  for (const f of all(a.file)) {
    let text: string;
    try { text = readFileSync(f, 'utf8'); } catch (err) { throw new ChError(`can't read --file ${f}: ${why(err)}`); }
    listed(text, (n) => `--file ${f}, line ${n}`);
  }
  for (const c of all(a.cmd)) {
    const r = spawnSync('/bin/sh', ['-c', c], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) throw new ChError(`--cmd ${c}: exited ${r.status ?? r.signal}`);
    listed(r.stdout, (n) => `--cmd ${c}, line ${n} of its output`);
  }
  const dest = last(a.dest) ?? null, printLib = a['lib-path'] === true, ldconfig = a['no-ldconfig'] !== true;
  const nvidia = a.nvidia === true;
  if (dest !== null && !dest.startsWith('/')) throw usage(`--dest: must be absolute: ${dest}`);
  const words = all(a._);
  if (words.length !== 1) throw usage(`${words.length ? 'more than one' : 'no'} IMGDIR given`);
  const image = checkImage(host, words[0]);
  if (printLib) { process.stdout.write(libPath(image) + '\n'); return 0; }
  if (nvidia) files.push(...await nvidiaFiles());
  const cdi = all(a.cdi);
  const fromCdi = cdi.length > 0 ? await cdiInjection(cdi, last(a['cdi-dirs']) ?? null) : null;
  if (files.length === 0 && !fromCdi) throw usage('nothing to inject (give --path, --cmd, --file, --nvidia or --cdi)');

  let libDir: string | null = null;
  // Every name checked before anything is copied: a bad line leaves the image as it was.
  const where = files.map((f) => {
    const from = origin.has(f) ? `${origin.get(f)}: ` : '';
    if (!f.startsWith('/')) throw new ChError(`${from}not an absolute path: ${f}`);
    let st;
    try { st = statSync(f); } catch (err) { throw new ChError(`${from}can't inject ${f}: ${why(err)}`); }
    if (!st.isFile()) throw new ChError(`${from}can't inject ${f}: not a regular file`);
    if (dest !== null) return dest;
    if (isLib(f)) return libDir ??= libPath(image);
    if (st.mode & 0o111) return '/usr/bin';
    throw new ChError(`${from}don't know where to put ${f} (not a shared library or executable): use --dest`);
  });
  files.forEach((f, i) => place(image, f, where[i], basename(f)));
  for (const c of fromCdi?.copies ?? []) place(image, c.src, dirname(c.dst), basename(c.dst));
  for (const l of fromCdi?.links ?? []) {
    const dir = resolveInImage(host, image, dirname(l.at));
    if (dir === null || kindInImage(host, image, dirname(l.at)) !== 'dir') { log.warn(`link ${l.at}: image has no ${dirname(l.at)}`); continue; }
    const at = join(dir, basename(l.at));
    try {
      if (lstatSync(at).isSymbolicLink()) unlinkSync(at);
      else { log.warn(`link ${l.at}: the image has a file there; left as is`); continue; }
    } catch { /* absent */ }
    try { symlinkSync(l.target, at); } catch (err) { throw new ChError(`can't create link ${l.at} in image: ${why(err)}`); }
    log.info(`link ${l.at} -> ${l.target}`);
  }
  if (fromCdi && fromCdi.env.length > 0) appendEnvironment(image, fromCdi.env.filter((e) => e.indexOf('=') > 0));
  if (ldconfig && (files.some(isLib) || fromCdi?.copies.some((c) => isLib(c.src)))) {
    log.info('running the image\'s ldconfig');
    chRun(['-w', image, '--', '/sbin/ldconfig']);
  }
  return 0;
});

// ch-fromhost: copy host files (GPU driver libraries, tools, anything) into a
// writable image directory, permanently, then run the image's ldconfig
// through ch-run -w. Charliecloud-compatible options:
//   --path PATH / --cmd CMD / --file FILE   what to inject (repeatable)
//   --nvidia       NVIDIA's driver files (nvidia-container-cli list, else the
//                  libraries and tools share/gpu/nvidia.conf names, found as
//                  ch-run --gpu finds them)
//   --dest DIR     put everything in DIR inside the image
//   --lib-path     print the image directory shared libraries go to, and exit
//   --no-ldconfig  don't run ldconfig afterwards
// Without --dest, shared libraries (*.so, *.so.N) go to the first directory
// the image's own `ldconfig -Nv` searches; other executables go to /usr/bin;
// any other file needs --dest.

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, lstatSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { all, command, type CommandSpec, count, EXIT_USAGE, last, parseCommand } from '../util/cli.js';
import { ChError, Log, runMain, why } from '../util/log.js';
import { LAUNCHER_PATH } from '../util/paths.js';
import { checkImage, createInImage, kindInImage, resolveInImage } from '../run/image.js';

const log = new Log('ch-fromhost');

const SPEC: CommandSpec = {
  prog: 'ch-fromhost',
  synopsis: '[OPTION...] (--path PATH | --cmd CMD | --file FILE | --nvidia)... IMGDIR',
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
    if (m && kindInImage(image, m[1]) === 'dir') return m[1];
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
  const conf = loadConf('nvidia', env);
  const searched: string[] = [];
  const files: string[] = [];
  for (const [name, path] of hostLibraries('nvidia', env, searched))
    if (conf.libs.some((p) => name.startsWith(p))) files.push(path);
  for (const b of conf.bins) { const p = findExecutable(b, env); if (p) files.push(p); }
  if (!files.some(isLib))
    throw new ChError(`--nvidia: no NVIDIA libraries found; searched: ${searched.join('; ')}`);
  return files;
}

void runMain(log, async () => {
  const y = command(SPEC)
    .option('path', { alias: 'p', type: 'string', requiresArg: true, description: 'PATH: inject the file at PATH' })
    .option('cmd', { alias: 'c', type: 'string', requiresArg: true, description: 'CMD: inject the files CMD (run by /bin/sh) prints, one per line' })
    .option('file', { alias: 'f', type: 'string', requiresArg: true, description: 'FILE: inject the files listed in FILE, one per line' })
    .option('nvidia', { type: 'boolean', description: "inject the host's NVIDIA driver libraries and tools (nvidia-container-cli list, else share/gpu/nvidia.conf)" })
    .option('dest', { alias: 'd', type: 'string', requiresArg: true, description: 'DIR: place files in DIR (absolute) inside the image' })
    .option('lib-path', { type: 'boolean', description: "print the image's directory for shared libraries, and exit" })
    .option('no-ldconfig', { type: 'boolean', description: "don't run the image's ldconfig afterwards" })
    .option('verbose', { alias: 'v', type: 'count', description: 'be more verbose (repeatable)' });
  const a = await parseCommand(y, SPEC, process.argv.slice(2));
  if (!a) return 0;
  log.verbosity += count(a.verbose);
  const files = [...all(a.path)];
  for (const f of all(a.file)) {
    try { files.push(...readFileSync(f, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean)); }
    catch (err) { throw new ChError(`can't read --file ${f}: ${why(err)}`); }
  }
  for (const c of all(a.cmd)) {
    const r = spawnSync('/bin/sh', ['-c', c], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) throw new ChError(`--cmd ${c}: exited ${r.status ?? r.signal}`);
    files.push(...r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
  }
  const dest = last(a.dest) ?? null, printLib = a['lib-path'] === true, ldconfig = a['no-ldconfig'] !== true;
  const nvidia = a.nvidia === true;
  if (dest !== null && !dest.startsWith('/')) throw usage(`--dest: must be absolute: ${dest}`);
  const words = all(a._);
  if (words.length !== 1) throw usage(`${words.length ? 'more than one' : 'no'} IMGDIR given`);
  const image = checkImage(words[0]);
  if (printLib) { process.stdout.write(libPath(image) + '\n'); return 0; }
  if (nvidia) files.push(...await nvidiaFiles());
  if (files.length === 0) throw usage('nothing to inject (give --path, --cmd, --file or --nvidia)');

  let libDir: string | null = null;
  for (const f of files) {
    if (!f.startsWith('/')) throw new ChError(`not an absolute path: ${f}`);
    let st;
    try { st = statSync(f); } catch (err) { throw new ChError(`can't inject ${f}: ${why(err)}`); }
    if (!st.isFile()) throw new ChError(`can't inject ${f}: not a regular file`);
    let dir = dest;
    if (dir === null) {
      if (isLib(f)) dir = libDir ??= libPath(image);
      else if (st.mode & 0o111) dir = '/usr/bin';
      else throw new ChError(`don't know where to put ${f} (not a shared library or executable): use --dest`);
    }
    if (kindInImage(image, dir) === null) createInImage(image, dir, false);
    const hostDir = resolveInImage(image, dir);
    if (hostDir === null || kindInImage(image, dir) !== 'dir') throw new ChError(`can't use ${dir} in image: not a directory`);
    const target = join(hostDir, basename(f));
    // Never write through a link the image holds (it could point anywhere on the host).
    try { if (lstatSync(target).isSymbolicLink()) unlinkSync(target); } catch { /* absent */ }
    try {
      copyFileSync(f, target);
    } catch (err) {
      throw new ChError(`can't copy ${f} to ${dir} in image: ${why(err)}`);
    }
    log.info(`injected ${f} -> ${dir}/${basename(f)}`);
  }
  if (ldconfig && files.some(isLib)) {
    log.info('running the image\'s ldconfig');
    chRun(['-w', image, '--', '/sbin/ldconfig']);
  }
  return 0;
});

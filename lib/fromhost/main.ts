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
import { formatHelp, OptionSpec, parseArgs } from '../util/argp.js';
import { ChError, Log, runMain, why } from '../util/log.js';
import { PKG_ROOT } from '../util/paths.js';
import { checkImage, createInImage, kindInImage, resolveInImage } from '../run/image.js';

const log = new Log('ch-fromhost');

const OPTIONS: OptionSpec[] = [
  { name: 'cmd', short: 'c', arg: 'required', argName: 'CMD', help: 'inject the files CMD prints, one per line' },
  { name: 'file', short: 'f', arg: 'required', argName: 'FILE', help: 'inject the files listed in FILE, one per line' },
  { name: 'path', short: 'p', arg: 'required', argName: 'PATH', help: 'inject the file at PATH' },
  { name: 'nvidia', arg: 'none', help: 'inject the host\'s NVIDIA driver libraries and tools' },
  { name: 'dest', short: 'd', arg: 'required', argName: 'DIR', help: 'place files in DIR inside the image' },
  { name: 'lib-path', arg: 'none', help: 'print the image\'s directory for shared libraries, and exit' },
  { name: 'no-ldconfig', arg: 'none', help: 'don\'t run the image\'s ldconfig afterwards' },
  { name: 'verbose', short: 'v', arg: 'none', help: 'be more verbose (repeatable)' },
  { name: 'help', short: 'h', arg: 'none', help: 'print this help and exit' },
];
const USAGE = 'Usage: ch-fromhost [OPTION...] [--path PATH | --cmd CMD | --file FILE | --nvidia ...] IMGDIR';

const CH_RUN = join(PKG_ROOT, 'bin', 'ch-run');

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
  const parsed = parseArgs('ch-fromhost', OPTIONS, process.argv.slice(2));
  const files: string[] = [];
  let dest: string | null = null, printLib = false, ldconfig = true, nvidia = false;
  for (const { name, value } of parsed.options) {
    switch (name) {
      case 'help': process.stdout.write(`${USAGE}\n\nInject host files into an image.\n\n${formatHelp(OPTIONS)}\n`); return 0;
      case 'verbose': log.verbosity++; break;
      case 'path': files.push(value!); break;
      case 'file':
        try { files.push(...readFileSync(value!, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean)); }
        catch (err) { throw new ChError(`can't read --file ${value}: ${why(err)}`); }
        break;
      case 'cmd': {
        const r = spawnSync('/bin/sh', ['-c', value!], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
        if (r.status !== 0) throw new ChError(`--cmd ${value}: exited ${r.status ?? r.signal}`);
        files.push(...r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
        break;
      }
      case 'nvidia': nvidia = true; break;
      case 'dest':
        if (!value!.startsWith('/')) throw new ChError(`--dest: must be absolute: ${value}`);
        dest = value!;
        break;
      case 'lib-path': printLib = true; break;
      case 'no-ldconfig': ldconfig = false; break;
    }
  }
  const words = [...parsed.positional, ...(parsed.rest ?? [])];
  if (words.length !== 1) throw new ChError(`${words.length ? 'more than one' : 'no'} IMGDIR given\n${USAGE}`);
  const image = checkImage(words[0]);
  if (printLib) { process.stdout.write(libPath(image) + '\n'); return 0; }
  if (nvidia) files.push(...await nvidiaFiles());
  if (files.length === 0) throw new ChError('nothing to inject (give --path, --cmd, --file or --nvidia)');

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

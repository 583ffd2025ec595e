// `ch-image build`: a Dockerfile's stages run instruction by instruction,
// each result looked up in the build cache first (cache.ts) and, on a miss,
// made from the parent's tree: RUN as fake root through ch-run
// (fakeroot.ts), COPY/ADD through a tar stream unpacked by the confined
// extractor (context.ts), the rest in the config (instructions.ts). The last
// stage (or --target's) is installed as TAG through the shared install steps
// (store.ts): the previous image of TAG stays intact until the final rename.

import { spawn } from 'node:child_process';
import { closeSync, constants as C, lstatSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { posix, join, resolve } from 'node:path';
import { ChError, type Log } from '../util/log.js';
import { tarAddon, useOpenat2, type FixupOp } from '../tar/native.js';
import { extract } from '../tar/extract.js';
import { applyLayer } from '../pull/apply.js';
import { PROXY_VARS } from '../image/builder.js';
import { imageDirs, MOUNT_FILES } from '../image/layout.js';
import { stripToolState } from '../image/shared-install.js';
import { parseDockerfile, stagesFor, type Instr, type Stage } from './dockerfile.js';
import { expand, type Vars } from './subst.js';
import { emptyConfig, envMap, chFiles, configOfImage, type OciConfig } from './config.js';
import { BuildCache, cacheMax, keyOf, type State } from './cache.js';
import { runFakeRoot } from './fakeroot.js';
import { collect, expandGlob, hashEntries, readIgnore, resolveIn, writeTar, type Entry, type Root } from './context.js';
import { applyMetadata, commandOf, METADATA, refuse, REFUSED } from './instructions.js';
import { baseImage } from './from.js';
import { removeTree, userWritableDirs } from './snapshot.js';
import { finishTree, installTag, type openStorage } from './store.js';

export const EXIT_FAIL = 1;

export interface BuildOptions {
  tag: string;
  file: string;
  context: string;
  buildArgs: Map<string, string>;
  target?: string;
  noCache: boolean;
  insecure: boolean;
  signal: AbortSignal;
}

type Opened = ReturnType<typeof openStorage>;

/** A stage's state while it is built: the cache state and the variables in scope. */
interface StageRun { state: State; args: Vars }

export class Builder {
  private readonly cache: BuildCache;
  private readonly work: string;
  /** Which entry's tree work/tree holds now ('' : none). */
  private held = '';
  private readonly stages = new Map<string, State>();
  private step = 0;
  private total = 0;
  private readonly used = new Set<string>();
  private readonly context: Root;

  constructor(private readonly log: Log, private readonly o: BuildOptions, private readonly st: Opened) {
    this.cache = new BuildCache(st.storage);
    this.work = this.cache.workDir();
    const ctx = resolve(o.context);
    this.context = { path: ctx, what: 'build context', ignore: readIgnore(ctx) };
  }

  private get tree(): string { return join(this.work, 'tree'); }

  /** Build; the final state, installed as the tag. */
  async build(): Promise<State> {
    try {
      let text: string;
      try { text = readFileSync(this.o.file, 'utf8'); } catch (err) {
        throw new ChError(`${this.o.file}: can't read the Dockerfile: ${(err as Error).message}`, EXIT_FAIL);
      }
      const parsed = parseDockerfile(text, this.o.file);
      const stages = stagesFor(parsed, this.o.target);
      this.total = stages.reduce((n, s) => n + 1 + s.body.length, 0);
      const globals = new Map<string, string>();
      for (const a of parsed.globalArgs) this.declareArgs(a, globals, globals);
      let last: State | undefined;
      for (const s of stages) last = await this.buildStage(s, globals);
      for (const k of this.o.buildArgs.keys())
        if (!this.used.has(k) && !PROXY_VARS.includes(k)) this.log.warn(`--build-arg ${k}: not consumed by any ARG`);
      await this.install(last!);
      const [n, freed] = await this.cache.gc(this.log, cacheMax());
      if (n) this.log.info(`build cache: removed ${n} least recently used entr${n === 1 ? 'y' : 'ies'} (${freed} bytes) to stay under CH_IMAGE_CACHE_MAX`);
      return last!;
    } finally {
      await removeTree(this.work).catch((err) => this.log.warn((err as Error).message));
      this.cache.close();
    }
  }

  /** ARG instruction I: each NAME[=default] takes its --build-arg, else its default (expanded), else GLOBALS'. */
  private declareArgs(i: Instr, into: Vars, scope: Vars, globals: Vars = new Map()): void {
    for (const [name, def] of i.props) {
      this.used.add(name);
      const v = this.o.buildArgs.get(name) ?? (def !== null ? expand(def, scope) : globals.get(name));
      if (v !== undefined) into.set(name, v);
    }
  }

  private say(i: Instr, text: string, hit: boolean | null): void {
    this.step++;
    if (this.log.verbosity < 0) return;
    const how = hit === null ? '' : hit ? ' (cache hit)' : ' (cache miss)';
    const flags = Object.entries(i.flags).map(([k, v]) => `--${k}${v === null ? '' : `=${v}`} `).join('');
    process.stderr.write(`${this.log.prog}: [${this.step}/${this.total}] ${i.keyword} ${flags}${text.replace(/\s+/g, ' ').slice(0, 120)}${how}\n`);
  }

  private async buildStage(s: Stage, globals: Vars): Promise<State> {
    const where = (i: Instr) => `${this.o.file}:${i.line}`;
    const image = expand(s.image, globals);
    for (const f of Object.keys(s.from.flags))
      this.log.warn(`${where(s.from)}: FROM --${f} ignored: ch-image builds for this machine's platform`);
    const prior = this.stages.get(image.toLowerCase());
    let state: State;
    if (prior) {
      state = prior;
      this.say(s.from, `${image}${s.name ? ` AS ${s.name}` : ''}`, null);
    } else {
      const base = await baseImage(this.log, this.st, image, this.o.insecure, this.o.signal);
      const key = keyOf(['FROM', base.identity]);
      let hit = this.o.noCache ? null : this.cache.get(key);
      this.say(s.from, `${image}${s.name ? ` AS ${s.name}` : ''}`, hit !== null);
      if (!hit) {
        // The base's tree is its directory in storage, copied only when a
        // step changes it (scratch: an empty tree of the cache's own).
        hit = { key, tree: key, config: base.root ? configOfImage(base.root) : emptyConfig(), what: `FROM ${image}`,
          ...(base.root ? { external: base.root } : {}) };
        if (!base.root) {
          await this.drop();
          mkdirSync(this.tree, { mode: 0o755 });
        }
        await this.cache.put(hit, base.root ? undefined : this.tree);
      }
      state = hit;
    }
    const run: StageRun = { state, args: new Map() };
    for (const i of s.body) await this.instruction(i, run, globals, where(i));
    this.stages.set(String(s.index), run.state);
    if (s.name) this.stages.set(s.name, run.state);
    return run.state;
  }

  /** Variables for substitution: the stage's ARGs, then its ENV (ENV wins, as in Docker). */
  private vars(r: StageRun): Vars {
    return new Map([...r.args, ...envMap(r.state.config)]);
  }

  private async instruction(i: Instr, r: StageRun, globals: Vars, where: string): Promise<void> {
    if (REFUSED[i.keyword]) throw refuse(where, i, REFUSED[i.keyword]);
    if (i.keyword === 'ARG') {
      this.declareArgs(i, r.args, this.vars(r), globals);
      this.say(i, i.text, null);
      return;
    }
    const argsPart = JSON.stringify([...r.args].sort());
    if (METADATA.has(i.keyword)) {
      const config = applyMetadata(i, r.state.config, this.vars(r), where);
      const key = keyOf([r.state.key, i.keyword, JSON.stringify(config), argsPart]);
      const hit = this.lookup(key);
      this.say(i, i.text, hit !== null);
      r.state = hit ?? { key, tree: r.state.tree, config, what: `${i.keyword} ${i.text}` };
      if (!hit) await this.cache.put({ ...r.state });
      return;
    }
    if (i.keyword === 'RUN') return this.run(i, r, where, argsPart);
    if (i.keyword === 'COPY' || i.keyword === 'ADD') return this.copy(i, r, where, argsPart);
    throw refuse(where, i, 'unknown instruction');
  }

  /** Look up KEY (unless --no-cache): the state if cached. */
  private lookup(key: string): State | null {
    return this.o.noCache ? null : this.cache.get(key);
  }

  /** Remove the work tree (it belongs to no entry any more, or is about to be replaced). */
  private async drop(): Promise<void> {
    await removeTree(this.tree);
    this.held = '';
  }

  /**
   * Make the work tree STATE's (a copy of its cached tree; hard links if
   * LINK: COPY and ADD, whose writer replaces files, never writes into them),
   * its WORKDIR and mount points present.
   */
  private async hold(state: State, link = false): Promise<void> {
    if (this.held !== state.tree) {
      await this.drop();
      await this.cache.materialize(state, this.tree, link, this.o.signal);
      stripToolState(this.tree);   // a base's marker is its tool's, for that directory only
      this.held = state.tree;
    }
    fixup(this.tree, [...imageDirs(), ...dirsOf(state.config.WorkingDir)].map((d) => ({ op: 'dir', path: d })), this.log);
    fixup(this.tree, MOUNT_FILES.map((f) => ({ op: 'file', path: f })), this.log);
    // apt drops privileges to _apt and checks that it did, which faked set*id
    // calls can't satisfy ("Could not switch group"): as Charliecloud does, apt
    // is told to stay root (written once, kept in the image).
    if (isDir(this.tree, APT_CONF) && !exists(this.tree, APT_NO_SANDBOX))
      fixup(this.tree, [{ op: 'write', path: APT_NO_SANDBOX, content: 'APT::Sandbox::User "root";\n' }], this.log);
  }

  /** Store the work tree as entry STATE (it moves into the cache). */
  private async keep(state: State): Promise<void> {
    tarAddon().stripSetid(this.tree);
    await userWritableDirs(this.tree);
    await this.cache.put(state, this.tree);
    this.held = '';
  }

  private async run(i: Instr, r: StageRun, where: string, argsPart: string): Promise<void> {
    if (Object.keys(i.flags).length)
      throw refuse(where, i, `--${Object.keys(i.flags)[0]}: RUN options are not supported by ch-image`);
    // sh -c '<<EOF ...' would run nothing and succeed: refused, never guessed at.
    if (!i.json && /^<<-?\S/.test(i.text)) throw refuse(where, i, 'here-documents (RUN <<EOF) are not supported by ch-image');
    const argv = commandOf(i, r.state.config);
    const key = keyOf([r.state.key, 'RUN', JSON.stringify(argv), argsPart]);
    const hit = this.lookup(key);
    this.say(i, i.text, hit !== null);
    if (hit) { r.state = hit; return; }
    await this.hold(r.state);
    const env: [string, string][] = [...r.args].filter(([k]) => !envMap(r.state.config).has(k));
    for (const p of PROXY_VARS) {
      const v = this.o.buildArgs.get(p) ?? process.env[p];
      if (v !== undefined && !env.some(([k]) => k === p)) env.push([p, v]);
    }
    env.push(...envMap(r.state.config));
    const code = await runFakeRoot({ root: this.tree, argv, env, cwd: r.state.config.WorkingDir || '/', scratch: this.work, signal: this.o.signal, detach: true });
    if (this.o.signal.aborted) throw new ChError('interrupted', 130);
    if (code !== 0) throw new ChError(`${where}: RUN failed (exit ${code}): ${i.text.slice(0, 200)}`, EXIT_FAIL);
    const state = { key, tree: key, config: r.state.config, what: `RUN ${i.text}` };
    await this.keep(state);
    r.state = state;
  }

  /** The root COPY --from=FROM reads: an earlier stage's tree, or an image in storage. */
  private async fromRoot(from: string): Promise<Root> {
    const s = this.stages.get(from.toLowerCase());
    if (s) return { path: this.cache.treePath(s.tree), what: `stage ${from}`, ignore: [] };
    const base = await baseImage(this.log, this.st, from, this.o.insecure, this.o.signal);
    if (!base.root) throw new ChError(`--from=${from}: scratch has no files`, EXIT_FAIL);
    return { path: base.root, what: `image ${from}`, ignore: [] };
  }

  /** COPY's or ADD's flags checked (--chown and --chmod noted), its words expanded: [sources as written, DEST]. */
  private copyWords(i: Instr, r: StageRun, where: string): [string[], string] {
    for (const f of Object.keys(i.flags))
      if (!['from', 'chown', 'chmod'].includes(f)) throw refuse(where, i, `--${f}: not supported by ch-image`);
    if (i.keyword === 'ADD' && i.flags.from !== undefined) throw refuse(where, i, '--from is COPY\'s, not ADD\'s');
    if (i.flags.chown !== undefined)
      this.log.warn(`${where}: --chown=${i.flags.chown} noted and ignored: every file in the image is yours (root inside)`);
    if (i.flags.chmod !== undefined) this.log.warn(`${where}: --chmod=${i.flags.chmod} ignored: modes are the source's`);
    const words = (i.json ?? i.args).map((w) => expand(w, this.vars(r)));
    if (words.length < 2) throw refuse(where, i, 'want SRC... DEST');
    const dest = words.pop()!;
    for (const w of words)
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(w))
        throw refuse(where, i, `${w}: no URL fetches during a build; download it into the context and ${i.keyword} that`);
    return [words, dest];
  }

  private async copy(i: Instr, r: StageRun, where: string, argsPart: string): Promise<void> {
    const [words, dest] = this.copyWords(i, r, where);
    const root = i.flags.from ? await this.fromRoot(expand(i.flags.from, this.vars(r))) : this.context;
    const sources = words.flatMap((w) => expandGlob(root, w).map((g) => resolveIn(root, g)));
    // The key: what is copied (placeholder destinations), not where it lands, which the parent state fixes.
    const probe: Entry[] = [];
    sources.forEach((s, n) => collect(root, s, `#${n}`, probe, () => {}));
    const key = keyOf([r.state.key, i.keyword, JSON.stringify(words), dest, hashEntries(probe), argsPart]);
    const hit = this.lookup(key);
    this.say(i, i.text, hit !== null);
    if (hit) { r.state = hit; return; }
    await this.hold(r.state, true);
    const tarPath = await this.copyTar(root, sources, posix.resolve(r.state.config.WorkingDir || '/', dest).slice(1),
      dest.endsWith('/'), i.keyword === 'ADD');
    await applyLayer(tarPath, this.tree, `${where}: ${i.keyword}`, this.o.signal);
    const state = { key, tree: key, config: r.state.config, what: `${i.keyword} ${i.text}` };
    await this.keep(state);
    r.state = state;
  }

  /**
   * SOURCES (resolved in ROOT) as a tar stream placing them at DEST (relative
   * to the image root) in the work tree, as Docker does: a directory's
   * content into DEST; a file into DEST/ if DEST ends with '/', names an
   * existing directory or has company, else as DEST; with ADD, a tarball
   * unpacked into DEST. Missing parent directories included. Its path.
   */
  private async copyTar(root: Root, sources: string[], dest: string, slash: boolean, add: boolean): Promise<string> {
    const intoDir = slash || sources.length > 1 || isDir(this.tree, dest);
    const warn = (m: string) => this.log.warn(m);
    const entries: Entry[] = [];
    let dirLike = intoDir;
    for (const [n, s] of sources.entries()) {
      const path = s ? `${root.path}/${s}` : root.path;
      if (add && isTarball(path)) {
        const out = join(this.work, `add.${this.step}.${n}`);   // unique in this build
        mkdirSync(out, { mode: 0o700 });
        await extract(path, out, { signal: this.o.signal });
        collect({ path: out, what: 'tarball', ignore: [] }, '', dest, entries, warn);
        dirLike = true;
      } else if (lstatSync(path).isDirectory()) {
        collect(root, s, dest, entries, warn);
        dirLike = true;
      } else {
        collect(root, s, intoDir ? posix.join(dest, posix.basename(s || '.')) : dest, entries, warn);
      }
    }
    const tarPath = join(this.work, 'copy.tar');
    const fd = openSync(tarPath, C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW, 0o600);
    try { writeTar([...missingDirs(this.tree, dirLike ? dest : posix.dirname(dest)), ...entries], fd); } finally { closeSync(fd); }
    return tarPath;
  }

  /** Install STATE as the tag: a copy of its tree with its /ch files and ch-image's marker. */
  private async install(state: State): Promise<void> {
    const { files, skipped } = chFiles(state.config);
    for (const s of skipped) this.log.warn(`ENV ${s}: can't be written to /ch/environment; skipped`);
    const r = await installTag(this.log, this.st.imgFd, this.st.imgDir, this.o.tag, { key: state.key, config: state.config, created: new Date().toISOString() },
      async (root) => {
        await copyInto(this.cache.treePath(state.tree), root, this.o.signal);
        stripToolState(root);   // the base's marker, when the tree is the base's own directory: no warning
        fixup(root, dirsOf(state.config.WorkingDir).map((d) => ({ op: 'dir', path: d })), this.log);
        finishTree(this.log, root, files);
      }, this.o.signal, (m) => m.tool === 'ch-image' && m.key === state.key);
    if (r === 'current') this.log.info(`${this.o.tag}: already this build's result; left as it is`);
  }
}

const APT_CONF = 'etc/apt/apt.conf.d';
const APT_NO_SANDBOX = `${APT_CONF}/no-sandbox-ch-image`;

function exists(root: string, rel: string): boolean {
  try { lstatSync(`${root}/${rel}`); return true; } catch { return false; }
}

/** The directories (relative, parents first) of absolute path DIR. */
function dirsOf(dir: string): string[] {
  const parts = dir.split('/').filter(Boolean);
  return parts.map((_, n) => parts.slice(0, n + 1).join('/'));
}

/** OPS in ROOT through the confined writer; failures are warnings. */
function fixup(root: string, ops: FixupOp[], log: Log): void {
  for (const f of tarAddon().fixup(root, ops, { openat2: useOpenat2() })) log.warn(`can't create /${f.path}: ${f.message}`);
}

/** Is REL in ROOT a directory (not through a final link)? */
function isDir(root: string, rel: string): boolean {
  try { return rel === '' || lstatSync(`${root}/${rel}`).isDirectory(); } catch { return false; }
}

/** Directory entries for the ancestors of REL (and REL) that ROOT lacks; none past a link, which the extractor resolves. */
function missingDirs(root: string, rel: string): Entry[] {
  const out: Entry[] = [];
  let missing = false;
  for (const d of dirsOf(`/${rel}`)) {
    if (!missing) {
      try { lstatSync(`${root}/${d}`); continue; } catch { missing = true; }
    }
    out.push({ name: d, type: 'dir', mode: 0o755, src: '', mtime: Date.now() / 1000 });
  }
  return out;
}

/** Does FILE look like a tarball (tar, gzip, xz, zstd, bzip2): ADD unpacks those. */
function isTarball(file: string): boolean {
  let fd: number;
  try { fd = openSync(file, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK); } catch { return false; }
  try {
    const b = Buffer.alloc(265);
    const n = readSync(fd, b, 0, b.length, 0);
    if (n >= 262 && b.toString('latin1', 257, 262) === 'ustar') return true;
    const h = b.subarray(0, Math.min(n, 6));
    return (h[0] === 0x1f && h[1] === 0x8b) || h.toString('hex') === 'fd377a585a00' || h.subarray(0, 4).toString('hex') === '28b52ffd';
  } finally { closeSync(fd); }
}

/** Copy tree FROM's content into ROOT (a /proc/self/fd/N/. path of ours), passed to cp as its fd 3. */
export async function copyInto(from: string, root: string, signal: AbortSignal): Promise<void> {
  const m = /^\/proc\/self\/fd\/([0-9]+)\/\.?$/.exec(root);
  if (!m) throw new ChError(`internal: ${root} is not a descriptor path`, EXIT_FAIL);
  await new Promise<void>((res, rej) => {
    const p = spawn('cp', ['-a', '--no-preserve=xattr', '--reflink=auto', '-T', `${from}/.`, '/proc/self/fd/3/.'],
      { stdio: ['ignore', 'inherit', 'inherit', Number(m[1])], signal });
    p.on('error', (e) => rej(new ChError(`cp: ${e.message}`, EXIT_FAIL)));
    p.on('close', (c) => (c === 0 ? res() : rej(new ChError(`copying the image into storage failed (cp exit ${c})`, EXIT_FAIL))));
  });
  tarAddon().stripSetid(root);
}

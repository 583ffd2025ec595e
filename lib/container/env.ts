// The container's environment: the host's passes through, with Charliecloud's
// fix-ups, then --set-env/--unset-env in command-line order, then CH_RUNNING.

import { ChError } from '../util/log.js';
import { globToRegExp } from './glob.js';
import type { Host } from './host.js';
import type { Env } from './env-map.js';
import { imageView, resolveInImage } from './image.js';
import { readTextFile } from './textfile.js';

export { Env } from './env-map.js';

/** One --set-env or --unset-env, in command-line order. */
export type EnvAction =
  | { kind: 'set-file'; path: string | null; expand: boolean; nul: boolean }  // null: image's /ch/environment
  | { kind: 'set-var'; assignment: string; expand: boolean }
  | { kind: 'unset'; glob: string };

/** Strip one pair of single straight quotes around a whole value. */
function unquote(v: string): string {
  return v.length >= 2 && v.startsWith("'") && v.endsWith("'") ? v.slice(1, -1) : v;
}

/**
 * Expand $VAR items of a colon-separated value; empty expansions vanish with
 * their colon. An item that is only "$" names no variable: it stays as is
 * ("bar:$" is "bar:$").
 */
export function expandValue(value: string, env: Map<string, string>): string {
  if (!value.includes('$')) return value;
  const items: string[] = [];
  for (const item of value.split(':')) {
    if (item.startsWith('$') && item.length > 1) {
      const v = env.get(item.slice(1));
      if (v !== undefined && v !== '') items.push(v);
    } else {
      items.push(item);
    }
  }
  return items.join(':');
}

/** Parse one "NAME=value" assignment. WHERE names its origin for errors. */
export function parseAssignment(line: string, where: string): [string, string] {
  const eq = line.indexOf('=');
  // Charliecloud's words ("can't parse variable: ..."), then the line itself.
  if (eq < 0) throw new ChError(`--set-env: can't parse variable: no delimiter: ${where}: no '=' in '${line}'`);
  if (eq === 0) throw new ChError(`--set-env: can't parse variable: empty name: ${where}: '${line}'`);
  return [line.slice(0, eq), unquote(line.slice(eq + 1))];
}

/** A --set-env FILE: the user's to name, so symlinks are followed as given. */
function readEnvFile(host: Host, path: string): string {
  return readTextFile(host, path, `--set-env: can't open: ${path}`);
}

/** The image's /ch/environment, resolved and read inside IMAGE only. */
function readImageEnvFile(host: Host, image: string): string {
  const what = `--set-env: can't open: ${image}/ch/environment`;
  const found = resolveInImage(host, image, '/ch/environment');
  if (found === null) throw new ChError(`--set-env: can't open: /ch/environment: No such file or directory (ENOENT) in image ${image}`);
  const view = imageView(image);   // a SquashFS image: read from the file
  return view ? view.readFile('/ch/environment', what) : readTextFile(host, found, what, image);
}

/** Apply --set-env/--unset-env actions, in order. IMAGE locates /ch/environment. */
export function applyEnvActions(host: Host, env: Env, actions: EnvAction[], image: string): void {
  for (const a of actions) {
    if (a.kind === 'unset') {
      const re = globToRegExp(a.glob);
      for (const name of [...env.keys()])
        if (re.test(name)) env.delete(name);
      continue;
    }
    let lines: [string, string][];
    if (a.kind === 'set-var') {
      lines = [[a.assignment, 'command line']];
    } else {
      // --set-env: newline-separated; --set-env0: NUL-separated (so values
      // may hold newlines). Empty assignments are ignored either way.
      const path = a.path ?? `${image}/ch/environment`;
      const sep = a.nul ? '\0' : '\n';
      const text = a.path === null ? readImageEnvFile(host, image) : readEnvFile(host, a.path);
      lines = text.split(sep).map((l, i) => [l, a.nul ? `${path}: assignment ${i + 1}` : `${path}:${i + 1}`] as [string, string])
        .filter(([l]) => l !== '');
    }
    for (const [line, where] of lines) {
      if (line.includes('\0'))
        throw new ChError(`--set-env: NUL byte at ${where} (a NUL-separated file? use --set-env0)`);
      const [name, value] = parseAssignment(line, where);
      env.set(name, a.expand ? expandValue(value, env) : value);
    }
  }
}

/**
 * Add /bin to PATH if missing (images without merged /usr need it). An unset
 * PATH is reported and left unset, as Charliecloud does: inventing one would
 * hide the caller's mistake (the command is then looked up in /bin:/usr/bin,
 * execvp's default). An empty PATH becomes "/bin", not ":/bin", whose empty
 * item would mean the working directory.
 */
export function fixPath(env: Env, warn: (msg: string) => void): void {
  const path = env.get('PATH');
  if (path === undefined) {
    warn('$PATH not set');
    return;
  }
  if (path === '') env.set('PATH', '/bin');
  else if (!path.split(':').includes('/bin')) env.set('PATH', `${path}:/bin`);
}

export function serializeEnv(env: Env): string[] {
  const out: string[] = [];
  for (const [k, v] of env.final()) {
    if (k.includes('\0') || v.includes('\0')) throw new ChError(`environment variable ${k} contains a NUL byte`);
    out.push(`${k}=${v}`);
  }
  return out;
}

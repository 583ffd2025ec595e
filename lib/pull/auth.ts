// Registry credentials and authentication challenges.
//
// Credentials, first found wins: $CH_PULL_USER/$CH_PULL_PASSWORD; then
// $XDG_RUNTIME_DIR/containers/auth.json (podman, skopeo); then
// ~/.docker/config.json. Both files map a registry to {"auth": base64
// "user:password"}; Docker Hub may be keyed as https://index.docker.io/v1/.
// Credential helpers (credsStore) are not run.

import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DOCKER_HUB } from './reference.js';

export interface Credentials { user: string; password: string; from: string }

/** Registry keys that mean REGISTRY in an auth file (scheme and path stripped). */
function keyMatches(key: string, registry: string): boolean {
  const k = key.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
  if (registry === DOCKER_HUB) return ['docker.io', 'index.docker.io', 'registry-1.docker.io'].includes(k);
  return k === registry;
}

function fromFile(path: string, registry: string): Credentials | null {
  let j: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    j = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;   // absent or unreadable: not a source
  }
  for (const [key, v] of Object.entries(j?.auths ?? {})) {
    if (!keyMatches(key, registry) || !v || typeof v !== 'object') continue;
    if (typeof v.auth === 'string' && v.auth) {
      const dec = Buffer.from(v.auth, 'base64').toString('utf8');
      const c = dec.indexOf(':');
      if (c > 0) return { user: dec.slice(0, c), password: dec.slice(c + 1), from: path };
    }
    if (typeof v.username === 'string' && typeof v.password === 'string')
      return { user: v.username, password: v.password, from: path };
  }
  return null;
}

export function findCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | null {
  if (env.CH_PULL_USER !== undefined && env.CH_PULL_USER !== '')
    return { user: env.CH_PULL_USER, password: env.CH_PULL_PASSWORD ?? '', from: '$CH_PULL_USER' };
  const files: string[] = [];
  if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  files.push(join(env.HOME || homedir(), '.docker', 'config.json'));
  for (const f of files) {
    const c = fromFile(f, registry);
    if (c) return c;
  }
  return null;
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.user}:${c.password}`).toString('base64')}`;
}

export interface Challenge { scheme: string; params: Record<string, string> }

/** Parse a WWW-Authenticate header: `Bearer realm="...",service="...",scope="..."`. */
export function parseChallenge(h: string | undefined): Challenge | null {
  if (!h) return null;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(h);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2])) !== null && p[0] !== '')
    params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

// Image references in Docker's syntax: [REGISTRY[:PORT]/]REPO[:TAG][@DIGEST].
// The first component is a registry only if it looks like a host name (has a
// '.' or ':', or is "localhost"); otherwise the image is on Docker Hub, whose
// one-component names live under "library/".

import { ChError } from '../util/log.js';
import { imageFileName } from '../image/names.js';

export const EXIT_USAGE = 2;
export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API answers. */
const DOCKER_HUB_API = 'registry-1.docker.io';

export interface Reference {
  /** Registry as written (docker.io for Docker Hub). */
  registry: string;
  /** host[:port] to connect to. */
  host: string;
  repository: string;
  /** Tag, when no digest is given ("latest" when neither is). */
  tag?: string;
  digest?: string;
  /** registry/repository:tag[@digest], the canonical spelling. */
  canonical: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/;

function bad(ref: string, why: string): ChError {
  return new ChError(`image reference '${ref}': ${why}`, EXIT_USAGE);
}

export function parseReference(ref: string): Reference {
  if (ref === '' || /[\s\0]/.test(ref)) throw bad(ref, 'empty, or contains white space or NUL');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(ref, `bad digest '${digest}' (want sha256:64 hex digits)`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(ref, `bad tag '${tag}'`);
  }
  let registry = DOCKER_HUB;
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  if (first && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    if (!HOST.test(first)) throw bad(ref, `bad registry '${first}'`);
    registry = first;
    rest = rest.slice(slash + 1);
  }
  if (rest === '') throw bad(ref, 'no repository name');
  for (const c of rest.split('/'))
    if (!COMPONENT.test(c)) throw bad(ref, `bad repository name component '${c}' (lower-case letters, digits, '.', '_', '-')`);
  if (registry === DOCKER_HUB && !rest.includes('/')) rest = `library/${rest}`;
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (!tag && !digest) tag = 'latest';
  const host = registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
  const canonical = `${registry}/${rest}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`;
  return { registry, host, repository: rest, tag, digest, canonical };
}

/** What to ask the registry's manifest endpoint for: the digest if given, else the tag. */
export function manifestKey(r: Reference): string {
  return r.digest ?? r.tag!;
}

/**
 * The image's name in the storage directory: the reference as the user would
 * write it ('/' -> '%', ':' -> '+'; docker.io/library/ left out, as Docker does).
 */
export function storageName(r: Reference): string {
  let short = r.registry === DOCKER_HUB ? r.repository.replace(/^library\//, '') : `${r.registry}/${r.repository}`;
  if (r.tag) short += `:${r.tag}`;
  if (r.digest) short += `@${r.digest}`;
  return imageFileName(short.replace('@', ':'));
}

/** Is HOST (host[:port]) this machine, where plain HTTP is allowed? */
export function isLoopback(host: string): boolean {
  const h = host.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || /^127\.[0-9.]+$/.test(h) || h === '::1';
}

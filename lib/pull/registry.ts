// The registry client (Distribution API v2): finds the scheme, authenticates
// (anonymous, basic, or bearer tokens from the realm the registry names),
// fetches manifests and opens blobs. Errors are ChErrors saying what went
// wrong in the user's terms: unknown image, refused credentials, unreachable.
//
// Credentials go only to the host the user named. A challenge (401) is
// answered only when the registry's own host sent it; one from a host the
// registry redirected to (blob storage elsewhere) is an error, so that host
// never sees an Authorization header nor makes us fetch a token with the
// user's credentials. A bearer realm on another host is used as Docker and
// containers/image use it (registry-1.docker.io names auth.docker.io): the
// registry's own challenge chose it, so it is the registry's delegate.

import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { ChError, type Log } from '../util/log.js';
import { basicHeader, findCredentials, parseChallenge, type Credentials } from './auth.js';
import { drained, HttpError, readBody, request, retryPolicy, TooLargeError, transient, withRetries } from './http.js';
import { isLoopback, type Reference } from './reference.js';
import { printable } from './text.js';

export const EXIT_FAIL = 1;
/** Manifests and indexes are read into memory: at most this much (as containers/image). */
export const MANIFEST_MAX = 4 << 20;

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
};
const ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].join(', ');

export interface Manifest { body: Buffer; digest: string; mediaType: string; json: any }

/**
 * actions: what a bearer token is asked for on the repository (default
 * 'pull'; lib/push asks 'pull,push'). proveLogin: once logged in, ask /v2/
 * again, so that credentials the registry refuses are said by connect()
 * (lib/push, before it packs anything); else the next request tries them.
 */
export interface RegistryOptions { insecure: boolean; log: Log; signal?: AbortSignal; actions?: string; proveLogin?: boolean }

/** Describe a network failure as "why (CODE)" (printable: it may quote what a server sent). */
export function netWhy(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (err instanceof HttpError) return printable(err.message);
  if (!e?.code) return printable(String(e?.message ?? e));
  return printable(e.message.includes(e.code) ? e.message : `${e.message} (${e.code})`);
}

export class Registry {
  private base!: URL;
  private authorization: string | undefined;
  private creds: Credentials | null;
  private readonly retry = retryPolicy();

  constructor(readonly ref: Reference, private readonly opts: RegistryOptions) {
    this.creds = findCredentials(ref.registry);
  }

  private unreachable(err: unknown): ChError {
    return new ChError(`registry ${this.ref.registry} unreachable: ${netWhy(err)}`, EXIT_FAIL);
  }

  private retried = (err: unknown, ms: number) =>
    this.opts.log.warn(`${this.ref.registry}: ${netWhy(err)}; retrying in ${(ms / 1000).toFixed(1)} s`);

  /**
   * Find the scheme and log in: GET /v2/. HTTPS first; plain HTTP only for a
   * registry on this machine or with --insecure, and only when HTTPS fails.
   * Credentials it answers a challenge with are tried by the next request
   * (proveLogin: by /v2/ again, here).
   */
  async connect(): Promise<void> {
    const plainOk = this.opts.insecure || isLoopback(this.ref.host);
    const probe = async (retry: boolean) => {
      try { return await this.get(this.base, {}, this.base.href, retry); } catch (err) {
        if (err instanceof ChError || this.opts.signal?.aborted) throw err;
        throw this.unreachable(err);
      }
    };
    let res: IncomingMessage;
    this.base = new URL(`https://${this.ref.host}/v2/`);
    try {
      res = await this.get(this.base, {}, this.base.href, false);
    } catch (err) {
      if (err instanceof ChError || this.opts.signal?.aborted) throw err;
      const e = err as NodeJS.ErrnoException;
      // Nothing listens there (nor for plain HTTP, on the same port): said at
      // once, not after seconds of retries. Later refusals (a registry
      // restarting mid-pull) are still retried.
      if (e.code === 'ECONNREFUSED') throw this.unreachable(err);
      if (e.code?.startsWith('ERR_TLS') || /certificate/i.test(e.message))
        throw new ChError(`registry ${this.ref.registry}: TLS certificate not trusted: ${netWhy(err)}`
          + ' (add its CA with NODE_EXTRA_CA_CERTS, or --insecure)', EXIT_FAIL);
      // Something that is not TLS answered (or hung up on the handshake): plain HTTP, where allowed.
      const notTls = /EPROTO|ERR_SSL|wrong version number|ECONNRESET/.test(`${e.code} ${e.message}`);
      if (plainOk && notTls) {
        this.opts.log.info(`${this.ref.host}: no HTTPS (TLS handshake failed: ${e.code}); using plain HTTP`);
        this.base = new URL(`http://${this.ref.host}/v2/`);
      } else if (!transient(err)) {
        throw this.unreachable(err);
      }
      res = await probe(true);   // connection refused, reset, timed out: retried with backoff
    }
    if (res.statusCode === 401) {
      await drained(res);   // its connection then serves the next request
      await this.authenticate(res.headers['www-authenticate']);
      // A pull asks its manifest next, with the credentials, and says a
      // refusal there as here (getRepo): /v2/ is not asked twice, a round
      // trip fewer for every registry that wants a token, anonymous or not.
      if (!this.opts.proveLogin) return;
      res = await probe(true);
      if (res.statusCode === 401) {
        res.resume();
        throw this.refused();
      }
    }
    await drained(res);   // its connection then serves the manifest's request
    if (res.statusCode !== 200)
      throw new ChError(`${this.base.href}: not a registry (API v2): HTTP ${res.statusCode}`, EXIT_FAIL);
  }


  private refused(): ChError {
    return new ChError(`registry ${this.ref.registry}: authentication refused`
      + (this.creds ? ` for user '${this.creds.user}' (credentials from ${this.creds.from})`
        : ' (no credentials: set CH_PULL_USER and CH_PULL_PASSWORD, or log in with podman/skopeo/docker)'), EXIT_FAIL);
  }

  private async authenticate(header: string | undefined): Promise<void> {
    const ch = parseChallenge(header);
    if (ch?.scheme === 'basic') {
      if (!this.creds) throw this.refused();
      this.authorization = basicHeader(this.creds);
      return;
    }
    if (ch?.scheme !== 'bearer' || !ch.params.realm)
      throw new ChError(`registry ${this.ref.registry}: unsupported authentication challenge '${printable(header ?? '')}'`, EXIT_FAIL);
    let realm: URL;
    try { realm = new URL(ch.params.realm); } catch {
      throw new ChError(`registry ${this.ref.registry}: bad token realm '${printable(ch.params.realm)}'`, EXIT_FAIL);
    }
    if (realm.protocol !== 'https:' && !(this.opts.insecure || isLoopback(realm.host)))
      throw new ChError(`registry ${this.ref.registry}: token realm ${printable(realm.href)} is plain HTTP; refused (--insecure allows it)`, EXIT_FAIL);
    if (ch.params.service) realm.searchParams.set('service', ch.params.service);
    realm.searchParams.set('scope', `repository:${this.ref.repository}:${this.opts.actions ?? 'pull'}`);
    const headers: Record<string, string> = this.creds ? { authorization: basicHeader(this.creds) } : {};
    let res: IncomingMessage;
    try {
      res = await withRetries(this.retry, async () => {
        const r = (await request(realm, { headers, insecure: this.opts.insecure, signal: this.opts.signal })).res;
        if ((r.statusCode ?? 0) >= 500) { r.resume(); throw new HttpError(`token server ${realm.host}: HTTP ${r.statusCode}`, r.statusCode!, '', r.headers); }
        return r;
      }, this.retried, this.opts.signal);
    } catch (err) {
      throw new ChError(`token server ${realm.host} unreachable: ${netWhy(err)}`, EXIT_FAIL);
    }
    const body = await readBody(res, 1 << 20).catch((err) => { throw new ChError(`token server ${realm.host}: ${netWhy(err)}`, EXIT_FAIL); });
    if (res.statusCode === 401 || res.statusCode === 403) throw this.refused();
    if (res.statusCode !== 200)
      throw new ChError(`token server ${realm.host}: HTTP ${res.statusCode}: ${printable(body.toString('utf8').slice(0, 200))}`, EXIT_FAIL);
    let token: unknown;
    try { const j = JSON.parse(body.toString('utf8')); token = j.token ?? j.access_token; } catch { /* below */ }
    if (typeof token !== 'string' || !token)
      throw new ChError(`token server ${realm.host}: no token in its answer`, EXIT_FAIL);
    this.authorization = `Bearer ${token}`;
  }

  /**
   * GET URL with our credentials; retried on transient failures when RETRY.
   * A 401 from any host but the registry's (a redirect target) is an error
   * naming WHAT: only the registry's own challenges are answered.
   */
  private async get(url: URL, headers: Record<string, string>, what: string, retry = true, signal = this.opts.signal): Promise<IncomingMessage> {
    const once = async () => {
      const h = { ...headers, ...(this.authorization ? { authorization: this.authorization } : {}) };
      const { res, url: from } = await request(url, { headers: h, insecure: this.opts.insecure, signal });
      if ((res.statusCode ?? 0) >= 500 || res.statusCode === 429) {
        res.resume();
        throw new HttpError(`HTTP ${res.statusCode} from ${from.host}`, res.statusCode!, '', res.headers);
      }
      if (res.statusCode === 401 && from.host !== this.base.host) {
        res.resume();
        throw new ChError(`${what}: HTTP 401 from ${printable(from.host)}, where ${this.base.host} redirected it;`
          + ` credentials go only to ${this.base.host}; refused`, EXIT_FAIL);
      }
      return res;
    };
    return retry ? withRetries(this.retry, once, this.retried, signal) : once();
  }

  /** GET PATH (under /v2/NAME/; WHAT in errors) with a token renewed once if it expired; SIGNAL: the request's, if not the registry's. */
  private async getRepo(path: string, headers: Record<string, string>, what: string, signal = this.opts.signal): Promise<IncomingMessage> {
    const url = new URL(`${this.ref.repository}/${path}`, this.base);
    let res: IncomingMessage;
    try {
      res = await this.get(url, headers, what, true, signal);
      if (res.statusCode === 401) {   // from the registry itself (get() refuses any other's)
        res.resume();
        await this.authenticate(res.headers['www-authenticate']);
        res = await this.get(url, headers, what, true, signal);
        if (res.statusCode === 401) { res.resume(); throw this.refused(); }
      }
    } catch (err) {
      if (err instanceof ChError || signal?.aborted) throw err;
      throw this.unreachable(err);
    }
    if (res.statusCode === 403) { res.resume(); throw this.refused(); }
    return res;
  }

  /** The manifest (or index) KEY (tag or digest), checked against its digest when known. */
  async manifest(key: string, what: string): Promise<Manifest> {
    const res = await this.getRepo(`manifests/${key}`, { accept: ACCEPT }, what);
    const body = await readBody(res, MANIFEST_MAX).catch((err) => {
      if (err instanceof TooLargeError) throw new ChError(`${what}: manifest larger than ${MANIFEST_MAX >> 20} MiB; refused`, EXIT_FAIL);
      throw this.unreachable(err);
    });
    if (res.statusCode === 404)
      throw new ChError(`${what}: unknown image or tag (registry says: ${errorText(body) || 'not found'})`, EXIT_FAIL);
    if (res.statusCode !== 200)
      throw new ChError(`${what}: manifest: HTTP ${res.statusCode}: ${errorText(body)}`, EXIT_FAIL);
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (key.includes(':') && key !== digest) {
      const algo = key.split(':')[0];
      const d = `${algo}:${createHash(algo).update(body).digest('hex')}`;
      if (d !== key) throw new ChError(`${what}: manifest digest mismatch: wanted ${key}, got ${d}`, EXIT_FAIL);
    }
    let json: any;
    try { json = JSON.parse(body.toString('utf8')); } catch {
      throw new ChError(`${what}: manifest is not JSON`, EXIT_FAIL);
    }
    const mediaType = json?.mediaType ?? String(res.headers['content-type'] ?? '').split(';')[0];
    return { body, digest: key.includes(':') ? key : digest, mediaType, json };
  }

  /**
   * Open blob DIGEST from byte OFFSET on (Range; the response says whether it
   * was honoured). SIGNAL: aborts it (else the registry's own, which it includes).
   */
  async blob(digest: string, offset: number, signal?: AbortSignal): Promise<IncomingMessage> {
    const sig = signal && this.opts.signal ? AbortSignal.any([signal, this.opts.signal]) : signal ?? this.opts.signal;
    const res = await this.getRepo(`blobs/${digest}`, offset > 0 ? { range: `bytes=${offset}-` } : {}, `blob ${digest}`, sig);
    if (res.statusCode === 404) {
      res.resume();
      throw new ChError(`blob ${digest}: not in the registry (404)`, EXIT_FAIL);
    }
    if (res.statusCode !== 200 && res.statusCode !== 206) {
      const body = await readBody(res, 1 << 16).catch(() => Buffer.alloc(0));
      throw new ChError(`blob ${digest}: HTTP ${res.statusCode}: ${errorText(body)}`, EXIT_FAIL);
    }
    return res;
  }

  /** The API's base URL (https://HOST/v2/, or http:), once connected. */
  get baseUrl(): URL { return this.base; }

  /** Our Authorization header for a request to URL: only the registry's own host ever gets it. */
  authFor(url: URL): Record<string, string> {
    return this.authorization && url.host === this.base.host ? { authorization: this.authorization } : {};
  }

  /** Answer a 401 the registry itself sent (WWW-Authenticate HEADER): credentials, or a new token. */
  reauthenticate(header: string | undefined): Promise<void> { return this.authenticate(header); }

  /** The error for credentials refused (or missing), saying where they came from. */
  refusal(): ChError { return this.refused(); }

  /** For retrying a broken blob download. */
  get retryPolicy() { return this.retry; }
  onRetry(err: unknown, ms: number): void { this.retried(err, ms); }
}

/** The registry's error message from a JSON error body ({errors: [{code, message}]}), printable. */
export function errorText(body: Buffer): string {
  try {
    const j = JSON.parse(body.toString('utf8'));
    if (Array.isArray(j?.errors)) return printable(j.errors.map((e: any) => `${e.code}${e.message ? `: ${e.message}` : ''}`).join('; '));
  } catch { /* not JSON */ }
  return printable(body.toString('utf8').slice(0, 200).trim());
}

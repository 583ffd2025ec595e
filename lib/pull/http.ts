// HTTP(S) for the registry client, on Node's built-in http/https only:
//   - certificates checked against the system's CA store (Node's own bundle
//     is not the site's), plus $SSL_CERT_FILE and $NODE_EXTRA_CA_CERTS;
//   - proxies from http_proxy/https_proxy/no_proxy (either case): plain HTTP
//     through the proxy with absolute URIs, HTTPS through a CONNECT tunnel;
//   - redirects followed (blob storage elsewhere), credentials dropped when
//     the host changes (and registry.ts never answers a challenge from a
//     redirect target: credentials go only to the host the user named);
//   - retries with exponential backoff on 5xx, 429 and broken connections.

import { readFileSync } from 'node:fs';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { isIP, type Socket } from 'node:net';

/** System CA bundles, first found wins (Debian, RHEL, SUSE, Alpine...). */
const CA_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/ca-bundle.pem', '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem', '/etc/ssl/cert.pem'];

/** The CA certificates to trust: the system's (or $SSL_CERT_FILE), plus $NODE_EXTRA_CA_CERTS. */
export function caCertificates(): string[] {
  const out: string[] = [];
  const read = (p: string | undefined) => { if (!p) return false; try { out.push(readFileSync(p, 'utf8')); return true; } catch { return false; } };
  if (!read(process.env.SSL_CERT_FILE) && !CA_BUNDLES.some(read)) out.push(...tls.rootCertificates);
  read(process.env.NODE_EXTRA_CA_CERTS);
  return out;
}

let trusted: tls.SecureContext | undefined;

/**
 * The TLS context every connection verifies with, made once: given the
 * certificates as `ca`, each connection parsed them all again (Debian's 144:
 * 42-47 ms for the first here, ~22 for each after), for every registry,
 * token server and blob store connection of a pull.
 */
export function trustedContext(): tls.SecureContext {
  trusted ??= tls.createSecureContext({ ca: caCertificates() });
  return trusted;
}

/**
 * Read small response RES to its end and drop what it says: settled once its
 * connection is back in the agent's pool (Node frees it on the tick after the
 * end), so the request made next reuses it instead of opening another (a
 * round trip, and a TLS handshake, fewer). A body over 64 KiB, or one not
 * over within 2 s, is cut off (its connection closed, not reused): a server
 * can't hold the caller here. Never rejects.
 */
export function drained(res: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    let bytes = 0;
    const cut = () => { res.destroy(); resolve(); };
    const timer = setTimeout(cut, 2000);
    const done = () => { clearTimeout(timer); resolve(); };
    res.on('data', (b: Buffer) => { bytes += b.length; if (bytes > 64 << 10) { clearTimeout(timer); cut(); } });
    res.once('end', done).once('close', done).once('error', done);
  });
}

export class HttpError extends Error {
  constructor(message: string, readonly status: number, readonly body: string, readonly headers: http.IncomingHttpHeaders) {
    super(message);
  }
}

/** A failure worth retrying: connection refused/reset/timed out, or the server's 5xx/429. */
export function transient(err: unknown): boolean {
  if (err instanceof HttpError) return err.status >= 500 || err.status === 429;
  const code = (err as NodeJS.ErrnoException)?.code;
  return ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH',
    'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET', 'ESOCKETTIMEDOUT'].includes(code ?? '')
    || /socket hang up|aborted|premature/i.test((err as Error)?.message ?? '');
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** Skip certificate verification (--insecure). */
  insecure?: boolean;
  signal?: AbortSignal;
  /** Seconds without any data before the connection is given up. */
  idleTimeoutS?: number;
  /** What to send (uploads: lib/push): bytes, or a stream piped into the request. */
  body?: Buffer | NodeJS.ReadableStream;
}

/** The proxy URL to use for URL, or null (no_proxy, or none set). */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv = process.env): URL | null {
  const get = (n: string) => env[n] ?? env[n.toUpperCase()];
  const noProxy = (get('no_proxy') ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  for (const np of noProxy) {
    if (np === '*') return null;
    const d = np.replace(/:[0-9]+$/, '').replace(/^\*?\./, '');
    if (host === d || host.endsWith('.' + d)) return null;
  }
  const p = url.protocol === 'https:' ? get('https_proxy') ?? get('all_proxy') : get('http_proxy') ?? get('all_proxy');
  if (!p) return null;
  try {
    return new URL(p.includes('://') ? p : `http://${p}`);
  } catch {
    throw new Error(`bad proxy URL '${p}' in the environment`);
  }
}

function proxyAuth(proxy: URL): Record<string, string> {
  if (!proxy.username) return {};
  const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return { 'proxy-authorization': `Basic ${Buffer.from(cred).toString('base64')}` };
}

/** A CONNECT tunnel to URL's host through PROXY: the raw socket. */
function tunnel(proxy: URL, url: URL, signal?: AbortSignal): Promise<Socket> {
  const port = url.port || '443';
  return new Promise((resolve, reject) => {
    const req = http.request({ host: proxy.hostname, port: proxy.port || 80, method: 'CONNECT',
      path: `${url.hostname}:${port}`, headers: { host: `${url.hostname}:${port}`, ...proxyAuth(proxy) }, signal });
    req.on('connect', (res, socket) => {
      if (res.statusCode === 200) resolve(socket);
      else { socket.destroy(); reject(new Error(`proxy ${proxy.host} refused the tunnel to ${url.host}: HTTP ${res.statusCode}`)); }
    });
    req.on('error', (err) => reject(Object.assign(new Error(`proxy ${proxy.host}: ${err.message}`), { code: (err as NodeJS.ErrnoException).code })));
    req.end();
  });
}

/** One request, no redirects or retries: the response (any status). */
export async function requestOnce(url: URL, opts: RequestOptions = {}): Promise<IncomingMessage> {
  const proxy = proxyFor(url);
  const headers = { 'user-agent': 'ch-pull (ch-toolkit)', ...opts.headers };
  const base = { method: opts.method ?? 'GET', headers, signal: opts.signal };
  let req: http.ClientRequest;
  if (url.protocol === 'https:') {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // SNI takes host names only (RFC 6066); an address is checked against the certificate all the same.
    const tlsOpts = { secureContext: trustedContext(), rejectUnauthorized: !opts.insecure, ...(isIP(host) ? {} : { servername: host }) };
    if (proxy) {
      const socket = await tunnel(proxy, url, opts.signal);
      req = https.request(url, { ...base, ...tlsOpts, agent: false,
        createConnection: () => tls.connect({ socket, ...tlsOpts }) });
      // The tunnel is this request's alone: closed with it, or it keeps the process alive.
      req.on('close', () => socket.destroy());
    } else {
      req = https.request(url, { ...base, ...tlsOpts });
    }
  } else if (proxy) {
    req = http.request({ ...base, host: proxy.hostname, port: proxy.port || 80, path: url.href,
      headers: { ...headers, host: url.host, ...proxyAuth(proxy) } });
  } else {
    req = http.request(url, base);
  }
  return new Promise((resolve, reject) => {
    req.on('response', resolve);
    req.on('error', reject);
    req.setTimeout((opts.idleTimeoutS ?? 60) * 1000, () => req.destroy(Object.assign(new Error('connection timed out'), { code: 'ETIMEDOUT' })));
    const body = opts.body;
    if (body && !Buffer.isBuffer(body)) {
      body.on('error', (err) => req.destroy(err));
      body.pipe(req);
    } else {
      req.end(body);
    }
  });
}

/** A body over readBody()'s bound: refused, not a network failure. */
export class TooLargeError extends Error {
  constructor(readonly max: number) { super(`response larger than ${max} bytes`); }
}

/**
 * The whole body of RES as a Buffer, at most MAX bytes: refused as soon as
 * its Content-Length claims more, or once more has arrived.
 */
export async function readBody(res: IncomingMessage, max = 8 << 20): Promise<Buffer> {
  if (Number(res.headers['content-length']) > max) { res.destroy(); throw new TooLargeError(max); }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    if (n > max) { res.destroy(); throw new TooLargeError(max); }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * A request that follows up to 5 redirects (credentials only to the original
 * host) and returns the final response, whatever its status.
 */
export async function request(url: URL, opts: RequestOptions = {}): Promise<{ res: IncomingMessage; url: URL }> {
  let cur = url;
  let headers = { ...opts.headers };
  for (let hops = 0; ; hops++) {
    const res = await requestOnce(cur, { ...opts, headers });
    const loc = res.headers.location;
    if (![301, 302, 303, 307, 308].includes(res.statusCode ?? 0) || !loc) return { res, url: cur };
    res.resume();
    if (hops >= 5) throw new Error(`${url.href}: too many redirects`);
    const next = new URL(loc, cur);
    if (next.host !== url.host) {
      const { authorization: _a, ...rest } = headers;
      headers = rest;
    }
    if (next.protocol === 'http:' && cur.protocol === 'https:' && !opts.insecure)
      throw new Error(`${url.href}: redirected from HTTPS to plain HTTP (${next.host}); refused`);
    cur = next;
  }
}

export interface RetryPolicy { retries: number; baseMs: number }

/** $CH_PULL_RETRIES (default 4) attempts after the first, backoff from 500 ms doubling. */
export function retryPolicy(env: NodeJS.ProcessEnv = process.env): RetryPolicy {
  const r = env.CH_PULL_RETRIES;
  const retries = r !== undefined && /^[0-9]+$/.test(r) ? Number(r) : 4;
  return { retries, baseMs: 500 };
}

/** Run FN, retrying transient failures per POLICY; ONRETRY hears of each retry. */
export async function withRetries<T>(policy: RetryPolicy, fn: (attempt: number) => Promise<T>,
  onRetry: (err: unknown, waitMs: number) => void, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (signal?.aborted || attempt >= policy.retries || !transient(err)) throw err;
      const wait = policy.baseMs * 2 ** attempt * (0.75 + Math.random() / 2);
      onRetry(err, wait);
      await new Promise((res) => setTimeout(res, wait));
    }
  }
}

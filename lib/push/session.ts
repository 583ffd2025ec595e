// Requests to a registry for pushing: ch-pull's connection and login
// (lib/pull/registry.ts, asking tokens for 'pull,push'), then any method,
// with a body, to URLs under the registry or where its Location headers
// point. Credentials follow ch-pull's rule (docs/design.md, "ch-pull"): the
// Authorization header goes only to the registry's own host; uploads never
// follow redirects (a body can't be sent twice), HEAD and GET follow them
// without credentials to another host, and a 401 is answered only when the
// registry's own host sent it.

import type { IncomingMessage } from 'node:http';
import { ChError, type Log } from '../util/log.js';
import { HttpError, readBody, request, requestOnce, retryPolicy, withRetries } from '../pull/http.js';
import { errorText, netWhy, Registry } from '../pull/registry.js';
import type { Reference } from '../pull/reference.js';
import { printable } from '../pull/text.js';

export const EXIT_FAIL = 1;

export interface SessionOptions { insecure: boolean; log: Log; signal?: AbortSignal }

export interface SendOptions {
  headers?: Record<string, string>;
  /** Made again for each attempt (a stream is read once). */
  body?: () => Buffer | NodeJS.ReadableStream;
  /** Retry transient failures (5xx, 429, broken connections): only where repeating the request is harmless. */
  retry?: boolean;
}

export class PushSession {
  readonly reg: Registry;
  private readonly retry = retryPolicy();

  constructor(readonly ref: Reference, private readonly opts: SessionOptions) {
    this.reg = new Registry(ref, { ...opts, actions: 'pull,push', proveLogin: true });
  }

  get signal(): AbortSignal | undefined { return this.opts.signal; }
  get log(): Log { return this.opts.log; }
  get insecure(): boolean { return this.opts.insecure; }

  /** Find the scheme and log in (ch-pull's connect()). */
  connect(): Promise<void> { return this.reg.connect(); }

  /** URL of PATH under /v2/REPOSITORY/. */
  url(path: string): URL { return new URL(`${this.ref.repository}/${path}`, this.reg.baseUrl); }

  /** The error for STEP (what we were doing) failing: naming the registry and the step. */
  fail(step: string, why: string): ChError {
    return new ChError(`push to ${this.ref.registry}/${this.ref.repository}: ${step}: ${why}`, EXIT_FAIL);
  }

  /** STEP answered STATUS with BODY: the registry's own words (printable), the status code, and what a 403 means. */
  async refusedBy(step: string, res: IncomingMessage): Promise<ChError> {
    const body = await readBody(res, 1 << 16).catch(() => Buffer.alloc(0));
    const said = errorText(body);
    const hint = res.statusCode === 403 || res.statusCode === 401 ? ' (the registry refuses to let you push here)'
      : res.statusCode === 405 ? ' (the registry does not accept pushes: read-only, or a mirror)' : '';
    return this.fail(step, `HTTP ${res.statusCode}${said ? `: ${said}` : ''}${hint}`);
  }

  /**
   * One request (METHOD URL) for STEP; a 401 from the registry's own host is
   * answered once (a token renewed, or credentials sent) and the request
   * repeated; a second 401 is "authentication refused". 5xx and 429 are
   * thrown as HttpError, which withRetries() retries when o.retry.
   */
  async send(method: string, url: URL, step: string, o: SendOptions = {}): Promise<{ res: IncomingMessage; url: URL }> {
    const once = async () => {
      for (let auth = 0; ; auth++) {
        const r = await this.sendOnce(method, url, step, o);
        if (r.res.statusCode !== 401) return r;
        r.res.resume();
        if (auth > 0) throw this.reg.refusal();
        await this.reg.reauthenticate(r.res.headers['www-authenticate']);
      }
    };
    try {
      return o.retry ? await withRetries(this.retry, once, this.retried, this.opts.signal) : await once();
    } catch (err) {
      if (err instanceof ChError || this.opts.signal?.aborted) throw err;
      // The cause kept: a chunk (upload.ts) may be resumed after a failure of the network.
      throw Object.assign(this.fail(step, `registry ${this.ref.registry} unreachable or failing: ${netWhy(err)}`), { cause: err });
    }
  }

  /**
   * Cancel the upload session at URL (DELETE), best effort: also after the
   * signal aborted everything else, so with a short timeout of its own.
   */
  async cancelUpload(url: URL): Promise<void> {
    try {
      const res = await requestOnce(url, { method: 'DELETE', headers: this.reg.authFor(url), insecure: this.opts.insecure, idleTimeoutS: 5 });
      res.resume();
      this.opts.log.debug(`upload session ${url.pathname} cancelled: HTTP ${res.statusCode}`);
    } catch (err) {
      this.opts.log.debug(`can't cancel upload session ${url.pathname}: ${netWhy(err)}`);
    }
  }

  private retried = (err: unknown, ms: number) =>
    this.opts.log.warn(`${this.ref.registry}: ${netWhy(err)}; retrying in ${(ms / 1000).toFixed(1)} s`);

  private async sendOnce(method: string, url: URL, step: string, o: SendOptions): Promise<{ res: IncomingMessage; url: URL }> {
    const headers = { ...o.headers, ...this.reg.authFor(url) };
    const ro = { method, headers, insecure: this.opts.insecure, signal: this.opts.signal };
    // Only bodiless requests follow redirects (request() drops credentials on a change of host).
    const r = o.body === undefined ? await request(url, ro) : { res: await requestOnce(url, { ...ro, body: o.body() }), url };
    const status = r.res.statusCode ?? 0;
    if (status >= 500 || status === 429) {
      const body = await readBody(r.res, 1 << 16).catch(() => Buffer.alloc(0));
      const said = errorText(body);
      throw new HttpError(`HTTP ${status} from ${r.url.host}${said ? `: ${said}` : ''}`, status, said, r.res.headers);
    }
    if (status === 401 && r.url.host !== this.reg.baseUrl.host) {
      r.res.resume();
      throw this.fail(step, `HTTP 401 from ${printable(r.url.host)}, where ${this.reg.baseUrl.host} sent us;`
        + ` credentials go only to ${this.reg.baseUrl.host}; refused`);
    }
    return r;
  }
}

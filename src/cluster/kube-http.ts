// The two HTTP exchanges the informers need (a streamed list and a line-delimited watch stream),
// authenticated from a KubeConfig. The library's own Watch cannot be stopped while it waits
// for response headers and shares one timer for connect and idle; every request here can be
// aborted by close(), and each phase has its own bound.
import type { KubeConfig } from '@kubernetes/client-node';
import { HttpMethod, RequestContext } from './kube-client.ts';
import { ListItemReader } from './list-items.ts';
import { fetch } from 'undici';
import type { Dispatcher } from 'undici';

/** A watch line above this is a broken stream, not an object (etcd caps objects at 1.5 MiB). */
const MAX_LINE_CHARS = 8 * 1024 * 1024;

export class KubeApiError extends Error {
  override name = 'KubeApiError';
  /** HTTP status, or the `code` of a Status object sent in a watch stream. */
  readonly statusCode: number | undefined;
  constructor(message: string, statusCode?: number) {
    super(message);
    this.statusCode = statusCode;
  }
}

/** Named like the library's client-side timeout, which ListThenWatch answers by resuming at once. */
export class WatchIdleTimeout extends Error {
  override name = 'TimeoutError';
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface StreamOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  onConnect(): void;
  onLine(line: string): void;
  /** Called once when the stream ends by itself or fails; never after the caller aborted it. */
  onEnd(err: Error | null): void;
}

export interface StreamHandle {
  /** Aborting ends the stream silently (onEnd is not called). */
  readonly controller: AbortController;
  /** Ends the stream from inside onLine, reporting `err` (or a clean end) through onEnd. */
  end(err: Error | null): void;
}

function statusMessage(status: number, body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === 'string' && parsed.message !== '') return `HTTP ${status}: ${parsed.message}`;
  } catch {
    // not a Status object
  }
  return `HTTP ${status}`;
}

export class KubeHttp {
  readonly #kc: KubeConfig;
  readonly #server: string;
  readonly #inflight = new Set<AbortController>();
  // The library builds a new undici Agent for every request; one per source keeps the
  // connection pool (and TLS sessions) across relists and reconnects.
  #dispatcher: Dispatcher | undefined | null = null;
  #closed = false;
  readonly #userAgent: Record<string, string>;

  constructor(kc: KubeConfig, userAgent?: string) {
    const cluster = kc.getCurrentCluster();
    if (cluster === null) throw new Error('kubeconfig has no current cluster');
    this.#kc = kc;
    this.#userAgent = userAgent === undefined ? {} : { 'User-Agent': userAgent };
    this.#server = cluster.server.replace(/\/+$/, '');
  }

  get server(): string {
    return this.#server;
  }

  url(path: string, query: Query): string {
    const url = new URL(this.#server + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
    return url.toString();
  }

  /** Headers and dispatcher for one request; throws on a kubeconfig the client cannot use. */
  async prepare(url: string): Promise<{ headers: Record<string, string>; dispatcher: Dispatcher | undefined }> {
    const ctx = new RequestContext(url, HttpMethod.GET);
    await this.#kc.applySecurityAuthentication(ctx);
    if (this.#dispatcher === null) this.#dispatcher = ctx.getDispatcher();
    return { headers: { ...ctx.getHeaders(), ...this.#userAgent, Accept: 'application/json' }, dispatcher: this.#dispatcher };
  }

  /**
   * GETs a list, handing each element of `items` to `onItem` as it arrives (see list-items.ts);
   * resolves with the rest of the list (kind, metadata) once the response is complete.
   */
  async getList(path: string, query: Query, timeoutMs: number, onItem: (item: unknown) => void): Promise<unknown> {
    return this.#bounded('GET', path, query, timeoutMs, {}, async (res) => {
      if (res.status !== 200 || res.body === null) throw new KubeApiError(`GET ${path}: ${statusMessage(res.status, await res.text())}`, res.status);
      const reader = new ListItemReader(onItem);
      const decoder = new TextDecoder();
      for await (const chunk of res.body) reader.push(decoder.decode(chunk, { stream: true }));
      reader.push(decoder.decode());
      return reader.end();
    });
  }

  /** A GET of one small object (the node, for its taints). */
  getJson(path: string, query: Query, timeoutMs: number): Promise<unknown> {
    return this.#bounded('GET', path, query, timeoutMs, {}, (res) => jsonOf(res, 'GET', path));
  }

  /** A GET that only has to succeed (the freshness probe's `/version`): the body is not read. */
  ping(path: string, timeoutMs: number): Promise<void> {
    return this.#bounded('GET', path, {}, timeoutMs, {}, async (res) => {
      await res.body?.cancel();
      if (res.status !== 200) throw new KubeApiError(`GET ${path}: HTTP ${res.status}`, res.status);
    });
  }

  /** One JSON PATCH (RFC 6902) on `path`; resolves with the patched object. */
  patchJson(path: string, ops: readonly unknown[], timeoutMs: number): Promise<unknown> {
    const init = { body: JSON.stringify(ops), contentType: 'application/json-patch+json' };
    return this.#bounded('PATCH', path, {}, timeoutMs, init, (res) => jsonOf(res, 'PATCH', path));
  }

  /** One POST of a JSON object (a TokenRequest); resolves with the created object (200 or 201). */
  postJson(path: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const init = { body: JSON.stringify(body), contentType: 'application/json' };
    return this.#bounded('POST', path, {}, timeoutMs, init, (res) => jsonOf(res, 'POST', path, 201));
  }

  /** One request with its whole life (headers and body) bounded by `timeoutMs`, cut on close(). */
  async #bounded<T>(
    method: 'GET' | 'PATCH' | 'POST', path: string, query: Query, timeoutMs: number,
    init: { body?: string; contentType?: string }, read: (res: Response) => Promise<T>,
  ): Promise<T> {
    const url = this.url(path, query);
    const ac = this.#track();
    const timer = setTimeout(() => ac.abort(new KubeApiError(`${method} ${path} timed out after ${timeoutMs} ms`)), timeoutMs);
    try {
      const { headers, dispatcher } = await this.prepare(url);
      const res = await fetch(url, {
        method, body: init.body, dispatcher, signal: ac.signal,
        headers: init.contentType === undefined ? headers : { ...headers, 'Content-Type': init.contentType },
      });
      return await read(res);
    } catch (err) {
      throw ac.signal.aborted && ac.signal.reason instanceof Error ? ac.signal.reason : err;
    } finally {
      clearTimeout(timer);
      this.#inflight.delete(ac);
    }
  }

  stream(path: string, query: Query, opts: StreamOptions): StreamHandle {
    const controller = new AbortController();
    const inner = this.#track();
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (err: Error | null, report: boolean): void => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      this.#inflight.delete(inner);
      inner.abort(err ?? undefined);
      if (report) opts.onEnd(err);
    };
    const arm = (ms: number, make: () => Error): void => {
      clearTimeout(timer);
      if (!ended) timer = setTimeout(() => finish(make(), true), ms);
    };
    controller.signal.addEventListener('abort', () => finish(null, false), { once: true });
    if (this.#closed) finish(null, false);

    const run = async (): Promise<void> => {
      if (ended) return;
      const url = this.url(path, query);
      arm(opts.connectTimeoutMs, () => new KubeApiError(`watch ${path}: no response within ${opts.connectTimeoutMs} ms`));
      const { headers, dispatcher } = await this.prepare(url);
      const res = await fetch(url, { headers, dispatcher, signal: inner.signal });
      if (res.status !== 200) {
        const text = await res.text();
        throw new KubeApiError(`watch ${path}: ${statusMessage(res.status, text)}`, res.status);
      }
      if (res.body === null) throw new KubeApiError(`watch ${path}: empty response`);
      opts.onConnect();
      const idle = (): void => arm(opts.idleTimeoutMs, () => new WatchIdleTimeout(`watch ${path}: silent for ${opts.idleTimeoutMs} ms`));
      idle();
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body) {
        if (ended) return;
        idle();
        buf += decoder.decode(chunk, { stream: true });
        let start = 0;
        let nl: number;
        while ((nl = buf.indexOf('\n', start)) !== -1) {
          const line = buf.slice(start, nl);
          start = nl + 1;
          if (line.trim() !== '') opts.onLine(line);
          if (ended) return;
        }
        buf = buf.slice(start);
        if (buf.length > MAX_LINE_CHARS) throw new KubeApiError(`watch ${path}: event line over ${MAX_LINE_CHARS} characters`);
      }
      // A partial last line means the stream was cut; it is passed on to be counted as malformed.
      if (buf.trim() !== '' && !ended) opts.onLine(buf);
      finish(null, true);
    };
    run().catch((err: unknown) => {
      if (ended) return;
      finish(err instanceof Error ? err : new Error(String(err)), true);
    });
    return { controller, end: (err) => finish(err, true) };
  }

  /** Aborts every request in flight; later requests fail at once. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const ac of this.#inflight) ac.abort(new KubeApiError('client closed'));
    this.#inflight.clear();
    const dispatcher = this.#dispatcher;
    this.#dispatcher = undefined;
    if (dispatcher) await dispatcher.destroy().catch(() => {});
  }

  #track(): AbortController {
    const ac = new AbortController();
    if (this.#closed) ac.abort(new KubeApiError('client closed'));
    else this.#inflight.add(ac);
    return ac;
  }
}

async function jsonOf(res: Response, method: string, path: string, created?: number): Promise<unknown> {
  const text = await res.text();
  if (res.status !== 200 && res.status !== created) throw new KubeApiError(`${method} ${path}: ${statusMessage(res.status, text)}`, res.status);
  return JSON.parse(text) as unknown;
}

// The only way out to the metadata service: one keep-alive undici Pool, every timeout and
// the response size bounded, and a cap on requests waiting for it. Requests are built by
// the caller from checked values; this module adds nothing but `Metadata: true` and the daemon's User-Agent.
import { Pool, errors } from 'undici';

export interface ImdsClientOptions {
  host: string;
  port: number;
  /** IMDS serves 5 concurrent identity requests per VM; more only queue there. */
  connections?: number;
  connectTimeoutMs?: number;
  /** Time for the answer's headers, and between body chunks. */
  responseTimeoutMs?: number;
  maxPending?: number;
  maxResponseBytes?: number;
  /** User-Agent of every request (podid-nmi/<version> [--custom-user-agent]); none when absent. */
  userAgent?: string;
}

export interface UpstreamAnswer {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly retryAfter: string | undefined;
  readonly body: Buffer;
  /** Set by a token source that answers for itself (Entra's error, a Secret missing): sent as x-podid-nmi-reason. */
  readonly reason?: string;
}

/**
 * busy: the queue is full; share_exceeded: this pod has its share of it queued; queued: the
 * client waited its bound and should come back (its fetch stays queued).
 */
export type UpstreamFailureKind = 'timeout' | 'unreachable' | 'invalid' | 'busy' | 'share_exceeded' | 'queued' | 'aborted';

export class UpstreamFailure extends Error {
  override name = 'UpstreamFailure';
  readonly kind: UpstreamFailureKind;
  /** When the client should come back, computed from its place in the queue. */
  readonly retryAfterSec: number | undefined;
  constructor(kind: UpstreamFailureKind, message: string, options?: ErrorOptions & { retryAfterSec?: number }) {
    super(message, options);
    this.kind = kind;
    this.retryAfterSec = options?.retryAfterSec;
  }
}


export class ImdsClient {
  readonly #pool: Pool;
  readonly #maxPending: number;
  readonly #headers: Readonly<Record<string, string>>;
  readonly #jsonHeaders: Readonly<Record<string, string>>;
  #pending = 0;

  constructor(options: ImdsClientOptions) {
    const origin = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${options.port}`;
    const responseTimeout = options.responseTimeoutMs ?? 10_000;
    this.#maxPending = options.maxPending ?? 512;
    this.#headers = { metadata: 'true', ...(options.userAgent === undefined ? {} : { 'user-agent': options.userAgent }) };
    this.#jsonHeaders = { ...this.#headers, 'content-type': 'application/json' };
    this.#pool = new Pool(origin, {
      connections: options.connections ?? 5,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
      connectTimeout: options.connectTimeoutMs ?? 1_000,
      headersTimeout: responseTimeout,
      bodyTimeout: responseTimeout,
      maxResponseSize: options.maxResponseBytes ?? 1 << 20,
    });
  }

  get pending(): number {
    return this.#pending;
  }

  async fetch(method: 'GET' | 'POST', path: string, signal?: AbortSignal, body?: Buffer): Promise<UpstreamAnswer> {
    if (this.#pending >= this.#maxPending) throw new UpstreamFailure('busy', 'too many requests waiting for IMDS');
    this.#pending++;
    try {
      const res = await this.#pool.request({
        method,
        path,
        headers: body === undefined ? this.#headers : this.#jsonHeaders,
        body,
        signal,
      });
      const data = Buffer.from(await res.body.arrayBuffer());
      return {
        status: res.statusCode,
        contentType: header(res.headers['content-type']),
        retryAfter: header(res.headers['retry-after']),
        body: data,
      };
    } catch (err) {
      // Whatever the abort's reason (hang-up, a deadline), the caller gave up: not IMDS's fault.
      if (signal?.aborted === true) throw new UpstreamFailure('aborted', 'request aborted by the caller', { cause: err });
      throw classify(err);
    } finally {
      this.#pending--;
    }
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function classify(err: unknown): UpstreamFailure {
  if (err instanceof UpstreamFailure) return err;
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  if (err instanceof errors.ConnectTimeoutError || err instanceof errors.HeadersTimeoutError || err instanceof errors.BodyTimeoutError) {
    return new UpstreamFailure('timeout', message, { cause: err });
  }
  if (e.code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE') return new UpstreamFailure('invalid', message, { cause: err });
  return new UpstreamFailure('unreachable', message, { cause: err });
}

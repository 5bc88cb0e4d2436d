// The only way out to Entra ID: the v2 token endpoint, `client_credentials` with a secret or a
// signed assertion, through one undici Agent with every timeout and the answer size bounded.
// Entra's answer becomes IMDS's shape (every value a string, `expires_on` computed from
// `expires_in`, `client_id` and `resource` echoed), so SDKs that call IMDS read it unchanged.
// An Entra error is relayed with its status and its AADSTS text, and nothing else of it.
import { Agent, errors } from 'undici';
import type { EntraTarget } from '../../decision/token-source.ts';
import { UpstreamFailure, type UpstreamAnswer } from '../imds-client.ts';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';

export type ClientCredential =
  | { readonly client_secret: string }
  | { readonly client_assertion: string };

export interface EntraClientOptions {
  connectTimeoutMs?: number;
  responseTimeoutMs?: number;
  /** Connections per Entra origin. */
  connections?: number;
  maxResponseBytes?: number;
  userAgent?: string;
  clock?: Clock;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** What of an Entra error reaches the pod: its codes and text, and the ids support asks for. */
const ERROR_FIELDS = ['error', 'error_description', 'error_codes', 'timestamp', 'trace_id', 'correlation_id'] as const;

export function tokenEndpoint(target: EntraTarget): string {
  return `${target.authority}${encodeURIComponent(target.tenantID)}/oauth2/v2.0/token`;
}

/** IMDS's `resource` as a v2 scope. A resource ending in `/` keeps it (`https://management.azure.com//.default`), as Entra expects. */
export function scopeFor(resource: string): string {
  return resource.endsWith('/.default') ? resource : `${resource}/.default`;
}

export class EntraClient {
  readonly #agent: Agent;
  readonly #headers: Record<string, string>;
  readonly #clock: Clock;

  constructor(o: EntraClientOptions = {}) {
    const responseTimeout = o.responseTimeoutMs ?? 10_000;
    this.#clock = o.clock ?? systemClock;
    this.#headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...(o.userAgent === undefined ? {} : { 'user-agent': o.userAgent }) };
    this.#agent = new Agent({
      connections: o.connections ?? 8,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
      connect: { timeout: o.connectTimeoutMs ?? 5_000 },
      headersTimeout: responseTimeout,
      bodyTimeout: responseTimeout,
      maxResponseSize: o.maxResponseBytes ?? 256 * 1024,
    });
  }

  async token(target: EntraTarget, resource: string, credential: ClientCredential, signal: AbortSignal): Promise<UpstreamAnswer> {
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: target.clientID, scope: scopeFor(resource) });
    if ('client_secret' in credential) form.set('client_secret', credential.client_secret);
    else {
      form.set('client_assertion_type', ASSERTION_TYPE);
      form.set('client_assertion', credential.client_assertion);
    }
    let status: number;
    let headers: Record<string, string | string[] | undefined>;
    let body: Buffer;
    const sentAt = this.#clock.now();
    try {
      const res = await this.#agent.request({
        origin: new URL(target.authority).origin, path: new URL(tokenEndpoint(target)).pathname,
        method: 'POST', headers: this.#headers, body: form.toString(), signal,
      });
      status = res.statusCode;
      headers = res.headers;
      body = Buffer.from(await res.body.arrayBuffer());
    } catch (err) {
      if (signal.aborted) throw new UpstreamFailure('aborted', 'request aborted by the caller', { cause: err });
      throw classify(err);
    }
    const retryAfter = first(headers['retry-after']);
    if (status === 200) return imdsShaped(body, target.clientID, resource, sentAt);
    return entraError(status, body, retryAfter);
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}

/** Entra's `{token_type, expires_in, ext_expires_in, access_token}` as IMDS would have answered. */
function imdsShaped(body: Buffer, clientID: string, resource: string, sentAt: number): UpstreamAnswer {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new UpstreamFailure('invalid', 'Entra ID answered 200 with a body that is not JSON');
  }
  const expiresIn = Number(parsed.expires_in);
  if (typeof parsed.access_token !== 'string' || parsed.access_token === '' || !Number.isFinite(expiresIn) || expiresIn <= 0) {
    throw new UpstreamFailure('invalid', 'Entra ID answered 200 without access_token or expires_in');
  }
  // From when the request left: the token cannot outlive what Entra promised.
  const notBefore = Math.floor(sentAt / 1000);
  const extExpiresIn = Number(parsed.ext_expires_in);
  const token = {
    access_token: parsed.access_token,
    client_id: clientID,
    expires_in: String(Math.floor(expiresIn)),
    expires_on: String(notBefore + Math.floor(expiresIn)),
    ext_expires_in: String(Number.isFinite(extExpiresIn) ? Math.floor(extExpiresIn) : Math.floor(expiresIn)),
    not_before: String(notBefore),
    resource,
    token_type: typeof parsed.token_type === 'string' ? parsed.token_type : 'Bearer',
  };
  return { status: 200, contentType: JSON_TYPE, retryAfter: undefined, body: Buffer.from(JSON.stringify(token), 'utf8') };
}

/** Entra's error, its fields kept (AADSTS text, codes, ids), anything else dropped; an unreadable one is a 502. */
function entraError(status: number, body: Buffer, retryAfter: string | undefined): UpstreamAnswer {
  let parsed: Record<string, unknown> | undefined;
  try {
    const p = JSON.parse(body.toString('utf8')) as unknown;
    if (typeof p === 'object' && p !== null && !Array.isArray(p)) parsed = p as Record<string, unknown>;
  } catch {
    parsed = undefined;
  }
  const kept: Record<string, unknown> = {};
  for (const f of ERROR_FIELDS) if (parsed?.[f] !== undefined) kept[f] = parsed[f];
  if (typeof kept.error !== 'string') {
    kept.error = status === 429 ? 'too_many_requests' : status >= 500 ? 'temporarily_unavailable' : 'invalid_request';
    kept.error_description = `Entra ID answered ${status} without an OAuth error`;
  }
  // A 2xx other than 200, or a 3xx, is not a token: a gateway error, not Entra's word.
  const relayed = status >= 400 && status <= 599 ? status : 502;
  return { status: relayed, contentType: JSON_TYPE, retryAfter, body: Buffer.from(JSON.stringify(kept), 'utf8'), reason: 'entra_refused' };
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function classify(err: unknown): UpstreamFailure {
  if (err instanceof UpstreamFailure) return err;
  const message = (err as Error).message ?? String(err);
  if (err instanceof errors.ConnectTimeoutError || err instanceof errors.HeadersTimeoutError || err instanceof errors.BodyTimeoutError) {
    return new UpstreamFailure('timeout', `Entra ID: ${message}`, { cause: err });
  }
  if ((err as { code?: string }).code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE') return new UpstreamFailure('invalid', `Entra ID: ${message}`, { cause: err });
  return new UpstreamFailure('unreachable', `Entra ID: ${message}`, { cause: err });
}

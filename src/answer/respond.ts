// Writing answers. Refusal bodies are serialised once at start-up: the hot path only copies.
import { STATUS_CODES } from 'node:http';
import { REFUSALS, REASONS, type Reason, type RefusalSpec } from '../decision/reasons.ts';
import type { UpstreamAnswer } from '../upstream/imds-client.ts';

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * Where an answer is written: node:http's ServerResponse, or the at-once lane's raw answer
 * (raw-answer.ts), which writes the same bytes straight to the socket.
 */
export interface AnswerTarget {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  shouldKeepAlive: boolean;
  writeHead(status: number, headers: Readonly<Record<string, string | number>>): unknown;
  end(body: Buffer): unknown;
}

interface Prepared {
  readonly status: number;
  readonly body: Buffer;
  readonly retryAfter: string | undefined;
  readonly closes: boolean;
  /** The answer's headers as they are written when nothing replaces them (no Allow, no computed Retry-After). */
  readonly headers: Readonly<Record<string, string | number>>;
}

const PREPARED = new Map<Reason, Prepared>(REASONS.map((reason) => {
  const spec: RefusalSpec = REFUSALS[reason];
  const body = Buffer.from(JSON.stringify({ error: spec.error, error_description: spec.description, reason }), 'utf8');
  const retryAfter = spec.retryAfter === undefined ? undefined : String(spec.retryAfter);
  const headers: Record<string, string | number> = { 'content-type': JSON_TYPE, 'content-length': body.length, 'x-podid-nmi-reason': reason };
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
  return [reason, { status: spec.status, body, retryAfter, closes: spec.closesConnection === true, headers: Object.freeze(headers) }];
}));

export function refusalStatus(reason: Reason): number {
  return REFUSALS[reason].status;
}

/** `retryAfterSec` replaces the reason's own Retry-After (a value computed from the queue). */
export function writeRefusal(res: AnswerTarget, reason: Reason, allow?: readonly string[], retryAfterSec?: number): void {
  if (res.headersSent || res.destroyed) return;
  const p = PREPARED.get(reason)!;
  let headers = p.headers;
  const replacesRetryAfter = retryAfterSec !== undefined && p.retryAfter !== undefined;
  if (replacesRetryAfter || allow !== undefined) {
    const own: Record<string, string | number> = { ...p.headers };
    if (replacesRetryAfter) own['retry-after'] = String(retryAfterSec);
    if (allow !== undefined) own.allow = allow.join(', ');
    headers = own;
  }
  // node:http then sends `connection: close` and destroys the socket once this answer is out.
  if (p.closes) res.shouldKeepAlive = false;
  res.writeHead(p.status, headers);
  res.end(p.body);
}

/** The same refusal as raw bytes, for a socket refused before node:http has parsed anything on it. */
export function rawRefusal(reason: Reason): Buffer {
  const p = PREPARED.get(reason)!;
  const head = `HTTP/1.1 ${p.status} ${STATUS_CODES[p.status] ?? ''}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${p.body.length}\r\n`
    + `x-podid-nmi-reason: ${reason}\r\n${p.retryAfter === undefined ? '' : `retry-after: ${p.retryAfter}\r\n`}connection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), p.body]);
}

/**
 * Relays what IMDS said, its status and body byte for byte. A 429 without Retry-After gets one:
 * the JS SDK retries 429 only when it is present, and backing off is what IMDS wants.
 */
export function writeUpstream(res: AnswerTarget, answer: UpstreamAnswer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(answer.status, upstreamHeaders(answer));
  res.end(answer.body);
}

/** An answer's headers, built once for each answer (a cached token is served as one answer for a second). */
const headersOf = new WeakMap<UpstreamAnswer, Readonly<Record<string, string | number>>>();

function upstreamHeaders(answer: UpstreamAnswer): Readonly<Record<string, string | number>> {
  let headers = headersOf.get(answer);
  if (headers !== undefined) return headers;
  const own: Record<string, string | number> = {
    'content-type': answer.contentType ?? JSON_TYPE,
    'content-length': answer.body.length,
  };
  const retryAfter = answer.retryAfter ?? (answer.status === 429 ? '1' : undefined);
  if (retryAfter !== undefined) own['retry-after'] = retryAfter;
  if (answer.reason !== undefined) own['x-podid-nmi-reason'] = answer.reason;
  headers = Object.freeze(own);
  headersOf.set(answer, headers);
  return headers;
}

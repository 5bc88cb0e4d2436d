// Writing answers. Refusal bodies are serialised once at start-up: the hot path only copies.
import type { ServerResponse } from 'node:http';
import { REFUSALS, REASONS, type Reason } from '../decision/reasons.ts';
import type { UpstreamAnswer } from '../upstream/imds-client.ts';

const JSON_TYPE = 'application/json; charset=utf-8';

interface Prepared {
  readonly status: number;
  readonly body: Buffer;
  readonly retryAfter: string | undefined;
}

const PREPARED = new Map<Reason, Prepared>(REASONS.map((reason) => {
  const spec = REFUSALS[reason];
  const body = Buffer.from(JSON.stringify({ error: spec.error, error_description: spec.description, reason }), 'utf8');
  const retryAfter = 'retryAfter' in spec ? String(spec.retryAfter) : undefined;
  return [reason, { status: spec.status, body, retryAfter }];
}));

export function refusalStatus(reason: Reason): number {
  return REFUSALS[reason].status;
}

/** `retryAfterSec` replaces the reason's own Retry-After (a value computed from the queue). */
export function writeRefusal(res: ServerResponse, reason: Reason, allow?: readonly string[], retryAfterSec?: number): void {
  if (res.headersSent || res.destroyed) return;
  const p = PREPARED.get(reason)!;
  const headers: Record<string, string | number> = {
    'content-type': JSON_TYPE,
    'content-length': p.body.length,
    'x-podid-nmi-reason': reason,
  };
  const retryAfter = retryAfterSec !== undefined && p.retryAfter !== undefined ? String(retryAfterSec) : p.retryAfter;
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
  if (allow !== undefined) headers.allow = allow.join(', ');
  res.writeHead(p.status, headers);
  res.end(p.body);
}

/**
 * Relays what IMDS said, its status and body byte for byte. A 429 without Retry-After gets one:
 * the JS SDK retries 429 only when it is present, and backing off is what IMDS wants.
 */
export function writeUpstream(res: ServerResponse, answer: UpstreamAnswer): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string | number> = {
    'content-type': answer.contentType ?? JSON_TYPE,
    'content-length': answer.body.length,
  };
  const retryAfter = answer.retryAfter ?? (answer.status === 429 ? '1' : undefined);
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
  res.writeHead(answer.status, headers);
  res.end(answer.body);
}

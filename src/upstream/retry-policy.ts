// Which IMDS answers are worth another attempt, and when. Microsoft's guidance for IMDS:
// retry 404 (identity being set up), 410 (IMDS updating, back within 70 s), 429 and 5xx with
// exponential backoff; every other 4xx is final ("Identity not found" stays not found).
import type { UpstreamAnswer, UpstreamFailure } from './imds-client.ts';

export interface RetryPlan {
  /** Milliseconds before the next attempt may start. */
  readonly delayMs: number;
  /** What caused it, a closed set for metrics. */
  readonly cause: RetryCause;
}

export type RetryCause = '429' | '5xx' | '404' | '410';

/** Backoff before attempt n+1 (n = attempts made so far): 0.5, 1, 2, 4, 8 s. */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
/** A Retry-After beyond this is capped: a client's whole wait is bounded anyway. */
export const MAX_RETRY_AFTER_MS = 30_000;
export const MAX_ATTEMPTS = 6;

/** Transport failures are not retried: a timeout already cost its bound, a refused connection is relayed as 503 at once. */
export function retryCause(result: UpstreamAnswer | UpstreamFailure): RetryCause | undefined {
  if ('kind' in result) return undefined;
  const s = result.status;
  if (s === 429) return '429';
  if (s === 404) return '404';
  if (s === 410) return '410';
  if (s >= 500 && s <= 599) return '5xx';
  return undefined;
}

/**
 * `attempts` counts the attempts already made (1 after the first). IMDS's own Retry-After wins
 * over the backoff when it is longer. `undefined` means: final, relay it.
 */
export function planRetry(result: UpstreamAnswer | UpstreamFailure, attempts: number, now: number, maxAttempts = MAX_ATTEMPTS): RetryPlan | undefined {
  const cause = retryCause(result);
  if (cause === undefined || attempts >= maxAttempts) return undefined;
  const backoff = BACKOFF_MS[Math.min(attempts - 1, BACKOFF_MS.length - 1)]!;
  const told = 'kind' in result ? undefined : parseRetryAfter(result.retryAfter, now);
  return { delayMs: Math.min(MAX_RETRY_AFTER_MS, Math.max(backoff, told ?? 0)), cause };
}

/** RFC 9110: delay-seconds or an HTTP-date. Anything else is ignored. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d{1,9}$/.test(v)) return Number(v) * 1000;
  const date = Date.parse(v);
  if (Number.isNaN(date) || !/[a-z]/i.test(v)) return undefined;
  return Math.max(0, date - now);
}

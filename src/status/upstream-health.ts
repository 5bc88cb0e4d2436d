// Whether the metadata service answers, from the request path's one hook: every call that went
// to IMDS (not cache hits) is counted as answered or failed, in one-minute buckets.
import type { RequestObserver, RequestOutcome } from '../observability/request-outcome.ts';
import type { CallHealth } from './node-status.ts';

const BUCKET_MS = 60_000;

export class UpstreamHealth implements RequestObserver {
  readonly #buckets: Array<{ start: number; answered: number; failed: number }> = [];
  readonly #windowMs: number;
  readonly #now: () => number;
  #lastSuccess = 0;
  #lastFailure = 0;
  #lastFailureResult = '';

  constructor(o: { windowMs?: number; now?: () => number } = {}) {
    this.#windowMs = o.windowMs ?? 5 * 60_000;
    this.#now = o.now ?? Date.now;
  }

  finished(o: RequestOutcome): void {
    if (o.upstream === undefined || o.cache === 'hit') return;
    // A grant from Entra ID is Entra's answer, counted on Entra's own budget, not IMDS's.
    if (o.decision?.kind === 'grant' && o.decision.source.kind !== 'imds') return;
    const result = o.upstream.result;
    // An answer IMDS gave on purpose (200, 400 "Identity not found", 404) is IMDS working; a
    // transport failure, a 5xx or a 429 (throttled) is IMDS, or the way to it, failing.
    const failed = typeof result !== 'number' || result >= 500 || result === 429;
    this.record(failed, String(result));
  }

  record(failed: boolean, result: string): void {
    const now = this.#now();
    let b = this.#buckets.at(-1);
    if (b === undefined || now - b.start >= BUCKET_MS) {
      b = { start: now, answered: 0, failed: 0 };
      this.#buckets.push(b);
      while (this.#buckets.length > Math.ceil(this.#windowMs / BUCKET_MS) + 1) this.#buckets.shift();
    }
    if (failed) {
      b.failed++;
      this.#lastFailure = now;
      this.#lastFailureResult = result;
    } else {
      b.answered++;
      this.#lastSuccess = now;
    }
  }

  view(): CallHealth {
    const now = this.#now();
    const since = now - this.#windowMs;
    let answered = 0;
    let failed = 0;
    for (const b of this.#buckets) if (b.start >= since - BUCKET_MS) { answered += b.answered; failed += b.failed; }
    const iso = (t: number): string | null => (t === 0 ? null : new Date(t).toISOString());
    return {
      windowSeconds: this.#windowMs / 1000, answered, failed,
      lastSuccess: iso(this.#lastSuccess),
      lastFailure: this.#lastFailure === 0 ? null : { at: iso(this.#lastFailure)!, result: this.#lastFailureResult },
      failing: this.#lastFailure > this.#lastSuccess && this.#lastFailure >= since,
    };
  }
}

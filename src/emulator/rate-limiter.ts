import type { RateLimit } from './types.ts';

export type Admission = { admitted: true; release: () => void } | { admitted: false; reason: 'rate' | 'concurrency' };

/**
 * IMDS' throttle for identity requests: a sliding one-second window over admitted requests
 * plus a cap on requests in flight. Rejected requests do not consume the window, so a test
 * can predict exactly which request is the first to be refused.
 */
export class TokenRateLimiter {
  #limit: RateLimit | false;
  #now: () => number;
  #admittedAt: number[] = [];
  #inFlight = 0;

  constructor(limit: RateLimit | false, now: () => number) {
    this.#limit = limit;
    this.#now = now;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  tryAdmit(): Admission {
    const limit = this.#limit;
    if (limit !== false) {
      const now = this.#now();
      while (this.#admittedAt.length > 0 && (this.#admittedAt[0] ?? 0) <= now - 1000) this.#admittedAt.shift();
      if (this.#inFlight >= limit.concurrent) return { admitted: false, reason: 'concurrency' };
      if (this.#admittedAt.length >= limit.perSecond) return { admitted: false, reason: 'rate' };
      this.#admittedAt.push(now);
    }
    this.#inFlight++;
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
      },
    };
  }
}

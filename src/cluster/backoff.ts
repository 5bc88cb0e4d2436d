// Reconnect pacing for the informers: exponential with jitter, so that after an API server
// restart the DaemonSet's pods on every node do not come back in lockstep.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 200, maxMs: 30_000 };

export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(opts: BackoffOptions, random: () => number = Math.random) {
    if (!(opts.initialMs > 0) || !(opts.maxMs >= opts.initialMs)) {
      throw new RangeError(`backoff needs 0 < initialMs <= maxMs, got ${opts.initialMs}..${opts.maxMs}`);
    }
    this.#initialMs = opts.initialMs;
    this.#maxMs = opts.maxMs;
    this.#random = random;
  }

  /** The next delay: the capped exponential step, of which the upper half is randomised. */
  next(): number {
    const step = Math.min(this.#maxMs, this.#initialMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.round(step / 2 + (this.#random() * step) / 2);
  }

  reset(): void {
    this.#attempt = 0;
  }
}

/** Jitters one delay the same way, for pacing that does not keep its own attempt count. */
export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.round(ms / 2 + (random() * ms) / 2);
}

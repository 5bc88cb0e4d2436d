// Time for the upstream scheduler and the token cache, behind one seam so their rules can be
// tested with a fake clock instead of sleeps.
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /** Runs `fn` after `ms`; the returned function cancels it. Timers never hold the process open. */
  timer(fn: () => void, ms: number): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  timer(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return () => clearTimeout(t);
  },
};

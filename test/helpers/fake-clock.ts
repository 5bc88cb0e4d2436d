// A clock the test moves by hand: timers fire in time order as it advances, never by themselves.
import type { Clock } from '../../src/upstream/clock.ts';

export class FakeClock implements Clock {
  #now: number;
  #timers: Array<{ at: number; seq: number; fn: () => void }> = [];
  #seq = 0;

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  now = (): number => this.#now;

  timer(fn: () => void, ms: number): () => void {
    const t = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn };
    this.#timers.push(t);
    return () => { this.#timers = this.#timers.filter((x) => x !== t); };
  }

  get pendingTimers(): number {
    return this.#timers.length;
  }

  /** Moves time forward, firing every timer that falls due, in order, at its own time. */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.#timers[0];
      if (next === undefined || next.at > end) break;
      this.#timers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.fn();
    }
    this.#now = end;
  }
}

/** Lets promise callbacks run (several rounds of microtasks and one macrotask). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

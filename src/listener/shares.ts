// Counting shares: how many of something each caller holds, with a cap per caller and a cap
// over all strangers (callers no pod is known for). Used for connections and in-flight requests.
import type { Caller } from '../pods/caller.ts';

export interface ShareLimits {
  perCaller: number;
  /** Over all strangers together; pods keep the rest of the total for themselves. */
  strangers: number;
}

export class Shares {
  readonly #limits: ShareLimits;
  readonly #held = new Map<string, number>();
  #strangers = 0;

  constructor(limits: ShareLimits) {
    this.#limits = limits;
  }

  /** Takes one unit for `caller`; returns the release function, or undefined when over share. */
  take(caller: Caller): (() => void) | undefined {
    const held = this.#held.get(caller.key) ?? 0;
    if (held >= this.#limits.perCaller) return undefined;
    if (!caller.known && this.#strangers >= this.#limits.strangers) return undefined;
    this.#held.set(caller.key, held + 1);
    if (!caller.known) this.#strangers++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#held.get(caller.key) ?? 1) - 1;
      if (left === 0) this.#held.delete(caller.key);
      else this.#held.set(caller.key, left);
      if (!caller.known) this.#strangers--;
    };
  }

  /** Whether `take` would give `caller` a unit now (for what is done before anything else can take one). */
  hasRoom(caller: Caller): boolean {
    if ((this.#held.get(caller.key) ?? 0) >= this.#limits.perCaller) return false;
    return caller.known || this.#strangers < this.#limits.strangers;
  }

  held(key: string): number {
    return this.#held.get(key) ?? 0;
  }

  get callers(): number {
    return this.#held.size;
  }
}

// A queue shared fairly between callers (pods): first in, first out within one caller, and
// round robin across callers, so a pod with many distinct fetches waits behind its own
// requests, never in front of another pod's. An item may be queued for several callers (a
// fetch two pods are waiting for); it leaves every queue when it is taken or removed.

export interface Queued {
  /** Not to be taken before this time (a retry's backoff). */
  notBefore: number;
}

export type EnqueueRefusal = 'full' | 'caller_full';

export class FairQueue<T extends Queued> {
  readonly #maxTotal: number;
  readonly #maxPerCaller: number;
  /** Callers with something queued, in round-robin order: the head is served next. */
  readonly #turns: string[] = [];
  readonly #byCaller = new Map<string, T[]>();
  readonly #callersOf = new Map<T, Set<string>>();

  constructor(maxTotal: number, maxPerCaller: number) {
    this.#maxTotal = maxTotal;
    this.#maxPerCaller = maxPerCaller;
  }

  /** Distinct items queued. */
  get size(): number {
    return this.#callersOf.size;
  }

  queuedFor(caller: string): number {
    return this.#byCaller.get(caller)?.length ?? 0;
  }

  has(item: T): boolean {
    return this.#callersOf.has(item);
  }

  /**
   * Queues `item` at the back of `caller`'s line. `front` is for a retry keeping its place: it
   * goes first in the line, and the bounds were already checked when it first came.
   */
  add(caller: string, item: T, front = false): EnqueueRefusal | undefined {
    const callers = this.#callersOf.get(item);
    if (callers?.has(caller) === true) return undefined;
    let line = this.#byCaller.get(caller);
    if (!front) {
      if (callers === undefined && this.#callersOf.size >= this.#maxTotal) return 'full';
      if ((line?.length ?? 0) >= this.#maxPerCaller) return 'caller_full';
    }
    if (line === undefined) {
      line = [];
      this.#byCaller.set(caller, line);
      this.#turns.push(caller);
    }
    if (front) line.unshift(item);
    else line.push(item);
    if (callers === undefined) this.#callersOf.set(item, new Set([caller]));
    else callers.add(caller);
    return undefined;
  }

  /** The next item due at `now`, in round-robin order across callers; undefined if none is due. */
  take(now: number): T | undefined {
    for (let i = 0; i < this.#turns.length; i++) {
      const caller = this.#turns[0]!;
      // This caller's turn is used up whether or not it had something due.
      this.#turns.push(this.#turns.shift()!);
      const item = this.#byCaller.get(caller)!.find((q) => q.notBefore <= now);
      if (item !== undefined) {
        this.remove(item);
        return item;
      }
    }
    return undefined;
  }

  /** The earliest time an item becomes due, or undefined when the queue is empty. */
  nextDue(): number | undefined {
    let due: number | undefined;
    for (const item of this.#callersOf.keys()) if (due === undefined || item.notBefore < due) due = item.notBefore;
    return due;
  }

  remove(item: T): void {
    const callers = this.#callersOf.get(item);
    if (callers === undefined) return;
    this.#callersOf.delete(item);
    for (const caller of callers) {
      const line = this.#byCaller.get(caller)!;
      line.splice(line.indexOf(item), 1);
      if (line.length === 0) {
        this.#byCaller.delete(caller);
        this.#turns.splice(this.#turns.indexOf(caller), 1);
      }
    }
  }

  /**
   * How many items round robin takes before `item`, if all are due: the items ahead of it in
   * its best line, plus as many from every other caller's line (each gets one turn a round).
   */
  ahead(item: T): number | undefined {
    const callers = this.#callersOf.get(item);
    if (callers === undefined) return undefined;
    let best: { caller: string; index: number } | undefined;
    for (const caller of callers) {
      const index = this.#byCaller.get(caller)!.indexOf(item);
      if (best === undefined || index < best.index) best = { caller, index };
    }
    let n = best!.index;
    const order = this.#turns.indexOf(best!.caller);
    for (let turn = 0; turn < this.#turns.length; turn++) {
      const caller = this.#turns[turn]!;
      if (caller === best!.caller) continue;
      // Callers whose turn comes before this one's in the current round get one more.
      n += Math.min(this.#byCaller.get(caller)!.length, best!.index + (turn < order ? 1 : 0));
    }
    return n;
  }

  /** Ahead of the first item of `caller`'s line: when its share frees up. */
  aheadOfCaller(caller: string): number | undefined {
    const first = this.#byCaller.get(caller)?.[0];
    return first === undefined ? undefined : this.ahead(first);
  }
}

// Callers that pipelined are refused new connections for a while. Refusing at accept costs
// nothing, while every pipelined connection costs a parse of its whole first read (node:http
// parses a read at once, up to 64 KiB of requests) however early the pipelining is caught.
export class Cooldown {
  readonly #until = new Map<string, number>();
  readonly #ms: number;
  readonly #max: number;
  readonly #now: () => number;

  constructor(ms: number, o: { maxCallers?: number; now?: () => number } = {}) {
    this.#ms = ms;
    this.#max = o.maxCallers ?? 4096;
    this.#now = o.now ?? Date.now;
  }

  start(key: string): void {
    this.#until.delete(key);
    // Bounded: the oldest cooldown is forgotten first, which only shortens it.
    if (this.#until.size >= this.#max) this.#until.delete(this.#until.keys().next().value!);
    this.#until.set(key, this.#now() + this.#ms);
  }

  active(key: string): boolean {
    const until = this.#until.get(key);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#until.delete(key);
    return false;
  }
}

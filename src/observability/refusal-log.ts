// Refusal lines are rate-limited per caller: a pod refused in a loop must not rotate the evidence
// of everything else out of the log. The first few lines of each window are written; the rest
// are counted, and the count is logged with the caller's next written line, or at the window's end.
import type { Logger } from 'pino';

export interface RefusalLogOptions {
  /** Lines written per caller per window. */
  perWindow?: number;
  windowMs?: number;
  /** Callers remembered at once; beyond, the least recently seen is forgotten (its count flushed). */
  maxCallers?: number;
  now?: () => number;
}

interface Window {
  start: number;
  written: number;
  suppressed: number;
  /** What the last suppressed line was about, to say what the count stands for. */
  fields: Record<string, unknown>;
}

export class RefusalLog {
  readonly #log: Logger;
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #maxCallers: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  readonly #timer: NodeJS.Timeout;

  constructor(log: Logger, o: RefusalLogOptions = {}) {
    this.#log = log;
    this.#perWindow = o.perWindow ?? 5;
    this.#windowMs = o.windowMs ?? 10_000;
    this.#maxCallers = o.maxCallers ?? 4096;
    this.#now = o.now ?? Date.now;
    this.#timer = setInterval(() => this.flush(), this.#windowMs);
    this.#timer.unref();
  }

  /** `caller` is the share key (pod or address); `fields` must already be safe to log. */
  write(caller: string, fields: Record<string, unknown>, msg: string, level: 'info' | 'warn' = 'info'): void {
    const now = this.#now();
    let w = this.#windows.get(caller);
    if (w !== undefined && now - w.start >= this.#windowMs) {
      this.#report(w);
      w = undefined;
    }
    if (w === undefined) {
      w = { start: now, written: 0, suppressed: 0, fields: {} };
      if (this.#windows.size >= this.#maxCallers) this.#forgetOldest();
    }
    this.#windows.delete(caller);
    this.#windows.set(caller, w);
    if (w.written < this.#perWindow) {
      w.written++;
      this.#log[level](fields, msg);
      return;
    }
    w.suppressed++;
    w.fields = fields;
  }

  /** Writes the count of every window that has ended with lines suppressed. */
  flush(force = false): void {
    const now = this.#now();
    for (const [caller, w] of this.#windows) {
      if (!force && now - w.start < this.#windowMs) continue;
      this.#report(w);
      this.#windows.delete(caller);
    }
  }

  close(): void {
    clearInterval(this.#timer);
    this.flush(true);
  }

  #forgetOldest(): void {
    const [caller, w] = this.#windows.entries().next().value!;
    this.#report(w);
    this.#windows.delete(caller);
  }

  #report(w: Window): void {
    if (w.suppressed === 0) return;
    const { pod, uid, ip, reason } = w.fields;
    this.#log.warn({ pod, uid, ip, reason, suppressed: w.suppressed, windowMs: this.#windowMs }, 'refusal log lines suppressed for this caller');
  }
}

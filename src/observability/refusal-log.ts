// Refusal lines are rate-limited per caller: a pod refused in a loop must not rotate the evidence
// of everything else out of the log. The first few lines of each window are written; the rest
// are counted, and the count is logged with the caller's next written line, or at the window's end.
// Grant lines go through one of these too (request-log.ts), keyed by pod, identity and resource:
// a pod served from the cache in a loop is the same flood.
import type { Logger } from 'pino';

export interface RefusalLogOptions {
  /** Lines written per caller per window. */
  perWindow?: number;
  windowMs?: number;
  /** Callers remembered at once; beyond, the least recently seen is forgotten (its count flushed). */
  maxCallers?: number;
  now?: () => number;
  /** The line that reports a window's count: its level, message, and the fields it repeats. */
  summary?: { level: 'info' | 'warn'; msg: string; fields: readonly string[] };
}

type Fields = Record<string, unknown> | (() => Record<string, unknown>);

const REFUSALS_SUMMARY = { level: 'warn', msg: 'refusal log lines suppressed for this caller', fields: ['pod', 'uid', 'ip', 'reason'] } as const;

interface Window {
  start: number;
  written: number;
  suppressed: number;
  /** What the last suppressed line was about, to say what the count stands for (built when the count is written). */
  fields: Fields;
}

export class RefusalLog {
  readonly #log: Logger;
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #maxCallers: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  readonly #timer: NodeJS.Timeout;
  readonly #summary: NonNullable<RefusalLogOptions['summary']>;
  /** The key written last: the Map's last entry. */
  #latest: string | undefined;

  constructor(log: Logger, o: RefusalLogOptions = {}) {
    this.#log = log;
    this.#summary = o.summary ?? REFUSALS_SUMMARY;
    this.#perWindow = o.perWindow ?? 5;
    this.#windowMs = o.windowMs ?? 10_000;
    this.#maxCallers = o.maxCallers ?? 4096;
    this.#now = o.now ?? Date.now;
    this.#timer = setInterval(() => this.flush(), this.#windowMs);
    this.#timer.unref();
  }

  /**
   * `caller` is the window's key (for refusals the share key: pod or address); `fields` must
   * be safe to log. As a function, they are built only for a line that is written: most of a
   * flood's lines are counted, not written.
   */
  write(caller: string, fields: Fields, msg: string, level: 'info' | 'warn' | 'error' = 'info'): void {
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
    // Most recently seen last (the first forgotten for room is the least recent); a caller seen
    // again at once, as a flood's is, is already there.
    if (caller !== this.#latest || this.#windows.get(caller) !== w) {
      this.#windows.delete(caller);
      this.#windows.set(caller, w);
      this.#latest = caller;
    }
    if (w.written < this.#perWindow) {
      w.written++;
      this.#log[level](typeof fields === 'function' ? fields() : fields, msg);
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
    const s = this.#summary;
    const line: Record<string, unknown> = {};
    const fields = typeof w.fields === 'function' ? w.fields() : w.fields;
    for (const name of s.fields) line[name] = fields[name];
    line.suppressed = w.suppressed;
    line.windowMs = this.#windowMs;
    this.#log[s.level](line, s.msg);
  }
}

// The warnings and errors the daemon logged in the last minutes, for `nmi status`. Entries are
// keyed by (level, component, message): our messages are fixed strings, and whatever a pod sent
// lives in the fields, which are not kept. So a pod that floods one kind of warning fills one
// entry's count, never the table, and nothing a pod wrote is shown.
import type { Logger } from 'pino';
import type { ProblemEntry } from './node-status.ts';

const LEVELS = ['warn', 'error', 'fatal'] as const;
type Level = (typeof LEVELS)[number];

export interface RecentProblemsOptions {
  /** Distinct entries kept; the least recently seen goes first. */
  maxEntries?: number;
  windowMs?: number;
  now?: () => number;
}

interface Entry { level: Level; component: string | null; message: string; detail: string | null; count: number; first: number; last: number }

const DETAIL_MAX = 300;

export class RecentProblems {
  readonly windowMs: number;
  readonly #max: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();

  constructor(o: RecentProblemsOptions = {}) {
    this.#max = o.maxEntries ?? 32;
    this.windowMs = o.windowMs ?? 10 * 60_000;
    this.#now = o.now ?? Date.now;
  }

  note(level: Level, component: string | null, message: string, detail: string | null): void {
    const key = `${level}\0${component ?? ''}\0${message}`;
    const now = this.#now();
    let e = this.#entries.get(key);
    if (e === undefined || now - e.last > this.windowMs) {
      e = { level, component, message, detail: null, count: 0, first: now, last: now };
      this.#entries.delete(key);
      if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    } else {
      this.#entries.delete(key);
    }
    e.count++;
    e.last = now;
    if (detail !== null) e.detail = clip(detail);
    this.#entries.set(key, e);
  }

  /** Entries seen within the window, most recent first. */
  recent(): ProblemEntry[] {
    const since = this.#now() - this.windowMs;
    return [...this.#entries.values()].filter((e) => e.last >= since).reverse().map((e) => ({
      level: e.level, component: e.component, message: e.message, detail: e.detail, count: e.count,
      first: new Date(e.first).toISOString(), last: new Date(e.last).toISOString(),
    }));
  }
}

/**
 * A logger whose warn, error and fatal lines (its children's too: pino children inherit these
 * methods) are also noted in `problems`. What is written to the log is unchanged.
 */
export function noteProblems(log: Logger, problems: RecentProblems): Logger {
  const tee = log.child({});
  const parent = Object.getPrototypeOf(tee) as Logger;
  for (const level of LEVELS) {
    Object.defineProperty(tee, level, {
      configurable: true, writable: true,
      value: function (this: Logger, ...args: unknown[]) {
        try {
          const [first, second] = args;
          const message = typeof first === 'string' ? first : typeof second === 'string' ? second : '';
          const err = first !== null && typeof first === 'object' ? (first instanceof Error ? first : (first as { err?: unknown }).err) : undefined;
          const component = (this.bindings() as { component?: unknown }).component;
          problems.note(level, typeof component === 'string' ? component : null, message,
            err instanceof Error ? err.message : typeof err === 'string' ? err : null);
        } catch {
          // Noting is best effort; the log line itself must still be written.
        }
        return (parent[level] as (...a: unknown[]) => void).apply(this, args);
      },
    });
  }
  return tee;
}

function clip(s: string): string {
  // Control characters would break the one-line text output.
  const flat = s.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, ' ');
  return flat.length > DETAIL_MAX ? `${flat.slice(0, DETAIL_MAX)}… (${flat.length - DETAIL_MAX} more)` : flat;
}

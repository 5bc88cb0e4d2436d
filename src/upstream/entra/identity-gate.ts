// Per-identity bound on fetches at Entra: one identity (a tenant's app) gets at most
// `maxRunning` token requests at once and `maxWaiting` more queued; beyond that its fetch fails
// `busy` (429 to the pod) at once. The node-wide bounds are the Entra scheduler's.
import { UpstreamFailure } from '../imds-client.ts';

export class IdentityGate {
  readonly #maxRunning: number;
  readonly #maxWaiting: number;
  readonly #running = new Map<string, number>();
  readonly #waiting = new Map<string, Array<() => void>>();

  constructor(maxRunning = 4, maxWaiting = 32) {
    this.#maxRunning = maxRunning;
    this.#maxWaiting = maxWaiting;
  }

  async run<T>(identity: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    if ((this.#running.get(identity) ?? 0) >= this.#maxRunning) {
      const line = this.#waiting.get(identity) ?? [];
      if (line.length >= this.#maxWaiting) throw new UpstreamFailure('busy', 'too many token requests waiting for Entra ID for this identity');
      // An abort that came before the wait would never be heard: it takes no place.
      if (signal.aborted) throw new UpstreamFailure('aborted', 'request aborted by the caller');
      this.#waiting.set(identity, line);
      await new Promise<void>((resolve, reject) => {
        const go = (): void => { signal.removeEventListener('abort', onAbort); resolve(); };
        const onAbort = (): void => {
          const i = line.indexOf(go);
          if (i >= 0) line.splice(i, 1);
          if (line.length === 0 && this.#waiting.get(identity) === line) this.#waiting.delete(identity);
          reject(new UpstreamFailure('aborted', 'request aborted by the caller'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        line.push(go);
      });
    } else {
      this.#running.set(identity, (this.#running.get(identity) ?? 0) + 1);
    }
    try {
      return await fn();
    } finally {
      this.#release(identity);
    }
  }

  /** A finished fetch hands its place to the next one waiting (the running count stays), or frees it. */
  #release(identity: string): void {
    const line = this.#waiting.get(identity);
    const next = line?.shift();
    if (line !== undefined && line.length === 0) this.#waiting.delete(identity);
    if (next !== undefined) return next();
    const n = (this.#running.get(identity) ?? 1) - 1;
    if (n <= 0) this.#running.delete(identity);
    else this.#running.set(identity, n);
  }
}

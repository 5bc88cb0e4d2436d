// Tokens are the hot path's only upstream call, and IMDS allows 20 identity requests a second
// per VM. Granted answers are kept until shortly before they expire, and concurrent asks for
// the same token share one upstream request (the EKS agent's lesson). The decision runs
// before this, for every request: the cache never widens who gets what.
import { LRUCache } from 'lru-cache';
import { UpstreamFailure, type UpstreamAnswer } from './imds-client.ts';

export interface TokenSource {
  fetch(method: 'GET', path: string, signal?: AbortSignal): Promise<UpstreamAnswer>;
}

export type TokenOutcome = 'hit' | 'miss' | 'shared';

export interface TokenCacheOptions {
  maxEntries?: number;
  /** One caller's share of the entries: past it, its own oldest entry makes room, nobody else's. */
  maxEntriesPerOwner?: number;
  /** A larger answer (path plus body) is served but not kept: the cache's worst case stays small. */
  maxEntryBytes?: number;
  /** A token closer than this to expiry is fetched anew; SDKs refresh 5 minutes ahead. */
  refreshMarginMs?: number;
  now?: () => number;
}

interface Entry {
  readonly token: Record<string, unknown>;
  readonly expiresOnMs: number;
  readonly contentType: string | undefined;
  readonly owner: string;
}

interface Flight {
  readonly promise: Promise<UpstreamAnswer>;
  readonly controller: AbortController;
  waiters: number;
}

export class TokenCache {
  readonly #source: TokenSource;
  readonly #entries: LRUCache<string, Entry>;
  readonly #flights = new Map<string, Flight>();
  readonly #margin: number;
  readonly #now: () => number;
  readonly #perOwner: number;
  readonly #maxEntryBytes: number;
  /** Each owner's paths, oldest first. */
  readonly #owned = new Map<string, Set<string>>();

  constructor(source: TokenSource, options: TokenCacheOptions = {}) {
    this.#source = source;
    this.#margin = options.refreshMarginMs ?? 15 * 60_000;
    this.#now = options.now ?? Date.now;
    this.#perOwner = options.maxEntriesPerOwner ?? 64;
    this.#maxEntryBytes = options.maxEntryBytes ?? 8 * 1024;
    this.#entries = new LRUCache({ max: options.maxEntries ?? 4096, dispose: (entry, path) => this.#disown(entry.owner, path) });
  }

  get size(): number {
    return this.#entries.size;
  }

  /** `path` is the rebuilt upstream path; it names identity, resource and api-version exactly. */
  /** `owner` is the caller's share key: the entry a fetch leaves counts against that caller. */
  async get(path: string, signal: AbortSignal | undefined, onOutcome?: (o: TokenOutcome) => void, owner = ''): Promise<UpstreamAnswer> {
    const now = this.#now();
    const entry = this.#entries.get(path);
    if (entry !== undefined) {
      if (entry.expiresOnMs - now > this.#margin) {
        onOutcome?.('hit');
        return aged(entry, now);
      }
      this.#entries.delete(path);
    }
    let flight = this.#flights.get(path);
    onOutcome?.(flight === undefined ? 'miss' : 'shared');
    if (flight === undefined) flight = this.#fly(path, owner);
    return this.#await(path, flight, signal);
  }

  #fly(path: string, owner: string): Flight {
    const controller = new AbortController();
    const promise = this.#source.fetch('GET', path, controller.signal).then((answer) => {
      this.#keep(path, answer, owner);
      return answer;
    }).finally(() => {
      if (this.#flights.get(path) === flight) this.#flights.delete(path);
    });
    // Waiters may all have left before it settles; the rejection is theirs, not unhandled.
    promise.catch(() => {});
    const flight: Flight = { promise, controller, waiters: 0 };
    this.#flights.set(path, flight);
    return flight;
  }

  /** Each waiter may hang up on its own; the upstream request is cancelled when the last one does. */
  #await(path: string, flight: Flight, signal: AbortSignal | undefined): Promise<UpstreamAnswer> {
    flight.waiters++;
    if (signal === undefined) return flight.promise.finally(() => flight.waiters--);
    return new Promise<UpstreamAnswer>((resolve, reject) => {
      let left = false;
      const leave = (): void => {
        if (left) return;
        left = true;
        signal.removeEventListener('abort', onAbort);
        if (--flight.waiters === 0 && signal.aborted) {
          // A request arriving now must start afresh, not join a fetch being cancelled.
          if (this.#flights.get(path) === flight) this.#flights.delete(path);
          flight.controller.abort();
        }
      };
      const onAbort = (): void => {
        leave();
        reject(new UpstreamFailure('aborted', 'client went away'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      flight.promise.then((a) => { leave(); resolve(a); }, (e: unknown) => { leave(); reject(e); });
    });
  }

  #keep(path: string, answer: UpstreamAnswer, owner: string): void {
    if (answer.status !== 200 || path.length + answer.body.length > this.#maxEntryBytes) return;
    let token: unknown;
    try {
      token = JSON.parse(answer.body.toString('utf8'));
    } catch {
      return;
    }
    if (typeof token !== 'object' || token === null) return;
    const expiresOn = Number((token as Record<string, unknown>).expires_on);
    if (!Number.isFinite(expiresOn)) return;
    const expiresOnMs = expiresOn * 1000;
    const ttl = expiresOnMs - this.#now() - this.#margin;
    if (ttl <= 0) return;
    const full = this.#owned.get(owner);
    if (full !== undefined && !full.has(path) && full.size >= this.#perOwner) this.#entries.delete(full.values().next().value!);
    // Set first: replacing an entry disposes it, which takes its path out of its owner's set.
    this.#entries.set(path, { token: token as Record<string, unknown>, expiresOnMs, contentType: answer.contentType, owner }, { ttl });
    const owned = this.#owned.get(owner) ?? new Set<string>();
    owned.add(path);
    this.#owned.set(owner, owned);
  }

  #disown(owner: string, path: string): void {
    const owned = this.#owned.get(owner);
    if (owned === undefined) return;
    owned.delete(path);
    if (owned.size === 0) this.#owned.delete(owner);
  }

  clear(): void {
    this.#entries.clear();
  }
}

/** As IMDS does for the tokens it caches: `expires_in` counts down, everything else is as received. */
function aged(entry: Entry, now: number): UpstreamAnswer {
  const remaining = Math.max(0, Math.floor((entry.expiresOnMs - now) / 1000));
  const body = Buffer.from(JSON.stringify({ ...entry.token, expires_in: String(remaining) }), 'utf8');
  return { status: 200, contentType: entry.contentType, retryAfter: undefined, body };
}

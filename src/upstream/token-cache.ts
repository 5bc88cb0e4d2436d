// Tokens are the hot path's only upstream call, and IMDS allows 20 identity requests a second
// per VM. Granted answers are kept until shortly before they expire, concurrent asks for the
// same token share one fetch (the EKS agent's lesson), and every fetch is paced by the
// node's UpstreamScheduler. Tokens that pods keep using are renewed in the background before
// they would stop being served (kiam's prefetch), so a working pod does not wait for IMDS.
// The decision runs before this, for every request: the cache never widens who gets what.
import { LRUCache } from 'lru-cache';
import { systemClock, type Clock } from './clock.ts';
import type { UpstreamAnswer } from './imds-client.ts';
import { refusedFailure, type Ticket, type UpstreamScheduler } from './scheduler.ts';

export type TokenOutcome = 'hit' | 'miss' | 'shared';
export type RefreshOutcome = 'renewed' | 'unchanged' | 'failed';

export interface TokenCacheOptions {
  maxEntries?: number;
  /** One caller's share of the entries: past it, its own oldest entry makes room, nobody else's. */
  maxEntriesPerOwner?: number;
  /** A larger answer (path plus body) is served but not kept: the cache's worst case stays small. */
  maxEntryBytes?: number;
  /** A token closer than this to expiry is fetched anew; SDKs refresh 5 minutes ahead. */
  refreshMarginMs?: number;
  /** How long a client waits for its fetch (queued + upstream) before it is told to come back. */
  waitMs?: number;
  /** Refresh-ahead starts this long before a token would stop being served; 0 turns it off. */
  refreshLeadMs?: number;
  /** Period of the refresh-ahead sweep. */
  sweepMs?: number;
  clock?: Clock;
  onRefresh?: (outcome: RefreshOutcome) => void;
}

interface Entry {
  readonly token: Record<string, unknown>;
  readonly expiresOnMs: number;
  readonly contentType: string | undefined;
  readonly storedAt: number;
  /** Until then it is served; then it is gone (the LRU's ttl). */
  readonly servedUntil: number;
  lastUsed: number;
  /** IMDS gave the same token again: no point asking before it expires. */
  refreshSettled: boolean;
  /** The caller whose fetch left it: it counts against that caller's share. */
  readonly owner: string;
  /** The last answer served from it: the same bytes until `expires_in` ticks down a second. */
  served: { readonly remaining: number; readonly answer: UpstreamAnswer } | undefined;
}

export interface GetOptions {
  /** Whose fetch it is, for fairness: the pod's UID. */
  caller: string;
  signal?: AbortSignal;
  onOutcome?: (o: TokenOutcome) => void;
}

export class TokenCache {
  readonly #scheduler: UpstreamScheduler;
  readonly #entries: LRUCache<string, Entry>;
  readonly #flights = new Map<string, Ticket>();
  readonly #margin: number;
  readonly #perOwner: number;
  readonly #maxEntryBytes: number;
  /** Each owner's paths, oldest first. */
  readonly #owned = new Map<string, Set<string>>();
  readonly #waitMs: number;
  readonly #lead: number;
  readonly #clock: Clock;
  readonly #onRefresh: ((o: RefreshOutcome) => void) | undefined;
  #stopSweep: (() => void) | undefined;

  constructor(scheduler: UpstreamScheduler, options: TokenCacheOptions = {}) {
    this.#scheduler = scheduler;
    this.#margin = options.refreshMarginMs ?? 15 * 60_000;
    this.#waitMs = options.waitMs ?? 8_000;
    this.#lead = options.refreshLeadMs ?? 5 * 60_000;
    this.#clock = options.clock ?? systemClock;
    this.#onRefresh = options.onRefresh;
    const clock = this.#clock;
    this.#perOwner = options.maxEntriesPerOwner ?? 64;
    this.#maxEntryBytes = options.maxEntryBytes ?? 8 * 1024;
    this.#entries = new LRUCache({
      // ttlResolution 0: read the clock at each lookup. Its default (1 ms) cached the time behind a
      // fresh timer each millisecond: several percent of the daemon's time under load.
      max: options.maxEntries ?? 4096, ttlAutopurge: false, ttlResolution: 0, perf: { now: () => clock.now() },
      dispose: (entry, path) => this.#disown(entry.owner, path),
    });
    if (this.#lead > 0) this.#sweepEvery(options.sweepMs ?? 30_000);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** `path` is the rebuilt upstream path; it names identity, resource and api-version exactly. */
  get(path: string, o: GetOptions): Promise<UpstreamAnswer> {
    const cached = this.hit(path);
    if (cached !== undefined) {
      o.onOutcome?.('hit');
      return Promise.resolve(cached);
    }
    let ticket = this.#flights.get(path);
    if (ticket !== undefined && ticket.controller?.signal.aborted !== true) {
      this.#scheduler.join(ticket, o.caller);
      o.onOutcome?.('shared');
    } else {
      const submitted = this.#scheduler.submit(path, o.caller);
      if (typeof submitted === 'string') return Promise.reject(refusedFailure(this.#scheduler, submitted, o.caller));
      ticket = this.#track(path, submitted, o.caller);
      o.onOutcome?.('miss');
    }
    return this.#scheduler.wait(ticket, o.signal, this.#waitMs);
  }

  /** The answer `get` would give at once from a token still served; undefined when it would fetch or wait. */
  hit(path: string): UpstreamAnswer | undefined {
    const now = this.#clock.now();
    const entry = this.#entries.get(path);
    if (entry === undefined) return undefined;
    if (entry.servedUntil > now) {
      entry.lastUsed = now;
      return aged(entry, now);
    }
    this.#entries.delete(path);
    return undefined;
  }

  /**
   * Renews, at background priority, the tokens about to stop being served that pods used in
   * the second half of their serving life. msal-node comes back at half a token's lifetime,
   * so a pod that works is caught by this; a token fetched once and never asked for again
   * is left to expire.
   */
  refreshAhead(): void {
    const now = this.#clock.now();
    for (const [path, entry] of this.#entries.entries()) {
      if (entry.refreshSettled || this.#flights.has(path)) continue;
      if (entry.servedUntil - now > this.#lead || entry.servedUntil <= now) continue;
      if (entry.lastUsed < entry.storedAt + (entry.servedUntil - entry.storedAt) / 2) continue;
      const ticket = this.#scheduler.submit(path, '', 'background', entry.servedUntil);
      if (typeof ticket === 'string') return;
      this.#track(path, ticket, entry.owner);
      ticket.promise.then((answer) => {
        const fresh = this.#entries.peek(path);
        if (answer.status !== 200 || fresh === undefined) return this.#onRefresh?.('failed');
        if (fresh.expiresOnMs > entry.expiresOnMs) return this.#onRefresh?.('renewed');
        fresh.refreshSettled = true;
        this.#onRefresh?.('unchanged');
      }, () => this.#onRefresh?.('failed'));
    }
  }

  stop(): void {
    this.#stopSweep?.();
    this.#stopSweep = undefined;
  }

  clear(): void {
    this.#entries.clear();
  }

  #sweepEvery(ms: number): void {
    this.#stopSweep = this.#clock.timer(() => {
      this.refreshAhead();
      this.#sweepEvery(ms);
    }, ms);
  }

  #track(path: string, ticket: Ticket, owner: string): Ticket {
    this.#flights.set(path, ticket);
    ticket.promise.then((answer) => this.#keep(path, answer, owner), () => {}).finally(() => {
      if (this.#flights.get(path) === ticket) this.#flights.delete(path);
    });
    return ticket;
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
    const now = this.#clock.now();
    const expiresOnMs = expiresOn * 1000;
    const servedUntil = expiresOnMs - this.#margin;
    if (servedUntil <= now) return;
    // A renewal keeps the entry's use history: it is the same pods' token.
    const previous = this.#entries.peek(path);
    const full = this.#owned.get(owner);
    if (full !== undefined && !full.has(path) && full.size >= this.#perOwner) this.#entries.delete(full.values().next().value!);
    // Set first: replacing an entry disposes it, which takes its path out of its owner's set.
    this.#entries.set(path, {
      token: token as Record<string, unknown>, expiresOnMs, contentType: answer.contentType,
      storedAt: now, servedUntil, lastUsed: previous?.lastUsed ?? now, refreshSettled: false, owner, served: undefined,
    }, { ttl: servedUntil - now });
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
}

/**
 * As IMDS does for the tokens it caches: `expires_in` counts down, everything else is as received.
 * Serialised once per second of `expires_in`, not once per hit: the answer is never written to.
 */
function aged(entry: Entry, now: number): UpstreamAnswer {
  const remaining = Math.max(0, Math.floor((entry.expiresOnMs - now) / 1000));
  if (entry.served?.remaining === remaining) return entry.served.answer;
  const body = Buffer.from(JSON.stringify({ ...entry.token, expires_in: String(remaining) }), 'utf8');
  const answer: UpstreamAnswer = Object.freeze({ status: 200, contentType: entry.contentType, retryAfter: undefined, body });
  entry.served = { remaining, answer };
  return answer;
}


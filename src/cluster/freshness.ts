// How recently the API server confirmed each resource's state. A watch that hears nothing is
// not news (a quiet cluster sends no events, bookmarks come about once a minute), so a cheap
// probe (GET /version, allowed to every client) with a short timeout runs every few seconds:
// while it answers and the resource's watch is open, the state counts as confirmed. A server
// that accepts connections but answers nothing thus shows within probe interval + timeout +
// threshold (10 + 5 + 15 = 30 s by default) instead of at the watch's idle timeout.
import type { Logger } from 'pino';
import { Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { KubeHttp } from './kube-http.ts';
import type { StateFreshness } from './view.ts';

export interface FreshnessSource {
  readonly resource: string;
  /** Since the last event, bookmark or list of this resource. */
  secondsSinceLastEvent(): number;
  /** Listed, and its watch open without errors since. */
  isWatching(): boolean;
}

export interface FreshnessTuning {
  probeIntervalMs: number;
  probeTimeoutMs: number;
  /** Older than this, the state is called stale: gauge, warning log, alert. */
  staleAfterS: number;
}

export const DEFAULT_FRESHNESS: FreshnessTuning = { probeIntervalMs: 10_000, probeTimeoutMs: 5_000, staleAfterS: 15 };

const REPEAT_WARNING_MS = 60_000;

export class FreshnessTracker implements StateFreshness {
  readonly #http: KubeHttp;
  readonly #sources: () => Iterable<FreshnessSource>;
  readonly #tuning: FreshnessTuning;
  readonly #log: Logger;
  /** performance.now() of the last probe (sent) that found the resource's watch open. */
  readonly #probedAt = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  #probing = false;
  #staleSince: number | undefined;
  #lastWarning = 0;

  constructor(o: { http: KubeHttp; sources: () => Iterable<FreshnessSource>; registry: Registry; log: Logger; tuning?: Partial<FreshnessTuning> }) {
    this.#http = o.http;
    this.#sources = o.sources;
    this.#tuning = { ...DEFAULT_FRESHNESS, ...o.tuning };
    this.#log = o.log;
    const self = this;
    new Gauge({
      name: 'podid_nmi_state_age_seconds',
      help: 'Seconds since the API server last confirmed this resource\'s state (an event, a bookmark, a list, or an answered probe while its watch was open)',
      labelNames: ['resource'], registers: [o.registry],
      collect() {
        for (const s of self.#sources()) this.set({ resource: s.resource }, self.#age(s));
      },
    });
    new Gauge({
      name: 'podid_nmi_state_stale', help: `1 while some resource's state is older than ${this.#tuning.staleAfterS} s`, registers: [o.registry],
      collect() { this.set(self.ageSeconds() > self.#tuning.staleAfterS ? 1 : 0); },
    });
    this.#timer = setInterval(() => void this.#probe(), this.#tuning.probeIntervalMs).unref();
  }

  ageSeconds(): number {
    let oldest = 0;
    for (const s of this.#sources()) oldest = Math.max(oldest, this.#age(s));
    return oldest;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #age(s: FreshnessSource): number {
    const heard = s.secondsSinceLastEvent();
    const probed = this.#probedAt.get(s.resource);
    return probed === undefined ? heard : Math.min(heard, (performance.now() - probed) / 1000);
  }

  async #probe(): Promise<void> {
    if (this.#probing) return;
    this.#probing = true;
    const sent = performance.now();
    try {
      await this.#http.ping('/version', this.#tuning.probeTimeoutMs);
      for (const s of this.#sources()) if (s.isWatching()) this.#probedAt.set(s.resource, sent);
    } catch {
      // Unanswered: the ages keep growing, and that is the signal.
    } finally {
      this.#probing = false;
    }
    this.#report();
  }

  #report(): void {
    const age = this.ageSeconds();
    const now = Date.now();
    if (age > this.#tuning.staleAfterS) {
      if (this.#staleSince === undefined || now - this.#lastWarning >= REPEAT_WARNING_MS) {
        this.#staleSince ??= now;
        this.#lastWarning = now;
        const ages = Object.fromEntries([...this.#sources()].map((s) => [s.resource, Math.round(this.#age(s))]));
        this.#log.warn({ ageS: Math.round(age), ages }, 'cluster state is stale: the Kubernetes API has not confirmed it recently; decisions use the last known objects');
      }
    } else if (this.#staleSince !== undefined) {
      this.#log.info({ staleForS: Math.round((now - this.#staleSince) / 1000) }, 'cluster state confirmed by the Kubernetes API again');
      this.#staleSince = undefined;
    }
  }
}

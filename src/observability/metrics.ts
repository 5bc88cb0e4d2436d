// Prometheus metrics for SREs. Every label value comes from a closed set (route names,
// decisions, reasons, status codes), never from the request, so cardinality stays bounded.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { counterSeries } from './counter-series.ts';
import { histogramSeries } from './histogram-series.ts';
import { LabelChildren } from './label-children.ts';
import { NmiMetrics } from './nmi-metrics.ts';
import { decisionLabel, type DecisionLabel, type RequestObserver, type RequestOutcome } from './request-outcome.ts';

const FAST_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class DaemonMetrics implements RequestObserver {
  readonly registry: Registry;
  readonly #requests: Counter<'route' | 'decision' | 'status' | 'reason'>;
  readonly #duration: Histogram<'route' | 'decision'>;
  readonly #upstreamDuration: Histogram<'route'>;
  readonly #upstreamResponses: Counter<'route' | 'status'>;
  readonly #tokenCache: Counter<'result'>;
  readonly #podWaits: Counter<'outcome'>;
  readonly #nmi: NmiMetrics;
  readonly #requestChildren: LabelChildren<{ inc(): void }>;
  readonly #durationChildren: LabelChildren<{ observe(v: number): void }>;
  readonly #tokenCacheChildren: LabelChildren<{ inc(): void }>;

  constructor(registry = new Registry(), options: { defaultMetrics?: boolean } = {}) {
    this.registry = registry;
    // Standard names (process_*, nodejs_*), as generic Node.js dashboards expect them.
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
    const registers = [registry];
    this.#requests = new Counter({
      name: 'podid_nmi_requests_total',
      help: 'Metadata requests answered, by route, decision, HTTP status and refusal reason ("" when not refused)',
      labelNames: ['route', 'decision', 'status', 'reason'], registers,
    });
    this.#duration = new Histogram({
      name: 'podid_nmi_request_duration_seconds',
      help: 'Time from request to answer, including pod wait and upstream',
      labelNames: ['route', 'decision'], buckets: FAST_BUCKETS, registers,
    });
    this.#upstreamDuration = new Histogram({
      name: 'podid_nmi_upstream_duration_seconds',
      help: 'Time spent waiting for the metadata service',
      labelNames: ['route'], buckets: FAST_BUCKETS, registers,
    });
    this.#upstreamResponses = new Counter({
      name: 'podid_nmi_upstream_responses_total',
      help: 'Answers from the metadata service by HTTP status, or timeout/unreachable/invalid/busy/aborted',
      labelNames: ['route', 'status'], registers,
    });
    this.#tokenCache = new Counter({
      name: 'podid_nmi_token_cache_total',
      help: 'Token lookups: hit (served from cache), miss (fetched), shared (joined a fetch in flight)',
      labelNames: ['result'], registers,
    });
    this.#podWaits = new Counter({
      name: 'podid_nmi_pod_wait_total',
      help: 'Token requests from an address no pod held yet, by whether the pod appeared within the wait',
      labelNames: ['outcome'], registers,
    });
    this.#nmi = new NmiMetrics(registry);
    this.#requestChildren = new LabelChildren(4, (values) => counterSeries(this.#requests, ['route', 'decision', 'status', 'reason'], values));
    this.#durationChildren = new LabelChildren(2, (values) => histogramSeries(this.#duration, ['route', 'decision'], values));
    this.#tokenCacheChildren = new LabelChildren(1, (values) => counterSeries(this.#tokenCache, ['result'], values));
    // Series exist from the start, at 0, so that rate() and alerts see the first increment.
    for (const result of ['hit', 'miss', 'shared'] as const) this.#tokenCache.inc({ result }, 0);
    for (const outcome of ['found', 'timeout'] as const) this.#podWaits.inc({ outcome }, 0);
  }

  finished(o: RequestOutcome): void {
    this.request(o.route, decisionLabel(o), o.status, o.reason ?? '', o.seconds);
    if (o.podWait !== undefined) this.podWait(o.podWait);
    if (o.cache !== undefined) this.tokenCache(o.cache);
    if (o.upstream !== undefined && o.cache !== 'hit') this.upstream(o.route, o.upstream.result, o.upstream.seconds);
    this.#nmi.finished(o);
  }

  request(route: string, decision: DecisionLabel, status: number, reason: string, seconds: number): void {
    this.#requestChildren.get(route, decision, status, reason).inc();
    this.#durationChildren.get(route, decision).observe(seconds);
  }

  upstream(route: string, status: number | string, seconds: number): void {
    this.#upstreamResponses.labels(route, String(status)).inc();
    this.#upstreamDuration.labels(route).observe(seconds);
  }

  tokenCache(result: 'hit' | 'miss' | 'shared'): void {
    this.#tokenCacheChildren.get(result).inc();
  }

  podWait(outcome: 'found' | 'timeout'): void {
    this.#podWaits.labels(outcome).inc();
  }

  gauge(name: string, help: string, collect: () => number): void {
    new Gauge({ name, help, registers: [this.registry], collect() { this.set(collect()); } });
  }

  /** A counter whose total is kept elsewhere (on the hot path, as a plain number) and read at each scrape. */
  countedElsewhere(name: string, help: string, total: () => number): void {
    new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(total()); } });
  }
}

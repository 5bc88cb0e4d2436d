// The IMDS budget as Prometheus series. Every label comes from a closed set: priority
// (foreground/background), retry cause, HTTP status class or failure kind, refresh outcome.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { UpstreamFailure } from './imds-client.ts';
import type { RetryCause } from './retry-policy.ts';
import type { Priority, SchedulerObserver, UpstreamScheduler } from './scheduler.ts';
import type { RefreshOutcome } from './token-cache.ts';

const QUEUE_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 15, 30, 60];

export class UpstreamMetrics implements SchedulerObserver {
  readonly #starts: Counter<'priority' | 'attempt'>;
  readonly #queued: Histogram<'priority'>;
  readonly #answers: Counter<'status'>;
  readonly #retries: Counter<'cause'>;
  readonly #refresh: Counter<'outcome'>;

  constructor(registry: Registry, scheduler: () => UpstreamScheduler | undefined) {
    const registers = [registry];
    this.#starts = new Counter({
      name: 'podid_nmi_imds_starts_total',
      help: 'Token requests started towards IMDS by the scheduler, by priority (foreground: a pod waits; background: refresh-ahead) and attempt (first or retry)',
      labelNames: ['priority', 'attempt'], registers,
    });
    this.#queued = new Histogram({
      name: 'podid_nmi_imds_queue_seconds',
      help: 'Time a token fetch waited in the scheduler before each attempt started (a retry counts from its backoff)',
      labelNames: ['priority'], buckets: QUEUE_BUCKETS, registers,
    });
    this.#answers = new Counter({
      name: 'podid_nmi_imds_answers_total',
      help: 'Answers to scheduled token requests: HTTP status (429 = IMDS throttled us) or timeout/unreachable/invalid/aborted',
      labelNames: ['status'], registers,
    });
    this.#retries = new Counter({
      name: 'podid_nmi_imds_retries_total',
      help: 'Token requests retried inside the budget, by cause (429, 5xx, 404, 410)',
      labelNames: ['cause'], registers,
    });
    this.#refresh = new Counter({
      name: 'podid_nmi_token_refresh_total',
      help: 'Refresh-ahead of cached tokens: renewed (a later token), unchanged (IMDS gave the same), failed',
      labelNames: ['outcome'], registers,
    });
    new Gauge({
      name: 'podid_nmi_imds_queue_length',
      help: 'Token fetches waiting for the IMDS budget, by priority',
      labelNames: ['priority'], registers,
      collect() {
        const q = scheduler()?.queued;
        this.set({ priority: 'foreground' }, q?.foreground ?? 0);
        this.set({ priority: 'background' }, q?.background ?? 0);
      },
    });
    new Gauge({
      name: 'podid_nmi_imds_in_flight',
      help: 'Token requests at IMDS now (at most --imds-max-concurrency)',
      registers,
      collect() { this.set(scheduler()?.inFlight ?? 0); },
    });
  }

  started(priority: Priority, retry: boolean, queuedMs: number): void {
    this.#starts.labels(priority, retry ? 'retry' : 'first').inc();
    this.#queued.labels(priority).observe(queuedMs / 1000);
  }

  answered(status: number | UpstreamFailure['kind']): void {
    this.#answers.labels(String(status)).inc();
  }

  retried(cause: RetryCause): void {
    this.#retries.labels(cause).inc();
  }

  refreshed(outcome: RefreshOutcome): void {
    this.#refresh.labels(outcome).inc();
  }
}

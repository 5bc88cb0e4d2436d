// Entra ID's traffic as Prometheus series, through the scheduler's one observer hook. Labels
// from closed sets only: priority, attempt, HTTP status or failure kind, retry cause.
import { Counter, type Registry } from 'prom-client';
import type { UpstreamFailure } from '../imds-client.ts';
import type { RetryCause } from '../retry-policy.ts';
import type { Priority, SchedulerObserver } from '../scheduler.ts';

export class EntraMetrics implements SchedulerObserver {
  readonly #starts: Counter<'priority' | 'attempt'>;
  readonly #answers: Counter<'status'>;
  readonly #retries: Counter<'cause'>;

  readonly #onAnswer: ((status: number | UpstreamFailure['kind']) => void) | undefined;

  /** `onAnswer`: each answer, for the daemon's status (how Entra has been answering lately). */
  constructor(registry: Registry, onAnswer?: (status: number | UpstreamFailure['kind']) => void) {
    this.#onAnswer = onAnswer;
    const registers = [registry];
    this.#starts = new Counter({
      name: 'podid_nmi_entra_starts_total',
      help: 'Token requests started towards Entra ID (service principals, federation), by priority and attempt',
      labelNames: ['priority', 'attempt'], registers,
    });
    this.#answers = new Counter({
      name: 'podid_nmi_entra_answers_total',
      help: 'Answers to token requests towards Entra ID (or a token source\'s own refusal): HTTP status, or timeout/unreachable/invalid/aborted/busy',
      labelNames: ['status'], registers,
    });
    this.#retries = new Counter({
      name: 'podid_nmi_entra_retries_total',
      help: 'Token requests towards Entra ID retried within the pod\'s wait, by cause (429, 5xx, 404, 410)',
      labelNames: ['cause'], registers,
    });
  }

  started(priority: Priority, retry: boolean): void {
    this.#starts.labels(priority, retry ? 'retry' : 'first').inc();
  }

  answered(status: number | UpstreamFailure['kind']): void {
    this.#answers.labels(String(status)).inc();
    this.#onAnswer?.(status);
  }

  retried(cause: RetryCause): void {
    this.#retries.labels(cause).inc();
  }
}

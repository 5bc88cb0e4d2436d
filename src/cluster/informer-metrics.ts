// Informer health as Prometheus series. Labels are bounded: `resource` is one of the four
// watched resources, `type` one of six event kinds, `operation` list or watch.
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import { kubernetesApiErrors } from '../observability/nmi-metrics.ts';
import type { CountedEventType } from './informer-watch.ts';

export interface InformerGaugeSource {
  readonly resource: string;
  objectCount(): number;
  secondsSinceLastEvent(): number;
  isSynced(): boolean;
}

export class InformerMetrics {
  readonly #events: Counter<'resource' | 'type'>;
  readonly #lists: Counter<'resource'>;
  readonly #errors: Counter<'resource' | 'operation'>;
  readonly #rejected: Counter<'resource'>;
  /** NMI's series for the same failures, operation_type `<operation>_<resource>`. */
  readonly #nmiErrors: Counter<'operation_type'>;

  constructor(registry: Registry, sources: () => Iterable<InformerGaugeSource>) {
    const registers = [registry];
    this.#events = new Counter({
      name: 'podid_nmi_informer_events_total',
      help: 'Watch events received, by type (malformed: dropped before reaching the state).',
      labelNames: ['resource', 'type'],
      registers,
    });
    this.#lists = new Counter({
      name: 'podid_nmi_informer_lists_total',
      help: 'Complete lists applied: the initial one, then one per relist (after 410 Gone).',
      labelNames: ['resource'],
      registers,
    });
    this.#errors = new Counter({
      name: 'podid_nmi_informer_errors_total',
      help: 'Failed lists and watches (each followed by a backoff and a retry; state is kept).',
      labelNames: ['resource', 'operation'],
      registers,
    });
    this.#rejected = new Counter({
      name: 'podid_nmi_informer_rejected_objects_total',
      help: 'Objects that could not be converted and were left out of (or removed from) the state.',
      labelNames: ['resource'],
      registers,
    });
    this.#nmiErrors = kubernetesApiErrors(registry);
    new Gauge({
      name: 'podid_nmi_informer_seconds_since_last_event',
      help: 'Seconds since the informer last heard from the API server (event, bookmark or list).',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const s of sources()) this.set({ resource: s.resource }, s.secondsSinceLastEvent());
      },
    });
    new Gauge({
      name: 'podid_nmi_informer_objects',
      help: 'Objects of this resource held in the state.',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const s of sources()) this.set({ resource: s.resource }, s.objectCount());
      },
    });
    new Gauge({
      name: 'podid_nmi_informer_synced',
      help: '1 once the informer has completed its first list.',
      labelNames: ['resource'],
      registers,
      collect() {
        for (const s of sources()) this.set({ resource: s.resource }, s.isSynced() ? 1 : 0);
      },
    });
  }

  /** Creates a resource's series at zero, so dashboards see them before the first error. */
  initResource(resource: string): void {
    for (const type of ['added', 'modified', 'deleted', 'bookmark', 'error', 'malformed'] as const) this.#events.inc({ resource, type }, 0);
    this.#lists.inc({ resource }, 0);
    this.#errors.inc({ resource, operation: 'list' }, 0);
    this.#errors.inc({ resource, operation: 'watch' }, 0);
    this.#nmiErrors.inc({ operation_type: `list_${resource}` }, 0);
    this.#nmiErrors.inc({ operation_type: `watch_${resource}` }, 0);
    this.#rejected.inc({ resource }, 0);
  }

  event(resource: string, type: CountedEventType): void {
    this.#events.inc({ resource, type });
  }
  listed(resource: string): void {
    this.#lists.inc({ resource });
  }
  failed(resource: string, operation: 'list' | 'watch'): void {
    this.#errors.inc({ resource, operation });
    this.#nmiErrors.inc({ operation_type: `${operation}_${resource}` });
  }
  rejected(resource: string, count = 1): void {
    if (count > 0) this.#rejected.inc({ resource }, count);
  }
}

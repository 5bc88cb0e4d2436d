// Warning Events on the pod, written off the request path. finished() only updates a bounded
// table keyed by (pod, reason); a timer writes what changed, one write at a time, each pair at
// most once per interval (the first occurrence creates the Event, later ones patch its count).
// A slow or failing API server delays Events, never an answer; what cannot be kept is counted.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterView } from '../cluster/view.ts';
import type { RequestObserver, RequestOutcome } from '../observability/request-outcome.ts';
import { eventMessage, eventReason } from './event-texts.ts';

export type WriteResult = 'ok' | 'not_found' | 'conflict' | 'failed';

/** Where Events go: the Kubernetes API in the daemon, a fake in tests. */
export interface EventSink {
  create(namespace: string, event: Record<string, unknown>): Promise<WriteResult>;
  patch(namespace: string, name: string, change: Record<string, unknown>): Promise<WriteResult>;
  close(): Promise<void>;
}

export interface PodEventsOptions {
  sink: EventSink;
  view: ClusterView;
  node: string;
  registry: Registry;
  log: Logger;
  /** Least time between two writes for one (pod, reason); default 5 s. */
  minIntervalMs?: number;
  /** (pod, reason) pairs held at once; new pairs beyond it are dropped and counted. Default 1000. */
  maxPairs?: number;
  /** Flush on a timer (default); tests turn it off and call flush(). */
  autoFlush?: boolean;
}

interface Pair {
  readonly pod: PodInfo;
  readonly reason: string;
  latest: RequestOutcome;
  count: number;
  unsent: number;
  readonly firstAt: Date;
  lastAt: Date;
  lastWriteAt: number;
  name: string | undefined;
}

/** Past the API server's default event TTL (1 h) an Event is gone; its pair is forgotten before. */
const FORGET_AFTER_MS = 55 * 60_000;

export class PodEvents implements RequestObserver {
  readonly #o: Required<Omit<PodEventsOptions, 'registry'>>;
  readonly #pairs = new Map<string, Pair>();
  readonly #written: Counter<'result'>;
  readonly #dropped: Counter<'reason'>;
  readonly #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #closed = false;

  constructor(options: PodEventsOptions) {
    this.#o = { minIntervalMs: 5_000, maxPairs: 1_000, autoFlush: true, ...options };
    const registers = [options.registry];
    this.#written = new Counter({
      name: 'podid_nmi_pod_events_total',
      help: 'Event writes to the Kubernetes API: created, patched (an aggregated repeat), failed',
      labelNames: ['result'], registers,
    });
    this.#dropped = new Counter({
      name: 'podid_nmi_pod_events_dropped_total',
      help: 'Refusals that got no Event: table_full (too many (pod, reason) pairs pending)',
      labelNames: ['reason'], registers,
    });
    for (const result of ['created', 'patched', 'failed']) this.#written.inc({ result }, 0);
    this.#dropped.inc({ reason: 'table_full' }, 0);
    const pairs = this.#pairs;
    new Gauge({
      name: 'podid_nmi_pod_events_pending', help: '(pod, reason) pairs with occurrences not yet written', registers,
      collect() { let n = 0; for (const p of pairs.values()) if (p.unsent > 0) n++; this.set(n); },
    });
    if (this.#o.autoFlush) this.#timer = setInterval(() => void this.flush(), Math.max(50, Math.min(1_000, this.#o.minIntervalMs))).unref();
  }

  finished(o: RequestOutcome): void {
    const reason = eventReason(o);
    if (reason === undefined || this.#closed) return;
    const pod = o.pod!;
    const key = `${pod.uid}\0${reason}`;
    let pair = this.#pairs.get(key);
    if (pair === undefined) {
      if (this.#pairs.size >= this.#o.maxPairs) {
        this.#dropped.inc({ reason: 'table_full' });
        return;
      }
      pair = { pod, reason, latest: o, count: 0, unsent: 0, firstAt: new Date(), lastAt: new Date(), lastWriteAt: -Infinity, name: undefined };
      this.#pairs.set(key, pair);
    }
    pair.latest = o;
    pair.count++;
    pair.unsent++;
    pair.lastAt = new Date();
  }

  /** Writes what is due; one pass at a time. Resolves when this pass is done. */
  flush(): Promise<void> {
    this.#flushing ??= this.#pass().finally(() => { this.#flushing = undefined; });
    return this.#flushing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#o.sink.close();
    await this.#flushing;
  }

  async #pass(): Promise<void> {
    const now = performance.now();
    for (const [key, pair] of this.#pairs) {
      if (this.#closed) return;
      if (pair.unsent === 0) {
        if (Date.now() - pair.lastAt.getTime() > FORGET_AFTER_MS) this.#pairs.delete(key);
        continue;
      }
      if (now - pair.lastWriteAt < this.#o.minIntervalMs) continue;
      // An unhealthy API server gets one attempt per pass, not one per pair.
      if (!(await this.#write(pair))) return;
    }
  }

  async #write(pair: Pair): Promise<boolean> {
    pair.lastWriteAt = performance.now();
    const sent = pair.unsent;
    const message = eventMessage(pair.reason, pair.latest, this.#o.view, this.#o.node);
    let result: WriteResult = 'not_found';
    if (pair.name !== undefined) {
      result = await this.#o.sink.patch(pair.pod.namespace, pair.name, { count: pair.count, lastTimestamp: pair.lastAt.toISOString(), message });
      if (result === 'ok') this.#written.inc({ result: 'patched' });
    }
    if (result === 'not_found' || result === 'conflict') {
      // No Event yet, or it expired: a new one carries the whole count so far.
      const name = `${pair.pod.name.slice(0, 200)}.${Date.now().toString(16)}${randomBytes(4).toString('hex')}`;
      result = await this.#o.sink.create(pair.pod.namespace, this.#event(pair, name, message));
      if (result === 'ok') {
        pair.name = name;
        this.#written.inc({ result: 'created' });
      }
    }
    if (result !== 'ok') {
      this.#written.inc({ result: 'failed' });
      this.#o.log.debug({ pod: `${pair.pod.namespace}/${pair.pod.name}`, reason: pair.reason, result }, 'pod Event not written; retrying later');
      return false;
    }
    pair.unsent -= sent;
    return true;
  }

  #event(pair: Pair, name: string, message: string): Record<string, unknown> {
    const { pod } = pair;
    return {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace: pod.namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: pod.namespace, name: pod.name, uid: pod.uid },
      reason: pair.reason,
      message,
      type: 'Warning',
      source: { component: 'podid-nmi', host: this.#o.node },
      reportingComponent: 'podid-nmi',
      reportingInstance: this.#o.node,
      firstTimestamp: pair.firstAt.toISOString(),
      lastTimestamp: pair.lastAt.toISOString(),
      count: pair.count,
    };
  }
}

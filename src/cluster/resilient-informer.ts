// One resource kept in sync with the API server: ListThenWatch (list, then watch from the
// list's resourceVersion, relist on 410), restarted with jittered backoff after each error
// (after which the loop stops), resuming from the last resourceVersion it saw. Each object
// is converted to its slice as it is read, so no raw object outlives its page or event.
// Whatever fails, the index keeps the last known state; only a complete list replaces it.
import type { Logger } from 'pino';
import { Backoff, jittered } from './backoff.ts';
import type { BackoffOptions } from './backoff.ts';
import type { KindSink, ObjectRef } from './index-sinks.ts';
import type { InformerGaugeSource, InformerMetrics } from './informer-metrics.ts';
import { InformerWatch } from './informer-watch.ts';
import type { CountedEventType } from './informer-watch.ts';
import { KubeApiError } from './kube-http.ts';
import type { KubeHttp } from './kube-http.ts';
import { ListThenWatch } from './list-then-watch.ts';
import { releaseBurstMemory } from '../runtime/memory.ts';
import type { ClusterObject } from './objects.ts';

type Raw = Record<string, unknown>;

function isRecord(value: unknown): value is Raw {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface InformerTuning {
  backoff: BackoffOptions;
  /** Until a watch's response headers arrive. */
  connectTimeoutMs: number;
  /** Silence on an open watch before it is reopened (the API server sends a bookmark every minute). */
  idleTimeoutMs: number;
  /** Per page of a list. */
  listTimeoutMs: number;
  pageSize: number;
}

export interface ResourceSpec {
  /** The plural, used as the metrics label and in logs. */
  resource: string;
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** Throws (ConversionError) on a malformed object. */
  convert(raw: Raw): ClusterObject;
  sink: KindSink;
  count(): number;
}

/** What the informers of one source share. */
export interface InformerShared {
  http: KubeHttp;
  tuning: InformerTuning;
  metrics: InformerMetrics;
  log: Logger;
}

/** A watched object as the loop sees it: its key and resourceVersion, and its converted slice. */
interface Item {
  metadata: ObjectRef & { resourceVersion?: string };
  entry?: ClusterObject | undefined;
}

/** Above this, a reconnect after a watch the server closed cleanly is not delayed further. */
const CLEAN_CLOSE_MAX_MS = 2_000;
const REPEAT_WARNING_MS = 60_000;

export class ResilientInformer implements InformerGaugeSource {
  readonly resource: string;
  readonly #spec: ResourceSpec;
  readonly #tuning: InformerTuning;
  readonly #http: KubeHttp;
  readonly #metrics: InformerMetrics;
  readonly #log: Logger;
  readonly #onSynced: () => void;
  readonly #watch: InformerWatch<Item>;
  readonly #listWatch: ListThenWatch<Item>;
  readonly #backoff: Backoff;
  readonly #sleepers = new Set<() => void>();
  #restartTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #synced = false;
  #operation: 'list' | 'watch' = 'list';
  #lastHeard = performance.now();
  #errorsInRow = 0;
  #failingSince = 0;
  #lastWarning = 0;

  constructor(shared: InformerShared, spec: ResourceSpec, onSynced: () => void) {
    const { http, tuning, metrics, log } = shared;
    this.resource = spec.resource;
    this.#spec = spec;
    this.#tuning = tuning;
    this.#http = http;
    this.#metrics = metrics;
    this.#log = log.child({ resource: spec.resource });
    this.#onSynced = onSynced;
    this.#backoff = new Backoff(tuning.backoff);
    metrics.initResource(spec.resource);
    this.#watch = new InformerWatch<Item>(http, {
      connectTimeoutMs: tuning.connectTimeoutMs,
      idleTimeoutMs: tuning.idleTimeoutMs,
      toItem: (type, object) => this.#toItem(type, object),
      onConnect: () => this.#healthy(),
      onEvent: (type, detail) => this.#onEvent(type, detail),
      onInternalError: (err) => this.#onInternalError(err),
    });
    this.#listWatch = new ListThenWatch<Item>(spec.path, spec, this.#watch, {
      list: () => this.#list(),
      upsert: (item) => this.#apply(item),
      remove: (item) => this.#remove(item),
      error: (err) => this.#onError(err),
      delay: (ms) => this.#cleanCloseDelay(ms),
    });
  }

  start(): void {
    if (this.#closed) return;
    this.#listWatch.start().catch((err: unknown) => this.#onInternalError(err));
  }

  isSynced(): boolean {
    return this.#synced;
  }

  objectCount(): number {
    return this.#spec.count();
  }

  /** Listed, and its watch open with no error since: an answering API server means this state is current. */
  isWatching(): boolean {
    return this.#synced && this.#operation === 'watch' && this.#errorsInRow === 0;
  }

  secondsSinceLastEvent(): number {
    return (performance.now() - this.#lastHeard) / 1000;
  }

  /** Stops for good: no request, timer or callback is left behind. */
  async stop(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    for (const wake of [...this.#sleepers]) wake();
    this.#watch.close();
    this.#listWatch.stop();
  }

  /** Lists the whole kind, page by page, and replaces it in the index; returns the list's resourceVersion. */
  async #list(): Promise<string> {
    this.#operation = 'list';
    const started = performance.now();
    try {
      const items: Item[] = [];
      let resourceVersion = '';
      let cont: string | undefined;
      let rejected = 0;
      const onItem = (raw: unknown): void => {
        // Converted as it arrives: the raw object is garbage as soon as this returns.
        const item = isRecord(raw) ? this.#toItem('ADDED', raw) : undefined;
        if (item === undefined) rejected++;
        else items.push(item);
      };
      do {
        const body = await this.#http.getList(this.#spec.path, {
          fieldSelector: this.#spec.fieldSelector,
          labelSelector: this.#spec.labelSelector,
          limit: this.#tuning.pageSize,
          continue: cont,
          // The first list may come from the API server's watch cache (cheap for a DaemonSet
          // on every node); a relist after 410 reads the current state.
          resourceVersion: cont === undefined && !this.#synced ? '0' : undefined,
        }, this.#tuning.listTimeoutMs, onItem);
        if (this.#closed) throw new KubeApiError('informer stopped');
        const page = parseListPage(body, this.#spec.path);
        resourceVersion = page.resourceVersion;
        cont = page.continue;
      } while (cont !== undefined);
      if (rejected > 0) {
        this.#metrics.rejected(this.resource, rejected);
        this.#log.warn({ count: rejected }, 'list held items without metadata.name; skipped');
      }
      this.#spec.sink.replaceAll(items.map((i) => ({ ref: i.metadata, entry: i.entry })));
      this.#metrics.listed(this.resource);
      this.#heard();
      this.#healthy();
      this.#operation = 'watch';
      const ms = Math.round(performance.now() - started);
      if (this.#synced) this.#log.info({ objects: items.length, ms, released: releaseBurstMemory() }, 'relisted; state replaced');
      else {
        this.#synced = true;
        this.#log.info({ objects: items.length, ms }, 'initial list applied');
        this.#onSynced();
      }
      return resourceVersion;
    } catch (err) {
      if (!this.#closed) this.#metrics.failed(this.resource, 'list');
      throw err;
    }
  }

  #toItem(type: 'ADDED' | 'MODIFIED' | 'DELETED', raw: Raw): Item | undefined {
    const meta = raw.metadata;
    if (!isRecord(meta) || typeof meta.name !== 'string' || meta.name === '') return undefined;
    const name = meta.name;
    // Same default as convert.ts, so that the key of a removal matches the key of the upsert.
    const namespace = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
    const resourceVersion = typeof meta.resourceVersion === 'string' ? meta.resourceVersion : undefined;
    let uid = typeof meta.uid === 'string' ? meta.uid : '';
    let entry: ClusterObject | undefined;
    if (type !== 'DELETED') {
      try {
        entry = this.#spec.convert(raw);
        if (entry.kind === 'Pod') uid = entry.object.uid;
      } catch (err) {
        this.#metrics.rejected(this.resource);
        this.#log.warn({ namespace, name, err: (err as Error).message }, 'malformed object ignored; whatever was known under its name is dropped');
      }
    }
    const item: Item = { metadata: { namespace, name, uid }, entry };
    if (resourceVersion !== undefined) item.metadata.resourceVersion = resourceVersion;
    return item;
  }

  /** An added or modified object; one without an entry failed conversion. */
  #apply(item: Item): void {
    const entry = item.entry;
    try {
      if (entry !== undefined) this.#spec.sink.upsert(item.metadata, entry);
      else this.#spec.sink.remove(item.metadata);
    } catch (err) {
      this.#log.error({ err, namespace: item.metadata.namespace, name: item.metadata.name }, 'applying an object to the state failed');
    }
  }

  #remove(item: Item): void {
    try {
      this.#spec.sink.remove(item.metadata);
    } catch (err) {
      this.#log.error({ err, namespace: item.metadata.namespace, name: item.metadata.name }, 'removing an object from the state failed');
    }
  }

  #onEvent(type: CountedEventType, detail: string | undefined): void {
    this.#metrics.event(this.resource, type);
    this.#heard();
    if (type === 'malformed') this.#log.warn({ detail }, 'malformed watch event dropped');
    else if (type === 'error') this.#log.info({ detail }, 'watch ended by an error event (410: history expired, relisting)');
  }

  #onError(err: unknown): void {
    if (this.#closed) return;
    if (this.#operation === 'watch') this.#metrics.failed(this.resource, 'watch');
    this.#errorsInRow++;
    const now = Date.now();
    const fields = { operation: this.#operation, err: describe(err), errorsInRow: this.#errorsInRow };
    if (this.#errorsInRow === 1) {
      this.#failingSince = now;
      this.#lastWarning = now;
      this.#log.warn(fields, 'Kubernetes API request failed; keeping the last known state and retrying');
    } else if (now - this.#lastWarning >= REPEAT_WARNING_MS) {
      this.#lastWarning = now;
      this.#log.warn({ ...fields, failingForS: Math.round((now - this.#failingSince) / 1000) }, 'Kubernetes API still failing');
    } else {
      this.#log.debug(fields, 'Kubernetes API request failed again');
    }
    if (this.#restartTimer !== undefined) return;
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.start();
    }, this.#backoff.next());
  }

  #onInternalError(err: unknown): void {
    if (this.#closed) return;
    // The loop may have stopped half-way; a restart resumes (or relists) from a clean state.
    this.#log.error({ err }, 'informer failed internally; restarting it');
    this.#onError(err);
  }

  #healthy(): void {
    if (this.#errorsInRow > 0) {
      this.#log.info({ errors: this.#errorsInRow, downForS: Math.round((Date.now() - this.#failingSince) / 1000) }, 'Kubernetes API reachable again');
      this.#errorsInRow = 0;
    }
    this.#backoff.reset();
  }

  #heard(): void {
    this.#lastHeard = performance.now();
  }

  /** The loop's pause (ms = 1 s, 2 s, ...) before reopening a watch that ended without events. */
  #cleanCloseDelay(ms: number): Promise<void> {
    const { initialMs, maxMs } = this.#tuning.backoff;
    return this.#sleep(jittered(Math.min(maxMs, CLEAN_CLOSE_MAX_MS, (initialMs * ms) / 1000)));
  }

  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#sleepers.add(wake);
    });
  }
}

function parseListPage(body: unknown, path: string): { resourceVersion: string; continue?: string } {
  if (!isRecord(body) || !Array.isArray(body.items) || !isRecord(body.metadata) || typeof body.metadata.resourceVersion !== 'string') {
    throw new KubeApiError(`list ${path}: response is not a list with a resourceVersion`);
  }
  const cont = body.metadata.continue;
  return {
    resourceVersion: body.metadata.resourceVersion,
    ...(typeof cont === 'string' && cont !== '' ? { continue: cont } : {}),
  };
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return `${err.message}${cause}`;
  }
  return String(err);
}

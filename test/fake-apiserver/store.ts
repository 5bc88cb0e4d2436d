// The fake API server's etcd: objects per resource, one global resourceVersion counter, and
// the event history that watches resume from (until compact() drops it, as etcd compaction
// and the watch cache's bounded window do).
import { randomUUID } from 'node:crypto';
import { RESOURCES } from './resources.ts';
import type { ResourceInfo, ResourceName } from './resources.ts';

export type Obj = Record<string, unknown>;
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly rv: number;
  readonly resource: ResourceInfo;
  readonly type: EventType;
  /** The object after the change (for DELETED: its last state, with the deletion's resourceVersion). */
  readonly object: Obj;
  /** The object before the change (MODIFIED, DELETED). */
  readonly previous?: Obj;
}

export class StoreError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(message: string, code: number, reason: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

function metaOf(obj: Obj): Obj {
  const meta = obj.metadata;
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new StoreError('metadata is required', 422, 'Invalid');
  return meta as Obj;
}

export function keyOf(obj: Obj): string {
  const meta = metaOf(obj);
  const ns = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  if (typeof meta.name !== 'string' || meta.name === '') throw new StoreError('metadata.name is required', 422, 'Invalid');
  return `${ns}/${meta.name}`;
}

export class ObjectStore {
  #rv: number;
  #compactedRv = 0;
  readonly #objects = new Map<string, Map<string, Obj>>();
  #history: StoreEvent[] = [];
  readonly #listeners = new Set<(event: StoreEvent) => void>();

  constructor(initialRv = 1000) {
    this.#rv = initialRv;
    for (const name of Object.keys(RESOURCES)) this.#objects.set(name, new Map());
  }

  get resourceVersion(): number {
    return this.#rv;
  }

  /** Watches asking to resume from before this get 410 Gone. */
  get compactedRv(): number {
    return this.#compactedRv;
  }

  onEvent(listener: (event: StoreEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get(resource: ResourceName, namespace: string, name: string): Obj | undefined {
    const obj = this.#map(resource).get(`${namespace}/${name}`);
    return obj === undefined ? undefined : structuredClone(obj);
  }

  create(resource: ResourceName, input: Obj): Obj {
    const info = RESOURCES[resource]!;
    const obj = structuredClone(input);
    const key = keyOf(obj);
    const map = this.#map(resource);
    if (map.has(key)) throw new StoreError(`${info.plural} "${key}" already exists`, 409, 'AlreadyExists');
    const meta = metaOf(obj);
    meta.namespace = key.slice(0, key.indexOf('/'));
    if (typeof meta.uid !== 'string' || meta.uid === '') meta.uid = randomUUID();
    meta.creationTimestamp ??= new Date().toISOString();
    obj.kind = info.kind;
    obj.apiVersion = info.apiVersion;
    meta.resourceVersion = String(++this.#rv);
    map.set(key, obj);
    this.#emit({ rv: this.#rv, resource: info, type: 'ADDED', object: obj });
    return structuredClone(obj);
  }

  /** Replaces an existing object; its uid and creationTimestamp are kept, as the server does. */
  update(resource: ResourceName, input: Obj): Obj {
    const info = RESOURCES[resource]!;
    const obj = structuredClone(input);
    const key = keyOf(obj);
    const map = this.#map(resource);
    const previous = map.get(key);
    if (previous === undefined) throw new StoreError(`${info.plural} "${key}" not found`, 404, 'NotFound');
    const meta = metaOf(obj);
    const prevMeta = metaOf(previous);
    meta.namespace = prevMeta.namespace;
    meta.uid = prevMeta.uid;
    meta.creationTimestamp = prevMeta.creationTimestamp;
    obj.kind = info.kind;
    obj.apiVersion = info.apiVersion;
    meta.resourceVersion = String(++this.#rv);
    map.set(key, obj);
    this.#emit({ rv: this.#rv, resource: info, type: 'MODIFIED', object: obj, previous });
    return structuredClone(obj);
  }

  /** Reads, changes and writes back one object. */
  modify(resource: ResourceName, namespace: string, name: string, change: (obj: Obj) => void): Obj {
    const obj = this.get(resource, namespace, name);
    if (obj === undefined) throw new StoreError(`${resource} "${namespace}/${name}" not found`, 404, 'NotFound');
    change(obj);
    return this.update(resource, obj);
  }

  delete(resource: ResourceName, namespace: string, name: string): Obj | undefined {
    const info = RESOURCES[resource]!;
    const map = this.#map(resource);
    const key = `${namespace}/${name}`;
    const previous = map.get(key);
    if (previous === undefined) return undefined;
    map.delete(key);
    const obj = structuredClone(previous);
    metaOf(obj).resourceVersion = String(++this.#rv);
    this.#emit({ rv: this.#rv, resource: info, type: 'DELETED', object: obj, previous });
    return structuredClone(obj);
  }

  /** Current objects of a resource in key order (as the API server lists them), not copied. */
  snapshot(resource: ResourceName): Obj[] {
    const map = this.#map(resource);
    return [...map.keys()].sort().map((k) => map.get(k)!);
  }

  /** Events after `rv`, or undefined when history from there has been compacted away. */
  historySince(rv: number): readonly StoreEvent[] | undefined {
    if (rv < this.#compactedRv) return undefined;
    // History is ordered by rv: find the first event after rv by binary search.
    let lo = 0;
    let hi = this.#history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#history[mid]!.rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    return this.#history.slice(lo);
  }

  /** Forgets all history: resuming from any resourceVersion seen so far gets 410. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#history = [];
  }

  #map(resource: string): Map<string, Obj> {
    const map = this.#objects.get(resource);
    if (map === undefined) throw new StoreError(`unknown resource ${resource}`, 404, 'NotFound');
    return map;
  }

  #emit(event: StoreEvent): void {
    this.#history.push(event);
    for (const listener of this.#listeners) listener(event);
  }
}

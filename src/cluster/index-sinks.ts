// How each kind's informer writes into the ClusterIndex. Every operation is idempotent
// (a watch may replay an object the list already applied) and fails closed:
// removing an object removes whatever this key held, whichever uid it had.
import type { Logger } from 'pino';
import type { ClusterIndex } from './cluster-index.ts';
import { EMPTY_SELECTOR_WARNING } from './objects.ts';
import type { AzureIdentityBinding, ClusterObject } from './objects.ts';

export interface ObjectRef {
  readonly namespace: string;
  readonly name: string;
  /** '' when the object did not carry one. */
  readonly uid: string;
}

export interface SinkItem {
  readonly ref: ObjectRef;
  /** Undefined when the object could not be converted: the key then holds nothing. */
  readonly entry?: ClusterObject | undefined;
}

export interface KindSink {
  readonly kind: ClusterObject['kind'];
  /** A full list: afterwards the index holds exactly these objects of this kind. */
  replaceAll(items: readonly SinkItem[]): void;
  upsert(ref: ObjectRef, entry: ClusterObject): void;
  remove(ref: ObjectRef): void;
}

function refKey(ref: { namespace: string; name: string }): string {
  return `${ref.namespace}/${ref.name}`;
}

/** Pods are indexed by uid; a pod deleted and recreated under the same name has a new one. */
export class PodSink implements KindSink {
  readonly kind = 'Pod';
  readonly #index: ClusterIndex;
  readonly #nodeName: string;
  readonly #uidByKey = new Map<string, string>();

  constructor(index: ClusterIndex, nodeName: string) {
    this.#index = index;
    this.#nodeName = nodeName;
  }

  replaceAll(items: readonly SinkItem[]): void {
    this.#uidByKey.clear();
    const entries: ClusterObject[] = [];
    for (const { ref, entry } of items) {
      if (entry?.kind !== 'Pod' || entry.object.nodeName !== this.#nodeName) continue;
      entries.push(entry);
      this.#uidByKey.set(refKey(ref), entry.object.uid);
    }
    this.#index.replaceKind('Pod', entries);
  }

  upsert(ref: ObjectRef, entry: ClusterObject): void {
    // The field selector already filters by node; a pod of another node is not ours to serve.
    if (entry.kind !== 'Pod' || entry.object.nodeName !== this.#nodeName) return this.remove(ref);
    const key = refKey(ref);
    const previous = this.#uidByKey.get(key);
    if (previous !== undefined && previous !== entry.object.uid) this.#index.deletePod(previous);
    this.#uidByKey.set(key, entry.object.uid);
    this.#index.upsertPod(entry.object);
  }

  remove(ref: ObjectRef): void {
    const key = refKey(ref);
    const known = this.#uidByKey.get(key);
    if (known !== undefined) this.#index.deletePod(known);
    if (ref.uid !== '' && ref.uid !== known) this.#index.deletePod(ref.uid);
    this.#uidByKey.delete(key);
  }
}

/** AzureIdentity, AzurePodIdentityException, AzureAssignedIdentity: keyed by namespace/name, nothing else to track. */
export class NamedSink implements KindSink {
  readonly kind: 'AzureIdentity' | 'AzurePodIdentityException' | 'AzureAssignedIdentity';
  readonly #index: ClusterIndex;

  constructor(index: ClusterIndex, kind: NamedSink['kind']) {
    this.#index = index;
    this.kind = kind;
  }
  replaceAll(items: readonly SinkItem[]): void {
    this.#index.replaceKind(this.kind, entriesOf(items, this.kind));
  }
  upsert(ref: ObjectRef, entry: ClusterObject): void {
    if (entry.kind === this.kind) this.#index.upsert(entry);
    else this.remove(ref);
  }
  remove(ref: ObjectRef): void {
    if (this.kind === 'AzureIdentity') this.#index.deleteIdentity(ref.namespace, ref.name);
    else if (this.kind === 'AzureAssignedIdentity') this.#index.deleteAssigned(ref.namespace, ref.name);
    else this.#index.deleteException(ref.namespace, ref.name);
  }
}

/** Bindings, plus a warning (once per object) about empty selectors, which NMI treated as "every unlabelled pod". */
export class BindingSink implements KindSink {
  readonly kind = 'AzureIdentityBinding';
  readonly #index: ClusterIndex;
  readonly #log: Logger;
  readonly #warned = new Set<string>();

  constructor(index: ClusterIndex, log: Logger) {
    this.#index = index;
    this.#log = log;
  }

  replaceAll(items: readonly SinkItem[]): void {
    const entries = entriesOf(items, 'AzureIdentityBinding');
    this.#index.replaceKind('AzureIdentityBinding', entries);
    const present = new Set<string>();
    for (const entry of entries) {
      if (entry.kind !== 'AzureIdentityBinding') continue;
      present.add(refKey(entry.object));
      this.#check(entry.object);
    }
    for (const key of this.#warned) if (!present.has(key)) this.#warned.delete(key);
  }

  upsert(ref: ObjectRef, entry: ClusterObject): void {
    if (entry.kind !== 'AzureIdentityBinding') return this.remove(ref);
    this.#index.upsertBinding(entry.object);
    this.#check(entry.object);
  }

  remove(ref: ObjectRef): void {
    this.#index.deleteBinding(ref.namespace, ref.name);
    this.#warned.delete(refKey(ref));
  }

  #check(binding: AzureIdentityBinding): void {
    const key = refKey(binding);
    if (binding.selector !== '') {
      this.#warned.delete(key);
      return;
    }
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#log.warn({ namespace: binding.namespace, binding: binding.name, azureIdentity: binding.azureIdentity }, EMPTY_SELECTOR_WARNING);
  }
}

function entriesOf(items: readonly SinkItem[], kind: ClusterObject['kind']): ClusterObject[] {
  const out: ClusterObject[] = [];
  for (const { entry } of items) if (entry?.kind === kind) out.push(entry);
  return out;
}

// Incremental indexes over the cluster objects, so that every lookup on the request path is
// a hash probe whatever the number of pods, bindings and identities. Sources call the
// mutators on every event; the request path only reads.
import { isInterceptable } from './objects.ts';
import type {
  AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, ClusterObject, PodInfo,
} from './objects.ts';
import type { ClusterView, ObjectCounts } from './view.ts';
import { PodDirectory } from './pod-directory.ts';

const NONE: readonly never[] = Object.freeze([]);

type Waiter = () => void;

function key(namespace: string, name: string): string {
  return `${namespace}\u0000${name}`;
}

/** Map of key -> list, where an empty list is removed so the map only holds live keys. */
class MultiMap<V> {
  readonly #map = new Map<string, V[]>();
  get(k: string): readonly V[] {
    return this.#map.get(k) ?? NONE;
  }
  add(k: string, v: V): void {
    const list = this.#map.get(k);
    if (list === undefined) this.#map.set(k, [v]);
    else list.push(v);
  }
  remove(k: string, match: (v: V) => boolean): void {
    const list = this.#map.get(k);
    if (list === undefined) return;
    const i = list.findIndex(match);
    if (i === -1) return;
    if (list.length === 1) this.#map.delete(k);
    else list.splice(i, 1);
  }
  get size(): number {
    return this.#map.size;
  }
  clear(): void {
    this.#map.clear();
  }
}

/**
 * Maps keyed by (namespace, name), as two levels. A joined key string per entry would cost
 * about 50 bytes each (a cons string and its prefix): 3 MiB for 20,000 identities and
 * bindings. Here the keys are the strings the objects already hold, and namespaces are few.
 */
class Namespaced<V> {
  readonly #byNs = new Map<string, Map<string, V>>();
  #size = 0;
  get size(): number {
    return this.#size;
  }
  get(namespace: string, name: string): V | undefined {
    return this.#byNs.get(namespace)?.get(name);
  }
  set(namespace: string, name: string, v: V): void {
    let names = this.#byNs.get(namespace);
    if (names === undefined) this.#byNs.set(namespace, (names = new Map()));
    const before = names.size;
    names.set(name, v);
    this.#size += names.size - before;
  }
  delete(namespace: string, name: string): void {
    const names = this.#byNs.get(namespace);
    if (names === undefined || !names.delete(name)) return;
    this.#size--;
    if (names.size === 0) this.#byNs.delete(namespace);
  }
  *values(): IterableIterator<V> {
    for (const names of this.#byNs.values()) yield* names.values();
  }
  clear(): void {
    this.#byNs.clear();
    this.#size = 0;
  }
}

/** Lists keyed by (namespace, name), as two levels (see Namespaced); empty lists are removed. */
class NamespacedMultiMap<V> {
  readonly #byNs = new Map<string, MultiMap<V>>();
  get(namespace: string, name: string): readonly V[] {
    return this.#byNs.get(namespace)?.get(name) ?? NONE;
  }
  add(namespace: string, name: string, v: V): void {
    let names = this.#byNs.get(namespace);
    if (names === undefined) this.#byNs.set(namespace, (names = new MultiMap()));
    names.add(name, v);
  }
  remove(namespace: string, name: string, match: (v: V) => boolean): void {
    const names = this.#byNs.get(namespace);
    if (names === undefined) return;
    names.remove(name, match);
    if (names.size === 0) this.#byNs.delete(namespace);
  }
  clear(): void {
    this.#byNs.clear();
  }
}

/** One-shot wake-ups by key: a parked request registers, the event that concerns the key wakes it. */
class Wakers {
  readonly #byKey = new Map<string, Set<Waiter>>();
  on(k: string, wake: Waiter): () => void {
    let set = this.#byKey.get(k);
    if (set === undefined) this.#byKey.set(k, (set = new Set()));
    set.add(wake);
    return () => {
      const current = this.#byKey.get(k);
      if (current === undefined) return;
      current.delete(wake);
      if (current.size === 0) this.#byKey.delete(k);
    };
  }
  wake(k: string): void {
    const set = this.#byKey.get(k);
    if (set === undefined) return;
    this.#byKey.delete(k);
    for (const wake of set) wake();
  }
}

export class ClusterIndex implements ClusterView {
  readonly #podsByUid = new Map<string, PodInfo>();
  readonly #podsByIp = new MultiMap<PodInfo>();
  readonly #identities = new Namespaced<AzureIdentity>();
  readonly #bindings = new Namespaced<AzureIdentityBinding>();
  readonly #bindingsBySelector = new NamespacedMultiMap<AzureIdentityBinding>();
  /** Standard mode: MIC matches a label against bindings of every namespace. */
  readonly #bindingsBySelectorAnyNs = new MultiMap<AzureIdentityBinding>();
  readonly #exceptions = new Namespaced<AzurePodIdentityException>();
  readonly #exceptionsByNs = new MultiMap<AzurePodIdentityException>();
  readonly #assigned = new Namespaced<AzureAssignedIdentity>();
  readonly #assignedByPod = new NamespacedMultiMap<AzureAssignedIdentity>();
  readonly #ipWaiters = new Wakers();
  readonly #assignmentWaiters = new Wakers();
  /** Live pods by UID and name, hostNetwork ones included (socket-cgroup attribution, /host/token). */
  readonly pods = new PodDirectory();
  #generation = 0;

  /**
   * Two reads at the same generation saw the same objects, so what is derived from them (the
   * decision's per-pod memo) holds until it moves. Every write bumps it first, and again right
   * before it wakes a parked request, so that a request woken mid-write cannot keep a result
   * the rest of the write changes. Writes that change nothing bump it too: a spurious miss,
   * never a stale hit.
   */
  get generation(): number {
    return this.#generation;
  }

  // ---- reads (request path) ----

  podsAt(ip: string): readonly PodInfo[] {
    return this.#podsByIp.get(ip);
  }

  podByUid(uid: string): PodInfo | undefined {
    return this.pods.byUid(uid);
  }

  podNamed(namespace: string, name: string): PodInfo | undefined {
    return this.pods.byName(namespace, name);
  }

  bindingsFor(namespace: string, selector: string): readonly AzureIdentityBinding[] {
    return this.#bindingsBySelector.get(namespace, selector);
  }

  identity(namespace: string, name: string): AzureIdentity | undefined {
    return this.#identities.get(namespace, name);
  }

  exceptionsIn(namespace: string): readonly AzurePodIdentityException[] {
    return this.#exceptionsByNs.get(namespace);
  }

  bindingsSelecting(selector: string): readonly AzureIdentityBinding[] {
    return this.#bindingsBySelectorAnyNs.get(selector);
  }

  assignedTo(podNamespace: string, podName: string): readonly AzureAssignedIdentity[] {
    return this.#assignedByPod.get(podNamespace, podName);
  }

  /** Every live pod held (for `nmi explain`, which names a pod instead of an address). */
  livePods(): Iterable<PodInfo> {
    return this.#podsByUid.values();
  }

  counts(): ObjectCounts {
    return {
      pods: this.#podsByUid.size,
      identities: this.#identities.size,
      bindings: this.#bindings.size,
      exceptions: this.#exceptions.size,
      assignedIdentities: this.#assigned.size,
    };
  }

  /** Calls `wake` once when a pod claims `ip`; returns the function that cancels the wait. */
  onIp(ip: string, wake: Waiter): () => void {
    return this.#ipWaiters.on(ip, wake);
  }

  /** Calls `wake` once when an AzureAssignedIdentity of this pod arrives, changes or goes. */
  onAssignment(podNamespace: string, podName: string, wake: Waiter): () => void {
    return this.#assignmentWaiters.on(key(podNamespace, podName), wake);
  }

  // ---- writes (sources) ----

  upsertPod(pod: PodInfo): void {
    this.#generation++;
    this.pods.upsert(pod);
    this.deletePod(pod.uid, false);
    // Only live pods are held: a Succeeded pod that still lists its IP must not shadow,
    // nor conflict with, the new pod that got the address.
    if (!isInterceptable(pod)) return;
    this.#podsByUid.set(pod.uid, pod);
    for (const ip of pod.ips) {
      this.#podsByIp.add(ip, pod);
      this.#generation++;
      this.#ipWaiters.wake(ip);
    }
  }

  deletePod(uid: string, fromDirectory = true): void {
    this.#generation++;
    if (fromDirectory) this.pods.delete(uid);
    const old = this.#podsByUid.get(uid);
    if (old === undefined) return;
    this.#podsByUid.delete(uid);
    for (const ip of old.ips) this.#podsByIp.remove(ip, (p) => p.uid === uid);
  }

  upsertIdentity(identity: AzureIdentity): void {
    this.#generation++;
    this.#identities.set(identity.namespace, identity.name, identity);
  }

  deleteIdentity(namespace: string, name: string): void {
    this.#generation++;
    this.#identities.delete(namespace, name);
  }

  upsertBinding(binding: AzureIdentityBinding): void {
    this.#generation++;
    this.deleteBinding(binding.namespace, binding.name);
    this.#bindings.set(binding.namespace, binding.name, binding);
    this.#bindingsBySelector.add(binding.namespace, binding.selector, binding);
    this.#bindingsBySelectorAnyNs.add(binding.selector, binding);
  }

  deleteBinding(namespace: string, name: string): void {
    this.#generation++;
    const old = this.#bindings.get(namespace, name);
    if (old === undefined) return;
    this.#bindings.delete(namespace, name);
    this.#bindingsBySelector.remove(namespace, old.selector, (b) => b === old);
    this.#bindingsBySelectorAnyNs.remove(old.selector, (b) => b === old);
  }

  upsertException(exception: AzurePodIdentityException): void {
    this.#generation++;
    this.deleteException(exception.namespace, exception.name);
    this.#exceptions.set(exception.namespace, exception.name, exception);
    this.#exceptionsByNs.add(exception.namespace, exception);
  }

  deleteException(namespace: string, name: string): void {
    this.#generation++;
    const old = this.#exceptions.get(namespace, name);
    if (old === undefined) return;
    this.#exceptions.delete(namespace, name);
    this.#exceptionsByNs.remove(namespace, (e) => e === old);
  }

  upsertAssigned(assigned: AzureAssignedIdentity): void {
    this.#generation++;
    this.deleteAssigned(assigned.namespace, assigned.name);
    this.#assigned.set(assigned.namespace, assigned.name, assigned);
    this.#assignedByPod.add(assigned.podNamespace, assigned.pod, assigned);
    this.#generation++;
    this.#assignmentWaiters.wake(key(assigned.podNamespace, assigned.pod));
  }

  deleteAssigned(namespace: string, name: string): void {
    this.#generation++;
    const old = this.#assigned.get(namespace, name);
    if (old === undefined) return;
    this.#assigned.delete(namespace, name);
    this.#assignedByPod.remove(old.podNamespace, old.pod, (a) => a === old);
    this.#generation++;
    this.#assignmentWaiters.wake(key(old.podNamespace, old.pod));
  }

  upsert(entry: ClusterObject): void {
    switch (entry.kind) {
      case 'Pod': return this.upsertPod(entry.object);
      case 'AzureIdentity': return this.upsertIdentity(entry.object);
      case 'AzureIdentityBinding': return this.upsertBinding(entry.object);
      case 'AzurePodIdentityException': return this.upsertException(entry.object);
      case 'AzureAssignedIdentity': return this.upsertAssigned(entry.object);
    }
  }

  /** Replaces every object of one kind, as a relist does: whatever is not in `objects` is deleted. */
  replaceKind(kind: ClusterObject['kind'], objects: readonly ClusterObject[]): void {
    this.#generation++;
    switch (kind) {
      case 'Pod':
        for (const uid of [...this.#podsByUid.keys()]) this.deletePod(uid);
        this.pods.clear();
        break;
      case 'AzureIdentity':
        this.#identities.clear();
        break;
      case 'AzureIdentityBinding':
        this.#bindings.clear();
        this.#bindingsBySelector.clear();
        this.#bindingsBySelectorAnyNs.clear();
        break;
      case 'AzurePodIdentityException':
        this.#exceptions.clear();
        this.#exceptionsByNs.clear();
        break;
      case 'AzureAssignedIdentity':
        // One by one, so that requests parked for an assignment see it go.
        for (const a of [...this.#assigned.values()]) this.deleteAssigned(a.namespace, a.name);
        break;
    }
    for (const entry of objects) if (entry.kind === kind) this.upsert(entry);
  }

  /** Bindings that can never match a labelled pod; NMI let them grant every unlabelled pod. */
  bindingsWithEmptySelector(): AzureIdentityBinding[] {
    return [...this.#bindings.values()].filter((b) => b.selector === '');
  }
}

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
  clear(): void {
    this.#map.clear();
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
  readonly #identities = new Map<string, AzureIdentity>();
  readonly #bindings = new Map<string, AzureIdentityBinding>();
  readonly #bindingsBySelector = new MultiMap<AzureIdentityBinding>();
  /** Standard mode: MIC matches a label against bindings of every namespace. */
  readonly #bindingsBySelectorAnyNs = new MultiMap<AzureIdentityBinding>();
  readonly #exceptions = new Map<string, AzurePodIdentityException>();
  readonly #exceptionsByNs = new MultiMap<AzurePodIdentityException>();
  readonly #assigned = new Map<string, AzureAssignedIdentity>();
  readonly #assignedByPod = new MultiMap<AzureAssignedIdentity>();
  readonly #ipWaiters = new Wakers();
  readonly #assignmentWaiters = new Wakers();
  /** Live pods by UID and name, hostNetwork ones included (socket-cgroup attribution, /host/token). */
  readonly pods = new PodDirectory();

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
    return this.#bindingsBySelector.get(key(namespace, selector));
  }

  identity(namespace: string, name: string): AzureIdentity | undefined {
    return this.#identities.get(key(namespace, name));
  }

  exceptionsIn(namespace: string): readonly AzurePodIdentityException[] {
    return this.#exceptionsByNs.get(namespace);
  }

  bindingsSelecting(selector: string): readonly AzureIdentityBinding[] {
    return this.#bindingsBySelectorAnyNs.get(selector);
  }

  assignedTo(podNamespace: string, podName: string): readonly AzureAssignedIdentity[] {
    return this.#assignedByPod.get(key(podNamespace, podName));
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
    this.pods.upsert(pod);
    this.deletePod(pod.uid, false);
    // Only live pods are held: a Succeeded pod that still lists its IP must not shadow,
    // nor conflict with, the new pod that got the address.
    if (!isInterceptable(pod)) return;
    this.#podsByUid.set(pod.uid, pod);
    for (const ip of pod.ips) {
      this.#podsByIp.add(ip, pod);
      this.#ipWaiters.wake(ip);
    }
  }

  deletePod(uid: string, fromDirectory = true): void {
    if (fromDirectory) this.pods.delete(uid);
    const old = this.#podsByUid.get(uid);
    if (old === undefined) return;
    this.#podsByUid.delete(uid);
    for (const ip of old.ips) this.#podsByIp.remove(ip, (p) => p.uid === uid);
  }

  upsertIdentity(identity: AzureIdentity): void {
    this.#identities.set(key(identity.namespace, identity.name), identity);
  }

  deleteIdentity(namespace: string, name: string): void {
    this.#identities.delete(key(namespace, name));
  }

  upsertBinding(binding: AzureIdentityBinding): void {
    this.deleteBinding(binding.namespace, binding.name);
    const k = key(binding.namespace, binding.name);
    this.#bindings.set(k, binding);
    this.#bindingsBySelector.add(key(binding.namespace, binding.selector), binding);
    this.#bindingsBySelectorAnyNs.add(binding.selector, binding);
  }

  deleteBinding(namespace: string, name: string): void {
    const k = key(namespace, name);
    const old = this.#bindings.get(k);
    if (old === undefined) return;
    this.#bindings.delete(k);
    this.#bindingsBySelector.remove(key(namespace, old.selector), (b) => b === old);
    this.#bindingsBySelectorAnyNs.remove(old.selector, (b) => b === old);
  }

  upsertException(exception: AzurePodIdentityException): void {
    this.deleteException(exception.namespace, exception.name);
    this.#exceptions.set(key(exception.namespace, exception.name), exception);
    this.#exceptionsByNs.add(exception.namespace, exception);
  }

  deleteException(namespace: string, name: string): void {
    const k = key(namespace, name);
    const old = this.#exceptions.get(k);
    if (old === undefined) return;
    this.#exceptions.delete(k);
    this.#exceptionsByNs.remove(namespace, (e) => e === old);
  }

  upsertAssigned(assigned: AzureAssignedIdentity): void {
    this.deleteAssigned(assigned.namespace, assigned.name);
    this.#assigned.set(key(assigned.namespace, assigned.name), assigned);
    const podKey = key(assigned.podNamespace, assigned.pod);
    this.#assignedByPod.add(podKey, assigned);
    this.#assignmentWaiters.wake(podKey);
  }

  deleteAssigned(namespace: string, name: string): void {
    const k = key(namespace, name);
    const old = this.#assigned.get(k);
    if (old === undefined) return;
    this.#assigned.delete(k);
    const podKey = key(old.podNamespace, old.pod);
    this.#assignedByPod.remove(podKey, (a) => a === old);
    this.#assignmentWaiters.wake(podKey);
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

// Every live pod of this node by UID and by namespace/name, hostNetwork pods included: the
// IP index leaves those out (they share the node's address), but socket-cgroup attribution
// and /host/token name pods by UID or by name, whatever their network.
import type { PodInfo } from './objects.ts';

function key(namespace: string, name: string): string {
  return `${namespace}\u0000${name}`;
}

export function isLive(pod: PodInfo): boolean {
  return pod.phase === 'Running' || pod.phase === 'Pending';
}

export class PodDirectory {
  readonly #byUid = new Map<string, PodInfo>();
  readonly #byName = new Map<string, PodInfo>();

  byUid(uid: string): PodInfo | undefined {
    return this.#byUid.get(uid);
  }

  byName(namespace: string, name: string): PodInfo | undefined {
    return this.#byName.get(key(namespace, name));
  }

  upsert(pod: PodInfo): void {
    this.delete(pod.uid);
    if (!isLive(pod)) return;
    this.#byUid.set(pod.uid, pod);
    this.#byName.set(key(pod.namespace, pod.name), pod);
  }

  delete(uid: string): void {
    const old = this.#byUid.get(uid);
    if (old === undefined) return;
    this.#byUid.delete(uid);
    // A newer pod of the same name (a StatefulSet replacement) may already hold the name.
    const k = key(old.namespace, old.name);
    if (this.#byName.get(k)?.uid === uid) this.#byName.delete(k);
  }

  clear(): void {
    this.#byUid.clear();
    this.#byName.clear();
  }
}

// The part of a ClusterState that every source shares: reads go to one ClusterIndex.
// A source extends this, fills `index` from its events, and says when it is ready.
import { ClusterIndex } from './cluster-index.ts';
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, PodInfo } from './objects.ts';
import type { ClusterState, ObjectCounts } from './view.ts';
import { waitForAssignment, waitForIp } from './wait-for-ip.ts';

export abstract class IndexedClusterState implements ClusterState {
  readonly index = new ClusterIndex();

  abstract isReady(): boolean;
  abstract whenReady(signal?: AbortSignal): Promise<void>;
  abstract close(): Promise<void>;

  get generation(): number {
    return this.index.generation;
  }
  podsAt(ip: string): readonly PodInfo[] {
    return this.index.podsAt(ip);
  }
  bindingsFor(namespace: string, selector: string): readonly AzureIdentityBinding[] {
    return this.index.bindingsFor(namespace, selector);
  }
  identity(namespace: string, name: string): AzureIdentity | undefined {
    return this.index.identity(namespace, name);
  }
  exceptionsIn(namespace: string): readonly AzurePodIdentityException[] {
    return this.index.exceptionsIn(namespace);
  }
  podByUid(uid: string): PodInfo | undefined {
    return this.index.podByUid(uid);
  }
  podNamed(namespace: string, name: string): PodInfo | undefined {
    return this.index.podNamed(namespace, name);
  }
  bindingsSelecting(selector: string): readonly AzureIdentityBinding[] {
    return this.index.bindingsSelecting(selector);
  }
  assignedTo(podNamespace: string, podName: string): readonly AzureAssignedIdentity[] {
    return this.index.assignedTo(podNamespace, podName);
  }
  waitForIp(ip: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return waitForIp(this.index, ip, timeoutMs, signal);
  }
  waitForAssignment(podNamespace: string, podName: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return waitForAssignment(this.index, podNamespace, podName, timeoutMs, signal);
  }
  counts(): ObjectCounts {
    return this.index.counts();
  }
}

// The one read-only interface through which the request path sees cluster state.
// Two sources fill it: the manifests file (file-source.ts) and the informers (informer-source.ts).
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, PodInfo } from './objects.ts';

export interface ClusterView {
  /** Live, interceptable pods that claim this canonical IP: normally one; two or more is a conflict. */
  podsAt(ip: string): readonly PodInfo[];
  /** Bindings of this namespace whose selector is exactly `selector`. */
  bindingsFor(namespace: string, selector: string): readonly AzureIdentityBinding[];
  identity(namespace: string, name: string): AzureIdentity | undefined;
  exceptionsIn(namespace: string): readonly AzurePodIdentityException[];
  /** A live pod of this node by UID, hostNetwork pods included. */
  podByUid(uid: string): PodInfo | undefined;
  /** A live pod of this node by namespace and name, hostNetwork pods included. */
  podNamed(namespace: string, name: string): PodInfo | undefined;
  /** Bindings of every namespace whose selector is exactly `selector` (standard mode: MIC matches across namespaces). */
  bindingsSelecting(selector: string): readonly AzureIdentityBinding[];
  /**
   * Moves on every change to what this view returns; equal values mean equal answers. Views
   * without it (test doubles, one-off views) are read afresh by every decision.
   */
  readonly generation?: number;
  /** Standard mode: MIC's AzureAssignedIdentities that name this pod. */
  assignedTo(podNamespace: string, podName: string): readonly AzureAssignedIdentity[];
}

export interface ObjectCounts {
  pods: number;
  identities: number;
  bindings: number;
  exceptions: number;
  assignedIdentities: number;
}

/** What the daemon holds: the view, plus readiness and the wait that covers the pod-start race. */
export interface ClusterState extends ClusterView {
  /** True once every source has delivered a complete first state. */
  isReady(): boolean;
  /** Resolves once ready; rejects when `signal` aborts or the state closes first. */
  whenReady(signal?: AbortSignal): Promise<void>;
  /**
   * Resolves true as soon as some pod claims `ip`, false after `timeoutMs` or when `signal` aborts.
   * Woken by the event that brings the pod, never by polling.
   */
  waitForIp(ip: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * Standard mode: resolves true when an AzureAssignedIdentity of this pod arrives, changes or
   * goes, false after `timeoutMs` or when `signal` aborts. Woken by the event, never by polling.
   */
  waitForAssignment(podNamespace: string, podName: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  counts(): ObjectCounts;
  close(): Promise<void>;
  /** How recently the API server confirmed this state; absent for sources that cannot go stale (a file). */
  readonly freshness?: StateFreshness;
}

export interface StateFreshness {
  /** Seconds since the least recently confirmed resource was last confirmed current. */
  ageSeconds(): number;
}

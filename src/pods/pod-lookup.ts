// Which pod is calling: by the socket's remote address, through the cluster state's IP index.
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterState } from '../cluster/view.ts';

export type PodLookup =
  | { readonly kind: 'pod'; readonly pod: PodInfo }
  | { readonly kind: 'refuse'; readonly reason: 'pod_unknown' | 'pod_ip_conflict' };

const UNKNOWN: PodLookup = { kind: 'refuse', reason: 'pod_unknown' };
const CONFLICT: PodLookup = { kind: 'refuse', reason: 'pod_ip_conflict' };

/** Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; the index holds plain a.b.c.d. */
export function sourceIp(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined) return '';
  return remoteAddress.startsWith('::ffff:') && remoteAddress.indexOf('.') !== -1 ? remoteAddress.slice(7) : remoteAddress;
}

/** Undefined when no pod holds the address yet (the caller may wait for it). */
export function lookupPodNow(state: Pick<ClusterState, 'podsAt'>, ip: string): PodLookup | undefined {
  const pods = state.podsAt(ip);
  if (pods.length === 1) return { kind: 'pod', pod: pods[0]! };
  // Two live pods on one address (IP reuse while the old one terminates): whichever we picked
  // could be the wrong tenant, so neither gets an identity until one is gone.
  if (pods.length > 1) return CONFLICT;
  return undefined;
}

/** Resolves the pod, parking the request up to `waitMs` for the pod-start race. */
export async function lookupPod(state: ClusterState, ip: string, waitMs: number, signal?: AbortSignal): Promise<PodLookup> {
  const now = lookupPodNow(state, ip);
  if (now !== undefined || ip === '') return now ?? UNKNOWN;
  await state.waitForIp(ip, waitMs, signal);
  return lookupPodNow(state, ip) ?? UNKNOWN;
}

// Which pod is calling: by the socket's remote address, through the cluster state's IP index.
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterState } from '../cluster/view.ts';
import { canPark } from '../cluster/wait-for-ip.ts';

export type PodLookup =
  | { readonly kind: 'pod'; readonly pod: PodInfo }
  | { readonly kind: 'refuse'; readonly reason: 'pod_unknown' | 'pod_ip_conflict' | 'pod_wait_over_share' | 'state_not_ready' };

const UNKNOWN: PodLookup = { kind: 'refuse', reason: 'pod_unknown' };
const CONFLICT: PodLookup = { kind: 'refuse', reason: 'pod_ip_conflict' };
const WAIT_OVER_SHARE: PodLookup = { kind: 'refuse', reason: 'pod_wait_over_share' };
const NOT_READY: PodLookup = { kind: 'refuse', reason: 'state_not_ready' };

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
  if (waitMs > 0 && !canPark(ip)) return WAIT_OVER_SHARE;
  await state.waitForIp(ip, waitMs, signal);
  return lookupPodNow(state, ip) ?? UNKNOWN;
}

/**
 * The live pod of this node behind a request, for every route: right after a restart the old
 * rules already send pods here, and deciding from a half-listed state would give a bound pod a
 * final "binding missing", so a short wait for readiness comes first. `onWait` observes the
 * pod-start wait, when there was one.
 */
export async function findCallingPod(
  state: ClusterState, ip: string, waitMs: number, signal: AbortSignal, onWait?: (found: boolean) => void,
): Promise<PodLookup> {
  if (!state.isReady() && !(await readyWithin(state, waitMs, signal))) return NOT_READY;
  const waited = state.podsAt(ip).length === 0;
  const found = await lookupPod(state, ip, waitMs, signal);
  if (waited && !signal.aborted && found !== WAIT_OVER_SHARE) onWait?.(found.kind === 'pod');
  return found;
}

function readyWithin(state: ClusterState, ms: number, signal: AbortSignal): Promise<boolean> {
  return state.whenReady(AbortSignal.any([signal, AbortSignal.timeout(ms)])).then(() => true, () => false);
}

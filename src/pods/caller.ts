// Who a share belongs to: the calling pod when the address names exactly one, else the address
// itself. A pod with an IPv4 and an IPv6 address is one caller; an address no pod holds (yet) is a
// stranger, and strangers together get a bounded part of what is shared, so no address range
// can crowd out the pods the node runs.
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterView } from '../cluster/view.ts';

export interface Caller {
  /** `pod:<uid>` or `ip:<address>`: a share's key, never shown to anyone. */
  readonly key: string;
  readonly known: boolean;
}

export function callerAt(state: Pick<ClusterView, 'podsAt'>, ip: string): Caller {
  const pods = state.podsAt(ip);
  if (pods.length === 1) return podCallerOf(pods[0]!);
  return { key: `ip:${ip}`, known: false };
}

/** One Caller per pod object (the state replaces the object when the pod changes): asked on every request. */
const byPod = new WeakMap<PodInfo, Caller>();

export function podCallerOf(pod: PodInfo): Caller {
  let caller = byPod.get(pod);
  if (caller === undefined) byPod.set(pod, caller = podCaller(pod.uid, true));
  return caller;
}

/** A pod found by its socket's cgroup (a hostNetwork pod): its UID is its share's key. */
export function podCaller(uid: string, known: boolean): Caller {
  return { key: `pod:${uid}`, known };
}

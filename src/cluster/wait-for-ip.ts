// Parked requests. The pod-start race: a new pod may call IMDS before its IP reaches the
// index. Standard mode: a pod may call before MIC has assigned its identity. The request
// parks until the event that concerns it wakes it, or the bound runs out.
import type { ClusterIndex } from './cluster-index.ts';

/** Upper bound on parked requests of both kinds; past it a request is not parked at all. */
export const MAX_PARKED = 4096;
/** One caller's share (an address, or a pod awaiting MIC): an SDK makes a handful of calls at start, not hundreds. */
export const MAX_PARKED_PER_CALLER = 8;

let parked = 0;
const parkedBy = new Map<string, number>();

export function parkedCount(): number {
  return parked;
}

/** Whether a request from `ip` may park now (its address's share and the total both have room). */
export function canPark(ip: string): boolean {
  return canParkKey(`ip:${ip}`);
}

function canParkKey(key: string): boolean {
  return parked < MAX_PARKED && (parkedBy.get(key) ?? 0) < MAX_PARKED_PER_CALLER;
}

export function waitForIp(index: ClusterIndex, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (index.podsAt(ip).length > 0) return Promise.resolve(true);
  return park(`ip:${ip}`, (wake) => index.onIp(ip, wake), timeoutMs, signal);
}

export function waitForAssignment(index: ClusterIndex, podNamespace: string, podName: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  return park(`pod:${podNamespace}/${podName}`, (wake) => index.onAssignment(podNamespace, podName, wake), timeoutMs, signal);
}

/** Resolves true when woken, false on timeout, abort, or when the parking (or the caller's share of it) is full. */
function park(key: string, subscribe: (wake: () => void) => () => void, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (timeoutMs <= 0 || !canParkKey(key) || signal?.aborted === true) return Promise.resolve(false);
  parked++;
  parkedBy.set(key, (parkedBy.get(key) ?? 0) + 1);
  return new Promise<boolean>((resolve) => {
    let done = false;
    const finish = (found: boolean): void => {
      if (done) return;
      done = true;
      parked--;
      const left = parkedBy.get(key)! - 1;
      if (left === 0) parkedBy.delete(key);
      else parkedBy.set(key, left);
      clearTimeout(timer);
      cancel();
      signal?.removeEventListener('abort', onAbort);
      resolve(found);
    };
    const onAbort = (): void => finish(false);
    const cancel = subscribe(() => finish(true));
    const timer = setTimeout(finish, timeoutMs, false);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// Parked requests. The pod-start race: a new pod may call IMDS before its IP reaches the
// index. Standard mode: a pod may call before MIC has assigned its identity. The request
// parks until the event that concerns it wakes it, or the bound runs out.
import type { ClusterIndex } from './cluster-index.ts';

/** Upper bound on parked requests of both kinds; past it a request is not parked at all. */
export const MAX_PARKED = 4096;

let parked = 0;

export function parkedCount(): number {
  return parked;
}

export function waitForIp(index: ClusterIndex, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (index.podsAt(ip).length > 0) return Promise.resolve(true);
  return park((wake) => index.onIp(ip, wake), timeoutMs, signal);
}

export function waitForAssignment(index: ClusterIndex, podNamespace: string, podName: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  return park((wake) => index.onAssignment(podNamespace, podName, wake), timeoutMs, signal);
}

/** Resolves true when woken, false on timeout, abort, or when the parking is full. */
function park(subscribe: (wake: () => void) => () => void, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (timeoutMs <= 0 || parked >= MAX_PARKED || signal?.aborted === true) return Promise.resolve(false);
  parked++;
  return new Promise<boolean>((resolve) => {
    let done = false;
    const finish = (found: boolean): void => {
      if (done) return;
      done = true;
      parked--;
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

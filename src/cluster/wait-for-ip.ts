// The pod-start race: a new pod may call IMDS before its IP reaches the index. The request
// parks here until the event that brings the pod wakes it, or the bound runs out.
import type { ClusterIndex } from './cluster-index.ts';

/** Upper bound on parked requests across all IPs; past it a request is not parked at all. */
export const MAX_PARKED = 4096;

let parked = 0;

export function parkedCount(): number {
  return parked;
}

export function waitForIp(index: ClusterIndex, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (index.podsAt(ip).length > 0) return Promise.resolve(true);
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
    const cancel = index.onIp(ip, () => finish(true));
    const timer = setTimeout(finish, timeoutMs, false);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

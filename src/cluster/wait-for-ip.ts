// The pod-start race: a new pod may call IMDS before its IP reaches the index. The request
// parks here until the event that brings the pod wakes it, or the bound runs out.
import type { ClusterIndex } from './cluster-index.ts';

/** Upper bound on parked requests across all IPs; past it a request is not parked at all. */
export const MAX_PARKED = 4096;
/** One address's share: a new pod's SDK makes a handful of calls at start, not hundreds. */
export const MAX_PARKED_PER_IP = 8;

let parked = 0;
const parkedAt = new Map<string, number>();

export function parkedCount(): number {
  return parked;
}

/** Whether a request from `ip` may park now (its address's share and the total both have room). */
export function canPark(ip: string): boolean {
  return parked < MAX_PARKED && (parkedAt.get(ip) ?? 0) < MAX_PARKED_PER_IP;
}

export function waitForIp(index: ClusterIndex, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  if (index.podsAt(ip).length > 0) return Promise.resolve(true);
  if (timeoutMs <= 0 || !canPark(ip) || signal?.aborted === true) return Promise.resolve(false);
  parked++;
  parkedAt.set(ip, (parkedAt.get(ip) ?? 0) + 1);
  return new Promise<boolean>((resolve) => {
    let done = false;
    const finish = (found: boolean): void => {
      if (done) return;
      done = true;
      parked--;
      const left = parkedAt.get(ip)! - 1;
      if (left === 0) parkedAt.delete(ip);
      else parkedAt.set(ip, left);
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

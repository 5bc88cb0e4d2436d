// The startup taint of a new node (--remove-node-taint KEY): the node is registered with a
// NoSchedule/NoExecute taint that keeps ordinary pods off it; the daemon removes it once it is
// ready (rules installed, state synced), so no pod runs on the node before it is intercepted.
// Only taints with that key go; the patch is a JSON patch whose `test` op on resourceVersion
// makes it fail if anyone changed the node since we read it (then we read again and retry),
// so a taint someone else adds or removes meanwhile is never lost.
import type { Logger } from 'pino';
import { KubeApiError, type KubeHttp } from './kube-http.ts';

export interface TaintRemovalOptions {
  http: Pick<KubeHttp, 'getJson' | 'patchJson'>;
  node: string;
  key: string;
  /** The daemon's readiness: the taint goes only after this has said true. */
  ready: () => boolean;
  log: Logger;
  signal: AbortSignal;
  /** How often readiness is polled, and the first retry delay (doubling to 30 s). */
  pollMs?: number;
  requestTimeoutMs?: number;
}

interface Taint {
  key?: unknown;
}

/** Resolves 'removed' / 'absent' once done, or 'stopped' when `signal` aborts first. */
export async function removeTaintWhenReady(o: TaintRemovalOptions): Promise<'removed' | 'absent' | 'stopped'> {
  const poll = o.pollMs ?? 500;
  const timeout = o.requestTimeoutMs ?? 10_000;
  const path = `/api/v1/nodes/${encodeURIComponent(o.node)}`;
  while (!o.ready()) {
    if (!(await sleep(poll, o.signal))) return 'stopped';
  }
  let delay = poll;
  let conflicts = 0;
  for (;;) {
    if (o.signal.aborted) return 'stopped';
    try {
      const node = (await o.http.getJson(path, {}, timeout)) as { metadata?: { resourceVersion?: unknown }; spec?: { taints?: unknown } };
      const rv = node.metadata?.resourceVersion;
      const taints = Array.isArray(node.spec?.taints) ? (node.spec.taints as Taint[]) : [];
      const keep = taints.filter((t) => t.key !== o.key);
      if (keep.length === taints.length) {
        o.log.info({ node: o.node, taint: o.key }, 'startup taint not on the node; nothing to remove');
        return 'absent';
      }
      if (typeof rv !== 'string') throw new Error('node has no resourceVersion');
      await o.http.patchJson(path, [
        { op: 'test', path: '/metadata/resourceVersion', value: rv },
        { op: 'replace', path: '/spec/taints', value: keep },
      ], timeout);
      o.log.info({ node: o.node, taint: o.key, kept: keep.length }, 'startup taint removed: the node is intercepted and takes pods');
      return 'removed';
    } catch (err) {
      // 409/422: the node changed between our read and our patch: read again at once.
      const conflict = err instanceof KubeApiError && (err.statusCode === 409 || err.statusCode === 422);
      // A few in a row are a busy node object; more is something else, and backs off like any failure.
      if (conflict && ++conflicts <= 5) {
        o.log.info({ node: o.node, taint: o.key }, 'node changed while removing the startup taint; retrying');
        continue;
      }
      conflicts = 0;
      o.log.warn({ err, node: o.node, taint: o.key, retryInMs: delay }, 'could not remove the startup taint');
      if (!(await sleep(delay, o.signal))) return 'stopped';
      delay = Math.min(delay * 2, 30_000);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(true); }, ms);
    const onAbort = (): void => { clearTimeout(timer); resolve(false); };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

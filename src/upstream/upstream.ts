// The upstream room assembled: a pool for proxied routes, a pool and a scheduler for tokens
// (so token traffic can never take the connections other routes need), the token cache,
// their metrics, and the shutdown switch.
import type { Registry } from 'prom-client';
import type { DaemonConfig } from '../config/daemon-config.ts';
import { ImdsClient } from './imds-client.ts';
import { UpstreamScheduler } from './scheduler.ts';
import { TokenCache } from './token-cache.ts';
import { UpstreamMetrics } from './upstream-metrics.ts';
import { EntraRoom, type KubeApi } from './entra/entra-room.ts';
import { EntraMetrics } from './entra/entra-metrics.ts';

export interface Upstream {
  readonly imds: ImdsClient;
  readonly scheduler: UpstreamScheduler;
  readonly tokens: TokenCache | undefined;
  /** Tokens from Entra ID: service principals and workload identity federation. */
  readonly entra: EntraRoom;
  readonly stopping: AbortSignal;
  /** Pending requests: both IMDS pools and the token queue, and Entra fetches queued or in flight. */
  pending(): number;
  /** Everything still waiting is answered now (a retryable 503), and nothing new starts. */
  stop(): void;
  close(): Promise<void>;
}

type UpstreamConfig = Pick<DaemonConfig, 'metadataIp' | 'metadataPort' | 'upstreamConnectTimeoutMs' | 'upstreamTimeoutMs' | 'userAgent'
  | 'tokenCache' | 'imdsMaxRps' | 'imdsMaxConcurrency' | 'imdsMaxQueue' | 'imdsMaxQueuePerPod' | 'tokenWaitMs' | 'clusterStateFile' | 'kubeconfig'>;

/** The Kubernetes API for Secrets and TokenRequests, opened on first use (most nodes never need it). */
function kubeApi(config: UpstreamConfig): { get: () => Promise<KubeApi>; close: () => Promise<void> } {
  let kube: Promise<KubeApi & { close(): Promise<void> }> | undefined;
  return {
    get() {
      kube ??= (async () => {
        const { loadKubeConfig } = await import('../cluster/kube-config.ts');
        const { KubeHttp } = await import('../cluster/kube-http.ts');
        return new KubeHttp(await loadKubeConfig(config.kubeconfig === '' ? undefined : config.kubeconfig), config.userAgent);
      })();
      const k = kube;
      k.catch(() => { if (kube === k) kube = undefined; });
      return k;
    },
    async close() {
      await kube?.then((k) => k.close(), () => {});
    },
  };
}

/** `onEntraAnswer`: each answer from Entra ID (or a token source's own refusal), for the status. */
export function openUpstream(config: UpstreamConfig, registry: Registry, o: { onEntraAnswer?: (status: number | string) => void } = {}): Upstream {
  const pool = (connections: number): ImdsClient => new ImdsClient({
    host: config.metadataIp,
    port: config.metadataPort,
    connections,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    responseTimeoutMs: config.upstreamTimeoutMs,
    userAgent: config.userAgent,
  });
  const imds = pool(5);
  const tokenImds = pool(config.imdsMaxConcurrency);
  let scheduler: UpstreamScheduler | undefined;
  const metrics = new UpstreamMetrics(registry, () => scheduler);
  scheduler = new UpstreamScheduler({
    transport: tokenImds,
    maxRps: config.imdsMaxRps,
    maxConcurrency: config.imdsMaxConcurrency,
    maxQueue: config.imdsMaxQueue,
    maxQueuePerCaller: config.imdsMaxQueuePerPod,
    observer: metrics,
  });
  const tokens = config.tokenCache
    ? new TokenCache(scheduler, { waitMs: config.tokenWaitMs, onRefresh: (o) => metrics.refreshed(o) })
    : undefined;
  const kube = config.clusterStateFile === '' ? kubeApi(config) : undefined;
  const entra = new EntraRoom({
    kube: kube?.get,
    userAgent: config.userAgent, tokenCache: config.tokenCache, tokenWaitMs: config.tokenWaitMs,
    observer: new EntraMetrics(registry, o.onEntraAnswer),
  });
  const stopping = new AbortController();
  const s = scheduler;
  return {
    imds, scheduler: s, tokens, entra, stopping: stopping.signal,
    pending: () => imds.pending + tokenImds.pending + s.queued.foreground + entra.scheduler.inFlight + entra.scheduler.queued.foreground,
    stop() {
      stopping.abort();
      tokens?.stop();
      s.stop();
      entra.stop();
    },
    async close() {
      this.stop();
      await Promise.allSettled([imds.close(), tokenImds.close(), entra.close(), kube?.close()]);
    },
  };
}

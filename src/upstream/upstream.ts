// The upstream room assembled: a pool for proxied routes, a pool and a scheduler for tokens
// (so token traffic can never take the connections other routes need), the token cache,
// their metrics, and the shutdown switch.
import type { Registry } from 'prom-client';
import type { DaemonConfig } from '../config/daemon-config.ts';
import { ImdsClient } from './imds-client.ts';
import { UpstreamScheduler } from './scheduler.ts';
import { TokenCache } from './token-cache.ts';
import { UpstreamMetrics } from './upstream-metrics.ts';

export interface Upstream {
  readonly imds: ImdsClient;
  readonly scheduler: UpstreamScheduler;
  readonly tokens: TokenCache | undefined;
  readonly stopping: AbortSignal;
  /** Pending requests, both pools. */
  pending(): number;
  /** Everything still waiting is answered now (a retryable 503), and nothing new starts. */
  stop(): void;
  close(): Promise<void>;
}

type UpstreamConfig = Pick<DaemonConfig, 'metadataIp' | 'metadataPort' | 'upstreamConnectTimeoutMs' | 'upstreamTimeoutMs' | 'userAgent'
  | 'tokenCache' | 'imdsMaxRps' | 'imdsMaxConcurrency' | 'imdsMaxQueue' | 'imdsMaxQueuePerPod' | 'tokenWaitMs'>;

export function openUpstream(config: UpstreamConfig, registry: Registry): Upstream {
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
  const stopping = new AbortController();
  const s = scheduler;
  return {
    imds, scheduler: s, tokens, stopping: stopping.signal,
    pending: () => imds.pending + tokenImds.pending + s.queued.foreground,
    stop() {
      stopping.abort();
      tokens?.stop();
      s.stop();
    },
    async close() {
      this.stop();
      await Promise.allSettled([imds.close(), tokenImds.close()]);
    },
  };
}

// Assembles the daemon from its rooms and adapters, and takes it apart again on shutdown.
import type { Logger } from 'pino';
import { FileClusterState } from './cluster/file-source.ts';
import { EMPTY_SELECTOR_WARNING } from './cluster/objects.ts';
import type { ClusterState } from './cluster/view.ts';
import { parkedCount } from './cluster/wait-for-ip.ts';
import type { DaemonConfig } from './config/daemon-config.ts';
import { listen, type Listener } from './listener/listener.ts';
import { MetadataHandler } from './listener/metadata-handler.ts';
import { DaemonMetrics } from './observability/metrics.ts';
import { startProbeServer, type ProbeServer } from './probes/probe-server.ts';
import { NOT_INTERCEPTING, readiness, type Readiness } from './probes/readiness.ts';
import { ImdsClient } from './upstream/imds-client.ts';
import { TokenCache } from './upstream/token-cache.ts';
import { InterceptionRules } from './iptables/index.ts';
import { dnatTargetFor } from './iptables/dnat-target.ts';

export interface Daemon {
  readonly listener: Listener;
  readonly state: ClusterState;
  readonly metrics: DaemonMetrics;
  readonly probes: ProbeServer;
  readonly metricsServer: ProbeServer | undefined;
  isReady(): boolean;
  /** Ready, or the reasons it is not (the /readyz body). */
  readiness(): Readiness;
  /** Graceful stop. NAT rules stay in place: pods are refused, never let through, until the next start. */
  close(): Promise<void>;
}

export async function startDaemon(config: DaemonConfig, log: Logger, options: { defaultMetrics?: boolean } = {}): Promise<Daemon> {
  const metrics = new DaemonMetrics(undefined, options);
  const state = await openClusterState(config, log, metrics);
  const imds = new ImdsClient({
    host: config.metadataIp,
    port: config.metadataPort,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    responseTimeoutMs: config.upstreamTimeoutMs,
    userAgent: config.userAgent,
  });
  const tokens = config.tokenCache ? new TokenCache(imds) : undefined;
  const handler = new MetadataHandler({
    state, imds, tokens, metrics, log,
    blockInstanceMetadata: config.blockInstanceMetadata,
    metadataHeaderRequired: config.metadataHeaderRequired,
    podWaitMs: config.podWaitMs,
    policy: { mode: config.operationMode, forceNamespaced: config.operationMode === 'managed' || config.forceNamespaced },
    assignmentWaitMs: config.assignmentWaitMs,
  });
  let closing = false;
  let interception: InterceptionRules | undefined;
  let listener: Listener | undefined;
  let probes: ProbeServer | undefined;
  let metricsServer: ProbeServer | undefined;
  const currentReadiness = (): Readiness => readiness({
    closing, stateReady: state.isReady(), manageIptables: config.manageIptables, interception: interception?.status,
  });
  const ready = (): boolean => currentReadiness().ready;
  if (!config.manageIptables) log.warn(`${NOT_INTERCEPTING}; /readyz stays 503`);
  try {
    listener = await listen({ host: config.listenAddress, port: config.listenPort, maxConnections: config.maxConnections }, handler.handle);
    metrics.gauge('podid_nmi_pods_waiting', 'Token requests parked until their pod appears', parkedCount);
    metrics.gauge('podid_nmi_upstream_pending', 'Requests waiting for or at the metadata service', () => imds.pending);
    metrics.gauge('podid_nmi_token_cache_entries', 'Tokens held in the cache', () => tokens?.size ?? 0);
    metrics.gauge('podid_nmi_ready', '1 when the daemon reports ready', () => (ready() ? 1 : 0));
    const together = config.probePort === config.metricsPort;
    probes = await startProbeServer({
      host: config.probeListenAddress, port: config.probePort,
      health: () => !closing, ready: currentReadiness, registry: together ? metrics.registry : undefined,
    });
    if (!together) metricsServer = await startProbeServer({ host: config.probeListenAddress, port: config.metricsPort, registry: metrics.registry });
    if (config.manageIptables) {
      interception = await InterceptionRules.start({
        metadataIp: config.metadataIp, metadataPort: config.metadataPort,
        targetIp: dnatTargetFor(config.listenAddress), targetPort: listener.address.port,
        intervalSec: config.iptUpdateIntervalSec, conntrackFlush: config.conntrackFlush,
        log, registry: metrics.registry,
      });
    }
  } catch (err) {
    await Promise.allSettled([listener?.close(0), probes?.close(), metricsServer?.close(), imds.close(), state.close()]);
    throw err;
  }
  log.info({
    listen: `${listener.address.address}:${listener.address.port}`,
    upstream: `${config.metadataIp}:${config.metadataPort}`,
    probes: probes.address.port, metrics: metricsServer?.address.port ?? probes.address.port,
    source: config.clusterStateFile !== '' ? config.clusterStateFile : 'kubernetes', ...state.counts(),
  }, 'podid-nmi listening');
  const l = listener;
  const p = probes;
  const m = metricsServer;
  return {
    listener: l, state, metrics, probes: p, metricsServer: m,
    isReady: ready,
    readiness: currentReadiness,
    async close() {
      if (closing) return;
      closing = true;
      interception?.stop();
      await l.close(config.shutdownGraceMs);
      await Promise.allSettled([p.close(), m?.close(), imds.close(), state.close()]);
    },
  };
}

async function openClusterState(config: DaemonConfig, log: Logger, metrics: DaemonMetrics): Promise<ClusterState> {
  if (config.clusterStateFile !== '') {
    const state = await FileClusterState.load(config.clusterStateFile, config.node);
    for (const b of state.index.bindingsWithEmptySelector()) {
      log.warn({ namespace: b.namespace, binding: b.name, azureIdentity: b.azureIdentity }, EMPTY_SELECTOR_WARNING);
    }
    return state;
  }
  // Loaded only when used: the file-backed demo starts without the Kubernetes client.
  const { InformerClusterState } = await import('./cluster/informer-source.ts');
  return InformerClusterState.start({
    kubeconfig: config.kubeconfig === '' ? undefined : config.kubeconfig,
    nodeName: config.node,
    userAgent: config.userAgent,
    assignedIdentities: config.operationMode === 'standard',
    log,
    registry: metrics.registry,
  });
}

// Flag values to the daemon's typed configuration, with the cross-flag checks.
import { isIP } from 'node:net';
import type { LevelWithSilent } from 'pino';
import type { LogFormat } from '../observability/logger.ts';
import type { OperationMode } from '../decision/decide.ts';
import { FlagError, type FlagValues } from './flags.ts';

export interface DaemonConfig {
  node: string;
  listenAddress: string;
  listenPort: number;
  metadataIp: string;
  metadataPort: number;
  probePort: number;
  metricsPort: number;
  probeListenAddress: string;
  blockInstanceMetadata: boolean;
  metadataHeaderRequired: boolean;
  iptUpdateIntervalSec: number;
  manageIptables: boolean;
  conntrackFlush: boolean;
  clusterStateFile: string;
  kubeconfig: string;
  podWaitMs: number;
  upstreamConnectTimeoutMs: number;
  upstreamTimeoutMs: number;
  tokenCache: boolean;
  maxConnections: number;
  shutdownGraceMs: number;
  logFormat: LogFormat;
  logLevel: LevelWithSilent;
  operationMode: OperationMode;
  /** Standard mode's namespace rule; managed mode is always namespaced. */
  forceNamespaced: boolean;
  assignmentWaitMs: number;
}

export function toDaemonConfig(v: FlagValues, env: NodeJS.ProcessEnv = {}): DaemonConfig {
  for (const name of ['nmi-listen-address', 'metadata-ip', 'probe-listen-address']) {
    if (isIP(String(v[name])) === 0) throw new FlagError(`flag --${name}: ${JSON.stringify(v[name])} is not an IP address`);
  }
  const clusterStateFile = String(v['cluster-state']);
  const kubeconfig = String(v.kubeconfig);
  if (clusterStateFile === '' && kubeconfig === '' && (env.KUBERNETES_SERVICE_HOST ?? '') === '') {
    throw new FlagError('no cluster state: give --cluster-state FILE or --kubeconfig FILE, or run in a cluster');
  }
  const node = String(v.node);
  if (clusterStateFile === '' && node === '') throw new FlagError('flag --node (or NODE_NAME) is required with the Kubernetes API');
  return {
    node,
    listenAddress: String(v['nmi-listen-address']),
    listenPort: Number(v['nmi-port']),
    metadataIp: String(v['metadata-ip']),
    metadataPort: Number(v['metadata-port']),
    probePort: Number(v['http-probe-port']),
    metricsPort: Number(v['prometheus-port']),
    probeListenAddress: String(v['probe-listen-address']),
    blockInstanceMetadata: v['block-instance-metadata'] === true,
    metadataHeaderRequired: v['metadata-header-required'] === true,
    iptUpdateIntervalSec: Number(v['ipt-update-interval-sec']),
    manageIptables: v['manage-iptables'] === true,
    conntrackFlush: v['enable-conntrack-deletion'] === true,
    clusterStateFile,
    kubeconfig,
    podWaitMs: Number(v['pod-wait-ms']),
    upstreamConnectTimeoutMs: Number(v['upstream-connect-timeout-ms']),
    upstreamTimeoutMs: Number(v['upstream-timeout-ms']),
    tokenCache: v['token-cache'] === true,
    maxConnections: Number(v['max-connections']),
    shutdownGraceMs: Number(v['shutdown-grace-ms']),
    logFormat: v['log-format'] as LogFormat,
    logLevel: v['log-level'] as LevelWithSilent,
    operationMode: String(v['operation-mode']).toLowerCase() === 'standard' ? 'standard' : 'managed',
    forceNamespaced: v.forceNamespaced === true,
    assignmentWaitMs: Number(v['assignment-wait-ms']),
  };
}

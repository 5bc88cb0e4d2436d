// Flag values to the daemon's typed configuration, with the cross-flag checks.
import { isIP } from 'node:net';
import type { LevelWithSilent } from 'pino';
import type { LogFormat } from '../observability/logger.ts';
import type { OperationMode } from '../decision/decide.ts';
import { FlagError, type FlagValues } from './flags.ts';
import { parseHostTokenCallers, type CallerRule } from '../pods/host-token-callers.ts';
import { userAgent } from './version.ts';
import { entraPolicy } from './entra-flags.ts';
import type { EntraPolicy } from '../decision/token-source.ts';

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
  /** Who sends pods' metadata traffic here: our rules, something else (--interception=external), or nothing (--manage-iptables=false). */
  interception: 'iptables' | 'external' | 'none';
  /** --admin-socket: where `nmi status` reads the daemon's view; '' for none. */
  adminSocket: string;
  conntrackFlush: boolean;
  clusterStateFile: string;
  kubeconfig: string;
  podWaitMs: number;
  maxStateStalenessS: number;
  podEvents: boolean;
  /** --memory-saver: V8's memory saver mode once state is ready. */
  memorySaver: boolean;
  upstreamConnectTimeoutMs: number;
  upstreamTimeoutMs: number;
  tokenCache: boolean;
  imdsMaxRps: number;
  imdsMaxConcurrency: number;
  imdsMaxQueue: number;
  imdsMaxQueuePerPod: number;
  tokenWaitMs: number;
  maxConnections: number;
  maxConnectionsPerPod: number;
  maxRequestsPerPod: number;
  shutdownGraceMs: number;
  logFormat: LogFormat;
  logLevel: LevelWithSilent;
  interceptHostNetwork: boolean;
  cgroupRoot: string;
  kubepodsCgroupParent: string;
  hostTokenCallers: CallerRule[];
  /** --attest-pod-sockets, and the node's /proc it reads. */
  attestPodSockets: boolean;
  procRoot: string;
  removeNodeTaint: string;
  operationMode: OperationMode;
  /** NMI's rule: the flag, or env FORCENAMESPACED exactly "true". Managed mode is namespaced whatever it says. */
  forceNamespaced: boolean;
  /** How long a standard-mode token request waits for MIC: --assignment-wait-ms, capped by NMI's retry flags. */
  assignmentWaitMs: number;
  /** Sent on requests to IMDS and to the Kubernetes API. */
  userAgent: string;
  /** Token sources other than IMDS: --token-source, --authority-host, --tenant-id, --allow-cross-namespace-secrets. */
  entra: EntraPolicy;
}

export const MIN_STALENESS_LIMIT_S = 20;

/** klog's -v as a pino level: 0-3 info, 4-5 debug, 6 and more trace. */
export function levelForVerbosity(v: number): LevelWithSilent {
  if (v >= 6) return 'trace';
  if (v >= 4) return 'debug';
  return 'info';
}

// A header value Node and undici send as given: visible ASCII, space and tab.
const HEADER_SAFE = /^[\t\x20-\x7e]*$/;

/** `given`: the names set on the command line or by environment (see ParsedFlags), for -v vs --log-level. */
export function toDaemonConfig(v: FlagValues, env: NodeJS.ProcessEnv = {}, given: ReadonlySet<string> = new Set()): DaemonConfig {
  const custom = String(v['custom-user-agent']);
  if (!HEADER_SAFE.test(custom)) throw new FlagError(`flag --custom-user-agent: ${JSON.stringify(custom)} has characters a header cannot carry`);
  const interval = Number(v['find-identity-retry-interval']);
  for (const name of ['nmi-listen-address', 'metadata-ip', 'probe-listen-address']) {
    if (isIP(String(v[name])) === 0) throw new FlagError(`flag --${name}: ${JSON.stringify(v[name])} is not an IP address`);
  }
  const clusterStateFile = String(v['cluster-state']);
  const kubeconfig = String(v.kubeconfig);
  if (clusterStateFile === '' && kubeconfig === '' && (env.KUBERNETES_SERVICE_HOST ?? '') === '') {
    throw new FlagError('no cluster state: give --cluster-state FILE or --kubeconfig FILE, or run in a cluster');
  }
  const maxStale = Number(v['max-state-staleness']);
  if (maxStale > 0 && maxStale < MIN_STALENESS_LIMIT_S) {
    // State is confirmed about every 10 s; a tighter limit would refuse tokens on a healthy API.
    throw new FlagError(`flag --max-state-staleness: ${maxStale} is below ${MIN_STALENESS_LIMIT_S}; use 0 (off) or at least ${MIN_STALENESS_LIMIT_S} seconds`);
  }
  const node = String(v.node);
  if (clusterStateFile === '' && node === '') throw new FlagError('flag --node (or NODE_NAME) is required with the Kubernetes API');
  const removeNodeTaint = String(v['remove-node-taint'] ?? '');
  if (removeNodeTaint !== '' && clusterStateFile !== '') throw new FlagError('flag --remove-node-taint needs the Kubernetes API, not --cluster-state');
  let hostTokenCallers: CallerRule[];
  try {
    hostTokenCallers = parseHostTokenCallers(String(v['host-token-callers'] ?? ''));
  } catch (err) {
    throw new FlagError(`flag --host-token-callers: ${(err as Error).message}`);
  }
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
    // --interception=external says something else redirects; otherwise --manage-iptables decides.
    manageIptables: v['manage-iptables'] === true && v.interception !== 'external',
    interception: v.interception === 'external' ? 'external' : v['manage-iptables'] === true ? 'iptables' : 'none',
    adminSocket: String(v['admin-socket'] ?? ''),
    conntrackFlush: v['enable-conntrack-deletion'] === true,
    clusterStateFile,
    kubeconfig,
    podWaitMs: Number(v['pod-wait-ms']),
    maxStateStalenessS: Number(v['max-state-staleness']),
    podEvents: v['pod-events'] === true,
    memorySaver: v['memory-saver'] === true,
    upstreamConnectTimeoutMs: Number(v['upstream-connect-timeout-ms']),
    upstreamTimeoutMs: Number(v['upstream-timeout-ms']),
    tokenCache: v['token-cache'] === true,
    imdsMaxRps: Number(v['imds-max-rps']),
    imdsMaxConcurrency: Number(v['imds-max-concurrency']),
    imdsMaxQueue: Number(v['imds-max-queue']),
    imdsMaxQueuePerPod: Number(v['imds-max-queue-per-pod']),
    tokenWaitMs: Number(v['token-wait-ms']),
    maxConnections: Number(v['max-connections']),
    maxConnectionsPerPod: Number(v['max-connections-per-pod']),
    maxRequestsPerPod: Number(v['max-requests-per-pod']),
    shutdownGraceMs: Number(v['shutdown-grace-ms']),
    logFormat: v['log-format'] as LogFormat,
    logLevel: given.has('log-level') || !given.has('v') ? v['log-level'] as LevelWithSilent : levelForVerbosity(Number(v.v)),
    operationMode: v['operation-mode'] as OperationMode,
    forceNamespaced: v.forceNamespaced === true || env.FORCENAMESPACED === 'true',
    assignmentWaitMs: Math.min(Number(v['assignment-wait-ms']), Number(v['retry-attempts-for-created']) * interval * 1000),
    userAgent: userAgent(custom),
    interceptHostNetwork: v['intercept-host-network'] === true,
    cgroupRoot: String(v['cgroup-root'] ?? '/sys/fs/cgroup'),
    kubepodsCgroupParent: String(v['kubepods-cgroup-parent'] ?? ''),
    hostTokenCallers,
    attestPodSockets: v['attest-pod-sockets'] === true,
    procRoot: String(v['proc-root'] ?? '/proc'),
    removeNodeTaint,
    entra: entraPolicy(v),
  };
}

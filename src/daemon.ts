// Assembles the daemon from its rooms and adapters, and takes it apart again on shutdown.
import type { Logger } from 'pino';
import { FileClusterState } from './cluster/file-source.ts';
import { EMPTY_SELECTOR_WARNING } from './cluster/objects.ts';
import type { FreshnessTuning } from './cluster/freshness.ts';
import type { ClusterState } from './cluster/view.ts';
import { parkedCount } from './cluster/wait-for-ip.ts';
import type { DaemonConfig } from './config/daemon-config.ts';
import { listen, type Listener } from './listener/listener.ts';
import { policyFor } from './decision/decide.ts';
import { MetadataHandler } from './listener/metadata-handler.ts';
import { DaemonMetrics } from './observability/metrics.ts';
import { GRANTS_SUMMARY, RequestLog } from './observability/request-log.ts';
import { observers } from './observability/request-outcome.ts';
import { HELD_RETRY_MS, startProbeServer, type ProbeServer } from './probes/probe-server.ts';
import { EXTERNAL_INTERCEPTION, NOT_INTERCEPTING, readiness, type Readiness } from './probes/readiness.ts';
import { openUpstream } from './upstream/upstream.ts';
import { InterceptionRules, type InterceptionOptions } from './iptables/index.ts';
import { cgroup2Root, ownCgroupFrom } from './iptables/host-cgroups.ts';
import { CallerRoom } from './pods/caller-room.ts';
import { podCgroupOf } from './pods/kubelet-cgroup.ts';
import { SocketCgroupReader } from './pods/socket-cgroup.ts';
import { SocketAttestation } from './pods/socket-attestation.ts';
import { readFileSync } from 'node:fs';
import { dnatTargetFor } from './iptables/dnat-target.ts';
import { RequestAdmission } from './listener/admission.ts';
import { Cooldown } from './listener/cooldown.ts';
import { RefusalLog } from './observability/refusal-log.ts';
import { callerAt } from './pods/caller.ts';
import { favourMemoryFromNowOn } from './runtime/memory.ts';
import { collectStatus, StatusBoard } from './status/collect-status.ts';
import { noteProblems, RecentProblems } from './status/recent-problems.ts';
import { UpstreamHealth } from './status/upstream-health.ts';
import type { AdminServer } from './status/admin-server.ts';
import { enableQueueMigration, MIGRATE_HELP, portHasListener } from './listener/handover.ts';

/** How long a caller that pipelined is refused new connections. */
export const PIPELINING_COOLDOWN_MS = 5_000;

export interface Daemon {
  readonly listener: Listener;
  readonly state: ClusterState;
  readonly metrics: DaemonMetrics;
  readonly probes: ProbeServer;
  readonly metricsServer: ProbeServer | undefined;
  isReady(): boolean;
  /** Where further sections of `nmi status` register (token sources' budgets, caller strategies). */
  readonly statusBoard: StatusBoard;
  /** Ready, or the reasons it is not (the /readyz body). */
  readiness(): Readiness;
  /** Graceful stop. NAT rules stay in place: pods are refused, never let through, until the next start. */
  close(): Promise<void>;
}

export interface DaemonOptions {
  defaultMetrics?: boolean;
  /** Tests shorten how the API server's silence is detected. */
  freshness?: Partial<FreshnessTuning>;
  /** Tests run the rules against a stand-in for iptables (test/helpers/fake-iptables.ts). */
  iptables?: Pick<InterceptionOptions, 'run' | 'backend'>;
  /** Tests compare answers with and without the at-once lane (listener/answer-at-once.ts); on by default. */
  answerAtOnce?: boolean;
}

export async function startDaemon(config: DaemonConfig, log: Logger, options: DaemonOptions = {}): Promise<Daemon> {
  const startedAt = Date.now();
  // `nmi status` shows the warnings and errors of the last minutes: every room logs through this.
  const problems = new RecentProblems();
  log = noteProblems(log, problems);
  const upstreamHealth = new UpstreamHealth();
  const metrics = new DaemonMetrics(undefined, options);
  const state = await openClusterState(config, log, metrics, options.freshness);
  // Entra's answers for `nmi status`: a transport failure, a 5xx or a 429 is Entra (or the way to it) failing.
  const entraHealth = new UpstreamHealth();
  const upstream = openUpstream(config, metrics.registry, {
    onEntraAnswer: (status) => entraHealth.record(typeof status !== 'number' || status >= 500 || status === 429, String(status)),
  });
  const { imds, scheduler, tokens, stopping } = upstream;
  const ownCgroup = readOwnCgroup();
  // Addresses no pod holds (a pod's first calls, or no pod at all) share a quarter of the listener;
  // as many node-address connections may wait for their socket cgroup, so none finds ss busy.
  const strangers = Math.max(1, Math.floor(config.maxConnections / 4));
  const sockets = new SocketCgroupReader({ maxQueued: strangers });
  const attestation = config.attestPodSockets ? await startAttestation(config, log) : undefined;
  const callers = new CallerRoom({
    state, nodeName: config.node, sockets, cgroupParent: config.kubepodsCgroupParent,
    selfUid: podCgroupOf(ownCgroup, config.kubepodsCgroupParent)?.uid, podWaitMs: config.podWaitMs, attestation,
  });
  const pipelined = new Cooldown(PIPELINING_COOLDOWN_MS);
  const admission = new RequestAdmission(state, { perCaller: config.maxRequestsPerPod, strangers }, pipelined);
  const refusals = new RefusalLog(log);
  const grants = new RefusalLog(log, { summary: GRANTS_SUMMARY });
  // A fault that every request meets must not write a line and a stack per request.
  const laneFaults = new RefusalLog(log, { summary: { level: 'warn', msg: 'at-once lane faults not logged one by one', fields: [] } });
  const events = config.clusterStateFile === '' && config.podEvents
    ? await (await import('./events/index.ts')).startPodEvents({ kubeconfig: config.kubeconfig, node: config.node, view: state, registry: metrics.registry, log, userAgent: config.userAgent })
    : undefined;
  // Same condition as pod Events: only with the Kubernetes API, only where rules are kept.
  const nodeEvents = events && config.manageIptables
    ? await (await import('./events/index.ts')).startNodeEvents({ kubeconfig: config.kubeconfig, node: config.node, registry: metrics.registry, log, userAgent: config.userAgent })
    : undefined;
  const observer = observers([metrics, new RequestLog(log, refusals, grants), upstreamHealth, ...(events ? [events] : [])], (err) => log.error({ err }, 'a request observer failed'));
  const handler = new MetadataHandler({
    state, imds, scheduler, tokens, stopping, tokenWaitMs: config.tokenWaitMs, observer, admission, callers,
    blockInstanceMetadata: config.blockInstanceMetadata,
    metadataHeaderRequired: config.metadataHeaderRequired,
    podWaitMs: config.podWaitMs,
    maxStateStalenessS: config.maxStateStalenessS,
    interceptHostNetwork: config.interceptHostNetwork,
    hostTokenCallers: config.hostTokenCallers,
    policy: policyFor(config.operationMode, config.forceNamespaced, config.entra),
    entra: upstream.entra,
    assignmentWaitMs: config.assignmentWaitMs,
  });
  let closing = false;
  // The port's holder does not share it: a version before SO_REUSEPORT, which only stops once
  // this pod is ready. Waiting for it must not keep this one unready, or neither would move.
  let heldByOldVersion = false;
  let interception: InterceptionRules | undefined;
  let listener: Listener | undefined;
  let probes: ProbeServer | undefined;
  let metricsServer: ProbeServer | undefined;
  let admin: AdminServer | undefined;
  const statusBoard = new StatusBoard();
  statusBoard.addBudget(() => ({
    source: 'entra', limits: upstream.entra.limits, inFlight: upstream.entra.scheduler.inFlight,
    queued: { ...upstream.entra.scheduler.queued }, ...entraHealth.view(),
  }));
  if (attestation !== undefined) {
    statusBoard.addAttribution('socket attestation', () => attestation.problem ?? 'on: a pod-network caller must hold its socket in its pod\'s network namespace');
  }
  const currentReadiness = (): Readiness => readiness({
    closing, stateReady: state.isReady(), manageIptables: config.manageIptables, interception: interception?.status,
    externalInterception: config.interception === 'external',
    attestation: attestation?.problem,
    listening: listener !== undefined || heldByOldVersion,
  });
  const ready = (): boolean => currentReadiness().ready;
  if (config.interception === 'none') log.warn(`${NOT_INTERCEPTING}; /readyz stays 503`);
  if (config.interception === 'external') log.warn(EXTERNAL_INTERCEPTION);
  try {
    // A rolling update: the previous daemon still serves this port. This one joins it
    // (SO_REUSEPORT) only once it can answer, so no connection lands on a daemon still loading.
    // Alone (first start, crash restart) it listens at once, as before: requests wait for the
    // state, then get a retryable 503.
    const handover = config.listenPort !== 0 && await portHasListener(config.listenPort);
    if (config.manageIptables) {
      const migrate = await enableQueueMigration();
      if (migrate instanceof Error) log.warn({ err: migrate }, MIGRATE_HELP);
      else if (migrate === 'set') log.info('set net.ipv4.tcp_migrate_req=1 so that connections queued at shutdown move to the next daemon');
    }
    const openListener = (): Promise<Listener> => listen({
      host: config.listenAddress, port: config.listenPort, maxConnections: config.maxConnections,
      connectionsPerCaller: config.maxConnectionsPerPod, strangerConnections: strangers, callerOf: (ip) => callerAt(state, ip),
      cooldown: pipelined,
      // hostNetwork pods: charged to their own shares once their socket cgroup is known.
      attribute: config.interceptHostNetwork ? (socket) => callers.connectionCaller(socket) : undefined,
      attributionPool: strangers,
      answerAtOnce: options.answerAtOnce === false ? undefined : handler.answerAtOnce,
      onLaneError: (err) => laneFaults.write('lane', { err }, 'the request path failed in the at-once lane (an unanswered request went to node:http\'s path, an answered one\'s connection was closed)', 'error'),
      onRefusal: (reason, status, ip) => {
        metrics.request('connection', 'refused', status, reason, 0);
        refusals.write(`ip:${ip}`, { ip, decision: 'refused', reason, status }, 'connection refused');
      },
    }, handler.handle);
    if (!handover) listener = await openListener();
    metrics.gauge('podid_nmi_pods_waiting', 'Token requests parked until their pod appears', parkedCount);
    metrics.gauge('podid_nmi_upstream_pending', 'Requests waiting for or at the metadata service', upstream.pending);
    metrics.gauge('podid_nmi_token_cache_entries', 'Tokens held in the cache', () => tokens?.size ?? 0);
    metrics.gauge('podid_nmi_ready', '1 when the daemon reports ready', () => (ready() ? 1 : 0));
    metrics.countedElsewhere('podid_nmi_requests_answered_at_once_total',
      'Requests answered from the request gate without node:http\'s request objects (a refusal or a cached token; also counted in podid_nmi_requests_total)',
      () => listener?.lane?.answered ?? 0);
    const together = config.probePort === config.metricsPort;
    const whenHeld = (port: number, what: string) => ({
      onWaiting: () => log.info({ port }, `the previous daemon holds the ${what} port (a rolling update): taking it over once that one stops`),
      onBound: () => log.info({ port }, `${what} port taken over`),
    });
    probes = await startProbeServer({
      host: config.probeListenAddress, port: config.probePort,
      health: () => !closing, ready: currentReadiness, registry: together ? metrics.registry : undefined,
      whenHeld: whenHeld(config.probePort, 'probe'),
    });
    if (!together) {
      metricsServer = await startProbeServer({
        host: config.probeListenAddress, port: config.metricsPort, registry: metrics.registry,
        exclusive: true, whenHeld: whenHeld(config.metricsPort, 'metrics'),
      });
    }
    if (config.manageIptables) {
      interception = await InterceptionRules.start({
        metadataIp: config.metadataIp, metadataPort: config.metadataPort,
        targetIp: dnatTargetFor(config.listenAddress), targetPort: listener?.address.port ?? config.listenPort,
        intervalSec: config.iptUpdateIntervalSec, conntrackFlush: config.conntrackFlush,
        log, registry: metrics.registry, ...options.iptables,
        hostNetwork: config.interceptHostNetwork
          ? { cgroupRoot: config.cgroupRoot, cgroupParent: config.kubepodsCgroupParent, ownCgroup }
          : undefined,
        onPart: nodeEvents && ((part, status) => nodeEvents.observe(part, status)),
      });
    }
    metrics.gauge('podid_nmi_socket_cgroup_lookups_pending', 'Socket-cgroup lookups running or queued', () => sockets.pending);
    if (config.adminSocket !== '') {
      const { startAdminServer } = await import('./status/admin-server.ts');
      admin = await startAdminServer({
        path: config.adminSocket, ready: currentReadiness,
        status: () => collectStatus({
          config, interceptionMode: config.interception, readiness: currentReadiness, interception: () => interception?.status, state,
          scheduler, tokenCacheEntries: () => tokens?.size ?? 0, socketCgroupLookupsPending: () => sockets.pending,
          upstream: upstreamHealth, problems, registry: metrics.registry, board: statusBoard, startedAt,
        }),
      }).catch((err: unknown) => {
        // Tokens keep being served; the exec readiness probe, which reads this socket, says why.
        log.error({ err, path: config.adminSocket }, 'admin socket not served: nmi status and its readiness check cannot reach this daemon');
        return undefined;
      });
    }
    if (handover) {
      log.info({ port: config.listenPort }, 'another daemon serves the port (a rolling update): joining it once the cluster state has synced');
      await state.whenReady();
      listener = await openHeldListener(openListener, log, config.listenPort, () => { heldByOldVersion = true; });
    }
  } catch (err) {
    refusals.close();
    grants.close();
    laneFaults.close();
    await Promise.allSettled([listener?.close(0), probes?.close(), metricsServer?.close(), upstream.close(), state.close(), events?.close(), nodeEvents?.close(), admin?.close()]);
    throw err;
  }
  log.info({
    listen: `${listener!.address.address}:${listener!.address.port}`,
    upstream: `${config.metadataIp}:${config.metadataPort}`,
    probes: probes.address.port, metrics: metricsServer?.address.port ?? probes.address.port,
    source: config.clusterStateFile !== '' ? config.clusterStateFile : 'kubernetes', ...state.counts(),
  }, 'podid-nmi listening');
  const l = listener!;
  const p = probes;
  const m = metricsServer;
  // Aborted by close(): what waits for readiness (the taint removal, memory saver mode) stops waiting.
  const untilClosed = new AbortController();
  if (config.removeNodeTaint !== '') void removeStartupTaint(config, log, ready, untilClosed.signal);
  if (config.memorySaver) state.whenReady(untilClosed.signal).then(favourMemoryFromNowOn, () => {});
  return {
    listener: l, state, metrics, probes: p, metricsServer: m,
    isReady: ready,
    statusBoard,
    readiness: currentReadiness,
    async close() {
      if (closing) return;
      closing = true;
      // Started first, awaited last: the pass it waits for runs alongside the listener's drain.
      const rulesStopped = interception?.stop();
      // Stop accepting on every shared port at once: new probes and scrapes reach the next daemon.
      const probesClosed = Promise.allSettled([p.close(), m?.close()]);
      untilClosed.abort();
      // What cannot finish within the grace is answered (503 shutting_down, Retry-After) a little
      // before the listener cuts connections: a client sees an answer, never a reset.
      const answerAt = Math.max(0, config.shutdownGraceMs - Math.min(SHUTDOWN_ANSWER_MS, config.shutdownGraceMs / 2));
      const answer = setTimeout(() => upstream.stop(), answerAt);
      await l.close(config.shutdownGraceMs);
      clearTimeout(answer);
      refusals.close();
      grants.close();
      laneFaults.close();
      await Promise.allSettled([probesClosed, upstream.close(), state.close(), events?.close(), Promise.resolve(rulesStopped).then(() => nodeEvents?.close()), admin?.close()]);
    },
  };
}

/** Binds the listener, waiting (every HELD_RETRY_MS) while the port's holder does not share it. */
async function openHeldListener(open: () => Promise<Listener>, log: Logger, port: number, onHeld: () => void): Promise<Listener> {
  for (let waited = false; ; waited = true) {
    try {
      const listener = await open();
      if (waited) log.info({ port }, 'metadata port taken over');
      return listener;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      if (!waited) {
        onHeld();
        log.warn({ port }, 'the metadata port is held by a process that does not share it (a podid-nmi before SO_REUSEPORT, or another program): taking it over once it stops');
      }
      await new Promise((r) => setTimeout(r, HELD_RETRY_MS));
    }
  }
}

/** The daemon's own cgroup (cgroup v2), to exclude its pod from the hostNetwork rules. */
function readOwnCgroup(): string {
  try {
    return ownCgroupFrom(readFileSync('/proc/self/cgroup', 'utf8'));
  } catch {
    return '';
  }
}

/** --attest-pod-sockets: says at start whether the node's /proc and cgroups can be read. */
async function startAttestation(config: DaemonConfig, log: Logger): Promise<SocketAttestation> {
  // On a hybrid node the pod cgroups kubelet made through systemd are in the v2 hierarchy at <root>/unified.
  const cgroupRoot = await cgroup2Root(config.cgroupRoot).catch(() => config.cgroupRoot);
  const attestation = new SocketAttestation({
    procRoot: config.procRoot, cgroupRoot, cgroupParent: config.kubepodsCgroupParent,
    metadata: { ip: config.metadataIp, port: config.metadataPort }, waitMs: config.podWaitMs,
  });
  const problem = await attestation.checkVisibility();
  if (problem !== undefined) log.error(`${problem}; pod-network callers are refused (caller_not_attested) and /readyz stays 503 until it can`);
  else log.info({ procRoot: config.procRoot, cgroupRoot }, 'socket attestation on: pod-network callers must hold their socket');
  return attestation;
}

async function removeStartupTaint(config: DaemonConfig, log: Logger, ready: () => boolean, signal: AbortSignal): Promise<void> {
  const { loadKubeConfig } = await import('./cluster/kube-config.ts');
  const { KubeHttp } = await import('./cluster/kube-http.ts');
  const { removeTaintWhenReady } = await import('./cluster/node-taint.ts');
  const http = new KubeHttp(await loadKubeConfig(config.kubeconfig === '' ? undefined : config.kubeconfig), config.userAgent);
  try {
    await removeTaintWhenReady({ http, node: config.node, key: config.removeNodeTaint, ready, log, signal });
  } catch (err) {
    log.error({ err, taint: config.removeNodeTaint }, 'startup taint removal stopped');
  } finally {
    await http.close();
  }
}

/** Time kept at the end of the grace to write the 503s before connections are cut. */
const SHUTDOWN_ANSWER_MS = 500;

async function openClusterState(config: DaemonConfig, log: Logger, metrics: DaemonMetrics, freshness?: Partial<FreshnessTuning>): Promise<ClusterState> {
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
    freshness,
  });
}

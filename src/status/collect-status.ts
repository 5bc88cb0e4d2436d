// Assembles the NodeStatus from the daemon's parts. What every room already publishes as a
// metric (informer sync, state ages, iptables repairs) is read from the daemon's own registry,
// so the status shows the numbers the alerts see; the rest comes from the parts themselves.
// Other token sources and caller strategies register on the StatusBoard instead of editing this.
import type { Registry } from 'prom-client';
import type { ClusterState } from '../cluster/view.ts';
import type { DaemonConfig } from '../config/daemon-config.ts';
import { VERSION } from '../config/version.ts';
import type { InterceptionStatus } from '../iptables/index.ts';
import type { Readiness } from '../probes/readiness.ts';
import { assessHealth, type BudgetView, type InterceptionView, type NodeStatus, type ResourceFreshness } from './node-status.ts';
import type { RecentProblems } from './recent-problems.ts';
import type { UpstreamHealth } from './upstream-health.ts';

/** Where further sections of the status register (an Entra token source's budget, socket attestation). */
export class StatusBoard {
  readonly #budgets: Array<() => BudgetView> = [];
  readonly #strategies = new Map<string, () => unknown>();

  addBudget(view: () => BudgetView): void {
    this.#budgets.push(view);
  }

  addAttribution(name: string, view: () => unknown): void {
    this.#strategies.set(name, view);
  }

  budgets(): BudgetView[] {
    return this.#budgets.map((v) => v());
  }

  strategies(): Record<string, unknown> {
    return Object.fromEntries([...this.#strategies].map(([name, v]) => [name, v()]));
  }
}

export interface StatusSources {
  config: Pick<DaemonConfig, 'node' | 'operationMode' | 'forceNamespaced' | 'interceptHostNetwork' | 'clusterStateFile' | 'maxStateStalenessS'
    | 'imdsMaxRps' | 'imdsMaxConcurrency' | 'imdsMaxQueue' | 'imdsMaxQueuePerPod' | 'tokenCache'>;
  interceptionMode: InterceptionView['mode'];
  readiness(): Readiness;
  interception(): InterceptionStatus | undefined;
  state: ClusterState;
  scheduler: { readonly queued: Record<string, number>; readonly inFlight: number };
  tokenCacheEntries(): number;
  socketCgroupLookupsPending(): number;
  upstream: UpstreamHealth;
  problems: RecentProblems;
  registry: Registry;
  board: StatusBoard;
  startedAt: number;
}

type Series = Array<{ labels: Record<string, string | number>; value: number }>;

async function series(registry: Registry, name: string): Promise<Series> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return [];
  return (await metric.get()).values as Series;
}

function byLabel(s: Series, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of s) if (v.value !== 0) out[String(v.labels[label])] = (out[String(v.labels[label])] ?? 0) + v.value;
  return out;
}

export async function collectStatus(src: StatusSources): Promise<NodeStatus> {
  const { config, registry } = src;
  const [synced, ages, informerErrors, stale, repairs, failures] = await Promise.all([
    series(registry, 'podid_nmi_informer_synced'), series(registry, 'podid_nmi_state_age_seconds'),
    series(registry, 'podid_nmi_informer_errors_total'), series(registry, 'podid_nmi_state_stale'),
    series(registry, 'podid_nmi_iptables_repairs_total'), series(registry, 'podid_nmi_iptables_failures_total'),
  ]);
  const resources = new Map<string, ResourceFreshness>();
  const resource = (name: string): ResourceFreshness => {
    let r = resources.get(name);
    if (r === undefined) resources.set(name, r = { resource: name, synced: false, ageSeconds: null, errors: 0 });
    return r;
  };
  for (const v of synced) resource(String(v.labels.resource)).synced = v.value === 1;
  for (const v of ages) resource(String(v.labels.resource)).ageSeconds = Math.round(v.value * 10) / 10;
  for (const v of informerErrors) resource(String(v.labels.resource)).errors += v.value;
  const rules = src.interception();
  const imds = src.upstream.view();
  const partial: Omit<NodeStatus, 'health' | 'problems'> = {
    version: VERSION,
    node: config.node,
    pid: process.pid,
    uptimeSeconds: Math.round((Date.now() - src.startedAt) / 1000),
    readiness: ((r) => ({ ready: r.ready, reasons: r.ready ? [] : [...r.reasons] }))(src.readiness()),
    mode: { operation: config.operationMode, forceNamespaced: config.forceNamespaced },
    interception: {
      mode: src.interceptionMode,
      backend: rules?.backend ?? null,
      rulesInstalled: src.interceptionMode === 'iptables' ? rules?.rulesInstalled ?? false : null,
      hostNetworkRules: src.interceptionMode === 'iptables' && config.interceptHostNetwork,
      routeLocalnet: rules?.routeLocalnet ?? null,
      localnetGuard: rules?.localnetGuard ?? null,
      hostNetwork: rules?.hostNetwork ?? null,
      lastCheck: rules?.lastSuccess?.toISOString() ?? null,
      lastError: rules?.lastError ?? null,
      repairs: byLabel(repairs, 'reason'),
      failures: byLabel(failures, 'operation'),
    },
    attribution: {
      sourceIp: true,
      socketCgroup: config.interceptHostNetwork,
      socketCgroupLookupsPending: src.socketCgroupLookupsPending(),
      strategies: src.board.strategies(),
    },
    state: {
      source: config.clusterStateFile !== '' ? 'file' : 'kubernetes',
      synced: src.state.isReady(),
      stale: stale.some((v) => v.value === 1),
      maxStalenessSeconds: config.maxStateStalenessS,
      resources: [...resources.values()],
      counts: { ...src.state.counts() },
    },
    budgets: [{
      source: 'imds',
      limits: { maxRps: config.imdsMaxRps, maxConcurrency: config.imdsMaxConcurrency, maxQueue: config.imdsMaxQueue, maxQueuePerPod: config.imdsMaxQueuePerPod },
      inFlight: src.scheduler.inFlight,
      queued: { ...src.scheduler.queued },
      ...imds,
    }, ...src.board.budgets()],
    tokenCache: { enabled: config.tokenCache, entries: src.tokenCacheEntries() },
    errors: { windowSeconds: src.problems.windowMs / 1000, entries: src.problems.recent() },
  };
  return { ...partial, ...assessHealth(partial) };
}

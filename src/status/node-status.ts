// What `nmi status` shows: the daemon's own view of its node, as one JSON document served on the
// admin socket. Types and the health verdict only (no I/O), so the CLI that prints it loads
// nothing else. New token sources and caller strategies add entries to `budgets` and
// `attribution.strategies` instead of new top-level fields.

export type Health = 'ok' | 'degraded' | 'not_ready';

/** Exit status of `nmi status`, for scripts (2 stays the CLI's "bad command line"). */
export const STATUS_EXIT = { ok: 0, degraded: 3, not_ready: 4, unreachable: 5 } as const;

export interface InterceptionView {
  /** iptables: the daemon's rules; external: something else redirects (nothing here checks it); none: --manage-iptables=false. */
  mode: 'iptables' | 'external' | 'none';
  backend: string | null;
  /** null when the daemon installs no rules. */
  rulesInstalled: boolean | null;
  /** Whether the hostNetwork chain (OUTPUT, by socket cgroup) is part of the rules. */
  hostNetworkRules: boolean;
  routeLocalnet: boolean | null;
  /** The route_localnet guard (filter PODID-NMI-LOCALNET); null when the DNAT target needs no route_localnet. */
  localnetGuard: { installed: boolean; error: string | null } | null;
  /** The hostNetwork chain's own state: it can fail while the pod chain is in place. */
  hostNetwork: { installed: boolean; error: string | null } | null;
  /** ISO time of the last rule check that succeeded. */
  lastCheck: string | null;
  lastError: string | null;
  /** Repairs since start, by what had drifted (podid_nmi_iptables_repairs_total). */
  repairs: Record<string, number>;
  /** Failed operations since start (podid_nmi_iptables_failures_total). */
  failures: Record<string, number>;
}

export interface AttributionView {
  /** Pods found by their source IP in the informer's index: always. */
  sourceIp: true;
  /** Connections from the node's own addresses attributed by socket cgroup (--intercept-host-network). */
  socketCgroup: boolean;
  socketCgroupLookupsPending: number;
  /** Further strategies (socket attestation, ...) by name, as each reports itself. */
  strategies: Record<string, unknown>;
}

export interface ResourceFreshness {
  resource: string;
  synced: boolean;
  /** Seconds since the API server last confirmed this resource; null when unknown. */
  ageSeconds: number | null;
  errors: number;
}

export interface StateView {
  source: 'file' | 'kubernetes';
  synced: boolean;
  stale: boolean;
  /** --max-state-staleness (0: off). */
  maxStalenessSeconds: number;
  resources: ResourceFreshness[];
  counts: Record<string, number>;
}

/** How a token source's calls went lately. */
export interface CallHealth {
  /** Answers (any status) and failures (transport, 5xx, 429) in the last `windowSeconds`. */
  windowSeconds: number;
  answered: number;
  failed: number;
  lastSuccess: string | null;
  lastFailure: { at: string; result: string } | null;
  /** The most recent call failed, within the window. */
  failing: boolean;
}

export interface BudgetView extends CallHealth {
  /** `imds`, or another token source's name. */
  source: string;
  limits: Record<string, number>;
  inFlight: number;
  queued: Record<string, number>;
}

export interface ProblemEntry {
  level: 'warn' | 'error' | 'fatal';
  component: string | null;
  message: string;
  /** The last error's message, when the log line carried one. */
  detail: string | null;
  count: number;
  first: string;
  last: string;
}

export interface NodeStatus {
  version: string;
  node: string;
  pid: number;
  uptimeSeconds: number;
  health: Health;
  /** Why the health is not ok, in words an operator can act on. */
  problems: string[];
  readiness: { ready: boolean; reasons: string[] };
  mode: { operation: string; forceNamespaced: boolean };
  interception: InterceptionView;
  attribution: AttributionView;
  state: StateView;
  budgets: BudgetView[];
  tokenCache: { enabled: boolean; entries: number };
  errors: { windowSeconds: number; entries: ProblemEntry[] };
}

/** Not ready wins; otherwise anything that makes answers wrong or slow is degraded. */
export function assessHealth(s: Omit<NodeStatus, 'health' | 'problems'>): { health: Health; problems: string[] } {
  if (!s.readiness.ready) return { health: 'not_ready', problems: [...s.readiness.reasons] };
  const problems: string[] = [];
  if (s.state.stale) {
    const oldest = Math.max(0, ...s.state.resources.map((r) => r.ageSeconds ?? 0));
    problems.push(`cluster state is stale: the Kubernetes API last confirmed it ${Math.round(oldest)} s ago`);
  }
  if (s.interception.mode === 'iptables' && s.interception.lastError !== null) problems.push(`the last rule check failed: ${s.interception.lastError}`);
  for (const b of s.budgets) {
    if (b.failing) problems.push(`${b.source} is failing: last call ${b.lastFailure?.result ?? 'failed'} at ${b.lastFailure?.at ?? '?'} (${b.failed} of ${b.answered + b.failed} calls failed in ${b.windowSeconds} s)`);
  }
  return { health: problems.length === 0 ? 'ok' : 'degraded', problems };
}

import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';

export interface InterceptionMetrics {
  repairs: Counter<'reason'>;
  failures: Counter<'operation'>;
  lastSuccess: Gauge;
  installed: Gauge;
  /** Only when that part is kept at all: a 0 would read as "missing" where it is not wanted. */
  guardInstalled: Gauge | undefined;
  hostInstalled: Gauge | undefined;
}

// A second InterceptionRules on the same registry (restart in-process, tests) reuses the
// metrics instead of failing on a duplicate name.
function reuse<T>(registry: Registry, name: string, create: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? create();
}

// Every series exists from the start, at 0, so that rate() and alerts see the first increment.
const DRIFTS = ['chain_missing', 'chain_changed', 'jump_missing', 'jump_duplicate', 'jump_misplaced'];
const REASONS = [...DRIFTS, ...DRIFTS.map((d) => `guard_${d}`), ...DRIFTS.map((d) => `host_${d}`), 'route_localnet'];
const OPERATIONS = ['read_rules', 'write_rules', 'verify_rules', 'route_localnet', 'localnet_guard', 'conntrack', 'check',
  'host_cgroups', 'read_host_rules', 'write_host_rules', 'verify_host_rules'];

export function interceptionMetrics(registry: Registry, parts: { guard: boolean; host: boolean } = { guard: false, host: false }): InterceptionMetrics {
  const metrics = createMetrics(registry, parts);
  for (const reason of REASONS) metrics.repairs.inc({ reason }, 0);
  for (const operation of OPERATIONS) metrics.failures.inc({ operation }, 0);
  return metrics;
}

function createMetrics(registry: Registry, parts: { guard: boolean; host: boolean }): InterceptionMetrics {
  const registers = [registry];
  return {
    repairs: reuse(registry, 'podid_nmi_iptables_repairs_total', () => new Counter({
      name: 'podid_nmi_iptables_repairs_total',
      help: 'Times the interception rules or route_localnet were (re)installed, by what was wrong',
      labelNames: ['reason'] as const, registers,
    })),
    failures: reuse(registry, 'podid_nmi_iptables_failures_total', () => new Counter({
      name: 'podid_nmi_iptables_failures_total',
      help: 'Failed iptables, sysctl or conntrack operations (retried on the next check)',
      labelNames: ['operation'] as const, registers,
    })),
    lastSuccess: reuse(registry, 'podid_nmi_iptables_last_success_timestamp_seconds', () => new Gauge({
      name: 'podid_nmi_iptables_last_success_timestamp_seconds',
      help: 'Unix time of the last check that left the interception rules in place',
      registers,
    })),
    installed: reuse(registry, 'podid_nmi_iptables_rules_installed', () => new Gauge({
      name: 'podid_nmi_iptables_rules_installed',
      help: '1 when the last check found or left the interception rules in place, 0 otherwise',
      registers,
    })),
    guardInstalled: !parts.guard ? undefined : reuse(registry, 'podid_nmi_iptables_localnet_guard_installed', () => new Gauge({
      name: 'podid_nmi_iptables_localnet_guard_installed',
      help: '1 when the route_localnet guard (filter chain PODID-NMI-LOCALNET) is in place, 0 when it could not be installed '
        + '(only when the DNAT target is a loopback address)',
      registers,
    })),
    hostInstalled: !parts.host ? undefined : reuse(registry, 'podid_nmi_iptables_host_rules_installed', () => new Gauge({
      name: 'podid_nmi_iptables_host_rules_installed',
      help: '1 when the hostNetwork chain (aad-metadata-host) is in place, 0 when it could not be kept '
        + '(only with --intercept-host-network); pod-network interception does not depend on it',
      registers,
    })),
  };
}

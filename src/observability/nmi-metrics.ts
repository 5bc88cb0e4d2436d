// aad-pod-identity NMI's own series (v1.8.17 pkg/metrics/metrics.go), so the dashboards and
// alerts built for NMI keep working: same names, types, label names and meanings, and NMI's
// bucket bounds (plus finer ones below NMI's 0.5 s floor). Unlike NMI, no label value is ever
// taken from what a pod sent: paths are the canonical route, resources a closed list.
import { Counter, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import type { RouteName } from '../matcher/routes.ts';
import { histogramSeries } from './histogram-series.ts';
import { LabelChildren } from './label-children.ts';
import type { RequestObserver, RequestOutcome } from './request-outcome.ts';

const NMI_OPERATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100];
const IMDS_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 10];

/** NMI labelled by the raw request path; here the canonical path of the route that matched. */
export const OPERATION_PATHS: Readonly<Record<RouteName | 'host_token' | 'unknown', string>> = {
  token: '/metadata/identity/oauth2/token',
  instance: '/metadata/instance',
  attested: '/metadata/attested/document',
  identity_info: '/metadata/identity/info',
  scheduledevents: '/metadata/scheduledevents',
  loadbalancer: '/metadata/loadbalancer',
  versions: '/metadata/versions',
  host_token: '/host/token',
  unknown: 'other',
};

/**
 * Token audiences worth a series of their own. Anything else a pod asks for is counted as
 * `other`: NMI used the raw `resource` parameter, so one pod could mint unlimited series.
 */
export const KNOWN_RESOURCES: readonly string[] = [
  'https://management.azure.com/',
  'https://management.core.windows.net/',
  'https://vault.azure.net',
  'https://storage.azure.com/',
  'https://database.windows.net/',
  'https://ossrdbms-aad.database.windows.net',
  'https://graph.microsoft.com/',
  'https://servicebus.azure.net',
  'https://eventhubs.azure.net',
  'https://cosmos.azure.com',
  'https://monitor.azure.com/',
  'https://cognitiveservices.azure.com',
  'https://api.loganalytics.io',
  'https://kusto.kusto.windows.net',
  'https://redis.azure.com',
  '6dae42f8-4368-4678-94ff-3960e28e3630',
];

const RESOURCE_LABEL = new Map<string, string>();
for (const r of KNOWN_RESOURCES) {
  const bare = r.endsWith('/') ? r.slice(0, -1) : r;
  if (!RESOURCE_LABEL.has(bare)) RESOURCE_LABEL.set(bare, r);
}

/** The `resource` label: a known audience as listed (with or without its trailing slash, any case), else `other`. */
export function resourceLabel(resource: string | undefined): string {
  if (resource === undefined || resource === '') return '';
  const bare = (resource.endsWith('/') ? resource.slice(0, -1) : resource).toLowerCase();
  return RESOURCE_LABEL.get(bare) ?? 'other';
}

const KUBE_ERRORS = 'aadpodidentity_kubernetes_api_operations_errors_count';

/** NMI's count of failed Kubernetes API operations; shared by the informers and the Event writer. */
export function kubernetesApiErrors(registry: Registry): Counter<'operation_type'> {
  const existing = registry.getSingleMetric(KUBE_ERRORS);
  if (existing !== undefined) return existing as Counter<'operation_type'>;
  return new Counter({
    name: KUBE_ERRORS,
    help: 'Total number of errors in kubernetes api operations, by operation_type (<verb>_<resource>: list_pods, watch_azureidentities, create_events, ...)',
    labelNames: ['operation_type'],
    registers: [registry],
  });
}

export class NmiMetrics implements RequestObserver {
  readonly #operations: Histogram<'operation_type' | 'status_code' | 'namespace' | 'resource'>;
  readonly #imdsDuration: Histogram<'operation_type'>;
  readonly #imdsErrors: Counter<'operation_type'>;
  readonly #operationChildren: LabelChildren<{ observe(v: number): void }>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#operations = new Histogram({
      name: 'aadpodidentity_nmi_operations_duration_seconds',
      help: 'Duration in seconds for nmi operations (operation_type: canonical route path; namespace: the calling pod\'s; resource: a known audience or "other")',
      labelNames: ['operation_type', 'status_code', 'namespace', 'resource'], buckets: NMI_OPERATION_BUCKETS, registers,
    });
    this.#imdsDuration = new Histogram({
      name: 'aadpodidentity_imds_operations_duration_seconds',
      help: 'Duration in seconds of imds token operations that succeeded',
      labelNames: ['operation_type'], buckets: IMDS_BUCKETS, registers,
    });
    this.#imdsErrors = new Counter({
      name: 'aadpodidentity_imds_operations_errors_count',
      help: 'Total number of errors in imds token operations (any answer but 200, or no answer)',
      labelNames: ['operation_type'], registers,
    });
    kubernetesApiErrors(registry);
    this.#operationChildren = new LabelChildren(4, (values) => histogramSeries(this.#operations, ['operation_type', 'status_code', 'namespace', 'resource'], values));
    for (const op of ['adal_token_msi', 'adal_token_msi_userassignedid']) this.#imdsErrors.inc({ operation_type: op }, 0);
  }

  finished(o: RequestOutcome): void {
    this.#operationChildren.get(OPERATION_PATHS[o.route], o.status, o.pod?.namespace ?? '', resourceLabel(o.request?.resource)).observe(o.seconds);
    if (o.route !== 'token' || o.upstream === undefined || o.cache === 'hit') return;
    // As NMI: by client id is "userassignedid", a pass-through without a selector is plain "msi".
    const upstreamSelector = o.decision !== undefined && 'upstream' in o.decision ? o.decision.upstream : undefined;
    const operation = upstreamSelector === undefined ? 'adal_token_msi' : 'adal_token_msi_userassignedid';
    if (o.upstream.result === 200) this.#imdsDuration.observe({ operation_type: operation }, o.upstream.seconds);
    else this.#imdsErrors.inc({ operation_type: operation });
  }
}

// The resources the fake API server serves, and how request paths map onto them.

export interface ResourceInfo {
  readonly plural: string;
  readonly kind: string;
  readonly listKind: string;
  readonly apiVersion: string;
  /** Built-in lists omit kind/apiVersion on items; custom resource lists carry them. */
  readonly itemsCarryKind: boolean;
  /** Field selector labels the real API server accepts for this resource. */
  readonly fields: ReadonlySet<string>;
}

const COMMON_FIELDS = ['metadata.name', 'metadata.namespace'];
const AAD = 'aadpodidentity.k8s.io/v1';

function crd(plural: string, kind: string): ResourceInfo {
  return { plural, kind, listKind: `${kind}List`, apiVersion: AAD, itemsCarryKind: true, fields: new Set(COMMON_FIELDS) };
}

export const RESOURCES: Readonly<Record<string, ResourceInfo>> = {
  pods: {
    plural: 'pods',
    kind: 'Pod',
    listKind: 'PodList',
    apiVersion: 'v1',
    itemsCarryKind: false,
    fields: new Set([
      ...COMMON_FIELDS, 'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName',
      'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName',
    ]),
  },
  // Cluster-scoped; served for the startup-taint removal (get and JSON patch).
  nodes: {
    plural: 'nodes', kind: 'Node', listKind: 'NodeList', apiVersion: 'v1', itemsCarryKind: false,
    fields: new Set(['metadata.name', 'spec.unschedulable']),
  },
  // Read by GET only (service principals' Secrets); service accounts for TokenRequest.
  secrets: { plural: 'secrets', kind: 'Secret', listKind: 'SecretList', apiVersion: 'v1', itemsCarryKind: false, fields: new Set(COMMON_FIELDS) },
  serviceaccounts: { plural: 'serviceaccounts', kind: 'ServiceAccount', listKind: 'ServiceAccountList', apiVersion: 'v1', itemsCarryKind: false, fields: new Set(COMMON_FIELDS) },
  azureidentities: crd('azureidentities', 'AzureIdentity'),
  azureidentitybindings: crd('azureidentitybindings', 'AzureIdentityBinding'),
  azurepodidentityexceptions: crd('azurepodidentityexceptions', 'AzurePodIdentityException'),
  azureassignedidentities: crd('azureassignedidentities', 'AzureAssignedIdentity'),
  // apps/v1; served for `nmi explain`, which reads the deployed DaemonSet's flags.
  daemonsets: {
    plural: 'daemonsets', kind: 'DaemonSet', listKind: 'DaemonSetList', apiVersion: 'apps/v1', itemsCarryKind: false,
    fields: new Set(COMMON_FIELDS),
  },
};

export type ResourceName = 'pods' | 'nodes' | 'secrets' | 'serviceaccounts' | 'azureidentities' | 'azureidentitybindings' | 'azurepodidentityexceptions' | 'azureassignedidentities' | 'daemonsets';

export interface ResourcePath {
  resource: ResourceInfo;
  namespace?: string;
  name?: string;
}

const SEGMENT = '([a-z0-9]([-a-z0-9.]*[a-z0-9])?)';
const CORE = new RegExp(`^/api/v1(?:/namespaces/${SEGMENT})?/(pods|nodes|secrets|serviceaccounts)(?:/${SEGMENT})?$`);
const CUSTOM = new RegExp(`^/apis/aadpodidentity\\.k8s\\.io/v1(?:/namespaces/${SEGMENT})?/([a-z]+)(?:/${SEGMENT})?$`);
const APPS = new RegExp(`^/apis/apps/v1(?:/namespaces/${SEGMENT})?/(daemonsets)(?:/${SEGMENT})?$`);

/** undefined for a path that names no served resource. */
export function resolvePath(path: string): ResourcePath | undefined {
  const apps = APPS.exec(path);
  if (apps !== null) {
    const out: ResourcePath = { resource: RESOURCES.daemonsets! };
    if (apps[1] !== undefined) out.namespace = apps[1];
    if (apps[4] !== undefined) out.name = apps[4];
    return out;
  }
  const core = CORE.exec(path);
  const m = core ?? CUSTOM.exec(path);
  if (m === null) return undefined;
  const resource = RESOURCES[m[3]!];
  // Pods and nodes live only under /api/v1, the custom resources only under their group; nodes have no namespace.
  const coreKind = resource?.plural === 'pods' || resource?.plural === 'nodes' || resource?.plural === 'secrets' || resource?.plural === 'serviceaccounts';
  if (resource === undefined || (core === null) === coreKind) return undefined;
  if (resource.plural === 'nodes' && m[1] !== undefined) return undefined;
  const out: ResourcePath = { resource };
  if (m[1] !== undefined) out.namespace = m[1];
  if (m[4] !== undefined) out.name = m[4];
  return out;
}

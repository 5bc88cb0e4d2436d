// Raw API objects as the real server stores them, for the fake API server's store.
import type { Obj } from './store.ts';

export interface PodFixture {
  name: string;
  namespace?: string;
  node?: string;
  /** Omitted: the pod has no IP yet (as before the CNI assigns one). */
  ip?: string | string[];
  phase?: string;
  labels?: Record<string, string>;
  hostNetwork?: boolean;
  uid?: string;
}

export function pod(f: PodFixture): Obj {
  const ips = f.ip === undefined ? [] : Array.isArray(f.ip) ? f.ip : [f.ip];
  const status: Obj = { phase: f.phase ?? (ips.length > 0 ? 'Running' : 'Pending') };
  if (ips.length > 0) {
    status.podIP = ips[0];
    status.podIPs = ips.map((ip) => ({ ip }));
  }
  return {
    metadata: {
      name: f.name,
      namespace: f.namespace ?? 'default',
      ...(f.uid !== undefined ? { uid: f.uid } : {}),
      ...(f.labels !== undefined ? { labels: f.labels } : {}),
    },
    spec: {
      nodeName: f.node ?? 'node-a',
      containers: [{ name: 'app', image: 'registry.example/app:1' }],
      ...(f.hostNetwork === true ? { hostNetwork: true } : {}),
    },
    status,
  };
}

export function identity(f: { name: string; namespace?: string; clientID: string; resourceID?: string; type?: number }): Obj {
  return {
    metadata: { name: f.name, namespace: f.namespace ?? 'default' },
    spec: { type: f.type ?? 0, clientID: f.clientID, resourceID: f.resourceID ?? `/subscriptions/0000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${f.name}` },
  };
}

export function binding(f: { name: string; namespace?: string; azureIdentity: string; selector: string }): Obj {
  return {
    metadata: { name: f.name, namespace: f.namespace ?? 'default' },
    spec: { azureIdentity: f.azureIdentity, selector: f.selector },
  };
}

export function exception(f: { name: string; namespace?: string; podLabels: Record<string, string> }): Obj {
  return {
    metadata: { name: f.name, namespace: f.namespace ?? 'default' },
    spec: { podLabels: f.podLabels },
  };
}

/**
 * An AzureAssignedIdentity as MIC v1.8.17 writes it (pkg/mic makeAssignedIDs): name
 * <pod>-<podNamespace>-<identity>, namespace `default` unless namespaced, the only label
 * `nodename`, embedded copies of the identity and of the binding, status.status Created then
 * Assigned ('' for an AAI made before MIC had states).
 */
export function assignedIdentity(f: { pod: string; podNamespace: string; identity: Obj; selector: string; node: string; state?: string; namespace?: string }): Obj {
  const id = structuredClone(f.identity);
  const idMeta = id.metadata as { name: string; namespace: string };
  const status: Obj = { availableReplicas: 1 };
  if (f.state !== '') status.status = f.state ?? 'Assigned';
  return {
    metadata: { name: `${f.pod}-${f.podNamespace}-${idMeta.name}`, namespace: f.namespace ?? 'default', labels: { nodename: f.node } },
    spec: {
      azureIdentityRef: id,
      azureBindingRef: binding({ name: `${idMeta.name}-binding`, namespace: idMeta.namespace, azureIdentity: idMeta.name, selector: f.selector }),
      pod: f.pod, podNamespace: f.podNamespace, nodename: f.node,
    },
    status,
  };
}

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

// Builders for cluster objects in tests: only the fields a case cares about are spelled out.
import type { AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, PodInfo } from '../../src/cluster/objects.ts';

export function pod(p: Partial<PodInfo> & { name: string; ips: string[] }): PodInfo {
  return {
    uid: p.uid ?? `uid-${p.namespace ?? 'default'}-${p.name}`,
    namespace: p.namespace ?? 'default',
    name: p.name,
    labels: p.labels ?? {},
    ips: p.ips,
    phase: p.phase ?? 'Running',
    hostNetwork: p.hostNetwork ?? false,
    nodeName: p.nodeName ?? 'node-1',
    ...(p.serviceAccount === undefined ? {} : { serviceAccount: p.serviceAccount }),
  };
}

export function identity(i: Partial<AzureIdentity> & { name: string }): AzureIdentity {
  return { ...i, namespace: i.namespace ?? 'default', name: i.name, type: i.type ?? 0, clientID: i.clientID ?? '', resourceID: i.resourceID ?? '' };
}

export function binding(b: Partial<AzureIdentityBinding> & { name: string; azureIdentity: string; selector: string }): AzureIdentityBinding {
  return { namespace: b.namespace ?? 'default', name: b.name, azureIdentity: b.azureIdentity, selector: b.selector };
}

export function exception(e: Partial<AzurePodIdentityException> & { name: string; podLabels: Record<string, string> }): AzurePodIdentityException {
  return { namespace: e.namespace ?? 'default', name: e.name, podLabels: e.podLabels };
}

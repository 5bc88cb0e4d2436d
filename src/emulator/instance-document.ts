import type { EmulatedIdentity } from './types.ts';

export const DEFAULT_TENANT_ID = '72f988bf-0000-4000-8000-00000000e3a1';

export const API_VERSIONS = [
  '2017-03-01', '2017-04-02', '2017-08-01', '2017-10-01', '2017-12-01', '2018-02-01',
  '2018-04-02', '2018-10-01', '2019-02-01', '2019-03-11', '2019-04-30', '2019-06-01',
  '2019-06-04', '2019-08-01', '2019-08-15', '2019-11-01', '2020-06-01', '2020-07-15',
  '2020-09-01', '2020-10-01', '2020-12-01', '2021-01-01', '2021-02-01', '2021-03-01',
  '2021-05-01', '2021-10-01', '2021-11-01', '2021-11-15', '2021-12-13', '2023-07-01',
  '2023-11-15', '2024-03-15', '2025-04-07',
];

/** A plausible, fixed instance document: enough shape for clients that walk into it. */
export function instanceDocument(tenantId: string, identities: readonly EmulatedIdentity[]): Record<string, unknown> {
  const subscriptionId = '00000000-0000-4000-8000-000000000001';
  return {
    compute: {
      azEnvironment: 'AzurePublicCloud',
      location: 'westeurope',
      name: 'aks-nodepool1-12345678-vmss_0',
      offer: '',
      osType: 'Linux',
      provider: 'Microsoft.Compute',
      resourceGroupName: 'MC_emulated_cluster_westeurope',
      resourceId: `/subscriptions/${subscriptionId}/resourceGroups/MC_emulated_cluster_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-12345678-vmss/virtualMachines/0`,
      subscriptionId,
      tags: 'aks-managed-poolName:nodepool1',
      tagsList: [{ name: 'aks-managed-poolName', value: 'nodepool1' }],
      userData: '',
      vmId: '00000000-0000-4000-8000-0000000000aa',
      vmScaleSetName: 'aks-nodepool1-12345678-vmss',
      vmSize: 'Standard_D2s_v5',
      zone: '1',
    },
    network: {
      interface: [
        {
          ipv4: { ipAddress: [{ privateIpAddress: '10.224.0.4', publicIpAddress: '' }], subnet: [{ address: '10.224.0.0', prefix: '16' }] },
          ipv6: { ipAddress: [] },
          macAddress: '000D3A000001',
        },
      ],
    },
    // Not part of real IMDS: lets a human see which identities this emulator serves.
    emulator: { tenantId, userAssignedClientIds: identities.map((i) => i.clientID) },
  };
}

export const LOADBALANCER_DOCUMENT = {
  loadbalancer: { publicIpAddresses: [], inboundRules: [], outboundRules: [] },
};

export function attestedDocument(nonce: string | undefined): Record<string, string> {
  const payload = JSON.stringify({ nonce: nonce ?? '', vmId: '00000000-0000-4000-8000-0000000000aa' });
  return { encoding: 'pkcs7', signature: Buffer.from(`fake-pkcs7:${payload}`).toString('base64') };
}

export type DocumentLookup = { found: true; value: unknown } | { found: false };

/** Walks `/compute/location`-style subpaths; arrays are indexed by number as in IMDS. */
export function lookupSubpath(doc: unknown, segments: readonly string[]): DocumentLookup {
  let node: unknown = doc;
  for (const seg of segments) {
    if (Array.isArray(node)) {
      if (!/^\d+$/.test(seg)) return { found: false };
      const idx = Number(seg);
      if (idx >= node.length) return { found: false };
      node = node[idx];
    } else if (node !== null && typeof node === 'object' && Object.hasOwn(node, seg)) {
      node = (node as Record<string, unknown>)[seg];
    } else {
      return { found: false };
    }
  }
  return { found: true, value: node };
}

/** IMDS' text format: a leaf as itself; a node as the list of its children. */
export function asText(value: unknown): string {
  if (Array.isArray(value)) return value.map((_, i) => String(i)).join('\n');
  if (value !== null && typeof value === 'object') {
    return Object.entries(value)
      .map(([k, v]) => (v !== null && typeof v === 'object' ? `${k}/` : k))
      .join('\n');
  }
  return String(value);
}

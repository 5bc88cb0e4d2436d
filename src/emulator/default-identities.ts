import type { EmulatedIdentity } from './types.ts';

const RG = '/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/emulated-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities';

/** Recognisable ids, so a token seen in a log tells at once which identity minted it. */
export const DEFAULT_SYSTEM_ASSIGNED: EmulatedIdentity = {
  clientID: '00000000-0000-4000-8000-5a5a5a5a0000',
  objectID: '00000000-0000-4000-8000-0b0b0b0b0000',
  resourceID: '/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/MC_emulated_cluster_westeurope/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-12345678-vmss',
};

export const DEFAULT_USER_ASSIGNED: EmulatedIdentity[] = [
  {
    clientID: '11111111-1111-4111-8111-111111111111',
    objectID: '11111111-0000-4000-8000-0b0b0b0b0001',
    resourceID: `${RG}/id-one`,
  },
  {
    clientID: '22222222-2222-4222-8222-222222222222',
    objectID: '22222222-0000-4000-8000-0b0b0b0b0002',
    resourceID: `${RG}/id-two`,
  },
];

export interface IdentitiesFile {
  systemAssigned?: EmulatedIdentity;
  identities: EmulatedIdentity[];
  tenantId?: string;
}

function asIdentity(v: unknown, where: string): EmulatedIdentity {
  if (v === null || typeof v !== 'object') throw new Error(`${where}: expected an object`);
  const o = v as Record<string, unknown>;
  for (const k of ['clientID', 'resourceID', 'objectID']) {
    if (typeof o[k] !== 'string' || o[k] === '') throw new Error(`${where}.${k}: expected a non-empty string`);
  }
  if (o['principalId'] !== undefined && typeof o['principalId'] !== 'string') {
    throw new Error(`${where}.principalId: expected a string`);
  }
  const id: EmulatedIdentity = {
    clientID: o['clientID'] as string,
    resourceID: o['resourceID'] as string,
    objectID: o['objectID'] as string,
  };
  if (typeof o['principalId'] === 'string') id.principalId = o['principalId'];
  return id;
}

/** Validates `{"systemAssigned":{…},"identities":[…],"tenantId":"…"}`; throws naming the bad field. */
export function parseIdentitiesFile(text: string): IdentitiesFile {
  const raw: unknown = JSON.parse(text);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('expected a JSON object');
  const o = raw as Record<string, unknown>;
  const list = o['identities'] ?? [];
  if (!Array.isArray(list)) throw new Error('identities: expected an array');
  const out: IdentitiesFile = { identities: list.map((v, i) => asIdentity(v, `identities[${i}]`)) };
  if (o['systemAssigned'] !== undefined) out.systemAssigned = asIdentity(o['systemAssigned'], 'systemAssigned');
  if (o['tenantId'] !== undefined) {
    if (typeof o['tenantId'] !== 'string') throw new Error('tenantId: expected a string');
    out.tenantId = o['tenantId'];
  }
  return out;
}

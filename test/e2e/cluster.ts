// The end-to-end test's cluster: four pods on one node, the identities IMDS holds for that
// node, and the aad-pod-identity objects that bind them. Plain data: the fake API server
// serves the objects, the IMDS emulator serves the identities.
import type { EmulatedIdentity } from '../../src/emulator/imds-emulator.ts';
import { assignedIdentity, binding, exception, identity, pod } from '../fake-apiserver/fixtures.ts';
import type { Obj } from '../fake-apiserver/store.ts';

export const NODE_NAME = 'e2e-node';
export const NODE_GATEWAY = '10.250.0.1';
export const RESOURCE = 'https://vault.azure.net';
export const SCOPE = `${RESOURCE}/.default`;

const RG = '/subscriptions/00000000-0000-4000-8000-00000000e2e0/resourceGroups/e2e-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities';

/** The user-assigned identities of the node's VM: IMDS mints any of them for whoever asks it directly. */
export const IDS = {
  /** Bound to pod A. */
  A: { clientID: 'aaaaaaaa-0000-4000-8000-00000000000a', objectID: 'aaaaaaaa-0000-4000-8000-0b0b0b0b000a', resourceID: `${RG}/id-a` },
  /** Bound to pod B: the "other pod's identity" pod A must never get. */
  B: { clientID: 'bbbbbbbb-0000-4000-8000-00000000000b', objectID: 'bbbbbbbb-0000-4000-8000-0b0b0b0b000b', resourceID: `${RG}/id-b` },
  /** What the excepted pod X names itself. */
  C: { clientID: 'cccccccc-0000-4000-8000-00000000000c', objectID: 'cccccccc-0000-4000-8000-0b0b0b0b000c', resourceID: `${RG}/id-c` },
} as const satisfies Record<string, EmulatedIdentity>;

export type PodKey = 'a' | 'b' | 'u' | 'x';

export interface PodSpec {
  /** Name of its network namespace suffix and of the Kubernetes pod. */
  name: string;
  namespace: string;
  ip: string;
  /** Its pod UID: socket attestation finds the pod's processes through kubelet's cgroup named for it. */
  uid: string;
  labels?: Record<string, string>;
}

export const PODS: Record<PodKey, PodSpec> = {
  a: { name: 'pod-a', namespace: 'team-a', ip: '10.250.0.10', uid: 'aaaaaaaa-3333-4000-8000-00000000000a', labels: { aadpodidbinding: 'a', app: 'a' } },
  b: { name: 'pod-b', namespace: 'team-b', ip: '10.250.0.11', uid: 'bbbbbbbb-3333-4000-8000-00000000000b', labels: { aadpodidbinding: 'b' } },
  u: { name: 'pod-u', namespace: 'team-a', ip: '10.250.0.12', uid: 'eeeeeeee-3333-4000-8000-00000000000e', labels: { app: 'unlabelled' } },
  x: { name: 'pod-x', namespace: 'kube-system', ip: '10.250.0.13', uid: 'ffffffff-3333-4000-8000-00000000000f', labels: { 'kubernetes.azure.com/managedby': 'aks', component: 'agent' } },
};

/** What the emulator serves: A, B and C, and no system-assigned identity. */
export const IMDS_IDENTITIES = { identities: [IDS.A, IDS.B, IDS.C] };

/** The objects the fake API server holds, in creation order. */
export function clusterObjects(): Array<{ resource: 'pods' | 'azureidentities' | 'azureidentitybindings' | 'azurepodidentityexceptions' | 'azureassignedidentities'; object: Obj }> {
  const pods = Object.values(PODS).map((p) => ({
    resource: 'pods' as const,
    object: pod({ name: p.name, namespace: p.namespace, uid: p.uid, node: NODE_NAME, ip: p.ip, phase: 'Running', ...(p.labels ? { labels: p.labels } : {}) }),
  }));
  const idA = identity({ name: 'id-a', namespace: 'team-a', clientID: IDS.A.clientID, resourceID: IDS.A.resourceID, type: 0 });
  const idB = identity({ name: 'id-b', namespace: 'team-b', clientID: IDS.B.clientID, resourceID: IDS.B.resourceID, type: 0 });
  return [
    { resource: 'azureidentities', object: idA },
    { resource: 'azureidentitybindings', object: binding({ name: 'bind-a', namespace: 'team-a', azureIdentity: 'id-a', selector: 'a' }) },
    { resource: 'azureidentities', object: idB },
    { resource: 'azureidentitybindings', object: binding({ name: 'bind-b', namespace: 'team-b', azureIdentity: 'id-b', selector: 'b' }) },
    // What MIC writes for pods A and B in standard mode; managed mode does not read them.
    { resource: 'azureassignedidentities', object: assignedIdentity({ pod: PODS.a.name, podNamespace: PODS.a.namespace, identity: idA, selector: 'a', node: NODE_NAME }) },
    { resource: 'azureassignedidentities', object: assignedIdentity({ pod: PODS.b.name, podNamespace: PODS.b.namespace, identity: idB, selector: 'b', node: NODE_NAME }) },
    { resource: 'azurepodidentityexceptions', object: exception({ name: 'aks-managed', namespace: 'kube-system', podLabels: { 'kubernetes.azure.com/managedby': 'aks' } }) },
    ...pods,
  ];
}

/** The token request the daemon must send upstream for `clientId`: rebuilt, nothing from the pod. */
export function rebuiltTokenUrl(clientId: string): string {
  return `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(RESOURCE)}&client_id=${clientId}`;
}

// The slices of Kubernetes objects that decisions read. Both cluster-state sources
// (manifests file, informers) convert into these, so the decision never sees raw API objects.

export const BINDING_LABEL = 'aadpodidbinding';

export interface PodInfo {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Canonical text form of every address in status.podIPs (IPv4 dotted, IPv6 compressed lower-case). */
  readonly ips: readonly string[];
  readonly phase: string;
  readonly hostNetwork: boolean;
  readonly nodeName: string;
  /** spec.serviceAccountName ('default' when unset): the subject of its federated tokens. */
  readonly serviceAccount?: string;
}

/** Logged once per such binding by either source: it grants nothing here, unlike in NMI. */
export const EMPTY_SELECTOR_WARNING =
  'AzureIdentityBinding has an empty selector: it matches no pod here (aad-pod-identity NMI let it grant every unlabelled pod of its namespace)';

/** AzureIdentity spec.type: 0 user-assigned managed identity, 1 service principal + secret, 2 + certificate. */
export const USER_ASSIGNED_MSI = 0;
export const SERVICE_PRINCIPAL_SECRET = 1;
export const SERVICE_PRINCIPAL_CERTIFICATE = 2;

/** On an AzureIdentity of type 0: `workload-identity` mints its tokens from Entra ID by federation, not from IMDS. */
export const TOKEN_SOURCE_ANNOTATION = 'podid-nmi.io/token-source';

export interface SecretRef {
  readonly namespace: string;
  readonly name: string;
}

export interface AzureIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly type: number;
  readonly clientID: string;
  readonly resourceID: string;
  /** Annotation `aadpodidentity.k8s.io/Behavior: namespaced`: in standard mode, only pods of its own namespace may use it. */
  readonly namespaced?: boolean;
  /** spec.tenantID: the Entra tenant of a service principal or federated identity. */
  readonly tenantID?: string;
  /** spec.clientPassword: the Secret holding a service principal's secret or certificate. */
  readonly clientPassword?: SecretRef;
  /** spec.adEndpoint: the Entra authority host for this identity (NMI's per-identity cloud). */
  readonly adEndpoint?: string;
  readonly auxiliaryTenantIDs?: readonly string[];
  /** The token-source annotation's value, as written ('' when absent). */
  readonly tokenSource?: string;
}

export const NAMESPACED_ANNOTATION = 'aadpodidentity.k8s.io/Behavior';

export interface AzureIdentityBinding {
  readonly namespace: string;
  readonly name: string;
  readonly azureIdentity: string;
  readonly selector: string;
}

export interface AzurePodIdentityException {
  readonly namespace: string;
  readonly name: string;
  readonly podLabels: Readonly<Record<string, string>>;
}

/** MIC's AzureAssignedIdentity status.status: `Created`, then `Assigned` once the identity is on the VM/VMSS. */
export const ASSIGNED = 'Assigned';
export const CREATED = 'Created';

/**
 * Standard mode: MIC's record that an identity is (being) assigned to a pod on a node. The
 * identity is MIC's embedded copy (spec.azureIdentityRef), as NMI used it.
 */
export interface AzureAssignedIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly pod: string;
  readonly podNamespace: string;
  readonly nodeName: string;
  /** status.status: `Assigned`, `Created`, '' (made before MIC had states; NMI counted it as assigned) or another. */
  readonly state: string;
  readonly identity: AzureIdentity;
  /** The embedded binding's selector, or undefined when the AAI carries no binding. */
  readonly bindingSelector: string | undefined;
}

export type ClusterObject =
  | { kind: 'Pod'; object: PodInfo }
  | { kind: 'AzureIdentity'; object: AzureIdentity }
  | { kind: 'AzureIdentityBinding'; object: AzureIdentityBinding }
  | { kind: 'AzurePodIdentityException'; object: AzurePodIdentityException }
  | { kind: 'AzureAssignedIdentity'; object: AzureAssignedIdentity };

/** A pod that can be the source of intercepted traffic: it owns its IP, and it is alive. */
export function isInterceptable(pod: PodInfo): boolean {
  return !pod.hostNetwork && pod.ips.length > 0 && (pod.phase === 'Running' || pod.phase === 'Pending');
}

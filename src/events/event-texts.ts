// What a Kubernetes Event on the pod says about a finished token request, if anything: only
// refusals a person can act on, and IMDS's "Identity not found" for a bound identity. Texts
// name objects, selectors and ids (none of them secret) and say what to change.
import { BINDING_LABEL, SERVICE_PRINCIPAL_CERTIFICATE, USER_ASSIGNED_MSI } from '../cluster/objects.ts';
import { REFUSALS } from '../decision/reasons.ts';
import type { AzureIdentity } from '../cluster/objects.ts';
import type { ClusterView } from '../cluster/view.ts';
import type { Reason } from '../decision/reasons.ts';
import type { RequestOutcome } from '../observability/request-outcome.ts';

/** The Event reason: the refusal reason in CamelCase, stable for `kubectl get events --field-selector reason=...`. */
export const EVENT_REASONS: Partial<Record<Reason, string>> = {
  pod_unlabeled: 'PodUnlabeled',
  binding_missing: 'BindingMissing',
  identity_missing: 'IdentityMissing',
  identity_incomplete: 'IdentityIncomplete',
  identity_type_unsupported: 'IdentityTypeUnsupported',
  identity_not_bound: 'IdentityNotBound',
  object_id_unverifiable: 'ObjectIdUnverifiable',
  assignment_pending: 'AssignmentPending',
  token_source_unknown: 'TokenSourceUnknown',
  auxiliary_tenants_unsupported: 'AuxiliaryTenantsUnsupported',
  authority_insecure: 'AuthorityInsecure',
  tenant_missing: 'TenantMissing',
  tenant_invalid: 'TenantInvalid',
  secret_reference_missing: 'SecretReferenceMissing',
  secret_cross_namespace: 'SecretCrossNamespace',
};

/** Refusals of an identity's Entra configuration: the refusal's text, and which identity. */
const ENTRA_CONFIG: ReadonlySet<string> = new Set(['TokenSourceUnknown', 'AuxiliaryTenantsUnsupported', 'AuthorityInsecure', 'TenantMissing', 'TenantInvalid', 'SecretReferenceMissing', 'SecretCrossNamespace']);

/** IMDS refused an identity the pod is bound to: it is not on this node's VM or scale set. */
export const IDENTITY_NOT_ON_NODE = 'IdentityNotAssignedToNode';

/**
 * What an Entra token source found wrong while fetching (a Secret, its keys, the certificate in
 * it, the RBAC to read it, a service-account token): the pod's answer carries the reason, and
 * the person who owns the Secret or the RBAC can fix it.
 */
const SOURCE_EVENT_REASONS: Partial<Record<Reason, string>> = {
  secret_missing: 'SecretMissing',
  secret_key_missing: 'SecretKeyMissing',
  secret_unreadable: 'SecretUnreadable',
  certificate_invalid: 'CertificateInvalid',
  service_account_token_refused: 'ServiceAccountTokenRefused',
};
const SOURCE_EVENTS: ReadonlySet<string> = new Set(Object.values(SOURCE_EVENT_REASONS));

const MAX_VALUE = 256;
const MAX_NAMES = 5;

/** The Event reason for this outcome, or undefined when it deserves no Event. */
export function eventReason(o: RequestOutcome): string | undefined {
  if (o.pod === undefined) return undefined;
  if (o.reason !== undefined) return o.decision?.kind === 'refuse' || o.decision?.kind === 'pending' ? EVENT_REASONS[o.reason] : undefined;
  if (o.decision?.kind !== 'grant') return undefined;
  if (o.decision.source.kind === 'imds') {
    return o.upstream?.result === 400 && o.upstream.answer?.body.includes('Identity not found') === true ? IDENTITY_NOT_ON_NODE : undefined;
  }
  const sourceReason = o.upstream?.answer?.reason;
  return sourceReason === undefined ? undefined : SOURCE_EVENT_REASONS[sourceReason as Reason];
}

export function eventMessage(reason: string, o: RequestOutcome, view: ClusterView, node: string): string {
  const pod = o.pod!;
  const ns = pod.namespace;
  const label = pod.labels[BINDING_LABEL] ?? '';
  const bindings = label === '' ? [] : view.bindingsFor(ns, label);
  // Standard mode: what MIC assigned to the pod; managed mode: what its bindings name.
  const assigned = view.assignedTo(ns, pod.name);
  const bound = assigned.length > 0
    ? assigned.map((a) => a.identity)
    : bindings.map((b) => view.identity(ns, b.azureIdentity)).filter((i): i is AzureIdentity => i !== undefined);
  const asked = o.request?.selector;
  switch (reason) {
    case 'PodUnlabeled':
      return `No Azure identity for this pod: it has no ${BINDING_LABEL} label. Label the pod with the selector of an AzureIdentityBinding in namespace ${ns}.`;
    case 'BindingMissing':
      return `No AzureIdentityBinding in namespace ${ns} has selector ${quote(label)} (this pod's ${BINDING_LABEL} label). Create one, or fix the label.`;
    case 'IdentityMissing':
      return `AzureIdentityBinding ${names(bindings.map((b) => b.name))} in namespace ${ns} select this pod, but the AzureIdentity they name (${names(bindings.map((b) => b.azureIdentity))}) does not exist in namespace ${ns}.`;
    case 'IdentityIncomplete':
      return `AzureIdentity ${names(bound.map(qualified))} bound to this pod has neither spec.clientID nor spec.resourceID; set one.`;
    case 'IdentityTypeUnsupported':
      return `AzureIdentity ${names(bound.filter((i) => i.type < USER_ASSIGNED_MSI || i.type > SERVICE_PRINCIPAL_CERTIFICATE).map((i) => `${qualified(i)} (type ${i.type})`))} bound to this pod has a spec.type podid-nmi does not know: 0 is a user-assigned managed identity, 1 a service principal with a secret, 2 with a certificate.`;
    case 'IdentityNotBound':
      return `The pod asked for ${asked?.name ?? 'an identity'} ${quote(asked?.value ?? '')}, which is not bound to it. Bound to it: ${bound.length === 0 ? 'nothing' : names(bound.map((i) => `${qualified(i)} (clientID ${i.clientID || '-'})`))}.`;
    case 'ObjectIdUnverifiable':
      return `The pod asked for a token by object_id ${quote(asked?.value ?? '')}; AzureIdentities carry no object id to check it against. Ask by client_id or msi_res_id.`;
    case 'AssignmentPending':
      return `MIC has not assigned an identity to this pod on node ${node} yet (AzureAssignedIdentity: ${assigned.length === 0 ? 'none' : names(assigned.map((a) => `${a.namespace}/${a.name} ${a.state || 'no status'}`))}). Check that MIC runs and can assign the identity to the node's VM or scale set.`;
    case IDENTITY_NOT_ON_NODE: {
      const d = o.decision!;
      if (d.kind !== 'grant') return '';
      const id = d.identity;
      const arm = id.resourceID || `<resource id of the identity with client id ${id.clientID}>`;
      return `IMDS answered "Identity not found" for AzureIdentity ${qualified(id)} (clientID ${id.clientID || '-'}): it is not assigned to the VM or scale set of node ${node}. `
        + `Assign it: az vmss identity assign -g <node resource group> -n <scale set> --identities ${arm} (a VM: az vm identity assign -g <resource group> -n <vm> --identities ${arm}).`;
    }
    default: {
      if (SOURCE_EVENTS.has(reason)) return sourceMessage(o);
      const key = Object.keys(EVENT_REASONS).find((k) => EVENT_REASONS[k as Reason] === reason) as Reason | undefined;
      if (key !== undefined && ENTRA_CONFIG.has(reason)) return `AzureIdentity ${names(bound.map(qualified))} bound to this pod: ${REFUSALS[key].description}.`;
      return reason;
    }
  }
}

/** The identity, and what the token source said it found: its own text, which names objects, never their contents. */
function sourceMessage(o: RequestOutcome): string {
  const d = o.decision!;
  if (d.kind !== 'grant') return '';
  let found = '';
  try {
    const body = JSON.parse(o.upstream!.answer!.body.toString('utf8')) as { error_description?: unknown };
    if (typeof body.error_description === 'string') found = body.error_description;
  } catch {
    // Our own refusal's body is JSON; anything else says nothing more.
  }
  const text = found.length > 2 * MAX_VALUE ? `${found.slice(0, 2 * MAX_VALUE)}…` : found;
  return `AzureIdentity ${qualified(d.identity)} (clientID ${d.identity.clientID || '-'}) bound to this pod: ${text || 'its token source refused'}.`;
}

function qualified(i: AzureIdentity): string {
  return `${i.namespace}/${i.name}`;
}

/** Values the pod sent are bounded and quoted, so a text never grows or breaks with them. */
function quote(value: string): string {
  return JSON.stringify(value.length > MAX_VALUE ? `${value.slice(0, MAX_VALUE)}…` : value);
}

function names(list: readonly string[]): string {
  const unique = [...new Set(list)];
  const shown = unique.slice(0, MAX_NAMES).join(', ');
  return unique.length > MAX_NAMES ? `${shown} and ${unique.length - MAX_NAMES} more` : shown || '(none)';
}


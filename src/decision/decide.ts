// Where a pod's entitlement is decided. A pure function of the calling pod, the cluster
// objects, the parsed request and the mode; no I/O, no clock.
// - managed mode: bindings and identities count only in the pod's own namespace, as NMI's
//   managed mode always did;
// - standard mode: MIC's AzureAssignedIdentities say which identities a pod has; while MIC is
//   still expected to assign one, the answer is 'pending' (the caller waits, then retries).
// Choice, client_id / resource-id matching and the upstream selector are the same in both.
// The chosen identity's token source (IMDS or Entra ID, and which credential) is decided here
// too, by token-source.ts, so `nmi explain` and the daemon cannot disagree about it.
import { ASSIGNED, BINDING_LABEL, CREATED, SERVICE_PRINCIPAL_CERTIFICATE, USER_ASSIGNED_MSI } from '../cluster/objects.ts';
import type { AzureIdentity, AzurePodIdentityException, PodInfo } from '../cluster/objects.ts';
import type { ClusterView } from '../cluster/view.ts';
import type { Reason } from './reasons.ts';
import type { Selector, TokenRequest } from './token-request.ts';
import { ENTRA_DEFAULTS, IMDS_SOURCE, tokenSourceFor, type EntraPolicy, type TokenSourceChoice } from './token-source.ts';

export type OperationMode = 'managed' | 'standard';

export interface DecisionPolicy {
  readonly mode: OperationMode;
  /** Standard mode: only identities of the pod's own namespace (NMI's --forceNamespaced). Managed mode always is. */
  readonly forceNamespaced: boolean;
  /** Token sources other than IMDS (--token-source, --authority-host, --tenant-id, ...); IMDS only when absent. */
  readonly entra?: EntraPolicy;
}

export const MANAGED: DecisionPolicy = Object.freeze({ mode: 'managed', forceNamespaced: true });

/** The daemon's flags as a policy (the daemon and `nmi explain` both use it): managed mode is always namespaced. */
export function policyFor(mode: OperationMode, forceNamespaced: boolean, entra: EntraPolicy = ENTRA_DEFAULTS): DecisionPolicy {
  return { mode, forceNamespaced: mode === 'managed' || forceNamespaced, entra };
}

/** What granted the identity: a binding (managed mode) or MIC's assignment (standard mode). */
export interface Grantor {
  readonly kind: 'AzureIdentityBinding' | 'AzureAssignedIdentity';
  readonly namespace: string;
  readonly name: string;
}

export type TokenDecision =
  | {
    readonly kind: 'grant';
    readonly identity: AzureIdentity;
    readonly via: Grantor;
    /** What goes upstream to name the identity: always the identity's own id, never the pod's text. */
    readonly upstream: Selector;
    /** Who mints it: IMDS, or Entra ID with which credential (named, never its value). */
    readonly source: TokenSourceChoice;
  }
  | { readonly kind: 'pass-through'; readonly exception: AzurePodIdentityException; readonly upstream: Selector | undefined }
  /** Standard mode: MIC has not assigned a matching identity yet but is expected to. */
  | { readonly kind: 'pending' }
  | { readonly kind: 'refuse'; readonly reason: Reason };

export type DecisionCluster = Pick<ClusterView, 'bindingsFor' | 'bindingsSelecting' | 'identity' | 'exceptionsIn' | 'assignedTo'>;

interface Candidate {
  readonly identity: AzureIdentity;
  readonly via: Grantor;
}

const PENDING: TokenDecision = Object.freeze({ kind: 'pending' });

export function decideToken(pod: PodInfo, cluster: DecisionCluster, request: TokenRequest, policy: DecisionPolicy = MANAGED): TokenDecision {
  const exception = exceptionFor(pod, cluster.exceptionsIn(pod.namespace));
  if (exception !== undefined) return { kind: 'pass-through', exception, upstream: request.selector };

  const label = pod.labels[BINDING_LABEL];
  // NMI read a missing label as selector "", so an empty-selector binding granted every
  // unlabelled pod of the namespace. Here no label means no identity.
  if (label === undefined || label === '') return refuse('pod_unlabeled');
  const decision = policy.mode === 'standard'
    ? decideStandard(pod, label, cluster, request.selector, policy.forceNamespaced)
    : decideManaged(pod, label, cluster, request.selector);
  if (decision.kind !== 'grant') return decision;
  const source = tokenSourceFor(decision.identity, pod, policy.entra ?? ENTRA_DEFAULTS);
  if (typeof source === 'string') return refuse(source);
  return source.kind === 'imds' ? decision : { ...decision, source };
}

function decideManaged(pod: PodInfo, label: string, cluster: DecisionCluster, selector: Selector | undefined): TokenDecision {
  const bindings = cluster.bindingsFor(pod.namespace, label);
  if (bindings.length === 0) return refuse('binding_missing');
  if (selector?.name === 'object_id') return refuse('object_id_unverifiable');
  const candidates: Candidate[] = [];
  for (const binding of bindings) {
    const identity = cluster.identity(pod.namespace, binding.azureIdentity);
    if (identity !== undefined) candidates.push({ identity, via: { kind: 'AzureIdentityBinding', namespace: binding.namespace, name: binding.name } });
  }
  return choose(candidates, selector);
}

/**
 * MIC's AAIs for this pod count when they are on the pod's node, Assigned (or '' from MICs
 * older than states), still made for the pod's current label, and within the namespace rule.
 * When none serves the request, the answer waits only if MIC is expected to act: a matching
 * AAI is `Created`, or a binding MIC would follow selects the pod. Otherwise it is final.
 */
function decideStandard(pod: PodInfo, label: string, cluster: DecisionCluster, selector: Selector | undefined, forceNamespaced: boolean): TokenDecision {
  if (selector?.name === 'object_id') return refuse('object_id_unverifiable');
  const assigned: Candidate[] = [];
  let creating = false;
  for (const aai of cluster.assignedTo(pod.namespace, pod.name)) {
    // Another node's AAI is stale (a pod of the same name was there); another label's, the pod was relabelled.
    if (aai.nodeName !== pod.nodeName || aai.bindingSelector !== label) continue;
    if (!namespaceAllows(aai.identity, pod.namespace, forceNamespaced)) continue;
    if (aai.state === ASSIGNED || aai.state === '') {
      assigned.push({ identity: aai.identity, via: { kind: 'AzureAssignedIdentity', namespace: aai.namespace, name: aai.name } });
    } else if (aai.state === CREATED && (selector === undefined || selects(selector, aai.identity))) {
      creating = true;
    }
  }
  const chosen = choose(assigned, selector);
  if (chosen.kind === 'grant') return chosen;
  if (creating) return PENDING;
  // What MIC would assign from the bindings as they are now.
  const expected = micWouldAssign(pod, label, cluster, forceNamespaced);
  if (expected === undefined) return assigned.length === 0 ? refuse('binding_missing') : chosen;
  const fromBindings = choose(expected, selector);
  if (fromBindings.kind === 'grant') return PENDING;
  return assigned.length === 0 ? fromBindings : chosen;
}

/**
 * MIC's matching (pkg/mic getAzureAssignedIDsToCreate): bindings of any namespace (only the
 * pod's own when namespaced), identity looked up in the binding's namespace. Undefined when
 * no binding selects the pod, so nothing will ever be assigned.
 */
function micWouldAssign(pod: PodInfo, label: string, cluster: DecisionCluster, forceNamespaced: boolean): Candidate[] | undefined {
  const bindings = forceNamespaced ? cluster.bindingsFor(pod.namespace, label) : cluster.bindingsSelecting(label);
  if (bindings.length === 0) return undefined;
  const out: Candidate[] = [];
  for (const binding of bindings) {
    const identity = cluster.identity(binding.namespace, binding.azureIdentity);
    if (identity === undefined || !namespaceAllows(identity, pod.namespace, forceNamespaced)) continue;
    out.push({ identity, via: { kind: 'AzureIdentityBinding', namespace: binding.namespace, name: binding.name } });
  }
  return out;
}

function namespaceAllows(identity: AzureIdentity, podNamespace: string, forceNamespaced: boolean): boolean {
  return !(forceNamespaced || identity.namespaced === true) || identity.namespace === podNamespace;
}

/** The one choice rule of both modes: exact selector match, known identity types only, stable order. */
function choose(candidates: readonly Candidate[], selector: Selector | undefined): TokenDecision {
  let chosen: Candidate | undefined;
  let sawUnsupported = false;
  for (const c of candidates) {
    if (selector !== undefined && !selects(selector, c.identity)) continue;
    if (c.identity.type < USER_ASSIGNED_MSI || c.identity.type > SERVICE_PRINCIPAL_CERTIFICATE) {
      sawUnsupported = true;
      continue;
    }
    if (chosen === undefined || precedes(c, chosen)) chosen = c;
  }
  if (chosen === undefined) {
    if (sawUnsupported) return refuse('identity_type_unsupported');
    if (selector !== undefined && candidates.length > 0) return refuse('identity_not_bound');
    return refuse('identity_missing');
  }
  const upstream = upstreamSelector(chosen.identity);
  if (upstream === undefined) return refuse('identity_incomplete');
  return { kind: 'grant', identity: chosen.identity, via: chosen.via, upstream, source: IMDS_SOURCE };
}

function refuse(reason: Reason): TokenDecision {
  return { kind: 'refuse', reason };
}

/** An exception applies when any one of its label pairs is on the pod; values case-insensitively, as NMI. */
export function exceptionFor(pod: PodInfo, exceptions: readonly AzurePodIdentityException[]): AzurePodIdentityException | undefined {
  for (const exception of exceptions) {
    for (const key of Object.keys(exception.podLabels)) {
      const have = pod.labels[key];
      if (have !== undefined && have.toLowerCase() === exception.podLabels[key]!.toLowerCase()) return exception;
    }
  }
  return undefined;
}

/** Exact matches only: the pod must name the identity as the cluster names it. */
function selects(selector: Selector, identity: AzureIdentity): boolean {
  if (selector.name === 'client_id') return identity.clientID !== '' && identity.clientID === selector.value;
  if (selector.name === 'msi_res_id') return identity.resourceID !== '' && identity.resourceID === selector.value;
  return false;
}

/**
 * With no selector and several identities NMI took whichever came first. Here the choice is
 * stable: the identity whose namespace/name sorts first, then the grantor whose name sorts first.
 */
function precedes(a: Candidate, b: Candidate): boolean {
  if (a.identity.namespace !== b.identity.namespace) return a.identity.namespace < b.identity.namespace;
  if (a.identity.name !== b.identity.name) return a.identity.name < b.identity.name;
  return a.via.name < b.via.name;
}

/** An identity is minted by its own client id even when the pod named it by resource id. */
function upstreamSelector(identity: AzureIdentity): Selector | undefined {
  if (identity.clientID !== '') return { name: 'client_id', value: identity.clientID };
  if (identity.resourceID !== '') return { name: 'msi_res_id', value: identity.resourceID };
  return undefined;
}

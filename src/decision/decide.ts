// Where a pod's entitlement is decided. A pure function of the calling pod, the cluster
// objects, the parsed request and the mode; no I/O, no clock. What it reads from the cluster
// for a pod is kept until the cluster's generation moves: a cache of that function, never
// an input to it (test/decision-memo.test.ts holds it to that).
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

export type DecisionCluster = Pick<ClusterView, 'bindingsFor' | 'bindingsSelecting' | 'identity' | 'exceptionsIn' | 'assignedTo' | 'generation'>;

interface Candidate {
  readonly identity: AzureIdentity;
  readonly via: Grantor;
  /** What names it upstream; undefined when it has neither client id nor resource id. */
  readonly upstream: Selector | undefined;
  /** The answer when it is chosen (grant, or the token source's refusal), built the first time it is. */
  decision?: TokenDecision;
}

/**
 * Everything the decision reads from the cluster for one pod under one policy, before the
 * request's selector. A pure function of (pod, cluster, policy); kept per pod while the
 * cluster's generation stays the same, so a pod's repeated requests skip the index lookups.
 */
interface Entitlement {
  readonly pod: PodInfo;
  readonly cluster: DecisionCluster;
  readonly generation: number | undefined;
  readonly policy: DecisionPolicy;
  readonly exception: AzurePodIdentityException | undefined;
  /** The aadpodidbinding label; undefined when absent or empty. */
  readonly label: string | undefined;
  /** Managed mode: no binding of the namespace selects the label. */
  readonly bindingMissing: boolean;
  /** Managed mode: the bindings' identities; standard mode: the pod's usable assigned identities. */
  readonly candidates: readonly Candidate[];
  /** Standard mode: identities MIC has created for the pod but not yet assigned. */
  readonly created: readonly AzureIdentity[];
  /** Standard mode, resolved on first need: what MIC would assign (undefined: nothing selects the pod; null: not resolved yet). */
  expected: readonly Candidate[] | undefined | null;
}

const PENDING: TokenDecision = Object.freeze({ kind: 'pending' });

/** One slot per pod object: a changed pod is a new object, a changed cluster a new generation. Weak, so gone pods take their slot with them. */
const memo = new WeakMap<PodInfo, Entitlement>();

export function decideToken(pod: PodInfo, cluster: DecisionCluster, request: TokenRequest, policy: DecisionPolicy = MANAGED): TokenDecision {
  const e = entitlementOf(pod, cluster, policy);
  if (e.exception !== undefined) return { kind: 'pass-through', exception: e.exception, upstream: request.selector };
  // NMI read a missing label as selector "", so an empty-selector binding granted every
  // unlabelled pod of the namespace. Here no label means no identity.
  if (e.label === undefined) return refuse('pod_unlabeled');
  return policy.mode === 'standard' ? decideStandard(e, request.selector) : decideManaged(e, request.selector);
}

function entitlementOf(pod: PodInfo, cluster: DecisionCluster, policy: DecisionPolicy): Entitlement {
  const generation = cluster.generation;
  if (generation === undefined) return resolve(pod, cluster, policy, undefined);
  const known = memo.get(pod);
  if (known !== undefined && known.generation === generation && known.cluster === cluster && known.policy === policy) return known;
  const fresh = resolve(pod, cluster, policy, generation);
  memo.set(pod, fresh);
  return fresh;
}

function resolve(pod: PodInfo, cluster: DecisionCluster, policy: DecisionPolicy, generation: number | undefined): Entitlement {
  const exception = exceptionFor(pod, cluster.exceptionsIn(pod.namespace));
  const labelValue = pod.labels[BINDING_LABEL];
  const label = exception !== undefined || labelValue === undefined || labelValue === '' ? undefined : labelValue;
  const e: Entitlement = { pod, cluster, generation, policy, exception, label, bindingMissing: false, candidates: NONE, created: NONE, expected: null };
  if (label === undefined) return e;
  if (policy.mode !== 'standard') {
    const bindings = cluster.bindingsFor(pod.namespace, label);
    const candidates: Candidate[] = [];
    for (const binding of bindings) {
      const identity = cluster.identity(pod.namespace, binding.azureIdentity);
      if (identity !== undefined) candidates.push(candidate(identity, { kind: 'AzureIdentityBinding', namespace: binding.namespace, name: binding.name }));
    }
    return { ...e, bindingMissing: bindings.length === 0, candidates };
  }
  // MIC's AAIs for this pod count when they are on the pod's node, Assigned (or '' from MICs
  // older than states), still made for the pod's current label, and within the namespace rule.
  const assigned: Candidate[] = [];
  const created: AzureIdentity[] = [];
  for (const aai of cluster.assignedTo(pod.namespace, pod.name)) {
    // Another node's AAI is stale (a pod of the same name was there); another label's, the pod was relabelled.
    if (aai.nodeName !== pod.nodeName || aai.bindingSelector !== label) continue;
    if (!namespaceAllows(aai.identity, pod.namespace, policy.forceNamespaced)) continue;
    if (aai.state === ASSIGNED || aai.state === '') {
      assigned.push(candidate(aai.identity, { kind: 'AzureAssignedIdentity', namespace: aai.namespace, name: aai.name }));
    } else if (aai.state === CREATED) {
      created.push(aai.identity);
    }
  }
  return { ...e, candidates: assigned, created };
}

const NONE: readonly never[] = Object.freeze([]);

function candidate(identity: AzureIdentity, via: Grantor): Candidate {
  return { identity, via, upstream: upstreamSelector(identity) };
}

function decideManaged(e: Entitlement, selector: Selector | undefined): TokenDecision {
  if (e.bindingMissing) return refuse('binding_missing');
  if (selector?.name === 'object_id') return refuse('object_id_unverifiable');
  return granted(e, choose(e.candidates, selector));
}

/**
 * When no assigned identity serves the request, the answer waits only if MIC is expected to
 * act: a matching AAI is `Created`, or a binding MIC would follow selects the pod. Otherwise it is final.
 */
function decideStandard(e: Entitlement, selector: Selector | undefined): TokenDecision {
  if (selector?.name === 'object_id') return refuse('object_id_unverifiable');
  const chosen = choose(e.candidates, selector);
  if (typeof chosen !== 'string') return granted(e, chosen);
  for (const identity of e.created) if (selector === undefined || selects(selector, identity)) return PENDING;
  // What MIC would assign from the bindings as they are now.
  if (e.expected === null) e.expected = micWouldAssign(e);
  if (e.expected === undefined) return refuse(e.candidates.length === 0 ? 'binding_missing' : chosen);
  const fromBindings = choose(e.expected, selector);
  if (typeof fromBindings !== 'string') return PENDING;
  return refuse(e.candidates.length === 0 ? fromBindings : chosen);
}

/**
 * MIC's matching (pkg/mic getAzureAssignedIDsToCreate): bindings of any namespace (only the
 * pod's own when namespaced), identity looked up in the binding's namespace. Undefined when
 * no binding selects the pod, so nothing will ever be assigned.
 */
function micWouldAssign(e: Entitlement): Candidate[] | undefined {
  const { pod, cluster, label } = e;
  const forceNamespaced = e.policy.forceNamespaced;
  const bindings = forceNamespaced ? cluster.bindingsFor(pod.namespace, label!) : cluster.bindingsSelecting(label!);
  if (bindings.length === 0) return undefined;
  const out: Candidate[] = [];
  for (const binding of bindings) {
    const identity = cluster.identity(binding.namespace, binding.azureIdentity);
    if (identity === undefined || !namespaceAllows(identity, pod.namespace, forceNamespaced)) continue;
    out.push(candidate(identity, { kind: 'AzureIdentityBinding', namespace: binding.namespace, name: binding.name }));
  }
  return out;
}

function namespaceAllows(identity: AzureIdentity, podNamespace: string, forceNamespaced: boolean): boolean {
  return !(forceNamespaced || identity.namespaced === true) || identity.namespace === podNamespace;
}

/** The one choice rule of both modes: exact selector match, known identity types only, stable order. */
function choose(candidates: readonly Candidate[], selector: Selector | undefined): Candidate | Reason {
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
    if (sawUnsupported) return 'identity_type_unsupported';
    if (selector !== undefined && candidates.length > 0) return 'identity_not_bound';
    return 'identity_missing';
  }
  return chosen.upstream === undefined ? 'identity_incomplete' : chosen;
}

/** The chosen identity's grant, with who mints its token (token-source.ts); built once per candidate. */
function granted(e: Entitlement, chosen: Candidate | Reason): TokenDecision {
  if (typeof chosen === 'string') return refuse(chosen);
  if (chosen.decision !== undefined) return chosen.decision;
  const source = tokenSourceFor(chosen.identity, e.pod, e.policy.entra ?? ENTRA_DEFAULTS);
  chosen.decision = typeof source === 'string'
    ? refuse(source)
    : Object.freeze({ kind: 'grant', identity: chosen.identity, via: chosen.via, upstream: chosen.upstream!, source: source.kind === 'imds' ? IMDS_SOURCE : source });
  return chosen.decision;
}

/** Refusals carry nothing but their reason: one frozen object each. */
const REFUSED = new Map<Reason, TokenDecision>();

function refuse(reason: Reason): TokenDecision {
  let decision = REFUSED.get(reason);
  if (decision === undefined) REFUSED.set(reason, (decision = Object.freeze({ kind: 'refuse', reason })));
  return decision;
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

// Where a pod's entitlement is decided. A pure function of the calling pod, the cluster
// objects and the parsed request; no I/O, no clock. Managed mode, namespaced as NMI's
// managed mode always was: bindings and identities count only in the pod's own namespace.
import { BINDING_LABEL, USER_ASSIGNED_MSI } from '../cluster/objects.ts';
import type { AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, PodInfo } from '../cluster/objects.ts';
import type { ClusterView } from '../cluster/view.ts';
import type { Reason } from './reasons.ts';
import type { Selector, TokenRequest } from './token-request.ts';

export type TokenDecision =
  | {
    readonly kind: 'grant';
    readonly identity: AzureIdentity;
    readonly binding: AzureIdentityBinding;
    /** What goes upstream to name the identity: always the identity's own id, never the pod's text. */
    readonly upstream: Selector;
  }
  | { readonly kind: 'pass-through'; readonly exception: AzurePodIdentityException; readonly upstream: Selector | undefined }
  | { readonly kind: 'refuse'; readonly reason: Reason };

type Cluster = Pick<ClusterView, 'bindingsFor' | 'identity' | 'exceptionsIn'>;

export function decideToken(pod: PodInfo, cluster: Cluster, request: TokenRequest): TokenDecision {
  const exception = exceptionFor(pod, cluster.exceptionsIn(pod.namespace));
  if (exception !== undefined) return { kind: 'pass-through', exception, upstream: request.selector };

  const label = pod.labels[BINDING_LABEL];
  // NMI read a missing label as selector "", so an empty-selector binding granted every
  // unlabelled pod of the namespace. Here no label means no identity.
  if (label === undefined || label === '') return refuse('pod_unlabeled');
  const bindings = cluster.bindingsFor(pod.namespace, label);
  if (bindings.length === 0) return refuse('binding_missing');

  const selector = request.selector;
  if (selector?.name === 'object_id') return refuse('object_id_unverifiable');

  let chosen: { identity: AzureIdentity; binding: AzureIdentityBinding } | undefined;
  let sawIdentity = false;
  let sawUnsupported = false;
  for (const binding of bindings) {
    const identity = cluster.identity(pod.namespace, binding.azureIdentity);
    if (identity === undefined) continue;
    sawIdentity = true;
    if (selector !== undefined && !selects(selector, identity)) continue;
    if (identity.type !== USER_ASSIGNED_MSI) {
      sawUnsupported = true;
      continue;
    }
    if (chosen === undefined || precedes(identity, binding, chosen.identity, chosen.binding)) chosen = { identity, binding };
  }
  if (chosen === undefined) {
    if (sawUnsupported) return refuse('identity_type_unsupported');
    if (selector !== undefined && sawIdentity) return refuse('identity_not_bound');
    return refuse('identity_missing');
  }
  const upstream = upstreamSelector(chosen.identity);
  if (upstream === undefined) return refuse('identity_incomplete');
  return { kind: 'grant', identity: chosen.identity, binding: chosen.binding, upstream };
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
 * stable: the identity whose name sorts first, then the binding whose name sorts first.
 */
function precedes(a: AzureIdentity, ab: AzureIdentityBinding, b: AzureIdentity, bb: AzureIdentityBinding): boolean {
  if (a.name !== b.name) return a.name < b.name;
  return ab.name < bb.name;
}

/** An identity is minted by its own client id even when the pod named it by resource id. */
function upstreamSelector(identity: AzureIdentity): Selector | undefined {
  if (identity.clientID !== '') return { name: 'client_id', value: identity.clientID };
  if (identity.resourceID !== '') return { name: 'msi_res_id', value: identity.resourceID };
  return undefined;
}

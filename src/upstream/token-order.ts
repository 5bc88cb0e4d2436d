// A granted decision to the order its token source fills. IMDS's key is the rebuilt upstream
// path (tokenPath). An Entra order's key names the credential, the authority, tenant and client,
// and the resource; for federation, the service account, never the pod: the pods of one service
// account share its tokens, and no two service accounts ever share one.
import type { TokenDecision } from '../decision/decide.ts';
import type { TokenRequest } from '../decision/token-request.ts';
import type { PodRef, TokenOrder } from './token-source.ts';
import { tokenPath } from './token-path.ts';

/**
 * The last order of each request object: a pod's connection hands over one request object for
 * the same bytes (listener/answer-at-once.ts), and its decision one selector or source object,
 * so the order, and its key, are the same objects again: the token cache finds the key without
 * hashing a new string. Every input is immutable; an Entra order also names the pod, compared too.
 */
const lastOrder = new WeakMap<TokenRequest, { readonly by: object | undefined; readonly podUid: string; readonly order: TokenOrder }>();

export function tokenOrder(request: TokenRequest, decision: TokenDecision & { kind: 'grant' | 'pass-through' }, pod: PodRef): TokenOrder {
  const imds = decision.kind === 'pass-through' || decision.source.kind === 'imds';
  const by = imds ? decision.upstream : decision.source;
  const last = lastOrder.get(request);
  if (last !== undefined && last.by === by && (imds || last.podUid === pod.uid)) return last.order;
  const order = imds ? { kind: 'imds' as const, key: tokenPath(request.apiVersion, request.resource, decision.upstream) } : entraOrder(request, decision, pod);
  lastOrder.set(request, { by, podUid: pod.uid, order });
  return order;
}

function entraOrder(request: TokenRequest, decision: TokenDecision & { kind: 'grant' }, pod: PodRef): TokenOrder {
  const s = decision.source;
  if (s.kind === 'imds') throw new Error('an IMDS grant has no Entra order');
  const who = s.kind === 'workload-identity' ? `sa=${s.serviceAccount.namespace}/${s.serviceAccount.name}` : `secret=${s.secret.namespace}/${s.secret.name}`;
  // Every part is either checked (tenant, ids) or encoded, so no two orders collide.
  const key = `entra:${s.kind} ${encodeURIComponent(s.authority)} ${s.tenantID} ${encodeURIComponent(s.clientID)} ${encodeURIComponent(request.resource)} ${who}`;
  return { kind: 'entra', key, source: s, resource: request.resource, pod: { namespace: pod.namespace, name: pod.name, uid: pod.uid } };
}

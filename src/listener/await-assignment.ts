// Standard mode: a new pod often calls IMDS before MIC has assigned its identity (10-20 s on a
// VM, 40-60 s on a scale set). NMI held such requests for up to 100 s, longer than clients
// wait. Here the request parks until an AzureAssignedIdentity of the pod changes, decides
// again, and gives up after a short bound, so the client is told to come back instead.
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterState } from '../cluster/view.ts';
import { decideToken, type DecisionPolicy, type TokenDecision } from '../decision/decide.ts';
import type { TokenRequest } from '../decision/token-request.ts';

export async function decideAwaitingAssignment(
  state: ClusterState, pod: PodInfo, request: TokenRequest, policy: DecisionPolicy, waitMs: number, signal: AbortSignal,
): Promise<TokenDecision> {
  let decision = decideToken(pod, state, request, policy);
  const deadline = performance.now() + waitMs;
  while (decision.kind === 'pending') {
    const left = deadline - performance.now();
    // False: the bound ran out, the client hung up, or the parking is full; still pending.
    if (left <= 0 || !(await state.waitForAssignment(pod.namespace, pod.name, left, signal))) break;
    decision = decideToken(pod, state, request, policy);
  }
  return decision;
}

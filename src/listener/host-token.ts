// NMI's /host/token for the Key Vault provider of the Secrets Store CSI driver
// (`usePodIdentity`): `GET /host/token/?resource=R[&client_id=C|&msi_res_id=M]` with headers
// `podns` and `podname` naming the application pod; 200 `{"token":{…},"clientid":"…"}`.
// NMI trusted any host process. Here the caller's own socket must belong to a pod that
// --host-token-callers allows, and the named pod must be a live pod of this node; its
// request is then decided exactly as the pod's own would be.
import type { IncomingMessage } from 'node:http';
import type { ClusterState } from '../cluster/view.ts';
import type { DecisionPolicy } from '../decision/decide.ts';
import { decideAwaitingAssignment } from './await-assignment.ts';
import { parseTokenRequest } from '../decision/token-request.ts';
import { isForwarded } from '../matcher/headers.ts';
import { parseQuery } from '../matcher/query.ts';
import type { CallerRoom } from '../pods/caller-room.ts';
import { isAllowedCaller, type CallerRule } from '../pods/host-token-callers.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import type { UpstreamAnswer } from '../upstream/imds-client.ts';
import type { TokenFetch } from '../upstream/token-fetch.ts';
import { tokenOrder } from '../upstream/token-order.ts';
import { writeUpstream, type AnswerTarget } from '../answer/respond.ts';
import type { AnswerWriter, RequestContext } from './request-context.ts';

/** The api-version NMI's adal client used; the CSI provider sends none. */
const API_VERSION = '2018-02-01';
const POD_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** `/host/token` or `/host/token/`, with or without a query. */
export function isHostTokenTarget(target: string): boolean {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  return path === '/host/token' || path === '/host/token/';
}

export interface HostTokenOptions {
  state: ClusterState;
  callers: CallerRoom;
  allowed: readonly CallerRule[];
  podWaitMs: number;
  policy: DecisionPolicy;
  assignmentWaitMs: number;
  /** The token route's own fetch: cache, pacing, the named pod's share. */
  fetchToken: TokenFetch;
}

/** Answers through `r`, as the metadata routes do: refusals, upstream failures and the report are theirs. */
export async function handleHostToken(o: HostTokenOptions, req: IncomingMessage, r: RequestContext): Promise<void> {
  const t = r.trace;
  t.route = 'host_token';
  t.ip = sourceIp(req.socket.remoteAddress);
  if (req.method !== 'GET') return r.refuse('method_not_allowed', ['GET']);
  const h = req.headers;
  if (isForwarded(h)) return r.refuse('forwarded_header');
  const signal = r.signal;
  if (!o.state.isReady() && !(await o.state.whenReady(AbortSignal.any([signal, AbortSignal.timeout(o.podWaitMs)])).then(() => true, () => false))) {
    return r.refuse('state_not_ready');
  }
  const caller = await o.callers.identify(req.socket, signal, true);
  t.via = caller.via;
  if (caller.kind === 'refuse') return r.refuse(caller.reason === 'caller_not_in_pod' ? 'host_token_forbidden' : caller.reason);
  if (!isAllowedCaller(caller.pod, o.allowed)) return r.refuse('host_token_forbidden');

  const podns = h.podns;
  const podname = h.podname;
  if (typeof podns !== 'string' || typeof podname !== 'string' || !POD_NAME.test(podns) || !POD_NAME.test(podname)) {
    return r.refuse('host_token_pod_missing');
  }
  const q = (req.url ?? '').indexOf('?');
  const params = parseQuery(q === -1 ? '' : (req.url ?? '').slice(q + 1));
  if (typeof params === 'string') return r.refuse(params);
  if (!params.has('api-version')) params.set('api-version', API_VERSION);
  const request = parseTokenRequest(params);
  if (typeof request === 'string') return r.refuse(request);
  t.request = request;
  const pod = o.state.podNamed(podns, podname);
  if (pod === undefined) return r.refuse('host_token_pod_unknown');
  t.pod = pod;
  // The named pod's own rule, standard mode's wait for MIC included.
  const decision = t.decision = await decideAwaitingAssignment(o.state, pod, request, o.policy, o.assignmentWaitMs, signal);
  if (decision.kind === 'refuse') return r.refuse(decision.reason);
  if (decision.kind === 'pending') return r.refuse('assignment_pending');

  const order = tokenOrder(request, decision, pod);
  // The named pod's share of the IMDS budget: the CSI provider acts for it.
  await r.relay(() => o.fetchToken(order, pod.uid, signal, (c) => { t.cache = c; }),
    inNmiShape(decision.kind === 'grant' ? decision.identity.clientID : undefined));
}

/** A token in NMI's shape; IMDS's own refusal (or an unreadable 200) goes back as it came, as on the token route. */
function inNmiShape(clientID: string | undefined): AnswerWriter {
  return (res: AnswerTarget, answer: UpstreamAnswer) => {
    const body = answer.status === 200 ? nmiAnswer(answer.body, clientID) : undefined;
    if (body === undefined) {
      const relayed = answer.status === 200 ? { ...answer, status: 502 } : answer;
      writeUpstream(res, relayed);
      return relayed.status;
    }
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    }
    return 200;
  };
}

/** NMI's NMIResponse: the token's fields as NMI's msiResponse names them, and the identity's client id. */
function nmiAnswer(imdsBody: Buffer, clientID: string | undefined): Buffer | undefined {
  let t: Record<string, unknown>;
  try {
    t = JSON.parse(imdsBody.toString('utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const s = (k: string): string => (typeof t[k] === 'string' ? t[k] : typeof t[k] === 'number' ? String(t[k]) : '');
  if (s('access_token') === '') return undefined;
  const token = {
    access_token: s('access_token'),
    refresh_token: s('refresh_token'),
    expires_in: s('expires_in'),
    expires_on: s('expires_on'),
    not_before: s('not_before'),
    resource: s('resource'),
    token_type: s('token_type'),
  };
  return Buffer.from(JSON.stringify({ token, clientid: clientID ?? s('client_id') }), 'utf8');
}

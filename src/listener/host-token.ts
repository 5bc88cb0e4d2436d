// NMI's /host/token for the Key Vault provider of the Secrets Store CSI driver
// (`usePodIdentity`): `GET /host/token/?resource=R[&client_id=C|&msi_res_id=M]` with headers
// `podns` and `podname` naming the application pod; 200 `{"token":{…},"clientid":"…"}`.
// NMI trusted any host process. Here the caller's own socket must belong to a pod that
// --host-token-callers allows, and the named pod must be a live pod of this node; its
// request is then decided exactly as the pod's own would be.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ClusterState } from '../cluster/view.ts';
import type { DecisionPolicy } from '../decision/decide.ts';
import { decideAwaitingAssignment } from './await-assignment.ts';
import type { Reason } from '../decision/reasons.ts';
import { parseTokenRequest } from '../decision/token-request.ts';
import { parseQuery } from '../matcher/query.ts';
import type { DaemonMetrics, DecisionLabel } from '../observability/metrics.ts';
import type { CallerRoom } from '../pods/caller.ts';
import { isAllowedCaller, type CallerRule } from '../pods/host-token-callers.ts';
import type { ImdsClient, UpstreamAnswer } from '../upstream/imds-client.ts';
import type { TokenCache } from '../upstream/token-cache.ts';
import { tokenPath } from '../upstream/token-path.ts';
import { writeUpstream } from '../answer/respond.ts';

export const HOST_TOKEN_ROUTE = 'host_token';
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
  imds: ImdsClient;
  tokens: TokenCache | undefined;
  metrics: DaemonMetrics;
  log: Logger;
  podWaitMs: number;
  policy: DecisionPolicy;
  assignmentWaitMs: number;
  /** The metadata handler's refusal writer (answer + metrics). */
  refuse(res: ServerResponse, route: string, reason: Reason, started: number, allow?: readonly string[], decision?: DecisionLabel): void;
  /** Classifies a failed upstream call (metrics) into its refusal. */
  upstreamFailed(err: unknown, route: string, upstreamStarted: number): Reason;
  hangUpSignal(res: ServerResponse): AbortSignal;
}

export async function handleHostToken(o: HostTokenOptions, req: IncomingMessage, res: ServerResponse, started: number): Promise<void> {
  const route = HOST_TOKEN_ROUTE;
  const refuse = (reason: Reason, extra: Record<string, unknown> = {}): void => {
    o.refuse(res, route, reason, started, reason === 'method_not_allowed' ? ['GET'] : undefined);
    o.log.info({ route, ip: req.socket.remoteAddress, ...extra, decision: 'refused', reason }, 'host token request refused');
  };
  if (req.method !== 'GET') return refuse('method_not_allowed');
  const h = req.headers;
  if (h['x-forwarded-for'] !== undefined || h.forwarded !== undefined) return refuse('forwarded_header');
  const signal = o.hangUpSignal(res);
  if (!o.state.isReady() && !(await o.state.whenReady(AbortSignal.any([signal, AbortSignal.timeout(o.podWaitMs)])).then(() => true, () => false))) {
    return refuse('state_not_ready');
  }
  const caller = await o.callers.identify(req.socket, signal, true);
  if (caller.kind === 'refuse') return refuse(caller.reason === 'caller_not_in_pod' ? 'host_token_forbidden' : caller.reason, { via: caller.via });
  const by = `${caller.pod.namespace}/${caller.pod.name}`;
  if (!isAllowedCaller(caller.pod, o.allowed)) return refuse('host_token_forbidden', { caller: by });

  const podns = h.podns;
  const podname = h.podname;
  if (typeof podns !== 'string' || typeof podname !== 'string' || !POD_NAME.test(podns) || !POD_NAME.test(podname)) {
    return refuse('host_token_pod_missing', { caller: by });
  }
  const q = (req.url ?? '').indexOf('?');
  const params = parseQuery(q === -1 ? '' : (req.url ?? '').slice(q + 1));
  if (typeof params === 'string') return refuse(params, { caller: by });
  if (!params.has('api-version')) params.set('api-version', API_VERSION);
  const request = parseTokenRequest(params);
  if (typeof request === 'string') return refuse(request, { caller: by });
  const pod = o.state.podNamed(podns, podname);
  if (pod === undefined) return refuse('host_token_pod_unknown', { caller: by, pod: `${podns}/${podname}` });
  const who = { route, caller: by, pod: `${pod.namespace}/${pod.name}`, uid: pod.uid, resource: request.resource };
  // The named pod's own rule, standard mode's wait for MIC included.
  const decision = await decideAwaitingAssignment(o.state, pod, request, o.policy, o.assignmentWaitMs, signal);
  if (decision.kind === 'refuse') return refuse(decision.reason, who);
  if (decision.kind === 'pending') return refuse('assignment_pending', who);

  const label: DecisionLabel = decision.kind === 'grant' ? 'granted' : 'passed_through';
  const path = tokenPath(request.apiVersion, request.resource, decision.upstream);
  const upstreamStarted = performance.now();
  let answer: UpstreamAnswer;
  try {
    let cached: string | undefined;
    answer = o.tokens === undefined
      ? await o.imds.fetch('GET', path, signal)
      : await o.tokens.get(path, signal, (outcome) => { cached = outcome; o.metrics.tokenCache(outcome); });
    if (cached !== 'hit') o.metrics.upstream(route, answer.status, (performance.now() - upstreamStarted) / 1000);
  } catch (err) {
    const reason = o.upstreamFailed(err, route, upstreamStarted);
    o.refuse(res, route, reason, started, undefined, label);
    o.log.warn({ ...who, decision: label, reason }, 'host token request failed upstream');
    return;
  }
  const body = answer.status === 200 ? nmiAnswer(answer.body, decision.kind === 'grant' ? decision.identity.clientID : undefined) : undefined;
  if (body === undefined) {
    // IMDS's own refusal (or an unreadable 200) goes back as it came, as on the token route.
    writeUpstream(res, answer.status === 200 ? { ...answer, status: 502 } : answer);
  } else {
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    }
  }
  const status = body === undefined && answer.status === 200 ? 502 : answer.status;
  o.metrics.request(route, label, status, '', (performance.now() - started) / 1000);
  o.log.info({ ...who, decision: label, status, ms: Math.round(performance.now() - started) }, 'host token request answered');
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

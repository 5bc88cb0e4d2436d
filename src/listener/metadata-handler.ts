// The one-way flow of a request: listener (admission) -> matcher -> caller (which pod) ->
// decision -> upstream -> answer. Each step lives in its own module; this file only sequences
// them, once: `answerAtOnce` (the at-once lane) runs `handle`'s steps up to the first that
// waits. Every answer and its one report to the observer (metrics, logs, Events) go through
// the request's context (request-context.ts).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { RawAnswer } from '../answer/raw-answer.ts';
import { unusableNow, unusableState } from '../cluster/state-gate.ts';
import type { ClusterState } from '../cluster/view.ts';
import { decideToken, type DecisionPolicy } from '../decision/decide.ts';
import type { Reason } from '../decision/reasons.ts';
import { parseTokenRequest, type TokenRequest } from '../decision/token-request.ts';
import { isForwarded, isMetadataTrue } from '../matcher/headers.ts';
import { parseQuery } from '../matcher/query.ts';
import { matchTarget, type MatchedTarget } from '../matcher/request-target.ts';
import type { RouteName } from '../matcher/routes.ts';
import type { RequestObserver } from '../observability/request-outcome.ts';
import type { CallerRoom } from '../pods/caller-room.ts';
import type { CallerRule } from '../pods/host-token-callers.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import type { ImdsClient } from '../upstream/imds-client.ts';
import type { UpstreamScheduler } from '../upstream/scheduler.ts';
import type { TokenCache } from '../upstream/token-cache.ts';
import type { EntraRoom } from '../upstream/entra/entra-room.ts';
import { cachedToken, tokenFetch, type CachedToken, type TokenFetch } from '../upstream/token-fetch.ts';
import { tokenOrder } from '../upstream/token-order.ts';
import type { RequestAdmission } from './admission.ts';
import { decideAwaitingAssignment } from './await-assignment.ts';
import { callingPod } from './calling-pod.ts';
import { handleHostToken, isHostTokenTarget, type HostTokenOptions } from './host-token.ts';
import { proxyRoute, type ProxyRouteOptions } from './proxy-route.ts';
import { RequestContext } from './request-context.ts';
import type { RequestHead, RequestSeen } from './request-head.ts';

export interface HandlerOptions {
  state: ClusterState;
  /** Proxied routes: their own pool, so token traffic never starves them. */
  imds: ImdsClient;
  /** Token fetches: paced within IMDS's budget, fair across pods. */
  scheduler: UpstreamScheduler;
  tokens: TokenCache | undefined;
  /** Tokens from Entra ID (service principals, federation): their own cache and bounds. */
  entra?: EntraRoom;
  /** The bound on a token request's time queued plus upstream; then 429 with Retry-After. */
  tokenWaitMs: number;
  /** Aborted on SIGTERM before the grace ends: what is still waiting gets a retryable 503. */
  stopping: AbortSignal;
  /** Per-connection and per-caller admission, asked once per request before anything else. */
  admission: RequestAdmission;
  /** Which pod is calling (source IP, or socket cgroup for the node's own addresses). */
  callers: CallerRoom;
  /** --intercept-host-network: metadata requests from node addresses are attributed by socket cgroup. */
  interceptHostNetwork: boolean;
  /** --host-token-callers */
  hostTokenCallers: readonly CallerRule[];
  /** Hears every finished request once: metrics, logs, Events. */
  observer: RequestObserver;
  blockInstanceMetadata: boolean;
  /** NMI's --metadata-header-required: false lets token requests through without the header. */
  metadataHeaderRequired: boolean;
  podWaitMs: number;
  /** Seconds of unconfirmed state after which token decisions are refused (0: never). */
  maxStateStalenessS?: number;
  /** Mode and namespace rule of the decision. */
  policy: DecisionPolicy;
  /** Standard mode: how long a request waits for MIC to assign the pod's identity. */
  assignmentWaitMs: number;
  maxBodyBytes?: number;
}

let requestCounter = 0;

/** What `#check` found: the route (for the report) and a refusal, a token request or a proxied request. */
type Checked =
  | { readonly kind: 'refuse'; readonly route: RouteName | 'unknown'; readonly reason: Reason; readonly allow?: readonly string[] | undefined }
  | { readonly kind: 'token'; readonly route: RouteName; readonly request: TokenRequest }
  | { readonly kind: 'proxy'; readonly route: RouteName; readonly matched: MatchedTarget; readonly params: Map<string, string> };

export class MetadataHandler {
  readonly #o: HandlerOptions;
  readonly #fetchToken: TokenFetch;
  readonly #cachedToken: CachedToken;
  /** `#check`'s answer for each head the lane hands over (one per connection and distinct request). */
  readonly #checks = new WeakMap<RequestHead, Checked>();
  readonly #hostToken: HostTokenOptions;
  readonly #proxy: ProxyRouteOptions;

  constructor(options: HandlerOptions) {
    this.#o = options;
    this.#fetchToken = tokenFetch(options);
    this.#cachedToken = cachedToken(options);
    this.#hostToken = { ...options, allowed: options.hostTokenCallers, fetchToken: this.#fetchToken };
    this.#proxy = { ...options, maxBodyBytes: options.maxBodyBytes ?? 64 * 1024 };
  }

  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const o = this.#o;
    const r = new RequestContext(res, o);
    const admitted = o.admission.admit(req, res);
    if (admitted !== 'admitted') {
      if (admitted === 'ignored') return;
      r.trace.ip = sourceIp(req.socket.remoteAddress);
      return r.refuse(admitted);
    }
    if (isHostTokenTarget(req.url ?? '')) return void handleHostToken(this.#hostToken, req, r);
    const checked = this.#check(req);
    r.trace.route = checked.route;
    if (checked.kind === 'refuse') return r.refuse(checked.reason, checked.allow);
    if (checked.kind === 'proxy') return void proxyRoute(this.#proxy, req, r, checked.matched, checked.params);
    if (!this.#tokenAtOnce(req.socket, checked.request, r)) void this.#token(req, r, checked.request);
  };

  /**
   * The at-once lane (answer-at-once.ts): `handle`'s steps, as long as none would wait. False,
   * with nothing written nor reported: node:http takes the request, and `handle` answers it.
   */
  answerAtOnce = (head: RequestHead, answer: RawAnswer): boolean => {
    const o = this.#o;
    if (isHostTokenTarget(head.url)) return false;
    if (!o.admission.admitsAtOnce(head.socket)) return false;
    // The lane hands over the same head object for the same bytes on a connection (an SDK
    // asks the same way each time), and the check is a function of the head alone.
    let checked = this.#checks.get(head);
    if (checked === undefined) this.#checks.set(head, checked = this.#check(head));
    if (checked.kind === 'proxy') return false;
    const r = new RequestContext(answer, o);
    r.trace.route = checked.route;
    if (checked.kind === 'refuse') return r.refuse(checked.reason, checked.allow), true;
    return this.#tokenAtOnce(head.socket, checked.request, r);
  };

  /** What every route checks of the request itself, before any lookup: a function of the request alone. */
  #check(req: RequestSeen): Checked {
    const o = this.#o;
    const matched = matchTarget(req.url ?? '', o.blockInstanceMetadata);
    if (typeof matched === 'string') return { kind: 'refuse', route: 'unknown', reason: matched };
    const route = matched.route;
    const refused = (reason: Reason, allow?: readonly string[]): Checked => ({ kind: 'refuse', route: route.name, reason, allow });
    if (!route.methods.includes(req.method ?? '')) return refused('method_not_allowed', route.methods);
    if (isForwarded(req.headers)) return refused('forwarded_header');
    if ((route.name !== 'token' || o.metadataHeaderRequired) && !isMetadataTrue(req.headers.metadata)) return refused('metadata_header_missing');
    const params = parseQuery(matched.rawQuery);
    if (typeof params === 'string') return refused(params);
    if (route.name !== 'token') return { kind: 'proxy', route: route.name, matched, params };
    const request = parseTokenRequest(params);
    if (typeof request === 'string') return refused(request);
    return { kind: 'token', route: route.name, request };
  }

  /**
   * A token request answered from what is known now: the state usable, the pod found (and its
   * socket attested) already, a decision that does not wait for MIC, a cached token. False,
   * with nothing written nor reported, when `#token` must wait for any of them.
   */
  #tokenAtOnce(socket: Socket, request: TokenRequest, r: RequestContext): boolean {
    const o = this.#o;
    if (unusableNow(o.state, o.maxStateStalenessS ?? 0) !== undefined) return false;
    const found = o.callers.identifyNow(socket, o.interceptHostNetwork);
    if (found === undefined) return false;
    const decision = found.kind === 'pod' ? decideToken(found.pod, o.state, request, o.policy) : undefined;
    if (decision?.kind === 'pending') return false;
    const cached = found.kind === 'pod' && decision !== undefined && decision.kind !== 'refuse'
      ? this.#cachedToken(tokenOrder(request, decision, found.pod))
      : undefined;
    if (decision !== undefined && decision.kind !== 'refuse' && cached === undefined) return false;
    // Final from here: the trace is what `#token` would report for the same answer.
    const t = r.trace;
    t.id = ++requestCounter;
    t.request = request;
    t.ip = sourceIp(socket.remoteAddress);
    t.via = found.via;
    if (found.kind === 'refuse') return r.refuse(found.reason), true;
    t.pod = found.pod;
    t.decision = decision;
    if (decision!.kind === 'refuse') return r.refuse(decision!.reason), true;
    t.cache = 'hit';
    r.answer(cached!, performance.now());
    return true;
  }

  async #token(req: IncomingMessage, r: RequestContext, request: TokenRequest): Promise<void> {
    const o = this.#o;
    const t = r.trace;
    t.id = ++requestCounter;
    t.request = request;
    // Right after a restart the old rules already send pods here. Deciding from a half-listed
    // (or, past --max-state-staleness, a silent) state could give a final wrong answer; a retryable 503 does not.
    const unusable = await unusableState(o.state, o.podWaitMs, o.maxStateStalenessS ?? 0, r.signal);
    if (unusable !== undefined) return r.refuse(unusable);
    const found = await callingPod(o.callers, o.interceptHostNetwork, req, t, r.signal);
    if (found.kind === 'refuse') return r.refuse(found.reason);
    t.pod = found.pod;
    const decision = t.decision = await decideAwaitingAssignment(o.state, found.pod, request, o.policy, o.assignmentWaitMs, r.signal);
    if (decision.kind === 'refuse') return r.refuse(decision.reason);
    if (decision.kind === 'pending') return r.refuse('assignment_pending');
    const order = tokenOrder(request, decision, found.pod);
    await r.relay(() => this.#fetchToken(order, found.pod.uid, r.signal, (c) => { t.cache = c; }));
  }
}

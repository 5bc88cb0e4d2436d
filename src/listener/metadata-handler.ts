// The one-way flow of a request: matcher -> pod lookup -> decision -> upstream -> answer.
// Each step lives in its own module; this file only sequences them and reports the outcome
// to one observer (metrics, logs and Events hang off it).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { unusableState } from '../cluster/state-gate.ts';
import type { ClusterState } from '../cluster/view.ts';
import { writeRefusal, writeUpstream, refusalStatus } from '../answer/respond.ts';
import type { DecisionPolicy } from '../decision/decide.ts';
import type { Reason } from '../decision/reasons.ts';
import { isApiVersion, parseTokenRequest } from '../decision/token-request.ts';
import { formatQuery, parseQuery } from '../matcher/query.ts';
import { matchTarget, type MatchedTarget } from '../matcher/request-target.ts';
import { forwardedQuery } from '../matcher/routes.ts';
import type { RequestObserver, RequestOutcome } from '../observability/request-outcome.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import type { RequestAdmission } from './admission.ts';
import type { Caller, CallerRoom } from '../pods/caller-room.ts';
import type { CallerRule } from '../pods/host-token-callers.ts';
import { handleHostToken, isHostTokenTarget, type HostTokenOptions } from './host-token.ts';
import { decideAwaitingAssignment } from './await-assignment.ts';
import { readBody } from './read-body.ts';
import { UpstreamFailure, type ImdsClient, type UpstreamAnswer } from '../upstream/imds-client.ts';
import type { TokenCache } from '../upstream/token-cache.ts';
import { fetchPaced, type UpstreamScheduler } from '../upstream/scheduler.ts';
import { tokenPath } from '../upstream/token-path.ts';

export interface HandlerOptions {
  state: ClusterState;
  /** Proxied routes: their own pool, so token traffic never starves them. */
  imds: ImdsClient;
  /** Token fetches: paced within IMDS's budget, fair across pods. */
  scheduler: UpstreamScheduler;
  tokens: TokenCache | undefined;
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

const UPSTREAM_REASON: Record<UpstreamFailure['kind'], Reason> = {
  timeout: 'upstream_timeout',
  unreachable: 'upstream_unreachable',
  invalid: 'upstream_invalid',
  busy: 'upstream_busy',
  share_exceeded: 'upstream_share_exceeded',
  queued: 'upstream_queued',
  aborted: 'upstream_unreachable',
};

/** What is known of a request so far; reported once, when it is answered. */
export type Trace = { -readonly [K in keyof RequestOutcome]: RequestOutcome[K] } & { started: number };

let requestCounter = 0;

export class MetadataHandler {
  readonly #o: HandlerOptions;
  readonly #maxBody: number;

  readonly #hostToken: HostTokenOptions;

  constructor(options: HandlerOptions) {
    this.#o = options;
    this.#maxBody = options.maxBodyBytes ?? 64 * 1024;
    this.#hostToken = {
      ...options, allowed: options.hostTokenCallers,
      signalFor: (res) => hangUpSignal(res, options.stopping),
      fetchToken: (path, caller, signal, t) => this.#fetchToken(path, caller, signal, t),
      refuse: (res, t, reason, allow) => this.#refuse(res, t, reason, allow),
      upstreamFailed: (res, t, err, upstreamStarted) => this.#upstreamFailed(res, t, err, upstreamStarted),
      finish: (t, status) => this.#finish(t, status),
    };
  }

  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const t: Trace = { route: 'unknown', status: 0, reason: undefined, seconds: 0, started: performance.now() };
    const o = this.#o;
    const admitted = o.admission.admit(req, res);
    if (admitted !== 'admitted') {
      if (admitted === 'ignored') return;
      t.ip = sourceIp(req.socket.remoteAddress);
      return this.#refuse(res, t, admitted);
    }
    if (isHostTokenTarget(req.url ?? '')) return void handleHostToken(this.#hostToken, req, res, t);
    const matched = matchTarget(req.url ?? '', o.blockInstanceMetadata);
    if (typeof matched === 'string') return this.#refuse(res, t, matched);
    const route = matched.route;
    t.route = route.name;
    if (!route.methods.includes(req.method ?? '')) return this.#refuse(res, t, 'method_not_allowed', route.methods);
    const h = req.headers;
    if (h['x-forwarded-for'] !== undefined || h.forwarded !== undefined) return this.#refuse(res, t, 'forwarded_header');
    if ((route.name !== 'token' || o.metadataHeaderRequired) && !isMetadataTrue(h.metadata)) {
      return this.#refuse(res, t, 'metadata_header_missing');
    }
    const params = parseQuery(matched.rawQuery);
    if (typeof params === 'string') return this.#refuse(res, t, params);
    if (route.name === 'token') {
      void this.#token(req, res, params, t);
    } else {
      void this.#proxy(req, res, matched, params, t);
    }
  };

  async #token(req: IncomingMessage, res: ServerResponse, params: Map<string, string>, t: Trace): Promise<void> {
    const o = this.#o;
    const request = parseTokenRequest(params);
    if (typeof request === 'string') return this.#refuse(res, t, request);
    t.id = ++requestCounter;
    t.request = request;
    const signal = hangUpSignal(res, o.stopping);
    // Right after a restart the old rules already send pods here. Deciding from a half-listed
    // (or, past --max-state-staleness, a silent) state could give a final wrong answer; a retryable 503 does not.
    const unusable = await unusableState(o.state, o.podWaitMs, o.maxStateStalenessS ?? 0, signal);
    if (unusable !== undefined) return this.#refuse(res, t, unusable);
    const found = await this.#callingPod(req, t, signal);
    if (found.kind === 'refuse') return this.#refuse(res, t, found.reason);
    t.pod = found.pod;
    const decision = t.decision = await decideAwaitingAssignment(o.state, found.pod, request, o.policy, o.assignmentWaitMs, signal);
    if (decision.kind === 'refuse') return this.#refuse(res, t, decision.reason);
    if (decision.kind === 'pending') return this.#refuse(res, t, 'assignment_pending');
    const path = tokenPath(request.apiVersion, request.resource, decision.upstream);
    await this.#relay(res, t, () => this.#fetchToken(path, found.pod.uid, signal, t));
  }

  /** The other IMDS routes: the checked path and the re-serialised query go up, no pod header does. */
  async #proxy(req: IncomingMessage, res: ServerResponse, matched: MatchedTarget, params: Map<string, string>, t: Trace): Promise<void> {
    const o = this.#o;
    if (matched.route.needsApiVersion) {
      const v = params.get('api-version');
      if (v === undefined || v.length === 0) return this.#refuse(res, t, 'api_version_missing');
      if (!isApiVersion(v)) return this.#refuse(res, t, 'api_version_invalid');
    }
    const method = req.method === 'POST' ? 'POST' : 'GET';
    const signal = hangUpSignal(res, o.stopping);
    // Instance data, attestation and maintenance approval belong to the node's pods, not to any
    // address that reaches the listener.
    const found = await this.#callingPod(req, t, signal);
    if (found.kind === 'refuse') return this.#refuse(res, t, found.reason);
    t.pod = found.pod;
    let body: Buffer | undefined;
    if (method === 'POST') {
      body = await readBody(req, this.#maxBody);
      if (body === undefined) return this.#refuse(res, t, 'body_too_large');
    }
    const query = formatQuery(forwardedQuery(matched.route, params));
    const path = query.length === 0 ? matched.path : `${matched.path}?${query}`;
    await this.#relay(res, t, () => o.imds.fetch(method, path, signal, body));
  }

  async #relay(res: ServerResponse, t: Trace, fetch: () => Promise<UpstreamAnswer>): Promise<void> {
    const upstreamStarted = performance.now();
    try {
      const answer = await fetch();
      t.upstream = { result: answer.status, seconds: (performance.now() - upstreamStarted) / 1000, answer };
      writeUpstream(res, answer);
      this.#finish(t, answer.status);
    } catch (err) {
      this.#upstreamFailed(res, t, err, upstreamStarted);
    }
  }

  /** A failed fetch becomes its retryable refusal (IMDS's own Retry-After kept), or 503 shutting_down. */
  #upstreamFailed(res: ServerResponse, t: Trace, err: unknown, upstreamStarted: number): void {
    const kind = err instanceof UpstreamFailure ? err.kind : 'unreachable';
    t.upstream = { result: kind, seconds: (performance.now() - upstreamStarted) / 1000 };
    t.error = (err as Error).message;
    this.#refuse(res, t, this.#o.stopping.aborted ? 'shutting_down' : UPSTREAM_REASON[kind], undefined, retryAfterOf(err));
  }

  /** The live pod of this node behind the request (for every route), parked briefly for the pod-start race. */
  async #callingPod(req: IncomingMessage, t: Trace, signal: AbortSignal): Promise<Caller> {
    t.ip = sourceIp(req.socket.remoteAddress);
    const caller = await this.#o.callers.identify(req.socket, signal, this.#o.interceptHostNetwork, (found) => { t.podWait = found ? 'found' : 'timeout'; });
    t.via = caller.via;
    return caller;
  }

  /** Fair shares are per pod (its UID, so an address's next holder starts afresh). */
  #fetchToken(path: string, caller: string, signal: AbortSignal, t: Trace): Promise<UpstreamAnswer> {
    const o = this.#o;
    return o.tokens === undefined
      ? fetchPaced(o.scheduler, path, caller, signal, o.tokenWaitMs)
      : o.tokens.get(path, { caller, signal, onOutcome: (outcome) => { t.cache = outcome; } });
  }

  #refuse(res: ServerResponse, t: Trace, reason: Reason, allow?: readonly string[], retryAfterSec?: number): void {
    // Answered before the listener closes: the client reconnects to the next instance.
    if (reason === 'shutting_down') res.shouldKeepAlive = false;
    writeRefusal(res, reason, allow, retryAfterSec);
    t.reason = reason;
    this.#finish(t, refusalStatus(reason));
  }

  #finish(t: Trace, status: number): void {
    t.status = status;
    t.seconds = (performance.now() - t.started) / 1000;
    this.#o.observer.finished(t);
  }
}

function isMetadataTrue(value: string | string[] | undefined): boolean {
  return typeof value === 'string' && value.length === 4 && value.toLowerCase() === 'true';
}

/** Aborts when the client hangs up before the answer is written, so upstream work stops with it, or on shutdown. */
function hangUpSignal(res: ServerResponse, stopping: AbortSignal): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return AbortSignal.any([controller.signal, stopping]);
}

function retryAfterOf(err: unknown): number | undefined {
  return err instanceof UpstreamFailure ? err.retryAfterSec : undefined;
}

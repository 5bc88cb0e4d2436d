// The one-way flow of a request: matcher -> pod lookup -> decision -> upstream -> answer.
// Each step lives in its own module; this file only sequences them, logs and counts.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ClusterState } from '../cluster/view.ts';
import { writeRefusal, writeUpstream, refusalStatus } from '../answer/respond.ts';
import type { DecisionPolicy } from '../decision/decide.ts';
import type { Reason } from '../decision/reasons.ts';
import { isApiVersion, parseTokenRequest } from '../decision/token-request.ts';
import { formatQuery, parseQuery } from '../matcher/query.ts';
import { matchTarget, type MatchedTarget } from '../matcher/request-target.ts';
import { forwardedQuery } from '../matcher/routes.ts';
import { safeForLog } from '../observability/log-safe.ts';
import type { DaemonMetrics, DecisionLabel } from '../observability/metrics.ts';
import type { RefusalLog } from '../observability/refusal-log.ts';
import { findCallingPod, sourceIp, type PodLookup } from '../pods/pod-lookup.ts';
import type { RequestAdmission } from './admission.ts';
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
  metrics: DaemonMetrics;
  log: Logger;
  blockInstanceMetadata: boolean;
  /** NMI's --metadata-header-required: false lets token requests through without the header. */
  metadataHeaderRequired: boolean;
  podWaitMs: number;
  /** Mode and namespace rule of the decision. */
  policy: DecisionPolicy;
  /** Standard mode: how long a request waits for MIC to assign the pod's identity. */
  assignmentWaitMs: number;
  maxBodyBytes?: number;
  /** Per-connection and per-caller admission, asked once per request before anything else. */
  admission: RequestAdmission;
  /** Refusal lines, rate-limited per caller. */
  refusals: RefusalLog;
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

let requestCounter = 0;

export class MetadataHandler {
  readonly #o: HandlerOptions;
  readonly #maxBody: number;

  constructor(options: HandlerOptions) {
    this.#o = options;
    this.#maxBody = options.maxBodyBytes ?? 64 * 1024;
  }

  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    const o = this.#o;
    const admitted = o.admission.admit(req, res);
    if (admitted !== 'admitted') {
      if (admitted === 'ignored') return;
      this.#refuse(res, 'unknown', admitted, started);
      const ip = sourceIp(req.socket.remoteAddress);
      return o.refusals.write(`ip:${ip}`, { ip, decision: 'refused', reason: admitted, status: refusalStatus(admitted) }, 'request refused');
    }
    const matched = matchTarget(req.url ?? '', o.blockInstanceMetadata);
    if (typeof matched === 'string') return this.#refuse(res, 'unknown', matched, started);
    const route = matched.route;
    if (!route.methods.includes(req.method ?? '')) return this.#refuse(res, route.name, 'method_not_allowed', started, route.methods);
    const h = req.headers;
    if (h['x-forwarded-for'] !== undefined || h.forwarded !== undefined) return this.#refuse(res, route.name, 'forwarded_header', started);
    if ((route.name !== 'token' || o.metadataHeaderRequired) && !isMetadataTrue(h.metadata)) {
      return this.#refuse(res, route.name, 'metadata_header_missing', started);
    }
    const params = parseQuery(matched.rawQuery);
    if (typeof params === 'string') return this.#refuse(res, route.name, params, started);
    if (route.name === 'token') {
      void this.#token(req, res, params, started);
    } else {
      void this.#proxy(req, res, matched, params, started);
    }
  };

  async #token(req: IncomingMessage, res: ServerResponse, params: Map<string, string>, started: number): Promise<void> {
    const o = this.#o;
    const request = parseTokenRequest(params);
    if (typeof request === 'string') return this.#refuse(res, 'token', request, started);
    const id = ++requestCounter;
    const signal = hangUpSignal(res, o.stopping);
    const found = await this.#callingPod(req, res, 'token', signal, started, { req: id, resource: safeForLog(request.resource) });
    if (found === undefined) return;
    const pod = found.pod;
    const decision = await decideAwaitingAssignment(o.state, pod, request, o.policy, o.assignmentWaitMs, signal);
    const who = { req: id, pod: `${pod.namespace}/${pod.name}`, uid: pod.uid, resource: safeForLog(request.resource) };
    if (decision.kind === 'refuse' || decision.kind === 'pending') {
      const reason = decision.kind === 'refuse' ? decision.reason : 'assignment_pending';
      this.#refuse(res, 'token', reason, started);
      const requested = request.selector === undefined ? undefined : { name: request.selector.name, value: safeForLog(request.selector.value) };
      o.refusals.write(`pod:${pod.uid}`, { ...who, requested, decision: 'refused', reason, status: refusalStatus(reason), ms: ms(started) }, 'token request refused');
      return;
    }
    const path = tokenPath(request.apiVersion, request.resource, decision.upstream);
    const label: DecisionLabel = decision.kind === 'grant' ? 'granted' : 'passed_through';
    const identity = decision.kind === 'grant'
      ? { identity: `${decision.identity.namespace}/${decision.identity.name}`, clientID: decision.identity.clientID }
      : { exception: decision.exception.name, requested: decision.upstream && { name: decision.upstream.name, value: safeForLog(decision.upstream.value) } };
    const upstreamStarted = performance.now();
    let cached: string | undefined;
    try {
      const answer = o.tokens === undefined
        ? await fetchPaced(o.scheduler, path, pod.uid, signal, o.tokenWaitMs)
        : await o.tokens.get(path, { caller: pod.uid, signal, onOutcome: (outcome) => { cached = outcome; o.metrics.tokenCache(outcome); } });
      if (cached !== 'hit') o.metrics.upstream('token', answer.status, (performance.now() - upstreamStarted) / 1000);
      writeUpstream(res, answer);
      o.metrics.request('token', label, answer.status, '', (performance.now() - started) / 1000);
      o.log.info({ ...who, ...identity, decision: label, cache: cached, status: answer.status, ms: ms(started) }, answer.status !== 200 ? 'token request failed upstream' : label === 'granted' ? 'token granted' : 'token passed through (exception)');
    } catch (err) {
      const reason = this.#upstreamFailed(err, 'token', upstreamStarted);
      this.#refuse(res, 'token', reason, started, undefined, label, retryAfterOf(err));
      o.log.warn({ ...who, ...identity, decision: label, reason, status: refusalStatus(reason), ms: ms(started), err: (err as Error).message }, 'token request failed upstream');
    }
  }

  /** The other IMDS routes: the checked path and the re-serialised query go up, no pod header does. */
  async #proxy(req: IncomingMessage, res: ServerResponse, matched: MatchedTarget, params: Map<string, string>, started: number): Promise<void> {
    const o = this.#o;
    const route = matched.route.name;
    if (matched.route.needsApiVersion) {
      const v = params.get('api-version');
      if (v === undefined || v.length === 0) return this.#refuse(res, route, 'api_version_missing', started);
      if (!isApiVersion(v)) return this.#refuse(res, route, 'api_version_invalid', started);
    }
    const method = req.method === 'POST' ? 'POST' : 'GET';
    const signal = hangUpSignal(res, o.stopping);
    // Instance data, attestation and maintenance approval belong to the node's pods, not to any
    // address that reaches the listener.
    if (await this.#callingPod(req, res, route, signal, started) === undefined) return;
    let body: Buffer | undefined;
    if (method === 'POST') {
      body = await readBody(req, this.#maxBody);
      if (body === undefined) return this.#refuse(res, route, 'body_too_large', started);
    }
    const query = formatQuery(forwardedQuery(matched.route, params));
    const path = query.length === 0 ? matched.path : `${matched.path}?${query}`;
    const upstreamStarted = performance.now();
    try {
      const answer: UpstreamAnswer = await o.imds.fetch(method, path, signal, body);
      o.metrics.upstream(route, answer.status, (performance.now() - upstreamStarted) / 1000);
      writeUpstream(res, answer);
      o.metrics.request(route, 'proxied', answer.status, '', (performance.now() - started) / 1000);
    } catch (err) {
      const reason = this.#upstreamFailed(err, route, upstreamStarted);
      this.#refuse(res, route, reason, started, undefined, 'proxied');
    }
  }

  /** The live pod of this node behind the request, or undefined once the refusal is written and logged. */
  async #callingPod(req: IncomingMessage, res: ServerResponse, route: string, signal: AbortSignal, started: number, fields?: object): Promise<Extract<PodLookup, { kind: 'pod' }> | undefined> {
    const o = this.#o;
    const ip = sourceIp(req.socket.remoteAddress);
    const found = await findCallingPod(o.state, ip, o.podWaitMs, signal, (pod) => o.metrics.podWait(pod ? 'found' : 'timeout'));
    if (found.kind === 'pod') return found;
    this.#refuse(res, route, found.reason, started);
    o.refusals.write(`ip:${ip}`, { ...fields, route, ip, decision: 'refused', reason: found.reason, status: refusalStatus(found.reason), ms: ms(started) }, 'request refused');
    return undefined;
  }

  #upstreamFailed(err: unknown, route: string, upstreamStarted: number): Reason {
    const kind = err instanceof UpstreamFailure ? err.kind : 'unreachable';
    this.#o.metrics.upstream(route, kind, (performance.now() - upstreamStarted) / 1000);
    return this.#o.stopping.aborted ? 'shutting_down' : UPSTREAM_REASON[kind];
  }

  #refuse(res: ServerResponse, route: string, reason: Reason, started: number, allow?: readonly string[], decision: DecisionLabel = 'refused', retryAfterSec?: number): void {
    // Answered before the listener closes: the client reconnects to the next instance.
    if (reason === 'shutting_down') res.shouldKeepAlive = false;
    writeRefusal(res, reason, allow, retryAfterSec);
    this.#o.metrics.request(route, decision, refusalStatus(reason), reason, (performance.now() - started) / 1000);
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

function ms(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

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
import type { DaemonMetrics, DecisionLabel } from '../observability/metrics.ts';
import { lookupPod, sourceIp } from '../pods/pod-lookup.ts';
import { decideAwaitingAssignment } from './await-assignment.ts';
import { readBody } from './read-body.ts';
import { UpstreamFailure, type ImdsClient, type UpstreamAnswer } from '../upstream/imds-client.ts';
import type { TokenCache } from '../upstream/token-cache.ts';
import { tokenPath } from '../upstream/token-path.ts';

export interface HandlerOptions {
  state: ClusterState;
  imds: ImdsClient;
  tokens: TokenCache | undefined;
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
}

const UPSTREAM_REASON: Record<UpstreamFailure['kind'], Reason> = {
  timeout: 'upstream_timeout',
  unreachable: 'upstream_unreachable',
  invalid: 'upstream_invalid',
  busy: 'upstream_busy',
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
    const signal = hangUpSignal(res);
    // Right after a restart the old rules already send pods here. Deciding from a half-listed
    // state would give a bound pod a final "binding missing"; a short wait or a retryable 503 does not.
    if (!o.state.isReady() && !(await readyWithin(o.state, o.podWaitMs, signal))) {
      return this.#refuse(res, 'token', 'state_not_ready', started);
    }
    const ip = sourceIp(req.socket.remoteAddress);
    const waited = o.state.podsAt(ip).length === 0;
    const found = await lookupPod(o.state, ip, o.podWaitMs, signal);
    if (waited && !signal.aborted) o.metrics.podWait(found.kind === 'pod' ? 'found' : 'timeout');
    if (found.kind === 'refuse') {
      this.#refuse(res, 'token', found.reason, started);
      o.log.info({ req: id, ip, resource: request.resource, decision: 'refused', reason: found.reason, status: refusalStatus(found.reason), ms: ms(started) }, 'token request refused');
      return;
    }
    const pod = found.pod;
    const decision = await decideAwaitingAssignment(o.state, pod, request, o.policy, o.assignmentWaitMs, signal);
    const who = { req: id, pod: `${pod.namespace}/${pod.name}`, uid: pod.uid, resource: request.resource };
    if (decision.kind === 'refuse' || decision.kind === 'pending') {
      const reason = decision.kind === 'refuse' ? decision.reason : 'assignment_pending';
      this.#refuse(res, 'token', reason, started);
      o.log.info({ ...who, requested: request.selector, decision: 'refused', reason, status: refusalStatus(reason), ms: ms(started) }, 'token request refused');
      return;
    }
    const path = tokenPath(request.apiVersion, request.resource, decision.upstream);
    const label: DecisionLabel = decision.kind === 'grant' ? 'granted' : 'passed_through';
    const identity = decision.kind === 'grant'
      ? { identity: `${decision.identity.namespace}/${decision.identity.name}`, clientID: decision.identity.clientID }
      : { exception: decision.exception.name, requested: decision.upstream };
    const upstreamStarted = performance.now();
    let cached: string | undefined;
    try {
      const answer = o.tokens === undefined
        ? await o.imds.fetch('GET', path, signal)
        : await o.tokens.get(path, signal, (outcome) => { cached = outcome; o.metrics.tokenCache(outcome); });
      if (cached !== 'hit') o.metrics.upstream('token', answer.status, (performance.now() - upstreamStarted) / 1000);
      writeUpstream(res, answer);
      o.metrics.request('token', label, answer.status, '', (performance.now() - started) / 1000);
      o.log.info({ ...who, ...identity, decision: label, cache: cached, status: answer.status, ms: ms(started) }, answer.status !== 200 ? 'token request failed upstream' : label === 'granted' ? 'token granted' : 'token passed through (exception)');
    } catch (err) {
      const reason = this.#upstreamFailed(err, 'token', upstreamStarted);
      this.#refuse(res, 'token', reason, started, undefined, label);
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
    const signal = hangUpSignal(res);
    let body: Buffer | undefined;
    if (method === 'POST') {
      body = await readBody(req, this.#maxBody);
      if (body === undefined) return this.#refuse(res, route, 'body_too_large', started);
    }
    const query = formatQuery(params);
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

  #upstreamFailed(err: unknown, route: string, upstreamStarted: number): Reason {
    const kind = err instanceof UpstreamFailure ? err.kind : 'unreachable';
    this.#o.metrics.upstream(route, kind, (performance.now() - upstreamStarted) / 1000);
    return UPSTREAM_REASON[kind];
  }

  #refuse(res: ServerResponse, route: string, reason: Reason, started: number, allow?: readonly string[], decision: DecisionLabel = 'refused'): void {
    writeRefusal(res, reason, allow);
    this.#o.metrics.request(route, decision, refusalStatus(reason), reason, (performance.now() - started) / 1000);
  }
}

function readyWithin(state: ClusterState, ms: number, signal: AbortSignal): Promise<boolean> {
  return state.whenReady(AbortSignal.any([signal, AbortSignal.timeout(ms)])).then(() => true, () => false);
}

function isMetadataTrue(value: string | string[] | undefined): boolean {
  return typeof value === 'string' && value.length === 4 && value.toLowerCase() === 'true';
}

/** Aborts when the client hangs up before the answer is written, so upstream work stops with it. */
function hangUpSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}

function ms(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

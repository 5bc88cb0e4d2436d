// The IMDS routes other than tokens (instance data, attestation, identity info, scheduled
// events, load balancer, versions): for a live pod of this node only, with the checked path
// and the route's own query keys re-serialised; no header of the pod goes up.
import type { IncomingMessage } from 'node:http';
import { isApiVersion } from '../decision/token-request.ts';
import { formatQuery } from '../matcher/query.ts';
import type { MatchedTarget } from '../matcher/request-target.ts';
import { forwardedQuery } from '../matcher/routes.ts';
import type { CallerRoom } from '../pods/caller-room.ts';
import type { ImdsClient } from '../upstream/imds-client.ts';
import { callingPod } from './calling-pod.ts';
import { readBody } from './read-body.ts';
import type { RequestContext } from './request-context.ts';

export interface ProxyRouteOptions {
  /** Their own pool, so token traffic never starves them. */
  imds: ImdsClient;
  callers: CallerRoom;
  interceptHostNetwork: boolean;
  maxBodyBytes: number;
}

export async function proxyRoute(o: ProxyRouteOptions, req: IncomingMessage, r: RequestContext, matched: MatchedTarget, params: Map<string, string>): Promise<void> {
  if (matched.route.needsApiVersion) {
    const v = params.get('api-version');
    if (v === undefined || v.length === 0) return r.refuse('api_version_missing');
    if (!isApiVersion(v)) return r.refuse('api_version_invalid');
  }
  const method = req.method === 'POST' ? 'POST' : 'GET';
  // Instance data, attestation and maintenance approval belong to the node's pods, not to any
  // address that reaches the listener.
  const found = await callingPod(o.callers, o.interceptHostNetwork, req, r.trace, r.signal);
  if (found.kind === 'refuse') return r.refuse(found.reason);
  r.trace.pod = found.pod;
  let body: Buffer | undefined;
  if (method === 'POST') {
    body = await readBody(req, o.maxBodyBytes);
    if (body === undefined) return r.refuse('body_too_large');
  }
  const query = formatQuery(forwardedQuery(matched.route, params));
  const path = query.length === 0 ? matched.path : `${matched.path}?${query}`;
  await r.relay(() => o.imds.fetch(method, path, r.signal, body));
}

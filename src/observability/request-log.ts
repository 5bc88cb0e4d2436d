// One log line per token decision, and per refusal of a caller, from the request hook. Tokens
// never reach it: the outcome carries the upstream answer, and only its status is read here.
// Values a pod sent are escaped and truncated; refusals go through the per-caller rate limit,
// so a pod refused in a loop cannot rotate everything else out of the log.
import type { Logger } from 'pino';
import type { PodInfo } from '../cluster/objects.ts';
import { podCallerOf } from '../pods/caller.ts';
import type { TokenDecision } from '../decision/decide.ts';
import { safeForLog } from './log-safe.ts';
import type { RefusalLog } from './refusal-log.ts';
import { decisionLabel, type RequestObserver, type RequestOutcome } from './request-outcome.ts';

/** The summary of a window's grant lines not written one by one. */
export const GRANTS_SUMMARY = {
  level: 'info', msg: 'token grant lines suppressed for this pod, identity and resource', fields: ['pod', 'uid', 'identity', 'clientID', 'exception', 'resource'],
} as const;

export class RequestLog implements RequestObserver {
  readonly #log: Logger;
  readonly #refusals: RefusalLog;
  readonly #grants: RefusalLog;

  /** `grants`: the windows of granted tokens' lines, one per pod, identity and resource (GRANTS_SUMMARY). */
  constructor(log: Logger, refusals: RefusalLog, grants: RefusalLog) {
    this.#log = log;
    this.#refusals = refusals;
    this.#grants = grants;
  }

  finished(o: RequestOutcome): void {
    // Token requests whose query parsed, and callers refused for who they are (no pod, over
    // their share); malformed requests and proxied routes are counted, not logged.
    if (o.id === undefined && (o.reason === undefined || o.ip === undefined)) return;
    const failedUpstream = o.upstream !== undefined && o.reason !== undefined;
    // Grants are logged at info: when it is off, their line is not even built.
    if (o.reason === undefined && !this.#log.isLevelEnabled('info')) return;
    const d = o.decision;
    if (o.reason === undefined && o.status === 200 && o.pod !== undefined && (d?.kind === 'grant' || d?.kind === 'pass-through')) {
      // Built only when written: most of a pod's grants from the cache are counted, not written.
      this.#grants.write(grantKey(o.pod, d, o.request?.resource ?? ''), () => lineOf(o), d.kind === 'grant' ? 'token granted' : 'token passed through (exception)');
      return;
    }
    if (failedUpstream) {
      this.#log.warn({ ...lineOf(o), err: o.error }, 'token request failed upstream');
    } else if (o.reason !== undefined) {
      const caller = o.pod !== undefined ? podCallerOf(o.pod).key : `ip:${o.ip ?? ''}`;
      this.#refusals.write(caller, () => lineOf(o), o.id === undefined ? 'request refused' : 'token request refused');
    } else {
      this.#log.info(lineOf(o), 'token request failed upstream');
    }
  }
}

/**
 * A grant window's key: pod, identity (or exception) and resource. A grant decision is one object
 * per pod and identity while the cluster stays the same (decide.ts), and a resource one string
 * per value (query.ts), so the key is built once for them and found again by identity; the pod's
 * UID is checked all the same, so a decision shared between pods could never mix their windows.
 */
const grantKeys = new WeakMap<object, Map<string, { readonly uid: string; readonly key: string }>>();
const MAX_RESOURCES_PER_GRANT = 64;

function grantKey(pod: PodInfo, d: TokenDecision & { kind: 'grant' | 'pass-through' }, resource: string): string {
  if (d.kind !== 'grant') return `${pod.uid} exception:${d.exception.namespace}/${d.exception.name} ${resource}`;
  let keys = grantKeys.get(d);
  if (keys === undefined) grantKeys.set(d, keys = new Map());
  const known = keys.get(resource);
  if (known !== undefined && known.uid === pod.uid) return known.key;
  const key = `${pod.uid} ${d.identity.clientID} ${resource}`;
  if (keys.size >= MAX_RESOURCES_PER_GRANT) keys.clear();
  keys.set(resource, { uid: pod.uid, key });
  return key;
}

/** The line's fields, in the order they are written; built in one go. */
function lineOf(o: RequestOutcome): Record<string, unknown> {
  const fields: Record<string, unknown> = o.id === undefined ? { route: o.route } : { req: o.id };
  if (o.pod !== undefined) {
    fields.pod = `${o.pod.namespace}/${o.pod.name}`;
    fields.uid = o.pod.uid;
  }
  if (o.via !== undefined) fields.via = o.via;
  else if (o.ip !== undefined) fields.ip = o.ip;
  // A connection refused attestation: the address it claimed, since no pod is named.
  if (o.via === 'socket_attestation' && o.pod === undefined && o.ip !== undefined) fields.ip = o.ip;
  if (o.request !== undefined) fields.resource = safeForLog(o.request.resource);
  const d = o.decision;
  if (d?.kind === 'grant') {
    fields.identity = `${d.identity.namespace}/${d.identity.name}`;
    fields.clientID = d.identity.clientID;
  } else if (d?.kind === 'pass-through') {
    fields.exception = d.exception.name;
    fields.requested = selector(d.upstream);
  } else if (o.pod !== undefined) {
    fields.requested = selector(o.request?.selector);
  }
  fields.decision = decisionLabel(o);
  fields.reason = o.reason;
  fields.cache = o.cache;
  fields.status = o.status;
  fields.ms = Math.round(o.seconds * 100_000) / 100;
  return fields;
}

function selector(s: { name: string; value: string } | undefined): { name: string; value: string } | undefined {
  return s === undefined ? undefined : { name: s.name, value: safeForLog(s.value) };
}

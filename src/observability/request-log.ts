// One log line per token decision, and per refusal of a caller, from the request hook. Tokens
// never reach it: the outcome carries the upstream answer, and only its status is read here.
// Values a pod sent are escaped and truncated; refusals go through the per-caller rate limit,
// so a pod refused in a loop cannot rotate everything else out of the log.
import type { Logger } from 'pino';
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
      const about = d.kind === 'grant' ? d.identity.clientID : `exception:${d.exception.namespace}/${d.exception.name}`;
      this.#grants.write(`${o.pod.uid} ${about} ${o.request?.resource ?? ''}`, () => lineOf(o), d.kind === 'grant' ? 'token granted' : 'token passed through (exception)');
      return;
    }
    const fields = lineOf(o);
    if (failedUpstream) {
      this.#log.warn({ ...fields, err: o.error }, 'token request failed upstream');
    } else if (o.reason !== undefined) {
      const caller = o.pod !== undefined ? `pod:${o.pod.uid}` : `ip:${o.ip ?? ''}`;
      this.#refusals.write(caller, fields, o.id === undefined ? 'request refused' : 'token request refused');
    } else {
      this.#log.info(fields, 'token request failed upstream');
    }
  }
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

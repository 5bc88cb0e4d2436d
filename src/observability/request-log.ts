// One log line per token decision, from the request hook. Tokens never reach it: the outcome
// carries the upstream answer, and only its status is read here.
import type { Logger } from 'pino';
import { decisionLabel, type RequestObserver, type RequestOutcome } from './request-outcome.ts';

export class RequestLog implements RequestObserver {
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  finished(o: RequestOutcome): void {
    // Token requests whose query parsed; malformed requests and other routes are counted, not logged.
    if (o.id === undefined) return;
    const decision = decisionLabel(o);
    const fields: Record<string, unknown> = { req: o.id };
    if (o.pod !== undefined) Object.assign(fields, { pod: `${o.pod.namespace}/${o.pod.name}`, uid: o.pod.uid });
    else if (o.ip !== undefined) fields.ip = o.ip;
    fields.resource = o.request?.resource;
    const d = o.decision;
    if (d?.kind === 'grant') Object.assign(fields, { identity: `${d.identity.namespace}/${d.identity.name}`, clientID: d.identity.clientID });
    else if (d?.kind === 'pass-through') Object.assign(fields, { exception: d.exception.name, requested: d.upstream });
    else if (o.pod !== undefined) fields.requested = o.request?.selector;
    Object.assign(fields, { decision, reason: o.reason, cache: o.cache, status: o.status, ms: Math.round(o.seconds * 100_000) / 100 });
    if (o.upstream !== undefined && o.reason !== undefined) {
      this.#log.warn({ ...fields, err: o.error }, 'token request failed upstream');
    } else if (o.reason !== undefined) {
      this.#log.info(fields, 'token request refused');
    } else {
      this.#log.info(fields, o.status !== 200 ? 'token request failed upstream' : decision === 'granted' ? 'token granted' : 'token passed through (exception)');
    }
  }
}

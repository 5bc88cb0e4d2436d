// A token source's own refusal (a Secret missing, a TokenRequest refused): the reason's status
// and IMDS-shaped body, its description followed by what was found (which Secret, which key),
// never a value. Relayed like an upstream answer, with the reason in x-podid-nmi-reason.
import { REFUSALS, type Reason, type RefusalSpec } from '../../decision/reasons.ts';
import type { UpstreamAnswer } from '../imds-client.ts';

export function sourceRefusal(reason: Reason, detail: string): UpstreamAnswer {
  const spec: RefusalSpec = REFUSALS[reason];
  const body = { error: spec.error, error_description: `${spec.description}: ${detail}`, reason };
  return {
    status: spec.status, contentType: 'application/json; charset=utf-8',
    retryAfter: spec.retryAfter === undefined ? undefined : String(spec.retryAfter),
    body: Buffer.from(JSON.stringify(body), 'utf8'), reason,
  };
}

/** Thrown inside a source, turned into its answer at the source's edge. */
export class SourceRefusal extends Error {
  override name = 'SourceRefusal';
  readonly reason: Reason;
  constructor(reason: Reason, detail: string) {
    super(detail);
    this.reason = reason;
  }
  answer(): UpstreamAnswer {
    return sourceRefusal(this.reason, this.message);
  }
}

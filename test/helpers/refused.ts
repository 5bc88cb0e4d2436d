// The shape of every refusal: status, IMDS-shaped body with the reason, reason header, Retry-After.
import type { Test } from 'tap';
import { REFUSALS, type Reason, type RefusalSpec } from '../../src/decision/reasons.ts';

export interface AnswerLike {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown> | undefined;
}

export function assertRefused(t: Test, a: AnswerLike, reason: Reason, what: string): void {
  const spec: RefusalSpec = REFUSALS[reason];
  t.equal(a.status, spec.status, `${what}: status`);
  t.same(a.json, { error: spec.error, error_description: spec.description, reason }, `${what}: body`);
  t.equal(a.headers['x-podid-nmi-reason'], reason, `${what}: reason header`);
  t.equal(a.headers['retry-after'], spec.retryAfter === undefined ? undefined : String(spec.retryAfter), `${what}: Retry-After`);
  if (spec.closesConnection === true) t.equal(a.headers.connection, 'close', `${what}: the connection closes`);
}

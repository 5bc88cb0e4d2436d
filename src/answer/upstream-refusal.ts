// What a pod is told when its upstream fetch failed: a retryable refusal per kind of failure,
// with IMDS's own (or the queue's) Retry-After kept, and `shutting_down` once the daemon stops.
import type { Reason } from '../decision/reasons.ts';
import { UpstreamFailure, type UpstreamFailureKind } from '../upstream/imds-client.ts';

const UPSTREAM_REASON: Record<UpstreamFailureKind, Reason> = {
  timeout: 'upstream_timeout',
  unreachable: 'upstream_unreachable',
  invalid: 'upstream_invalid',
  busy: 'upstream_busy',
  share_exceeded: 'upstream_share_exceeded',
  queued: 'upstream_queued',
  aborted: 'upstream_unreachable',
};

export interface UpstreamRefusal {
  readonly kind: UpstreamFailureKind;
  readonly reason: Reason;
  readonly retryAfterSec: number | undefined;
}

export function upstreamRefusal(err: unknown, stopping: boolean): UpstreamRefusal {
  const kind = err instanceof UpstreamFailure ? err.kind : 'unreachable';
  return {
    kind,
    reason: stopping ? 'shutting_down' : UPSTREAM_REASON[kind],
    retryAfterSec: err instanceof UpstreamFailure ? err.retryAfterSec : undefined,
  };
}

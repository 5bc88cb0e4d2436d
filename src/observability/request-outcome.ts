// The one hook between the request path and everything that watches it. The handler reports
// each finished request once; metrics, logs and Kubernetes Events subscribe. An observer that
// throws is cut off from that one report, never from the answer the pod already has.
import type { PodInfo } from '../cluster/objects.ts';
import type { TokenDecision } from '../decision/decide.ts';
import type { Reason } from '../decision/reasons.ts';
import type { TokenRequest } from '../decision/token-request.ts';
import type { RouteName } from '../matcher/routes.ts';
import type { UpstreamAnswer, UpstreamFailureKind } from '../upstream/imds-client.ts';

export interface RequestOutcome {
  /** A matched route (`host_token`: NMI's /host/token), or 'unknown' when the target matched none. */
  readonly route: RouteName | 'host_token' | 'unknown';
  readonly status: number;
  /** Set when the daemon refused (including upstream failures it turned into a refusal). */
  readonly reason: Reason | undefined;
  readonly seconds: number;
  /** Token requests only, once their query parsed: a per-process request number for logs. */
  readonly id?: number;
  readonly request?: TokenRequest;
  readonly ip?: string;
  /** Whether the request waited for its pod to appear, and how that ended. */
  readonly podWait?: 'found' | 'timeout';
  readonly pod?: PodInfo;
  /** How the calling pod was found: by its own address, by its socket's cgroup (hostNetwork), or by its address and its socket (--attest-pod-sockets). */
  readonly via?: 'source_ip' | 'socket_cgroup' | 'socket_attestation';
  readonly decision?: TokenDecision;
  readonly cache?: 'hit' | 'miss' | 'shared';
  /** What the metadata service did, when it was asked (a cache hit still carries the cached answer). */
  readonly upstream?: { readonly result: number | UpstreamFailureKind; readonly seconds: number; readonly answer?: UpstreamAnswer };
  readonly error?: string;
}

export interface RequestObserver {
  finished(outcome: RequestOutcome): void;
}

export type DecisionLabel = 'granted' | 'passed_through' | 'refused' | 'proxied';

/** How the outcome is counted: by what was decided, whatever IMDS then answered. */
export function decisionLabel(o: RequestOutcome): DecisionLabel {
  // /host/token decides as the token route does (for the pod it names), so it is labelled the same.
  if (o.route !== 'token' && o.route !== 'host_token') return o.reason === undefined || o.upstream !== undefined ? 'proxied' : 'refused';
  switch (o.decision?.kind) {
    case 'grant': return 'granted';
    case 'pass-through': return 'passed_through';
    default: return 'refused';
  }
}

export function observers(list: readonly RequestObserver[], onError: (err: unknown) => void): RequestObserver {
  return {
    finished(outcome) {
      for (const o of list) {
        try {
          o.finished(outcome);
        } catch (err) {
          onError(err);
        }
      }
    },
  };
}

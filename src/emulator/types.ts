export interface EmulatedIdentity {
  clientID: string;
  resourceID: string;
  objectID: string;
  principalId?: string;
}

export interface RateLimit {
  perSecond: number;
  concurrent: number;
}

export interface EmulatorOptions {
  /** Default '127.0.0.1'. A non-loopback host is refused unless allowNonLoopback is set. */
  host?: string;
  /** Default 0 (ephemeral). */
  port?: number;
  /** For the end-to-end test, which binds 169.254.169.254 inside a network namespace. */
  allowNonLoopback?: boolean;
  identities: EmulatedIdentity[];
  /** Used when no selector is given. Without it, the only user-assigned identity is used. */
  systemAssigned?: EmulatedIdentity;
  /** Applies to token requests only. Default { perSecond: 20, concurrent: 5 } like real IMDS. */
  rateLimit?: RateLimit | false;
  /** Delay before answering a token request; keeps the concurrency slot busy. Default 0. */
  tokenLatencyMs?: number;
  /** Tenant reported by /metadata/identity/info and the instance document. */
  tenantId?: string;
  /** Clock in ms, for tests. */
  now?: () => number;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  remoteAddress: string;
  at: number;
}

export type Fault =
  | { kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  | { kind: 'slow'; delayMs: number }
  | { kind: 'reset' };

export interface ImdsEmulator {
  url: string;
  host: string;
  port: number;
  /** Every request received, in order; only the last 10,000 are kept. */
  requests: RecordedRequest[];
  /** Applies to the next `times` token requests (default: until cleared with undefined). */
  setFault(f: Fault | undefined, opts?: { times?: number }): void;
  close(): Promise<void>;
}

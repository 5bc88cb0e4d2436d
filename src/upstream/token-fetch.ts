// How a token is fetched for a pod: through the cache (which shares concurrent fetches) when
// it is on, else straight through the paced scheduler. Either way the pod's own share of the
// IMDS budget is charged (its UID, so an address's next holder starts afresh).
import type { UpstreamAnswer } from './imds-client.ts';
import { fetchPaced, type UpstreamScheduler } from './scheduler.ts';
import type { TokenCache, TokenOutcome } from './token-cache.ts';

export type TokenFetch = (path: string, podUid: string, signal: AbortSignal, onCache?: (outcome: TokenOutcome) => void) => Promise<UpstreamAnswer>;

export function tokenFetch(o: { scheduler: UpstreamScheduler; tokens: TokenCache | undefined; tokenWaitMs: number }): TokenFetch {
  const tokens = o.tokens;
  return tokens === undefined
    ? (path, caller, signal) => fetchPaced(o.scheduler, path, caller, signal, o.tokenWaitMs)
    : (path, caller, signal, onCache) => tokens.get(path, { caller, signal, onOutcome: onCache });
}

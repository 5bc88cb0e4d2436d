// How a token is fetched for a pod: by its source. IMDS's through the cache (which shares
// concurrent fetches) when it is on, else straight through the paced scheduler; Entra's
// through the Entra room's own cache and scheduler. Either way the pod's own share is
// charged (its UID, so an address's next holder starts afresh).
import type { UpstreamAnswer } from './imds-client.ts';
import { fetchPaced, type UpstreamScheduler } from './scheduler.ts';
import type { TokenCache, TokenOutcome } from './token-cache.ts';
import type { TokenOrder } from './token-source.ts';
import type { EntraRoom } from './entra/entra-room.ts';

export type TokenFetch = (order: TokenOrder, podUid: string, signal: AbortSignal, onCache?: (outcome: TokenOutcome) => void) => Promise<UpstreamAnswer>;

export function tokenFetch(o: { scheduler: UpstreamScheduler; tokens: TokenCache | undefined; tokenWaitMs: number; entra?: EntraRoom }): TokenFetch {
  const tokens = o.tokens;
  const entra = o.entra;
  const imds: (path: string, caller: string, signal: AbortSignal, onCache?: (outcome: TokenOutcome) => void) => Promise<UpstreamAnswer> = tokens === undefined
    ? (path, caller, signal) => fetchPaced(o.scheduler, path, caller, signal, o.tokenWaitMs)
    : (path, caller, signal, onCache) => tokens.get(path, { caller, signal, onOutcome: onCache });
  return (order, caller, signal, onCache) => {
    if (order.kind === 'imds') return imds(order.key, caller, signal, onCache);
    // No fallback to IMDS: an identity that is not on the node must not be asked for there.
    if (entra === undefined) return Promise.reject(new Error('no Entra token source configured'));
    return entra.get(order, caller, signal, onCache);
  };
}

/** A token the cache holds for an order, served without waiting; undefined when `TokenFetch` would fetch or wait. */
export type CachedToken = (order: TokenOrder) => UpstreamAnswer | undefined;

export function cachedToken(o: { tokens: TokenCache | undefined; entra?: EntraRoom }): CachedToken {
  const tokens = o.tokens;
  const entra = o.entra;
  return (order) => (order.kind === 'imds' ? tokens?.hit(order.key) : entra?.hit(order));
}

// Whether cluster state may be decided from at all: loaded, and (when the operator asked for
// it) confirmed by the API server recently enough. Both refusals are retryable 503s.
import type { ClusterState } from './view.ts';

export async function unusableState(
  state: ClusterState, readyWaitMs: number, maxStalenessS: number, signal: AbortSignal,
): Promise<'state_not_ready' | 'state_stale' | undefined> {
  if (!state.isReady()) {
    const ready = await state.whenReady(AbortSignal.any([signal, AbortSignal.timeout(readyWaitMs)])).then(() => true, () => false);
    if (!ready) return 'state_not_ready';
  }
  return unusableNow(state, maxStalenessS);
}

/** The same, without waiting: `state_not_ready` is what `unusableState` would wait out first. */
export function unusableNow(state: ClusterState, maxStalenessS: number): 'state_not_ready' | 'state_stale' | undefined {
  if (!state.isReady()) return 'state_not_ready';
  if (maxStalenessS > 0 && state.freshness !== undefined && state.freshness.ageSeconds() > maxStalenessS) return 'state_stale';
  return undefined;
}

/** What an answer in progress tells of its connection: node:http's ServerResponse has it. */
export interface HangUp {
  once(event: 'close', listener: () => void): unknown;
  readonly writableFinished: boolean;
}

/** Aborts when the client hangs up before the answer is written, so upstream work stops with it, or on shutdown. */
export function hangUpSignal(res: HangUp, stopping: AbortSignal): AbortSignal {
  const controller = new AbortController();
  if (stopping.aborted) {
    controller.abort(stopping.reason);
    return controller.signal;
  }
  const live = requestsStoppedBy(stopping);
  live.add(controller);
  res.once('close', () => {
    live.delete(controller);
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/**
 * The requests not yet answered, aborted together when the daemon stops: one listener for all of
 * them. `AbortSignal.any` per request cost several microseconds and weak references for the GC
 * to trace on every request. Bounded by the requests in flight: each leaves the set on 'close'.
 */
const unanswered = new WeakMap<AbortSignal, Set<AbortController>>();

function requestsStoppedBy(stopping: AbortSignal): Set<AbortController> {
  let live = unanswered.get(stopping);
  if (live === undefined) {
    const set = new Set<AbortController>();
    live = set;
    unanswered.set(stopping, set);
    stopping.addEventListener('abort', () => {
      for (const c of set) c.abort(stopping.reason);
      set.clear();
    }, { once: true });
  }
  return live;
}

import type { ServerResponse } from 'node:http';

/** Aborts when the client hangs up before the answer is written, so upstream work stops with it, or on shutdown. */
export function hangUpSignal(res: ServerResponse, stopping: AbortSignal): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return AbortSignal.any([controller.signal, stopping]);
}

// Waiting in tests for something to happen, instead of sleeping a fixed time and hoping it
// did: a loaded machine (CI, three test runs on two cores) can take many times longer than an
// idle one, so the bound is generous and only matters when the thing never happens.

/** Long enough for load average 20 on 2 cores; reached only when the awaited thing never comes. */
export const EVENTUALLY_MS = 20_000;

/**
 * Polls the test's own condition (sync or async) every `everyMs` until it holds; throws, naming
 * it, once `timeoutMs` has passed. Returns how long it took, for a comment.
 */
export async function eventually(
  condition: () => boolean | Promise<boolean>, what: string, timeoutMs = EVENTUALLY_MS, everyMs = 20,
): Promise<number> {
  const start = performance.now();
  const deadline = start + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return performance.now() - start;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

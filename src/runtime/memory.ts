// How the daemon asks V8 to hold less memory. Both steps are measured in docs/performance.md (Memory) with
// bench/deployed.bench.ts, the daemon started as the image starts it.
//
// A list is a burst: a large cluster's first sync parses tens of MB of JSON in a second or
// two, and V8 keeps the heap it grew for it (a young generation at its semi-space maximum,
// old-space pages left sparse). One memory-reducing full collection after the burst hands it
// back. It needs node's --expose-gc, which the image passes; without it (tests, `npx nmi`)
// that step does nothing.
//
// Memory saver mode (--memory-saver, off by default) makes V8 grow the heap in smaller steps
// and give pages back sooner: about 5 MiB less RSS after a load burst, but 30 to 60% more
// daemon CPU per request on bench/request-path.bench.ts, far past the 10% the request path may
// lose. It is switched on once the state is ready, not on the command line, because during
// the first sync it would cost about 0.6 s of CPU, which time to ready cannot spare.
import { setFlagsFromString } from 'node:v8';

type GcFunction = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** Runs a memory-reducing full GC if node exposes one; returns whether it ran. */
export function releaseBurstMemory(): boolean {
  const gc = (globalThis as { gc?: GcFunction }).gc;
  if (typeof gc !== 'function') return false;
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  return true;
}

/**
 * From now on, V8 favours a small heap over fewer collections. Node keeps V8's flags writable
 * after start for exactly this (v8.setFlagsFromString); the flag is a GC heuristic, read at
 * each sizing decision.
 */
export function favourMemoryFromNowOn(): void {
  setFlagsFromString('--memory-saver-mode');
}

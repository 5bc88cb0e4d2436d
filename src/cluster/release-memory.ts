// A list is a burst: a large cluster's first sync parses tens of MB of JSON in a second or
// two, and V8 keeps the heap it grew for it (a young generation at its 16 MiB semi-space
// maximum, old-space pages left sparse), about 50 MiB of RSS that steady serving never needs.
// One memory-reducing full collection after the burst hands it back. It needs node's
// --expose-gc, which the image passes; without it (tests, `npx nmi`) this does nothing.
// Capping the young generation instead (--max-semi-space-size=1) saves as much but costs the
// request path more than 10% (README, Memory).

type GcFunction = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** Runs a memory-reducing full GC if node exposes one; returns whether it ran. */
export function releaseBurstMemory(): boolean {
  const gc = (globalThis as { gc?: GcFunction }).gc;
  if (typeof gc !== 'function') return false;
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  return true;
}

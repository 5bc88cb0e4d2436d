// prom-client builds a label object and hashes it on every `inc({...})` / `observe({...})`, and
// again on every `labels(...)`. A request reports to four series; their children are looked up
// here once per label set, through nested maps keyed by the values themselves, so a request
// hashes no new string. Label values come from closed sets (metrics.ts), so this stays small.
export class LabelChildren<C> {
  readonly #root = new Map<unknown, unknown>();
  readonly #depth: number;
  readonly #make: (values: string[]) => C;

  /** `make` gets the label values in order, as strings (statuses come as numbers). */
  constructor(depth: number, make: (values: string[]) => C) {
    this.#depth = depth;
    this.#make = make;
  }

  get(a: string | number, b: string | number = '', c: string | number = '', d: string | number = ''): C {
    let map = this.#root;
    const depth = this.#depth;
    for (let i = 0; i < depth - 1; i++) {
      const key = i === 0 ? a : i === 1 ? b : c;
      let next = map.get(key) as Map<unknown, unknown> | undefined;
      if (next === undefined) map.set(key, next = new Map());
      map = next;
    }
    const last = depth === 1 ? a : depth === 2 ? b : depth === 3 ? c : d;
    let child = map.get(last) as C | undefined;
    if (child === undefined) {
      child = this.#make([a, b, c, d].slice(0, depth).map(String));
      map.set(last, child);
    }
    return child;
  }
}

/**
 * prom-client's own entry for the series with `labels` in a metric's `hashMap` (its key and
 * values), created at zero by `zero` when missing: what the per-series handles add to.
 */
export function seriesEntry<V extends { labels: Record<string, unknown> }>(
  hashMap: () => Record<string, V>, labels: Record<string, string>, zero: () => void,
): { key: string; entry: V } {
  for (let tries = 0; tries < 2; tries++) {
    for (const [key, entry] of Object.entries(hashMap())) if (sameLabels(entry.labels, labels)) return { key, entry };
    zero();
  }
  throw new Error('prom-client did not create the series');
}

function sameLabels(a: Record<string, unknown>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (String(a[k]) !== b[k]) return false;
  return true;
}

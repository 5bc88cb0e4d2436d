// One counter series (a fixed label set) counted without prom-client's per-call work: its `inc`
// hashes and validates the labels on every call, also through `labels()` children. As with
// histogram-series.ts, prom-client creates and exports the series; this only adds to its value,
// prom-client 15's own field (test/hot-path.test.ts compares the exposition with prom-client's `inc`).
import type { Counter } from 'prom-client';
import { seriesEntry } from './label-children.ts';

interface SeriesValue {
  labels: Record<string, string | number>;
  value: number;
}

export interface CounterSeries {
  inc(): void;
}

/** The series of `counter` for `values` (in label-name order). */
export function counterSeries<T extends string>(counter: Counter<T>, labelNames: readonly T[], values: readonly string[]): CounterSeries {
  const hashMap = (): Record<string, SeriesValue> => (counter as unknown as { hashMap: Record<string, SeriesValue> }).hashMap;
  const labels: Partial<Record<T, string>> = {};
  labelNames.forEach((name, i) => { labels[name] = values[i]!; });
  let hash: string | undefined;
  let series: SeriesValue | undefined;
  // Keeps what the series already counted; creates it (at zero) the first time, or after a reset.
  const attach = (): SeriesValue => {
    const found = seriesEntry(hashMap, labels as Record<string, string>, () => counter.inc(labels, 0));
    hash = found.key;
    return found.entry;
  };
  return {
    inc(): void {
      if (series === undefined || hashMap()[hash!] !== series) series = attach();
      series.value += 1;
    },
  };
}

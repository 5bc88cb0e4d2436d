// One histogram series (a fixed label set) observed without prom-client's per-call work: its
// `observe` validates and hashes the labels on every call, also through `labels()` children;
// histograms are most of what a request's report costs. The series is created by prom-client
// (`zero`) and exported by it as before; this only adds to its bucket counts, sum and count,
// which are prom-client 15's own fields (test/hot-path.test.ts compares the exposition with
// prom-client's `observe` and fails if they change).
import type { Histogram } from 'prom-client';
import { seriesEntry } from './label-children.ts';

interface SeriesValues {
  labels: Record<string, string>;
  bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

interface HistogramFields {
  hashMap: Record<string, SeriesValues>;
  upperBounds: readonly number[];
}

export interface HistogramSeries {
  observe(value: number): void;
}

/** The series of `histogram` for `values` (in label-name order). */
export function histogramSeries<T extends string>(histogram: Histogram<T>, labelNames: readonly T[], values: readonly string[]): HistogramSeries {
  const h = histogram as unknown as HistogramFields;
  const labels: Partial<Record<T, string>> = {};
  labelNames.forEach((name, i) => { labels[name] = values[i]!; });
  const bounds = h.upperBounds;
  const keys = bounds.map(String);
  let hash: string | undefined;
  let series: SeriesValues | undefined;
  // Keeps what the series already counted; creates it (at zero) the first time, or after a reset.
  const attach = (): SeriesValues => {
    const found = seriesEntry(() => h.hashMap, labels as Record<string, string>, () => histogram.zero(labels));
    hash = found.key;
    return found.entry;
  };
  return {
    observe(value: number): void {
      if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
      if (series === undefined || h.hashMap[hash!] !== series) series = attach();
      series.sum += value;
      series.count += 1;
      for (let i = 0; i < bounds.length; i++) {
        if (value <= bounds[i]!) {
          series.bucketValues[keys[i]!]! += 1;
          return;
        }
      }
    },
  };
}

// Test plumbing around the fake API server: an InformerClusterState pointed at it with short
// timeouts, captured logs, metric reads, and a bounded wait for a test's own condition.
import pino from 'pino';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { InformerClusterState } from '../../src/cluster/informer-source.ts';
import type { InformerSourceOptions } from '../../src/cluster/informer-source.ts';
import { FakeApiServer } from './fake-apiserver.ts';
import type { FakeApiServerOptions } from './fake-apiserver.ts';

export const NODE = 'node-a';

export type LogRecord = Record<string, unknown> & { level: number; msg: string };

export function capturingLogger(): { log: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void records.push(JSON.parse(line) as LogRecord) });
  return { log, records };
}

import { eventually, EVENTUALLY_MS } from '../helpers/eventually.ts';

export { eventually, sleep } from '../helpers/eventually.ts';

/** The value of one series, or 0 when it does not exist. */
export async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (m === undefined) return 0;
  const data = await m.get();
  const hit = data.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return hit?.value ?? 0;
}

export interface Harness {
  api: FakeApiServer;
  state: InformerClusterState;
  registry: Registry;
  logs: LogRecord[];
  close(): Promise<void>;
}

export const FAST: Pick<InformerSourceOptions, 'backoff' | 'timeouts'> = {
  backoff: { initialMs: 20, maxMs: 200 },
  timeouts: { connectMs: 500, idleMs: 5_000, listMs: 1_000 },
};

export async function startHarness(opts: {
  server?: FakeApiServerOptions;
  seed?: (api: FakeApiServer) => void;
  /** Runs after seeding, before the state starts (to inject faults). */
  beforeStart?: (api: FakeApiServer) => void;
  source?: Partial<InformerSourceOptions>;
  /** Wait until ready and all four watches are open (default true). */
  waitReady?: boolean;
} = {}): Promise<Harness> {
  const api = await FakeApiServer.start(opts.server);
  opts.seed?.(api);
  opts.beforeStart?.(api);
  const registry = new Registry();
  const { log, records } = capturingLogger();
  const state = await InformerClusterState.start({
    kubeconfig: api.kubeconfig(), nodeName: NODE, log, registry, ...FAST, ...opts.source,
  });
  const h: Harness = {
    api, state, registry, logs: records,
    async close() {
      await state.close();
      await api.close();
    },
  };
  if (opts.waitReady !== false) {
    try {
      await state.whenReady(AbortSignal.timeout(EVENTUALLY_MS));
      // Ready means listed; the watches open right after. Tests that push events want them open.
      await eventually(() => api.watchCount() === 4, 'all four watches open');
    } catch (err) {
      await h.close();
      throw err;
    }
  }
  return h;
}

// Informer source at cluster scale, against the fake API server in a child process (so that
// the RSS measured here is the daemon's side only): 250 pods on this node plus 750 elsewhere,
// 20,000 AzureIdentities and 20,000 bindings. Reports time to ready, memory after sync,
// lookup latency on the request path, and watch-event-to-waitForIp-wake latency.
//
// Run: npx node bench/informer.bench.ts    (about 15-30 s)
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import pino from 'pino';
import { Registry } from 'prom-client';
import { InformerClusterState } from '../src/cluster/informer-source.ts';
import { FakeApiServer } from '../test/fake-apiserver/fake-apiserver.ts';
import { binding, exception, identity, pod } from '../test/fake-apiserver/fixtures.ts';

const NODE = 'node-a';
const POD_NAMESPACES = 50;
const NODE_PODS = 250;
const OTHER_PODS = 750;
const IDENTITIES = 20_000;
const ID_NAMESPACES = 200;
const LOOKUPS = 200_000;
const WAKES = 200;

type ToServer = { op: 'create-pod'; name: string; ip: string } | { op: 'relist-all' } | { op: 'exit' };
type FromServer = { op: 'ready'; kubeconfig: string; seedMs: number } | { op: 'created'; writtenAt: number } | { op: 'relisting' };

const now = (): number => performance.timeOrigin + performance.now();
const podIp = (i: number): string => `10.10.${i >> 8}.${i & 255}`;

// ---- child: the API server ----

async function serve(): Promise<void> {
  const send = (m: FromServer): void => void process.send!(m);
  const started = performance.now();
  const api = await FakeApiServer.start();
  for (let i = 0; i < NODE_PODS; i++) {
    const ns = `ns-${i % POD_NAMESPACES}`;
    api.create('pods', pod({ name: `app-${i}`, namespace: ns, ip: podIp(i), labels: { aadpodidbinding: `sel-${i % 100}`, app: 'bench' } }));
  }
  for (let i = 0; i < OTHER_PODS; i++) api.create('pods', pod({ name: `other-${i}`, namespace: `ns-${i % POD_NAMESPACES}`, ip: `10.20.${i >> 8}.${i & 255}`, node: `node-${i % 7 === 0 ? 'b' : 'c'}` }));
  for (let i = 0; i < IDENTITIES; i++) {
    const ns = i < POD_NAMESPACES * 100 ? `ns-${Math.floor(i / 100)}` : `team-${i % ID_NAMESPACES}`;
    const name = `id-${i}`;
    api.create('azureidentities', identity({ name, namespace: ns, clientID: `00000000-0000-0000-0000-${String(i).padStart(12, '0')}` }));
    api.create('azureidentitybindings', binding({ name: `bind-${i}`, namespace: ns, azureIdentity: name, selector: `sel-${i % 100}` }));
  }
  for (let i = 0; i < 20; i++) api.create('azurepodidentityexceptions', exception({ name: `exc-${i}`, namespace: `team-${i}`, podLabels: { app: 'dns' } }));
  api.compact(); // the seeding history is not needed for resumes
  process.on('message', (m: ToServer) => {
    if (m.op === 'create-pod') {
      api.create('pods', pod({ name: m.name, namespace: 'wake', ip: m.ip }));
      send({ op: 'created', writtenAt: now() });
    } else if (m.op === 'relist-all') {
      api.create('pods', pod({ name: `marker-${Date.now()}`, namespace: 'wake', ip: '10.99.0.1', node: 'node-z' }));
      api.compact();
      api.dropWatches();
      send({ op: 'relisting' });
    } else {
      void api.close().then(() => process.exit(0));
    }
  });
  send({ op: 'ready', kubeconfig: api.kubeconfig(), seedMs: performance.now() - started });
}

// ---- parent: the daemon side ----

function next<T extends FromServer['op']>(child: ChildProcess, op: T): Promise<Extract<FromServer, { op: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${op} from the server within 60 s`)), 60_000);
    const on = (m: FromServer): void => {
      if (m.op !== op) return;
      clearTimeout(timer);
      child.off('message', on);
      resolve(m as Extract<FromServer, { op: T }>);
    };
    child.on('message', on);
  });
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;

async function main(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const rows: Array<[string, string]> = [];
  const child = fork(new URL(import.meta.url).pathname, ['--server'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const hardStop = setTimeout(() => {
    console.error('bench exceeded 90 s; aborting');
    child.kill();
    process.exit(1);
  }, 90_000);
  try {
    const { kubeconfig, seedMs } = await next(child, 'ready');
    rows.push(['fake API server seeded', `${(seedMs / 1000).toFixed(1)} s (${NODE_PODS + OTHER_PODS} pods, ${IDENTITIES} identities, ${IDENTITIES} bindings)`]);
    gc();
    const before = process.memoryUsage();
    rows.push(['process before start', `RSS ${mib(before.rss)}, heap used ${mib(before.heapUsed)}`]);

    const registry = new Registry();
    const started = performance.now();
    const state = await InformerClusterState.start({ kubeconfig, nodeName: NODE, log: pino({ level: 'warn' }), registry });
    await state.whenReady(AbortSignal.timeout(60_000));
    const readyMs = performance.now() - started;
    const counts = state.counts();
    rows.push(['time to ready (4 lists, 500/page)', `${readyMs.toFixed(0)} ms`]);
    rows.push(['objects held', `${counts.pods} pods (others excluded by field selector), ${counts.identities} identities, ${counts.bindings} bindings, ${counts.exceptions} exceptions`]);
    if (counts.pods !== NODE_PODS) throw new Error(`expected ${NODE_PODS} pods on the node, got ${counts.pods}`);
    gc();
    const mem = process.memoryUsage();
    rows.push(['after sync (after GC)', `RSS ${mib(mem.rss)} (+${mib(mem.rss - before.rss)}), heap used ${mib(mem.heapUsed)} (+${mib(mem.heapUsed - before.heapUsed)})`]);

    // Request-path lookups: pod by IP, its bindings, the bound identity.
    const samples = new Float64Array(LOOKUPS);
    let found = 0;
    for (let i = 0; i < LOOKUPS; i++) {
      const t0 = process.hrtime.bigint();
      const p = state.podsAt(podIp(i % NODE_PODS))[0];
      if (p !== undefined) {
        const b = state.bindingsFor(p.namespace, p.labels.aadpodidbinding ?? '')[0];
        if (b !== undefined && state.identity(b.namespace, b.azureIdentity) !== undefined) found++;
      }
      samples[i] = Number(process.hrtime.bigint() - t0);
    }
    samples.sort();
    if (found !== LOOKUPS) throw new Error(`only ${found}/${LOOKUPS} lookups found an identity`);
    rows.push(['lookup podsAt+bindingsFor+identity', `p50 ${(percentile(samples, 0.5) / 1000).toFixed(2)} µs, p99 ${(percentile(samples, 0.99) / 1000).toFixed(2)} µs (${LOOKUPS} lookups, timer included)`]);

    // Watch event to waitForIp wake, one pod at a time.
    const event = new Float64Array(WAKES);
    const roundTrip = new Float64Array(WAKES);
    for (let i = 0; i < WAKES; i++) {
      const ip = `10.30.${i >> 8}.${i & 255}`;
      let resolvedAt = 0;
      const woken = state.waitForIp(ip, 5_000).then((ok) => {
        resolvedAt = now();
        return ok;
      });
      const sentAt = now();
      child.send({ op: 'create-pod', name: `wake-${i}`, ip } satisfies ToServer);
      const [{ writtenAt }, ok] = await Promise.all([next(child, 'created'), woken]);
      if (!ok) throw new Error(`waitForIp(${ip}) timed out`);
      event[i] = resolvedAt - writtenAt;
      roundTrip[i] = resolvedAt - sentAt;
    }
    event.sort();
    roundTrip.sort();
    rows.push(['watch event written -> waitForIp resolved', `p50 ${percentile(event, 0.5).toFixed(2)} ms, p99 ${percentile(event, 0.99).toFixed(2)} ms (${WAKES} pods)`]);
    rows.push(['  incl. IPC to the server process', `p50 ${percentile(roundTrip, 0.5).toFixed(2)} ms, p99 ${percentile(roundTrip, 0.99).toFixed(2)} ms`]);

    // 410 on every watch: all four relist.
    const lists = async (): Promise<number> => ((await registry.getSingleMetric('podid_nmi_informer_lists_total')!.get()).values).reduce((s, v) => s + v.value, 0);
    const listsBefore = await lists();
    const relistStart = performance.now();
    child.send({ op: 'relist-all' } satisfies ToServer);
    await next(child, 'relisting');
    const deadline = performance.now() + 30_000;
    while ((await lists()) < listsBefore + 4) {
      if (performance.now() > deadline) throw new Error('relist did not complete within 30 s');
      await new Promise((r) => setTimeout(r, 5));
    }
    rows.push(['410 on all four watches -> relisted', `${(performance.now() - relistStart).toFixed(0)} ms`]);
    gc();
    const afterRelist = process.memoryUsage();
    rows.push(['after relist (after GC)', `RSS ${mib(afterRelist.rss)}, heap used ${mib(afterRelist.heapUsed)}`]);

    await state.close();
  } finally {
    clearTimeout(hardStop);
    if (child.connected) child.send({ op: 'exit' } satisfies ToServer);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(`\ninformer source, node ${NODE}, Node ${process.version}`);
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
}

if (process.argv.includes('--server')) await serve();
else await main();

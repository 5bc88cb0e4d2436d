// Random churn (pods sharing a small IP pool, recreated names, scheduling, phase changes,
// bindings and identities) interleaved with faults (dropped watches, outages, compaction,
// 5xx, garbage lines). Whatever the sequence, once the API server is healthy again the
// state must equal what the server holds: nothing missed, nothing stale.
import t from 'tap';
import { isInterceptable } from '../src/cluster/objects.ts';
import { toPodInfo } from '../src/cluster/convert.ts';
import type { FakeApiServer, Obj } from './fake-apiserver/fake-apiserver.ts';
import { binding, identity, pod } from './fake-apiserver/fixtures.ts';
import { NODE, sleep, startHarness } from './fake-apiserver/harness.ts';
import type { Harness } from './fake-apiserver/harness.ts';

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMESPACES = ['ns1', 'ns2', 'ns3'];
const IPS = Array.from({ length: 8 }, (_, i) => `10.50.0.${i + 1}`);

/** What the state must show, computed from the fake server's store. */
function truth(api: FakeApiServer): { pods: Map<string, string[]>; bindings: string[]; identities: string[] } {
  const pods = new Map<string, string[]>();
  for (const raw of api.store.snapshot('pods')) {
    const p = toPodInfo(raw);
    if (p.nodeName !== NODE || !isInterceptable(p)) continue;
    for (const ip of p.ips) pods.set(ip, [...(pods.get(ip) ?? []), `${p.namespace}/${p.name}`].sort());
  }
  const key = (o: Obj): string => {
    const m = o.metadata as Record<string, string>;
    const spec = o.spec as Record<string, unknown>;
    return `${m.namespace}/${m.name}=${JSON.stringify(spec)}`;
  };
  return {
    pods,
    bindings: api.store.snapshot('azureidentitybindings').map(key).sort(),
    identities: api.store.snapshot('azureidentities').map(key).sort(),
  };
}

function seen(h: Harness, api: FakeApiServer): { pods: Map<string, string[]>; bindings: string[]; identities: string[] } {
  const pods = new Map<string, string[]>();
  for (const ip of IPS) {
    const here = h.state.podsAt(ip).map((p) => `${p.namespace}/${p.name}`).sort();
    if (here.length > 0) pods.set(ip, here);
  }
  const bindings: string[] = [];
  const identities: string[] = [];
  for (const raw of api.store.snapshot('azureidentitybindings')) {
    const m = raw.metadata as Record<string, string>;
    const spec = raw.spec as Record<string, string>;
    for (const b of h.state.bindingsFor(m.namespace!, spec.selector!)) {
      if (b.name === m.name) bindings.push(`${b.namespace}/${b.name}=${JSON.stringify({ azureIdentity: b.azureIdentity, selector: b.selector })}`);
    }
  }
  for (const raw of api.store.snapshot('azureidentities')) {
    const m = raw.metadata as Record<string, string>;
    const id = h.state.identity(m.namespace!, m.name!);
    if (id) identities.push(`${id.namespace}/${id.name}=${JSON.stringify({ type: id.type, clientID: id.clientID, resourceID: id.resourceID })}`);
  }
  return { pods, bindings: bindings.sort(), identities: identities.sort() };
}

async function churn(api: FakeApiServer, random: () => number, steps: number, log: string[]): Promise<void> {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  for (let i = 0; i < steps; i++) {
    const r = random();
    const ns = pick(NAMESPACES);
    const name = `p${Math.floor(random() * 6)}`;
    const existing = api.store.get('pods', ns, name);
    if (r < 0.45) {
      const phase = pick(['Running', 'Running', 'Pending', 'Succeeded', 'Failed']);
      const ip = random() < 0.15 ? undefined : pick(IPS);
      const node = pick([NODE, NODE, 'node-b', '']);
      if (existing === undefined) {
        api.create('pods', pod({ name, namespace: ns, ip, phase, node }));
        log.push(`create ${ns}/${name} ${ip} ${phase} ${node}`);
      } else if (random() < 0.5) {
        api.delete('pods', ns, name);
        log.push(`delete ${ns}/${name}`);
      } else {
        api.modify('pods', ns, name, (o) => {
          const status = o.status as Record<string, unknown>;
          status.phase = phase;
          if (ip !== undefined) Object.assign(status, { podIP: ip, podIPs: [{ ip }] });
          const spec = o.spec as Record<string, unknown>;
          if (spec.nodeName === '') spec.nodeName = node; // scheduling happens once
        });
        log.push(`modify ${ns}/${name} ${ip} ${phase}`);
      }
    } else if (r < 0.6) {
      const b = `b${Math.floor(random() * 4)}`;
      if (api.store.get('azureidentitybindings', ns, b) === undefined) api.create('azureidentitybindings', binding({ name: b, namespace: ns, azureIdentity: 'id0', selector: pick(['s1', 's2']) }));
      else if (random() < 0.5) api.delete('azureidentitybindings', ns, b);
      else api.modify('azureidentitybindings', ns, b, (o) => void ((o.spec as Record<string, unknown>).selector = pick(['s1', 's2', 's3'])));
      log.push(`binding ${ns}/${b}`);
    } else if (r < 0.72) {
      const id = `id${Math.floor(random() * 3)}`;
      if (api.store.get('azureidentities', ns, id) === undefined) api.create('azureidentities', identity({ name: id, namespace: ns, clientID: `c-${i}` }));
      else if (random() < 0.4) api.delete('azureidentities', ns, id);
      else api.modify('azureidentities', ns, id, (o) => void ((o.spec as Record<string, unknown>).clientID = `c-${i}`));
      log.push(`identity ${ns}/${id}`);
    } else if (r < 0.78) {
      log.push(`drop watches (${api.dropWatches()})`);
    } else if (r < 0.82) {
      if (api.running) {
        await api.stop();
        log.push('server stopped');
      } else {
        await api.restart();
        log.push('server restarted');
      }
    } else if (r < 0.86) {
      api.compact();
      log.push('compact');
    } else if (r < 0.9) {
      api.failNext(1 + Math.floor(random() * 3));
      log.push('fail next');
    } else if (r < 0.92) {
      api.sendRaw('pods', '{"type":"MODIFIED","object":');
      log.push('garbage line');
    } else {
      await sleep(Math.floor(random() * 30));
    }
  }
  if (!api.running) await api.restart();
}

for (const seed of [1, 2, 3, 4, 5, 6]) {
  t.test(`seed ${seed}: the state converges to the API server's`, async (t) => {
    const h = await startHarness();
    t.teardown(() => h.close());
    const log: string[] = [];
    await churn(h.api, mulberry32(seed), 250, log);
    const want = truth(h.api);
    const canonical = (v: ReturnType<typeof truth>): string => JSON.stringify([[...v.pods].sort(), v.bindings, v.identities]);
    const started = performance.now();
    let got = seen(h, h.api);
    while (canonical(got) !== canonical(want) && performance.now() - started < 10_000) {
      await sleep(20);
      got = seen(h, h.api);
    }
    t.comment(`converged ${(performance.now() - started).toFixed(0)} ms after the last change`);
    t.same([...got.pods].sort(), [...want.pods].sort(), 'pods by IP', { log: log.slice(-30) });
    t.same(got.bindings, want.bindings, 'bindings');
    t.same(got.identities, want.identities, 'identities');
    t.equal(h.state.counts().pods, new Set([...want.pods.values()].flat()).size, 'no stale pod held under an IP outside the pool');
  });
}

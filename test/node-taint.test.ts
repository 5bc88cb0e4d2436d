// --remove-node-taint against the fake API server: the taint goes only once the daemon says
// ready, only that key goes, and a change made between our read and our patch is never lost.
import t, { type Test } from 'tap';
import { loadKubeConfig } from '../src/cluster/kube-config.ts';
import { KubeHttp } from '../src/cluster/kube-http.ts';
import { removeTaintWhenReady } from '../src/cluster/node-taint.ts';
import { FakeApiServer, type Obj } from './fake-apiserver/fake-apiserver.ts';
import { capturingLogger, eventually } from './fake-apiserver/harness.ts';

const KEY = 'podid-nmi.io/not-ready';
const STARTUP = { key: KEY, effect: 'NoSchedule' };
const OTHER = { key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' };
const OTHER2 = { key: 'dedicated', value: 'gpu', effect: 'NoExecute' };

async function setup(t: Test, taints: unknown[]) {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.create('nodes', { metadata: { name: 'node-a' }, spec: { taints } });
  const http = new KubeHttp(await loadKubeConfig(api.kubeconfig()));
  t.teardown(() => http.close());
  const { log, records } = capturingLogger();
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  const taints$ = () => ((api.store.get('nodes', 'default', 'node-a') as Obj).spec as { taints?: unknown[] }).taints;
  return { api, http, log, records, stop, taints: taints$ };
}

t.test('removed only after ready, and only that key', async (t) => {
  const s = await setup(t, [OTHER, STARTUP, OTHER2]);
  let ready = false;
  let asked = 0;
  const done = removeTaintWhenReady({ http: s.http, node: 'node-a', key: KEY, ready: () => (asked++, ready), log: s.log, signal: s.stop.signal, pollMs: 10 });
  // It has asked several times and heard "not ready": by then it must not have touched the node.
  await eventually(() => asked >= 5, 'readiness polled five times');
  t.equal(s.api.requests.filter((r) => r.resource === 'nodes').length, 0, 'no request while not ready');
  t.same(s.taints(), [OTHER, STARTUP, OTHER2]);
  ready = true;
  t.equal(await done, 'removed');
  t.same(s.taints(), [OTHER, OTHER2], 'the other taints stay, in order');
  t.same(s.api.requests.filter((r) => r.resource === 'nodes').map((r) => r.method), ['GET', 'PATCH']);
});

t.test('a taint added between our read and our patch survives', async (t) => {
  const s = await setup(t, [STARTUP]);
  s.api.beforeNextPatch = () => s.api.modify('nodes', 'default', 'node-a', (n) => { (n.spec as Obj).taints = [STARTUP, OTHER]; });
  t.equal(await removeTaintWhenReady({ http: s.http, node: 'node-a', key: KEY, ready: () => true, log: s.log, signal: s.stop.signal, pollMs: 10 }), 'removed');
  t.same(s.taints(), [OTHER], 'the concurrent writer\'s taint is kept');
  t.same(s.api.requests.filter((r) => r.resource === 'nodes').map((r) => r.method), ['GET', 'PATCH', 'GET', 'PATCH'], 'the stale patch failed its test and was redone');
  t.ok(s.records.some((r) => r.msg === 'node changed while removing the startup taint; retrying'));
});

t.test('absent taint, API errors and stop', async (t) => {
  const s = await setup(t, [OTHER]);
  t.equal(await removeTaintWhenReady({ http: s.http, node: 'node-a', key: KEY, ready: () => true, log: s.log, signal: s.stop.signal, pollMs: 10 }), 'absent');
  t.same(s.taints(), [OTHER]);

  s.api.modify('nodes', 'default', 'node-a', (n) => { (n.spec as Obj).taints = [STARTUP]; });
  s.api.failNext(2, { resource: 'nodes', status: 503 });
  t.equal(await removeTaintWhenReady({ http: s.http, node: 'node-a', key: KEY, ready: () => true, log: s.log, signal: s.stop.signal, pollMs: 10 }), 'removed', 'retried with backoff');
  t.same(s.taints(), []);
  t.equal(s.records.filter((r) => r.msg === 'could not remove the startup taint').length, 2);

  const never = removeTaintWhenReady({ http: s.http, node: 'node-a', key: KEY, ready: () => false, log: s.log, signal: s.stop.signal, pollMs: 10 });
  s.stop.abort();
  t.equal(await never, 'stopped');
});

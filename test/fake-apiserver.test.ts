// The fake API server checked against the stock client (its generated list calls, Watch and
// makeInformer / ListWatch), so that the informer-source tests run against the protocol the
// real library speaks, not just against our own transport.
import {
  CoreV1Api, CustomObjectsApi, KubeConfig, ListWatch, makeInformer, Watch,
} from '@kubernetes/client-node';
import type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import t from 'tap';
import { FakeApiServer } from './fake-apiserver/fake-apiserver.ts';
import { binding, identity, pod } from './fake-apiserver/fixtures.ts';
import { eventually, sleep } from './fake-apiserver/harness.ts';

const AAD = { group: 'aadpodidentity.k8s.io', version: 'v1' };

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ api: FakeApiServer; kc: KubeConfig }> {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromFile(api.kubeconfig());
  return { api, kc };
}

t.test('generated list calls: kinds, resourceVersion, field selector, pagination', async (t) => {
  const { api, kc } = await setup(t);
  api.create('pods', pod({ name: 'a', ip: '10.0.0.1' }));
  api.create('pods', pod({ name: 'b', ip: '10.0.0.2', node: 'node-b' }));
  for (let i = 0; i < 5; i++) api.create('azureidentities', identity({ name: `id${i}`, clientID: `c${i}` }));

  const core = kc.makeApiClient(CoreV1Api);
  const pods = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-a' });
  t.equal(pods.kind, 'PodList');
  t.same(pods.items.map((p) => p.metadata?.name), ['a'], 'field selector applied');
  t.equal(pods.items[0]?.status?.podIP, '10.0.0.1');
  t.equal(pods.metadata?.resourceVersion, String(api.store.resourceVersion));

  const custom = kc.makeApiClient(CustomObjectsApi);
  const first = await custom.listClusterCustomObject({ ...AAD, plural: 'azureidentities', limit: 2 }) as KubernetesListObject<KubernetesObject>;
  t.equal(first.kind, 'AzureIdentityList');
  t.equal(first.items.length, 2);
  t.equal(first.items[0]?.kind, 'AzureIdentity', 'custom resource items carry their kind');
  const token = first.metadata?._continue ?? (first.metadata as Record<string, string> | undefined)?.continue;
  t.ok(token, 'continue token');
  api.create('azureidentities', identity({ name: 'late', clientID: 'x' }));
  const rest = await custom.listClusterCustomObject({ ...AAD, plural: 'azureidentities', _continue: token }) as KubernetesListObject<KubernetesObject>;
  t.same(rest.items.map((o) => o.metadata?.name), ['id2', 'id3', 'id4'], 'pages come from the first page\'s snapshot');

  await t.rejects(core.listPodForAllNamespaces({ fieldSelector: 'spec.bogus=x' }), { code: 400 }, 'unsupported field label');
  api.failNext(1, { status: 503 });
  await t.rejects(core.listPodForAllNamespaces(), { code: 503 }, 'injected fault');
});

t.test('auth, paths and namespaces', async (t) => {
  const { api } = await setup(t);
  api.create('pods', pod({ name: 'a', namespace: 'ns1', ip: '10.0.0.1' }));
  api.create('pods', pod({ name: 'b', namespace: 'ns2', ip: '10.0.0.2' }));
  const get = (path: string, token = api.token): Promise<Response> => fetch(`${api.url}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  t.equal((await get('/api/v1/pods', 'wrong')).status, 401);
  const ns1 = await (await get('/api/v1/namespaces/ns1/pods')).json() as { items: unknown[] };
  t.equal(ns1.items.length, 1);
  t.equal((await get('/api/v1/namespaces/ns2/pods/b')).status, 200);
  t.equal((await get('/api/v1/namespaces/ns2/pods/zz')).status, 404);
  t.equal((await get('/apis/aadpodidentity.k8s.io/v1/pods')).status, 404, 'pods only under the core group');
  t.equal((await get('/api/v1/azureidentities')).status, 404);
  t.equal((await get('/apis/aadpodidentity.k8s.io/v1/namespaces/ns1/azureidentitybindings')).status, 200);
});

t.test('stock Watch: filtered watch turns scheduling into ADDED, history replay, bookmarks, 410', async (t) => {
  const { api, kc } = await setup(t);
  const rv0 = String(api.store.resourceVersion);
  api.create('pods', pod({ name: 'unscheduled', ip: undefined, node: '' }));
  const events: string[] = [];
  const watch = new Watch(kc);
  let ended: unknown = 'open';
  const req = await watch.watch('/api/v1/pods', { resourceVersion: rv0, fieldSelector: 'spec.nodeName=node-a', allowWatchBookmarks: true }, (type, obj: KubernetesObject) => {
    events.push(`${type} ${obj.metadata?.name ?? ''}`);
  }, (err) => (ended = err));
  api.modify('pods', 'default', 'unscheduled', (o) => {
    (o.spec as Record<string, unknown>).nodeName = 'node-a';
  });
  api.modify('pods', 'default', 'unscheduled', (o) => {
    (o.spec as Record<string, unknown>).nodeName = 'node-b';
  });
  api.sendBookmarks();
  await eventually(() => events.length === 3, 'three events');
  t.same(events, ['ADDED unscheduled', 'DELETED unscheduled', 'BOOKMARK '], 'entering and leaving the selector');
  req.abort();

  api.compact();
  const expired: unknown[] = [];
  await watch.watch('/api/v1/pods', { resourceVersion: rv0 }, (type, obj) => expired.push({ type, obj }), (err) => expired.push({ done: err }));
  await eventually(() => expired.length === 2, 'error event then end');
  t.match(expired[0], { type: 'ERROR', obj: { kind: 'Status', code: 410, reason: 'Expired' } });
  t.match(expired[1], { done: null }, 'stream ended by the server');
  void ended;
});

t.test('stock makeInformer / ListWatch: list, watch, restart after error, relist after 410 emits deletes', async (t) => {
  const { api, kc } = await setup(t);
  api.create('azureidentitybindings', binding({ name: 'b1', azureIdentity: 'i', selector: 's' }));
  api.create('azureidentitybindings', binding({ name: 'b2', azureIdentity: 'i', selector: 's' }));
  const custom = kc.makeApiClient(CustomObjectsApi);
  const path = '/apis/aadpodidentity.k8s.io/v1/azureidentitybindings';
  const informer = makeInformer(kc, path, () => custom.listClusterCustomObject({ ...AAD, plural: 'azureidentitybindings' }) as Promise<KubernetesListObject<KubernetesObject>>);
  const log: string[] = [];
  let errors = 0;
  let stopped = false;
  informer.on('add', (o) => log.push(`add ${o.metadata?.name}`));
  informer.on('delete', (o) => log.push(`delete ${o.metadata?.name}`));
  informer.on('error', () => {
    errors++;
    // The informer stops after an error; restarting it is the caller's job.
    if (!stopped) setTimeout(() => void informer.start().catch(() => {}), 50);
  });
  t.teardown(async () => {
    stopped = true;
    await informer.stop();
  });
  await informer.start();
  t.same(log, ['add b1', 'add b2'], 'start() resolves after the list and the watch headers');
  api.create('azureidentitybindings', binding({ name: 'b3', azureIdentity: 'i', selector: 's' }));
  await eventually(() => log.includes('add b3'), 'watch event');

  await api.stop();
  await eventually(() => errors >= 1, 'error reported');
  api.delete('azureidentitybindings', 'default', 'b1');
  api.compact();
  await api.restart();
  await eventually(() => log.includes('delete b1'), 'relist after 410 reports the missed deletion');
  t.same(informer.list().map((o) => o.metadata?.name).sort(), ['b2', 'b3']);

  // The pods informer with a field selector, as ListWatch's constructor allows.
  const core = kc.makeApiClient(CoreV1Api);
  api.create('pods', pod({ name: 'mine', ip: '10.0.0.1' }));
  api.create('pods', pod({ name: 'theirs', ip: '10.0.0.2', node: 'node-b' }));
  const pods = new ListWatch('/api/v1/pods', new Watch(kc), () => core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-a' }), false, undefined, 'spec.nodeName=node-a');
  pods.on('error', () => {});
  await pods.start();
  t.same(pods.list().map((p) => p.metadata?.name), ['mine']);
  api.create('pods', pod({ name: 'mine2', ip: '10.0.0.3' }));
  api.create('pods', pod({ name: 'theirs2', ip: '10.0.0.4', node: 'node-b' }));
  await eventually(() => pods.list().length === 2, 'watch filtered by node');
  await sleep(50);
  t.same(pods.list().map((p) => p.metadata?.name).sort(), ['mine', 'mine2']);
  await pods.stop();
});

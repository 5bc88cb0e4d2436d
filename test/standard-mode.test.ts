// Standard mode through the informers, over HTTP: the daemon reads MIC's
// AzureAssignedIdentities (as MIC v1.8.17 writes them) from the fake API server.
import t, { type Test } from 'tap';
import { FakeApiServer, type Obj } from './fake-apiserver/fake-apiserver.ts';
import { assignedIdentity, binding, identity, pod } from './fake-apiserver/fixtures.ts';
import { parkedCount } from '../src/cluster/wait-for-ip.ts';
import { eventually } from './helpers/eventually.ts';
import { META } from './helpers/http.ts';
import { IDS, startStack, TOKEN, type Stack } from './helpers/stack.ts';

const NODE = 'node-1';

const reader = identity({ name: 'reader', namespace: 'shop', ...IDS.reader! });
const writer = identity({ name: 'writer', namespace: 'shop', ...IDS.writer! });
const far = identity({ name: 'far', namespace: 'platform', ...IDS.agent! });

function assigned(o: { pod: string; podNamespace?: string; id: Obj; selector: string; state?: string; node?: string }): Obj {
  return assignedIdentity({ ...o, podNamespace: o.podNamespace ?? 'shop', identity: o.id, node: o.node ?? NODE });
}

const PODS: Array<[string, string, Record<string, string>]> = [
  ['orders', '127.0.0.20', { aadpodidbinding: 'orders' }],
  ['legacy', '127.0.0.21', { aadpodidbinding: 'legacy' }],
  ['moved', '127.0.0.22', { aadpodidbinding: 'moved' }],
  ['relabelled', '127.0.0.23', { aadpodidbinding: 'new-label' }],
  ['platform-user', '127.0.0.24', { aadpodidbinding: 'far' }],
  ['both', '127.0.0.25', { aadpodidbinding: 'both' }],
  ['newcomer', '127.0.0.26', { aadpodidbinding: 'newcomer' }],
  ['waiting', '127.0.0.27', { aadpodidbinding: 'waiting' }],
  ['plain', '127.0.0.28', {}],
];

async function cluster(t: Test): Promise<FakeApiServer> {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  for (const [name, ip, labels] of PODS) api.create('pods', pod({ name, namespace: 'shop', ip, labels, node: NODE, uid: `u-${name}` }));
  for (const id of [reader, writer, far]) api.create('azureidentities', id);
  api.create('azureidentitybindings', binding({ name: 'newcomer', namespace: 'shop', azureIdentity: 'reader', selector: 'newcomer' }));
  api.create('azureidentitybindings', binding({ name: 'waiting', namespace: 'shop', azureIdentity: 'writer', selector: 'waiting' }));
  for (const aai of [
    assigned({ pod: 'orders', id: reader, selector: 'orders' }),
    assigned({ pod: 'legacy', id: reader, selector: 'legacy', state: '' }),
    // The pod's name was on node-2 before: MIC's AAI there is labelled for node-2.
    assigned({ pod: 'moved', id: reader, selector: 'moved', node: 'node-2' }),
    assigned({ pod: 'relabelled', id: reader, selector: 'old-label' }),
    assigned({ pod: 'platform-user', id: far, selector: 'far' }),
    assigned({ pod: 'both', id: writer, selector: 'both' }),
    assigned({ pod: 'both', id: reader, selector: 'both' }),
  ]) api.create('azureassignedidentities', aai);
  return api;
}

async function standardStack(t: Test, api: FakeApiServer, flags: string[] = []): Promise<Stack> {
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--operation-mode=standard', '--forceNamespaced=false', '--assignment-wait-ms=3000', ...flags] });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  return s;
}

const token = (s: Stack, from: string, query = ''): ReturnType<Stack['ask']> => s.ask(`${TOKEN}${query}`, { from, headers: META });

t.test('AAIs decide what each pod gets', async (t) => {
  const api = await cluster(t);
  const s = await standardStack(t, api);
  t.equal(s.daemon.state.counts().assignedIdentities, 6, 'only this node\'s AAIs are held (label selector nodename=node-1)');
  const cases: Array<[string, string, string, number, string]> = [
    ['Assigned', '127.0.0.20', '', 200, IDS.reader!.clientID],
    ['Assigned, named by resource id', '127.0.0.20', `&msi_res_id=${IDS.reader!.resourceID}`, 200, IDS.reader!.clientID],
    ['legacy AAI without status', '127.0.0.21', '', 200, IDS.reader!.clientID],
    ['stale AAI of another node', '127.0.0.22', '', 400, 'binding_missing'],
    ['relabelled pod, MIC not caught up, no binding for the new label', '127.0.0.23', '', 400, 'binding_missing'],
    ['identity of another namespace (not forceNamespaced)', '127.0.0.24', '', 200, IDS.agent!.clientID],
    ['foreign client_id', '127.0.0.20', `&client_id=${IDS.writer!.clientID}`, 403, 'identity_not_bound'],
    ['two identities, no selector: the first by namespace/name', '127.0.0.25', '', 200, IDS.reader!.clientID],
    ['two identities, the second by client id', '127.0.0.25', `&client_id=${IDS.writer!.clientID}`, 200, IDS.writer!.clientID],
    ['two identities, the first by resource id', '127.0.0.25', `&msi_res_id=${IDS.reader!.resourceID}`, 200, IDS.reader!.clientID],
    ['unlabelled pod', '127.0.0.28', '', 400, 'pod_unlabeled'],
    ['object_id', '127.0.0.20', '&object_id=o-1', 403, 'object_id_unverifiable'],
  ];
  for (const [what, from, query, status, want] of cases) {
    const asked = performance.now();
    const a = await token(s, from, query);
    t.comment(`${what}: ${Math.round(performance.now() - asked)} ms`);
    t.equal(a.status, status, `${what}: status`);
    t.equal(a.status === 200 ? a.json?.client_id : a.json?.reason, want, `${what}: ${status === 200 ? 'client id' : 'reason'}`);
    if (status !== 200) t.equal(a.headers['x-podid-nmi-reason'], want, `${what}: reason header`);
  }
  // What went upstream named the identity by its own client id, never by the pod's text.
  const upstream = s.emulator.requests.filter((r) => r.url.includes('oauth2/token'));
  t.ok(upstream.length > 0 && upstream.every((r) => /[?&]client_id=[0-9a-f-]{36}(&|$)/.test(r.url) && !r.url.includes('msi_res_id')), 'upstream always by client_id');
});

t.test('forceNamespaced keeps only identities of the pod\'s own namespace', async (t) => {
  const api = await cluster(t);
  const s = await standardStack(t, api, ['--forceNamespaced']);
  const a = await token(s, '127.0.0.24');
  t.equal(a.status, 400);
  t.equal(a.json?.reason, 'binding_missing');
  t.equal((await token(s, '127.0.0.20')).status, 200, 'a same-namespace identity still works');
});

t.test('Created, then Assigned while the request waits: answered on the change', async (t) => {
  const api = await cluster(t);
  api.create('azureassignedidentities', assigned({ pod: 'waiting', id: writer, selector: 'waiting', state: 'Created' }));
  // A bound a loaded machine cannot reach by accident.
  const s = await standardStack(t, api, ['--assignment-wait-ms=20000']);
  const started = performance.now();
  const pending = token(s, '127.0.0.27');
  await eventually(() => parkedCount() === 1, 'the request parked on its AAI');
  const changed = performance.now();
  api.update('azureassignedidentities', assigned({ pod: 'waiting', id: writer, selector: 'waiting', state: 'Assigned' }));
  const a = await pending;
  // A 200 can only come from the AAI's watch event: the bound (20 s) would have given a 503.
  t.equal(a.status, 200);
  t.equal(a.json?.client_id, IDS.writer!.clientID);
  t.comment(`answered ${Math.round(performance.now() - changed)} ms after the change (${Math.round(changed - started)} ms of waiting before it)`);
});

t.test('a binding selects the pod but MIC has written nothing yet: the AAI added at runtime is served', async (t) => {
  const api = await cluster(t);
  const s = await standardStack(t, api, ['--assignment-wait-ms=20000']);
  const pending = token(s, '127.0.0.26');
  await eventually(() => parkedCount() === 1, 'the request parked: a binding selects the pod');
  api.create('azureassignedidentities', assigned({ pod: 'newcomer', id: reader, selector: 'newcomer', state: 'Created' }));
  // Woken by the Created AAI, decided again, still pending: parked again.
  await eventually(() => s.daemon.state.assignedTo('shop', 'newcomer').length === 1 && parkedCount() === 1, 'the request parked again on the Created AAI');
  api.update('azureassignedidentities', assigned({ pod: 'newcomer', id: reader, selector: 'newcomer' }));
  const a = await pending;
  t.equal(a.status, 200, 'one request, through Created to Assigned');
  t.equal(a.json?.client_id, IDS.reader!.clientID);
});

t.test('MIC never gets there: 503 assignment_pending with Retry-After after the bound', async (t) => {
  const api = await cluster(t);
  api.create('azureassignedidentities', assigned({ pod: 'waiting', id: writer, selector: 'waiting', state: 'Created' }));
  const s = await standardStack(t, api, ['--assignment-wait-ms=200']);
  for (const from of ['127.0.0.27', '127.0.0.26']) {
    const a = await token(s, from);
    t.equal(a.status, 503, `${from}: status`);
    t.equal(a.json?.reason, 'assignment_pending');
    t.equal(a.json?.error, 'service_unavailable');
    t.match(String(a.json?.error_description), /^Identity not yet assigned/);
    t.equal(a.headers['retry-after'], '5', 'comes back after NMI\'s find-identity-retry-interval');
  }
});

t.test('an AAI removed at runtime stops the grant at once, cached token or not', async (t) => {
  const api = await cluster(t);
  const s = await standardStack(t, api);
  t.equal((await token(s, '127.0.0.20')).status, 200);
  api.delete('azureassignedidentities', 'default', 'orders-shop-reader');
  const deadline = performance.now() + 5_000;
  while (s.daemon.state.assignedTo('shop', 'orders').length > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const a = await token(s, '127.0.0.20');
  t.equal(a.status, 400);
  t.equal(a.json?.reason, 'binding_missing');
});

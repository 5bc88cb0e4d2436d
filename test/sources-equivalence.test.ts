// The two cluster-state sources must decide alike: one table of requests, run against the
// daemon reading a manifests file and against the daemon reading the (fake) Kubernetes API.
import t from 'tap';
import { META } from './helpers/http.ts';
import { IDS, seededApi, startStack, TOKEN, type Stack } from './helpers/stack.ts';


/** [what, source address, request, status, reason or granted client id] */
const TABLE: Array<[string, string, string, number, string]> = [
  ['bound pod', '127.0.0.10', TOKEN, 200, IDS.reader!.clientID],
  ['bound pod naming its identity by resource id', '127.0.0.10', `${TOKEN}&msi_res_id=${IDS.reader!.resourceID}`, 200, IDS.reader!.clientID],
  ['other bound pod', '127.0.0.13', TOKEN, 200, IDS.writer!.clientID],
  ['another pod\'s identity', '127.0.0.10', `${TOKEN}&client_id=${IDS.writer!.clientID}`, 403, 'identity_not_bound'],
  ['unlabelled pod beside an empty-selector binding', '127.0.0.11', TOKEN, 400, 'pod_unlabeled'],
  ['excepted pod', '127.0.0.12', `${TOKEN}&client_id=${IDS.agent!.clientID}`, 200, IDS.agent!.clientID],
  ['two live pods on one address', '127.0.0.14', TOKEN, 503, 'pod_ip_conflict'],
  ['pod of another node', '127.0.0.15', TOKEN, 503, 'pod_unknown'],
  ['finished pod', '127.0.0.16', TOKEN, 503, 'pod_unknown'],
  ['unknown address', '127.0.0.77', TOKEN, 503, 'pod_unknown'],
  ['object_id', '127.0.0.13', `${TOKEN}&object_id=o-2`, 403, 'object_id_unverifiable'],
];


async function outcomes(s: Stack): Promise<Array<[number, string]>> {
  const out: Array<[number, string]> = [];
  for (const [, from, path] of TABLE) {
    const a = await s.ask(path, { from, headers: META });
    out.push([a.status, String(a.status === 200 ? a.json?.client_id : a.json?.reason)]);
  }
  return out;
}

t.test('the manifests file and the Kubernetes API give the same answers', async (t) => {
  const api = await seededApi(t);
  const fromFile = await startStack(t);
  const fromApi = await startStack(t, { kubeconfig: api.kubeconfig() });
  const deadline = Date.now() + 10_000;
  while (!fromApi.daemon.state.isReady() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(fromApi.daemon.state.isReady(), 'the API-backed daemon\'s state syncs');
  t.same(fromApi.daemon.state.counts(), fromFile.daemon.state.counts(), 'same objects held (other node\'s and finished pods left out by both)');

  const file = await outcomes(fromFile);
  const kube = await outcomes(fromApi);
  TABLE.forEach(([what, , , status, expect], i) => {
    t.same(file[i], [status, expect], `file: ${what}`);
    t.same(kube[i], [status, expect], `api: ${what}`);
  });
});

t.test('until every informer has listed, token requests wait, then get a retryable 503, never a definitive refusal', async (t) => {
  const api = await seededApi(t);
  // Pods list at once; bindings only after the informer's backoff.
  api.failNext(3, { resource: 'azureidentitybindings', watch: false, status: 500 });
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--pod-wait-ms=100'] });
  const early = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  t.equal(early.status, 503);
  t.equal(early.json?.reason, 'state_not_ready');
  t.equal(early.headers['retry-after'], '1');
  const { ask } = await import('./helpers/http.ts');
  const readyz = await ask(s.daemon.probes.address.port, '/readyz');
  t.equal(readyz.status, 503, 'not ready meanwhile');
  t.match(readyz.body, /; cluster state not synced yet\n$/, 'and /readyz says the state is why');
  const deadline = Date.now() + 15_000;
  while (!s.daemon.state.isReady() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const later = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  t.equal(later.status, 200, 'granted once the bindings are listed');
  t.equal(later.json?.client_id, IDS.reader!.clientID);
});

t.test('the pod-start race through the informers: woken by the pod\'s watch event, or refused when it never comes', async (t) => {
  const api = await seededApi(t, (obj) => obj.kind !== 'Pod');
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--pod-wait-ms=3000'] });
  const deadline = Date.now() + 10_000;
  while (!s.daemon.state.isReady() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const started = performance.now();
  const pending = s.ask(TOKEN, { from: '127.0.0.40', headers: META });
  setTimeout(() => api.create('pods', {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'newborn', namespace: 'shop', labels: { aadpodidbinding: 'orders' } },
    spec: { nodeName: 'node-1' },
    status: { phase: 'Pending', podIPs: [{ ip: '127.0.0.40' }] },
  }), 150);
  const a = await pending;
  t.equal(a.status, 200, 'granted once the pod arrives');
  t.equal(a.json?.client_id, IDS.reader!.clientID);
  t.ok(performance.now() - started < 2_500, 'woken by the event, before the wait ran out');
  const never = await s.ask(TOKEN, { from: '127.0.0.41', headers: META });
  t.equal(never.status, 503);
  t.equal(never.json?.reason, 'pod_unknown', 'a pod that never comes is refused with a reason');
});

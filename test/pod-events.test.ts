// Warning Events on pods: written through the fake API server, aggregated per (pod, reason),
// none for grants, texts that say what to fix, and never on the request path.
import t, { type Test } from 'tap';
import pino from 'pino';
import { Registry } from 'prom-client';
import { KubeHttp } from '../src/cluster/kube-http.ts';
import { loadKubeConfig } from '../src/cluster/kube-config.ts';
import type { ClusterView } from '../src/cluster/view.ts';
import type { AzureIdentity, AzureIdentityBinding, PodInfo } from '../src/cluster/objects.ts';
import { eventMessage, eventReason } from '../src/events/event-texts.ts';
import { KubeEventSink } from '../src/events/kube-event-sink.ts';
import { PodEvents } from '../src/events/pod-events.ts';
import { kubernetesApiErrors } from '../src/observability/nmi-metrics.ts';
import type { RequestOutcome } from '../src/observability/request-outcome.ts';
import { FakeApiServer, type Obj } from './fake-apiserver/fake-apiserver.ts';
import { eventually, metric } from './fake-apiserver/harness.ts';
import { META } from './helpers/http.ts';
import { IDS, seededApi, startStack, TOKEN } from './helpers/stack.ts';



const eventsOf = (api: FakeApiServer, pod: string): Obj[] => [...api.events.values()].filter((e) => (e.involvedObject as Obj).name === pod);

t.test('the daemon writes actionable Warning Events for refusals, none for grants', async (t) => {
  const api = await seededApi(t);
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--token-cache=false'] });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200, 'grant');
  t.equal((await s.ask(TOKEN, { from: '127.0.0.12', headers: META })).status, 400, 'pass-through, refused by IMDS itself');
  t.equal((await s.ask(TOKEN, { from: '127.0.0.11', headers: META })).status, 400, 'unlabelled');
  t.equal((await s.ask(`${TOKEN}&client_id=${IDS.writer!.clientID}`, { from: '127.0.0.10', headers: META })).status, 403, 'not bound');
  t.equal((await s.ask(`${TOKEN}&object_id=o-2`, { from: '127.0.0.13', headers: META })).status, 403, 'object_id');
  s.emulator.setFault({ kind: 'status', status: 400, body: '{"error":"invalid_request","error_description":"Identity not found"}' }, { times: 1 });
  t.equal((await s.ask(TOKEN, { from: '127.0.0.13', headers: META })).status, 400, 'IMDS: identity not on this VM');
  t.equal((await s.ask(TOKEN, { from: '127.0.0.14', headers: META })).status, 503, 'IP conflict: no pod to blame');

  await eventually(() => api.events.size === 4, 'four Events written');
  const reasons = [...api.events.values()].map((e) => `${(e.involvedObject as Obj).namespace}/${(e.involvedObject as Obj).name} ${String(e.reason)}`).sort();
  t.same(reasons, [
    'shop/billing IdentityNotAssignedToNode',
    'shop/billing ObjectIdUnverifiable',
    'shop/orders IdentityNotBound',
    'shop/web PodUnlabeled',
  ], 'one Event per actionable refusal; none for the grant, the pass-through or the IP conflict');
  const notBound = eventsOf(api, 'orders')[0]!;
  t.match(notBound, {
    apiVersion: 'v1', kind: 'Event', type: 'Warning', count: 1,
    metadata: { namespace: 'shop' },
    involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'orders', uid: 'u-10' },
    source: { component: 'podid-nmi', host: 'node-1' },
    reportingComponent: 'podid-nmi', reportingInstance: 'node-1',
  });
  t.equal(notBound.message, `The pod asked for client_id "${IDS.writer!.clientID}", which is not bound to it. Bound to it: shop/reader (clientID ${IDS.reader!.clientID}).`);
  const notOnNode = eventsOf(api, 'billing').find((e) => e.reason === 'IdentityNotAssignedToNode')!;
  t.equal(notOnNode.message, `IMDS answered "Identity not found" for AzureIdentity shop/writer (clientID ${IDS.writer!.clientID}): it is not assigned to the VM or scale set of node node-1. `
    + `Assign it: az vmss identity assign -g <node resource group> -n <scale set> --identities ${IDS.writer!.resourceID} (a VM: az vm identity assign -g <resource group> -n <vm> --identities ${IDS.writer!.resourceID}).`);
  t.notOk(JSON.stringify([...api.events.values()]).includes('access_token'), 'nothing secret in any Event');
  // The server stores an Event before its answer reaches the daemon, which then counts it.
  let created = 0;
  await eventually(() => { void metric(s.daemon.metrics.registry, 'podid_nmi_pod_events_total', { result: 'created' }).then((v) => { created = v; }); return created === 4; }, 'four creations counted');
  t.equal(created, 4);
});

t.test('a hanging API server does not slow token answers; Event writes wait, they do not block', async (t) => {
  const api = await seededApi(t);
  const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: ['--token-cache=false'] });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  api.hang();
  // The first refusal queues an Event; its write reaches the hung server and stays unanswered.
  t.equal((await s.ask(TOKEN, { from: '127.0.0.11', headers: META })).status, 400);
  await eventually(() => api.requests.some((r) => r.resource === 'events' && r.method === 'POST') && api.stalledCount() > 0, 'an Event write is stalled');
  const stalledWrites = api.requests.filter((r) => r.resource === 'events').length;
  const answers = [];
  for (let i = 0; i < 20; i++) {
    answers.push((await s.ask(TOKEN, { from: '127.0.0.11', headers: META })).status);
    answers.push((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status);
    answers.push((await s.ask(`${TOKEN}&client_id=${IDS.writer!.clientID}`, { from: '127.0.0.10', headers: META })).status);
  }
  t.same(answers, Array.from({ length: 20 }, () => [400, 200, 403]).flat(), 'every answer given while the Event write hangs');
  t.equal(api.requests.filter((r) => r.resource === 'events').length, stalledWrites, 'no further write was started while one hangs');
  t.equal(api.events.size, 0, 'nothing written yet');
});

function outcome(pod: PodInfo, reason: RequestOutcome['reason'] = 'pod_unlabeled'): RequestOutcome {
  return { route: 'token', status: 400, reason, seconds: 0.001, pod, decision: { kind: 'refuse', reason: reason! } };
}

const podInfo = (name: string): PodInfo => ({ uid: `u-${name}`, namespace: 'team', name, labels: {}, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, nodeName: 'node-a' });

const EMPTY_VIEW: ClusterView = { podsAt: () => [], bindingsFor: () => [], bindingsSelecting: () => [], identity: () => undefined, exceptionsIn: () => [], assignedTo: () => [], podByUid: () => undefined, podNamed: () => undefined };

async function recorder(t: Test, opts: { maxPairs?: number; minIntervalMs?: number } = {}) {
  const api = await FakeApiServer.start();
  const registry = new Registry();
  const sink = new KubeEventSink(new KubeHttp(await loadKubeConfig(api.kubeconfig())), kubernetesApiErrors(registry), 500);
  const events = new PodEvents({ sink, view: EMPTY_VIEW, node: 'node-a', registry, log: pino({ level: 'silent' }), autoFlush: false, ...opts });
  t.teardown(async () => {
    await events.close();
    await api.close();
  });
  return { api, events, registry };
}

t.test('repeats of one (pod, reason) update one Event, at most once per interval; an expired Event is made again', async (t) => {
  const { api, events, registry } = await recorder(t, { minIntervalMs: 60_000 });
  const web = podInfo('web');
  events.finished(outcome(web));
  events.finished(outcome(web));
  await events.flush();
  t.equal(api.events.size, 1);
  const [first] = [...api.events.values()];
  t.equal(first!.count, 2, 'both occurrences before the first write are in it');
  for (let i = 0; i < 5; i++) events.finished(outcome(web));
  await events.flush();
  t.equal(api.requests.filter((r) => r.resource === 'events').length, 1, 'no second write within the interval');
  t.equal(await metric(registry, 'podid_nmi_pod_events_pending', {}), 1, 'the repeats wait');

  const { api: api2, events: fast } = await recorder(t, { minIntervalMs: 1 });
  fast.finished(outcome(web));
  await fast.flush();
  for (let i = 0; i < 5; i++) fast.finished(outcome(web));
  await new Promise((r) => setTimeout(r, 5));
  await fast.flush();
  t.equal(api2.events.size, 1, 'still one Event');
  const [patched] = [...api2.events.values()];
  t.equal(patched!.count, 6, 'its count patched');
  t.ok(api2.requests.some((r) => r.method === 'PATCH'), 'by a PATCH');
  api2.events.clear();
  fast.finished(outcome(web));
  await new Promise((r) => setTimeout(r, 5));
  await fast.flush();
  t.equal(api2.events.size, 1, 'a new Event after the old one expired');
  t.equal([...api2.events.values()][0]!.count, 7, 'carrying the whole count');
});

t.test('a full table drops new pairs and counts them; failed writes are counted and retried', async (t) => {
  const { api, events, registry } = await recorder(t, { maxPairs: 2, minIntervalMs: 1 });
  for (const name of ['a', 'b', 'c']) events.finished(outcome(podInfo(name)));
  t.equal(await metric(registry, 'podid_nmi_pod_events_dropped_total', { reason: 'table_full' }), 1);
  api.failNext(1, { resource: 'events', status: 500 });
  await events.flush();
  t.equal(api.events.size, 0, 'the first write failed, and the pass stopped there');
  t.equal(await metric(registry, 'podid_nmi_pod_events_total', { result: 'failed' }), 1);
  t.equal(await metric(registry, 'aadpodidentity_kubernetes_api_operations_errors_count', { operation_type: 'create_events' }), 1);
  await new Promise((r) => setTimeout(r, 5));
  await events.flush();
  t.equal(api.events.size, 2, 'both pairs written on the next pass');
});

t.test('Event texts name what to fix', async (t) => {
  const ids: Record<string, AzureIdentity> = {
    sp: { namespace: 'team', name: 'sp', type: 3, clientID: 'c-sp', resourceID: '' },
    empty: { namespace: 'team', name: 'empty', type: 0, clientID: '', resourceID: '' },
  };
  const bindings: Record<string, AzureIdentityBinding[]> = {
    ghost: [{ namespace: 'team', name: 'ghost-binding', azureIdentity: 'missing', selector: 'ghost' }],
    sp: [{ namespace: 'team', name: 'sp-binding', azureIdentity: 'sp', selector: 'sp' }],
    empty: [{ namespace: 'team', name: 'empty-binding', azureIdentity: 'empty', selector: 'empty' }],
  };
  const view: ClusterView = { ...EMPTY_VIEW, bindingsFor: (_ns, sel) => bindings[sel] ?? [], identity: (_ns, n) => ids[n] };
  const labelled = (label: string): PodInfo => ({ ...podInfo('p'), labels: { aadpodidbinding: label } });
  const text = (label: string, reason: NonNullable<RequestOutcome['reason']>, extra: Partial<RequestOutcome> = {}): string => {
    const o = { ...outcome(labelled(label), reason), ...extra };
    return eventMessage(eventReason(o)!, o, view, 'node-a');
  };
  t.equal(text('nothing', 'binding_missing'), 'No AzureIdentityBinding in namespace team has selector "nothing" (this pod\'s aadpodidbinding label). Create one, or fix the label.');
  t.equal(text('ghost', 'identity_missing'), 'AzureIdentityBinding ghost-binding in namespace team select this pod, but the AzureIdentity they name (missing) does not exist in namespace team.');
  t.equal(text('sp', 'identity_type_unsupported'), 'AzureIdentity team/sp (type 3) bound to this pod has a spec.type podid-nmi does not know: 0 is a user-assigned managed identity, 1 a service principal with a secret, 2 with a certificate.');
  t.equal(text('sp', 'secret_cross_namespace'), 'AzureIdentity team/sp bound to this pod: The AzureIdentity\'s spec.clientPassword names a Secret in another namespace; podid-nmi reads those only with --allow-cross-namespace-secrets.');
  t.equal(text('empty', 'identity_incomplete'), 'AzureIdentity team/empty bound to this pod has neither spec.clientID nor spec.resourceID; set one.');
  const long = 'x'.repeat(2000);
  const msg = text('empty', 'identity_not_bound', { request: { apiVersion: '2018-02-01', resource: 'r', selector: { name: 'msi_res_id', value: long } } });
  t.ok(msg.startsWith(`The pod asked for msi_res_id "${'x'.repeat(256)}…", which is not bound to it.`), 'a value the pod sent is cut and quoted');
  const pending: RequestOutcome = { ...outcome(labelled('x'), 'assignment_pending'), decision: { kind: 'pending' } };
  t.equal(eventReason(pending), 'AssignmentPending', 'standard mode: MIC did not assign in time');
  const aaiView: ClusterView = { ...EMPTY_VIEW, assignedTo: () => [{ namespace: 'default', name: 'p-team-id', pod: 'p', podNamespace: 'team', nodeName: 'node-a', state: 'Created', identity: ids.empty!, bindingSelector: 'x' }] };
  t.equal(eventMessage('AssignmentPending', pending, aaiView, 'node-a'),
    'MIC has not assigned an identity to this pod on node node-a yet (AzureAssignedIdentity: default/p-team-id Created). Check that MIC runs and can assign the identity to the node\'s VM or scale set.');
  t.equal(eventReason({ ...outcome(labelled('x'), 'pod_unknown'), decision: undefined }), undefined, 'no Event without a decision about a known pod');
  t.equal(eventReason({ route: 'token', status: 200, reason: undefined, seconds: 0, pod: labelled('x') }), undefined, 'no Event for a grant');
});

// The informer source against a fake API server speaking the real protocol: churn, IP
// reuse, outages, 410, 5xx, stalls and malformed input, with the real ListWatch informers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import t from 'tap';
import { InformerClusterState } from '../src/cluster/informer-source.ts';
import { binding, exception, identity, pod } from './fake-apiserver/fixtures.ts';
import { capturingLogger, eventually, metric, NODE, sleep, startHarness } from './fake-apiserver/harness.ts';
import { EVENTUALLY_MS } from './helpers/eventually.ts';
import type { Harness } from './fake-apiserver/harness.ts';
import { opensslAvailable } from './fake-apiserver/tls-cert.ts';

const names = (h: Harness, ip: string): string[] => h.state.podsAt(ip).map((p) => `${p.namespace}/${p.name}`).sort();

t.test('syncs the four kinds, keeps other nodes\' pods out, and is ready only once all four listed', async (t) => {
  const h = await startHarness({
    seed: (api) => {
      api.create('pods', pod({ name: 'a', ip: '10.0.0.1', labels: { aadpodidbinding: 'sel-a' } }));
      api.create('pods', pod({ name: 'b', namespace: 'ns2', ip: '10.0.0.2' }));
      api.create('pods', pod({ name: 'elsewhere', ip: '10.0.9.1', node: 'node-b' }));
      api.create('azureidentities', identity({ name: 'id-a', clientID: 'client-a' }));
      api.create('azureidentitybindings', binding({ name: 'bind-a', azureIdentity: 'id-a', selector: 'sel-a' }));
      api.create('azurepodidentityexceptions', exception({ name: 'exc', podLabels: { app: 'kube-dns' } }));
    },
    beforeStart: (api) => api.stall({ resource: 'azurepodidentityexceptions' }),
    waitReady: false,
  });
  t.teardown(() => h.close());
  const { state, api } = h;
  await eventually(() => {
    const c = state.counts();
    return c.pods === 2 && c.identities === 1 && c.bindings === 1;
  }, 'three informers synced');
  await sleep(100);
  t.equal(state.isReady(), false, 'not ready while the exceptions list is stalled');
  t.equal(await metric(h.registry, 'podid_nmi_informer_synced', { resource: 'azurepodidentityexceptions' }), 0);
  t.equal(await metric(h.registry, 'podid_nmi_informer_synced', { resource: 'pods' }), 1);
  let resolved = false;
  void state.whenReady().then(() => (resolved = true));
  await sleep(50);
  t.equal(resolved, false, 'whenReady still pending');

  api.unstall();
  await state.whenReady(AbortSignal.timeout(EVENTUALLY_MS));
  t.equal(state.isReady(), true);
  t.same(state.counts(), { pods: 2, identities: 1, bindings: 1, exceptions: 1, assignedIdentities: 0 });
  t.same(names(h, '10.0.0.1'), ['default/a']);
  t.same(state.podsAt('10.0.9.1'), [], 'a pod of another node is never held');
  t.equal(state.identity('default', 'id-a')?.clientID, 'client-a');
  t.same(state.bindingsFor('default', 'sel-a').map((b) => b.name), ['bind-a']);
  t.same(state.exceptionsIn('default').map((e) => e.name), ['exc']);

  const podRequests = api.requests.filter((r) => r.resource === 'pods');
  t.ok(podRequests.length >= 2 && podRequests.every((r) => r.query.fieldSelector === `spec.nodeName=${NODE}`), 'pods listed and watched for this node only');
  t.ok(api.requests.filter((r) => r.watch).every((r) => r.query.allowWatchBookmarks === 'true' && r.query.resourceVersion !== ''), 'watches resume from a resourceVersion and allow bookmarks');
  t.ok(h.logs.some((r) => r.msg === 'cluster state ready'), 'readiness logged');
});

t.test('pod lifecycle: IP assigned after creation, phase changes, deletion', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const { state, api } = h;
  api.create('pods', pod({ name: 'web', namespace: 'shop' }));
  await sleep(100);
  t.same(state.podsAt('10.1.0.5'), [], 'no IP yet: nothing to find');

  api.modify('pods', 'shop', 'web', (o) => {
    Object.assign(o.status as object, { phase: 'Running', podIP: '10.1.0.5', podIPs: [{ ip: '10.1.0.5' }, { ip: 'fd00::5' }] });
  });
  await eventually(() => state.podsAt('10.1.0.5').length === 1, 'IP assigned');
  t.same(names(h, 'fd00::5'), ['shop/web'], 'every pod IP is indexed');

  api.modify('pods', 'shop', 'web', (o) => {
    (o.metadata as Record<string, unknown>).labels = { aadpodidbinding: 'web-id' };
  });
  await eventually(() => state.podsAt('10.1.0.5')[0]?.labels.aadpodidbinding === 'web-id', 'label update applied');

  api.modify('pods', 'shop', 'web', (o) => {
    (o.status as Record<string, unknown>).phase = 'Succeeded';
  });
  await eventually(() => state.podsAt('10.1.0.5').length === 0, 'a finished pod no longer claims its IP');

  api.modify('pods', 'shop', 'web', (o) => {
    (o.status as Record<string, unknown>).phase = 'Running';
  });
  await eventually(() => state.podsAt('10.1.0.5').length === 1, 'back (the index holds live pods only)');
  api.delete('pods', 'shop', 'web');
  await eventually(() => state.counts().pods === 0, 'deleted');
  t.same(state.podsAt('10.1.0.5'), []);
  t.same(state.podsAt('fd00::5'), []);
});

t.test('IP reuse across namespaces', async (t) => {
  t.test('new pod added before the old one is deleted: both claim it, then only the new one', async (t) => {
    const h = await startHarness({ seed: (api) => api.create('pods', pod({ name: 'old', namespace: 'ns1', ip: '10.2.0.7' })) });
    t.teardown(() => h.close());
    const { state, api } = h;
    t.same(names(h, '10.2.0.7'), ['ns1/old']);
    api.create('pods', pod({ name: 'new', namespace: 'ns2', ip: '10.2.0.7' }));
    await eventually(() => state.podsAt('10.2.0.7').length === 2, 'two live pods on the IP');
    t.same(names(h, '10.2.0.7'), ['ns1/old', 'ns2/new'], 'both returned: the decision refuses the conflict');
    api.delete('pods', 'ns1', 'old');
    await eventually(() => state.counts().pods === 1, 'old pod deleted');
    t.same(names(h, '10.2.0.7'), ['ns2/new']);
  });

  t.test('old pod deleted before the new one is added: the old one is never returned again', async (t) => {
    const h = await startHarness({ seed: (api) => api.create('pods', pod({ name: 'old', namespace: 'ns1', ip: '10.2.0.8' })) });
    t.teardown(() => h.close());
    const { state, api } = h;
    api.delete('pods', 'ns1', 'old');
    await eventually(() => state.counts().pods === 0, 'old pod deleted');
    t.same(state.podsAt('10.2.0.8'), []);
    const wake = state.waitForIp('10.2.0.8', 3_000);
    api.create('pods', pod({ name: 'new', namespace: 'ns2', ip: '10.2.0.8' }));
    t.equal(await wake, true);
    t.same(names(h, '10.2.0.8'), ['ns2/new']);
  });

  t.test('old pod finished (still listing its IP) when the new one gets it', async (t) => {
    const h = await startHarness({ seed: (api) => api.create('pods', pod({ name: 'job', namespace: 'ns1', ip: '10.2.0.9' })) });
    t.teardown(() => h.close());
    const { state, api } = h;
    api.modify('pods', 'ns1', 'job', (o) => {
      (o.status as Record<string, unknown>).phase = 'Succeeded';
    });
    api.create('pods', pod({ name: 'new', namespace: 'ns2', ip: '10.2.0.9' }));
    await eventually(() => state.counts().pods === 1 && names(h, '10.2.0.9').join() === 'ns2/new', 'only the new pod');
    t.pass('the finished pod never shadows or conflicts with the new one');
  });

  t.test('a pod recreated under the same name drops the old uid and IP', async (t) => {
    const h = await startHarness({ seed: (api) => api.create('pods', pod({ name: 'db-0', namespace: 'ns1', ip: '10.2.1.1' })) });
    t.teardown(() => h.close());
    const { state, api } = h;
    const oldUid = state.podsAt('10.2.1.1')[0]?.uid;
    api.delete('pods', 'ns1', 'db-0');
    api.create('pods', pod({ name: 'db-0', namespace: 'ns1', ip: '10.2.1.2' }));
    await eventually(() => state.podsAt('10.2.1.2').length === 1, 'recreated pod indexed');
    t.same(state.podsAt('10.2.1.1'), []);
    t.not(state.podsAt('10.2.1.2')[0]?.uid, oldUid);
    t.equal(state.counts().pods, 1);
  });
  t.end();
});

t.test('waitForIp is woken by the pod\'s add event, not by polling, and times out when no pod comes', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const { state, api } = h;
  const index = state.index;
  const original = index.podsAt.bind(index);
  let lookups = 0;
  index.podsAt = (ip: string) => {
    lookups++;
    return original(ip);
  };
  t.teardown(() => {
    index.podsAt = original;
  });
  // True can only come from a wake: the bound gives false.
  const waiting = state.waitForIp('10.3.0.1', EVENTUALLY_MS);
  await sleep(300);
  const createdAt = performance.now();
  api.create('pods', pod({ name: 'late', ip: '10.3.0.1' }));
  t.equal(await waiting, true, 'woken');
  t.comment(`woken ${(performance.now() - createdAt).toFixed(1)} ms after the create`);
  t.equal(lookups, 1, 'one lookup at entry; the wake came from the index, not a poll');

  const started = performance.now();
  t.equal(await state.waitForIp('10.3.0.2', 300), false);
  t.ok(performance.now() - started >= 290, 'waited the full bound');
});

t.test('identities, bindings and exceptions follow adds, updates and deletes', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const { state, api } = h;
  api.create('azureidentities', identity({ name: 'id1', namespace: 'team', clientID: 'c-1' }));
  api.create('azureidentitybindings', binding({ name: 'b1', namespace: 'team', azureIdentity: 'id1', selector: 'frontend' }));
  api.create('azurepodidentityexceptions', exception({ name: 'e1', namespace: 'team', podLabels: { app: 'dns' } }));
  await eventually(() => state.identity('team', 'id1') !== undefined && state.bindingsFor('team', 'frontend').length === 1
    && state.exceptionsIn('team').length === 1, 'added');

  api.modify('azureidentities', 'team', 'id1', (o) => {
    (o.spec as Record<string, unknown>).clientID = 'c-2';
  });
  api.modify('azureidentitybindings', 'team', 'b1', (o) => {
    (o.spec as Record<string, unknown>).selector = 'backend';
  });
  await eventually(() => state.identity('team', 'id1')?.clientID === 'c-2' && state.bindingsFor('team', 'backend').length === 1, 'updated');
  t.same(state.bindingsFor('team', 'frontend'), [], 'the old selector no longer matches');

  api.delete('azureidentities', 'team', 'id1');
  api.delete('azureidentitybindings', 'team', 'b1');
  api.delete('azurepodidentityexceptions', 'team', 'e1');
  await eventually(() => state.counts().identities + state.counts().bindings + state.counts().exceptions === 0, 'deleted');

  const warned = (): number => h.logs.filter((r) => typeof r.msg === 'string' && r.msg.includes('empty selector')).length;
  api.create('azureidentitybindings', binding({ name: 'catch-all', namespace: 'team', azureIdentity: 'id1', selector: '' }));
  await eventually(() => state.counts().bindings === 1, 'empty-selector binding held');
  api.modify('azureidentitybindings', 'team', 'catch-all', (o) => {
    (o.metadata as Record<string, unknown>).labels = { touched: 'yes' };
  });
  const modified = async (): Promise<number> => metric(h.registry, 'podid_nmi_informer_events_total', { resource: 'azureidentitybindings', type: 'modified' });
  const deadline = performance.now() + 5_000;
  while ((await modified()) < 2 && performance.now() < deadline) await sleep(10);
  t.equal(await modified(), 2, 'the update of the empty-selector binding was seen');
  t.equal(warned(), 1, 'warned once for the object, not on every event');
  t.match(h.logs.find((r) => typeof r.msg === 'string' && r.msg.includes('empty selector')), { level: 40, namespace: 'team', binding: 'catch-all' });
});

t.test('an API outage keeps the last known state; after restart it catches up by resuming, without relisting', async (t) => {
  const h = await startHarness({
    seed: (api) => {
      api.create('pods', pod({ name: 'p1', ip: '10.4.0.1' }));
      api.create('pods', pod({ name: 'p2', ip: '10.4.0.2' }));
      api.create('azureidentities', identity({ name: 'id1', clientID: 'c-1' }));
      api.create('azureidentitybindings', binding({ name: 'b1', azureIdentity: 'id1', selector: 's' }));
    },
  });
  t.teardown(() => h.close());
  const { state, api, registry } = h;
  await api.stop();
  await eventually(() => h.logs.some((r) => r.msg.startsWith('Kubernetes API request failed')), 'failure noticed');
  // Changes while the daemon cannot see them.
  api.delete('pods', 'default', 'p1');
  api.create('pods', pod({ name: 'p3', ip: '10.4.0.3' }));
  api.delete('azureidentitybindings', 'default', 'b1');
  api.modify('azureidentities', 'default', 'id1', (o) => {
    (o.spec as Record<string, unknown>).clientID = 'c-2';
  });
  await sleep(500);
  t.same(names(h, '10.4.0.1'), ['default/p1'], 'last known state kept during the outage');
  t.equal(state.bindingsFor('default', 's').length, 1);
  t.equal(state.isReady(), true, 'still ready');
  t.ok(await metric(registry, 'podid_nmi_informer_errors_total', { resource: 'pods', operation: 'watch' }) >= 1, 'watch errors counted');

  await api.restart();
  await eventually(() => state.podsAt('10.4.0.1').length === 0 && state.podsAt('10.4.0.3').length === 1
    && state.bindingsFor('default', 's').length === 0 && state.identity('default', 'id1')?.clientID === 'c-2', 'caught up', 5_000);
  t.same(names(h, '10.4.0.2'), ['default/p2']);
  for (const resource of ['pods', 'azureidentities', 'azureidentitybindings']) {
    t.equal(await metric(registry, 'podid_nmi_informer_lists_total', { resource }), 1, `${resource}: resumed from its resourceVersion, no relist`);
  }
  t.ok(h.logs.some((r) => r.msg === 'Kubernetes API reachable again'), 'recovery logged');
});

t.test('410 Gone after compaction: relist replaces the state and no deletion is missed', async (t) => {
  const h = await startHarness({
    seed: (api) => {
      api.create('pods', pod({ name: 'p1', ip: '10.5.0.1' }));
      api.create('pods', pod({ name: 'sts-0', ip: '10.5.0.2' }));
      api.create('azureidentitybindings', binding({ name: 'b1', azureIdentity: 'id1', selector: 's' }));
      api.create('azureidentitybindings', binding({ name: 'b2', azureIdentity: 'id1', selector: 's' }));
    },
  });
  t.teardown(() => h.close());
  const { state, api, registry } = h;
  await api.stop();
  api.delete('pods', 'default', 'p1');
  api.delete('pods', 'default', 'sts-0');
  api.create('pods', pod({ name: 'sts-0', ip: '10.5.0.3' }));
  api.delete('azureidentitybindings', 'default', 'b1');
  api.compact();
  await api.restart();
  await eventually(() => state.podsAt('10.5.0.3').length === 1 && state.bindingsFor('default', 's').length === 1, 'relisted');
  t.same(state.podsAt('10.5.0.1'), [], 'deletion during the outage applied');
  t.same(state.podsAt('10.5.0.2'), [], 'the recreated pod\'s old IP is gone');
  t.equal(state.counts().pods, 1);
  t.same(state.bindingsFor('default', 's').map((b) => b.name), ['b2']);
  t.equal(await metric(registry, 'podid_nmi_informer_lists_total', { resource: 'pods' }), 2, 'pods relisted once');
  t.ok(await metric(registry, 'podid_nmi_informer_events_total', { resource: 'pods', type: 'error' }) >= 1, 'the 410 event counted');
  const relists = api.requests.filter((r) => !r.watch && r.resource === 'pods');
  t.equal(relists.at(-1)?.query.resourceVersion, undefined, 'the relist reads the current state, not the watch cache');

  api.create('pods', pod({ name: 'after', ip: '10.5.0.9' }));
  await eventually(() => state.podsAt('10.5.0.9').length === 1, 'watching again after the relist');
});

t.test('5xx answers and stalls are retried with backoff, and the source recovers', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const { state, api, registry } = h;

  api.failNext(8, { status: 500 });
  api.dropWatches();
  await eventually(() => api.requests.filter((r) => r.watch).length >= 12, 'reconnect attempts');
  api.create('pods', pod({ name: 'after-500', ip: '10.6.0.1' }));
  await eventually(() => state.podsAt('10.6.0.1').length === 1, 'recovered from 500s');
  const watchErrors = await metric(registry, 'podid_nmi_informer_errors_total', { resource: 'pods', operation: 'watch' })
    + await metric(registry, 'podid_nmi_informer_errors_total', { resource: 'azureidentities', operation: 'watch' })
    + await metric(registry, 'podid_nmi_informer_errors_total', { resource: 'azureidentitybindings', operation: 'watch' })
    + await metric(registry, 'podid_nmi_informer_errors_total', { resource: 'azurepodidentityexceptions', operation: 'watch' });
  t.ok(watchErrors >= 8, `every 500 counted (${watchErrors})`);

  api.stall();
  api.dropWatches();
  await eventually(() => api.stalledCount() >= 4, 'reconnects stalled');
  api.create('pods', pod({ name: 'during-stall', ip: '10.6.0.2' }));
  await sleep(700); // beyond the 500 ms connect bound: the client gave up and is backing off
  t.same(state.podsAt('10.6.0.2'), [], 'not seen while the API server stalls');
  t.equal(state.podsAt('10.6.0.1').length, 1, 'state kept');
  api.unstall();
  await eventually(() => state.podsAt('10.6.0.2').length === 1, 'recovered from the stall');
  t.ok(h.logs.some((r) => typeof r.err === 'string' && r.err.includes('no response within 500 ms')), 'connect timeout reported');
});

t.test('a stalled list is bounded and retried', async (t) => {
  const h = await startHarness({
    seed: (api) => api.create('pods', pod({ name: 'p', ip: '10.6.1.1' })),
    beforeStart: (api) => api.stall({ resource: 'pods', count: 1 }),
  });
  t.teardown(() => h.close());
  t.equal(h.state.podsAt('10.6.1.1').length, 1);
  t.equal(await metric(h.registry, 'podid_nmi_informer_errors_total', { resource: 'pods', operation: 'list' }), 1, 'the stalled list timed out once');
});

t.test('malformed events and objects are skipped; a malformed update of a known pod removes it', async (t) => {
  const h = await startHarness({
    seed: (api) => {
      api.create('pods', pod({ name: 'good1', ip: '10.7.0.1' }));
      api.create('pods', pod({ name: 'good2', ip: '10.7.0.2' }));
      api.create('azureidentities', identity({ name: 'ok', clientID: 'c' }));
      api.create('azureidentities', { metadata: { name: 'bad' }, spec: { type: 'zero', clientID: 'c' } });
      api.addBrokenListItem('azureidentities', { spec: { clientID: 'nameless' } });
      api.addBrokenListItem('azureidentities', 'not an object');
    },
  });
  t.teardown(() => h.close());
  const { state, api, registry } = h;
  t.equal(state.counts().identities, 1, 'only the valid identity is held');
  t.equal(state.identity('default', 'bad'), undefined);
  t.equal(await metric(registry, 'podid_nmi_informer_rejected_objects_total', { resource: 'azureidentities' }), 3);

  t.equal(api.sendRaw('pods', '{"type":"ADDED","object":{"kind":"Pod","metadata":{"na'), 1);
  api.sendEvent('pods', { type: 'ADDED' });
  api.sendEvent('pods', { type: 'ADDED', object: { kind: 'Pod' } });
  api.sendEvent('pods', { type: 'DELETED', object: { metadata: { name: 42 } } });
  api.sendEvent('pods', { type: 'SOMETHING', object: {} });
  api.sendEvent('pods', { type: 'BOOKMARK', object: { metadata: {} } });
  api.modify('pods', 'default', 'good1', (o) => {
    (o.metadata as Record<string, unknown>).labels = { aadpodidbinding: 5 };
  });
  await eventually(() => state.podsAt('10.7.0.1').length === 0, 'malformed update removed the pod (fail closed)');
  t.equal(state.podsAt('10.7.0.2').length, 1, 'other pods untouched');
  t.equal(await metric(registry, 'podid_nmi_informer_events_total', { resource: 'pods', type: 'malformed' }), 6);
  t.ok(h.logs.some((r) => r.msg.startsWith('malformed object ignored') && r.name === 'good1'), 'the bad object is named in the log');

  api.create('pods', pod({ name: 'good3', ip: '10.7.0.3' }));
  await eventually(() => state.podsAt('10.7.0.3').length === 1, 'the stream still works');
  api.modify('pods', 'default', 'good1', (o) => {
    (o.metadata as Record<string, unknown>).labels = { aadpodidbinding: 'fixed' };
  });
  await eventually(() => state.podsAt('10.7.0.1').length === 1, 'a corrected object comes back');
});

t.test('bookmarks advance the resume point', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const { api, registry, state } = h;
  api.create('azureidentities', identity({ name: 'elsewhere', clientID: 'c' }));
  await eventually(() => state.counts().identities === 1, 'identity seen');
  t.equal(api.sendBookmarks(), 4, 'every watch asked for bookmarks');
  const bookmarks = () => metric(registry, 'podid_nmi_informer_events_total', { resource: 'pods', type: 'bookmark' });
  await eventually(async () => (await bookmarks()) > 0, 'the pods bookmark received');
  t.equal(await bookmarks(), 1);
  const rv = String(api.store.resourceVersion);
  api.compact();
  api.dropWatches();
  await eventually(() => api.watchCount() === 4, 'all four watching again');
  const podWatches = api.requests.filter((r) => r.watch && r.resource === 'pods');
  t.equal(podWatches.at(-1)?.query.resourceVersion, rv, 'pods resumed from the bookmark');
  t.equal(await metric(registry, 'podid_nmi_informer_lists_total', { resource: 'pods' }), 1, 'so no 410 and no relist');
});

t.test('close() stops every informer: no request, watch or timer left', async (t) => {
  const h = await startHarness();
  const { api, state } = h;
  await api.stop(); // leave restart timers pending
  await sleep(100);
  await api.restart();
  api.stall(); // and requests in flight
  await sleep(100);
  await state.close();
  // Requests already on the wire may still reach the server, later on a loaded machine: wait
  // for 300 ms without one (bounded), then none may come in the next 400 ms.
  let seen = api.requests.length;
  let quietSince = performance.now();
  await eventually(() => {
    if (api.requests.length !== seen) [seen, quietSince] = [api.requests.length, performance.now()];
    return performance.now() - quietSince >= 300;
  }, 'the requests in flight at close() to land');
  const before = api.requests.length;
  await sleep(400);
  t.equal(api.requests.length, before, 'no request after close');
  t.equal(api.watchCount(), 0);
  t.equal(await state.waitForIp('10.9.9.9', 10), false);
  await api.close();
  const handles = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'TCPSocketWrap');
  // Sockets finish closing asynchronously; a leaked one never does and fails the wait.
  await eventually(() => !handles().includes('TCPSocketWrap'), 'the sockets to close');
  t.same(handles(), [], 'no timers or sockets of ours remain');
});

t.test('start() refuses bad configuration, not API errors', async (t) => {
  const { log } = capturingLogger();
  const dir = mkdtempSync(join(tmpdir(), 'informer-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const httpNoSkip = join(dir, 'http.yaml');
  writeFileSync(httpNoSkip, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`);
  await t.rejects(InformerClusterState.start({ kubeconfig: httpNoSkip, nodeName: NODE, log, registry: new Registry() }), /insecure-skip-tls-verify/);
  await t.rejects(InformerClusterState.start({ kubeconfig: join(dir, 'missing.yaml'), nodeName: NODE, log, registry: new Registry() }), /cannot load kubeconfig/);
  await t.rejects(InformerClusterState.start({ kubeconfig: httpNoSkip, nodeName: 'a,metadata.name=x', log, registry: new Registry() }), /invalid node name/);

  // Nothing listens on this port: start() still resolves, the informers retry.
  const down = join(dir, 'down.yaml');
  writeFileSync(down, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`);
  const state = await InformerClusterState.start({ kubeconfig: down, nodeName: NODE, log, registry: new Registry(), backoff: { initialMs: 20, maxMs: 50 } });
  await sleep(200);
  t.equal(state.isReady(), false);
  await t.rejects(state.whenReady(AbortSignal.timeout(50)), { name: 'TimeoutError' }, 'whenReady honours its signal');
  const pending = state.whenReady();
  await state.close();
  await t.rejects(pending, /closed before it was ready/, 'close() rejects a pending whenReady');
  await t.rejects(state.whenReady(), /closed before it was ready/);
});

t.test('over TLS with a CA from the kubeconfig', { skip: opensslAvailable() ? false : 'openssl CLI not available' }, async (t) => {
  const h = await startHarness({ server: { tls: true }, seed: (api) => api.create('pods', pod({ name: 'tls', ip: '10.8.0.1' })) });
  t.teardown(() => h.close());
  t.ok(h.api.url.startsWith('https://'));
  t.equal(h.state.podsAt('10.8.0.1').length, 1);
  h.api.create('pods', pod({ name: 'tls2', ip: '10.8.0.2' }));
  await eventually(() => h.state.podsAt('10.8.0.2').length === 1, 'watch over TLS');
});

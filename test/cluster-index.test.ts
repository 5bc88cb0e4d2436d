import t from 'tap';
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import {
  canonicalIp, ConversionError, toAzureAssignedIdentity, toAzureIdentity, toAzureIdentityBinding, toAzurePodIdentityException, toClusterObject, toPodInfo,
} from '../src/cluster/convert.ts';
import type { AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, ClusterObject, PodInfo } from '../src/cluster/objects.ts';
import { MAX_PARKED, parkedCount, waitForIp } from '../src/cluster/wait-for-ip.ts';

function pod(over: Partial<PodInfo> & { uid: string }): PodInfo {
  return {
    namespace: 'default', name: over.uid, labels: {}, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: false, nodeName: 'n1',
    ...over,
  };
}

function binding(namespace: string, name: string, selector: string, azureIdentity = 'id'): AzureIdentityBinding {
  return { namespace, name, selector, azureIdentity };
}

function identity(namespace: string, name: string, clientID = 'c'): AzureIdentity {
  return { namespace, name, type: 0, clientID, resourceID: '' };
}

function exception(namespace: string, name: string, podLabels: Record<string, string> = { app: 'x' }): AzurePodIdentityException {
  return { namespace, name, podLabels };
}

const uids = (pods: readonly PodInfo[]): string[] => pods.map((p) => p.uid);

t.test('pods: upsert and delete', async (t) => {
  const index = new ClusterIndex();
  t.same(index.podsAt('10.0.0.1'), [], 'empty index');
  const a = pod({ uid: 'a' });
  index.upsertPod(a);
  t.equal(index.podsAt('10.0.0.1').length, 1);
  t.equal(index.podsAt('10.0.0.1')[0], a, 'the same object');
  t.equal(index.counts().pods, 1);
  index.upsertPod(a);
  t.equal(index.podsAt('10.0.0.1').length, 1, 'an upsert of the same pod does not duplicate it');
  const relabelled = { ...a, labels: { aadpodidbinding: 'sel' } };
  index.upsertPod(relabelled);
  t.equal(index.podsAt('10.0.0.1')[0], relabelled, 'an update replaces the held object');
  index.deletePod('a');
  t.same(index.podsAt('10.0.0.1'), [], 'deleted');
  t.equal(index.counts().pods, 0);
  index.deletePod('a');
  index.deletePod('never-seen');
  t.equal(index.counts().pods, 0, 'deleting an unknown uid is harmless');
});

t.test('pods: only live, pod-network pods with an IP are held', async (t) => {
  const index = new ClusterIndex();
  const cases: Array<[Partial<PodInfo>, boolean, string]> = [
    [{ phase: 'Running' }, true, 'Running'],
    [{ phase: 'Pending' }, true, 'Pending'],
    [{ phase: 'Succeeded' }, false, 'Succeeded'],
    [{ phase: 'Failed' }, false, 'Failed'],
    [{ phase: 'Unknown' }, false, 'Unknown'],
    [{ phase: '' }, false, 'no phase'],
    [{ phase: 'running' }, false, 'phase is case-sensitive'],
    [{ hostNetwork: true }, false, 'hostNetwork'],
    [{ ips: [] }, false, 'no IP'],
  ];
  cases.forEach(([over, held, label], i) => {
    const ip = `10.1.0.${i + 1}`;
    index.upsertPod(pod({ uid: `p${i}`, ips: [ip], ...over }));
    t.equal(index.podsAt(ip).length, held ? 1 : 0, label);
  });
  t.equal(index.counts().pods, 2, 'only the Running and the Pending pod count');
});

t.test('pods: an update that changes the IP removes the old entry', async (t) => {
  const index = new ClusterIndex();
  index.upsertPod(pod({ uid: 'a', ips: ['10.0.0.1', 'fd00::1'] }));
  index.upsertPod(pod({ uid: 'a', ips: ['10.0.0.2'] }));
  t.same(index.podsAt('10.0.0.1'), []);
  t.same(index.podsAt('fd00::1'), [], 'every old IP goes');
  t.same(uids(index.podsAt('10.0.0.2')), ['a']);
  t.equal(index.counts().pods, 1);
});

t.test('pods: a Succeeded pod that still lists its IP is dropped', async (t) => {
  const index = new ClusterIndex();
  index.upsertPod(pod({ uid: 'job', ips: ['10.0.0.9'], phase: 'Running' }));
  index.upsertPod(pod({ uid: 'job', ips: ['10.0.0.9'], phase: 'Succeeded' }));
  t.same(index.podsAt('10.0.0.9'), [], 'no longer held');
  t.equal(index.counts().pods, 0);
  index.upsertPod(pod({ uid: 'next', namespace: 'other', ips: ['10.0.0.9'] }));
  t.same(uids(index.podsAt('10.0.0.9')), ['next'], 'the new owner alone, no conflict');
  index.upsertPod(pod({ uid: 'job', ips: ['10.0.0.9'], phase: 'Failed' }));
  t.same(uids(index.podsAt('10.0.0.9')), ['next'], 'a late update of the dead pod changes nothing');
});

t.test('pods: two live pods on one IP', async (t) => {
  const index = new ClusterIndex();
  index.upsertPod(pod({ uid: 'a', ips: ['10.0.0.1'] }));
  index.upsertPod(pod({ uid: 'b', namespace: 'ns2', ips: ['10.0.0.1'] }));
  t.same(uids(index.podsAt('10.0.0.1')).sort(), ['a', 'b']);
  index.deletePod('a');
  t.same(uids(index.podsAt('10.0.0.1')), ['b']);
  index.deletePod('b');
  t.same(index.podsAt('10.0.0.1'), []);
});

t.test('pods: IP reuse across namespaces, both event orders', async (t) => {
  const oldPod = pod({ uid: 'old', namespace: 'team-a', ips: ['10.0.0.5'] });
  const newPod = pod({ uid: 'new', namespace: 'team-b', ips: ['10.0.0.5'] });
  {
    const index = new ClusterIndex();
    index.upsertPod(oldPod);
    index.upsertPod(newPod);
    index.deletePod('old');
    t.same(uids(index.podsAt('10.0.0.5')), ['new'], 'new add, then old delete');
    t.equal(index.podsAt('10.0.0.5')[0]!.namespace, 'team-b');
  }
  {
    const index = new ClusterIndex();
    index.upsertPod(oldPod);
    index.deletePod('old');
    index.upsertPod(newPod);
    t.same(uids(index.podsAt('10.0.0.5')), ['new'], 'old delete, then new add');
  }
  {
    const index = new ClusterIndex();
    index.upsertPod(oldPod);
    index.upsertPod(newPod);
    index.upsertPod({ ...oldPod, phase: 'Succeeded' });
    t.same(uids(index.podsAt('10.0.0.5')), ['new'], 'new add, then old turns Succeeded');
  }
});

t.test('bindings', async (t) => {
  const index = new ClusterIndex();
  const b1 = binding('ns', 'b1', 'sel');
  const b2 = binding('ns', 'b2', 'sel', 'other-id');
  const b3 = binding('ns2', 'b3', 'sel');
  index.upsertBinding(b1);
  index.upsertBinding(b2);
  index.upsertBinding(b3);
  t.same(index.bindingsFor('ns', 'sel'), [b1, b2], 'both bindings of the namespace');
  t.same(index.bindingsFor('ns2', 'sel'), [b3], 'namespaces are separate');
  t.same(index.bindingsFor('ns', 'SEL'), [], 'selectors are exact');
  t.same(index.bindingsFor('ns3', 'sel'), []);
  t.equal(index.counts().bindings, 3);

  index.upsertBinding(binding('ns', 'b1', 'new-sel'));
  t.same(index.bindingsFor('ns', 'sel'), [b2], 'a selector change removes the old entry');
  t.same(index.bindingsFor('ns', 'new-sel').map((b) => b.name), ['b1']);
  t.equal(index.counts().bindings, 3, 'still three');

  index.upsertBinding(binding('ns', 'b2', 'sel', 'changed'));
  t.same(index.bindingsFor('ns', 'sel').map((b) => b.azureIdentity), ['changed'], 'an update replaces, never duplicates');

  index.deleteBinding('ns', 'b2');
  t.same(index.bindingsFor('ns', 'sel'), []);
  index.deleteBinding('ns', 'b2');
  index.deleteBinding('nope', 'nope');
  t.equal(index.counts().bindings, 2);
});

t.test('bindingsWithEmptySelector', async (t) => {
  const index = new ClusterIndex();
  index.upsertBinding(binding('ns', 'ok', 'sel'));
  t.same(index.bindingsWithEmptySelector(), []);
  const empty = binding('ns', 'empty', '');
  index.upsertBinding(empty);
  index.upsertBinding(binding('ns2', 'empty2', ''));
  t.same(index.bindingsWithEmptySelector().map((b) => `${b.namespace}/${b.name}`).sort(), ['ns/empty', 'ns2/empty2']);
  index.upsertBinding(binding('ns', 'empty', 'fixed'));
  t.same(index.bindingsWithEmptySelector().map((b) => b.name), ['empty2'], 'a fixed binding leaves the list');
});

t.test('identities', async (t) => {
  const index = new ClusterIndex();
  const a = identity('ns', 'id');
  index.upsertIdentity(a);
  index.upsertIdentity(identity('ns2', 'id', 'other'));
  t.equal(index.identity('ns', 'id'), a);
  t.equal(index.identity('ns2', 'id')!.clientID, 'other');
  t.equal(index.identity('ns', 'ID'), undefined, 'names are exact');
  t.equal(index.identity('ns3', 'id'), undefined);
  index.upsertIdentity(identity('ns', 'id', 'updated'));
  t.equal(index.identity('ns', 'id')!.clientID, 'updated');
  t.equal(index.counts().identities, 2);
  index.deleteIdentity('ns', 'id');
  t.equal(index.identity('ns', 'id'), undefined);
  t.equal(index.counts().identities, 1);
});

t.test('exceptions', async (t) => {
  const index = new ClusterIndex();
  const e1 = exception('ns', 'e1');
  const e2 = exception('ns', 'e2');
  index.upsertException(e1);
  index.upsertException(e2);
  index.upsertException(exception('ns2', 'e3'));
  t.same(index.exceptionsIn('ns'), [e1, e2]);
  t.same(index.exceptionsIn('other'), []);
  const e1b = exception('ns', 'e1', { app: 'y' });
  index.upsertException(e1b);
  t.equal(index.exceptionsIn('ns').length, 2, 'an update replaces');
  t.ok(index.exceptionsIn('ns').includes(e1b));
  t.notOk(index.exceptionsIn('ns').includes(e1));
  index.deleteException('ns', 'e1');
  t.same(index.exceptionsIn('ns'), [e2]);
  index.deleteException('ns', 'e1');
  t.equal(index.counts().exceptions, 2);
});

t.test('upsert dispatches by kind, replaceKind relists', async (t) => {
  const index = new ClusterIndex();
  const objects: ClusterObject[] = [
    { kind: 'Pod', object: pod({ uid: 'a', ips: ['10.0.0.1'] }) },
    { kind: 'Pod', object: pod({ uid: 'b', ips: ['10.0.0.2'] }) },
    { kind: 'AzureIdentity', object: identity('ns', 'i1') },
    { kind: 'AzureIdentity', object: identity('ns', 'i2') },
    { kind: 'AzureIdentityBinding', object: binding('ns', 'b1', 's1') },
    { kind: 'AzureIdentityBinding', object: binding('ns', 'b2', 's2') },
    { kind: 'AzurePodIdentityException', object: exception('ns', 'e1') },
    { kind: 'AzurePodIdentityException', object: exception('ns', 'e2') },
  ];
  for (const o of objects) index.upsert(o);
  t.same(index.counts(), { pods: 2, identities: 2, bindings: 2, exceptions: 2, assignedIdentities: 0 });

  index.replaceKind('Pod', [{ kind: 'Pod', object: pod({ uid: 'b', ips: ['10.0.0.2'] }) }, objects[2]!]);
  t.same(index.podsAt('10.0.0.1'), [], 'absent pod removed');
  t.same(uids(index.podsAt('10.0.0.2')), ['b'], 'present pod kept');
  t.same(index.counts(), { pods: 1, identities: 2, bindings: 2, exceptions: 2, assignedIdentities: 0 }, 'other kinds in the list are ignored');

  index.replaceKind('AzureIdentity', [{ kind: 'AzureIdentity', object: identity('ns', 'i2', 'new') }]);
  t.equal(index.identity('ns', 'i1'), undefined);
  t.equal(index.identity('ns', 'i2')!.clientID, 'new');

  index.replaceKind('AzureIdentityBinding', [{ kind: 'AzureIdentityBinding', object: binding('ns', 'b2', 's2') }]);
  t.same(index.bindingsFor('ns', 's1'), [], 'absent binding gone from the selector index too');
  t.equal(index.bindingsFor('ns', 's2').length, 1);

  index.replaceKind('AzurePodIdentityException', []);
  t.same(index.exceptionsIn('ns'), []);
  t.same(index.counts(), { pods: 1, identities: 1, bindings: 1, exceptions: 0, assignedIdentities: 0 });

  index.replaceKind('Pod', []);
  t.equal(index.counts().pods, 0);
  t.same(index.podsAt('10.0.0.2'), []);
});

t.test('convert: pod IPs', async (t) => {
  const raw = (status: Record<string, unknown>): Record<string, unknown> => ({ metadata: { name: 'p', namespace: 'ns', uid: 'u' }, status });
  t.same(toPodInfo(raw({ podIPs: [{ ip: '10.0.0.1' }, { ip: 'FD00:0:0:0:0:0:0:00A1' }] })).ips, ['10.0.0.1', 'fd00::a1'],
    'IPv4 and IPv6, IPv6 compressed lower case');
  t.same(toPodInfo(raw({ podIPs: [{ ip: '2001:DB8::1' }] })).ips, ['2001:db8::1']);
  t.same(toPodInfo(raw({ podIPs: [{ ip: '::ffff:1.2.3.4' }] })).ips, ['1.2.3.4'], 'IPv4-mapped to IPv4');
  t.same(toPodInfo(raw({ podIPs: [{ ip: '::FFFF:10.0.0.7' }] })).ips, ['10.0.0.7'], 'IPv4-mapped, upper case');
  t.same(toPodInfo(raw({ podIP: '10.0.0.3' })).ips, ['10.0.0.3'], 'podIP fallback');
  t.same(toPodInfo(raw({ podIPs: [{ ip: '10.0.0.1' }], podIP: '10.0.0.1' })).ips, ['10.0.0.1'], 'podIP duplicate of podIPs[0]');
  t.same(toPodInfo(raw({ podIPs: [{ ip: 'fd00::1' }, { ip: 'fd00:0::1' }, { ip: '::ffff:1.2.3.4' }, { ip: '1.2.3.4' }] })).ips,
    ['fd00::1', '1.2.3.4'], 'duplicates after canonicalisation removed');
  t.same(toPodInfo(raw({ podIPs: [{ ip: 'not-an-ip' }, { ip: '' }, {}], podIP: null })).ips, [], 'non-IPs left out');
  t.same(toPodInfo(raw({ podIPs: null })).ips, []);
  t.same(toPodInfo(raw({})).ips, []);
  t.equal(canonicalIp('1.2.3.4'), '1.2.3.4');
  t.equal(canonicalIp('01.2.3.4'), '', 'leading zeros are not an IP');
  t.equal(canonicalIp('1.2.3.4 '), '');
  t.equal(canonicalIp('::'), '::');
  t.equal(canonicalIp('0:0:0:0:0:0:0:1'), '::1');
});

t.test('convert: IPv6 with a zone index', async (t) => {
  // isIP() accepts a zone ("fe80::1%eth0") and `new URL` rejects it: it must be left out or a
  // ConversionError, never a TypeError, because every field is hostile.
  let thrown: unknown;
  let ips: readonly string[] | undefined;
  try {
    ips = toPodInfo({ metadata: { name: 'p' }, status: { podIPs: [{ ip: 'fe80::1%eth0' }] } }).ips;
  } catch (err) {
    thrown = err;
  }
  t.ok(thrown === undefined || thrown instanceof ConversionError, 'no TypeError from a zoned address');
  if (thrown === undefined) t.same(ips, [], 'left out, as other non-pod addresses are');
});

t.test('convert: IPv4-mapped in full form', async (t) => {
  t.equal(canonicalIp('0:0:0:0:0:ffff:1.2.3.4'), '1.2.3.4', 'as ::ffff:1.2.3.4 is');
});

t.test('convert: metadata and spec', async (t) => {
  const p = toPodInfo({
    metadata: { name: 'p', namespace: 'ns', uid: 'u1', labels: { aadpodidbinding: 'sel' } },
    spec: { hostNetwork: true, nodeName: 'node-1' },
    status: { phase: 'Running', podIP: '10.0.0.1' },
  });
  t.strictSame({ ...p, labels: { ...p.labels } }, {
    uid: 'u1', namespace: 'ns', name: 'p', labels: { aadpodidbinding: 'sel' }, ips: ['10.0.0.1'], phase: 'Running', hostNetwork: true,
    nodeName: 'node-1', serviceAccount: 'default',
  });
  const defaults = toPodInfo({ metadata: { name: 'p' } });
  t.equal(defaults.namespace, 'default', 'namespace defaults');
  t.equal(defaults.uid, 'default/p', 'uid falls back to namespace/name');
  t.equal(defaults.hostNetwork, false);
  t.equal(toPodInfo({ metadata: { name: 'p' }, spec: { hostNetwork: 'true' } }).hostNetwork, false, 'only boolean true is true');

  t.same(toAzureIdentity({ metadata: { name: 'i', namespace: 'ns' }, spec: { type: 0, clientID: 'c', resourceID: 'r' } }),
    { namespace: 'ns', name: 'i', type: 0, clientID: 'c', resourceID: 'r', namespaced: false });
  t.equal(toAzureIdentity({ metadata: { name: 'i', annotations: { 'aadpodidentity.k8s.io/Behavior': 'namespaced' } } }).namespaced, true, 'the namespaced annotation');
  t.equal(toAzureIdentity({ metadata: { name: 'i', annotations: { 'aadpodidentity.k8s.io/Behavior': 'Namespaced' } } }).namespaced, false, 'compared exactly, as NMI');
  t.equal(toAzureIdentity({ metadata: { name: 'i' } }).type, 0, 'type defaults to 0');
  t.equal(toAzureIdentity({ metadata: { name: 'i' }, spec: { type: 1 } }).type, 1);

  t.same(toAzureIdentityBinding({ metadata: { name: 'b', namespace: 'ns' }, spec: { azureIdentity: 'i', selector: 's' } }),
    { namespace: 'ns', name: 'b', azureIdentity: 'i', selector: 's' });
  t.same(toAzureIdentityBinding({ metadata: { name: 'b', namespace: 'ns' }, spec: { AzureIdentity: 'I', Selector: 'S' } }),
    { namespace: 'ns', name: 'b', azureIdentity: 'I', selector: 'S' }, 'old capitalised fields');
  t.same(toAzureIdentityBinding({ metadata: { name: 'b' }, spec: { azureIdentity: 'new', AzureIdentity: 'old' } }).azureIdentity, 'new',
    'the lower-case field wins');
  t.equal(toAzureIdentityBinding({ metadata: { name: 'b' } }).selector, '', 'no selector is an empty selector');

  const e = toAzurePodIdentityException({ metadata: { name: 'e', namespace: 'ns' }, spec: { podLabels: { app: 'x' } } });
  t.same({ ...e.podLabels }, { app: 'x' });
  t.same({ ...toAzurePodIdentityException({ metadata: { name: 'e' }, spec: { PodLabels: { a: 'b' } } }).podLabels }, { a: 'b' });
});

t.test('convert: wrong types name the field', async (t) => {
  const cases: Array<[() => unknown, RegExp]> = [
    [() => toPodInfo({ metadata: 'x' }), /^metadata must be an object$/],
    [() => toPodInfo({ metadata: [] }), /^metadata must be an object$/],
    [() => toPodInfo({ metadata: {} }), /^metadata\.name is required$/],
    [() => toPodInfo({ metadata: { name: 5 } }), /^metadata\.name must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p', namespace: ['x'] } }), /^metadata\.namespace must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p', uid: 1 } }), /^metadata\.uid must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p', labels: 'a=b' } }), /^metadata\.labels must be an object$/],
    [() => toPodInfo({ metadata: { name: 'p', labels: { app: 1 } } }), /^metadata\.labels\.app must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p', labels: { app: null } } }), /^metadata\.labels\.app is required$/],
    [() => toPodInfo({ metadata: { name: 'p' }, spec: 'x' }), /^spec must be an object$/],
    [() => toPodInfo({ metadata: { name: 'p' }, spec: { nodeName: 1 } }), /^spec\.nodeName must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p' }, status: 7 }), /^status must be an object$/],
    [() => toPodInfo({ metadata: { name: 'p' }, status: { phase: true } }), /^status\.phase must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p' }, status: { podIPs: '10.0.0.1' } }), /^status\.podIPs must be a list$/],
    [() => toPodInfo({ metadata: { name: 'p' }, status: { podIPs: ['10.0.0.1'] } }), /^status\.podIPs\[0\] must be an object$/],
    [() => toPodInfo({ metadata: { name: 'p' }, status: { podIPs: [{ ip: '1.1.1.1' }, { ip: 5 }] } }), /^status\.podIPs\[1\]\.ip must be a string$/],
    [() => toPodInfo({ metadata: { name: 'p' }, status: { podIP: 10 } }), /^status\.podIP must be a string$/],
    [() => toAzureIdentity({ metadata: { name: 'i' }, spec: { type: '0' } }), /^spec\.type must be an integer$/],
    [() => toAzureIdentity({ metadata: { name: 'i' }, spec: { type: 0.5 } }), /^spec\.type must be an integer$/],
    [() => toAzureIdentity({ metadata: { name: 'i' }, spec: { clientID: 1 } }), /^spec\.clientID must be a string$/],
    [() => toAzureIdentity({ metadata: { name: 'i' }, spec: { resourceID: {} } }), /^spec\.resourceID must be a string$/],
    [() => toAzureIdentityBinding({ metadata: { name: 'b' }, spec: { selector: 1 } }), /^spec\.selector must be a string$/],
    [() => toAzureIdentityBinding({ metadata: { name: 'b' }, spec: { Selector: [] } }), /^spec\.selector must be a string$/],
    [() => toAzureIdentityBinding({ metadata: { name: 'b' }, spec: { azureIdentity: 1 } }), /^spec\.azureIdentity must be a string$/],
    [() => toAzurePodIdentityException({ metadata: { name: 'e' }, spec: { podLabels: [] } }), /^spec\.podLabels must be an object$/],
    [() => toAzurePodIdentityException({ metadata: { name: 'e' }, spec: { podLabels: { a: 1 } } }), /^spec\.podLabels\.a must be a string$/],
    [() => toClusterObject('Pod'), /^document must be an object$/],
    [() => toClusterObject([]), /^document must be an object$/],
    [() => toClusterObject({}), /^kind is required$/],
    [() => toClusterObject({ kind: 1 }), /^kind must be a string$/],
  ];
  for (const [fn, message] of cases) {
    t.throws(fn, { name: 'ConversionError', message }, String(message));
  }
  t.throws(() => toPodInfo({ metadata: { name: 'p' }, status: { podIPs: [1] } }), ConversionError);
});

t.test('convert: AzureAssignedIdentity as MIC writes it', async (t) => {
  const raw = {
    kind: 'AzureAssignedIdentity',
    metadata: { name: 'app-shop-reader', namespace: 'default', labels: { nodename: 'node-1' } },
    spec: {
      azureIdentityRef: { metadata: { name: 'reader', namespace: 'shop' }, spec: { type: 0, clientID: 'c', resourceID: 'r' } },
      azureBindingRef: { metadata: { name: 'rb', namespace: 'shop' }, spec: { azureIdentity: 'reader', selector: 'app' } },
      pod: 'app', podNamespace: 'shop', nodename: 'node-1',
    },
    status: { status: 'Assigned', availableReplicas: 1 },
  };
  t.same(toClusterObject(raw), {
    kind: 'AzureAssignedIdentity',
    object: {
      namespace: 'default', name: 'app-shop-reader', pod: 'app', podNamespace: 'shop', nodeName: 'node-1', state: 'Assigned',
      identity: { namespace: 'shop', name: 'reader', type: 0, clientID: 'c', resourceID: 'r', namespaced: false },
      bindingSelector: 'app',
    },
  });
  const legacy = toAzureAssignedIdentity({ ...raw, status: undefined, spec: { ...raw.spec, azureBindingRef: undefined } });
  t.equal(legacy.state, '', 'no status: a legacy AAI');
  t.equal(legacy.bindingSelector, undefined, 'no embedded binding');
  t.throws(() => toAzureAssignedIdentity({ ...raw, spec: { ...raw.spec, azureIdentityRef: undefined } }), { name: 'ConversionError', message: 'spec.azureIdentityRef is required' });
  t.throws(() => toAzureAssignedIdentity({ ...raw, spec: { ...raw.spec, azureIdentityRef: { metadata: { name: 'x' }, spec: { clientID: 7 } } } }),
    { name: 'ConversionError', message: 'spec.azureIdentityRef.spec.clientID must be a string' }, 'errors name the embedded field');
  t.throws(() => toAzureAssignedIdentity({ ...raw, status: { status: 3 } }), { name: 'ConversionError', message: 'status.status must be a string' });
});

t.test('convert: toClusterObject by kind', async (t) => {
  t.equal(toClusterObject({ kind: 'Pod', metadata: { name: 'p' } })?.kind, 'Pod');
  t.equal(toClusterObject({ kind: 'AzureIdentity', metadata: { name: 'i' } })?.kind, 'AzureIdentity');
  t.equal(toClusterObject({ kind: 'AzureIdentityBinding', metadata: { name: 'b' } })?.kind, 'AzureIdentityBinding');
  t.equal(toClusterObject({ kind: 'AzurePodIdentityException', metadata: { name: 'e' } })?.kind, 'AzurePodIdentityException');
  t.throws(() => toClusterObject({ kind: 'AzureAssignedIdentity', metadata: { name: 'x' } }), { name: 'ConversionError', message: 'spec.azureIdentityRef is required' });
  for (const kind of ['Deployment', 'pod', 'List', '']) {
    t.equal(toClusterObject({ kind, metadata: { name: 'x' } }), undefined, `${JSON.stringify(kind)} is not read`);
  }
  t.equal(toClusterObject({ kind: 'Secret', metadata: 'not even valid' }), undefined, 'other kinds are not inspected');
  t.throws(() => toClusterObject(null), { name: 'ConversionError', message: 'kind is required' }, 'null has no kind');
});

t.test('waitForIp', async (t) => {
  t.test('present already', async (t) => {
    const index = new ClusterIndex();
    index.upsertPod(pod({ uid: 'a', ips: ['10.0.0.1'] }));
    const p = waitForIp(index, '10.0.0.1', 5000);
    t.equal(parkedCount(), 0, 'not parked');
    t.equal(await p, true);
  });

  t.test('woken by the upsert', async (t) => {
    const index = new ClusterIndex();
    const start = performance.now();
    const p = waitForIp(index, '10.0.0.2', 5000);
    t.equal(parkedCount(), 1, 'parked');
    setTimeout(() => index.upsertPod(pod({ uid: 'b', ips: ['10.0.0.2'] })), 20);
    t.equal(await p, true, 'woken by the event: the timeout gives false');
    t.comment(`woken after ${Math.round(performance.now() - start)} ms`);
    t.equal(parkedCount(), 0);
  });

  t.test('woken by a pod whose second IP matches', async (t) => {
    const index = new ClusterIndex();
    const p = waitForIp(index, 'fd00::2', 5000);
    setTimeout(() => index.upsertPod(pod({ uid: 'b', ips: ['10.0.0.2', 'fd00::2'] })), 5);
    t.equal(await p, true);
    t.equal(parkedCount(), 0);
  });

  t.test('several waiters on one IP all wake', async (t) => {
    const index = new ClusterIndex();
    const ps = [waitForIp(index, '10.0.0.3', 5000), waitForIp(index, '10.0.0.3', 5000), waitForIp(index, '10.0.0.4', 60)];
    t.equal(parkedCount(), 3);
    index.upsertPod(pod({ uid: 'c', ips: ['10.0.0.3'] }));
    t.same(await Promise.all(ps), [true, true, false], 'the other IP is not woken');
    t.equal(parkedCount(), 0);
  });

  t.test('a dead or host-network pod does not wake', async (t) => {
    const index = new ClusterIndex();
    const start = performance.now();
    const p = waitForIp(index, '10.0.0.5', 80);
    index.upsertPod(pod({ uid: 'd', ips: ['10.0.0.5'], phase: 'Succeeded' }));
    index.upsertPod(pod({ uid: 'e', ips: ['10.0.0.5'], hostNetwork: true }));
    t.equal(await p, false);
    t.ok(performance.now() - start >= 70, 'ran to the timeout');
    t.equal(parkedCount(), 0);
  });

  t.test('timeout', async (t) => {
    const index = new ClusterIndex();
    const start = performance.now();
    t.equal(await waitForIp(index, '10.0.0.6', 50), false);
    const elapsed = performance.now() - start;
    t.ok(elapsed >= 40, `timed out after ${Math.round(elapsed)} ms, not before`);
    t.equal(parkedCount(), 0);
    t.equal(await waitForIp(index, '10.0.0.6', 0), false, 'no wait at all');
    t.equal(await waitForIp(index, '10.0.0.6', -1), false);
    t.equal(parkedCount(), 0);
    index.upsertPod(pod({ uid: 'late', ips: ['10.0.0.6'] }));
    t.equal(index.podsAt('10.0.0.6').length, 1, 'a late pod after a timed-out wait is indexed normally');
  });

  t.test('abort', async (t) => {
    const index = new ClusterIndex();
    const controller = new AbortController();
    const start = performance.now();
    // A bound beyond tap's timeout: a wait the signal did not end fails the file.
    const p = waitForIp(index, '10.0.0.7', 600_000, controller.signal);
    t.equal(parkedCount(), 1);
    setTimeout(() => controller.abort(), 10);
    t.equal(await p, false, 'ended by the signal');
    t.comment(`ended after ${Math.round(performance.now() - start)} ms`);
    t.equal(parkedCount(), 0);
    t.equal(await waitForIp(index, '10.0.0.7', 5000, controller.signal), false, 'an aborted signal does not park');
    t.equal(parkedCount(), 0);
    // after the abort, the waiter is gone from the index: a later pod wakes nothing and throws nothing
    index.upsertPod(pod({ uid: 'f', ips: ['10.0.0.7'] }));
    t.equal(await waitForIp(index, '10.0.0.7', 5000, controller.signal), true, 'present wins over an aborted signal');
  });

  t.test('parking is bounded', async (t) => {
    const index = new ClusterIndex();
    const controller = new AbortController();
    const parked: Array<Promise<boolean>> = [];
    for (let i = 0; i < MAX_PARKED; i++) parked.push(waitForIp(index, `10.2.${i >> 8}.${i & 255}`, 30_000, controller.signal));
    t.equal(parkedCount(), MAX_PARKED);
    const start = performance.now();
    t.equal(await waitForIp(index, '10.3.0.1', 30_000), false, 'one past the bound is not parked');
    t.ok(performance.now() - start < 1000);
    t.equal(parkedCount(), MAX_PARKED);
    controller.abort();
    const results = await Promise.all(parked);
    t.ok(results.every((r) => r === false));
    t.equal(parkedCount(), 0);
  });
});

t.test('convert: spec fields in any case, as Go\'s encoding/json read them for NMI', async (t) => {
  const id = toAzureIdentity({ metadata: { name: 'i' }, spec: { Type: 0, ClientID: 'c-1', ResourceId: '/r/1' } });
  t.same([id.type, id.clientID, id.resourceID], [0, 'c-1', '/r/1']);
  const exact = toAzureIdentity({ metadata: { name: 'i' }, spec: { clientID: 'exact', ClientID: 'other' } });
  t.equal(exact.clientID, 'exact', 'the exact key wins');
  t.throws(() => toAzureIdentity({ metadata: { name: 'i' }, spec: { ClientID: 'a', CLIENTID: 'b' } }), ConversionError, 'two case variants without the exact key are ambiguous');
  const b = toAzureIdentityBinding({ metadata: { name: 'b' }, spec: { AzureIdentity: 'i', Selector: 's' } });
  t.same([b.azureIdentity, b.selector], ['i', 's']);
  const e = toAzurePodIdentityException({ metadata: { name: 'e' }, spec: { PodLabels: { app: 'x' } } });
  t.same(e.podLabels, { app: 'x' });
});

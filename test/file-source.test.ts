import t from 'tap';
import { join } from 'node:path';
import { FileClusterState, parseStateDocuments, StateFileError } from '../src/cluster/file-source.ts';

const ALL_KINDS = `# a comment before the first document
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  uid: uid-web
  labels:
    aadpodidbinding: web-sel
spec:
  nodeName: node-a
status:
  phase: Running
  podIP: 10.0.0.1
  podIPs:
    - ip: 10.0.0.1
    - ip: FD00::0001
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentity
metadata:
  name: web-id
  namespace: shop
spec:
  type: 0
  clientID: 11111111-1111-4111-8111-111111111111
  resourceID: /subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzureIdentityBinding
metadata:
  name: web-binding
  namespace: shop
spec:
  azureIdentity: web-id
  selector: web-sel
---
apiVersion: aadpodidentity.k8s.io/v1
kind: AzurePodIdentityException
metadata:
  name: kube-exc
  namespace: kube-system
spec:
  podLabels:
    component: kube-apiserver
---
---
# only a comment
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: { name: api, namespace: shop, uid: uid-api }
    spec: { nodeName: node-b }
    status: { phase: Running, podIP: 10.0.0.2 }
  - apiVersion: aadpodidentity.k8s.io/v1
    kind: AzureIdentityBinding
    metadata: { name: old-style, namespace: shop }
    spec: { AzureIdentity: web-id, Selector: api-sel }
  - apiVersion: v1
    kind: Pod
    metadata: { name: unscheduled, namespace: shop, uid: uid-uns }
    status: { phase: Pending, podIP: 10.0.0.3 }
...
`;

t.test('parseStateDocuments: every kind, a List, empty documents', async (t) => {
  const objects = parseStateDocuments(ALL_KINDS, 'state.yaml');
  t.same(objects.map((o) => `${o.kind}:${o.object.name}`), [
    'Pod:web', 'AzureIdentity:web-id', 'AzureIdentityBinding:web-binding', 'AzurePodIdentityException:kube-exc',
    'Pod:api', 'AzureIdentityBinding:old-style', 'Pod:unscheduled',
  ], 'in file order, the List unrolled, empty documents skipped');
  const web = objects[0]!;
  t.equal(web.kind, 'Pod');
  if (web.kind === 'Pod') {
    t.same(web.object.ips, ['10.0.0.1', 'fd00::1'], 'IPs canonical and deduplicated');
    t.equal(web.object.nodeName, 'node-a');
    t.equal(web.object.labels.aadpodidbinding, 'web-sel');
  }
  const old = objects[5]!;
  if (old.kind === 'AzureIdentityBinding') t.same(old.object, { namespace: 'shop', name: 'old-style', azureIdentity: 'web-id', selector: 'api-sel' });
  else t.fail('expected a binding');
  t.same(parseStateDocuments('', 'empty.yaml'), [], 'an empty file');
  t.same(parseStateDocuments('---\n---\n# nothing\n...\n', 'empty.yaml'), [], 'only separators and comments');
  t.same(parseStateDocuments('kind: List\nitems: []\n', 'list.yaml'), [], 'an empty List');
});

t.test('parseStateDocuments: errors name the document', async (t) => {
  const pod = 'kind: Pod\nmetadata: {name: p}\n';
  const cases: Array<[string, RegExp]> = [
    [`${pod}---\nkind: Deployment\nmetadata: {name: d}\n`, /^s\.yaml: document 2: unsupported kind "Deployment"$/],
    [`kind: ConfigMap\n`, /^s\.yaml: document 1: unsupported kind "ConfigMap"$/],
    [`${pod}---\n---\nmetadata: {name: x}\n`, /^s\.yaml: document 3: kind is required$/],
    [`${pod}---\nkind: [\n`, /^s\.yaml: document 2: .+/],
    [`${pod}---\nkind: Pod\n  metadata: x: y\n`, /^s\.yaml: document 2: .+/],
    [`${pod}---\nkind: Pod\nmetadata: {name: p, name: q}\n`, /^s\.yaml: document 2: .*unique/i],
    [`kind: Pod\nkind: Pod\nmetadata: {name: p}\n`, /^s\.yaml: document 1: .*unique/i],
    [`${pod}---\n- 1\n- 2\n`, /^s\.yaml: document 2: document must be an object$/],
    [`${pod}---\njust a string\n`, /^s\.yaml: document 2: document must be an object$/],
    [`${pod}---\nkind: Pod\nmetadata: {name: 7}\n`, /^s\.yaml: document 2: metadata\.name must be a string$/],
    [`${pod}---\nkind: Pod\nmetadata: {name: p}\nstatus: {podIPs: 10.0.0.1}\n`, /^s\.yaml: document 2: status\.podIPs must be a list$/],
    [`kind: List\nitems:\n  - ${pod.replace('\n', '\n    ')}  - kind: Service\n`, /^s\.yaml: document 1, item 2: unsupported kind "Service"$/],
    [`${pod}---\nkind: List\nitems: [{kind: AzureIdentity, metadata: {name: i}, spec: {type: x}}]\n`,
      /^s\.yaml: document 2, item 1: spec\.type must be an integer$/],
    [`kind: List\nitems: {}\n`, /^s\.yaml: document 1: unsupported kind "List"$/],
  ];
  for (const [text, message] of cases) {
    t.throws(() => parseStateDocuments(text, 's.yaml'), { name: 'StateFileError', message }, String(message));
  }
  t.throws(() => parseStateDocuments('kind: Foo\n', 's.yaml'), StateFileError, 'a StateFileError instance');
});

t.test('parseStateDocuments: hostile YAML stays a StateFileError', async (t) => {
  const bomb = [
    'a: &a [x, x, x, x, x, x, x, x, x, x]',
    'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
    'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
    'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
    'kind: Pod',
    'metadata: {name: p}',
  ].join('\n');
  let thrown: unknown;
  try {
    parseStateDocuments(`kind: Pod\nmetadata: {name: ok}\n---\n${bomb}\n`, 's.yaml');
  } catch (err) {
    thrown = err;
  }
  t.ok(thrown instanceof Error, 'an alias bomb is refused');
  t.ok(thrown instanceof StateFileError && /document 2/.test(thrown.message), 'as a StateFileError naming document 2');

  let zoned: unknown;
  try {
    parseStateDocuments('kind: Pod\nmetadata: {name: p}\nstatus: {phase: Running, podIP: "fe80::1%eth0"}\n', 's.yaml');
  } catch (err) {
    zoned = err;
  }
  t.ok(zoned === undefined || zoned instanceof StateFileError, 'a zoned IPv6 address is no TypeError');
});

t.test('FileClusterState.load', async (t) => {
  const dir = t.testdir({
    'state.yaml': ALL_KINDS,
    'bad.yaml': 'kind: Pod\nmetadata: {name: p}\n---\nkind: Secret\n',
    'broken.yaml': 'kind: Pod\nmetadata: {name: p}\n---\nkind: Pod\nmetadata: {name: q}\n---\nkey: "unterminated\n',
    'dup.yaml': 'kind: Pod\nmetadata:\n  name: p\n  name: q\n',
    'sub': {},
  });

  const all = await FileClusterState.load(join(dir, 'state.yaml'));
  t.equal(all.isReady(), true);
  t.same(all.counts(), { pods: 3, identities: 1, bindings: 2, exceptions: 1, assignedIdentities: 0 }, 'without a node filter every pod is held');
  t.equal(all.podsAt('fd00::1')[0]?.name, 'web');
  t.equal(all.identity('shop', 'web-id')?.clientID, '11111111-1111-4111-8111-111111111111');
  t.same(all.bindingsFor('shop', 'web-sel').map((b) => b.name), ['web-binding']);
  t.same(all.bindingsFor('shop', 'api-sel').map((b) => b.name), ['old-style']);
  t.same(all.exceptionsIn('kube-system').map((e) => e.name), ['kube-exc']);
  t.equal(await all.waitForIp('10.0.0.1', 10), true);
  t.equal(await all.waitForIp('10.9.9.9', 10), false);
  await all.close();

  const nodeA = await FileClusterState.load(join(dir, 'state.yaml'), 'node-a');
  t.equal(nodeA.podsAt('10.0.0.1').length, 1, 'this node\'s pod is held');
  t.equal(nodeA.podsAt('10.0.0.2').length, 0, 'another node\'s pod is left out');
  t.equal(nodeA.podsAt('10.0.0.3').length, 1, 'a pod without nodeName is kept');
  t.same(nodeA.counts(), { pods: 2, identities: 1, bindings: 2, exceptions: 1, assignedIdentities: 0 }, 'the filter touches only pods');

  const nodeB = await FileClusterState.load(join(dir, 'state.yaml'), 'node-b');
  t.same([nodeB.podsAt('10.0.0.1').length, nodeB.podsAt('10.0.0.2').length, nodeB.podsAt('10.0.0.3').length], [0, 1, 1]);

  await t.rejects(FileClusterState.load(join(dir, 'bad.yaml')), {
    name: 'StateFileError', message: `${join(dir, 'bad.yaml')}: document 2: unsupported kind "Secret"`,
  });
  await t.rejects(FileClusterState.load(join(dir, 'broken.yaml')), { name: 'StateFileError', message: /broken\.yaml: document 3: / });
  await t.rejects(FileClusterState.load(join(dir, 'dup.yaml')), { name: 'StateFileError', message: /dup\.yaml: document 1: .*unique/i });
  const missing = join(dir, 'nope.yaml');
  await t.rejects(FileClusterState.load(missing), { name: 'StateFileError', message: `${missing}: ENOENT` });
  await t.rejects(FileClusterState.load(join(dir, 'sub')), { name: 'StateFileError', message: /sub: EISDIR$/ });
});

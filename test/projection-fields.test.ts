// The informers keep only a slice of each API object (objects.ts), made by convert.ts as the
// object arrives. These tests fail if a field that the decision or the index reads is
// dropped from that slice, or no longer carries the API object's value:
// 1. every property the decision, the pod lookup and the index read from a slice is listed
//    in SOURCE_OF (recorded through proxies over generated clusters and requests, written
//    through the informers' sinks), so a new
//    read needs a line here;
// 2. every listed property of a slice made from a generated API object equals the value at
//    its source in that object.
import fc from 'fast-check';
import pino from 'pino';
import t from 'tap';
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import { toClusterObject } from '../src/cluster/convert.ts';
import { BindingSink, NamedSink, PodSink } from '../src/cluster/index-sinks.ts';
import type { KindSink } from '../src/cluster/index-sinks.ts';
import type { ClusterObject } from '../src/cluster/objects.ts';
import { decideToken, MANAGED } from '../src/decision/decide.ts';
import type { DecisionPolicy } from '../src/decision/decide.ts';
import type { SelectorName, TokenRequest } from '../src/decision/token-request.ts';
import { lookupPodNow } from '../src/pods/pod-lookup.ts';

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Kind = ClusterObject['kind'];

/** Where each kept property comes from in the API object. */
const SOURCE_OF: Record<Kind, Record<string, (raw: Raw) => unknown>> = {
  Pod: {
    uid: (r) => r.metadata.uid,
    namespace: (r) => r.metadata.namespace,
    name: (r) => r.metadata.name,
    labels: (r) => r.metadata.labels ?? {},
    ips: (r) => (r.status.podIPs ?? []).map((p: Raw) => p.ip),
    phase: (r) => r.status.phase,
    hostNetwork: (r) => r.spec.hostNetwork === true,
    nodeName: (r) => r.spec.nodeName,
    serviceAccount: (r) => r.spec.serviceAccountName ?? 'default',
  },
  AzureIdentity: {
    namespace: (r) => r.metadata.namespace,
    name: (r) => r.metadata.name,
    type: (r) => r.spec.type,
    clientID: (r) => r.spec.clientID,
    resourceID: (r) => r.spec.resourceID,
    namespaced: (r) => r.metadata.annotations?.['aadpodidentity.k8s.io/Behavior'] === 'namespaced',
    tenantID: (r) => r.spec.tenantID || undefined,
    adEndpoint: (r) => r.spec.adEndpoint || undefined,
    clientPassword: (r) => r.spec.clientPassword?.name ? { name: r.spec.clientPassword.name, namespace: r.spec.clientPassword.namespace || r.metadata.namespace } : undefined,
    auxiliaryTenantIDs: (r) => r.spec.auxiliaryTenantIDs?.length ? r.spec.auxiliaryTenantIDs : undefined,
    tokenSource: (r) => r.metadata.annotations?.['podid-nmi.io/token-source'],
  },
  AzureIdentityBinding: {
    namespace: (r) => r.metadata.namespace,
    name: (r) => r.metadata.name,
    azureIdentity: (r) => r.spec.azureIdentity,
    selector: (r) => r.spec.selector,
  },
  AzurePodIdentityException: {
    namespace: (r) => r.metadata.namespace,
    name: (r) => r.metadata.name,
    podLabels: (r) => r.spec.podLabels,
  },
  AzureAssignedIdentity: {
    namespace: (r) => r.metadata.namespace,
    name: (r) => r.metadata.name,
    pod: (r) => r.spec.pod,
    podNamespace: (r) => r.spec.podNamespace,
    nodeName: (r) => r.spec.nodename,
    state: (r) => r.status?.status ?? '',
    // The embedded identity is an AzureIdentity slice: its own properties are checked as one.
    identity: (r) => Object.fromEntries(Object.entries(SOURCE_OF.AzureIdentity).map(([k, source]) => [k, source(r.spec.azureIdentityRef)])),
    bindingSelector: (r) => r.spec.azureBindingRef?.spec.selector,
  },
};

// ---- generated API objects, with the clutter the slices leave behind ----

const NS = ['ns1', 'ns1', 'ns1', 'ns2'];
const CLIENT_IDS = ['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002', ''];
const RESOURCE_IDS = ['/subscriptions/s/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a', '/subscriptions/s/x/b', ''];
const clutter = { managedFields: [{ manager: 'kubectl', fieldsV1: { 'f:spec': {} } }], annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' }, resourceVersion: '7', generation: 1 };

const labelsArb = fc.record({
  aadpodidbinding: fc.constantFrom('sel-a', 'sel-b'), app: fc.constantFrom('proxy', 'PROXY', 'web'),
}, { requiredKeys: [] });

const podArb = fc.record({
  name: fc.constantFrom('p1', 'p2'), namespace: fc.constantFrom(...NS), uid: fc.uuid(), labels: labelsArb,
  ip: fc.constantFrom('10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', 'fd00::1'), phase: fc.constantFrom('Running', 'Running', 'Pending', 'Succeeded'),
  hostNetwork: fc.constantFrom(false, false, false, true), nodeName: fc.constantFrom('node-a', 'node-a', 'node-b'),
}).map((p): Raw => ({
  kind: 'Pod',
  metadata: { name: p.name, namespace: p.namespace, uid: p.uid, labels: p.labels, ...clutter },
  spec: { nodeName: p.nodeName, hostNetwork: p.hostNetwork, containers: [{ name: 'app', image: 'x', env: [{ name: 'A', value: 'b' }] }] },
  status: { phase: p.phase, podIP: p.ip, podIPs: [{ ip: p.ip }], conditions: [{ type: 'Ready', status: 'True' }] },
}));

const identityArb = fc.record({
  name: fc.constantFrom('id-a', 'id-b'), namespace: fc.constantFrom(...NS), type: fc.constantFrom(0, 0, 0, 1, 2),
  clientID: fc.constantFrom(...CLIENT_IDS), resourceID: fc.constantFrom(...RESOURCE_IDS),
  namespaced: fc.boolean(),
}).map((i): Raw => ({
  kind: 'AzureIdentity',
  metadata: { name: i.name, namespace: i.namespace, ...clutter, annotations: { ...clutter.annotations, ...(i.namespaced ? { 'aadpodidentity.k8s.io/Behavior': 'namespaced' } : {}) } },
  spec: { type: i.type, clientID: i.clientID, resourceID: i.resourceID, tenantID: 't', adEndpoint: 'https://login' },
}));

const bindingArb = fc.record({
  name: fc.constantFrom('b1', 'b2', 'b3'), namespace: fc.constantFrom(...NS),
  azureIdentity: fc.constantFrom('id-a', 'id-b'), selector: fc.constantFrom('sel-a', 'sel-b', 'sel-a', ''),
}).map((b): Raw => ({ kind: 'AzureIdentityBinding', metadata: { name: b.name, namespace: b.namespace, ...clutter }, spec: { azureIdentity: b.azureIdentity, selector: b.selector, weight: 1 } }));

const exceptionArb = fc.record({
  name: fc.constantFrom('e1'), namespace: fc.constantFrom(...NS),
  podLabels: fc.dictionary(fc.constantFrom('app', 'tier'), fc.constantFrom('proxy', 'x'), { minKeys: 1, maxKeys: 2 }),
}).map((e): Raw => ({ kind: 'AzurePodIdentityException', metadata: { name: e.name, namespace: e.namespace, ...clutter }, spec: { podLabels: e.podLabels } }));

const assignedArb = fc.record({
  pod: fc.constantFrom('p1', 'p2'), podNamespace: fc.constantFrom(...NS), node: fc.constantFrom('node-a', 'node-a', 'node-b'),
  state: fc.constantFrom('Assigned', 'Assigned', 'Created', '', 'Unassigned'), identity: identityArb,
  selector: fc.option(fc.constantFrom('sel-a', 'sel-b'), { nil: undefined, freq: 5 }),
}).map((a): Raw => ({
  kind: 'AzureAssignedIdentity',
  metadata: { name: `${a.pod}-${a.podNamespace}-${a.identity.metadata.name}`, namespace: a.identity.metadata.namespace, labels: { nodename: a.node }, ...clutter },
  spec: {
    pod: a.pod, podNamespace: a.podNamespace, nodename: a.node, azureIdentityRef: a.identity,
    ...(a.selector === undefined ? {} : { azureBindingRef: { metadata: { name: 'b', namespace: a.podNamespace }, spec: { azureIdentity: a.identity.metadata.name, selector: a.selector } } }),
  },
  status: a.state === '' ? { availableReplicas: 1 } : { status: a.state, availableReplicas: 1 },
}));

const requestArb = fc.option(fc.record({
  name: fc.constantFrom<SelectorName>('client_id', 'msi_res_id', 'object_id'),
  value: fc.constantFrom(...CLIENT_IDS.slice(0, 2), ...RESOURCE_IDS.slice(0, 2)),
}), { nil: undefined, freq: 2 }).map((selector): TokenRequest => ({ apiVersion: '2018-02-01', resource: 'https://vault.azure.net', selector }));

const clusterArb = fc.record({
  pods: fc.array(podArb, { minLength: 1, maxLength: 4 }),
  identities: fc.array(identityArb, { minLength: 1, maxLength: 4 }),
  bindings: fc.array(bindingArb, { minLength: 1, maxLength: 4 }),
  exceptions: fc.array(exceptionArb, { maxLength: 1 }),
  assigned: fc.array(assignedArb, { maxLength: 4 }),
  requests: fc.array(requestArb, { minLength: 1, maxLength: 3 }),
});

function recording<T extends object>(object: T, kind: Kind, reads: Map<Kind, Set<string>>): T {
  const seen = reads.get(kind) ?? new Set<string>();
  reads.set(kind, seen);
  return new Proxy(object, {
    get(target, key, receiver) {
      if (typeof key === 'string') seen.add(key);
      return Reflect.get(target, key, receiver);
    },
  });
}

/** The slice, behind proxies that record the properties read from it (and from an AAI's embedded identity). */
function recorded(raw: Raw, reads: Map<Kind, Set<string>>): ClusterObject {
  const entry = toClusterObject(raw)!;
  const object = entry.kind === 'AzureAssignedIdentity'
    ? { ...entry.object, identity: recording(entry.object.identity, 'AzureIdentity', reads) }
    : entry.object;
  return { kind: entry.kind, object: recording(object, entry.kind, reads) } as ClusterObject;
}

const POLICIES: DecisionPolicy[] = [MANAGED, { mode: 'standard', forceNamespaced: true }, { mode: 'standard', forceNamespaced: false }];

t.test('every property the decision, the pod lookup and the index read has a source listed', async (t) => {
  const reads = new Map<Kind, Set<string>>();
  let decisions = 0;
  let grants = 0;
  fc.assert(fc.property(clusterArb, (c) => {
    const index = new ClusterIndex();
    const sinks: Record<Kind, KindSink> = {
      Pod: new PodSink(index, 'node-a'),
      AzureIdentity: new NamedSink(index, 'AzureIdentity'),
      AzureIdentityBinding: new BindingSink(index, pino({ level: 'silent' })),
      AzurePodIdentityException: new NamedSink(index, 'AzurePodIdentityException'),
      AzureAssignedIdentity: new NamedSink(index, 'AzureAssignedIdentity'),
    };
    for (const raw of [...c.identities, ...c.bindings, ...c.exceptions, ...c.assigned, ...c.pods]) {
      const entry = recorded(raw, reads);
      sinks[entry.kind].upsert({ namespace: raw.metadata.namespace, name: raw.metadata.name, uid: raw.metadata.uid ?? '' }, entry);
    }
    for (const raw of c.pods) {
      const lookup = lookupPodNow(index, raw.status.podIP);
      if (lookup === undefined || lookup.kind !== 'pod') continue;
      for (const request of c.requests) {
        for (const policy of POLICIES) {
          if (decideToken(lookup.pod, index, request, policy).kind === 'grant') grants++;
          decisions++;
        }
      }
    }
  }), { numRuns: 400 });
  t.ok(decisions > 100 && grants > 20, `decisions were made (${decisions}, ${grants} grants)`);
  for (const kind of Object.keys(SOURCE_OF) as Kind[]) {
    const read = [...(reads.get(kind) ?? [])].sort();
    t.ok(read.length > 0, `${kind} slices were read`);
    const unlisted = read.filter((key) => !(key in SOURCE_OF[kind]));
    t.same(unlisted, [], `${kind}: read but not listed in SOURCE_OF`);
  }
  // The fields that drive grants must be among those read, or this test watches nothing.
  t.ok(reads.get('AzureIdentity')?.has('clientID') && reads.get('AzureIdentity')?.has('resourceID'), 'identity ids are read');
  t.ok(reads.get('AzureIdentityBinding')?.has('selector') && reads.get('Pod')?.has('labels'), 'selectors and labels are read');
  t.ok(reads.get('AzureAssignedIdentity')?.has('state') && reads.get('AzureAssignedIdentity')?.has('identity'), 'assignments are read');
});

t.test('every listed property of a slice holds the API object\'s value', async (t) => {
  const anyObject = fc.oneof(podArb, identityArb, bindingArb, exceptionArb, assignedArb);
  let checked = 0;
  fc.assert(fc.property(anyObject, (raw) => {
    const entry = toClusterObject(raw)!;
    const slice = entry.object as unknown as Raw;
    for (const [key, source] of Object.entries(SOURCE_OF[entry.kind])) {
      if (JSON.stringify(slice[key]) !== JSON.stringify(source(raw))) throw new Error(`${entry.kind}.${key}: ${JSON.stringify(slice[key])} is not the API's ${JSON.stringify(source(raw))}`);
      checked++;
    }
  }), { numRuns: 400 });
  t.ok(checked > 1000);
});

t.test('a slice keeps nothing else: no raw object rides along', async (t) => {
  const samples = fc.sample(fc.oneof(podArb, identityArb, bindingArb, exceptionArb, assignedArb), 60);
  for (const raw of samples) {
    const entry = toClusterObject(raw)!;
    // Entra-only fields are left out when the object has none (most identities): listed keys
    // with a value at their source are kept, and nothing unlisted is.
    const listed = Object.entries(SOURCE_OF[entry.kind]).filter(([, source]) => source(raw) !== undefined).map(([k]) => k);
    t.same(Object.keys(entry.object).filter((k) => (entry.object as unknown as Record<string, unknown>)[k] !== undefined).sort(), listed.sort(), `${entry.kind} slice has only its listed properties`);
  }
});

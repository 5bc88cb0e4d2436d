// The decision keeps what it read from the cluster per pod while the index's generation stays
// the same (decide.ts). These tests hold it to being only a cache: after any change to the
// index, the very next decision is the one a fresh read gives.
import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import fc from 'fast-check';
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import { IndexedClusterState } from '../src/cluster/indexed-state.ts';
import type { AzureAssignedIdentity, AzureIdentity, ClusterObject, PodInfo } from '../src/cluster/objects.ts';
import type { ClusterView } from '../src/cluster/view.ts';
import { decideToken, MANAGED, policyFor, type DecisionCluster, type DecisionPolicy, type TokenDecision } from '../src/decision/decide.ts';
import type { Selector, TokenRequest } from '../src/decision/token-request.ts';
import { binding, exception, identity, pod } from './helpers/objects.ts';

const req = (selector?: Selector): TokenRequest => ({ apiVersion: '2018-02-01', resource: 'https://vault.azure.net', selector });

/** The same index read through a view without a generation: every decision reads it afresh. */
function unmemoised(index: ClusterIndex): DecisionCluster {
  return {
    bindingsFor: (ns, sel) => index.bindingsFor(ns, sel),
    bindingsSelecting: (sel) => index.bindingsSelecting(sel),
    identity: (ns, name) => index.identity(ns, name),
    exceptionsIn: (ns) => index.exceptionsIn(ns),
    assignedTo: (ns, name) => index.assignedTo(ns, name),
  };
}

const POLICIES: Record<string, DecisionPolicy> = {
  managed: MANAGED,
  standard: policyFor('standard', false),
  'standard, namespaced': policyFor('standard', true),
};

function kindOf(d: TokenDecision): string {
  if (d.kind === 'refuse') return d.reason;
  if (d.kind === 'grant') return `grant ${d.identity.namespace}/${d.identity.name} via ${d.via.name}`;
  return d.kind;
}

function aai(a: Partial<AzureAssignedIdentity> & { name: string; pod: string; identity: AzureIdentity }): AzureAssignedIdentity {
  return {
    namespace: 'default', podNamespace: a.podNamespace ?? 'default', nodeName: a.nodeName ?? 'node-1', state: a.state ?? 'Assigned',
    bindingSelector: 'app', ...a,
  };
}

t.test('each kind of change reaches the very next decision of a pod that was decided before it', async (t) => {
  for (const [mode, policy] of [['managed', MANAGED], ['standard', policyFor('standard', false)]] as const) {
    const index = new ClusterIndex();
    const idA = identity({ name: 'id-a', clientID: 'c-a' });
    const app = pod({ name: 'app', ips: ['10.0.0.1'], labels: { aadpodidbinding: 'app', tier: 'web' } });
    index.upsertPod(app);
    index.upsertIdentity(idA);
    index.upsertBinding(binding({ name: 'bind-a', azureIdentity: 'id-a', selector: 'app' }));
    if (mode === 'standard') index.upsertAssigned(aai({ name: 'app-id-a', pod: 'app', identity: idA }));
    const decide = (p: PodInfo = index.podsAt('10.0.0.1')[0]!, selector?: Selector): string => kindOf(decideToken(p, index, req(selector), policy));
    t.equal(decide(), 'grant default/id-a via ' + (mode === 'standard' ? 'app-id-a' : 'bind-a'), `${mode}: granted`);
    t.equal(decide(), decide(), `${mode}: again, from the memo`);

    // The identity's client id changes: the pod asking for the old one is no longer served.
    const renamed = identity({ name: 'id-a', clientID: 'c-a2' });
    index.upsertIdentity(renamed);
    if (mode === 'standard') index.upsertAssigned(aai({ name: 'app-id-a', pod: 'app', identity: renamed }));
    t.equal(decide(undefined, { name: 'client_id', value: 'c-a' }), 'identity_not_bound', `${mode}: identity changed`);
    t.equal(decide(undefined, { name: 'client_id', value: 'c-a2' }).startsWith('grant'), true, `${mode}: the new client id is served`);

    if (mode === 'managed') {
      index.deleteBinding('default', 'bind-a');
      t.equal(decide(), 'binding_missing', 'managed: binding deleted');
      index.upsertBinding(binding({ name: 'bind-a', azureIdentity: 'id-a', selector: 'other' }));
      t.equal(decide(), 'binding_missing', 'managed: binding now selects another label');
      index.upsertBinding(binding({ name: 'bind-a', azureIdentity: 'id-a', selector: 'app' }));
      t.equal(decide(), 'grant default/id-a via bind-a', 'managed: binding back');
      index.deleteIdentity('default', 'id-a');
      t.equal(decide(), 'identity_missing', 'managed: identity deleted');
      index.upsertIdentity(renamed);
    } else {
      index.upsertAssigned(aai({ name: 'app-id-a', pod: 'app', identity: renamed, state: 'Created' }));
      t.equal(decide(), 'pending', 'standard: assignment back to Created');
      index.deleteAssigned('default', 'app-id-a');
      t.equal(decide(), 'pending', 'standard: assignment gone, a binding still selects the pod');
      index.deleteBinding('default', 'bind-a');
      t.equal(decide(), 'binding_missing', 'standard: and no binding either');
      index.upsertAssigned(aai({ name: 'app-id-a', pod: 'app', identity: renamed }));
      t.equal(decide(), 'grant default/id-a via app-id-a', 'standard: assigned again');
    }

    index.upsertException(exception({ name: 'web', podLabels: { tier: 'WEB' } }));
    t.equal(decide(), 'pass-through', `${mode}: exception added`);
    index.deleteException('default', 'web');
    t.equal(decide().startsWith('grant'), true, `${mode}: exception gone`);

    // The pod is relabelled: a new PodInfo under the same uid.
    index.upsertPod({ ...app, labels: { aadpodidbinding: 'other' } });
    t.equal(decide(), 'binding_missing', `${mode}: pod relabelled`);
    index.upsertPod({ ...app, labels: {} });
    t.equal(decide(), 'pod_unlabeled', `${mode}: label removed`);
  }
});

t.test('a state source passes its index generation on, so the daemon\'s decisions are memoised and invalidated alike', async (t) => {
  class State extends IndexedClusterState {
    isReady(): boolean { return true; }
    async whenReady(): Promise<void> {}
    async close(): Promise<void> {}
  }
  const state = new State();
  const before = state.generation;
  state.index.upsertIdentity(identity({ name: 'id-a', clientID: 'c-a' }));
  t.not(state.generation, before);
  t.equal(state.generation, state.index.generation);
  const app = pod({ name: 'app', ips: ['10.0.0.1'], labels: { aadpodidbinding: 'app' } });
  state.index.upsertPod(app);
  t.equal(decideToken(app, state, req()).kind, 'refuse');
  state.index.upsertBinding(binding({ name: 'bind-a', azureIdentity: 'id-a', selector: 'app' }));
  t.equal(decideToken(app, state, req()).kind, 'grant');
});

t.test('every write moves the generation, even one that finds nothing to change', async (t) => {
  const index = new ClusterIndex();
  const id = identity({ name: 'i' });
  const writes: Array<[string, () => void]> = [
    ['upsertPod', () => index.upsertPod(pod({ name: 'p', ips: ['10.0.0.1'] }))],
    ['deletePod', () => index.deletePod('nothing')],
    ['upsertIdentity', () => index.upsertIdentity(id)],
    ['deleteIdentity', () => index.deleteIdentity('default', 'nothing')],
    ['upsertBinding', () => index.upsertBinding(binding({ name: 'b', azureIdentity: 'i', selector: 's' }))],
    ['deleteBinding', () => index.deleteBinding('default', 'nothing')],
    ['upsertException', () => index.upsertException(exception({ name: 'e', podLabels: {} }))],
    ['deleteException', () => index.deleteException('default', 'nothing')],
    ['upsertAssigned', () => index.upsertAssigned(aai({ name: 'a', pod: 'p', identity: id }))],
    ['deleteAssigned', () => index.deleteAssigned('default', 'nothing')],
    ['upsert', () => index.upsert({ kind: 'AzureIdentity', object: id })],
    ['replaceKind', () => index.replaceKind('AzureIdentityBinding', [])],
  ];
  for (const [name, write] of writes) {
    const before = index.generation;
    write();
    t.ok(index.generation > before, name);
  }
});

t.test('a request woken by a write sees a generation that the rest of the write does not change under it', async (t) => {
  const index = new ClusterIndex();
  const id = identity({ name: 'i', clientID: 'c' });
  index.upsertIdentity(id);
  index.upsertAssigned(aai({ name: 'a', pod: 'app', identity: id, state: 'Created' }));
  const app = pod({ name: 'app', ips: ['10.0.0.1'], labels: { aadpodidbinding: 'app' } });
  index.upsertPod(app);
  const policy = policyFor('standard', false);
  const seen: string[] = [];
  // Woken synchronously by the delete half of the upsert below, it decides on the state in between.
  index.onAssignment('default', 'app', () => seen.push(kindOf(decideToken(app, index, req(), policy))));
  index.upsertAssigned(aai({ name: 'a', pod: 'app', identity: id }));
  t.same(seen, ['binding_missing']);
  t.equal(kindOf(decideToken(app, index, req(), policy)), 'grant default/i via a');
});

// Random histories of index changes: after each change, every live pod's decision, for every
// selector, read through the memo equals the one read afresh.
const NS = ['a', 'b'];
const nsArb = fc.constantFrom(...NS);
const labelArb = fc.constantFrom('s1', 's2', '');
const podArb = fc.record({
  uid: fc.constantFrom('u1', 'u2', 'u3'),
  namespace: nsArb,
  name: fc.constantFrom('p1', 'p2'),
  labels: fc.record({ aadpodidbinding: labelArb, tier: fc.constantFrom('web', 'WEB', 'db') }, { requiredKeys: ['tier'] }),
  nodeName: fc.constantFrom('n1', 'n2'),
  phase: fc.constantFrom('Running', 'Running', 'Succeeded'),
  serviceAccount: fc.constantFrom('sa', 'default'),
}).map((p): PodInfo => ({ ...p, ips: [`10.0.0.${p.uid.slice(1)}`], hostNetwork: false }));
const identityArb = fc.record({
  namespace: nsArb,
  name: fc.constantFrom('i1', 'i2'),
  type: fc.constantFrom(0, 0, 1, 3),
  clientID: fc.constantFrom('c1', 'c2', ''),
  resourceID: fc.constantFrom('/r1', ''),
  namespaced: fc.boolean(),
  tokenSource: fc.constantFrom('', '', 'workload-identity', 'bogus'),
  tenantID: fc.constantFrom('tenant.example', 'bad tenant'),
}).map((i): AzureIdentity => i);
const bindingArb = fc.record({ namespace: nsArb, name: fc.constantFrom('b1', 'b2', 'b3'), azureIdentity: fc.constantFrom('i1', 'i2'), selector: labelArb });
const exceptionArb = fc.record({ namespace: nsArb, name: fc.constantFrom('e1'), podLabels: fc.constantFrom<Record<string, string>>({ tier: 'web' }, { tier: 'db' }, {}) });
const assignedArb = fc.record({
  namespace: fc.constant('default'),
  name: fc.constantFrom('x1', 'x2', 'x3'),
  pod: fc.constantFrom('p1', 'p2'),
  podNamespace: nsArb,
  nodeName: fc.constantFrom('n1', 'n2'),
  state: fc.constantFrom('Assigned', 'Created', '', 'Unassigned'),
  identity: identityArb,
  bindingSelector: fc.constantFrom('s1', 's2', undefined),
});
const objectArb: fc.Arbitrary<ClusterObject> = fc.oneof(
  podArb.map((object) => ({ kind: 'Pod' as const, object })),
  identityArb.map((object) => ({ kind: 'AzureIdentity' as const, object })),
  bindingArb.map((object) => ({ kind: 'AzureIdentityBinding' as const, object })),
  exceptionArb.map((object) => ({ kind: 'AzurePodIdentityException' as const, object })),
  assignedArb.map((object) => ({ kind: 'AzureAssignedIdentity' as const, object })),
);
type Change = { op: 'upsert'; entry: ClusterObject } | { op: 'delete'; entry: ClusterObject } | { op: 'replace'; kind: ClusterObject['kind']; entries: ClusterObject[] };
const changeArb: fc.Arbitrary<Change> = fc.oneof(
  { weight: 5, arbitrary: objectArb.map((entry) => ({ op: 'upsert' as const, entry })) },
  { weight: 2, arbitrary: objectArb.map((entry) => ({ op: 'delete' as const, entry })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom<ClusterObject['kind']>('Pod', 'AzureIdentity', 'AzureIdentityBinding', 'AzurePodIdentityException', 'AzureAssignedIdentity'), fc.array(objectArb, { maxLength: 4 })).map(([kind, entries]) => ({ op: 'replace' as const, kind, entries })) },
);
const SELECTORS: Array<Selector | undefined> = [
  undefined, { name: 'client_id', value: 'c1' }, { name: 'client_id', value: 'c2' }, { name: 'msi_res_id', value: '/r1' }, { name: 'object_id', value: 'o' },
];

function apply(index: ClusterIndex, change: Change): void {
  if (change.op === 'upsert') return index.upsert(change.entry);
  if (change.op === 'replace') return index.replaceKind(change.kind, change.entries);
  const e = change.entry;
  switch (e.kind) {
    case 'Pod': return index.deletePod(e.object.uid);
    case 'AzureIdentity': return index.deleteIdentity(e.object.namespace, e.object.name);
    case 'AzureIdentityBinding': return index.deleteBinding(e.object.namespace, e.object.name);
    case 'AzurePodIdentityException': return index.deleteException(e.object.namespace, e.object.name);
    case 'AzureAssignedIdentity': return index.deleteAssigned(e.object.namespace, e.object.name);
  }
}

for (const [name, policy] of Object.entries(POLICIES)) {
  t.test(`property (${name}): after any history of changes, the memoised decision is the one read afresh`, async (t) => {
    t.doesNotThrow(() => fc.assert(fc.property(fc.array(changeArb, { minLength: 1, maxLength: 40 }), (changes) => {
      const index = new ClusterIndex();
      const fresh = unmemoised(index);
      const decideAll = (): void => {
        for (const p of index.livePods()) {
          for (const selector of SELECTORS) {
            const memoised = decideToken(p, index, req(selector), policy);
            const afresh = decideToken(p, fresh, req(selector), policy);
            if (!isDeepStrictEqual(memoised, afresh)) {
              throw new Error(`${p.namespace}/${p.name} ${JSON.stringify(selector)}: memoised ${JSON.stringify(memoised)}, afresh ${JSON.stringify(afresh)}`);
            }
          }
        }
      };
      for (const change of changes) {
        decideAll(); // fill the memo at this generation
        apply(index, change);
        decideAll(); // the very next decisions after the change
      }
    }), { numRuns: 300 }));
  });
}

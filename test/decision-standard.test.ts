// Standard mode: the pod's identities are MIC's AzureAssignedIdentities (AAIs); the same
// choice and matching rules as managed mode; 'pending' only while MIC is expected to act.
import t from 'tap';
import fc from 'fast-check';
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, PodInfo } from '../src/cluster/objects.ts';
import { decideToken, type DecisionPolicy, type TokenDecision } from '../src/decision/decide.ts';
import type { TokenRequest } from '../src/decision/token-request.ts';
import { binding, identity, pod } from './helpers/objects.ts';

const CID_A = 'aaaaaaaa-0000-4000-8000-000000000001';
const CID_B = 'bbbbbbbb-0000-4000-8000-000000000002';
const RID_A = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a';
const RID_B = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b';

const STANDARD: DecisionPolicy = { mode: 'standard', forceNamespaced: false };
const NAMESPACED: DecisionPolicy = { mode: 'standard', forceNamespaced: true };

const idA = identity({ name: 'id-a', namespace: 'ns1', clientID: CID_A, resourceID: RID_A });
const idB = identity({ name: 'id-b', namespace: 'ns1', clientID: CID_B, resourceID: RID_B });
const app = pod({ name: 'app', namespace: 'ns1', ips: ['10.0.0.1'], labels: { aadpodidbinding: 'app' }, nodeName: 'node-1' });

/** An AAI as MIC writes it: name <pod>-<podNamespace>-<identity>, embedded identity and binding. */
function aai(id: AzureIdentity, o: Partial<AzureAssignedIdentity> = {}): AzureAssignedIdentity {
  return {
    namespace: o.namespace ?? id.namespace,
    name: o.name ?? `${o.pod ?? 'app'}-${o.podNamespace ?? 'ns1'}-${id.name}`,
    pod: 'app', podNamespace: 'ns1', nodeName: 'node-1', state: 'Assigned', identity: id, bindingSelector: 'app',
    ...o,
  };
}

function index(o: { assigned?: AzureAssignedIdentity[]; identities?: AzureIdentity[]; bindings?: AzureIdentityBinding[] }): ClusterIndex {
  const i = new ClusterIndex();
  o.identities?.forEach((x) => i.upsertIdentity(x));
  o.bindings?.forEach((x) => i.upsertBinding(x));
  o.assigned?.forEach((x) => i.upsertAssigned(x));
  return i;
}

const req = (selector?: TokenRequest['selector']): TokenRequest => ({ apiVersion: '2018-02-01', resource: 'https://vault.azure.net', selector });
const verdict = (d: TokenDecision): string => d.kind === 'refuse' ? d.reason : d.kind === 'grant' ? `grant:${d.identity.namespace}/${d.identity.name}` : d.kind;

t.test('an Assigned AAI grants its embedded identity, minted by its own client id', async (t) => {
  const d = decideToken(app, index({ assigned: [aai(idA)] }), req({ name: 'msi_res_id', value: RID_A }), STANDARD);
  t.equal(d.kind, 'grant');
  if (d.kind !== 'grant') return;
  t.same(d.upstream, { name: 'client_id', value: CID_A });
  t.same(d.via, { kind: 'AzureAssignedIdentity', namespace: 'ns1', name: 'app-ns1-id-a' });
});

t.test('the same pod in managed mode does not look at AAIs at all', async (t) => {
  t.equal(verdict(decideToken(app, index({ assigned: [aai(idA)] }), req())), 'binding_missing');
});

t.test('standard-mode cases, each with its verdict', async (t) => {
  const bindApp = binding({ name: 'bind-a', namespace: 'ns1', azureIdentity: 'id-a', selector: 'app' });
  const idC2 = identity({ name: 'id-c', namespace: 'ns2', clientID: 'cccccccc-0000-4000-8000-000000000003' });
  const cases: Array<[string, ClusterIndex, TokenRequest, DecisionPolicy, string]> = [
    ['legacy AAI with empty status counts as assigned', index({ assigned: [aai(idA, { state: '' })] }), req(), STANDARD, 'grant:ns1/id-a'],
    ['Created: MIC is assigning it', index({ assigned: [aai(idA, { state: 'Created' })] }), req(), STANDARD, 'pending'],
    ['Created for the requested client id', index({ assigned: [aai(idA), aai(idB, { state: 'Created' })] }), req({ name: 'client_id', value: CID_B }), STANDARD, 'pending'],
    ['Created for another identity does not hold an assigned one back', index({ assigned: [aai(idA), aai(idB, { state: 'Created' })] }), req(), STANDARD, 'grant:ns1/id-a'],
    ['a binding selects the pod, no AAI yet', index({ identities: [idA], bindings: [bindApp] }), req(), STANDARD, 'pending'],
    ['no binding selects the pod: final at once', index({ identities: [idA] }), req(), STANDARD, 'binding_missing'],
    ['a binding selects it but its identity does not exist: MIC will never assign', index({ bindings: [bindApp] }), req(), STANDARD, 'identity_missing'],
    ['Unassigned AAI with no binding left', index({ assigned: [aai(idA, { state: 'Unassigned' })] }), req(), STANDARD, 'binding_missing'],
    ['stale AAI of another node', index({ assigned: [aai(idA, { nodeName: 'node-2' })] }), req(), STANDARD, 'binding_missing'],
    ['stale AAI of another node while a binding selects the pod', index({ assigned: [aai(idA, { nodeName: 'node-2' })], identities: [idA], bindings: [bindApp] }), req(), STANDARD, 'pending'],
    ['relabelled pod: the AAI was made for the old label', index({ assigned: [aai(idA, { bindingSelector: 'old' })] }), req(), STANDARD, 'binding_missing'],
    ['relabelled pod whose new label a binding selects', index({ assigned: [aai(idA, { bindingSelector: 'old' })], identities: [idA], bindings: [bindApp] }), req(), STANDARD, 'pending'],
    ['AAI without an embedded binding cannot be checked', index({ assigned: [aai(idA, { bindingSelector: undefined })] }), req(), STANDARD, 'binding_missing'],
    ['AAI of another pod', index({ assigned: [aai(idA, { pod: 'other' })] }), req(), STANDARD, 'binding_missing'],
    ['cross-namespace identity, not namespaced', index({ assigned: [aai(idC2, { namespace: 'default' })] }), req(), STANDARD, 'grant:ns2/id-c'],
    ['cross-namespace identity, forceNamespaced', index({ assigned: [aai(idC2, { namespace: 'ns2' })] }), req(), NAMESPACED, 'binding_missing'],
    ['cross-namespace identity with the namespaced annotation', index({ assigned: [aai({ ...idC2, namespaced: true })] }), req(), STANDARD, 'binding_missing'],
    ['binding of another namespace: MIC follows it when not namespaced', index({ identities: [idC2], bindings: [binding({ name: 'b', namespace: 'ns2', azureIdentity: 'id-c', selector: 'app' })] }), req(), STANDARD, 'pending'],
    ['binding of another namespace under forceNamespaced', index({ identities: [idC2], bindings: [binding({ name: 'b', namespace: 'ns2', azureIdentity: 'id-c', selector: 'app' })] }), req(), NAMESPACED, 'binding_missing'],
    ['foreign client_id', index({ assigned: [aai(idA)] }), req({ name: 'client_id', value: CID_B }), STANDARD, 'identity_not_bound'],
    ['client_id differing in case', index({ assigned: [aai(idA)] }), req({ name: 'client_id', value: CID_A.toUpperCase() }), STANDARD, 'identity_not_bound'],
    ['foreign client_id while another binding is followed', index({ assigned: [aai(idA)], identities: [idA], bindings: [bindApp] }), req({ name: 'client_id', value: CID_B }), STANDARD, 'identity_not_bound'],
    ['Created for another identity than the one asked', index({ assigned: [aai(idA, { state: 'Created' })], identities: [idA], bindings: [bindApp] }), req({ name: 'client_id', value: CID_B }), STANDARD, 'identity_not_bound'],
    ['object_id', index({ assigned: [aai(idA)] }), req({ name: 'object_id', value: 'x' }), STANDARD, 'object_id_unverifiable'],
    ['unknown identity type', index({ assigned: [aai({ ...idA, type: 3 })] }), req(), STANDARD, 'identity_type_unsupported'],
    ['no ids at all', index({ assigned: [aai(identity({ name: 'id-a', namespace: 'ns1' }))] }), req(), STANDARD, 'identity_incomplete'],
  ];
  for (const [name, cluster, r, policy, want] of cases) t.equal(verdict(decideToken(app, cluster, r, policy)), want, name);
});

t.test('a pod with two identities: stable choice without selector, each by its own id', async (t) => {
  const both = [aai(idB), aai(idA)];
  t.equal(verdict(decideToken(app, index({ assigned: both }), req(), STANDARD)), 'grant:ns1/id-a');
  t.equal(verdict(decideToken(app, index({ assigned: [...both].reverse() }), req(), STANDARD)), 'grant:ns1/id-a');
  t.equal(verdict(decideToken(app, index({ assigned: both }), req({ name: 'client_id', value: CID_B }), STANDARD)), 'grant:ns1/id-b');
  t.equal(verdict(decideToken(app, index({ assigned: both }), req({ name: 'msi_res_id', value: RID_A }), STANDARD)), 'grant:ns1/id-a');
});

t.test('the index follows AAIs as they come, change and go', async (t) => {
  const i = index({});
  t.equal(verdict(decideToken(app, i, req(), STANDARD)), 'binding_missing');
  i.upsertAssigned(aai(idA, { state: 'Created' }));
  t.equal(verdict(decideToken(app, i, req(), STANDARD)), 'pending');
  i.upsertAssigned(aai(idA));
  t.equal(verdict(decideToken(app, i, req(), STANDARD)), 'grant:ns1/id-a');
  t.equal(i.assignedTo('ns1', 'app').length, 1, 'an update replaces, never duplicates');
  i.deleteAssigned('ns1', 'app-ns1-id-a');
  t.equal(verdict(decideToken(app, i, req(), STANDARD)), 'binding_missing');
  t.equal(i.counts().assignedIdentities, 0);
});

// ---------------------------------------------------------------------------------------------
// Properties over generated standard-mode states.

const IDS = [
  identity({ name: 'id-a', namespace: 'ns1', clientID: CID_A, resourceID: RID_A }),
  identity({ name: 'id-b', namespace: 'ns1', clientID: CID_B }),
  identity({ name: 'id-c', namespace: 'ns2', clientID: 'cccccccc-0000-4000-8000-000000000003', namespaced: true }),
  identity({ name: 'id-d', namespace: 'ns2', clientID: 'dddddddd-0000-4000-8000-000000000004' }),
  identity({ name: 'id-e', namespace: 'ns1', type: 1, clientID: 'eeeeeeee-0000-4000-8000-000000000005' }),
];
const aaiArb = fc.record({
  identity: fc.constantFrom(...IDS),
  pod: fc.constantFrom('app', 'app', 'other'),
  podNamespace: fc.constantFrom('ns1', 'ns1', 'ns2'),
  nodeName: fc.constantFrom('node-1', 'node-1', 'node-2'),
  state: fc.constantFrom('Assigned', 'Assigned', 'Created', '', 'Unassigned'),
  bindingSelector: fc.constantFrom<string | undefined>('app', 'app', 'web', undefined),
}).map((a) => aai(a.identity, { ...a, name: `${a.pod}-${a.podNamespace}-${a.identity.name}` }));
const bindingArb = fc.record({
  namespace: fc.constantFrom('ns1', 'ns2'),
  name: fc.constantFrom('b1', 'b2', 'b3'),
  azureIdentity: fc.constantFrom('id-a', 'id-b', 'id-c', 'id-d', 'id-e', 'id-x'),
  selector: fc.constantFrom('app', 'web'),
}).map((b) => binding(b));
const stateArb = fc.record({
  assigned: fc.array(aaiArb, { maxLength: 5 }),
  bindings: fc.array(bindingArb, { maxLength: 3 }),
  identities: fc.subarray(IDS),
});
const selectorArb = fc.constantFrom<TokenRequest['selector']>(
  undefined, undefined, { name: 'client_id', value: CID_A }, { name: 'client_id', value: CID_B },
  { name: 'client_id', value: 'cccccccc-0000-4000-8000-000000000003' }, { name: 'msi_res_id', value: RID_A }, { name: 'client_id', value: CID_A.toUpperCase() },
);
const podArb = fc.record({ namespace: fc.constantFrom('ns1', 'ns2'), label: fc.constantFrom('app', 'web', undefined) })
  .map((p) => pod({ name: 'app', namespace: p.namespace, ips: ['10.1.0.1'], nodeName: 'node-1', labels: p.label === undefined ? {} : { aadpodidbinding: p.label } }));
const policyArb = fc.constantFrom(STANDARD, NAMESPACED);

function build(s: { assigned: AzureAssignedIdentity[]; bindings: AzureIdentityBinding[]; identities: AzureIdentity[] }, reverse = false): ClusterIndex {
  const order = <T>(xs: T[]): T[] => (reverse ? [...xs].reverse() : xs);
  return index({ assigned: order(s.assigned), bindings: order(s.bindings), identities: order(s.identities) });
}

t.test('property: a grant is only ever an identity MIC assigned to this pod, on this node, for its label', async (t) => {
  let grants = 0;
  let pendings = 0;
  fc.assert(fc.property(stateArb, podArb, selectorArb, policyArb, (s, p: PodInfo, selector, policy) => {
    const d = decideToken(p, build(s), req(selector), policy);
    const label = p.labels.aadpodidbinding;
    if (d.kind === 'pending') {
      pendings++;
      // Only while MIC may still act: an AAI being created, or a binding that selects the pod.
      const creating = s.assigned.some((a) => a.pod === p.name && a.podNamespace === p.namespace && a.state === 'Created');
      const selected = s.bindings.some((b) => b.selector === label && (!policy.forceNamespaced || b.namespace === p.namespace));
      return label !== undefined && (creating || selected);
    }
    if (d.kind !== 'grant') return true;
    grants++;
    const id = d.identity;
    const assigned = s.assigned.some((a) => a.pod === p.name && a.podNamespace === p.namespace && a.nodeName === p.nodeName
      && (a.state === 'Assigned' || a.state === '') && a.bindingSelector === label && a.identity === id);
    const inNamespace = !(policy.forceNamespaced || id.namespaced === true) || id.namespace === p.namespace;
    const named = selector === undefined
      || (selector.name === 'client_id' && id.clientID === selector.value)
      || (selector.name === 'msi_res_id' && id.resourceID === selector.value);
    const own = d.upstream.name === 'client_id' && d.upstream.value === id.clientID;
    return assigned && inNamespace && named && own && id.type === 0;
  }), { numRuns: 3000, seed: 20261202 });
  t.ok(grants > 50, `the generators reach grants (${grants})`);
  t.ok(pendings > 50, `the generators reach pending (${pendings})`);
});

t.test('property: the verdict does not depend on the order objects arrived in', async () => {
  fc.assert(fc.property(stateArb, podArb, selectorArb, policyArb, (s, p, selector, policy) => {
    const unique = {
      assigned: [...new Map(s.assigned.map((x) => [`${x.namespace}/${x.name}`, x])).values()],
      bindings: [...new Map(s.bindings.map((x) => [`${x.namespace}/${x.name}`, x])).values()],
      identities: s.identities,
    };
    return verdict(decideToken(p, build(unique), req(selector), policy)) === verdict(decideToken(p, build(unique, true), req(selector), policy));
  }), { numRuns: 2000, seed: 5 });
});

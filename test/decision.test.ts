import t from 'tap';
import fc from 'fast-check';
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import type { AzureIdentity, AzureIdentityBinding, AzurePodIdentityException, PodInfo } from '../src/cluster/objects.ts';
import { decideToken, type TokenDecision } from '../src/decision/decide.ts';
import { parseTokenRequest, type TokenRequest } from '../src/decision/token-request.ts';
import { parseQuery } from '../src/matcher/query.ts';
import { matchTarget } from '../src/matcher/request-target.ts';
import { binding, exception, identity, pod } from './helpers/objects.ts';

const CID_A = 'aaaaaaaa-0000-4000-8000-000000000001';
const CID_B = 'bbbbbbbb-0000-4000-8000-000000000002';
const RID_A = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a';
const RID_B = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b';

function index(objects: { identities?: AzureIdentity[]; bindings?: AzureIdentityBinding[]; exceptions?: AzurePodIdentityException[] }): ClusterIndex {
  const i = new ClusterIndex();
  objects.identities?.forEach((x) => i.upsertIdentity(x));
  objects.bindings?.forEach((x) => i.upsertBinding(x));
  objects.exceptions?.forEach((x) => i.upsertException(x));
  return i;
}

const req = (selector?: TokenRequest['selector']): TokenRequest => ({ apiVersion: '2018-02-01', resource: 'https://vault.azure.net', selector });
const labelled = pod({ name: 'app', ips: ['10.0.0.1'], labels: { aadpodidbinding: 'app' } });
const idA = identity({ name: 'id-a', clientID: CID_A, resourceID: RID_A });
const idB = identity({ name: 'id-b', clientID: CID_B, resourceID: RID_B });
const bindA = binding({ name: 'bind-a', azureIdentity: 'id-a', selector: 'app' });
const bindB = binding({ name: 'bind-b', azureIdentity: 'id-b', selector: 'app' });

function reason(d: TokenDecision): string {
  return d.kind === 'refuse' ? d.reason : d.kind;
}

t.test('grants the bound identity, named upstream by its own client id', async (t) => {
  const d = decideToken(labelled, index({ identities: [idA], bindings: [bindA] }), req());
  t.equal(d.kind, 'grant');
  if (d.kind !== 'grant') return;
  t.equal(d.identity.name, 'id-a');
  t.same(d.upstream, { name: 'client_id', value: CID_A });
});

t.test('a pod may name its identity by client_id or resource id; upstream always gets the client id', async (t) => {
  const cluster = index({ identities: [idA, idB], bindings: [bindA, bindB] });
  for (const [sel, want] of [
    [{ name: 'client_id', value: CID_B }, 'id-b'],
    [{ name: 'msi_res_id', value: RID_B }, 'id-b'],
    [{ name: 'msi_res_id', value: RID_A }, 'id-a'],
  ] as const) {
    const d = decideToken(labelled, cluster, req(sel));
    t.equal(d.kind === 'grant' && d.identity.name, want, `${sel.name}=${sel.value}`);
    t.same(d.kind === 'grant' && d.upstream, { name: 'client_id', value: want === 'id-a' ? CID_A : CID_B });
  }
});

t.test('an identity without client id is named upstream by its resource id', async (t) => {
  const d = decideToken(labelled, index({ identities: [identity({ name: 'id-a', resourceID: RID_A })], bindings: [bindA] }), req());
  t.same(d.kind === 'grant' && d.upstream, { name: 'msi_res_id', value: RID_A });
});

t.test('without a selector the choice among several identities is stable: first identity name', async (t) => {
  const forward = decideToken(labelled, index({ identities: [idA, idB], bindings: [bindA, bindB] }), req());
  const backward = decideToken(labelled, index({ identities: [idB, idA], bindings: [bindB, bindA] }), req());
  t.equal(forward.kind === 'grant' && forward.identity.name, 'id-a');
  t.same(forward, backward);
});

t.test('refusals, each with its reason', async (t) => {
  const cases: Array<[string, PodInfo, ClusterIndex, TokenRequest, string]> = [
    ['no label', pod({ name: 'p', ips: ['10.0.0.2'] }), index({ identities: [idA], bindings: [binding({ name: 'b', azureIdentity: 'id-a', selector: '' })] }), req(), 'pod_unlabeled'],
    ['empty label value', pod({ name: 'p', ips: ['10.0.0.2'], labels: { aadpodidbinding: '' } }), index({ identities: [idA], bindings: [binding({ name: 'b', azureIdentity: 'id-a', selector: '' })] }), req(), 'pod_unlabeled'],
    ['no binding for the label', labelled, index({ identities: [idA], bindings: [binding({ name: 'b', azureIdentity: 'id-a', selector: 'other' })] }), req(), 'binding_missing'],
    ['binding in another namespace', labelled, index({ identities: [idA], bindings: [binding({ name: 'b', namespace: 'ns2', azureIdentity: 'id-a', selector: 'app' })] }), req(), 'binding_missing'],
    ['identity missing', labelled, index({ bindings: [bindA] }), req(), 'identity_missing'],
    ['identity in another namespace', labelled, index({ identities: [identity({ name: 'id-a', namespace: 'ns2', clientID: CID_A })], bindings: [bindA] }), req(), 'identity_missing'],
    ['foreign client_id', labelled, index({ identities: [idA, idB], bindings: [bindA] }), req({ name: 'client_id', value: CID_B }), 'identity_not_bound'],
    ['client_id differing in case', labelled, index({ identities: [idA], bindings: [bindA] }), req({ name: 'client_id', value: CID_A.toUpperCase() }), 'identity_not_bound'],
    ['foreign resource id', labelled, index({ identities: [idA], bindings: [bindA] }), req({ name: 'msi_res_id', value: RID_B }), 'identity_not_bound'],
    ['object_id', labelled, index({ identities: [idA], bindings: [bindA] }), req({ name: 'object_id', value: 'x' }), 'object_id_unverifiable'],
    ['unknown identity type', labelled, index({ identities: [identity({ name: 'id-a', type: 3, clientID: CID_A })], bindings: [bindA] }), req(), 'identity_type_unsupported'],
    ['service principal without its Secret', labelled, index({ identities: [identity({ name: 'id-a', type: 1, clientID: CID_A, tenantID: 't' })], bindings: [bindA] }), req(), 'secret_reference_missing'],
    ['no ids at all', labelled, index({ identities: [identity({ name: 'id-a' })], bindings: [bindA] }), req(), 'identity_incomplete'],
    ['selector against an identity without that id', labelled, index({ identities: [identity({ name: 'id-a', clientID: CID_A })], bindings: [bindA] }), req({ name: 'msi_res_id', value: '' }), 'identity_not_bound'],
  ];
  for (const [name, p, cluster, r, want] of cases) t.equal(reason(decideToken(p, cluster, r)), want, name);
});

t.test('exceptions: any one label pair, values case-insensitively, keys exactly, own namespace only', async (t) => {
  const p = pod({ name: 'sys', ips: ['10.0.0.3'], labels: { component: 'Kube-Proxy', tier: 'x' } });
  const cases: Array<[string, AzurePodIdentityException, string]> = [
    ['value case differs', exception({ name: 'e', podLabels: { component: 'kube-proxy' } }), 'pass-through'],
    ['one of two pairs', exception({ name: 'e', podLabels: { nope: 'x', tier: 'X' } }), 'pass-through'],
    ['key case differs', exception({ name: 'e', podLabels: { Component: 'kube-proxy' } }), 'pod_unlabeled'],
    ['other namespace', exception({ name: 'e', namespace: 'kube-system', podLabels: { component: 'kube-proxy' } }), 'pod_unlabeled'],
    ['empty podLabels', exception({ name: 'e', podLabels: {} }), 'pod_unlabeled'],
  ];
  for (const [name, e, want] of cases) t.equal(reason(decideToken(p, index({ exceptions: [e] }), req())), want, name);
  const through = decideToken(p, index({ exceptions: [cases[0]![1]] }), req({ name: 'client_id', value: CID_B }));
  t.same(through.kind === 'pass-through' && through.upstream, { name: 'client_id', value: CID_B }, 'an excepted pod keeps its own selector');
});

// ---------------------------------------------------------------------------------------------
// Properties over generated cluster states and hostile request shapes.

const NAMESPACES = ['ns1', 'ns2'];
const LABELS = ['', 'app', 'App', 'web'];
const CLIENT_IDS = [CID_A, CID_B, CID_A.toUpperCase(), 'cccccccc-0000-4000-8000-000000000003'];
const RESOURCE_IDS = [RID_A, RID_B, RID_A.toUpperCase()];

/** Biased toward states where the pod has a binding, so grants and near-grants are common. */
function mostly<T>(good: T[], bad: T[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...good) }, { weight: 1, arbitrary: fc.constantFrom(...bad) });
}
const identityArb = fc.record({
  namespace: mostly(['ns1'], ['ns2']),
  name: fc.constantFrom('id-a', 'id-b', 'id-c'),
  type: mostly([0], [1, 2]),
  clientID: mostly(CLIENT_IDS, ['']),
  resourceID: fc.constantFrom('', ...RESOURCE_IDS),
});
const bindingArb = fc.record({
  namespace: mostly(['ns1'], ['ns2']),
  name: fc.constantFrom('b1', 'b2', 'b3', 'b4'),
  azureIdentity: mostly(['id-a', 'id-b', 'id-c'], ['id-x']),
  selector: mostly(['app'], ['', 'App', 'web']),
});
const exceptionArb = fc.record({
  namespace: mostly(['ns2'], ['ns1']),
  name: fc.constantFrom('e1', 'e2'),
  podLabels: fc.dictionary(fc.constantFrom('component', 'Component', 'tier'), fc.constantFrom('proxy', 'PROXY', 'x'), { maxKeys: 2 }),
});
const podArb = fc.record({
  namespace: mostly(['ns1'], ['ns2']),
  binding: mostly(['app'], [undefined, '', 'App', 'web']),
  labels: fc.dictionary(fc.constantFrom('component', 'tier'), fc.constantFrom('proxy', 'x', 'PROXY'), { maxKeys: 2 }),
}).map((p) => pod({
  name: 'caller', namespace: p.namespace, ips: ['10.1.0.1'],
  labels: p.binding === undefined ? p.labels : { ...p.labels, aadpodidbinding: p.binding },
}));
const clusterArb = fc.record({
  identities: fc.array(identityArb, { minLength: 1, maxLength: 6 }),
  bindings: fc.array(bindingArb, { minLength: 1, maxLength: 6 }),
  exceptions: fc.array(exceptionArb, { maxLength: 2 }),
});

/** Query pieces as hostile clients send them: case and encoding variants, aliases, repeats. */
const SELECTOR_KEYS = ['client_id', 'CLIENT_ID', 'Client_Id', 'client%5Fid', 'msi_res_id', 'mi_res_id', 'MSI_RES_ID', 'object_id', 'clientid', 'client_id ', 'principal_id'];
const VALUES = [...CLIENT_IDS, ...RESOURCE_IDS, encodeURIComponent(RID_A), encodeURIComponent(CID_B), '', '%ZZ', `${CID_A}%00`];
/** Mostly well-formed, so that grants are reached; the rest are the known tricks. */
const queryArb = fc.tuple(
  mostly(['api-version=2018-02-01', 'API-VERSION=2018-02-01'], ['api-version=2018-02-01&api-version=2019-08-01', '']),
  mostly(['resource=https://vault.azure.net', 'resource=https%3A%2F%2Fvault.azure.net'], ['resource=', 'resource=a&Resource=b']),
  fc.array(fc.tuple(fc.constantFrom(...SELECTOR_KEYS), fc.constantFrom(...VALUES)), { maxLength: 2 }),
  mostly(['/metadata/identity/oauth2/token', '/METADATA/identity/oauth2/token/'], ['/metadata/identity/oauth2/token/..', '/metadata//identity/oauth2/token', '/metadata/identity/oauth2/token%2F']),
).map(([api, resource, selectors, path]) => `${path}?${[api, resource, ...selectors.map(([k, v]) => `${k}=${v}`)].filter((s) => s !== '').join('&')}`);

function build(c: { identities: AzureIdentity[]; bindings: AzureIdentityBinding[]; exceptions: AzurePodIdentityException[] }, reverse = false): ClusterIndex {
  const order = <T>(xs: T[]): T[] => (reverse ? [...xs].reverse() : xs);
  return index({ identities: order(c.identities), bindings: order(c.bindings), exceptions: order(c.exceptions) });
}

/** The pipeline as the listener runs it, minus I/O: target -> query -> token request -> decision. */
function decideRaw(target: string, p: PodInfo, cluster: ClusterIndex): { request?: TokenRequest; decision?: TokenDecision } {
  const m = matchTarget(target, false);
  if (typeof m === 'string' || m.route.name !== 'token') return {};
  const q = parseQuery(m.rawQuery);
  if (typeof q === 'string') return {};
  const request = parseTokenRequest(q);
  if (typeof request === 'string') return {};
  return { request, decision: decideToken(p, cluster, request) };
}

t.test('property: a token is only ever for an identity bound to the calling pod', async (t) => {
  let grants = 0;
  let refusals = 0;
  fc.assert(fc.property(clusterArb, podArb, queryArb, (c, p, target) => {
    const cluster = build(c);
    const { request, decision } = decideRaw(target, p, cluster);
    if (decision === undefined || request === undefined) return true;
    if (decision.kind === 'refuse') {
      refusals++;
      return true;
    }
    // Managed mode never waits for MIC.
    if (decision.kind === 'pending') return false;
    if (decision.kind === 'pass-through') {
      // Only an exception of the pod's own namespace with a matching pair lets a pod through.
      return decision.exception.namespace === p.namespace && Object.entries(decision.exception.podLabels)
        .some(([k, v]) => p.labels[k]?.toLowerCase() === v.toLowerCase());
    }
    grants++;
    const label = p.labels.aadpodidbinding;
    const id = decision.identity;
    const bound = c.bindings.some((b) => b.namespace === p.namespace && b.selector !== '' && b.selector === label && b.azureIdentity === id.name)
      && id.namespace === p.namespace && id.type === 0;
    const named = request.selector === undefined
      || (request.selector.name === 'client_id' && id.clientID === request.selector.value)
      || (request.selector.name === 'msi_res_id' && id.resourceID === request.selector.value);
    const upstreamIsOwn = (decision.upstream.name === 'client_id' && decision.upstream.value === id.clientID && id.clientID !== '')
      || (decision.upstream.name === 'msi_res_id' && decision.upstream.value === id.resourceID && id.clientID === '');
    return bound && named && upstreamIsOwn;
  }), { numRuns: 3000, seed: 20261123 });
  t.ok(grants > 50, `the generators reach grants (${grants})`);
  t.ok(refusals > 50, `the generators reach refusals (${refusals})`);
});

t.test('property: the same input always gives the same decision, whatever the event order', async () => {
  fc.assert(fc.property(clusterArb, podArb, queryArb, (c, p, target) => {
    const a = decideRaw(target, p, build(c));
    const b = decideRaw(target, p, build(c));
    if (JSON.stringify(a) !== JSON.stringify(b)) return false;
    // Objects with distinct keys arrive in any order from informers; the answer must not depend on it.
    const unique = {
      identities: [...new Map(c.identities.map((x) => [`${x.namespace}/${x.name}`, x])).values()],
      bindings: [...new Map(c.bindings.map((x) => [`${x.namespace}/${x.name}`, x])).values()],
      exceptions: [...new Map(c.exceptions.map((x) => [`${x.namespace}/${x.name}`, x])).values()],
    };
    const fwd = decideRaw(target, p, build(unique));
    const rev = decideRaw(target, p, build(unique, true));
    // Exceptions are ORed, so which one is named may differ; the verdict and identity may not.
    const verdict = (r: typeof fwd) => r.decision === undefined ? 'none' : r.decision.kind === 'grant'
      ? `grant:${r.decision.identity.namespace}/${r.decision.identity.name}` : r.decision.kind === 'refuse' ? r.decision.reason : r.decision.kind;
    return verdict(fwd) === verdict(rev);
  }), { numRuns: 2000, seed: 7 });
});

t.test('property: a request naming several identities, or one key twice, never reaches the decision', async () => {
  fc.assert(fc.property(queryArb, (target) => {
    const m = matchTarget(target, false);
    if (typeof m === 'string') return true;
    const q = parseQuery(m.rawQuery);
    if (typeof q === 'string') return true;
    const keys = m.rawQuery.split('&').map((kv) => decodeURIComponent(kv.split('=')[0]!).toLowerCase());
    if (new Set(keys).size !== keys.length) return false;
    const r = parseTokenRequest(q);
    const selectorKeys = keys.filter((k) => ['client_id', 'object_id', 'msi_res_id', 'mi_res_id'].includes(k));
    return selectorKeys.length <= 1 || typeof r === 'string';
  }), { numRuns: 2000, seed: 11 });
});

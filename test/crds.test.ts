// The shipped CRDs must be the ones existing aad-pod-identity installs have (names, group,
// version) with structural schemas that carry every field the daemon reads; the RBAC must
// allow exactly what the informers do.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { CRD_GROUP } from '../src/cluster/convert.ts';

type Node = Record<string, unknown>;

const dir = new URL('../daemonset/', import.meta.url);
const load = (file: string): Node[] => parseAllDocuments(readFileSync(new URL(file, dir), 'utf8')).map((d) => d.toJS() as Node);

const EXPECTED = [
  { file: 'azureidentity.yaml', kind: 'AzureIdentity', plural: 'azureidentities', singular: 'azureidentity', reads: ['type', 'clientID', 'resourceID'] },
  { file: 'azureidentitybinding.yaml', kind: 'AzureIdentityBinding', plural: 'azureidentitybindings', singular: 'azureidentitybinding', reads: ['azureIdentity', 'selector'] },
  { file: 'azurepodidentityexception.yaml', kind: 'AzurePodIdentityException', plural: 'azurepodidentityexceptions', singular: 'azurepodidentityexception', reads: ['podLabels'] },
  { file: 'azureassignedidentity.yaml', kind: 'AzureAssignedIdentity', plural: 'azureassignedidentities', singular: 'azureassignedidentity', reads: ['pod', 'podNamespace', 'azureIdentityRef'] },
];

/** Paths of schema nodes that break the structural-schema rules the API server enforces. */
function structuralProblems(node: Node, path: string): string[] {
  const out: string[] = [];
  if (typeof node.type !== 'string' && node['x-kubernetes-preserve-unknown-fields'] !== true) out.push(`${path}: no type`);
  if (node.properties !== undefined && node.additionalProperties !== undefined) out.push(`${path}: properties and additionalProperties`);
  for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, Node>)) out.push(...structuralProblems(child, `${path}.${name}`));
  if (typeof node.additionalProperties === 'object') out.push(...structuralProblems(node.additionalProperties as Node, `${path}.*`));
  if (node.items !== undefined) out.push(...structuralProblems(node.items as Node, `${path}[]`));
  if (node['x-kubernetes-embedded-resource'] === true && node.type !== 'object') out.push(`${path}: embedded resource not an object`);
  return out;
}

for (const e of EXPECTED) {
  t.test(e.file, async (t) => {
    const docs = load(`crds/${e.file}`);
    t.equal(docs.length, 1);
    const crd = docs[0]!;
    t.equal(crd.apiVersion, 'apiextensions.k8s.io/v1');
    t.equal(crd.kind, 'CustomResourceDefinition');
    t.match(crd.metadata, { name: `${e.plural}.${CRD_GROUP}`, annotations: { 'api-approved.kubernetes.io': 'unapproved' } });
    const spec = crd.spec as Node;
    t.equal(spec.group, CRD_GROUP);
    t.equal(spec.scope, 'Namespaced');
    t.same(spec.names, { kind: e.kind, listKind: `${e.kind}List`, plural: e.plural, singular: e.singular }, 'names exactly as aad-pod-identity (no short names)');
    const versions = spec.versions as Node[];
    t.equal(versions.length, 1);
    t.match(versions[0], { name: 'v1', served: true, storage: true });
    const schema = (versions[0]!.schema as Node).openAPIV3Schema as Node;
    t.same(structuralProblems(schema, 'root'), [], 'structural');
    const specSchema = (schema.properties as Record<string, Node>).spec!;
    t.equal(specSchema['x-kubernetes-preserve-unknown-fields'], true, 'spec keeps unknown fields');
    for (const field of e.reads) t.ok((specSchema.properties as Node)[field], `spec.${field} declared`);
  });
}

t.test('rbac.yaml: read-only access to exactly the watched resources, create/patch on events, get/patch on nodes, create on serviceaccounts/token', async (t) => {
  const docs = load('rbac.yaml');
  const sa = docs.find((d) => d.kind === 'ServiceAccount');
  const role = docs.find((d) => d.kind === 'ClusterRole');
  const binding = docs.find((d) => d.kind === 'ClusterRoleBinding');
  t.match(sa, { metadata: { name: 'podid-nmi', namespace: 'kube-system' } });
  t.match(role, { metadata: { name: 'podid-nmi' } });
  const all = (role?.rules ?? []) as Node[];
  const isNodes = (r: Node): boolean => (r.resources as string[]).includes('nodes');
  t.same(all.filter(isNodes).map((r) => [r.apiGroups, r.resources, r.verbs]), [[[''], ['nodes'], ['get', 'patch']]], '--remove-node-taint: get and patch nodes, nothing else on them');
  const isEvents = (r: Node): boolean => (r.resources as string[]).includes('events');
  // Pod Events: create, and patch to aggregate repeats.
  t.same(all.filter(isEvents).map((r) => ({ apiGroups: r.apiGroups, resources: r.resources, verbs: r.verbs })),
    [{ apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] }], 'events: create and patch only');
  const isTokenRequest = (r: Node): boolean => (r.resources as string[]).includes('serviceaccounts/token');
  // Workload identity federation: TokenRequest (create), narrowed by token-request-policy.yaml.
  t.same(all.filter(isTokenRequest).map((r) => ({ apiGroups: r.apiGroups, resources: r.resources, verbs: r.verbs })),
    [{ apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] }], 'serviceaccounts/token: create only');
  const rules = all.filter((r) => !isNodes(r) && !isEvents(r) && !isTokenRequest(r));
  for (const rule of rules) t.same(rule.verbs, ['get', 'list', 'watch'], 'read-only');
  const granted = rules.flatMap((r) => (r.resources as string[]).map((res) => `${(r.apiGroups as string[])[0]}/${res}`)).sort();
  t.same(granted, ['/pods', ...EXPECTED.map((e) => `${CRD_GROUP}/${e.plural}`)].sort());
  t.match(binding, {
    metadata: { name: 'podid-nmi' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'podid-nmi' },
    subjects: [{ kind: 'ServiceAccount', name: 'podid-nmi', namespace: 'kube-system' }],
  });
});

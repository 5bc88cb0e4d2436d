// The install manifests: what `kubectl apply -k daemonset/` would send, validated against
// the Kubernetes schemas (kubernetes-models) and the CRDs' own schemas, plus what matters for
// safety: privileges, probes, scheduling everywhere, and args the daemon really accepts.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { FEDERATION_AUDIENCE, TOKEN_SECONDS } from '../src/upstream/entra/service-account-tokens.ts';
import { CRD_GROUP, toClusterObject } from '../src/cluster/convert.ts';
import { FLAGS, parseFlags } from '../src/config/flags.ts';
import { DEFAULT_ADMIN_SOCKET } from '../src/status/status-cli.ts';

type Obj = Record<string, any>;

const ROOT = new URL('../daemonset/', import.meta.url);
const NAMESPACE = 'kube-system';
const IMAGE = 'podid-nmi:0.1.0';

// What the daemon's informers list and watch in managed mode (plus the standard-mode kind,
// installed so that a migration from aad-pod-identity keeps its objects).
const CRDS: Record<string, { plural: string; singular: string }> = {
  AzureIdentity: { plural: 'azureidentities', singular: 'azureidentity' },
  AzureIdentityBinding: { plural: 'azureidentitybindings', singular: 'azureidentitybinding' },
  AzurePodIdentityException: { plural: 'azurepodidentityexceptions', singular: 'azurepodidentityexception' },
  AzureAssignedIdentity: { plural: 'azureassignedidentities', singular: 'azureassignedidentity' },
};
// azureassignedidentities only in standard mode (label-selected nodename=<node>).
const WATCHED = ['azureidentities', 'azureidentitybindings', 'azurepodidentityexceptions', 'azureassignedidentities'];
// The informers' resource table is private to InformerClusterState; its source is the truth.
const INFORMER_SOURCE = await readFile(new URL('../src/cluster/informer-source.ts', import.meta.url), 'utf8').catch(() => '');

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/Pod': Pod,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': ValidatingAdmissionPolicy,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': ValidatingAdmissionPolicyBinding,
};
const CLUSTER_SCOPED = new Set(['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'PriorityClass']);

function parseYaml(text: string, where: string): Obj[] {
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${where}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as Obj | null;
    if (value !== null) out.push(value);
  }
  return out;
}

function kubectl(args: string[]): Promise<string | null> {
  return new Promise((resolve, reject) => {
    execFile('kubectl', args, { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return resolve(null);
      if (err) return reject(new Error(`kubectl ${args.join(' ')}: ${stderr.trim() || err.message}`));
      resolve(stdout);
    });
  });
}

const kustomization = parseYaml(await readFile(new URL('kustomization.yaml', ROOT), 'utf8'), 'kustomization.yaml')[0]!;
const resourceFiles: string[] = kustomization.resources ?? [];
const missing: string[] = [];
for (const file of resourceFiles) {
  await readFile(new URL(file, ROOT)).catch(() => missing.push(file));
}

/** The subset of kustomize this kustomization uses, for machines without kubectl. */
async function renderDirectly(): Promise<Obj[]> {
  const objects: Obj[] = [];
  for (const file of resourceFiles) {
    if (missing.includes(file)) continue;
    objects.push(...parseYaml(await readFile(new URL(file, ROOT), 'utf8'), file));
  }
  const labels: Record<string, string> = Object.assign({}, ...(kustomization.labels ?? []).map((l: Obj) => l.pairs));
  for (const obj of objects) {
    obj.metadata ??= {};
    if (kustomization.namespace && !CLUSTER_SCOPED.has(obj.kind)) obj.metadata.namespace = kustomization.namespace;
    obj.metadata.labels = { ...obj.metadata.labels, ...labels };
    for (const c of [...(obj.spec?.template?.spec?.containers ?? []), ...(obj.spec?.template?.spec?.initContainers ?? [])]) {
      for (const img of kustomization.images ?? []) {
        const name = String(c.image).replace(/[:@].*$/, '');
        if (name === img.name) c.image = `${img.newName ?? img.name}:${img.newTag}`;
      }
    }
  }
  return objects;
}

const rendered = missing.length > 0 ? null : await kubectl(['kustomize', ROOT.pathname]);
const objects = rendered === null ? await renderDirectly() : parseYaml(rendered, 'kubectl kustomize');
const find = (kind: string, name?: string) => objects.filter((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));

t.test('kustomization', async (t) => {
  t.same(missing, [], 'every file listed in kustomization.yaml exists');
  t.equal(kustomization.namespace, NAMESPACE);
  t.ok(resourceFiles.includes('daemonset.yaml') && resourceFiles.includes('exception-kube-system.yaml') && resourceFiles.includes('rbac.yaml'));
  t.notOk(resourceFiles.some((f) => f.startsWith('example')), 'examples are not installed');
  t.match(kustomization.images, [{ name: 'podid-nmi', newTag: '0.1.0' }]);
  if (rendered !== null) {
    const key = (o: Obj) => `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;
    t.same((await renderDirectly()).map(key).sort(), objects.map(key).sort(), 'the fallback renderer agrees with kustomize');
  } else {
    t.comment(missing.length > 0 ? 'files missing: read directly' : 'kubectl not found: kustomization rendered by the test');
  }
});

// Enough of OpenAPI v3 for structural CRD schemas, strict about unknown fields like
// `kubectl apply` (field validation Strict) unless the schema preserves them.
function schemaErrors(value: unknown, schema: Obj | undefined, path: string): string[] {
  if (schema === undefined || schema['x-kubernetes-preserve-unknown-fields'] === true && schema.properties === undefined) return [];
  if (value === null && schema.nullable) return [];
  const errors: string[] = [];
  const type = schema.type as string | undefined;
  if (schema['x-kubernetes-int-or-string'] === true) {
    if (typeof value !== 'string' && !Number.isInteger(value)) errors.push(`${path}: must be an integer or a string`);
    return errors;
  }
  const actual = Array.isArray(value) ? 'array' : value === null ? 'null' : Number.isInteger(value) ? 'integer' : typeof value;
  if (type !== undefined && !(type === actual || (type === 'number' && actual === 'integer'))) return [`${path}: must be ${type}, is ${actual}`];
  if (schema.enum && !schema.enum.includes(value)) errors.push(`${path}: must be one of ${JSON.stringify(schema.enum)}`);
  if (actual === 'array') (value as unknown[]).forEach((item, i) => errors.push(...schemaErrors(item, schema.items, `${path}[${i}]`)));
  if (actual === 'object') {
    const obj = value as Obj;
    for (const key of schema.required ?? []) if (!(key in obj)) errors.push(`${path}.${key}: required`);
    for (const [key, child] of Object.entries(obj)) {
      const sub = schema.properties?.[key] ?? (typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined);
      if (sub !== undefined) errors.push(...schemaErrors(child, sub, `${path}.${key}`));
      else if (schema.additionalProperties !== true && schema['x-kubernetes-preserve-unknown-fields'] !== true) errors.push(`${path}.${key}: unknown field`);
    }
  }
  return errors;
}

function validateCustom(obj: Obj, crds: Obj[]): string[] {
  const [group, version] = String(obj.apiVersion).split('/');
  const crd = crds.find((c) => c.spec?.group === group && c.spec?.names?.kind === obj.kind);
  if (!crd) return [`no CRD for ${obj.apiVersion} ${obj.kind}`];
  const v = (crd.spec.versions as Obj[]).find((x) => x.name === version);
  if (!v?.served) return [`${obj.kind}: version ${version} is not served`];
  const { apiVersion: _a, kind: _k, metadata: _m, ...rest } = obj;
  const schema = v.schema?.openAPIV3Schema as Obj | undefined;
  return schemaErrors(rest, schema ? { ...schema, required: (schema.required ?? []).filter((k: string) => !['apiVersion', 'kind', 'metadata'].includes(k)) } : undefined, obj.kind);
}

function validateObject(obj: Obj, crds: Obj[]): string[] {
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (Model) {
    try {
      new Model(obj).validate();
      return [];
    } catch (err) {
      return [(err as Error).message];
    }
  }
  if (String(obj.apiVersion).startsWith(`${CRD_GROUP}/`)) return validateCustom(obj, crds);
  return [`no schema known for ${obj.apiVersion} ${obj.kind}: add its kubernetes-models class to MODELS`];
}

t.test('every object is valid against its schema', async (t) => {
  const crds = find('CustomResourceDefinition');
  for (const obj of objects) {
    const name = `${obj.kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name}`;
    t.same(validateObject(obj, crds), [], name);
    if (!CLUSTER_SCOPED.has(obj.kind)) t.equal(obj.metadata?.namespace, NAMESPACE, `${name} is in ${NAMESPACE}`);
  }
});

t.test('CRDs match what the daemon watches', async (t) => {
  for (const [kind, names] of Object.entries(CRDS)) {
    const crd = find('CustomResourceDefinition').find((c) => c.spec?.names?.kind === kind);
    if (!t.ok(crd, `CRD for ${kind}`)) continue;
    t.equal(crd!.metadata.name, `${names.plural}.${CRD_GROUP}`);
    t.equal(crd!.spec.group, CRD_GROUP);
    t.equal(crd!.spec.scope, 'Namespaced');
    t.match(crd!.spec.names, { kind, plural: names.plural, singular: names.singular });
    const v1 = (crd!.spec.versions as Obj[]).find((v) => v.name === 'v1');
    t.match(v1, { served: true, storage: true }, `${kind} v1 served and stored`);
  }
  for (const plural of WATCHED) t.ok(Object.values(CRDS).some((n) => n.plural === plural));
  if (INFORMER_SOURCE === '') {
    t.comment('src/cluster/informer-source.ts not found: informer resources not cross-checked');
    return;
  }
  t.match(INFORMER_SOURCE, /AAD_PATH = `\/apis\/\$\{CRD_GROUP\}\/v1`/, 'informers use the CRD group, version v1');
  const informed = [...INFORMER_SOURCE.matchAll(/\$\{AAD_PATH\}\/([a-z]+)`/g)].map((m) => m[1]).sort();
  t.same(informed, [...WATCHED].sort(), 'the informers watch exactly these plurals');
});

const ds = find('DaemonSet')[0];
const pod: Obj = ds?.spec?.template?.spec ?? {};
const container: Obj = pod.containers?.[0] ?? {};
const env: Record<string, string> = { NODE_NAME: 'node-1', HOST_IP: '10.0.0.4' };
const args: string[] = (container.args ?? []).map((a: string) => a.replace(/\$\((\w+)\)/g, (_m, v: string) => env[v] ?? `$(${v})`));

t.test('DaemonSet: node-wide, fail-closed, privileged only for the node\'s cgroup namespace', async (t) => {
  t.equal(find('DaemonSet').length, 1);
  t.match(ds?.metadata, { name: 'podid-nmi', namespace: NAMESPACE });
  t.equal(pod.hostNetwork, true);
  t.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  t.equal(pod.priorityClassName, 'system-node-critical');
  t.same(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
  t.equal(pod.containers.length, 1);
  t.equal(container.image, IMAGE);
  t.notOk(container.command, "the image's nmi entrypoint, not a command override");

  const sc = container.securityContext ?? {};
  // The only way Kubernetes offers into the node's cgroup namespace, which the hostNetwork rules need.
  t.equal(sc.privileged, true, 'privileged (node cgroup namespace for --intercept-host-network)');
  t.ok(args.includes('--intercept-host-network=true'), 'and it is used for that');
  // hostPID for --attest-pod-sockets alone: cgroup.procs numbers processes in the reader's PID namespace.
  t.equal(pod.hostPID, true, 'hostPID: pods\' processes are found through cgroup.procs');
  t.ok(args.includes('--attest-pod-sockets=true'), 'and it is used for that');
  t.notOk(args.some((a) => a.startsWith('--proc-root')), 'with the node\'s own /proc, the default');
  t.notOk((pod.volumes as Obj[]).some((v) => v.hostPath !== undefined && v.hostPath.path !== '/run/xtables.lock'), 'no hostPath but the xtables lock');
  t.equal(sc.runAsUser, 0);
  t.equal(sc.readOnlyRootFilesystem, true);

  const fieldRef = (name: string) => (container.env as Obj[]).find((e) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
  t.equal(fieldRef('NODE_NAME'), 'spec.nodeName');
  t.equal(fieldRef('HOST_IP'), 'status.hostIP');

  const mount = (container.volumeMounts as Obj[]).find((m) => m.mountPath === '/run/xtables.lock');
  const volume = (pod.volumes as Obj[]).find((v) => v.name === mount?.name);
  t.match(volume?.hostPath, { path: '/run/xtables.lock', type: 'FileOrCreate' }, "the node's xtables lock is shared");

  t.ok(container.resources?.requests?.cpu && container.resources?.requests?.memory, 'requests');
  t.ok(container.resources?.limits?.memory, 'memory limit');
  t.ok(pod.terminationGracePeriodSeconds > 5, 'longer than the daemon\'s shutdown grace');
});

t.test('DaemonSet: args are NMI\'s names and all known to the daemon', async (t) => {
  const parsed = parseFlags(args, {});
  t.same(parsed.warnings, [], 'no flag is one of the ignored NMI leftovers');
  t.same(parsed.positionals, []);
  for (const arg of args) {
    const name = /^--([^=]+)=/.exec(arg)?.[1];
    t.ok(name !== undefined && FLAGS.some((f) => f.name === name), `${arg} is --name=value of a known flag`);
  }
  t.match(parsed.values, {
    node: 'node-1', 'nmi-port': 2579, 'operation-mode': 'managed', forceNamespaced: true,
    'http-probe-port': 8085, 'prometheus-port': 9090, 'manage-iptables': true,
    'ipt-update-interval-sec': 60, 'log-format': 'json',
  });

  t.match(container.livenessProbe?.httpGet, { path: '/healthz' });
  // Readiness: the CLI against this pod's own admin socket, which the args name and an emptyDir holds.
  t.same(container.readinessProbe?.exec?.command, ['nmi', 'status', '--check', 'ready', '--timeout-seconds=2']);
  t.equal(parsed.values['admin-socket'], DEFAULT_ADMIN_SOCKET, 'the daemon serves the socket nmi status reads by default');
  const adminMount = (container.volumeMounts as Obj[]).find((m) => m.mountPath === '/var/run/podid-nmi');
  t.ok((pod.volumes as Obj[]).find((v) => v.name === adminMount?.name)?.emptyDir !== undefined, 'in an emptyDir of the pod');
  t.equal(container.livenessProbe?.httpGet?.port, parsed.values['http-probe-port'], 'liveness on the probe port, by number');
  // With hostNetwork a declared port is a hostPort: the scheduler would never place the
  // rollout's surge pod beside the old one.
  t.equal(container.ports, undefined, 'no declared ports');
});

t.test('DaemonSet: a rollout that can finish on hostNetwork', async (t) => {
  const strategy = ds?.spec?.updateStrategy ?? {};
  t.equal(strategy.type, 'RollingUpdate');
  // The new pod starts beside the old one and shares its ports (SO_REUSEPORT): a node is never
  // without a daemon (test/e2e-rollout.test.ts runs this on one node). It can be scheduled
  // there because no port is declared (a hostPort, with hostNetwork).
  t.same(strategy.rollingUpdate, { maxUnavailable: 0, maxSurge: 1 }, 'surge one, never unavailable');
  t.equal(container.ports, undefined, 'no hostPort to block the surge pod');
});

t.test('RBAC lets the DaemonSet read what it watches', async (t) => {
  const saName = pod.serviceAccountName;
  t.ok(find('ServiceAccount', saName).some((sa) => sa.metadata.namespace === NAMESPACE), `ServiceAccount ${saName} is installed`);
  const rules: Obj[] = [];
  for (const binding of find('ClusterRoleBinding')) {
    const bound = (binding.subjects ?? []).some((s: Obj) => s.kind === 'ServiceAccount' && s.name === saName && s.namespace === NAMESPACE);
    if (bound && binding.roleRef?.kind === 'ClusterRole') rules.push(...(find('ClusterRole', binding.roleRef.name)[0]?.rules ?? []));
  }
  const allows = (group: string, resource: string, verb: string) => rules.some((r) =>
    (r.apiGroups ?? []).includes(group) && ((r.resources ?? []).includes(resource) || (r.resources ?? []).includes('*'))
    && ((r.verbs ?? []).includes(verb) || (r.verbs ?? []).includes('*')));
  for (const verb of ['list', 'watch']) {
    t.ok(allows('', 'pods', verb), `${verb} pods`);
    for (const plural of WATCHED) t.ok(allows(CRD_GROUP, plural, verb), `${verb} ${plural}`);
  }
  t.ok(allows('', 'nodes', 'get') && allows('', 'nodes', 'patch'), 'get and patch nodes (--remove-node-taint)');
  t.notOk(allows('', 'nodes', 'update') || allows('', 'nodes', 'list') || allows('', 'nodes', 'delete'), 'nothing more on nodes');
  // Pod Events: create, and patch to aggregate repeats.
  t.ok(allows('', 'events', 'create') && allows('', 'events', 'patch'), 'create and patch events');
  const writes = rules.filter((r) => (r.verbs ?? []).some((v: string) => !['get', 'list', 'watch'].includes(v)));
  t.same(writes.map((r) => ({ apiGroups: r.apiGroups, resources: r.resources, verbs: [...r.verbs].sort() })),
    [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] }, { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
      { apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] }], 'the only writes: the node patch, pod Events and TokenRequests');
  t.notOk(allows('', 'secrets', 'get') || allows('', 'secrets', 'list'), 'no Secrets in the base: only the service-principals component grants get');
});

t.test('TokenRequest: an admission policy lets the daemon ask only for federation tokens bound to a pod', async (t) => {
  const [policy] = find('ValidatingAdmissionPolicy', 'podid-nmi-token-requests');
  const [binding] = find('ValidatingAdmissionPolicyBinding', 'podid-nmi-token-requests');
  t.ok(policy && binding, 'policy and binding installed with the base');
  t.equal(binding?.spec.policyName, 'podid-nmi-token-requests');
  t.same(binding?.spec.validationActions, ['Deny']);
  t.equal(policy?.spec.failurePolicy, 'Fail', 'fails closed');
  t.same(policy?.spec.matchConstraints.resourceRules, [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['serviceaccounts/token'] }]);
  const sa = pod.serviceAccountName;
  t.same(policy?.spec.matchConditions.map((c: Obj) => c.expression), [`request.userInfo.username == 'system:serviceaccount:${NAMESPACE}:${sa}'`], 'only the DaemonSet\'s own service account is matched');
  const exprs: string[] = policy?.spec.validations.map((v: Obj) => v.expression) ?? [];
  t.ok(exprs.includes(`object.spec.audiences == ['${FEDERATION_AUDIENCE}']`), 'the one audience the daemon asks for');
  t.ok(exprs.some((e) => e.includes("object.spec.boundObjectRef.kind == 'Pod'") && e.includes('object.spec.boundObjectRef.uid != \'\'')), 'bound to a Pod, with its uid');
  const max = /object\.spec\.expirationSeconds <= (\d+)/.exec(exprs.join(' '));
  t.ok(max !== null && TOKEN_SECONDS <= Number(max[1]), 'the daemon\'s expirationSeconds is within the policy');
});

t.test('service-principals component: get on Secrets, nothing more, and only when added', { skip: rendered === null ? 'kubectl not found' : false }, async (t) => {
  const component = parseYaml(await readFile(new URL('service-principals/kustomization.yaml', ROOT), 'utf8'), 'component')[0]!;
  t.equal(component.kind, 'Component');
  const dir = t.testdir({});
  const rel = (p: string): string => relative(dir, new URL(p, ROOT).pathname);
  await writeFile(`${dir}/kustomization.yaml`, `resources: [${rel('.')}]\ncomponents: [${rel('service-principals')}]\n`);
  const withSp = parseYaml((await kubectl(['kustomize', dir]))!, 'with the component');
  const roles = withSp.filter((o) => o.kind === 'ClusterRole' && o.metadata.name === 'podid-nmi-service-principal-secrets');
  t.same(roles.map((r) => r.rules), [[{ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }]], 'get on secrets only: no list, no watch');
  const binding = withSp.find((o) => o.kind === 'ClusterRoleBinding' && o.roleRef?.name === 'podid-nmi-service-principal-secrets');
  t.same(binding?.subjects, [{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: NAMESPACE }], 'bound to the DaemonSet\'s service account');
  for (const obj of withSp) t.same(validateObject(obj, withSp.filter((o) => o.kind === 'CustomResourceDefinition')), [], `${obj.kind} ${obj.metadata?.name} valid`);
  t.equal(withSp.length, objects.length + 2, 'the base, plus the role and its binding');
});

t.test('exception for AKS system pods', async (t) => {
  const [exception, ...others] = find('AzurePodIdentityException');
  t.equal(others.length, 0);
  t.match(exception, {
    apiVersion: `${CRD_GROUP}/v1`,
    metadata: { name: 'aks-addon-exception', namespace: NAMESPACE },
    spec: { podLabels: { 'kubernetes.azure.com/managedby': 'aks' } },
  });
  t.match(toClusterObject(exception), { kind: 'AzurePodIdentityException', object: { namespace: NAMESPACE, podLabels: { 'kubernetes.azure.com/managedby': 'aks' } } },
    'the daemon reads it');
});

t.test('example-managed: identity, binding and a pod that uses it', async (t) => {
  const example = parseYaml(await readFile(new URL('example-managed/example.yaml', ROOT), 'utf8'), 'example-managed/example.yaml');
  const crds = find('CustomResourceDefinition');
  for (const obj of example) t.same(validateObject(obj, crds), [], `${obj.kind} ${obj.metadata?.name}`);
  const identity = toClusterObject(example.find((o) => o.kind === 'AzureIdentity'));
  const binding = toClusterObject(example.find((o) => o.kind === 'AzureIdentityBinding'));
  const examplePod = toClusterObject(example.find((o) => o.kind === 'Pod'));
  if (identity?.kind !== 'AzureIdentity' || binding?.kind !== 'AzureIdentityBinding' || examplePod?.kind !== 'Pod') {
    t.fail('example must hold an AzureIdentity, an AzureIdentityBinding and a Pod');
    return;
  }
  t.equal(identity.object.type, 0, 'user-assigned managed identity');
  t.ok(identity.object.clientID && identity.object.resourceID);
  t.equal(binding.object.azureIdentity, identity.object.name);
  t.not(binding.object.selector, '', 'a non-empty selector');
  t.equal(examplePod.object.labels.aadpodidbinding, binding.object.selector, 'the pod carries the binding\'s selector');
  t.equal(new Set([identity.object.namespace, binding.object.namespace, examplePod.object.namespace]).size, 1, 'all in one namespace');
});

t.test('uninstall/cleanup-iptables.yaml: valid, runs the cleanup subcommand, privileged to turn route_localnet back off', async (t) => {
  const [cleanup, ...rest] = parseYaml(await readFile(new URL('uninstall/cleanup-iptables.yaml', ROOT), 'utf8'), 'uninstall/cleanup-iptables.yaml');
  t.equal(rest.length, 0);
  t.same(validateObject(cleanup!, []), [], 'valid DaemonSet');
  const spec: Obj = cleanup!.spec.template.spec;
  t.equal(spec.hostNetwork, true, 'the node\'s nat table');
  t.same(spec.tolerations, [{ operator: 'Exists' }], 'every node');
  const c: Obj = spec.containers[0];
  t.match(c.command.join(' '), /nmi cleanup-iptables/);
  t.equal(c.securityContext.privileged, true, 'a writable /proc/sys: route_localnet back to 0 where podid-nmi turned it on');
  t.equal(c.securityContext.allowPrivilegeEscalation, undefined, 'privileged: true with allowPrivilegeEscalation: false is refused by the API server');
  t.equal(c.image, container.image, 'the same image as the daemon');
});
